from pathlib import Path

from lensfinder.evaluation.selection_function import selection_function
from lensfinder.injection.config import InjectionConfig
from lensfinder.workflow import run_step

i, p = snakemake.input, snakemake.params
run_step(
    snakemake,
    lambda: selection_function(
        i.manifest, {m: i[f"scores_{m}"] for m in p.models}, i.meta, i.rank_summary, InjectionConfig.from_dict(p.injection),
        Path(snakemake.output.completeness).parent,
    ),
)
