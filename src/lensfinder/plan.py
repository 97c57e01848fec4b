"""``lensfinder-plan``: what a run will ask of the cluster, before it runs.

For the configured survey it prints the sweeps and their rows, the selected objects, the
jobs per rule and the SLURM submissions under a profile (Snakemake's own dry run, so the
counts are the workflow's), core-hours and GPU-hours, disk for shards, scores and
representations, and memory per rule (the profile's request beside what the gathering
stages need at this size), for an allocation request.

Every cost is per object (or per byte of sweep) and names its source (``COSTS``): this
repository's benchmarks where they were measured, ``docs/performance.md`` anchors where no
GPU was at hand (published or derived figures, marked so). Selected objects come from a
finished run of the same config (``results/<run>/objects/selection_counts.csv``) when there
is one, else from ``--selected-per-sweep`` (default: paper IV's 43.5M selected objects over
DR10's 1,436 sweeps), and the table says which.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from lensfinder.errors import LensfinderError


@dataclass(frozen=True)
class Cost:
    value: float
    unit: str
    source: str


COSTS = {
    "sweep_read": Cost(0.8e9, "sweep bytes/s per core", "docs/performance.md: fitsio decode, measured [meas]"),
    "cutouts": Cost(803.0, "cutouts/s per core", "benchmarks/README.md, Cutouts: extraction to shards with the tile "
                    "cache, 1 worker, 2,000 objects on 2 bricks, 2-core CPU [meas]"),
    "infer": Cost(25_000.0, "images/s per A100", "docs/performance.md: EfficientNetV2-S at 101 px, derived from "
                  "published rates (no GPU measured here)"),
    "embed": Cost(17_500.0, "images/s per A100", "infer's rate x 1.41/2.02 GFLOP (EfficientNetV2-S / ResNet-50), "
                  "derived"),
    "train": Cost(1_200.0, "images/s per A100", "paper IV section 3.2 [src]"),
    "rank_memory": Cost(660.0, "bytes per shortlisted row", "benchmarks/scale.py at 43.5M objects: rank of "
                        "1,436 sweeps' shortlists, 1.21 GB for 1.44M rows, 0.26 GB of it the imports [meas]"),
    "trainset_memory": Cost(105.0, "bytes per selected object", "benchmarks/scale.py: the training set's draw "
                            "from 43.5M objects, 4.85 GB, above the imports [meas]"),
}


PAPER_IV_SELECTED, DR10_SWEEPS = 43.5e6, 1436  # paper IV's selected objects; DR10 south sweep files
PAPER_IV_TRAIN_IMAGES = 95_000.0
PYTHON_BYTES = 0.26e9  # a Python process with numpy, pandas and pyarrow imported (benchmarks/scale.py)
SCORE_BYTES = 3 * 8 + 2 * 8 + 4 + 8  # key, RA/Dec, float32 logit, float64 probability (uncompressed)


def dry_run_jobs(workdir: Path, snakemake_args: list[str]) -> tuple[dict, dict]:
    """From ``snakemake -n``: jobs per rule (its 'Job stats' table), and per rule the
    threads and resources Snakemake would give its first job (rule, profile and defaults
    resolved by Snakemake itself)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", *snakemake_args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Job stats:" not in out:
        if "Nothing to be done" in out:
            return {}, {}
        raise LensfinderError(f"snakemake -n failed in {workdir}:\n{out[-3000:]}")
    counts = {}
    for line in out.split("Job stats:")[1].split("\n\n")[0].splitlines():
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s+(\d+)\s*", line)
        if m and m.group(1) not in ("job", "total", "all"):
            counts[m.group(1)] = int(m.group(2))
    resources = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n?)*)", out, flags=re.M):
        rule, block = m.group(1), m.group(2)
        if rule in resources or rule not in counts:
            continue
        threads = re.search(r"^    threads: (\d+)", block, flags=re.M)
        res = re.search(r"^    resources: (.*)$", block, flags=re.M)
        pairs = dict(kv.split("=", 1) for kv in res.group(1).split(", ") if "=" in kv) if res else {}
        resources[rule] = {"threads": int(threads.group(1)) if threads else 1, **pairs}
    return counts, resources


def submissions(jobs: dict, profile: dict) -> dict:
    """SLURM jobs per rule: grouped rules share one submission per ``group-components``
    connected components (all of a group's rules counted on its first rule); localrules
    and ``all`` none. A group's rules are chained one job per sweep (select -> cutouts), so
    its components are as many as its rule with the most jobs."""
    groups = profile.get("groups") or {}
    components = profile.get("group-components") or {}
    out, seen = {}, set()
    for rule, n in jobs.items():
        group = groups.get(rule)
        if group is None:
            out[rule] = n
        elif group in seen:
            out[rule] = 0
        else:
            seen.add(group)
            n_components = max(jobs[r] for r, g in groups.items() if g == group and r in jobs)
            out[rule] = math.ceil(n_components / int(components.get(group, 1)))
    return out


