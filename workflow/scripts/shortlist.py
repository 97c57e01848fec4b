from lensfinder.ranking.scores import RankConfig
from lensfinder.ranking.shortlist import shortlist_batch
from lensfinder.workflow import run_step

i = snakemake.input
run_step(
    snakemake,
    lambda: shortlist_batch(
        snakemake.params.sweeps, {m: i[f"scores_{m}"] for m in snakemake.params.models}, i.objects, i.meta,
        RankConfig.from_dict(snakemake.params.rank), snakemake.output.parquet,
    ),
)
