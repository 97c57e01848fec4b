from pathlib import Path

from lensfinder.mock.layout import MockConfig
from lensfinder.mock.write import write_mock_survey
from lensfinder.workflow import run_step

root = Path(snakemake.output.manifest[0]).parent  # <root>/mock.json
# bricks rendered by the job's threads as worker processes
run_step(snakemake, lambda: write_mock_survey(root, MockConfig.from_dict(snakemake.params.mock), workers=snakemake.threads))
