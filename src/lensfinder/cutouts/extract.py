"""Brick-grouped cutout extraction from the RICE-compressed coadds.

For each selected object, a (3, S, S) g, r, z cutout in nanomaggies (S = 101 by
default, or 151, 201) on the pixel grid of the object's own brick image, centred on the
pixel nearest the object (the true centre's offset is recorded, within +-0.5 px).
Objects are processed brick by brick: each image file is opened once, and each of its
compressed tiles (100 x 100 px) is decompressed once however many cutouts touch it (a
per-brick tile cache, dropped when the next brick begins). With ``workers`` > 1 the bricks
are shared among that many processes and the shards written in the same order, so the
output does not depend on the number of workers.

A section that runs past the brick image's edge (large cutouts, objects outside their
brick) is completed from the neighbouring bricks' coadds, found through the bricks table
and Lanczos-3 resampled onto the cutout's grid through each brick's own WCS. Pixels with
no data anywhere (no brick image covers them, exactly 0: no exposures, or NaN/inf) are 0
and counted as missing; values beyond the float16 range of the shards (|x| > 65504
nanomaggies, e.g. a saturated star's core) are clipped and the object flagged. A coadd that
cannot be read (truncated, corrupt) fails its objects with ``brick_file_unreadable``,
naming the file and band. With
``recentre`` the cutout is Lanczos-3 shifted so the object sits exactly on the centre
pixel, as the Legacy Surveys cutout service does.

Orientation: array row 0 is the South edge, +x toward decreasing RA (North up, East left
when shown with origin='lower'), the coadds' own orientation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from lensfinder.constants import BANDS, KEY, PIXSCALE, REGION_LABELS
from lensfinder.cutouts.shards import (
    FLAG_FROM_NEIGHBOURS,
    FLAG_MISSING_PIXELS,
    FLAG_NEIGHBOUR_UNREADABLE,
    FLAG_RECENTRED,
    FLAG_SATURATED,
    FP16_MAX,
    ShardWriter,
)
from lensfinder.errors import LensfinderError
from lensfinder.survey.bricks import BrickGrid
from lensfinder.survey.images import read_header_wcs
from lensfinder.survey.tree import SurveyTree
from lensfinder.workers import ordered_results

INDEX_COLUMNS = ("RELEASE", "BRICKID", "OBJID", "BRICKNAME", "RA", "DEC", "TYPE", "REGION", "ZEXP_BIN", "MAG_Z")


def lanczos3(x):
    """The Lanczos kernel with a = 3."""
    x = np.asarray(x, dtype=np.float64)
    out = np.sinc(x) * np.sinc(x / 3.0)
    return np.where(np.abs(x) < 3.0, out, 0.0)


def lanczos_sample(image, u, v):
    """Lanczos-3 interpolation of ``image`` at pixel positions (u = x, v = y), 0-based.

    Returns (values, valid): positions whose 6x6 footprint leaves the image are invalid.
    """
    h, w = image.shape
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    taps = np.arange(-2, 4)
    cols = iu[:, None] + taps  # (N, 6)
    rows = iv[:, None] + taps
    valid = (cols[:, 0] >= 0) & (cols[:, -1] < w) & (rows[:, 0] >= 0) & (rows[:, -1] < h)
    wx = lanczos3(u[:, None] - cols)
    wy = lanczos3(v[:, None] - rows)
    wx /= wx.sum(1, keepdims=True)
    wy /= wy.sum(1, keepdims=True)
    cc = np.clip(cols, 0, w - 1)
    rr = np.clip(rows, 0, h - 1)
    patch = image[rr[:, :, None], cc[:, None, :]]  # (N, 6, 6)
    values = np.einsum("nij,ni,nj->n", patch, wy, wx)
    return np.where(valid, values, 0.0), valid


def lanczos_shift(cube, dx, dy):
    """Shift images (..., H, W) so that the point at (cx + dx, cy + dy) moves to (cx, cy).

    Separable Lanczos-3; the result is 3 pixels smaller on each side.
    """
    taps = np.arange(-3, 4)
    wx = lanczos3(taps - dx)
    wy = lanczos3(taps - dy)
    wx, wy = wx / wx.sum(), wy / wy.sum()
    h, w = cube.shape[-2:]
    out = np.zeros(cube.shape[:-2] + (h - 6, w - 6), dtype=np.float64)
    tmp = np.zeros(cube.shape[:-2] + (h, w - 6), dtype=np.float64)
    for k, t in enumerate(taps):
        tmp += wx[k] * cube[..., :, 3 + t : w - 3 + t]
    for k, t in enumerate(taps):
        out += wy[k] * tmp[..., 3 + t : h - 3 + t, :]
    return out


class UnreadableCoadd(Exception):
    """A coadd file that cannot be opened or decompressed; ``detail`` names file and band."""

    def __init__(self, path, band, err):
        self.detail = f"{path} (band {band}): {type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
        super().__init__(self.detail)


def touched_tiles(ya, yb, xa, xb, tile):
    """(row, column) of the ``tile``-shaped (th, tw) tiles that pixels [ya:yb, xa:xb] (inside
    the image, yb > ya, xb > xa) overlap."""
    th, tw = tile
    return [(ty, tx) for ty in range(ya // th, (yb - 1) // th + 1) for tx in range(xa // tw, (xb - 1) // tw + 1)]


@dataclass
class BrickImages:
    """The g, r, z image HDUs of one brick, opened once, with its header WCS and size."""

    name: str
    paths: list

    def __post_init__(self):
        self.fits = []
        for band, p in zip(BANDS, self.paths):
            try:
                self.fits.append(fitsio.FITS(str(p)))
            except Exception as err:  # noqa: BLE001 - CFITSIO reports damage as OSError or others
                self.close()
                raise UnreadableCoadd(p, band, err) from err
        try:
            self.wcs, header = read_header_wcs(self.paths[0])
        except Exception as err:  # noqa: BLE001
            self.close()
            raise UnreadableCoadd(self.paths[0], BANDS[0], err) from err
        self.shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        # compressed images: their tile shape, so each tile is decompressed once (tile cache)
        self.tiles = [self._tile_shape(f) for f in self.fits]
        self._cache = [{} for _ in self.fits]
        self.tiles_read = 0

    @staticmethod
    def _tile_shape(f):
        hdu = f[1]
        if not hdu.is_compressed():
            return None
        h = hdu.read_header()
        return int(h.get("ZTILE2", 1)), int(h.get("ZTILE1", h.get("ZNAXIS1", 1)))

    def drop_tiles(self):
        """Forget the decompressed tiles (done with this brick)."""
        self._cache = [{} for _ in self.fits]

    def _pixels(self, b, ya, yb, xa, xb) -> np.ndarray:
        """Band b's pixels [ya:yb, xa:xb] (inside the image), from decompressed tiles."""
        tile = self.tiles[b]
        if tile is None:
            return self.fits[b][1][ya:yb, xa:xb]
        th, tw = tile
        h, w = self.shape
        out = np.empty((yb - ya, xb - xa), dtype=np.float32)
        cache = self._cache[b]
        for ty, tx in touched_tiles(ya, yb, xa, xb, tile):
            block = cache.get((ty, tx))
            if block is None:
                block = cache[(ty, tx)] = self.fits[b][1][ty * th : min((ty + 1) * th, h),
                                                          tx * tw : min((tx + 1) * tw, w)]
                self.tiles_read += 1
            y0, x0 = ty * th, tx * tw
            sy, sx = slice(max(ya, y0), min(yb, y0 + block.shape[0])), slice(max(xa, x0), min(xb, x0 + block.shape[1]))
            out[sy.start - ya : sy.stop - ya, sx.start - xa : sx.stop - xa] = block[sy.start - y0 : sy.stop - y0,
                                                                                    sx.start - x0 : sx.stop - x0]
        return out

    def section(self, x0, y0, n):
        """Pixels [y0:y0+n, x0:x0+n] of the three bands, clipped to the image; returns
        (cube (3, n, n) with zeros outside, inside mask (n, n))."""
        h, w = self.shape
        cube = np.zeros((3, n, n), dtype=np.float32)
        inside = np.zeros((n, n), dtype=bool)
        xa, xb, ya, yb = max(x0, 0), min(x0 + n, w), max(y0, 0), min(y0 + n, h)
        if xa >= xb or ya >= yb:
            return cube, inside
        for b in range(len(self.fits)):
            try:
                cube[b, ya - y0 : yb - y0, xa - x0 : xb - x0] = self._pixels(b, ya, yb, xa, xb)
            except Exception as err:  # noqa: BLE001 - a truncated file fails on its missing tiles
                raise UnreadableCoadd(self.paths[b], BANDS[b], err) from err
        inside[ya - y0 : yb - y0, xa - x0 : xb - x0] = True
        return cube, inside

    def close(self):
        for f in self.fits:
            f.close()


