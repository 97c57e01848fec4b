"""Object selection from one sweep file: the lens-search cuts of papers II-IV.

Cuts, applied in this order and each counted (``SelectionConfig`` holds the knobs):

1. ``type``: Tractor TYPE in the allowed set (default SER, DEV, REX, EXP: drops PSF and DUP);
2. ``photometry``: FLUX_G, FLUX_R, FLUX_Z finite and MW_TRANSMISSION_G/R/Z in (0, 1]: a
   corrupt row (an infinite flux, a zero transmission) would otherwise get a magnitude of
   -inf, which passes any magnitude cut;
3. ``zmag``: z < 20.0 AB, m = 22.5 - 2.5 log10(FLUX_Z [nanomaggies]), optionally
   extinction-corrected (FLUX_Z / MW_TRANSMISSION_Z); non-positive flux fails;
4. ``nobs``: NOBS_G, NOBS_R and NOBS_Z >= 3;
5. ``maskbits``: none of the configured MASKBITS bits set (off by default);
6. ``region``: the object's photometric region (north iff Dec >= 32.375 and b > 0) is
   the tree's own; this drops the DR9 north/south overlap duplicates (optional);
7. ``dec``: Dec < ``dec_max`` [deg] (paper IV's footprint, Dec < +32; off by default).

The output keeps the key (RELEASE, BRICKID, OBJID), the columns later stages need,
magnitudes, the region label of the object's own tree (DECaLS for south, BASS-MzLS for
north), the z-band exposure bin on which nonlens sampling is stratified, and the sweep
ID (``<region>/<sweep>`` in multi-region runs). DR8 rows get SHAPE_R, SHAPE_E1,
SHAPE_E2 and SERSIC from their DEV/EXP fits by type (``lensfinder.survey.sweeps.dr8_shapes``);
COMP is a type like any other (list it in ``types`` for DR8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from lensfinder.constants import REGION_LABELS, REGIONS
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.settings import Settings
from lensfinder.survey.positions import photometric_region
from lensfinder.survey.sweeps import read_sweep, sweep_nrows

REQUIRED_COLUMNS = [
    "RELEASE", "BRICKID", "BRICKNAME", "OBJID", "TYPE", "RA", "DEC", "EBV",
    "FLUX_G", "FLUX_R", "FLUX_Z", "MW_TRANSMISSION_G", "MW_TRANSMISSION_R", "MW_TRANSMISSION_Z",
    "NOBS_G", "NOBS_R", "NOBS_Z", "MASKBITS",
]


# Not in every release (DR8 sweeps have other shape columns): NaN when absent.
OPTIONAL_COLUMNS = [
    "SHAPE_R", "SHAPE_E1", "SHAPE_E2", "SERSIC",
    "PSFSIZE_G", "PSFSIZE_R", "PSFSIZE_Z", "PSFDEPTH_G", "PSFDEPTH_R", "PSFDEPTH_Z",
]


CUTS = ("type", "photometry", "zmag", "nobs", "maskbits", "region", "dec")


@dataclass
class SelectionConfig(Settings):
    section: ClassVar[str] = "selection"

    types: list = field(default_factory=lambda: ["SER", "DEV", "REX", "EXP"])
    zmag_max: float = 20.0
    deredden: bool = False
    min_nobs: int = 3
    maskbits_reject: list = field(default_factory=list)  # bit numbers, e.g. [1, 13]
    zexp_bins: list = field(default_factory=lambda: [3, 4, 5, 6, 8, 11])  # lower edges of NOBS_Z bins
    drop_other_region: bool = True
    dec_max: float | None = None  # deg; paper IV: 32.0 (DECam footprint, Dec < +32)
    chunk_rows: int = 500_000


def flux_to_mag(flux):
    """AB magnitude of a flux in nanomaggies; NaN where flux <= 0."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, 22.5 - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


