"""The meta-learner of paper IV: feature-weighted stacking of the base models' scores.

A one-hidden-layer network (300 units) maps the base models' scores to one probability; it
is constrained to be monotone in each of them (``lensfinder.ranking.stacking`` says why).

What it is fit on (``ensemble.fit_on``):

* ``validation`` (the default): the base models' scores on the validation split, which no
  network was trained on (it only picked each network's best epoch). A stacker must learn
  from scores like those it will combine at deployment. On the training split each network's
  scores show how well it fit its own rows (and, on the mock, the injected positives only
  that split holds): there the EfficientNet's AUC was 0.979 and the ResNet's 0.932, against
  0.970 and 0.944 on validation (``training_auc`` in ``meta.json``), so a stacker fit there
  leaned on the EfficientNet and all but ignored the ResNet, whose score rises with an arc's
  brightness: the brightest injected sources were recovered less often than fainter ones.
  The stacker's own figures are then out-of-fold: ``cv_folds`` stratified folds of the
  validation split, each scored by a stacker fit on the others.
* ``training``: paper IV's choice, fit on the training split and evaluated on validation.

Either way the comparison lists each base model, the plain mean and the meta-learner on the
same validation rows: AUC, and recall and precision in the top N at a realistic
nonlens:lens ratio (the validation nonlenses re-weighted so that they stand for
``sky_ratio`` nonlenses per lens, 10,000 by default; see ``lensfinder.metrics``). The
search's honest figures come later, from objects in neither split (``lensfinder.evaluation.never_seen``).

Paper IV stacks probabilities; here the features are the base models' float32 logits
(standardised), and every ranking uses logits: a probability saturates at exactly 1.0
for logits above ~17 in float32, which turns the top of the ranking into ties. The mean
of the base models is likewise taken on logits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path, sha256
from lensfinder.metrics import top_n_metrics
from lensfinder.ranking.stacking import MonotoneStacker

log = logging.getLogger(__name__)


def fit_meta_learner(features, labels, hidden=300, seed=0):
    """The stacking network: one hidden layer, monotone non-decreasing in every base model's
    score (``lensfinder.ranking.stacking``), on standardised inputs."""
    return MonotoneStacker(hidden=hidden, seed=seed).fit(features, labels)


def meta_logit(meta, features) -> np.ndarray:
    """The meta-learner's output before its logistic: a ranking score that never saturates
    (``predict_proba`` is its sigmoid)."""
    if not isinstance(meta, MonotoneStacker):
        raise LensfinderError(f"the meta-learner is a {type(meta).__name__}, written by an older lensfinder: "
                              "re-run rule ensemble (snakemake --forcerun ensemble)")
    return meta.decision_function(features)


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


FIT_ON = ("validation", "training")


def check_validation_split(n_lenses: int, n_nonlenses: int, fit_on: str = "validation"):
    """With ``fit_on: validation`` the meta-learner is fit, and cross-validated, on the
    validation split: it needs at least 2 lenses and 2 nonlenses there. The trainset rule
    checks this too, so a run stops before its networks train, not after."""
    if fit_on == "validation" and min(n_lenses, n_nonlenses) < 2:
        raise LensfinderError(f"ensemble.fit_on: validation needs at least 2 lenses and 2 nonlenses in the validation "
                              f"split to fit and cross-validate the meta-learner, which has {n_lenses} lenses and "
                              f"{n_nonlenses} nonlenses; raise trainset.validation_fraction or set "
                              "ensemble.fit_on: training")


def out_of_fold_logits(features, labels, folds=5, hidden=300, seed=0) -> tuple[np.ndarray, int]:
    """Each row's meta-learner logit from a stacker fit on the other folds (stratified), and
    the number of folds used: a split with fewer lenses (or nonlenses) than ``folds`` gets one
    fold per member of its smaller class, with a warning; fewer than two is an error.

    The folds' stackers differ a little in offset, so a figure over the pooled logits (AUC,
    top N) is slightly pessimistic about any one of them."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    n_lenses = int(labels.sum())
    check_validation_split(n_lenses, len(labels) - n_lenses)
    minority = min(n_lenses, len(labels) - n_lenses)
    if minority < folds:
        log.warning("ensemble.cv_folds: %d folds asked for; the validation split's %d lenses and %d nonlenses "
                    "allow %d", folds, n_lenses, len(labels) - n_lenses, minority)
        folds = minority
    out = np.empty(len(labels))
    for fit_rows, held_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        out[held_rows] = meta_logit(fit_meta_learner(features[fit_rows], labels[fit_rows], hidden, seed),
                                    features[held_rows])
    return out, folds


