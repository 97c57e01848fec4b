"""Deflectors for injections: the run's selected objects that may carry a simulated lens,
found one sweep at a time.

Each sweep's objects table (only the columns the cuts and the injector read) is joined with
its own shard set's index (CENTER_DX/DY, FRAC_MISSING_*), cut, and only the survivors are
kept, so a survey-sized run never holds every object or every shard index at once (DR10:
43.5M objects in 1,436 sweeps; a few percent pass the default cuts). The cuts and their
counts are the same as on one whole table: every cut is per object, against positions and
keys gathered beforehand (catalogued systems, truth lenses, the training set).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from lensfinder.catalog.crossmatch import within, within_square
from lensfinder.catalog.lenses import CatalogSpec, union_catalogs
from lensfinder.catalog.truth import load_truth, match_truth
from lensfinder.constants import BANDS, KEY, PIXSCALE
from lensfinder.cutouts.shards import ShardSet, common_shape, manifests_by_sweep, sweep_ids
from lensfinder.errors import LensfinderError
from lensfinder.tables import pack_keys, read_keyed

DEFLECTOR_COLUMNS = ["RA", "DEC", "TYPE", "REGION", "ZEXP_BIN", "MAG_G", "MAG_R", "MAG_Z", "MAG_G_DERED",
                     "MAG_R_DERED", "SWEEP", *(f"{c}_{b}" for c in ("MW_TRANSMISSION", "PSFSIZE", "PSFDEPTH")
                                                for b in "GRZ")]


INDEX_EXTRA = ("CENTER_DX", "CENTER_DY", *(f"FRAC_MISSING_{b.upper()}" for b in BANDS))


@dataclass
class Deflectors:
    """The deflectors (``table``, sorted by key), the shard set of each (``shard_set``: a
    position in ``manifests``), how many objects each cut removed (``counts``), and the
    cutouts' geometry (``shape`` (3, H, W), ``pixscale`` [arcsec], ``release``)."""

    table: pd.DataFrame
    shard_set: np.ndarray
    manifests: list
    counts: dict
    shape: tuple
    pixscale: float
    release: str

    def __len__(self):
        return len(self.table)

    def cutouts(self, indices) -> dict:
        """{deflector index: its fp16 cutout (3, H, W), nanomaggies, band order g, r, z},
        each shard set opened once for all of its deflectors."""
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        out = {}
        for j in np.unique(self.shard_set[indices]):
            shards = ShardSet(self.manifests[int(j)])
            for i in indices[self.shard_set[indices] == j]:
                row = self.table.iloc[int(i)]
                out[int(i)] = np.asarray(shards.get(tuple(int(row[k]) for k in KEY)))
        return out


def cutout_geometry(manifests) -> tuple[tuple, float, str]:
    """(shape, pixscale [arcsec], release) shared by the shard sets, from their manifests alone."""
    infos = [json.loads(Path(m).read_text()) for m in manifests]
    if not infos:
        raise LensfinderError("no cutout shard set to inject into: run the cutouts rule first")
    shape = common_shape(infos)
    scales = {float(i.get("cutout", {}).get("pixscale_arcsec", PIXSCALE)) for i in infos}
    if len(scales) > 1:
        raise LensfinderError(f"cutout shard sets of different pixel scales {sorted(scales)}")
    return shape, scales.pop(), infos[0].get("release", "")


def find_deflectors(object_paths, manifests, cuts, catalog_specs=(), truth_path=None, exclude_keys=(), labelled=None,
                    labelled_reason="cutout_holds_training_lens", progress=False) -> Deflectors:
    """The objects passing ``cuts`` (an ``inject.DeflectorCuts``), sweep by sweep.

    No deflector's cutout may hold a catalogued system (``catalog_specs``) or a truth lens
    (``truth_path``), or with ``cuts.exclude_radius_arcsec`` none may lie that close; none is
    in ``exclude_keys`` ((RELEASE, BRICKID, OBJID) tuples: the training set); and no
    ``labelled`` position ((ra, dec) arrays [deg]) lies inside its cutout, counted under
    ``labelled_reason``. ``object_paths``: the objects tables (``[<region>/]<sweep>.parquet``);
    ``manifests``: one shard set per sweep (``.../[<region>/]<sweep>/manifest.json``, else by
    position).
    """
    shape, pixscale, release = cutout_geometry(manifests)
    half = (shape[-1] // 2) * pixscale
    sweeps = sweep_ids(object_paths)
    manifest_of = manifests_by_sweep(sweeps, manifests)
    position = {Path(m): j for j, m in enumerate(manifests)}
    avoid_ra, avoid_dec = avoid_positions(catalog_specs, truth_path, object_paths)
    exclude = _packed(exclude_keys)
    paths = list(zip(object_paths, sweeps))
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, desc="deflectors", unit="sweep", mininterval=10)
    kept, sets, counts = [], [], {}
    for path, sweep in paths:
        manifest = Path(manifest_of[sweep])
        table = _candidates(path, manifest)
        chosen, c = select_deflectors(table, cuts, half, avoid_ra, avoid_dec, exclude, labelled, labelled_reason)
        kept.append(chosen)
        sets.append(np.full(len(chosen), position[manifest], np.int32))
        counts = {k: counts.get(k, 0) + v for k, v in c.items()}
    table = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=[*KEY, *DEFLECTOR_COLUMNS])
    order = np.lexsort([table[k].to_numpy() for k in reversed(KEY)]) if len(table) else np.zeros(0, np.int64)
    shard_set = np.concatenate(sets)[order] if sets else np.zeros(0, np.int32)
    return Deflectors(table.iloc[order].reset_index(drop=True), shard_set, [Path(m) for m in manifests], counts,
                      shape, pixscale, release)


