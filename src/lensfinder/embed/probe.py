"""The linear probe: logistic regression on frozen representations (S22 section 3.3.3).

Rule ``probe``. The encoder embeds the training set's cutouts (``cutouts.npy``, the very
images the networks train on); a logistic regression (scikit-learn, L-BFGS, classes
weighted inversely to their frequency, on standardised representations) is fit on the
training split, its regularisation ``C`` chosen by ``cv``-fold cross-validated AUC within
that split (or fixed), and it is checked on the validation split as the meta-learner is
(AUC, recall and precision in the top N at ``sky_ratio`` nonlenses per lens). It then
scores every sweep's representations.

Its outputs have the networks' formats, so it can be offered to the meta-learner as one
more base model: ``trainset_scores.parquet`` as ``lensfinder.ranking.infer.score_trainset`` writes
(key, LABEL, SPLIT, ROW, logit, prob) and ``scores/<sweep>.parquet`` as
``lensfinder.ranking.infer.infer_sweep`` (key, RA, DEC, logit float32, prob). Its ranking score is
the logit (the decision function), never the probability.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit

from lensfinder.constants import KEY
from lensfinder.embed.index import read_representations
from lensfinder.embed.represent import embed_array, embed_sweep
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path, sha256
from lensfinder.nets.train import check_splits, load_trainset
from lensfinder.ranking.ensemble import evaluate
from lensfinder.settings import Settings

SCORE_BLOCK = 100_000  # rows scored at once
PROBE_FORMAT = "lensfinder-probe-1"


@dataclass
class ProbeConfig(Settings):
    section: ClassVar[str] = "embed.probe"

    C: float | None = None  # inverse regularisation; None: chosen by cross-validation on the training split
    Cs: list = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])
    cv: int = 5
    max_iter: int = 5000
    class_weight: str | None = "balanced"  # balanced | null (plain BCE, as S22)
    top_n: list = field(default_factory=lambda: [10, 100])
    sky_ratio: float = 10_000.0


def fit_probe(features, labels, cfg: ProbeConfig, seed: int = 0):
    """StandardScaler + L-BFGS logistic regression; returns (pipeline, the C used)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels).astype(int)
    if len(np.unique(y)) < 2:
        raise LensfinderError("the probe's training split needs lenses and nonlenses")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(solver="lbfgs", class_weight=cfg.class_weight,
                                                              max_iter=cfg.max_iter, C=cfg.C or 1.0))
    if cfg.C is not None:
        return pipe.fit(x, y), float(cfg.C)
    folds = min(cfg.cv, int(np.bincount(y).min()))
    if folds < 2:
        raise LensfinderError(f"too few lenses ({int(y.sum())}) to choose the probe's C by cross-validation: set embed.probe.C")
    search = GridSearchCV(pipe, {"logisticregression__C": list(cfg.Cs)}, scoring="roc_auc",
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    search.fit(x, y)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"])


@dataclass
class LinearProbe:
    """The fitted probe as arrays: standardisation (``mean``, ``scale``) then a linear map
    (``coef``, ``intercept``), the decision function of the scikit-learn pipeline it came
    from. Stored as ``probe.npz``, read without pickle."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def from_pipeline(cls, pipe) -> "LinearProbe":
        scaler, logistic = pipe.steps[0][1], pipe.steps[-1][1]
        return cls(np.asarray(scaler.mean_, np.float64), np.asarray(scaler.scale_, np.float64),
                   np.asarray(logistic.coef_[0], np.float64), float(logistic.intercept_[0]))

    def decision_function(self, features) -> np.ndarray:
        return ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept


def save_probe(probe: LinearProbe, path, **info) -> None:
    """``probe.npz``: the probe's arrays, ``info`` (C, encoder, encoder_sha256) and a format tag."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, format=np.array(PROBE_FORMAT), mean=probe.mean, scale=probe.scale, coef=probe.coef,
                     intercept=np.array(probe.intercept), **{k: np.array(v) for k, v in info.items()})


def load_probe(path) -> dict:
    """{"model": LinearProbe, "C", "encoder", "encoder_sha256"} of a ``probe.npz``, read with
    ``allow_pickle=False`` (a pickle, such as an older ``probe.pkl``, is refused unrun)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "format" not in data.files or str(data["format"]) != PROBE_FORMAT:
                raise LensfinderError(f"{path} is not a lensfinder probe: re-run the probe rule")
            model = LinearProbe(data["mean"], data["scale"], data["coef"], float(data["intercept"]))
            return {"model": model, "C": float(data["C"]), "encoder": str(data["encoder"]),
                    "encoder_sha256": str(data["encoder_sha256"])}
    except (ValueError, OSError) as err:
        raise LensfinderError(f"{path} cannot be read as the probe's .npz without pickle ({err}): re-run the "
                              "probe rule (snakemake --forcerun probe)") from err


def probe_logit(model, features) -> np.ndarray:
    """The probe's ranking score: its decision function (log-odds), float32."""
    return model.decision_function(np.asarray(features, dtype=np.float64)).astype(np.float32)


