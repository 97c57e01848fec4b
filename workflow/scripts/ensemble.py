from pathlib import Path

from lensfinder.ensemble import build_ensemble
from lensfinder.workflow import run_step

e = snakemake.params.ensemble
models = snakemake.params.models
run_step(
    snakemake,
    lambda: build_ensemble(
        dict(zip(models, snakemake.input.scores)), dict(zip(models, snakemake.input.checkpoints)),
        Path(snakemake.output.meta).parent, hidden=e["hidden"], top_n=e["top_n"], sky_ratio=e["sky_ratio"],
    ),
)
