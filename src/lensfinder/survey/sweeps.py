"""Sweep files: their names and sky boxes, their columns by release, reading them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np

from lensfinder.constants import SWEEP_DEC_STEP, SWEEP_RA_STEP
from lensfinder.errors import LensfinderError
from lensfinder.survey.columns import DR8_SHAPE_COLUMNS, DR10_SWEEP_COLUMNS, NOT_IN_DR8

SWEEP_RE = re.compile(r"^sweep-(\d{3})([pm])(\d{3})-(\d{3})([pm])(\d{3})(-lc|-ex|-pz)?\.fits$")
# A sweep ID: the file stem, prefixed by its region in multi-region runs (north/sweep-...).
SWEEP_ID_RE = re.compile(r"^(?:(south|north)/)?(sweep-\d{3}[pm]\d{3}-\d{3}[pm]\d{3})$")


@dataclass(frozen=True)
class SweepBox:
    """The RA/Dec rectangle [deg] of a sweep file: ra_min <= RA < ra_max, dec_min <= Dec < dec_max."""

    ra_min: float
    dec_min: float
    ra_max: float
    dec_max: float

    def overlaps(self, ra_min, ra_max, dec_min, dec_max) -> bool:
        return self.ra_min < ra_max and ra_min < self.ra_max and self.dec_min < dec_max and dec_min < self.dec_max

    def contains(self, ra, dec):
        return (ra >= self.ra_min) & (ra < self.ra_max) & (dec >= self.dec_min) & (dec < self.dec_max)


def parse_sweep_name(name: str) -> SweepBox:
    """``sweep-150p000-155p005[.fits]`` -> SweepBox(150, 0, 155, 5). Digits are integer degrees."""
    base = Path(name).name
    if not base.endswith(".fits"):
        base += ".fits"
    m = SWEEP_RE.match(base)
    if not m:
        raise LensfinderError(
            f"{name!r} is not a sweep file name (expected sweep-RRR[pm]DDD-RRR[pm]DDD.fits)"
        )
    ra0, s0, d0, ra1, s1, d1 = m.groups()[:6]
    sign = {"p": 1, "m": -1}
    return SweepBox(float(ra0), sign[s0] * float(d0), float(ra1), sign[s1] * float(d1))


def sweep_name(ra_min: float, dec_min: float, ra_max: float, dec_max: float) -> str:
    """Sweep file stem for a rectangle, as legacypipe names it ('%03g' RA, '%+04g' Dec)."""

    def dec_str(d):
        return ("%+04g" % d).replace("+", "p").replace("-", "m")

    return f"sweep-{'%03g' % ra_min}{dec_str(dec_min)}-{'%03g' % ra_max}{dec_str(dec_max)}"


def sweep_box_for(ra: float, dec: float, release: str = "dr10") -> SweepBox:
    """The sweep rectangle containing (ra, dec) [deg] in the release's tiling."""
    step = SWEEP_RA_STEP[release]
    ra0 = math.floor((ra % 360.0) / step) * step
    dec0 = math.floor(dec / SWEEP_DEC_STEP) * SWEEP_DEC_STEP
    return SweepBox(ra0, dec0, ra0 + step, dec0 + SWEEP_DEC_STEP)


def split_sweep_id(sweep_id: str) -> tuple[str | None, str]:
    """``north/sweep-150p030-160p035`` -> ('north', 'sweep-150p030-160p035'); a bare stem -> (None, stem)."""
    m = SWEEP_ID_RE.match(sweep_id)
    if not m:
        raise LensfinderError(
            f"{sweep_id!r} is not a sweep ID (expected sweep-RRR[pm]DDD-RRR[pm]DDD, or <region>/sweep-... "
            "with region north or south)"
        )
    return m.group(1), m.group(2)


def _sweep_columns(release: str) -> list[tuple]:
    """(name, dtype, unit, shape) of every main-sweep column of the release, in file order."""
    out = []
    for name, dt, unit, shape in DR10_SWEEP_COLUMNS:
        if release in ("dr8", "dr9"):
            if name.endswith("_I") and name != "REF_ID" and not name.startswith("GAIA"):
                continue
            if name == "MASKBITS":
                dt = ">i2"
        if release == "dr8":
            if name == "TYPE":
                dt = "S4"
            if name == "SHAPE_R":
                out.extend(DR8_SHAPE_COLUMNS)
            if name in NOT_IN_DR8:
                continue
        out.append((name, dt, unit, shape))
    return out


def sweep_dtype(release: str = "dr10") -> np.dtype:
    """On-disk dtype of a main sweep row: DR10 (130 columns), DR9 (115) or DR8 (120: S4 TYPE,
    the DEV/EXP shape columns instead of SHAPE_*, no SERSIC or FITBITS)."""
    return np.dtype([(name, dt, shape) if shape else (name, dt) for name, dt, _unit, shape in _sweep_columns(release)])


def sweep_units(release: str = "dr10") -> list[str]:
    return [unit for _name, _dt, unit, _shape in _sweep_columns(release)]


def _expected_fits_size(fits: fitsio.FITS) -> int:
    """Bytes that the headers declare: the end of the last HDU's data."""
    return max(hdu.get_offsets()["data_end"] for hdu in fits)


# Columns that DR9/DR10 sweeps hold and DR8 ones derive from the DEV and EXP fits.
DR8_DERIVED = ("SHAPE_R", "SHAPE_E1", "SHAPE_E2", "SERSIC")
DR8_SOURCE_COLUMNS = ["TYPE", "FRACDEV", *(f"SHAPE{m}_{q}" for m in ("DEV", "EXP") for q in ("R", "E1", "E2"))]