def run_probe(trainset_dir, encoder_path, representations, score_paths, cfg: ProbeConfig, out_dir,
              threads=None) -> dict:
    """Fit, validate, and score every sweep. ``representations``: (npy, parquet) per batch of sweeps;
    ``score_paths``: the Parquet to write for each of them, in the same order."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    out_dir = Path(out_dir)
    if len(representations) != len(score_paths):
        raise LensfinderError(f"{len(representations)} representation files but {len(score_paths)} score paths")
    labels, images = load_trainset(trainset_dir)
    reps = embed_array(images, encoder_path).astype(np.float32)[labels["ROW"].to_numpy()]
    check_splits(labels, trainset_dir)  # as the networks: both classes in both splits, or a clear error
    train, val = (labels["SPLIT"] == "train").to_numpy(), (labels["SPLIT"] == "val").to_numpy()
    y = labels["LABEL"].to_numpy().astype(int)
    pipe, c = fit_probe(reps[train], y[train], cfg)
    model = LinearProbe.from_pipeline(pipe)
    logits = probe_logit(model, reps)
    table = evaluate(y[val], {"probe": logits[val].astype(np.float64)}, cfg.top_n, cfg.sky_ratio)
    scores = labels[[*KEY, "LABEL", "SPLIT", "ROW"]].copy()
    scores["logit"] = logits
    scores["prob"] = expit(logits.astype(np.float64))
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "trainset_scores.parquet") as tmp:
        scores.to_parquet(tmp, index=False)
    encoder_sha = sha256(encoder_path)
    save_probe(model, out_dir / "probe.npz", C=c, encoder=str(encoder_path), encoder_sha256=encoder_sha)
    rows = 0
    for (npy, idx), out in zip(representations, score_paths):
        vectors, index = read_representations(npy, idx)
        _write_scores(model, vectors, index, out, out_dir / "probe.npz", encoder_sha)
        rows += len(index)
    info = {"C": c, "C_chosen_by": "fixed" if cfg.C is not None else f"{cfg.cv}-fold cross-validated AUC on the training split",
            "config": asdict(cfg), "dim": int(reps.shape[1]), "n_train": int(train.sum()), "n_val": int(val.sum()),
            "train_lenses": int(y[train].sum()), "val_lenses": int(y[val].sum()),
            "encoder": {"path": str(encoder_path), "sha256": encoder_sha},
            "validation": table.to_dict(orient="records")[0], "scored_objects": rows}
    with atomic_path(out_dir / "probe.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return info


def probe_scores_table(score_paths) -> pd.DataFrame:
    """Every sweep's probe scores in one frame (key, RA, DEC, logit)."""
    frames = [pd.read_parquet(p, columns=[*KEY, "RA", "DEC", "logit"]) for p in score_paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY, "RA", "DEC", "logit"])


def _write_scores(model, vectors, index, out, probe_path, encoder_sha):
    """One score table in the networks' format (key, RA, DEC, logit float32, prob)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # in blocks of rows: a batch of sweeps' vectors would not fit in memory as float64
    blocks = [probe_logit(model, np.asarray(vectors[i : i + SCORE_BLOCK], dtype=np.float32))
              for i in range(0, len(index), SCORE_BLOCK)]
    s = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros(0, np.float32)
    frame = pa.table({**{k: index[k].astype(np.int64).to_numpy() for k in KEY}, "RA": index["RA"].to_numpy(),
                      "DEC": index["DEC"].to_numpy(), "logit": s, "prob": expit(s.astype(np.float64)),
                      **({"SWEEP": index["SWEEP"].astype(str).to_numpy()} if "SWEEP" in index else {})})
    meta = {b"lensfinder.probe": str(probe_path).encode(), b"lensfinder.encoder_sha256": encoder_sha.encode()}
    with atomic_path(out) as tmp:
        pq.write_table(frame.replace_schema_metadata(meta), tmp)


def score_shards(manifest_path, encoder_path, probe_path, out_path, batch_size=512, threads=None) -> int:
    """Probe scores of a shard set the representations stage does not embed (the
    selection function's injections): embedded with the probe's own encoder, then scored;
    the networks' format, so the meta-learner takes the probe as one more base model."""
    import tempfile

    probe = load_probe(probe_path)
    encoder_sha = sha256(encoder_path)
    if probe["encoder_sha256"] != encoder_sha:
        raise LensfinderError(f"{probe_path} was fitted on the representations of another encoder than {encoder_path}: "
                              "re-run the probe rule")
    with tempfile.TemporaryDirectory() as tmp:
        npy, idx = Path(tmp) / "vectors.npy", Path(tmp) / "index.parquet"
        embed_sweep(manifest_path, encoder_path, npy, idx, batch_size=batch_size, threads=threads, progress=False)
        vectors, index = read_representations(npy, idx)
        _write_scores(probe["model"], vectors, index, out_path, probe_path, encoder_sha)
        return len(index)
