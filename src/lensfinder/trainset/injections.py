"""The training set's injected positives (``trainset.injections``): simulated lenses on the
training survey's own deflectors (``lensfinder.injection.sets.training_injections``) join the
training split, and every row is labelled with its SOURCE."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.files import atomic_path
from lensfinder.injection.sets import training_injections
from lensfinder.trainset.pool import stratum_of

log = logging.getLogger(__name__)


def add_training_injections(table: pd.DataFrame, images: dict, object_paths, objects, cfg,
                            catalog_specs=(), out_dir=None) -> pd.DataFrame:
    """``build_trainset``'s hook: label every row's SOURCE (catalogue, random) and, with
    ``cfg.injections`` > 0 (a TrainsetConfig), append that many injected positives
    (SOURCE=injection, SPLIT=train, LABEL=1, INJECTION_ID >= 0) whose images go into
    ``images`` (key -> cutout); their parameters go to ``out_dir/injections.parquet``.
    ``objects``: the run's ``ObjectPool`` (its shard sets; deflectors are found sweep by sweep)."""
    table = table.copy()
    table["SOURCE"] = np.where(table["LABEL"].to_numpy() == 1, "catalogue", "random")
    table["INJECTION_ID"] = -1
    n = int(getattr(cfg, "injections", 0) or 0)
    if n <= 0:
        return table
    rows, injected = training_injections(table, object_paths, objects.manifests, n, getattr(cfg, "injection", None),
                                         catalog_specs, getattr(cfg, "truth", None))
    if rows.empty:
        log.warning("trainset.injections: no deflector available, no injected positive added")
        return table
    images.update(injected)
    rows = rows.assign(STRATUM=stratum_of(rows), LABEL=1, SPLIT="train", SOURCE_CATALOG="injection",
                       SYSTEM_NAME=[f"injection {i}" for i in rows["INJECTION_ID"]], SCORE_PREVIOUS=np.nan)
    if out_dir is not None:
        with atomic_path(Path(out_dir) / "injections.parquet") as tmp:
            rows.drop(columns=["KEY"]).to_parquet(tmp, index=False)
    return pd.concat([table, rows[[c for c in table.columns if c in rows.columns]]], ignore_index=True)
