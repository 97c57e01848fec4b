"""The candidates to inspect: a recommendations table or a training set's review table.

* recommendations (rule ``rank``; Parquet, CSV or FITS): RANK, NAME, RELEASE, BRICKID,
  OBJID, RA, DEC, TYPE, REGION, MAG_G/R/Z, SCORE_<model>..., SCORE_MEAN, SCORE_ENSEMBLE,
  MERGED, SWEEP; the main score is SCORE_ENSEMBLE;
* review (rule ``trainset``, ``review.csv``): RELEASE, BRICKID, OBJID, RA, DEC, TYPE,
  STRATUM, score (the previous model's), status; the main score is ``score``.

Candidates keep the table's order (best first) and get ids 0..N-1 in that order; grades are
stored by object key, so the ids only address this table in the API.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError

REQUIRED = (*KEY, "RA", "DEC")


def read_table(path) -> pd.DataFrame:
    """A Parquet, CSV or FITS table (first table HDU) as a DataFrame, strings decoded."""
    path = Path(path)
    if not path.is_file():
        raise LensfinderError(f"candidates table {path} does not exist: give a recommendations table or a review.csv")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            frame = pd.read_parquet(path)
        elif name.endswith(".csv"):
            frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        elif name.endswith((".fits", ".fits.gz", ".fit")):
            import fitsio

            data = fitsio.read(str(path), ext=1)
            frame = pd.DataFrame({n: _native(data[n]) for n in data.dtype.names})
        else:
            raise LensfinderError(f"candidates table {path}: unknown format; use .parquet, .csv or .fits")
    except LensfinderError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader error means an unreadable file
        raise LensfinderError(f"candidates table {path} cannot be read ({err})") from err
    return frame


def _native(col: np.ndarray) -> np.ndarray:
    """A FITS column as pandas wants it: stripped str, or numbers in native byte order."""
    if col.dtype.kind == "S":
        return np.char.strip(col.astype(str))
    return col.astype(col.dtype.newbyteorder("="))


def table_kind(frame) -> str:
    if "SCORE_ENSEMBLE" in frame.columns:
        return "recommendations"
    if "score" in frame.columns and "status" in frame.columns:
        return "review"
    return "table"


def main_score_column(frame) -> str | None:
    for col in ("SCORE_ENSEMBLE", "score", "SCORE_MEAN"):
        if col in frame.columns:
            return col
    return None


def load_candidates(path) -> tuple[pd.DataFrame, str]:
    """(candidates with ID, NAME and the table's columns, kind); checks keys and coordinates."""
    from lensfinder.survey.positions import desi_names

    frame = read_table(path)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise LensfinderError(f"candidates table {path} lacks column(s) {missing}: it needs RELEASE, BRICKID, OBJID, RA, DEC "
                              "(a recommendations table or a training set's review.csv)")
    if frame.empty:
        raise LensfinderError(f"candidates table {path} is empty: nothing to inspect")
    bad = ~(np.isfinite(frame["RA"].astype(float)) & np.isfinite(frame["DEC"].astype(float)))
    if bad.any():
        raise LensfinderError(f"candidates table {path} row(s) {list(np.flatnonzero(bad.to_numpy())[:5])} have no valid RA/DEC")
    for k in KEY:
        frame[k] = frame[k].astype(np.int64)
    dup = frame.duplicated(list(KEY))
    if dup.any():
        row = frame[dup].iloc[0]
        raise LensfinderError(f"candidates table {path} lists object {tuple(int(row[k]) for k in KEY)} twice: "
                              "each candidate must appear once")
    if "NAME" not in frame.columns:
        frame["NAME"] = desi_names(frame["RA"], frame["DEC"])
    frame = frame.reset_index(drop=True)
    frame.insert(0, "ID", np.arange(len(frame)))
    return frame, table_kind(frame)
