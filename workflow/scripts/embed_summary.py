from pathlib import Path

from lensfinder.embed.similar import SimilarConfig
from lensfinder.embed.summary import summarise
from lensfinder.evaluation.never_seen import EvaluationConfig
from lensfinder.workflow import run_step

i = snakemake.input
run_step(
    snakemake,
    lambda: summarise(
        Path(i.info).parent, snakemake.params.catalogs, i.truth, SimilarConfig.from_dict(snakemake.params.similar),
        EvaluationConfig.from_dict(snakemake.params.evaluation), i.probe_scores, i.objects, i.labels, i.rank_summary,
        i.networks, i.probe_info, i.manifests, Path(snakemake.output.summary).parent,
    ),
)
