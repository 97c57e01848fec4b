from pathlib import Path

from lensfinder.cutouts.extract import extract_sweep
from lensfinder.survey.tree import survey_tree
from lensfinder.workflow import run_step

c = snakemake.params.cutouts
run_step(
    snakemake,
    lambda: extract_sweep(
        snakemake.input.objects,
        Path(snakemake.output.manifest).parent,
        survey_tree({"survey": snakemake.params.survey}, snakemake.params.region),  # the sweep's own tree
        size=c["size"],
        recentre=c["recentre"],
        max_missing=c["max_missing"],
        max_rows=c["shard_rows"],
        max_failed_fraction=c["max_failed_fraction"],
        workers=snakemake.threads,  # per-brick worker processes
    ),
)
