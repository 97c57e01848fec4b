from pathlib import Path

from lensfinder.embed.probe import ProbeConfig, run_probe
from lensfinder.workflow import run_step

i, o = snakemake.input, snakemake.output
run_step(
    snakemake,
    lambda: run_probe(
        Path(i.labels).parent, i.encoder, list(zip(i.vectors, i.index)), list(o.scores),
        ProbeConfig.from_dict(snakemake.params.probe), Path(o.info).parent, threads=snakemake.threads,
    ),
)