def _sweep_sizes(config: dict) -> tuple[int, int, int]:
    """(sweeps, rows, bytes) of the configured survey's sweep files."""
    import fitsio

    from lensfinder.survey.tree import survey_trees
    from lensfinder.workflow import sweeps_to_process

    trees = survey_trees(config)
    rows = size = 0
    sweeps = sweeps_to_process(config)
    for sweep in sweeps:
        path = trees.sweep_path(sweep)
        if not path.exists():
            raise LensfinderError(f"sweep file {path} does not exist: lensfinder-plan reads the sweeps' headers "
                                  "(for the mock, run the mock_survey rule first)")
        rows += int(fitsio.read_header(str(path), ext=1)["NAXIS2"])
        size += path.stat().st_size
    return len(sweeps), rows, size


def _selected(config: dict, workdir: Path, n_sweeps: int, rows: int, per_sweep: float | None) -> tuple[float, str]:
    counts = workdir / "results" / config["run"] / "objects/selection_counts.csv"
    if per_sweep is None and counts.exists():
        import pandas as pd

        total = pd.read_csv(counts).set_index("sweep").loc["total"]
        fraction = float(total["selected"]) / max(float(total["input"]), 1.0)
        return rows * fraction, f"the selected fraction of a finished run ({counts}: {fraction:.3%} of rows)"
    if per_sweep is None:
        per_sweep = PAPER_IV_SELECTED / DR10_SWEEPS
        return n_sweeps * per_sweep, (f"{per_sweep:,.0f} per sweep: paper IV's 43.5M selected objects over DR10's "
                                      f"{DR10_SWEEPS:,} sweeps (pass --selected-per-sweep, or plan after a run)")
    return n_sweeps * per_sweep, f"{per_sweep:,.0f} per sweep (--selected-per-sweep)"


def _trainset_size(config: dict, workdir: Path) -> tuple[float, str]:
    """Training images per epoch: a finished run's training split, else paper IV's ~95k."""
    import json

    summary = workdir / "results" / config["run"] / "trainset/summary.json"
    if summary.exists():
        split = json.loads(summary.read_text())["split"]["train"]
        return float(split["lenses"] + split["nonlenses"]), f"the training split of {summary}"
    return PAPER_IV_TRAIN_IMAGES, "paper IV's ~95k training images, docs/performance.md"


