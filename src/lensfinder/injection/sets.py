"""Sets of injected lenses: the selection function's grid (rule ``inject``, and ``sealed_inject``
on the sealed survey), and the injected
positives of the training set (``training_injections``, added by ``lensfinder.trainset.injections``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardSet, ShardWriter
from lensfinder.display import save_mosaic
from lensfinder.files import atomic_path
from lensfinder.injection.arcs import inject
from lensfinder.injection.config import INJECTION_RELEASE, InjectionConfig, LensParams, draw_params
from lensfinder.injection.deflectors import find_deflectors
from lensfinder.plots import save_note

log = logging.getLogger(__name__)


STREAM_SELECTION, STREAM_TRAINING = 1, 2  # random streams of the two injection sets


def grid_plan(cfg: InjectionConfig, rng):
    """(theta_E, source magnitude, theta bin, magnitude bin) of every selection-function
    injection: ``n_per_bin`` per cell, each uniform within its cell."""
    g = cfg.grid
    rows = []
    for i, (t_lo, t_hi) in enumerate(zip(g.theta_e_bins[:-1], g.theta_e_bins[1:])):
        for j, (m_lo, m_hi) in enumerate(zip(g.source_mag_bins[:-1], g.source_mag_bins[1:])):
            for _ in range(g.n_per_bin):
                rows.append((float(rng.uniform(t_lo, t_hi)), float(rng.uniform(m_lo, m_hi)), i, j))
    return rows


def _assign(n: int, pool: int, rng) -> np.ndarray:
    """Deflector indices for n injections from a pool: each used as evenly as possible
    (whole random permutations of the pool), in random order."""
    if n == 0 or pool == 0:
        return np.zeros(0, dtype=np.int64)
    cycles = -(-n // pool)
    order = np.concatenate([rng.permutation(pool) for _ in range(cycles)])[:n]
    return order[rng.permutation(n)]


def _index_row(injection_id, deflector, params: LensParams, info, extra=None) -> dict:
    row = {"RELEASE": INJECTION_RELEASE, "BRICKID": 0, "OBJID": int(injection_id), "INJECTION_ID": int(injection_id),
           "DEFLECTOR_RELEASE": int(deflector["RELEASE"]), "DEFLECTOR_BRICKID": int(deflector["BRICKID"]),
           "DEFLECTOR_OBJID": int(deflector["OBJID"])}
    for c in ("RA", "DEC", "MAG_G", "MAG_R", "MAG_Z", "CENTER_DX", "CENTER_DY",
              *(f"PSFSIZE_{b}" for b in "GRZ"), *(f"PSFDEPTH_{b}" for b in "GRZ")):
        row[c] = float(deflector[c])
    for c in ("TYPE", "REGION", "ZEXP_BIN", "SWEEP"):
        row[c] = str(deflector[c]).strip()
    return {**row, **(extra or {}), **params.columns(), **info}


def write_injection_set(object_paths, manifests, labels_path, catalog_specs, cfg: InjectionConfig, out_dir,
                        truth_path=None, progress=True) -> dict:
    """The selection function's injections as a shard set in ``out_dir``.

    Deflectors pass ``cfg.deflectors`` and are disjoint from the training set (both splits:
    every key in ``labels_path``; no deflector's cutout holds a training lens; ``None``: a
    survey no network trained on, such as the sealed one). The grid
    (``cfg.grid``) sets theta_E and the source magnitude; the other parameters come from
    the priors. Index rows carry the injection's key (RELEASE 0, BRICKID 0, OBJID =
    INJECTION_ID: a deflector may carry several injections), the deflector's key
    (DEFLECTOR_*), the parameters, MAGNIFICATION, source and arc fluxes and arc S/N.
    Writes ``manifest.json`` (with the counts), ``summary.json`` and ``injections.png``.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    labels = (pd.read_parquet(labels_path) if labels_path is not None
              else pd.DataFrame({c: pd.Series(dtype="int64" if c in (*KEY, "LABEL") else "float64")
                                 for c in (*KEY, "LABEL", "RA", "DEC")}))
    lenses = labels[labels["LABEL"] == 1]
    found = find_deflectors(object_paths, manifests, cfg.deflectors, catalog_specs, truth_path,
                            zip(*(labels[k].astype(np.int64) for k in KEY)),
                            (lenses["RA"].to_numpy(), lenses["DEC"].to_numpy()), progress=progress)
    deflectors, counts, pixscale = found.table, found.counts, found.pixscale
    rng = np.random.default_rng([cfg.seed, STREAM_SELECTION])
    plan = grid_plan(cfg, rng)
    warning = None
    if deflectors.empty:  # a small area: an empty set, said loudly, rather than a failed run
        warning = (f"no object passes the deflector cuts (injection.deflectors) outside the training set: {counts}; "
                   "the selection function is empty: loosen the cuts (types, zmag_max, g_r_min, max_missing)")
        log.warning(warning)
        plan = []
    which = _assign(len(plan), len(deflectors), rng)
    cutouts = found.cutouts(which)
    writer = ShardWriter(out_dir, found.shape[-1], found.release, cfg.shard_rows, source="injection")
    for inj_id, ((theta, mag, ti, mj), d) in enumerate(tqdm(list(zip(plan, which)), desc="inject", unit="lens",
                                                            disable=not progress, mininterval=10)):
        deflector = deflectors.iloc[int(d)]
        stream = np.random.default_rng([cfg.seed, STREAM_SELECTION, inj_id])
        params = draw_params(stream, cfg, theta_e=theta, source_mag=mag)
        image, info = inject(cutouts[int(d)].astype(np.float32), deflector, params, cfg, stream, pixscale)
        writer.add(image, _index_row(inj_id, deflector, params, info, {"THETA_E_BIN": ti, "MAG_BIN": mj}))
    reuse = np.bincount(which, minlength=len(deflectors))
    summary = {"injections": len(plan), "deflector_cuts": counts, "deflectors_used": int((reuse > 0).sum()),
               "injections_per_deflector": {"min": int(reuse.min()) if len(reuse) else 0,
                                            "max": int(reuse.max()) if len(reuse) else 0},
               "pixscale_arcsec": pixscale, "warning": warning, "config": cfg.as_dict()}
    writer.close(len(plan), extra={"injection": {"seed": cfg.seed, "stream": STREAM_SELECTION,
                                                 "key": "RELEASE 0, BRICKID 0, OBJID = INJECTION_ID",
                                                 "deflectors_used": summary["deflectors_used"]}})
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))
    _example_mosaic(out_dir, cfg)
    log.info("%d injections on %d deflectors (%s)", len(plan), summary["deflectors_used"], counts)
    return summary


