from pathlib import Path

from lensfinder.rank import RankConfig, rank
from lensfinder.workflow import run_step

i = snakemake.input
run_step(
    snakemake,
    lambda: rank(
        i.shortlists, i.manifests, snakemake.params.catalogs, RankConfig.from_dict(snakemake.params.rank),
        Path(snakemake.output.parquet).parent,
    ),
)