class CutoutExtractor:
    """Cut (3, size, size) cutouts out of a survey tree's coadds, brick by brick."""

    def __init__(self, tree: SurveyTree, size: int = 101, recentre: bool = False, max_missing: float = 0.5,
                 zero_is_missing: bool = True, cache_bricks: int = 16):
        if size % 2 != 1:
            raise LensfinderError(f"cutout size {size} must be odd so that the object has a centre pixel")
        self.tree, self.size, self.recentre, self.max_missing = tree, size, recentre, max_missing
        # legacypipe writes exactly 0 where a band has no exposure; noise-free simulations
        # have exact zeros on empty sky, so they turn this off.
        self.zero_is_missing = zero_is_missing
        self.grid = BrickGrid.build()
        self._open = lru_cache(maxsize=cache_bricks)(self._open_brick)
        self._seen: set = set()  # bricks read since the home brick changed

    def _open_brick(self, name: str):
        """The brick's images; None if a file is missing; an UnreadableCoadd (kept, so a
        damaged file is tried once) if one cannot be read."""
        paths = [self.tree.coadd_path(name, b) for b in BANDS]
        if not all(p.exists() for p in paths):
            return None
        try:
            return BrickImages(name, paths)
        except UnreadableCoadd as err:
            return err

    def brick(self, name):
        """The brick's images, or None where they are missing or unreadable."""
        images = self._open(name)
        return images if isinstance(images, BrickImages) else None

    def cutout(self, ra: float, dec: float, brickname: str):
        """One cutout: returns (cube float32 (3, S, S), info dict) or (None, reason); for an
        unreadable coadd the reason is ``brick_file_unreadable`` and ``self.last_detail``
        names the file and band. A cutout written although a neighbouring coadd it needed
        was unreadable carries ``FLAG_NEIGHBOUR_UNREADABLE`` and ``last_detail`` says which."""
        self.last_detail = ""
        try:
            return self._cutout(ra, dec, brickname)
        except UnreadableCoadd as err:
            self.last_detail = err.detail
            return None, "brick_file_unreadable"

    def _cutout(self, ra: float, dec: float, brickname: str):
        if brickname != getattr(self, "_home", None):  # objects come brick by brick: free the last one's tiles
            for name in self._seen:
                images = self._open(name)
                if isinstance(images, BrickImages):
                    images.drop_tiles()
            self._seen, self._home = set(), brickname
        self._seen.add(brickname)
        home = self._open(brickname)
        if isinstance(home, UnreadableCoadd):
            raise home
        if home is None:
            self.last_detail = next(f"{p} does not exist" for p in (self.tree.coadd_path(brickname, b) for b in BANDS)
                                    if not p.exists())
            return None, "brick_file_missing"
        pad = 3 if self.recentre else 0
        n = self.size + 2 * pad
        x, y = (float(v) for v in home.wcs.all_world2pix(ra, dec, 0))
        h, w = home.shape
        if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
            self.last_detail = f"pixel ({x:.1f}, {y:.1f}) is off the {w} x {h} image of brick {brickname}"
            return None, "off_image"
        xc, yc = int(round(x)), int(round(y))
        x0, y0 = xc - self.size // 2 - pad, yc - self.size // 2 - pad
        cube, have = home.section(x0, y0, n)
        flags, neighbour_note = 0, ""
        if not have.all():
            filled, unreadable = self._fill_from_neighbours(home, cube, have, x0, y0)
            if filled:
                flags |= FLAG_FROM_NEIGHBOURS
            if unreadable:
                flags |= FLAG_NEIGHBOUR_UNREADABLE
                neighbour_note = "neighbouring coadd unreadable, its pixels left missing: " + "; ".join(unreadable)
        dx, dy = x - xc, y - yc
        if self.recentre:
            cube = lanczos_shift(cube, dx, dy).astype(np.float32)
            have = have[pad:-pad, pad:-pad]
            flags |= FLAG_RECENTRED
            dx = dy = 0.0
        cube, more, frac_missing, detail = screen_cutout(cube, have, self.zero_is_missing, self.max_missing)
        if cube is None:
            self.last_detail = f"{detail}; {neighbour_note}" if neighbour_note else detail
            return None, "mostly_empty"
        self.last_detail = neighbour_note
        return cube, {"CENTER_DX": dx, "CENTER_DY": dy, "FLAGS": flags | more,
                      **{f"FRAC_MISSING_{b.upper()}": float(f) for b, f in zip(BANDS, frac_missing)}}

    def _fill_from_neighbours(self, home: BrickImages, cube, have, x0, y0) -> tuple[bool, list[str]]:
        """Resample the pixels outside the home image from the bricks that cover them.
        Returns (anything filled, the unreadable neighbours' details). A neighbour without
        files is no problem (the survey's edge: its pixels are missing and flagged so); one
        whose files exist but cannot be read is reported."""
        yy, xx = np.nonzero(~have)
        ra, dec = home.wcs.all_pix2world(xx + x0, yy + y0, 0)
        owners = self.grid.lookup(ra, dec)["BRICKNAME"]
        filled, unreadable = False, []
        for name in np.unique(owners):
            other = self._open(name.decode())
            self._seen.add(name.decode())
            if isinstance(other, UnreadableCoadd):
                unreadable.append(other.detail)
                continue
            if other is None or other.name == home.name:
                continue
            sel = owners == name
            u, v = other.wcs.all_world2pix(ra[sel], dec[sel], 0)
            lo_x, hi_x = int(math.floor(u.min())) - 3, int(math.ceil(u.max())) + 4
            lo_y, hi_y = int(math.floor(v.min())) - 3, int(math.ceil(v.max())) + 4
            try:
                block, block_have = other.section(lo_x, lo_y, max(hi_x - lo_x, hi_y - lo_y))
            except UnreadableCoadd as err:  # opens, but the tiles needed here do not decompress
                unreadable.append(err.detail)
                continue
            ok_any = False
            for b in range(3):
                vals, ok = lanczos_sample(block[b].astype(np.float64), u - lo_x, v - lo_y)
                inside = ok & block_have[np.clip(np.round(v - lo_y).astype(int), 0, block.shape[1] - 1),
                                         np.clip(np.round(u - lo_x).astype(int), 0, block.shape[2] - 1)]
                cube[b, yy[sel][inside], xx[sel][inside]] = vals[inside]
                ok_any = ok_any or inside.any()
                if b == 0:
                    have[yy[sel][inside], xx[sel][inside]] = True
            filled = filled or ok_any
        return filled, unreadable


