"""The meta-learner of paper IV: feature-weighted stacking of the base models' scores.

A one-hidden-layer network (300 units) maps the base models' scores to one probability.
It is fit on the training split and evaluated on the validation split beside the plain
mean and each base model: AUC, and recall and precision in the top N at a realistic
nonlens:lens ratio (the validation nonlenses re-weighted so that they stand for
``sky_ratio`` nonlenses per lens, 10,000 by default; see ``lensfinder.metrics``).

Paper IV stacks probabilities; here the features are the base models' float32 logits
(standardised), and every ranking uses logits: a probability saturates at exactly 1.0
for logits above ~17 in float32, which turns the top of the ranking into ties. The mean
of the base models is likewise taken on logits.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LensfinderError, atomic_path
from .metrics import top_n_metrics
from .shards import KEY, sha256


def fit_meta_learner(features, labels, hidden=300, seed=0):
    """The stacking network (standardised inputs, sklearn MLP with one hidden layer)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=2000, random_state=seed, early_stopping=False)
    meta = make_pipeline(StandardScaler(), mlp)
    meta.fit(np.asarray(features, dtype=np.float64), np.asarray(labels))
    return meta


def meta_logit(meta, features) -> np.ndarray:
    """The meta-learner's output before its logistic: a ranking score that never saturates
    (``predict_proba`` is its sigmoid)."""
    *transforms, mlp = [step for _, step in meta.steps] if hasattr(meta, "steps") else [meta]
    a = np.asarray(features, dtype=np.float64)
    for t in transforms:
        a = t.transform(a)
    last = len(mlp.coefs_) - 1
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        a = a @ w + b
        if i < last:
            if mlp.activation != "relu":
                raise LensfinderError(f"meta-learner activation {mlp.activation!r} is not supported")
            a = np.maximum(a, 0.0)
    return a[:, 0]


def evaluate(labels, columns: dict, top_n=(100, 1000), sky_ratio=10_000.0) -> pd.DataFrame:
    """AUC and re-weighted top-N recall and precision per scorer (``columns``: name -> logits)."""
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
        base[m] = f["logit"]
    if not np.isfinite(base[names].to_numpy()).all():
        raise LensfinderError("non-finite base-model scores on the training set: check the models' training logs")
    train, val = base[base["SPLIT"] == "train"], base[base["SPLIT"] == "val"]
    meta = fit_meta_learner(train[names].to_numpy(), train["LABEL"].to_numpy(), hidden, seed)
    columns = {m: val[m].to_numpy() for m in names}
    columns["mean"] = val[names].mean(axis=1).to_numpy()
    columns["meta-learner"] = meta_logit(meta, val[names].to_numpy())
    table = evaluate(val["LABEL"].to_numpy(), columns, top_n, sky_ratio)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "meta.pkl") as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump({"model": meta, "inputs": names}, fh)
    info = {"inputs": names, "features": "logit", "hidden_units": hidden, "sky_ratio": sky_ratio, "top_n": list(top_n),
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


def apply_meta(meta, logits: pd.DataFrame) -> np.ndarray:
    """Meta-learner logits for a frame of base-model logits, one column per base model."""
    return meta_logit(meta["model"], logits[meta["inputs"]].to_numpy())
