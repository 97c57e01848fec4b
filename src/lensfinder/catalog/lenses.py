"""Known-lens and candidate catalogues: read (CSV, FITS or the lenscat package), check,
union, de-duplicate.

Each catalogue is named in the config (``lens_catalogs``) either by a file, with its column
names (ra, dec in degrees; optional name, grade, reference), or as ``source: lenscat``: the
table of known lenses and candidates that the ``lenscat`` package (PyPI) ships, read
offline. A row with a missing, non-numeric or out-of-range coordinate is reported with its
file and line and skipped, or stops the run when ``strict``. The union keeps every
system's provenance; systems closer than the de-duplication radius are merged (friends of
friends), keeping the best grade (A < B < C < D < ungraded).

lenscat's ``grading`` maps to the pipeline's grade letters: ``confident`` -> A,
``probable`` -> B, any other value -> C (``LENSCAT_GRADES``), so ``trainset.grades`` and
known-system removal treat it like any other catalogue.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from lensfinder.catalog.crossmatch import friends_of_friends
from lensfinder.errors import LensfinderError
from lensfinder.settings import Settings

log = logging.getLogger(__name__)


GRADE_ORDER = {"A": 0, "B": 1, "C": 2, "D": 3}
SOURCES = ("lenscat",)
LENSCAT_GRADES = {"confident": "A", "probable": "B"}  # any other grading: C
COLUMN_OPTIONS = ("ra", "dec", "name", "grade", "reference")


@dataclass
class CatalogSpec(Settings):
    """One ``lens_catalogs`` entry: a file (``path``) or a packaged source (``source``)."""

    section: ClassVar[str] = "lens_catalogs"
    path: str | None = None
    ra: str = "ra"
    dec: str = "dec"
    name: str = "name"
    grade: str = "grade"
    reference: str = "reference"
    label: str | None = None  # provenance; default: the file name, or the source's name
    source: str | None = None  # "lenscat": the lenscat package's table instead of a file
    gradings: list | None = None  # lenscat only: keep these gradings, e.g. [confident]
    types: list | None = None  # lenscat only: keep these lens types (galaxy, group, cluster)

    def __post_init__(self):
        if (self.path is None) == (self.source is None):
            raise LensfinderError(
                f"lens_catalogs entry {self.describe()}: give either path (a CSV or FITS file) or source "
                f"(one of {', '.join(SOURCES)}), not both or neither"
            )
        if self.source is not None and self.source not in SOURCES:
            raise LensfinderError(f"lens_catalogs entry: unknown source {self.source!r}; use one of {', '.join(SOURCES)}")
        if self.source is None and (self.gradings or self.types):
            raise LensfinderError(f"lens_catalogs entry {self.path}: gradings and types apply to source: lenscat only")
        renamed = [c for c in COLUMN_OPTIONS if getattr(self, c) != c]
        if self.source is not None and renamed:
            raise LensfinderError(
                f"lens_catalogs entry source: {self.source} takes no column names ({', '.join(renamed)}): remove them"
            )

    @classmethod
    def from_dict(cls, d):
        return cls(**cls.check_keys(d, where=f"lens_catalogs entry {d}"))

    def describe(self) -> str:
        """How messages name this catalogue: its path, or the source and its version."""
        if self.path is not None:
            return str(self.path)
        if self.source is not None:
            return f"{self.source} {package_version(self.source) or '(not installed)'}"
        return "(no path, no source)"


def package_version(name: str) -> str | None:
    """Installed version of a package (None if it is not installed); no import needed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def catalog_input_files(specs) -> list[str]:
    """The files among the ``lens_catalogs`` entries (dicts or CatalogSpec), for a rule's
    input: packaged sources (lenscat) have none."""
    out = []
    for spec in specs:
        path = spec.get("path") if isinstance(spec, dict) else spec.path
        if path:
            out.append(str(path))
    return out


def catalog_versions(specs) -> dict:
    """{source: installed version} of the packaged sources among the entries, for a rule's
    params (a new lenscat release then re-runs what depends on the catalogues)."""
    sources = {spec.get("source") if isinstance(spec, dict) else spec.source for spec in specs}
    return {s: package_version(s) for s in sorted(sources - {None})}


def lenscat_grade(grading: str) -> str:
    """The pipeline's grade letter of a lenscat grading (confident A, probable B, else C)."""
    return LENSCAT_GRADES.get(str(grading).strip().lower(), "C")


def _lenscat_rows(spec: CatalogSpec):
    """Yield (row number, row dict) of the lenscat table, filtered by gradings and types."""
    try:
        with warnings.catch_warnings():  # its plotting dependencies warn about their own imports
            warnings.simplefilter("ignore")
            import lenscat
    except ImportError as err:
        raise LensfinderError(
            f"lens_catalogs source: lenscat needs the lenscat package ({err}): pip install lenscat"
        ) from err
    table = lenscat.catalog
    columns = {c.lower(): c for c in table.colnames}
    grading = np.char.lower(np.char.strip(np.asarray(table[columns["grading"]], dtype=str)))
    kind = np.char.lower(np.char.strip(np.asarray(table[columns["type"]], dtype=str)))
    keep = np.ones(len(table), dtype=bool)
    for option, values in (("gradings", grading), ("types", kind)):
        wanted = getattr(spec, option)
        if not wanted:
            continue
        wanted = [str(w).strip().lower() for w in wanted]
        present = sorted(set(values.tolist()))
        unknown = [w for w in wanted if w not in present]
        if unknown:
            raise LensfinderError(
                f"lens_catalogs source: lenscat: unknown {option[:-1]} value(s) {unknown}; "
                f"{spec.describe()} has {present}"
            )
        keep &= np.isin(values, wanted)
    ra, dec = np.asarray(table[columns["ra"]]), np.asarray(table[columns["dec"]])
    names, refs = np.asarray(table[columns["name"]], dtype=str), np.asarray(table[columns["ref"]], dtype=str)
    log.info("%s: %d of %d entries kept (gradings %s, types %s)", spec.describe(), keep.sum(), len(table),
             spec.gradings or "all", spec.types or "all")
    for i in np.flatnonzero(keep):
        yield f"row {i + 1}", {"name": names[i], "ra": ra[i], "dec": dec[i], "grade": lenscat_grade(grading[i]),
                               "reference": refs[i]}


