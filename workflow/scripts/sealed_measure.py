from pathlib import Path

from lensfinder.errors import LensfinderError
from lensfinder.evaluation.never_seen import EvaluationConfig
from lensfinder.sealed.measure import measure_sealed
from lensfinder.workflow import run_step

i, p = snakemake.input, snakemake.params


def step():
    if p.probe_in_ensemble:
        raise LensfinderError("embed.probe.in_ensemble is true, but the sealed survey is scored by the networks "
                              "only: set it false for the sealed measurement")
    metrics = measure_sealed({m: [i[f"scores_{m}"]] for m in p.models}, i.baseline, i.objects, i.meta, i.truth,
                             i.lookalikes, EvaluationConfig.from_dict(p.evaluation), i.summary,
                             Path(snakemake.output.metrics).parent,
                             injections=(i.injections, {m: i[f"injected_{m}"] for m in p.models}))
    return metrics["counts"]


run_step(snakemake, step)
