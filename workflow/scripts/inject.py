from pathlib import Path

from lensfinder.injection.config import InjectionConfig
from lensfinder.injection.sets import write_injection_set
from lensfinder.workflow import run_step

i, p = snakemake.input, snakemake.params
# evaluation.truth when set (one path, or an empty input): its lenses carry no injection
truth = i.truth if isinstance(i.truth, str) else (i.truth[0] if len(i.truth) else None)
run_step(
    snakemake,
    lambda: write_injection_set(
        i.objects, i.cutouts, i.labels, p.catalogs, InjectionConfig.from_dict(p.injection),
        Path(snakemake.output.manifest).parent, truth_path=truth,
    ),
)
