from pathlib import Path

from lensfinder.evaluation.selection_function import crosscheck
from lensfinder.injection.config import InjectionConfig
from lensfinder.workflow import run_step

i, p = snakemake.input, snakemake.params
run_step(
    snakemake,
    lambda: crosscheck(
        i.scored, i.metrics, p.theta_e_bins, Path(snakemake.output.table).parent,
        mag_range=InjectionConfig.from_dict(p.injection).crosscheck_mag_range,
    ),
)
