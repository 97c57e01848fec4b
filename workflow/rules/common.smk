# Config validation, the sweep list and the paths every rule shares.
import json
import os

from snakemake.utils import validate

from lensfinder import workflow as lfw
from lensfinder.catalog.lenses import catalog_input_files, catalog_versions

validate(config, schema="../../config/schema/config.schema.yaml")

RESULTS = f"results/{config['run']}"
TREES = lfw.survey_trees(config)
# Sweep IDs: the file stem with one region, <region>/<stem> with several (the same stem
# exists in every region's tree), so per-sweep outputs go to .../objects/north/sweep-....
SWEEPS = lfw.sweeps_to_process(config)
# Inference batches: {batch: sweeps}, one infer job per batch and model (infer.sweeps_per_job)
BATCHES = lfw.sweep_batches(SWEEPS, config["infer"]["sweeps_per_job"])
# how a network scores (not how the sweeps are batched: changing that re-runs no scoring of the training set)
INFER_SETTINGS = {k: v for k, v in config["infer"].items() if k != "sweeps_per_job"}
EMBED = f"{RESULTS}/embed"
NETWORKS = list(config["models"])  # trained by rule train, scored by rule infer
# The meta-learner's base models: the networks, and S22's linear probe when offered to it.
PROBE_IN_ENSEMBLE = bool(config["embed"]["enabled"] and config["embed"]["probe"]["in_ensemble"])
MODELS = NETWORKS + (["probe"] if PROBE_IN_ENSEMBLE else [])


wildcard_constraints:
    sweep=r"((north|south)/)?sweep-\d{3}[pm]\d{3}-\d{3}[pm]\d{3}",
    batch=r"((north|south)/)?sweep-\d{3}[pm]\d{3}-\d{3}[pm]\d{3}|batch-\d{4}",
    model=r"(?!probe$)[A-Za-z0-9_-]+",  # a network's name; "probe" is S22's probe (rule probe)


def sweep_file(wildcards):
    return str(TREES.sweep_path(wildcards.sweep))


def sweep_region(wildcards):
    """The region whose tree holds the sweep (its objects' REGION, its coadds)."""
    return TREES.locate(wildcards.sweep)[0].region


def survey_ready():
    """The mock's manifest when the workflow writes the survey itself, else nothing."""
    if config["survey"]["source"] == "mock":
        return lfw.mock_files(config)["manifest"]
    return []


def trainset_extra_inputs():
    """Files the training set reads besides objects, cutouts and catalogues."""
    t = config["trainset"]
    files = [t[k] for k in ("previous_model", "rejections", "truth") if t.get(k)]
    return files + list(t.get("exclude", [])) + list(t.get("hard_negatives", []))


def per_node_launch(wildcards, resources):
    """The prefix that starts the launcher once per node when a profile gives the rule an
    `mpi` resource (several nodes, e.g. mpi: srun, nodes: 2, tasks: 2); nothing on one node."""
    mpi = resources.get("mpi")
    return f"{mpi} --ntasks-per-node=1 " if mpi else ""


def batch_sweeps(wildcards):
    return BATCHES[wildcards.batch]


def batch_files(pattern):
    """An input function: ``pattern`` (with {sweep}) for every sweep of the job's batch."""
    return lambda wildcards: [pattern.format(sweep=s) for s in BATCHES[wildcards.batch]]


def score_files(model, batches=None):
    """A base model's score tables, one per batch of sweeps (the probe's from rule probe)."""
    where = f"{EMBED}/probe/scores" if model == "probe" else f"{RESULTS}/scores/{model}"
    return [f"{where}/{b}.parquet" for b in (BATCHES if batches is None else batches)]


def model_scores(wildcards):
    """Every sweep's scores, one named input per base model (scores_<model>)."""
    return {f"scores_{m}": score_files(m) for m in MODELS}


def network_scores(wildcards):
    """Every batch's inference scores, one named input per network (scores_<model>)."""
    return {f"scores_{m}": score_files(m) for m in NETWORKS}


def batch_model_scores(wildcards):
    """One batch's scores, one named input per base model (scores_<model>)."""
    return {f"scores_{m}": score_files(m, [wildcards.batch]) for m in MODELS}


def model_trainset_inputs(wildcards):
    """Each base model's training-set scores and fitted model, by name (scores_<model>, checkpoint_<model>)."""
    files = {}
    for m in MODELS:
        where = f"{EMBED}/probe" if m == "probe" else f"{RESULTS}/models/{m}"
        files[f"scores_{m}"] = f"{where}/trainset_scores.parquet"
        files[f"checkpoint_{m}"] = f"{where}/probe.npz" if m == "probe" else f"{where}/best.pt"
    return files


def injection_scores(wildcards):
    """Each base model's scores of the injected lenses, by name (scores_<model>)."""
    return {f"scores_{m}": f"{RESULTS}/injections/scores/{m}.parquet" for m in MODELS}


def inspection_config():
    cfg = config.get("inspection") or {}
    if not cfg.get("db"):
        raise ValueError("the inspection stage needs the grades database: set inspection.db in the config, "
                         "e.g. snakemake inspection --config inspection='{db: grades.sqlite}'")
    return cfg


def inspection_candidates():
    return (config.get("inspection") or {}).get("candidates") or f"{RESULTS}/recommendations/recommendations.parquet"


def inspection_batch():
    """The batch name lensfinder-inspect serve gives by default: <run>/<table stem>."""
    batch = (config.get("inspection") or {}).get("batch")
    return batch or f"{config['run']}/{os.path.basename(inspection_candidates()).split('.')[0]}"


def final_targets():
    return [
        *expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        f"{RESULTS}/objects/selection_counts.csv",
        *expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS),
        f"{RESULTS}/trainset/labels.parquet",
        *expand(f"{RESULTS}/models/{{model}}/best.pt", model=NETWORKS),
        f"{RESULTS}/ensemble/meta.json",
        f"{RESULTS}/recommendations/recommendations.parquet",
        f"{RESULTS}/accounting.csv",
        *([f"{RESULTS}/evaluation/metrics.json"] if config["evaluation"].get("truth") else []),
        *embed_targets(),  # workflow/rules/embed.smk (S22)
        f"{RESULTS}/selection_function/completeness.csv",
        *([f"{RESULTS}/selection_function/crosscheck.csv"] if config["evaluation"].get("truth") else []),
    ]


def embed_targets():
    """The S22 outputs of `rule all` (workflow/rules/embed.smk); none with embed.enabled false."""
    if not config["embed"]["enabled"]:
        return []
    return [
        f"{EMBED}/encoder/encoder.pt",
        *expand(f"{EMBED}/representations/{{batch}}.npy", batch=BATCHES),
        f"{EMBED}/index/index.json",
        f"{EMBED}/candidates.parquet",
        f"{EMBED}/probe/probe.json",
        *([f"{EMBED}/summary.json"] if config["evaluation"].get("truth") else []),
    ]
