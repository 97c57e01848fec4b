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

from .errors import LensfinderError
from .survey import SurveyTree, parse_sweep_name


def survey_tree(config) -> SurveyTree:
    s = config["survey"]
    return SurveyTree(s["root"], s["release"], s["region"], s.get("sweep_version"))


def mock_config(config):
    from .mock import MockConfig

    return MockConfig.from_dict(config.get("mock"))


def mock_files(config) -> dict:
    from .mock import planned_files

    return planned_files(config["survey"]["root"], mock_config(config))


def _filter_sweeps(names, spec, where):
    if spec in (None, "all"):
        return list(names)
    if isinstance(spec, list):
        wanted = [Path(n).name.removesuffix(".fits") for n in spec]
        for n in wanted:
            parse_sweep_name(n)  # clear error on a malformed name
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise LensfinderError(f"survey.sweeps lists {missing}, which are not in {where}")
        return wanted
    box = spec
    out = [n for n in names if parse_sweep_name(n).overlaps(box["ra_min"], box["ra_max"], box["dec_min"], box["dec_max"])]
    if not out:
        raise LensfinderError(f"no sweep file in {where} overlaps the survey.sweeps box {box}")
    return out


def sweeps_to_process(config) -> list[str]:
    """Sweep stems to process: the mock's planned sweeps, or those found in the real tree,
    filtered by ``survey.sweeps`` (``all``, a list of names, or an RA/Dec box)."""
    spec = config["survey"].get("sweeps", "all")
    if config["survey"]["source"] == "mock":
        from .mock import planned_sweeps

        return _filter_sweeps(planned_sweeps(mock_config(config)), spec, "the mock survey")
    tree = survey_tree(config)
    names = tree.list_sweeps()
    if not names:
        raise LensfinderError(f"no sweep-*.fits file in {tree.sweep_dir}: check survey.root and survey.sweep_version")
    return _filter_sweeps(names, spec, str(tree.sweep_dir))


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
