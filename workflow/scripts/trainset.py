from pathlib import Path

from lensfinder.ranking.ensemble import check_validation_split
from lensfinder.trainset.build import TrainsetConfig, build_trainset
from lensfinder.workflow import run_step


def build():
    summary = build_trainset(
        snakemake.input.objects,
        snakemake.input.cutouts,
        snakemake.params.catalogs,
        TrainsetConfig.from_dict(snakemake.params.trainset),
        Path(snakemake.output.labels).parent,
    )
    # the meta-learner's needs, checked before any network trains (read from the config, not a
    # param: a change of ensemble.fit_on must not re-run this rule)
    val = summary["split"]["val"]
    check_validation_split(val["lenses"], val["nonlenses"], snakemake.config["ensemble"]["fit_on"])


run_step(snakemake, build)