_EXTRACTOR = None  # one per process: each worker opens its own files


def screen_cutout(cube: np.ndarray, have=None, zero_is_missing: bool = True, max_missing: float = 0.5):
    """The checks every cutout passes before it enters a shard or a training set, whatever
    served it (a coadd brick, the viewer's cutout service): NaN or infinite pixels, pixels
    outside the data (``have`` False) and, with ``zero_is_missing``, exact zeros are missing
    (set to 0, ``FLAG_MISSING_PIXELS``); values beyond float16's range are clipped
    (``FLAG_SATURATED``). Returns (cube or None when more than ``max_missing`` of a band is
    missing, flags, fraction missing per band g, r, z, detail of a rejection)."""
    cube = np.array(cube, dtype=np.float32)
    missing = ~np.isfinite(cube)
    if have is not None:
        missing |= np.broadcast_to(~have[None], cube.shape)
    if zero_is_missing:
        missing |= cube == 0.0
    frac_missing = missing.reshape(len(cube), -1).mean(1)
    cube[missing] = 0.0
    flags = FLAG_MISSING_PIXELS if missing.any() else 0
    if np.abs(cube).max(initial=0.0) > FP16_MAX:  # would become inf in the float16 shards
        cube = np.clip(cube, -FP16_MAX, FP16_MAX)
        flags |= FLAG_SATURATED
    if frac_missing.max(initial=0.0) > max_missing:
        worst = int(np.argmax(frac_missing))
        return None, flags, frac_missing, (f"band {BANDS[worst]}: {frac_missing[worst]:.0%} of the pixels have no "
                                           f"data (max_missing {max_missing:g})")
    return cube, flags, frac_missing, ""


