"""Readers of the real DESI Legacy Imaging Surveys files (DR8, DR9, DR10).

Conventions used throughout the package:

* Coordinates are ICRS degrees. Fluxes are AB nanomaggies (mag = 22.5 - 2.5 log10 flux).
* Optical bands are ordered g, r, z.
* Coadd images are read from HDU 1 of the ``.fits.fz`` files; pixel (x, y) = (column, row),
  0-based; +x runs toward decreasing RA (East left), +y toward increasing Dec (North up).
* Geometry (image size, tangent point, pixel scale) is always taken from the files: the
  bricks table and each image's FITS header, never from constants.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np

from .errors import LensfinderError
from .sweep_columns import DR8_SHAPE_COLUMNS, DR10_SWEEP_COLUMNS, NOT_IN_DR8

BANDS = ("g", "r", "z")
BRICK_SIZE_DEG = 0.25
N_BRICK_ROWS = 721
# North (BASS/MzLS) iff Dec >= 32.375 deg and Galactic b > 0 (the viewer's and randoms' rule).
NORTH_DEC_MIN = 32.375

RELEASES = ("dr8", "dr9", "dr10")
REGIONS = ("south", "north")
# The REGION label of the objects table: the survey that imaged the object's own tree.
REGION_LABELS = {"south": "DECaLS", "north": "BASS-MzLS"}
# DR10 is DECam only: BASS/MzLS (north) data are in DR8 and DR9.
RELEASE_REGIONS = {"dr8": ("south", "north"), "dr9": ("south", "north"), "dr10": ("south",)}
SWEEP_VERSIONS = {"dr8": "8.0", "dr9": "9.0", "dr10": "10.1"}
# Sweep tiling: 10 x 5 deg for DR8/DR9, 5 x 5 deg for DR10.
SWEEP_RA_STEP = {"dr8": 10, "dr9": 10, "dr10": 5}
SWEEP_DEC_STEP = 5

SWEEP_RE = re.compile(r"^sweep-(\d{3})([pm])(\d{3})-(\d{3})([pm])(\d{3})(-lc|-ex|-pz)?\.fits$")
# A sweep ID: the file stem, prefixed by its region in multi-region runs (north/sweep-...).
SWEEP_ID_RE = re.compile(r"^(?:(south|north)/)?(sweep-\d{3}[pm]\d{3}-\d{3}[pm]\d{3})$")


# --------------------------------------------------------------------------- bricks
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


# --------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class SurveyTree:
    """One region of one data release of a Legacy Surveys tree on disk.

    ``root`` is the directory that holds ``dr10/`` (or ``dr9/``...): at NERSC
    ``/global/cfs/cdirs/cosmo/data/legacysurvey``.
    """

    root: Path
    release: str = "dr10"
    region: str = "south"
    sweep_version: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if self.release not in RELEASES:
            raise LensfinderError(f"survey.release {self.release!r} is not one of {RELEASES}")
        if self.region not in REGIONS:
            raise LensfinderError(f"survey.region {self.region!r} must be 'south' or 'north'")

    @property
    def release_dir(self) -> Path:
        return self.root / self.release

    @property
    def region_dir(self) -> Path:
        return self.release_dir / self.region

    @property
    def sweep_dir(self) -> Path:
        return self.region_dir / "sweep" / (self.sweep_version or SWEEP_VERSIONS[self.release])

    @property
    def bricks_path(self) -> Path:
        return self.release_dir / "survey-bricks.fits.gz"

    def coadd_path(self, brickname: str, band: str, product: str = "image") -> Path:
        """``<region>/coadd/<AAA>/<brick>/legacysurvey-<brick>-<product>-<band>.fits.fz``."""
        return (
            self.region_dir
            / "coadd"
            / brickname[:3]
            / brickname
            / f"legacysurvey-{brickname}-{product}-{band}.fits.fz"
        )

    def sweep_path(self, name: str) -> Path:
        return self.sweep_dir / f"{name}.fits"

    def check_exists(self) -> None:
        if not self.root.is_dir():
            raise LensfinderError(
                f"survey directory {self.root} does not exist: set survey.root in the config to a "
                "Legacy Surveys mirror (the directory that holds dr10/), or survey.source: mock"
            )
        if not self.sweep_dir.is_dir():
            raise LensfinderError(
                f"sweep directory {self.sweep_dir} does not exist under survey.root {self.root}: "
                "check survey.release, survey.region and survey.sweep_version"
            )

    def list_sweeps(self) -> list[str]:
        """Names (without ``.fits``) of the main sweep files present, sorted."""
        self.check_exists()
        names = []
        for entry in os.listdir(self.sweep_dir):
            m = SWEEP_RE.match(entry)
            if m and m.group(7) is None:
                names.append(entry[: -len(".fits")])
        return sorted(names)


def split_sweep_id(sweep_id: str) -> tuple[str | None, str]:
    """``north/sweep-150p030-160p035`` -> ('north', 'sweep-150p030-160p035'); a bare stem -> (None, stem)."""
    m = SWEEP_ID_RE.match(sweep_id)
    if not m:
        raise LensfinderError(
            f"{sweep_id!r} is not a sweep ID (expected sweep-RRR[pm]DDD-RRR[pm]DDD, or <region>/sweep-... "
            "with region north or south)"
        )
    return m.group(1), m.group(2)


@dataclass(frozen=True)
class SurveyTrees:
    """One data release read from one or several regions' trees (``regions``).

    Sweep IDs name a sweep file: the bare stem (``sweep-150p000-155p005``) when one region
    is read, ``<region>/<stem>`` when several are, since every region has its own file of
    the same name (DR9 ``north/sweep/9.0/sweep-150p030-160p035.fits`` and ``south/...``).
    """

    root: Path
    release: str = "dr10"
    regions: tuple = ("south",)
    sweep_version: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "regions", tuple(self.regions))
        if not self.regions or len(set(self.regions)) != len(self.regions):
            raise LensfinderError(f"survey.regions {list(self.regions)} must list each region once")
        for region in self.regions:
            SurveyTree(self.root, self.release, region, self.sweep_version)  # validates both names
            if region not in RELEASE_REGIONS[self.release]:
                raise LensfinderError(
                    f"survey.regions includes {region!r}, but {self.release.upper()} has no {region} region "
                    "(BASS/MzLS, the north, are in DR9 and DR8): use release dr9 for the north"
                )

    @property
    def multi_region(self) -> bool:
        return len(self.regions) > 1

    def tree(self, region: str | None = None) -> SurveyTree:
        """The tree of ``region`` (default: the only one)."""
        if region is None:
            if self.multi_region:
                raise LensfinderError(f"several regions {list(self.regions)} are read: name one")
            region = self.regions[0]
        if region not in self.regions:
            raise LensfinderError(f"region {region!r} is not among survey.regions {list(self.regions)}")
        return SurveyTree(self.root, self.release, region, self.sweep_version)

    def sweep_id(self, region: str, stem: str) -> str:
        return f"{region}/{stem}" if self.multi_region else stem

    def locate(self, sweep_id: str) -> tuple[SurveyTree, str]:
        """(tree, file stem) of a sweep ID; a multi-region run needs the region prefix."""
        region, stem = split_sweep_id(sweep_id)
        if region is None and self.multi_region:
            raise LensfinderError(
                f"sweep {sweep_id!r} names no region, but survey.regions is {list(self.regions)}: "
                f"write it as <region>/{stem}"
            )
        return self.tree(region), stem

    def sweep_path(self, sweep_id: str) -> Path:
        tree, stem = self.locate(sweep_id)
        return tree.sweep_path(stem)


# --------------------------------------------------------------------------- sweeps
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


# --------------------------------------------------------------------------- images
def read_image_header(path: str | os.PathLike, ext: int = 1):
    """The image header of HDU ``ext`` as an astropy Header.

    For tile-compressed images (``.fits.fz``) the binary-table cards are translated back
    to the image's own (ZNAXISn -> NAXISn) and the compression cards dropped.
    """
    from astropy.io import fits as afits

    hdr = fitsio.read_header(str(path), ext=ext)
    compressed = bool(hdr.get("ZIMAGE", False))
    table_keys = {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS", "COMMENT", "HISTORY", ""}
    header = afits.Header()
    if compressed:
        header["NAXIS"] = hdr["ZNAXIS"]
        for i in range(1, hdr["ZNAXIS"] + 1):
            header[f"NAXIS{i}"] = hdr[f"ZNAXIS{i}"]
    for r in hdr.records():
        name = r["name"]
        if compressed and (name in table_keys or name[:5] in ("TTYPE", "TFORM") or name.startswith("Z")):
            continue
        if name in ("COMMENT", "HISTORY", "") or name in header:
            continue
        header[name] = r["value"]
    return header


def read_header_wcs(path: str | os.PathLike, ext: int = 1):
    """(astropy TAN WCS, header) of a coadd image, from its own FITS header (HDU 1 for .fz)."""
    from astropy.wcs import WCS

    header = read_image_header(path, ext)
    return WCS(header, naxis=2), header


def desi_names(ra, dec) -> list[str]:
    """DESI-style system names ``DESI-RRR.rrrr+DD.dddd`` from RA and Dec [deg]."""
    return [f"DESI-{r:08.4f}{d:+08.4f}" for r, d in zip(ra, dec, strict=True)]


def galactic_latitude(ra, dec) -> np.ndarray:
    """Galactic latitude b [deg] of ICRS (ra, dec) [deg] (IAU 1958 pole, J2000)."""
    ra_gp, dec_gp = np.radians(192.85948), np.radians(27.12825)
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    sinb = np.sin(dec) * np.sin(dec_gp) + np.cos(dec) * np.cos(dec_gp) * np.cos(ra - ra_gp)
    return np.degrees(np.arcsin(np.clip(sinb, -1, 1)))


def photometric_region(ra, dec) -> np.ndarray:
    """'north' (BASS/MzLS) iff Dec >= 32.375 and b > 0, else 'south' (DECaLS)."""
    north = (np.asarray(dec) >= NORTH_DEC_MIN) & (galactic_latitude(ra, dec) > 0)
    return np.where(north, "north", "south")
