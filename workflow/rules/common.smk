# Config validation, the sweep list and the paths every rule shares.
import json
import os

from snakemake.utils import validate

from lensfinder import workflow as lfw
from lensfinder.catalogs import catalog_input_files, catalog_versions

validate(config, schema="../../config/schema/config.schema.yaml")

RESULTS = f"results/{config['run']}"
TREE = lfw.survey_tree(config)
SWEEPS = lfw.sweeps_to_process(config)
MODELS = list(config["models"])


wildcard_constraints:
    sweep=r"sweep-\d{3}[pm]\d{3}-\d{3}[pm]\d{3}",
    model=r"[A-Za-z0-9_-]+",


def sweep_file(wildcards):
    return str(TREE.sweep_path(wildcards.sweep))


def survey_ready():
    """The mock's manifest when the workflow writes the survey itself, else nothing."""
    if config["survey"]["source"] == "mock":
        return lfw.mock_files(config)["manifest"]
    return []


def trainset_extra_inputs():
    """Files the training set reads besides objects, cutouts and catalogues."""
    t = config["trainset"]
    files = [t[k] for k in ("previous_model", "rejections", "truth") if t.get(k)]
    return files + list(t.get("exclude", []))


def final_targets():
    return [
        *expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        f"{RESULTS}/objects/selection_counts.csv",
        *expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS),
        f"{RESULTS}/trainset/labels.parquet",
        *expand(f"{RESULTS}/models/{{model}}/best.pt", model=MODELS),
        f"{RESULTS}/ensemble/meta.json",
        f"{RESULTS}/recommendations/recommendations.parquet",
        f"{RESULTS}/accounting.csv",
        *([f"{RESULTS}/evaluation/metrics.json"] if config["evaluation"].get("truth") else []),
    ]
