from pathlib import Path

from lensfinder.embed.similar import SimilarConfig, run_candidates
from lensfinder.workflow import run_step

run_step(
    snakemake,
    lambda: run_candidates(
        Path(snakemake.input.info).parent, snakemake.params.catalogs, snakemake.input.objects,
        SimilarConfig.from_dict(snakemake.params.similar), Path(snakemake.output.parquet).parent,
    ),
)
