"""The catalogue-only baseline: a classifier on the sweep columns alone, no pixels.

It learns from the same training split as the networks (the same objects and labels; an
injected lens is its deflector's row, as its arcs are in no catalogue) and scores the
sealed survey beside them, so what the images add over colours, magnitudes, size and
type is measured, not assumed.

Features, from the selection's objects tables: dereddened g, r, z magnitudes [AB], g - r
and r - z, log10 of the half-light radius SHAPE_R [arcsec], the ellipticity |e|, the
Sersic index, and the Tractor TYPE one-hot (SER, DEV, REX, EXP). A gradient-boosted tree
ensemble (scikit-learn) fits them; its score is the log-odds, like the networks' logits.
The fitted model is a pickle (a tree ensemble has no plain-array form in scikit-learn); it
is read back by an unpickler that admits only the classes such a model is made of
(``ALLOWED``), so a file that would call anything else is refused, never run.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path

TYPES = ("SER", "DEV", "REX", "EXP")
COLUMNS = ["MAG_G_DERED", "MAG_R_DERED", "MAG_Z_DERED", "SHAPE_R", "SHAPE_E1", "SHAPE_E2", "SERSIC", "TYPE"]
# every global a pickled HistGradientBoostingClassifier names (scikit-learn 1.9, NumPy 2.4)
ALLOWED = {
    ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pickle", "__bit_generator_ctor"), ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random.bit_generator", "SeedSequence"), ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("sklearn._loss._loss", "CyHalfBinomialLoss"), ("sklearn._loss.link", "Interval"),
    ("sklearn._loss.link", "LogitLink"), ("sklearn._loss.loss", "HalfBinomialLoss"),
    ("sklearn.ensemble._hist_gradient_boosting.binning", "_BinMapper"),
    ("sklearn.ensemble._hist_gradient_boosting.gradient_boosting", "HistGradientBoostingClassifier"),
    ("sklearn.ensemble._hist_gradient_boosting.predictor", "TreePredictor"),
    ("sklearn.preprocessing._label", "LabelEncoder"),
}
FEATURES = ["mag_g", "mag_r", "mag_z", "g_r", "r_z", "log_shape_r", "ellipticity", "sersic", *[f"type_{t}" for t in TYPES]]


def features(objects: pd.DataFrame) -> np.ndarray:
    """(N, len(FEATURES)) float64 features of an objects table (NaN where a band has no
    positive flux: the trees route missing values)."""
    missing = [c for c in COLUMNS if c not in objects.columns]
    if missing:
        raise LensfinderError(f"the objects table lacks column(s) {missing} for the catalogue-only baseline: "
                              "re-run the select rule")
    g, r, z = (objects[f"MAG_{b}_DERED"].to_numpy(np.float64) for b in "GRZ")
    types = objects["TYPE"].astype(str).str.strip().to_numpy()
    cols = [g, r, z, g - r, r - z, np.log10(np.maximum(objects["SHAPE_R"].to_numpy(np.float64), 1e-3)),
            np.hypot(objects["SHAPE_E1"], objects["SHAPE_E2"]).to_numpy(np.float64),
            objects["SERSIC"].to_numpy(np.float64), *[(types == t).astype(np.float64) for t in TYPES]]
    return np.column_stack(cols)


def training_rows(labels: pd.DataFrame, objects: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The training split's rows of the objects tables and their labels (1 lens, 0 nonlens)."""
    train = labels[labels["SPLIT"] == "train"][[*KEY, "LABEL"]]
    joined = train.merge(objects, on=list(KEY), how="left", indicator=True)
    lost = joined["_merge"] != "both"
    if lost.any():
        key = joined.loc[lost, list(KEY)].iloc[0].tolist()
        raise LensfinderError(f"{int(lost.sum())} training object(s) are in no objects table (e.g. {key}): "
                              "the training set and the selection come from different runs; re-run both")
    return joined.drop(columns="_merge"), joined["LABEL"].to_numpy().astype(int)


def fit_baseline(labels_path, objects_paths, out_path, seed: int = 0) -> dict:
    """Fit the classifier on the training split; pickle it with its feature list to ``out_path``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    labels = pd.read_parquet(labels_path)
    objects = pd.concat([pd.read_parquet(p) for p in objects_paths], ignore_index=True)
    rows, y = training_rows(labels, objects)
    if y.min() == y.max():
        raise LensfinderError(f"the training split of {labels_path} holds one class only: nothing to learn from")
    clf = HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=300, l2_regularization=1.0,
                                         class_weight="balanced", random_state=seed)
    clf.fit(features(rows), y)
    model = {"classifier": clf, "features": FEATURES, "n_lenses": int(y.sum()), "n_nonlenses": int((y == 0).sum())}
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(pickle.dumps(model))
    return {k: v for k, v in model.items() if k != "classifier"}


class _ModelUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not part of a baseline model")
        return super().find_class(module, name)


def load_model(model_path) -> dict:
    """The baseline written by ``fit_baseline``, through the allowlisting unpickler."""
    import io

    try:
        return _ModelUnpickler(io.BytesIO(open(model_path, "rb").read())).load()
    except pickle.UnpicklingError as err:
        raise LensfinderError(f"{model_path} is not a baseline model this lensfinder wrote ({err}); it is not "
                              "loaded, as it could run code: re-run its rule (sealed_baseline)") from err


def score_baseline(model_path, objects_paths, out_path) -> int:
    """The baseline's log-odds (``logit``) for every object of the tables; keys, RA/Dec, logit."""
    model = load_model(model_path)
    if model["features"] != FEATURES:
        raise LensfinderError(f"{model_path} was fitted on other features ({model['features']}): re-run its rule")
    objects = pd.concat([pd.read_parquet(p) for p in objects_paths], ignore_index=True)
    out = objects[[*KEY, "RA", "DEC"]].copy()
    out["logit"] = model["classifier"].decision_function(features(objects)).astype(np.float32) if len(objects) else []
    with atomic_path(out_path) as tmp:
        out.to_parquet(tmp, index=False)
    return len(out)
