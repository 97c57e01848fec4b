# Config validation, the sweep list and the paths every rule shares.
from snakemake.utils import validate

from lensfinder import workflow as lfw

validate(config, schema="../../config/schema/config.schema.yaml")

RESULTS = f"results/{config['run']}"
TREE = lfw.survey_tree(config)
SWEEPS = lfw.sweeps_to_process(config)


wildcard_constraints:
    sweep=r"sweep-\d{3}[pm]\d{3}-\d{3}[pm]\d{3}",


def sweep_file(wildcards):
    return str(TREE.sweep_path(wildcards.sweep))


def survey_ready():
    """The mock's manifest when the workflow writes the survey itself, else nothing."""
    if config["survey"]["source"] == "mock":
        return lfw.mock_files(config)["manifest"]
    return []


def final_targets():
    return [
        *expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        f"{RESULTS}/objects/selection_counts.csv",
        *expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS),
    ]
