from lensfinder.evaluation.accounting import build_accounting
from lensfinder.workflow import run_step

p = snakemake.params
scores = {m: snakemake.input[f"scores_{m}"] for m in p.models}
run_step(snakemake, lambda: build_accounting(p.run_dir, p.sweeps, scores, snakemake.output[0]))
