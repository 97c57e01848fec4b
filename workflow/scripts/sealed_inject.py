from pathlib import Path

from lensfinder.injection.config import InjectionConfig
from lensfinder.injection.sets import write_injection_set
from lensfinder.workflow import run_step

i = snakemake.input
# no training set and no lens catalogue here: every sealed object may host an injection, away from its truth lenses
run_step(
    snakemake,
    lambda: write_injection_set(
        i.objects, i.cutouts, None, [], InjectionConfig.from_dict(snakemake.params.injection),
        Path(snakemake.output.manifest).parent, truth_path=i.truth,
    ),
)