def _candidates(objects_path, manifest) -> pd.DataFrame:
    """One sweep's selected objects that have a cutout: objects columns joined with their
    shard index rows (CENTER_DX, CENTER_DY = 0 where not recorded)."""
    missing = [c for c in DEFLECTOR_COLUMNS if c not in pq.read_schema(objects_path).names]
    if missing:
        raise LensfinderError(f"objects table {objects_path} lacks column(s) {missing}: re-run the select rule")
    objects = read_keyed(objects_path, DEFLECTOR_COLUMNS)
    index = ShardSet(manifest).index
    extra = [c for c in INDEX_EXTRA if c in index]
    table = objects.merge(index[[*KEY, *extra]], on=list(KEY), how="inner", validate="one_to_one")
    for c in ("CENTER_DX", "CENTER_DY"):
        if c not in table:
            table[c] = 0.0
    return table


def _packed(keys) -> np.ndarray:
    """(RELEASE, BRICKID, OBJID) tuples -> sorted packed int64 keys."""
    keys = np.asarray(list(keys), dtype=np.int64).reshape(-1, 3)
    return np.sort(pack_keys(keys[:, 0], keys[:, 1], keys[:, 2]))


def avoid_positions(catalog_specs, truth_path, object_paths, match_radius_arcsec=1.5):
    """(ra, dec) arrays [deg] of every catalogued lens system and of the truth list's lenses
    among the selected objects, cutout or not (at the matched object's position; each sweep
    matched on its own, reading keys and positions only, so a lens by a sweep's edge may be
    avoided twice)."""
    ra, dec = [], []
    if catalog_specs:
        systems, _ = union_catalogs([CatalogSpec.from_dict(s) for s in catalog_specs])
        ra.append(systems["ra"].to_numpy(np.float64))
        dec.append(systems["dec"].to_numpy(np.float64))
    if truth_path:
        truth = load_truth(truth_path)
        for path in object_paths:
            table = pd.read_parquet(path, columns=[*KEY, "RA", "DEC"])
            lenses = match_truth(truth, table, match_radius_arcsec, truth_path)
            ra.append(table["RA"].to_numpy(np.float64)[lenses.index])
            dec.append(table["DEC"].to_numpy(np.float64)[lenses.index])
    return (np.concatenate(ra) if ra else np.zeros(0)), (np.concatenate(dec) if dec else np.zeros(0))


def select_deflectors(table: pd.DataFrame, cuts, half_width_arcsec: float, avoid_ra=(), avoid_dec=(),
                      exclude_keys=(), labelled=None, labelled_reason="cutout_holds_training_lens"):
    """The rows of ``table`` passing the deflector cuts, in order, sorted by key, and how many
    each cut removed (``find_deflectors`` says what each means; ``exclude_keys`` may be
    tuples or sorted packed keys)."""
    t = table
    g_r = t["MAG_G_DERED"].astype(np.float64) - t["MAG_R_DERED"].astype(np.float64)
    psf_ok = np.ones(len(t), dtype=bool)
    for b in "GRZ":
        for c in ("PSFSIZE", "PSFDEPTH", "MW_TRANSMISSION"):
            v = t[f"{c}_{b}"].astype(np.float64).to_numpy()
            psf_ok &= np.isfinite(v) & (v > 0)
    frac = [t[c].to_numpy() for c in (f"FRAC_MISSING_{b.upper()}" for b in BANDS) if c in t]
    missing = np.max(frac, axis=0) if frac else np.zeros(len(t))
    exclude = exclude_keys if isinstance(exclude_keys, np.ndarray) else _packed(exclude_keys)
    excluded = np.isin(pack_keys(*(t[k] for k in KEY)), exclude) if len(exclude) and len(t) else \
        np.zeros(len(t), dtype=bool)
    ra, dec = t["RA"].to_numpy(np.float64), t["DEC"].to_numpy(np.float64)
    none = np.zeros(len(t), dtype=bool)
    a_ra, a_dec = np.asarray(avoid_ra, np.float64), np.asarray(avoid_dec, np.float64)
    if not len(a_ra) or not len(t):
        near = none
    elif cuts.exclude_radius_arcsec is None:
        near = within_square(ra, dec, a_ra, a_dec, half_width_arcsec)
    else:
        near = within(ra, dec, a_ra, a_dec, cuts.exclude_radius_arcsec)
    holds = none
    if labelled is not None and len(labelled[0]) and len(t):
        holds = within_square(ra, dec, np.asarray(labelled[0], np.float64), np.asarray(labelled[1], np.float64),
                              half_width_arcsec)
    masks = {
        "type": t["TYPE"].astype(str).str.strip().isin(cuts.types).to_numpy(),
        "zmag": np.nan_to_num(t["MAG_Z"].to_numpy(np.float64), nan=np.inf) < cuts.zmag_max,
        "colour": (np.nan_to_num(g_r.to_numpy(), nan=-np.inf) >= cuts.g_r_min) if cuts.g_r_min is not None
        else ~none,
        "psf_depth": psf_ok,
        "missing_pixels": missing <= cuts.max_missing,
        "near_known_lens": ~near,
        "in_training_set": ~excluded,
        labelled_reason: ~holds,
    }
    keep = np.ones(len(t), dtype=bool)
    counts = {"candidates_with_cutout": int(len(t))}
    for name, m in masks.items():
        counts[name] = int((keep & ~m).sum())
        keep &= m
    counts["deflectors"] = int(keep.sum())
    return t[keep].sort_values(list(KEY)).reset_index(drop=True), counts
