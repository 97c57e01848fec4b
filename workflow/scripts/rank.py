from pathlib import Path

from lensfinder.rank import RankConfig, rank
from lensfinder.workflow import run_step

models, sweeps = snakemake.params.models, snakemake.params.sweeps
scores = {m: snakemake.input.scores[i * len(sweeps) : (i + 1) * len(sweeps)] for i, m in enumerate(models)}
run_step(
    snakemake,
    lambda: rank(
        scores, snakemake.input.objects, snakemake.input.manifests, snakemake.input.meta, snakemake.params.catalogs,
        RankConfig.from_dict(snakemake.params.rank), Path(snakemake.output.parquet).parent,
        truth=snakemake.input.truth[0] if snakemake.input.truth else None,
    ),
)
