"""Known-lens and candidate catalogues: read (CSV or FITS), check, union, de-duplicate.

Each catalogue is named in the config with its column names (ra, dec in degrees; optional
name, grade, reference). A row with a missing, non-numeric or out-of-range coordinate is
reported with its file and line and skipped, or stops the run when ``strict``. The union
keeps every system's provenance; systems closer than the de-duplication radius are
merged (friends of friends), keeping the best grade (A < B < C < D < ungraded).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .crossmatch import friends_of_friends
from .errors import LensfinderError

log = logging.getLogger(__name__)
GRADE_ORDER = {"A": 0, "B": 1, "C": 2, "D": 3}


@dataclass
class CatalogSpec:
    path: str
    ra: str = "ra"
    dec: str = "dec"
    name: str = "name"
    grade: str = "grade"
    reference: str = "reference"
    label: str | None = None  # provenance; default: the file name

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


def _raw_rows(spec: CatalogSpec):
    """Yield (line or row number, {lower-case column: value}) for CSV or FITS."""
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
    label = spec.label or Path(spec.path).name
    rows, problems = [], []
    for where, raw in _raw_rows(spec):
        if spec.ra.lower() not in raw or spec.dec.lower() not in raw:
            raise LensfinderError(
                f"lens catalogue {spec.path} has no column {spec.ra!r} or {spec.dec!r}: set ra/dec for it in lens_catalogs"
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
            msg = f"{spec.path} {where}: {problem}"
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
        raise LensfinderError(f"lens catalogue {spec.path} holds no usable row: a training set needs known lenses")
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
    systems = []
    for _, g in entries.sort_values(["group", "rank"], kind="stable").groupby("group", sort=True):
        best = g.iloc[0]
        systems.append({
            "name": best["name"], "ra": best["ra"], "dec": best["dec"], "grade": best["grade"],
            "reference": best["reference"], "catalogs": ";".join(sorted(set(g["catalog"]))), "n_entries": len(g),
        })
    return pd.DataFrame(systems), problems


def grade_ok(grades, allowed) -> np.ndarray:
    """Which grades pass the positives' grade filter (None or empty list: all)."""
    grades = np.asarray(grades, dtype=str)
    if not allowed:
        return np.ones(len(grades), dtype=bool)
    return np.isin(grades, [str(a).upper() for a in allowed])
