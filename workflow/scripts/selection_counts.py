from lensfinder.catalog.select import combine_counts
from lensfinder.workflow import run_step

run_step(snakemake, lambda: combine_counts(snakemake.input, snakemake.output[0]))