def _init_worker(tree, size, recentre, max_missing, zero_is_missing):
    global _EXTRACTOR
    _EXTRACTOR = CutoutExtractor(tree, size, recentre, max_missing, zero_is_missing)


def _cut_brick(rows: pd.DataFrame) -> list:
    """Every object of one brick: (index record, cube or None, info or reason, detail)."""
    out = []
    for row in rows.itertuples(index=False):
        rec = {c: getattr(row, c) for c in INDEX_COLUMNS}
        for k in KEY:
            rec[k] = int(rec[k])
        cube, info = _EXTRACTOR.cutout(float(row.RA), float(row.DEC), str(row.BRICKNAME))
        # fp16 as the shards store it: half the bytes back to the writing process, same shards
        out.append((rec, None if cube is None else cube.astype(np.float16), info, _EXTRACTOR.last_detail))
    return out


def _write(results, writer: ShardWriter, bar):
    for brick in results:
        for rec, cube, info, detail in brick:
            if cube is None:
                writer.fail(rec, info, detail)
            else:
                writer.add(cube, {**rec, **info})
                if detail:
                    writer.note(rec, "neighbour_unreadable", detail)
        bar.update(len(brick))


def extract_sweep(objects_path, out_dir, tree: SurveyTree, size=101, recentre=False, max_missing=0.5,
                  max_rows=20000, zero_is_missing=True, progress=True, max_failed_fraction=1.0, workers=1) -> dict:
    """Cutout shards for one sweep's selected objects (``objects/<sweep>.parquet``).

    ``tree`` is the region tree that holds the sweep (in a north + south run, north
    objects are cut from the north coadds and south ones from the south coadds).
    Every object ends in a shard or in ``failures.parquet`` with its reason
    (brick_file_missing, brick_file_unreadable, off_image, mostly_empty) and detail; the
    manifest records the counts. ``workers`` processes share the bricks (the rule's
    threads); the shards are the same for any number. When more than ``max_failed_fraction`` of at least
    ``MIN_FAILED_FOR_CEILING`` objects fail, the job stops naming the likely cause (a wrong
    ``survey.root``, a missing coadd directory) and writes no manifest.
    """
    import pyarrow.parquet as pq
    from tqdm import tqdm

    objects = pq.read_table(objects_path).to_pandas()
    missing = [c for c in INDEX_COLUMNS if c not in objects.columns]
    if missing:
        raise LensfinderError(f"objects table {objects_path} lacks column(s) {missing}: re-run the select rule")
    other = sorted(set(objects["REGION"]) - {REGION_LABELS[tree.region]})
    if other:
        raise LensfinderError(f"objects table {objects_path} holds REGION {other}, but its cutouts would come from "
                              f"the {tree.region} tree {tree.region_dir}: re-run the select rule for this sweep")
    writer = ShardWriter(out_dir, size, tree.release, max_rows=max_rows)
    objects = objects.sort_values(["BRICKNAME", "OBJID"], kind="stable")  # one brick at a time
    bricks = [group for _, group in objects.groupby("BRICKNAME", sort=True, dropna=False)]
    settings = (tree, size, recentre, max_missing, zero_is_missing)
    bar = tqdm(total=len(objects), desc=f"cutouts {Path(objects_path).stem}", unit="obj", disable=not progress,
               mininterval=5)
    if workers > 1 and len(bricks) > 1:
        names = [f"brick {g['BRICKNAME'].iloc[0]}" for g in bricks]
        results = ordered_results(_cut_brick, [g[list(INDEX_COLUMNS)] for g in bricks], names,  # in brick order
                                  min(workers, len(bricks)), f"cutouts of {objects_path}", _init_worker, settings)
        _write(results, writer, bar)
    else:
        _init_worker(*settings)
        _write(map(_cut_brick, [g[list(INDEX_COLUMNS)] for g in bricks]), writer, bar)
    bar.close()
    check_failure_ceiling(writer.failures, len(objects), max_failed_fraction, tree, objects_path)
    return writer.close(len(objects), extra={"cutout": {"size": size, "recentre": recentre, "pixscale_arcsec": PIXSCALE}})


