from lensfinder.accounting import build_accounting
from lensfinder.workflow import run_step

p = snakemake.params
run_step(snakemake, lambda: build_accounting(p.run_dir, p.sweeps, p.models, snakemake.output[0]))