def zexp_bin_labels(nobs_z, edges) -> np.ndarray:
    """Label each NOBS_Z with its bin, e.g. edges [3, 4, 6] -> '3', '4-5', '6+'."""
    edges = list(edges)
    labels = []
    for lo, hi in zip(edges, edges[1:] + [None]):
        if hi is None:
            labels.append(f"{lo}+")
        elif hi - lo == 1:
            labels.append(f"{lo}")
        else:
            labels.append(f"{lo}-{hi - 1}")
    idx = np.searchsorted(np.asarray(edges), np.asarray(nobs_z), side="right") - 1
    out = np.array(labels, dtype=object)[np.clip(idx, 0, len(labels) - 1)]
    return np.where(idx < 0, f"<{edges[0]}", out).astype(str)


def cut_masks(data: np.ndarray, cfg: SelectionConfig, tree_region: str) -> dict:
    """Boolean 'passes' mask of each cut (independently), keyed by cut name."""
    flux_z = data["FLUX_Z"].astype(np.float64)
    if cfg.deredden:
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero transmission fails the photometry cut
            flux_z = flux_z / data["MW_TRANSMISSION_Z"]
    zmag = flux_to_mag(flux_z)
    photometry = np.ones(len(data), dtype=bool)
    for b in "GRZ":
        transmission = data[f"MW_TRANSMISSION_{b}"]
        photometry &= np.isfinite(data[f"FLUX_{b}"]) & (transmission > 0) & (transmission <= 1)
    masks = {
        "type": np.isin(data["TYPE"], np.asarray(cfg.types, dtype=str)),
        "photometry": photometry,
        "zmag": np.nan_to_num(zmag, nan=np.inf) < cfg.zmag_max,
        "nobs": (data["NOBS_G"] >= cfg.min_nobs) & (data["NOBS_R"] >= cfg.min_nobs) & (data["NOBS_Z"] >= cfg.min_nobs),
    }
    reject = 0
    for bit in cfg.maskbits_reject:
        reject |= 1 << int(bit)
    masks["maskbits"] = (data["MASKBITS"].astype(np.int64) & reject) == 0
    if cfg.drop_other_region:
        masks["region"] = photometric_region(data["RA"], data["DEC"]) == tree_region
    else:
        masks["region"] = np.ones(len(data), dtype=bool)
    if cfg.dec_max is not None:
        masks["dec"] = data["DEC"] < cfg.dec_max
    else:
        masks["dec"] = np.ones(len(data), dtype=bool)
    return masks


def select_chunk(data: np.ndarray, cfg: SelectionConfig, tree_region: str):
    """Apply the cuts in order; returns (selected rows as a dict of columns, removed per cut)."""
    masks = cut_masks(data, cfg, tree_region)
    keep = np.ones(len(data), dtype=bool)
    removed = {}
    for cut in CUTS:
        removed[cut] = int((keep & ~masks[cut]).sum())
        keep &= masks[cut]
    sel = data[keep]
    out = {name: sel[name] for name in sel.dtype.names if name != "MASKBITS"}
    out["MASKBITS"] = sel["MASKBITS"].astype(np.int32)
    for band in "grz":
        b = band.upper()
        out[f"MAG_{b}"] = flux_to_mag(sel[f"FLUX_{b}"]).astype(np.float32)
        out[f"MAG_{b}_DERED"] = flux_to_mag(sel[f"FLUX_{b}"] / sel[f"MW_TRANSMISSION_{b}"]).astype(np.float32)
    out["REGION"] = np.full(len(sel), REGION_LABELS[tree_region])
    out["ZEXP_BIN"] = zexp_bin_labels(sel["NOBS_Z"], cfg.zexp_bins)
    return out, removed