MIN_FAILED_FOR_CEILING = 10  # a handful of failures in a small sweep says nothing of the setup


def check_failure_ceiling(failures, n_selected, max_failed_fraction, tree: SurveyTree, objects_path):
    """Stop when most objects failed: that is a wrong setup, not bad objects."""
    n_failed = len(failures)
    if n_failed < MIN_FAILED_FOR_CEILING or n_failed <= max_failed_fraction * n_selected:
        return
    reasons = pd.Series([f["reason"] for f in failures]).value_counts().to_dict()
    coadd_dir = tree.region_dir / "coadd"
    if not coadd_dir.is_dir():
        cause = f"the coadd directory {coadd_dir} does not exist: check survey.root ({tree.root})"
    elif set(reasons) == {"brick_file_missing"}:
        cause = (f"no coadd of these bricks is in {coadd_dir}: check survey.root ({tree.root}) and that the "
                 "mirror holds this sweep's bricks")
    else:
        example = next((f["detail"] for f in failures if f.get("detail")), "")
        cause = f"check the coadds in {coadd_dir}" + (f" (e.g. {example})" if example else "")
    raise LensfinderError(
        f"cutouts of {objects_path}: {n_failed} of {n_selected} objects failed ({reasons}), more than "
        f"cutouts.max_failed_fraction = {max_failed_fraction:g}; {cause}; raise cutouts.max_failed_fraction "
        "to accept the failures")
