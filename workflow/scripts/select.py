from lensfinder.catalog.select import SelectionConfig, select_sweep
from lensfinder.workflow import run_step

run_step(
    snakemake,
    lambda: select_sweep(
        snakemake.input.sweep,
        snakemake.output.objects,
        snakemake.output.counts,
        SelectionConfig.from_dict(snakemake.params.selection),
        tree_region=snakemake.params.region,
        sweep_id=snakemake.wildcards.sweep,
    ),
)
