from pathlib import Path

from lensfinder.embed.index import IndexConfig, build_index
from lensfinder.workflow import run_step

i = snakemake.input
run_step(
    snakemake,
    lambda: build_index(
        list(zip(i.vectors, i.index)), IndexConfig.from_dict(snakemake.params.index),
        Path(snakemake.output.info).parent, threads=snakemake.threads,
    ),
)
