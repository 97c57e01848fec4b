from pathlib import Path

from lensfinder.trainset import TrainsetConfig, build_trainset
from lensfinder.workflow import run_step

run_step(
    snakemake,
    lambda: build_trainset(
        snakemake.input.objects,
        snakemake.input.cutouts,
        snakemake.params.catalogs,
        TrainsetConfig.from_dict(snakemake.params.trainset),
        Path(snakemake.output.labels).parent,
    ),
)
