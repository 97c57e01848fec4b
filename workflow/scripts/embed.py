from lensfinder.embed.represent import embed_sweep
from lensfinder.workflow import run_step

run_step(
    snakemake,
    lambda: embed_sweep(
        snakemake.input.manifest, snakemake.input.encoder, snakemake.output.vectors, snakemake.output.index,
        batch_size=snakemake.params.batch_size, threads=snakemake.threads,
    ),
)
