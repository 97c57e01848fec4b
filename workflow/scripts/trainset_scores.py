from pathlib import Path

from lensfinder.ranking.infer import score_trainset
from lensfinder.workflow import run_step

p = snakemake.params.infer
run_step(
    snakemake,
    lambda: score_trainset(
        Path(snakemake.input.labels).parent, snakemake.input.checkpoint, snakemake.output[0],
        batch_size=p["batch_size"], tta=p["tta"],
    ),
)
