from pathlib import Path

from lensfinder.ranking.ensemble import build_ensemble
from lensfinder.workflow import run_step

e = snakemake.params.ensemble
models = snakemake.params.models
run_step(
    snakemake,
    lambda: build_ensemble(
        {m: snakemake.input[f"scores_{m}"] for m in models}, {m: snakemake.input[f"checkpoint_{m}"] for m in models},
        Path(snakemake.output.meta).parent, hidden=e["hidden"], top_n=e["top_n"], sky_ratio=e["sky_ratio"],
        fit_on=e["fit_on"], cv_folds=e["cv_folds"],
    ),
)
