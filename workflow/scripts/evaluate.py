from pathlib import Path

from lensfinder.evaluation.never_seen import EvaluationConfig, evaluate_run
from lensfinder.workflow import run_step

i = snakemake.input
run_step(
    snakemake,
    lambda: evaluate_run(
        {m: i[f"scores_{m}"] for m in snakemake.params.models}, i.objects, i.meta, i.labels, i.rank_summary,
        EvaluationConfig.from_dict(snakemake.params.evaluation), Path(snakemake.output.metrics).parent,
        recommendations_path=i.recommendations,
    ),
)
