from lensfinder.sealed.baseline import fit_baseline, score_baseline
from lensfinder.workflow import run_step

i, o = snakemake.input, snakemake.output


def step():
    fitted = fit_baseline(i.labels, i.objects, o.model)
    return {**fitted, "scored": score_baseline(o.model, i.sealed_objects, o.scores)}


run_step(snakemake, step)
