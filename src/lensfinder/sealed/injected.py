"""Injected lenses on the sealed survey's own deflectors, measured at each scorer's FPR cuts.

The injections are the selection function's (``injection`` section: its deflector cuts,
priors and grid), painted onto the sealed survey's cutouts by the same code
(``lensfinder.injection.sets``), so the sealed survey measures the search on injected
lenses too, reported apart from its mock lenses. Each scorer's cut is the one its sealed
nonlenses set at each FPR point, so the recall here is at the same false-positive rate as
the mock lenses'. Several injections share a deflector, so intervals come from a bootstrap
over deflectors as well as Wilson's over injections.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardSet
from lensfinder.metrics import wilson_interval
from lensfinder.ranking.ensemble import apply_meta
from lensfinder.tables import pack_keys, read_keyed

DEFLECTOR_KEY = ("DEFLECTOR_RELEASE", "DEFLECTOR_BRICKID", "DEFLECTOR_OBJID")


def injected_scores(manifest_path, score_paths: dict, meta: dict, baseline_path) -> pd.DataFrame:
    """One row per injection: its index columns and every scorer's logit (``LOGIT_<MODEL>``,
    ``LOGIT_MEAN``, ``LOGIT_ENSEMBLE``, and ``LOGIT_CATALOGUE_ONLY``: the deflector's own
    catalogue score, as the arcs are in no catalogue)."""
    index = ShardSet(manifest_path).index.copy()
    table = index.set_index(list(KEY))
    for model, path in score_paths.items():
        scores = read_keyed(path, ["logit"]).set_index(list(KEY))["logit"].astype(np.float64)
        table[f"LOGIT_{model.upper()}"] = scores.reindex(table.index).to_numpy()
    models = list(score_paths)
    features = table[[f"LOGIT_{m.upper()}" for m in models]].rename(columns=lambda c: c.removeprefix("LOGIT_").lower())
    table["LOGIT_MEAN"] = features.mean(axis=1, skipna=False).to_numpy()
    table["LOGIT_ENSEMBLE"] = apply_meta(meta, features[meta["inputs"]]) if len(table) else []
    base = read_keyed(baseline_path, ["logit"]).rename(columns={"logit": "LOGIT_CATALOGUE_ONLY",
                                                                **{k: d for k, d in zip(KEY, DEFLECTOR_KEY)}})
    table = table.reset_index().merge(base, on=list(DEFLECTOR_KEY), how="left")
    return table


def recall_at(threshold: float, s, deflectors, n_boot: int = 1000, seed: int = 0) -> dict:
    """Recall of injections scoring above ``threshold`` [logit], with Wilson's interval over
    injections and a percentile bootstrap over deflectors (injections resampled with their
    deflector)."""
    s = np.asarray(s, dtype=np.float64)
    hit = s > threshold
    n, k = len(s), int(hit.sum())
    out = {"n": n, "recovered": k, "recall": k / n if n else float("nan"),
           "recall_ci": list(wilson_interval(k, n)), "recall_ci_deflectors": [float("nan"), float("nan")]}
    if n and np.isfinite(threshold):
        _, group = np.unique(np.asarray(deflectors), return_inverse=True)
        hits, totals = np.bincount(group, weights=hit), np.bincount(group)
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(totals), size=(n_boot, len(totals)))
        boot = hits[draws].sum(1) / np.maximum(totals[draws].sum(1), 1)
        out["recall_ci_deflectors"] = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    elif not np.isfinite(threshold):
        out.update(recall=float("nan"), recall_ci=[float("nan"), float("nan")])
    return out


def measure_injected(table: pd.DataFrame, columns: dict, thresholds: dict, theta_bins, n_boot: int) -> dict:
    """For every scorer and FPR point (``thresholds``: scorer -> {FPR label: logit or NaN}),
    the injections' recall; and by theta_E at the first FPR point."""
    keys = pack_keys(*(table[k] for k in DEFLECTOR_KEY))
    out = {}
    for name, col in columns.items():
        s = table[col].to_numpy(np.float64)
        entry = {q: recall_at(t, s, keys, n_boot) for q, t in thresholds[name].items()}
        first = next(iter(thresholds[name]))
        theta = table["THETA_E"].to_numpy(np.float64)
        entry["per_theta_e"] = []
        for lo, hi in zip(theta_bins[:-1], theta_bins[1:]):
            m = (theta >= lo) & (theta < hi)
            if m.any():
                entry["per_theta_e"].append({"theta_e_lo": lo, "theta_e_hi": hi, "fpr": first,
                                             **recall_at(thresholds[name][first], s[m], keys[m], n_boot)})
        out[name] = entry
    return out
