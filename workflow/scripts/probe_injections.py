from lensfinder.embed.probe import score_shards
from lensfinder.workflow import run_step

i = snakemake.input
run_step(
    snakemake,
    lambda: score_shards(i.manifest, i.encoder, i.probe, snakemake.output[0], batch_size=snakemake.params.batch_size,
                         threads=snakemake.threads),
)
