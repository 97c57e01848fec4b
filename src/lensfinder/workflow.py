"""Glue between the Snakemake workflow and the package: config -> survey, sweeps, steps.

Everything here runs at DAG-build time (on a login node and in every SLURM job), so it
stays cheap: no image is read and the mock is planned, not drawn.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from pathlib import Path

from lensfinder.errors import LensfinderError
from lensfinder.files import remove_stale_temporaries
from lensfinder.survey.sweeps import parse_sweep_name, split_sweep_id
from lensfinder.survey.tree import SurveyTrees, survey_regions, survey_trees


def mock_config(config):
    """The mock's settings; the survey section must ask for a release and regions it writes."""
    from lensfinder.mock.layout import MockConfig

    cfg = MockConfig.from_dict(config.get("mock"))
    if config["survey"]["source"] == "mock":
        release, regions = config["survey"]["release"], survey_regions(config)
        if release != cfg.release:
            raise LensfinderError(f"survey.release {release} is not the mock's (mock.release: {cfg.release}): "
                                  "set both to the same release")
        if not set(regions) <= set(cfg.regions):
            raise LensfinderError(f"survey reads regions {regions}, but the mock writes only {cfg.regions} "
                                  "(mock.regions): add them there or read fewer")
    return cfg


def mock_files(config) -> dict:
    from lensfinder.mock.layout import planned_files

    return planned_files(config["survey"]["root"], mock_config(config))


def sealed_config(config):
    """The sealed survey's mock settings: the training mock's sky with the ``sealed``
    section's seed, area and lens count; checked apart from the training mock."""
    from lensfinder.sealed.survey import SealedConfig, check_apart, sealed_mock_config

    training = mock_config(config)
    sealed = sealed_mock_config(training, SealedConfig.from_dict(config.get("sealed")))
    if config["survey"]["source"] == "mock":
        check_apart(training, sealed)
    return sealed


def sealed_root(config) -> str:
    """Where the sealed survey's data go (``sealed.root``): its tree, objects, cutouts and
    injections, which depend on the mock, sealed, selection, cutouts and injection sections
    only, so several runs (training seeds) score one survey."""
    from lensfinder.sealed.survey import SealedConfig

    return SealedConfig.from_dict(config.get("sealed")).root


def sealed_sweeps(config) -> list[str]:
    """The sealed survey's sweep names (planned, not drawn)."""
    from lensfinder.mock.layout import planned_sweeps

    return planned_sweeps(sealed_config(config))


def _filter_sweeps(ids, spec, where, trees: SurveyTrees):
    """The sweep IDs ``ids`` that ``survey.sweeps`` picks: all, a list, or an RA/Dec box.

    List entries are sweep IDs or bare stems; a bare stem picks that sweep in every region.
    """
    if spec in (None, "all"):
        return list(ids)
    if isinstance(spec, list):
        out = []
        for entry in spec:
            region, stem = split_sweep_id(entry.removesuffix(".fits"))  # clear error on a malformed name
            hits = [i for i in ids if split_sweep_id(i)[1] == stem and region in (None, trees.locate(i)[0].region)]
            if not hits:
                raise LensfinderError(f"survey.sweeps lists {[entry]}, which is not in {where}")
            out += [h for h in hits if h not in out]
        return out
    box = spec
    out = [i for i in ids if parse_sweep_name(split_sweep_id(i)[1]).overlaps(box["ra_min"], box["ra_max"],
                                                                            box["dec_min"], box["dec_max"])]
    if not out:
        raise LensfinderError(f"no sweep file in {where} overlaps the survey.sweeps box {box}")
    return out


def sweeps_to_process(config) -> list[str]:
    """Sweep IDs to process: the mock's planned sweeps, or those found in the real tree(s),
    filtered by ``survey.sweeps``. One region: the file stems (``sweep-150p000-155p005``);
    several: ``<region>/<stem>``, region by region in the order of ``survey.regions``."""
    spec = config["survey"].get("sweeps", "all")
    trees = survey_trees(config)
    if config["survey"]["source"] == "mock":
        from lensfinder.mock.layout import planned_sweeps

        stems = planned_sweeps(mock_config(config))
        ids = [trees.sweep_id(region, n) for region in trees.regions for n in stems]
        return _filter_sweeps(ids, spec, "the mock survey", trees)
    ids = []
    for region in trees.regions:
        tree = trees.tree(region)
        names = tree.list_sweeps()
        if not names:
            raise LensfinderError(f"no sweep-*.fits file in {tree.sweep_dir}: check survey.root and survey.sweep_version")
        ids += [trees.sweep_id(region, n) for n in names]
    where = " and ".join(str(trees.tree(r).sweep_dir) for r in trees.regions)
    return _filter_sweeps(ids, spec, where, trees)


def sweep_batches(sweeps, per_job: int) -> dict[str, list[str]]:
    """Inference batches, {batch id: sweep IDs}: one GPU job per batch and model loads the
    model once and scores all its sweeps. With ``per_job`` 1 every sweep is its own batch,
    named as the sweep; otherwise consecutive runs of ``per_job`` sweeps in the run's sweep
    order, named ``batch-0000``, ``batch-0001``, ... (a sweep added to or removed from the
    run moves the later ones into other batches, which Snakemake then re-runs)."""
    if per_job < 1:
        raise LensfinderError(f"infer.sweeps_per_job is {per_job}: give 1 or more")
    if per_job == 1:
        return {s: [s] for s in sweeps}
    return {f"batch-{i // per_job:04d}": list(sweeps[i : i + per_job]) for i in range(0, len(sweeps), per_job)}


def run_step(smk, func):
    """Run one rule's work with stdout/stderr (progress bars included) going to its log.

    A LensfinderError ends the job with its one-line message on the console and in the
    log; any other exception leaves its traceback in the log.
    """
    log_path = Path(smk.log[0]) if smk.log else None
    console = sys.stderr
    with contextlib.ExitStack() as stack:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            fh = stack.enter_context(open(log_path, "w", buffering=1))
            stack.enter_context(contextlib.redirect_stdout(fh))
            stack.enter_context(contextlib.redirect_stderr(fh))
        start = time.time()
        print(f"lensfinder rule {smk.rule}: start", flush=True)
        for stale in remove_stale_temporaries(smk.output):
            print(f"removed {stale}, left by a killed run", flush=True)
        try:
            func()
        except LensfinderError as err:
            msg = f"lensfinder error in rule {smk.rule}: {err}"
            print(msg, flush=True)
            print(msg, file=console, flush=True)
            sys.exit(1)
        except Exception:
            traceback.print_exc()
            raise
        print(f"lensfinder rule {smk.rule}: done in {time.time() - start:.1f} s", flush=True)
