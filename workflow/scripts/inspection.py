from pathlib import Path

from lensfinder.portal.inspection import InspectionConfig, feed_back
from lensfinder.workflow import run_step

run_step(
    snakemake,
    lambda: feed_back(
        snakemake.input.candidates,
        snakemake.input.db,
        Path(snakemake.output.summary).parent,
        InspectionConfig.from_dict(snakemake.params.inspection),
        snakemake.params.batch,
    ),
)