def select_sweep(sweep_path, objects_path, counts_path, cfg: SelectionConfig, tree_region="south", progress=True,
                 sweep_id: str | None = None):
    """Select one sweep's objects to Parquet (``objects_path``) and write the cut counts CSV.

    ``tree_region`` is the region whose tree holds the sweep file: it labels REGION and
    defines the ``region`` cut. ``sweep_id`` fills the SWEEP column (default: the file
    stem; ``<region>/<stem>`` in multi-region runs). Reads the sweep in row chunks
    (bounded memory for ~2M-row real sweeps). The counts table lists, per cut, how many
    objects it removed and how many remain; input = selected + sum(removed).
    """
    if tree_region not in REGIONS:
        raise LensfinderError(f"tree region {tree_region!r} of {sweep_path} must be one of {REGIONS}")
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    sweep_path = Path(sweep_path)
    read_sweep(sweep_path, REQUIRED_COLUMNS, OPTIONAL_COLUMNS, rows=slice(0, 0))  # validates file and columns
    n = sweep_nrows(sweep_path)
    parts, removed_total = [], dict.fromkeys(CUTS, 0)
    starts = range(0, max(n, 1), cfg.chunk_rows)
    for start in tqdm(starts, desc=f"select {sweep_path.name}", unit="chunk", disable=not progress):
        data = read_sweep(sweep_path, REQUIRED_COLUMNS, OPTIONAL_COLUMNS, rows=slice(start, start + cfg.chunk_rows))
        out, removed = select_chunk(data, cfg, tree_region)
        parts.append(pa.table(out))
        for k, v in removed.items():
            removed_total[k] += v
    table = pa.concat_tables(parts)
    check_unique_keys(table, sweep_path)
    table = table.append_column("SWEEP", pa.array([sweep_id or sweep_path.stem] * table.num_rows, pa.string()))
    meta = {b"lensfinder.units": b"FLUX_*: nanomaggies; MAG_*: AB; RA/DEC: deg; SHAPE_R: arcsec; PSFSIZE_*: arcsec"}
    table = table.replace_schema_metadata(meta)
    with atomic_path(objects_path) as tmp:
        pq.write_table(table, tmp)
    remaining = n
    lines = ["cut,removed,remaining", f"input,0,{n}"]
    for cut in CUTS:
        remaining -= removed_total[cut]
        lines.append(f"{cut},{removed_total[cut]},{remaining}")
    if remaining != table.num_rows:
        raise LensfinderError(f"internal: counts of {sweep_path} do not add up ({remaining} != {table.num_rows})")
    with atomic_path(counts_path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return table.num_rows, removed_total


def check_unique_keys(table, sweep_path):
    """A repeated (RELEASE, BRICKID, OBJID) would multiply rows in every later join."""
    keys = table.select(["RELEASE", "BRICKID", "OBJID"]).to_pandas()
    dup = keys.duplicated(keep=False)
    if dup.any():
        raise LensfinderError(f"sweep file {sweep_path} repeats {int(keys.duplicated().sum())} selected key(s) "
                              f"(RELEASE, BRICKID, OBJID), e.g. {keys[dup].head(2).values.tolist()}: "
                              "re-download it")


def sweep_id_of_counts(path) -> str:
    """The sweep ID of ``objects/[<region>/]<sweep>.counts.csv``."""
    path = Path(path)
    stem = path.name.removesuffix(".counts.csv")
    return f"{path.parent.name}/{stem}" if path.parent.name in REGIONS else stem


def combine_counts(count_paths, out_path):
    """One table of every sweep's cut counts (columns: sweep ID, input, each cut, selected)."""
    import csv

    rows = []
    for p in count_paths:
        with open(p) as fh:
            table = {r["cut"]: r for r in csv.DictReader(fh)}
        row = {"sweep": sweep_id_of_counts(p), "input": int(table["input"]["remaining"])}
        # counts written before a cut existed lack its row: it removed nothing then
        row.update({cut: int(table[cut]["removed"]) if cut in table else 0 for cut in CUTS})
        row["selected"] = int(list(table.values())[-1]["remaining"])
        rows.append(row)
    total = {"sweep": "total", **{k: sum(r[k] for r in rows) for k in ["input", *CUTS, "selected"]}}
    with atomic_path(out_path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["sweep", "input", *CUTS, "selected"])
            w.writeheader()
            w.writerows(rows + [total])
