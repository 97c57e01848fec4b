from lensfinder.ranking.infer import infer_sweeps
from lensfinder.workflow import run_step

p = snakemake.params.infer
run_step(
    snakemake,
    lambda: infer_sweeps(
        snakemake.input.manifests, snakemake.params.sweeps, snakemake.input.checkpoint, snakemake.output[0],
        batch_size=p["batch_size"], tta=p["tta"],
    ),
)
