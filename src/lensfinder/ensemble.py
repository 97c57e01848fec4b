"""The meta-learner of paper IV: feature-weighted stacking of the base models' scores.

A one-hidden-layer network (300 units) maps the base models' probabilities to one
probability. It is fit on the training split and evaluated on the validation split
beside the plain mean and each base model: AUC, and recall and precision in the top N
at a realistic nonlens:lens ratio (the validation nonlenses re-weighted so that they
stand for ``sky_ratio`` nonlenses per lens, 10,000 by default).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LensfinderError, atomic_path
from .shards import KEY, sha256


def fit_meta_learner(features, labels, hidden=300, seed=0):
    """The stacking network (sklearn MLP, one hidden layer) on base-model probabilities."""
    from sklearn.neural_network import MLPClassifier

    meta = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=2000, random_state=seed, early_stopping=False)
    meta.fit(np.asarray(features), np.asarray(labels))
    return meta


def top_n_metrics(labels, scores, n, sky_ratio=10_000.0):
    """Recall and precision among the N highest scores when the nonlenses are re-weighted to
    ``sky_ratio`` per lens (each validation nonlens counts sky_ratio * n_lens / n_nonlens)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores)
    n_lens, n_non = labels.sum(), (~labels).sum()
    if n_lens == 0 or n_non == 0:
        return float("nan"), float("nan")
    w = np.where(labels, 1.0, sky_ratio * n_lens / n_non)
    order = np.argsort(-scores, kind="stable")
    cum = np.cumsum(w[order])
    k = int(np.searchsorted(cum, n, side="right"))  # objects (weighted) that fit in the top N
    k = max(k, 1)
    top = order[:k]
    tp = labels[top].sum()
    return float(tp / n_lens), float(tp / w[top].sum())


def evaluate(labels, columns: dict, top_n=(100, 1000), sky_ratio=10_000.0) -> pd.DataFrame:
    from sklearn.metrics import roc_auc_score

    rows = []
    for name, s in columns.items():
        row = {"scorer": name, "auc": float(roc_auc_score(labels, s))}
        for n in top_n:
            r, p = top_n_metrics(labels, s, n, sky_ratio)
            row[f"recall_top{n}"], row[f"precision_top{n}"] = r, p
        rows.append(row)
    return pd.DataFrame(rows)


def build_ensemble(score_paths: dict, checkpoints: dict, out_dir, hidden=300, top_n=(100, 1000), sky_ratio=10_000.0,
                   seed=0) -> pd.DataFrame:
    """Fit on the training split, evaluate on validation; save the model and the comparison.

    ``score_paths``: model name -> its scores on the training set (``score_trainset``).
    """
    out_dir = Path(out_dir)
    names = list(score_paths)
    frames = [pd.read_parquet(score_paths[m]).set_index(list(KEY)) for m in names]
    base = frames[0][["LABEL", "SPLIT"]].copy()
    for m, f in zip(names, frames):
        if len(f) != len(base) or not f.index.equals(base.index):
            raise LensfinderError(f"scores of model {m} ({score_paths[m]}) do not cover the same training set")
        base[m] = f["prob"]
    if base[names].isna().any().any():
        raise LensfinderError("NaN base-model scores on the training set: check the models' training logs")
    train, val = base[base["SPLIT"] == "train"], base[base["SPLIT"] == "val"]
    meta = fit_meta_learner(train[names].to_numpy(), train["LABEL"].to_numpy(), hidden, seed)
    columns = {m: val[m].to_numpy() for m in names}
    columns["mean"] = val[names].mean(axis=1).to_numpy()
    columns["meta-learner"] = meta.predict_proba(val[names].to_numpy())[:, 1]
    table = evaluate(val["LABEL"].to_numpy(), columns, top_n, sky_ratio)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "meta.pkl") as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump({"model": meta, "inputs": names}, fh)
    info = {"inputs": names, "hidden_units": hidden, "sky_ratio": sky_ratio, "top_n": list(top_n),
            "checkpoints": {m: {"path": str(checkpoints[m]), "sha256": sha256(checkpoints[m])} for m in names},
            "n_train": int(len(train)), "n_val": int(len(val)),
            "evaluation": table.to_dict(orient="records")}
    with atomic_path(out_dir / "meta.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    with atomic_path(out_dir / "evaluation.csv") as tmp:
        table.to_csv(tmp, index=False)
    from .plots import plot_roc_pr

    plot_roc_pr(val["LABEL"].to_numpy(), columns["meta-learner"], out_dir / "comparison.png", label="meta-learner",
                curves={k: v for k, v in columns.items() if k != "meta-learner"})
    return table


def load_meta(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def apply_meta(meta, features: pd.DataFrame) -> np.ndarray:
    """Meta-learner probabilities for a frame with one column per base model."""
    return meta["model"].predict_proba(features[meta["inputs"]].to_numpy())[:, 1]