def _raw_rows(spec: CatalogSpec):
    """Yield (line or row number, {lower-case column: value}) for CSV, FITS or a source."""
    if spec.source == "lenscat":
        yield from _lenscat_rows(spec)
        return
    path = Path(spec.path)
    if not path.exists():
        raise LensfinderError(f"lens catalogue {path} does not exist: check lens_catalogs in the config")
    if path.suffix.lower() in (".fits", ".fit", ".fz") or path.name.lower().endswith(".fits.gz"):
        import fitsio

        try:
            data = fitsio.read(str(path), ext=1)
        except OSError as err:
            raise LensfinderError(f"lens catalogue {path} is not a readable FITS table ({err})") from err
        names = data.dtype.names
        for i, row in enumerate(data):
            yield f"row {i + 1}", {n.lower(): (row[n].decode() if isinstance(row[n], bytes) else row[n]) for n in names}
    else:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                return
            for row in reader:
                yield f"line {reader.line_num}", {k.strip().lower(): v for k, v in row.items() if k is not None}


def read_catalog(spec: CatalogSpec, strict: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """One catalogue as a table (name, ra, dec, grade, reference, catalog) and its problems."""
    label = spec.label or (Path(spec.path).name if spec.path else spec.source)
    where_file = spec.describe()
    rows, problems = [], []
    for where, raw in _raw_rows(spec):
        if spec.ra.lower() not in raw or spec.dec.lower() not in raw:
            raise LensfinderError(
                f"lens catalogue {where_file} has no column {spec.ra!r} or {spec.dec!r}: set ra/dec for it in lens_catalogs"
            )
        problem = None
        try:
            ra, dec = float(raw[spec.ra.lower()]), float(raw[spec.dec.lower()])
            if not (math.isfinite(ra) and math.isfinite(dec)):
                problem = "missing coordinate"
            elif not (0.0 <= ra < 360.0) or not (-90.0 <= dec <= 90.0):
                problem = f"coordinate out of range (ra={ra}, dec={dec})"
        except (TypeError, ValueError):
            problem = f"non-numeric or missing coordinate (ra={raw.get(spec.ra.lower())!r}, dec={raw.get(spec.dec.lower())!r})"
        if problem:
            msg = f"{where_file} {where}: {problem}"
            if strict:
                raise LensfinderError(msg + " (trainset.strict is on: fix or remove the row)")
            problems.append(msg)
            log.warning("skipped %s", msg)
            continue
        grade = str(raw.get(spec.grade.lower(), "") or "").strip().upper()
        rows.append({
            "name": str(raw.get(spec.name.lower(), "") or "").strip(),
            "ra": ra, "dec": dec, "grade": grade,
            "reference": str(raw.get(spec.reference.lower(), "") or "").strip(),
            "catalog": label,
        })
    if not rows:
        raise LensfinderError(f"lens catalogue {where_file} holds no usable row"
                              f"{' with these gradings/types' if spec.source else ''}: a training set needs known lenses")
    return pd.DataFrame(rows), problems


def union_catalogs(specs, dedup_radius_arcsec: float = 2.0, strict: bool = False):
    """Union of all catalogues, one row per system; returns (systems, problems).

    ``systems`` has name, ra, dec, grade (best), reference, catalogs (all provenances,
    ';'-joined) and n_entries.
    """
    frames, problems = [], []
    for spec in specs:
        frame, probs = read_catalog(spec, strict)
        frames.append(frame)
        problems += probs
    if not frames:
        raise LensfinderError("no lens catalogue is configured (lens_catalogs): a training set needs known lenses")
    entries = pd.concat(frames, ignore_index=True)
    entries["group"] = friends_of_friends(entries["ra"].to_numpy(), entries["dec"].to_numpy(), dedup_radius_arcsec)
    entries["rank"] = entries["grade"].map(GRADE_ORDER).fillna(9)
    entries = entries.sort_values(["group", "rank"], kind="stable")
    by_group = entries.groupby("group", sort=True)
    systems = entries.drop_duplicates("group").set_index("group")[["name", "ra", "dec", "grade", "reference"]]
    systems["catalogs"] = by_group["catalog"].agg(lambda c: ";".join(sorted(set(c))))  # the best-graded entry's
    systems["n_entries"] = by_group.size()
    return systems.reset_index(drop=True), problems


def grade_ok(grades, allowed) -> np.ndarray:
    """Which grades pass the positives' grade filter (None or empty list: all)."""
    grades = np.asarray(grades, dtype=str)
    if not allowed:
        return np.ones(len(grades), dtype=bool)
    return np.isin(grades, [str(a).upper() for a in allowed])
