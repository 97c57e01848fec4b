from pathlib import Path

from lensfinder.catalog.select import SelectionConfig
from lensfinder.mock.layout import MockConfig
from lensfinder.sealed.survey import SealedConfig, build_sealed_survey, sealed_mock_config
from lensfinder.workflow import run_step

p = snakemake.params
sealed = SealedConfig.from_dict(p.sealed)
run_step(
    snakemake,
    lambda: build_sealed_survey(
        Path(snakemake.output.summary).parent, sealed_mock_config(MockConfig.from_dict(p.mock), sealed),
        SelectionConfig.from_dict(p.selection), size=p.cutouts["size"],
        workers=snakemake.threads, max_rows=p.cutouts["shard_rows"],
    ),
)
