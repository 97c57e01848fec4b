"""Truth lists of lenses (the mock's, or confirmed lenses), matched to a run's objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.catalog.crossmatch import nearest
from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError


def read_truth(path, table: pd.DataFrame, match_radius_arcsec: float) -> pd.DataFrame:
    """The truth lenses among ``table``'s rows: a frame indexed like ``table`` with column
    THETA_E (arcsec, NaN where not given), for the rows that are lenses."""
    return match_truth(load_truth(path), table, match_radius_arcsec, path)


def load_truth(path, setting: str = "evaluation.truth") -> pd.DataFrame:
    """A truth list (CSV or FITS) with lower-case column names."""
    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"truth list {path} does not exist: point {setting} at an existing list")
    if path.suffix.lower() in (".fits", ".fit") or path.name.lower().endswith(".fits.gz"):
        from astropy.table import Table

        truth = Table.read(path).to_pandas()
    else:
        truth = pd.read_csv(path)
    truth.columns = [c.lower() for c in truth.columns]
    return truth


def match_truth(truth: pd.DataFrame, table: pd.DataFrame, match_radius_arcsec: float, path="the truth list"):
    """``read_truth`` on a loaded list: by keys (release, brickid, objid), else by the nearest
    object within ``match_radius_arcsec`` of (ra, dec)."""
    theta = truth["theta_e"].to_numpy(np.float64) if "theta_e" in truth else np.full(len(truth), np.nan)
    where = truth_rows(truth, table, match_radius_arcsec, path)
    found = where >= 0
    lenses = pd.DataFrame({"THETA_E": theta[found]}, index=table.index[where[found]])
    return lenses[~lenses.index.duplicated()]


def truth_rows(truth: pd.DataFrame, table: pd.DataFrame, match_radius_arcsec: float, path="the truth list"):
    """For each row of a loaded truth list, the position of its object in ``table`` (-1: none):
    by keys (release, brickid, objid), else the nearest object within the radius of (ra, dec)."""
    if {"release", "brickid", "objid"} <= set(truth.columns):
        keys = pd.MultiIndex.from_arrays([truth[k.lower()].astype(np.int64) for k in KEY])
        where = pd.MultiIndex.from_frame(table[list(KEY)].astype(np.int64)).get_indexer(keys)
    elif {"ra", "dec"} <= set(truth.columns):
        where, _ = nearest(truth["ra"].to_numpy(np.float64), truth["dec"].to_numpy(np.float64),
                           table["RA"].to_numpy(), table["DEC"].to_numpy(), match_radius_arcsec)
    else:
        raise LensfinderError(f"evaluation truth list {path} needs columns release, brickid, objid or ra, dec; "
                              f"it has {list(truth.columns)}")
    return where