def _example_mosaic(out_dir: Path, cfg: InjectionConfig):
    """injections.png: a spread of injections over the grid, smallest theta_E first."""
    shards = ShardSet(out_dir / "manifest.json")
    index = shards.index
    n = min(cfg.mosaic, len(index))
    images = labels = None
    if n:
        spread = np.linspace(0, len(index) - 1, n).round().astype(int)
        rows = index.iloc[spread].sort_values(["THETA_E", "SOURCE_MAG_G"])
        images = np.stack([np.asarray(shards[i], dtype=np.float32) for i in rows.index])
        labels = [f"#{r.INJECTION_ID} tE={r.THETA_E:.2f}\" g={r.SOURCE_MAG_G:.1f}\nmu={r.MAGNIFICATION:.1f} "
                  f"S/N={r.ARC_SNR:.0f}" for r in rows.itertuples()]
    if images is None:
        save_note(out_dir / "injections.png", "no injection (no deflector passed the cuts)")
    else:
        save_mosaic(images, out_dir / "injections.png", labels)


def training_injections(table: pd.DataFrame, object_paths, manifests, n: int,
                        injection: dict | InjectionConfig | None, catalog_specs=(), truth_path=None, seed_offset=0):
    """Injected positives for the training split (``trainset.injections``).

    ``table``: the training set's rows so far (both splits). Deflectors pass the deflector
    cuts, are none of ``table``'s objects, and no validation row lies inside their cutout.
    Each deflector carries one injection drawn from the priors (own random stream), so the
    rows keep the deflector's key, unique in the labels, and the evaluation's never-seen
    objects leave these deflectors out. Returns (rows: a frame with the table's columns
    plus SOURCE='injection', INJECTION_ID and the parameters; {key: fp16 image}).
    Fewer deflectors than ``n`` is a warning, never a silent shortfall.
    """
    cfg = injection if isinstance(injection, InjectionConfig) else InjectionConfig.from_dict(injection)
    val = table[table["SPLIT"] == "val"]
    found = find_deflectors(object_paths, manifests, cfg.deflectors, catalog_specs, truth_path,
                            zip(*(table[k].astype(np.int64) for k in KEY)), (val["RA"].to_numpy(), val["DEC"].to_numpy()),
                            "cutout_holds_validation_object")
    deflectors, counts, pixscale = found.table, found.counts, found.pixscale
    rng = np.random.default_rng([cfg.seed, STREAM_TRAINING, seed_offset])
    take = rng.permutation(len(deflectors))[:n]
    if len(take) < n:
        log.warning("trainset.injections: %d asked for, %d deflectors available (%s)", n, len(take), counts)
    rows, images = [], {}
    cutouts = found.cutouts(take)
    for inj_id, d in enumerate(take):
        deflector = deflectors.iloc[int(d)]
        stream = np.random.default_rng([cfg.seed, STREAM_TRAINING, seed_offset, inj_id])
        params = draw_params(stream, cfg)
        key = tuple(int(deflector[k]) for k in KEY)
        image, info = inject(cutouts[int(d)].astype(np.float32), deflector, params, cfg, stream, pixscale)
        images[key] = image.astype(np.float16)
        rows.append({**{c: deflector[c] for c in deflector.index}, **{k: key[i] for i, k in enumerate(KEY)},
                     "KEY": key, "INJECTION_ID": inj_id, "SOURCE": "injection", **params.columns(), **info})
    frame = pd.DataFrame(rows)
    frame.attrs["deflector_cuts"] = counts
    return frame, images