def build_ensemble(score_paths: dict, checkpoints: dict, out_dir, hidden=300, top_n=(100, 1000), sky_ratio=10_000.0,
                   seed=0, fit_on="validation", cv_folds=5) -> pd.DataFrame:
    """Fit the meta-learner on ``fit_on``'s scores (module docstring) and compare it with the
    base models on the validation split; save the model and the comparison.

    ``score_paths``: model name -> its scores on the training set (``score_trainset``).
    """
    from sklearn.metrics import roc_auc_score

    if fit_on not in FIT_ON:
        raise LensfinderError(f"ensemble.fit_on: {fit_on!r} is not one of {', '.join(FIT_ON)}")
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
    x_val, y_val = val[names].to_numpy(), val["LABEL"].to_numpy()
    columns = {m: val[m].to_numpy() for m in names}
    columns["mean"] = val[names].mean(axis=1).to_numpy()
    if fit_on == "validation":
        columns["meta-learner"], cv_folds = out_of_fold_logits(x_val, y_val, cv_folds, hidden, seed)
        meta = fit_meta_learner(x_val, y_val, hidden, seed)
    else:
        meta = fit_meta_learner(train[names].to_numpy(), train["LABEL"].to_numpy(), hidden, seed)
        columns["meta-learner"] = meta_logit(meta, x_val)
    table = evaluate(y_val, columns, top_n, sky_ratio)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_meta(meta, names, out_dir / "meta.npz")
    info = {"inputs": names, "features": "logit", "hidden_units": hidden, "monotone": True, "fit_on": fit_on,
            "meta_learner_figures": f"out-of-fold, {cv_folds} folds of the validation split" if fit_on == "validation"
            else "fit on the training split, scored on the validation split",
            "cv_folds": cv_folds if fit_on == "validation" else None,
            "fit": {"iterations": meta.n_iter_, "loss": meta.loss_},
            "sky_ratio": sky_ratio, "top_n": list(top_n),
            "checkpoints": {m: {"path": str(checkpoints[m]), "sha256": sha256(checkpoints[m])} for m in names},
            "n_train": int(len(train)), "n_val": int(len(val)),
            # each base model's AUC on the rows it was trained on (beside its validation AUC: how well
            # it fit them; on the mock the training split alone also holds injected positives)
            "training_auc": {m: float(roc_auc_score(train["LABEL"], train[m])) for m in names}
            if train["LABEL"].nunique() == 2 else None,
            "evaluation": table.to_dict(orient="records")}
    with atomic_path(out_dir / "meta.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    with atomic_path(out_dir / "evaluation.csv") as tmp:
        table.to_csv(tmp, index=False)
    from lensfinder.plots import plot_roc_pr

    plot_roc_pr(val["LABEL"].to_numpy(), columns["meta-learner"], out_dir / "comparison.png", label="meta-learner",
                curves={k: v for k, v in columns.items() if k != "meta-learner"})
    return table


META_FORMAT = "lensfinder-stacker-1"


def save_meta(model: MonotoneStacker, inputs, path) -> None:
    """The meta-learner as ``meta.npz``: the stacker's arrays, its base models' names and a
    format tag; NumPy arrays only, so it loads without pickle."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, format=np.array(META_FORMAT), inputs=np.array(list(inputs), dtype=str), **model.to_arrays())


def load_meta(path):
    """The meta-learner of ``meta.npz``: {"model": the stacker, "inputs": base model names}.
    Read with ``allow_pickle=False``: a file that needs pickle (e.g. an older ``meta.pkl``)
    is refused, never run."""
    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"meta-learner {path} does not exist: run the ensemble rule")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "format" not in data.files or str(data["format"]) != META_FORMAT:
                raise LensfinderError(f"{path} is not a lensfinder meta-learner (no {META_FORMAT!r} tag): "
                                      "re-run the ensemble rule (snakemake --forcerun ensemble)")
            return {"model": MonotoneStacker.from_arrays(data), "inputs": [str(v) for v in data["inputs"]]}
    except (ValueError, OSError) as err:  # a pickle, or not an .npz at all
        raise LensfinderError(f"{path} cannot be read as the meta-learner's .npz without pickle ({err}): it is not "
                              "loaded, as a pickle could run code; re-run the ensemble rule "
                              "(snakemake --forcerun ensemble)") from err


def apply_meta(meta, logits: pd.DataFrame) -> np.ndarray:
    """Meta-learner logits for a frame of base-model logits, one column per base model."""
    return meta_logit(meta["model"], logits[meta["inputs"]].to_numpy())
