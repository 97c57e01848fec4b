from lensfinder.embed.represent import embed_sweeps
from lensfinder.workflow import run_step

run_step(
    snakemake,
    lambda: embed_sweeps(
        snakemake.input.manifests, snakemake.params.sweeps, snakemake.input.encoder, snakemake.output.vectors,
        snakemake.output.index, batch_size=snakemake.params.batch_size, threads=snakemake.threads,
    ),
)
