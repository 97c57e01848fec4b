from lensfinder.mock import MockConfig, write_mock_survey
from lensfinder.workflow import run_step

run_step(snakemake, lambda: write_mock_survey(snakemake.params.root, MockConfig.from_dict(snakemake.params.mock)))
