from pathlib import Path

from lensfinder.ranking.rank import rank
from lensfinder.ranking.scores import RankConfig
from lensfinder.workflow import run_step

i = snakemake.input
run_step(
    snakemake,
    lambda: rank(
        i.shortlists, i.manifests, snakemake.params.catalogs, RankConfig.from_dict(snakemake.params.rank),
        Path(snakemake.output.parquet).parent,
    ),
)