def plan(config: dict, profile: dict, jobs: dict, resources: dict, workdir: Path,
         per_sweep: float | None = None) -> str:
    """The plan as Markdown (see the module docstring)."""
    n_sweeps, rows, sweep_bytes = _sweep_sizes(config)
    selected, selected_source = _selected(config, workdir, n_sweeps, rows, per_sweep)
    models = config["models"]
    size = int(config.get("cutouts", {}).get("size", 101))
    cutout_bytes = 3 * size * size * 2
    embed = config.get("embed") or {}
    dim = 2048 if (embed.get("pretrain") or {}).get("preset") == "resnet50" else 128
    subs = submissions(jobs, profile)
    # GPU-hours (A100) and core-hours, per rule, from the per-object costs
    epochs = sum(int((m.get("train") or {}).get("epochs", 1)) for m in models.values())
    trainset_size, trainset_source = _trainset_size(config, workdir)
    hours = {
        "select": ("core", sweep_bytes / COSTS["sweep_read"].value / 3600, "sweep_read"),
        "cutouts": ("core", selected / COSTS["cutouts"].value / 3600, "cutouts"),
        "infer": ("GPU", selected * len(models) / COSTS["infer"].value / 3600, "infer"),
        "train": ("GPU", epochs * trainset_size / COSTS["train"].value / 3600, "train"),
    }
    if embed.get("enabled", True):
        hours["embed"] = ("GPU", selected / COSTS["embed"].value / 3600, "embed")
    lines = [
        f"# lensfinder plan: run `{config['run']}`",
        "",
        "| | |",
        "|---|---|",
        f"| sweeps | {n_sweeps:,} ({sweep_bytes / 1e9:,.1f} GB) |",
        f"| sweep rows | {rows:,} |",
        f"| selected objects | {selected:,.0f} ({selected_source}) |",
        f"| models | {len(models)}: {', '.join(models)} |",
        f"| disk: cutout shards (fp16, {size} px) | {selected * cutout_bytes / 1e12:,.2f} TB |",
        f"| disk: scores ({len(models)} models) | {selected * SCORE_BYTES * len(models) / 1e9:,.1f} GB |",
    ]
    if embed.get("enabled", True):
        lines.append(f"| disk: representations (fp16, {dim}-d) | {selected * 2 * dim / 1e9:,.1f} GB |")
    rank_cfg = config.get("rank") or {}
    held = n_sweeps * min(selected / max(n_sweeps, 1), float(rank_cfg.get("keep_top_per_sweep", 1000)))
    needs = {"rank": (f"merges the shortlists (~{held:,.0f} rows, each sweep's top "
                      f"{int(rank_cfg.get('keep_top_per_sweep', 1000)):,}, plus any above "
                      f"{rank_cfg.get('keep_above_score', 0.5)})", PYTHON_BYTES + held * COSTS["rank_memory"].value),
             "trainset": (f"draws from every selected object ({selected:,.0f})",
                          PYTHON_BYTES + selected * COSTS["trainset_memory"].value)}
    for rule, (what, need) in needs.items():
        req = float(resources.get(rule, {}).get("mem_mb", 0)) / 1e3
        short = f" (too little: raise set-resources.{rule}.mem_mb)" if need / 1e9 > req else ""
        lines.append(f"| memory: `{rule}` {what} | ~{need / 1e9:,.1f} GB needed; the profile asks {req:,.0f} GB{short} |")
    lines += ["", "| rule | jobs | SLURM jobs | threads | memory (GB) | GPUs per job | hours |", "|---|---|---|---|---|---|---|"]
    set_threads = profile.get("set-threads") or {}
    for rule in sorted(jobs, key=lambda r: (-jobs[r], r)):
        kind, h, _ = hours.get(rule, ("", None, None))
        # what Snakemake resolved for the rule's first job; grouped jobs print none, so the
        # profile's values stand in; threads as the profile sets them (a dry run caps them)
        res = {**(profile.get("default-resources") or {}), **(profile.get("set-resources") or {}).get(rule, {}),
               **resources.get(rule, {})}
        res["threads"] = set_threads.get(rule, resources.get(rule, {}).get("threads", 1))
        gpus = res.get("gpu") or res.get("gres") or 0
        hour_text = f"{h:,.1f} {kind}-h (A100)" if kind == "GPU" and h is not None else (
            f"{h:,.1f} {kind}-h" if h is not None else "not costed")
        mem = float(res.get("mem_mb", 0)) / 1e3
        lines.append(f"| `{rule}` | {jobs[rule]:,} | {subs.get(rule, 0):,} | {res.get('threads', 1)} | {mem:,.0f} | "
                     f"{gpus} | {hour_text} |")
    total_core = sum(h for k, h, _ in hours.values() if k == "core")
    total_gpu = sum(h for k, h, _ in hours.values() if k == "GPU")
    lines += ["", f"Total: {sum(subs.values()):,} SLURM jobs; {total_core:,.1f} core-hours and {total_gpu:,.1f} "
              f"A100 GPU-hours for the stages costed above. Training: "
              f"{epochs} epochs in all over {trainset_size:,.0f} training images ({trainset_source}).", "",
              "Costs used:", ""]
    lines += [f"- `{name}`: {c.value:,.0f} {c.unit} ({c.source})" for name, c in COSTS.items()]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Print what a run will need (jobs, hours, disk, memory) before it runs.")
    ap.add_argument("--configfile", default="config/config.yaml", help="the run's config (default config/config.yaml)")
    ap.add_argument("--profile", default="profiles/slurm", help="the Snakemake profile directory (default profiles/slurm)")
    ap.add_argument("--directory", default=".", help="the workflow's directory (default: here)")
    ap.add_argument("--selected-per-sweep", type=float, default=None,
                    help="selected objects per sweep (default: a finished run's fraction, else paper IV's)")
    args = ap.parse_args(argv)
    workdir = Path(args.directory)
    try:
        config = _load_config(workdir / args.configfile)
        profile = yaml.safe_load((workdir / args.profile / "config.yaml").read_text())
        jobs, resources = dry_run_jobs(workdir, ["--profile", args.profile, "--configfile", args.configfile])
        print(plan(config, profile, jobs, resources, workdir, args.selected_per_sweep))
    except LensfinderError as err:
        raise SystemExit(f"lensfinder-plan: {err}") from None


def _load_config(path: Path) -> dict:
    """The config as the workflow sees it: the file, with the schema's defaults filled in."""
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[2]
    config = yaml.safe_load(Path(path).read_text())
    schema = path.parent / "schema/config.schema.yaml"
    if not schema.exists():
        schema = repo / "config/schema/config.schema.yaml"
    validate(config, str(schema))
    return config


if __name__ == "__main__":
    main()
