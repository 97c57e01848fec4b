from pathlib import Path

from lensfinder.rank import RankConfig, rank
from lensfinder.workflow import run_step

i = snakemake.input
run_step(
    snakemake,
    lambda: rank(
        {m: i[f"scores_{m}"] for m in snakemake.params.models}, i.objects, i.manifests, i.meta,
        snakemake.params.catalogs, RankConfig.from_dict(snakemake.params.rank), Path(snakemake.output.parquet).parent,
    ),
)
