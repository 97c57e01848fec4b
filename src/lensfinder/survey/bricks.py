"""The Legacy Surveys brick grid and the bricks table.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np

from lensfinder.constants import BRICK_SIZE_DEG, N_BRICK_ROWS
from lensfinder.errors import LensfinderError


@dataclass(frozen=True)
class BrickGrid:
    """The Legacy Surveys brick grid computed from its defining algorithm (desiutil).

    721 rows of 0.25 deg in Dec; each row holds an even number of equal-RA bricks
    (``2 * ceil(1440 cos(|dec| - 0.125) / 2)``, evaluated at the row edge nearest the
    equator), one brick at each pole. Reproduces the real ``survey-bricks.fits.gz``.
    """

    ncol: np.ndarray  # bricks per row
    first_id: np.ndarray  # BRICKID of column 0 of each row

    @classmethod
    def build(cls) -> "BrickGrid":
        row = np.arange(N_BRICK_ROWS)
        dec = -90.0 + BRICK_SIZE_DEG * row
        ncol = 2 * np.ceil(
            (360.0 / BRICK_SIZE_DEG) * np.cos(np.radians(np.abs(dec) - BRICK_SIZE_DEG / 2)) / 2
        ).astype(np.int64)
        ncol[0] = ncol[-1] = 1
        first_id = 1 + np.concatenate([[0], np.cumsum(ncol)[:-1]])
        return cls(ncol=ncol, first_id=first_id)

    @property
    def n_bricks(self) -> int:
        return int(self.ncol.sum())

    def row_col(self, ra, dec):
        """Brick (row, column) holding each (ra, dec) [deg]: RA1 <= ra < RA2, DEC1 <= dec < DEC2."""
        ra = np.mod(np.asarray(ra, dtype=np.float64), 360.0)
        dec = np.asarray(dec, dtype=np.float64)
        row = np.clip(np.floor((dec + 90.0 + BRICK_SIZE_DEG / 2) / BRICK_SIZE_DEG), 0, N_BRICK_ROWS - 1)
        row = row.astype(np.int64)
        ncol = self.ncol[row]
        col = np.floor(ra / 360.0 * ncol).astype(np.int64)
        # Guard the float division at column edges against the exact edges of the table.
        col = np.where(ra < col * 360.0 / ncol, col - 1, col)
        col = np.where(ra >= (col + 1) * 360.0 / ncol, col + 1, col)
        return row, np.clip(col, 0, ncol - 1)

    def bricks(self, row, col) -> np.ndarray:
        """The bricks-table rows (structured array, table dtypes) for given (row, col)."""
        row = np.atleast_1d(np.asarray(row, dtype=np.int64))
        col = np.atleast_1d(np.asarray(col, dtype=np.int64))
        ncol = self.ncol[row]
        dec = -90.0 + BRICK_SIZE_DEG * row
        ra1 = col * 360.0 / ncol
        ra2 = (col + 1) * 360.0 / ncol
        ra = np.where(ncol == 1, 180.0, (ra1 + ra2) / 2)
        out = np.zeros(len(row), dtype=BRICKS_DTYPE)
        out["BRICKNAME"] = brick_names(ra, dec)
        out["BRICKID"] = self.first_id[row] + col
        out["BRICKQ"] = (col % 2) + 2 * (row % 2)
        out["BRICKROW"] = row
        out["BRICKCOL"] = col
        out["RA"] = ra
        out["DEC"] = dec
        out["RA1"] = ra1
        out["RA2"] = ra2
        out["DEC1"] = np.maximum(dec - BRICK_SIZE_DEG / 2, -90.0)
        out["DEC2"] = np.minimum(dec + BRICK_SIZE_DEG / 2, 90.0)
        return out

    def lookup(self, ra, dec) -> np.ndarray:
        """Bricks-table rows of the bricks containing each (ra, dec) [deg]."""
        return self.bricks(*self.row_col(ra, dec))

    def all_bricks(self) -> np.ndarray:
        row = np.repeat(np.arange(N_BRICK_ROWS), self.ncol)
        col = np.arange(self.n_bricks) - np.repeat(self.first_id - 1, self.ncol)
        return self.bricks(row, col)

    def bricks_in_box(self, ra_min, ra_max, dec_min, dec_max) -> np.ndarray:
        """All bricks whose area overlaps the box (no RA wrap: ra_min < ra_max)."""
        r0, _ = self.row_col(0.0, dec_min)
        r1, _ = self.row_col(0.0, dec_max)
        rows = []
        for r in range(int(r0), int(r1) + 1):
            n = self.ncol[r]
            c0 = int(math.floor(ra_min / 360.0 * n))
            c1 = min(int(math.ceil(ra_max / 360.0 * n)), n)
            rows.append(self.bricks(np.full(c1 - c0, r), np.arange(c0, c1)))
        table = np.concatenate(rows)
        keep = (table["RA2"] > ra_min) & (table["RA1"] < ra_max)
        return table[keep]


BRICKS_DTYPE = np.dtype(
    [
        ("BRICKNAME", "S8"),
        ("BRICKID", ">i4"),
        ("BRICKQ", ">i2"),
        ("BRICKROW", ">i4"),
        ("BRICKCOL", ">i4"),
        ("RA", ">f8"),
        ("DEC", ">f8"),
        ("RA1", ">f8"),
        ("RA2", ">f8"),
        ("DEC1", ">f8"),
        ("DEC2", ">f8"),
    ]
)


def brick_names(ra, dec) -> np.ndarray:
    """Brick names from brick-centre (ra, dec) [deg]: truncated RA*10 and |Dec|*10 digits."""
    ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    names = [
        f"{r * 1e4:07.0f}"[:4] + ("p" if d >= 0 else "m") + f"{abs(d) * 1e4:06.0f}"[:3]
        for r, d in zip(ra, dec)
    ]
    return np.array(names, dtype="S8")


def read_bricks_table(path: str | os.PathLike) -> np.ndarray:
    """Read ``survey-bricks.fits.gz`` (or a per-region summary) with upper-case column names.

    Real files exist with upper- and with lower-case column names; both are accepted.
    """
    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"bricks table {path} does not exist: check survey.root in the config")
    try:
        data = fitsio.read(path, ext=1)
    except OSError as err:
        raise LensfinderError(f"bricks table {path} is unreadable ({err}); re-download it") from err
    data.dtype.names = [n.upper() for n in data.dtype.names]
    missing = {"BRICKNAME", "BRICKID", "RA", "DEC", "RA1", "RA2", "DEC1", "DEC2"} - set(data.dtype.names)
    if missing:
        raise LensfinderError(f"bricks table {path} lacks column(s) {sorted(missing)}")
    return data