def read_sweep(path: str | os.PathLike, columns, optional=(), rows: slice | None = None) -> np.ndarray:
    """Read chosen columns of a sweep's HDU 1 with fitsio, native byte order.

    ``columns`` must exist (a clear error names the missing ones); ``optional`` columns
    are read when present and filled with NaN otherwise. String columns come back as str,
    stripped (DR8's TYPE is padded to 4 characters: 'REX ' -> 'REX'). From a DR8 sweep,
    SHAPE_R, SHAPE_E1, SHAPE_E2 and SERSIC are derived by type (``dr8_shapes``).
    """
    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"sweep file {path} does not exist")
    try:
        fits = fitsio.FITS(str(path))
    except OSError as err:
        raise LensfinderError(f"sweep file {path} is not a readable FITS file ({err}); re-download it") from err
    with fits:
        expected = _expected_fits_size(fits)
        actual = path.stat().st_size
        if actual < expected:
            raise LensfinderError(
                f"sweep file {path} is truncated ({actual} of {expected} bytes the header declares); re-download it"
            )
        if len(fits) < 2 or fits[1].get_exttype() != "BINARY_TBL":
            raise LensfinderError(f"sweep file {path} has no binary table in HDU 1")
        hdu = fits[1]
        have = {n.upper(): n for n in hdu.get_colnames()}
        wanted = [c.upper() for c in list(columns) + list(optional)]
        derive = [c for c in wanted if c in DR8_DERIVED and c not in have]
        if derive and not {"SHAPEDEV_R", "SHAPEEXP_R"} <= set(have):
            derive = []  # not a DR8 layout: nothing to derive from
        missing = [c for c in columns if c.upper() not in have and c.upper() not in derive]
        if missing:
            raise LensfinderError(
                f"sweep file {path} lacks required column(s) {missing}; lensfinder reads DR8/DR9/DR10 "
                "main sweeps (not the -lc/-ex/-pz companions)"
            )
        present = [c for c in dict.fromkeys(wanted + (DR8_SOURCE_COLUMNS if derive else [])) if c in have]
        n = hdu.get_nrows()
        index = np.arange(n)[rows if rows is not None else slice(0, n)]
        try:
            data = hdu.read(columns=[have[c.upper()] for c in present], rows=index)
        except (OSError, ValueError) as err:
            raise LensfinderError(f"sweep file {path} could not be read ({err}); re-download it") from err
    data = data.astype(data.dtype.newbyteorder("="))
    data.dtype.names = [n.upper() for n in data.dtype.names]  # fitsio returns file order
    out_fields = []
    for c in list(columns) + list(optional):
        c = c.upper()
        if c in data.dtype.names and data.dtype[c].kind in "SU":
            nchar = data.dtype[c].itemsize // (4 if data.dtype[c].kind == "U" else 1)
            out_fields.append((c, f"U{nchar}"))
        elif c in data.dtype.names:
            out_fields.append((c, data.dtype[c].base.newbyteorder("="), data.dtype[c].shape))
        else:
            out_fields.append((c, "f4", ()))
    out = np.zeros(len(data), dtype=[f if len(f) == 2 or f[2] else f[:2] for f in out_fields])
    for c in out.dtype.names:
        if out.dtype[c].kind == "U":
            col = data[c]
            out[c] = np.char.strip(col.astype(str) if col.dtype.kind == "S" else col)
        elif c in data.dtype.names:
            out[c] = data[c]
        else:
            out[c] = np.nan
    if derive:
        shapes = dr8_shapes(np.char.strip(data["TYPE"].astype(str)), data, fracdev="FRACDEV" in data.dtype.names)
        for c in derive:
            out[c] = shapes[c]
    return out


def dr8_shapes(types, data, fracdev: bool = True) -> dict:
    """SHAPE_R [arcsec], SHAPE_E1, SHAPE_E2 and SERSIC of DR8 rows, DR9-style, by TYPE.

    DEV -> the SHAPEDEV_* fit (n = 4); EXP and REX -> SHAPEEXP_* (n = 1; REX has e = 0);
    COMP -> the component holding the larger flux fraction: DEV where FRACDEV >= 0.5, EXP
    below, DEV where FRACDEV is absent (``fracdev=False``) or NaN; PSF, DUP -> 0, as DR9
    writes for sources without a shape.
    """
    types = np.asarray(types).astype(str)
    frac = np.asarray(data["FRACDEV"], dtype=np.float64) if fracdev else np.full(len(types), np.nan)
    comp_dev = ~(frac < 0.5)  # NaN -> DEV
    use_dev = (types == "DEV") | ((types == "COMP") & comp_dev)
    use_exp = np.isin(types, ["EXP", "REX"]) | ((types == "COMP") & ~comp_dev)
    out = {}
    for q in ("R", "E1", "E2"):
        col = np.zeros(len(types), dtype=np.float32)
        col[use_dev] = data[f"SHAPEDEV_{q}"][use_dev]
        col[use_exp] = data[f"SHAPEEXP_{q}"][use_exp]
        out[f"SHAPE_{q}"] = col
    out["SERSIC"] = np.where(use_dev, 4.0, np.where(use_exp, 1.0, 0.0)).astype(np.float32)
    return out


def sweep_nrows(path: str | os.PathLike) -> int:
    with fitsio.FITS(str(path)) as fits:
        return fits[1].get_nrows()
