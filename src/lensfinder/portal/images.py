"""PNG views of a candidate, rendered from the run's own cutouts, cached in memory.

Views (all North up, East left: the arrays' row 0 is South, so rows are flipped for the PNG):

* ``rgb``: the Legacy Surveys RGB rendering (``lensfinder.display.sdss_rgb``) of the shard
  cutout (g, r, z in nanomaggies);
* ``g``, ``r``, ``z``: one band in grey, each with its own stretch: arcsinh of the flux
  above the sky level (median), softened at 3 sigma of the sky noise (1.4826 x MAD) and
  saturating at the band's 99.8th percentile, so faint arcs show in every band;
* ``context``: a 201-px (53") RGB view around the candidate, cut from the survey tree's
  coadd bricks (``lensfinder.cutouts.extract.CutoutExtractor``) or, when configured, fetched from
  the Legacy Surveys cutout service; a grey frame marks the shard cutout's extent.

Images are only ever rendered from the run's shard sets (``<run>/cutouts/*/manifest.json``,
which must resolve inside the run directory) and the configured survey tree or service;
no path from a request reaches the file system. Rendered PNGs are kept in an LRU cache.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from lensfinder.cutouts.shards import ShardCollection
from lensfinder.display import sdss_rgb
from lensfinder.errors import LensfinderError

VIEWS = ("rgb", "g", "r", "z", "context")
CONTEXT_SIZE = 201  # pixels of 0.262": 53"


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) or (H, W, 3) uint8 array (row 0 = top of the image)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def rgb_pixels(cutout) -> np.ndarray:
    """uint8 (H, W, 3) Legacy Surveys RGB, North up (top row = North), East left."""
    rgb = sdss_rgb(np.asarray(cutout, dtype=np.float32))
    return np.ascontiguousarray((np.flipud(rgb) * 255 + 0.5).astype(np.uint8))


def band_pixels(image) -> np.ndarray:
    """uint8 (H, W) grey view of one band with its own arcsinh stretch (see module doc)."""
    x = np.asarray(image, dtype=np.float64)
    sky = float(np.median(x))
    sigma = 1.4826 * float(np.median(np.abs(x - sky)))
    soft = 3.0 * sigma if sigma > 0 else max(float(np.std(x)), 1e-6)
    top = max(float(np.percentile(x, 99.8)) - sky, 10 * soft)
    y = np.arcsinh(np.maximum(x - sky, 0.0) / soft) / np.arcsinh(top / soft)
    return np.ascontiguousarray((np.flipud(np.clip(y, 0, 1)) * 255 + 0.5).astype(np.uint8))


def frame_box(pixels: np.ndarray, inner: int, value=(128, 128, 128)) -> np.ndarray:
    """Draw a 1-px frame of an ``inner``-px square centred on the (H, W, 3) image."""
    h, w = pixels.shape[:2]
    y0, x0 = (h - inner) // 2, (w - inner) // 2
    y1, x1 = y0 + inner - 1, x0 + inner - 1
    if y0 <= 0 or x0 <= 0:
        return pixels
    pixels[[y0, y1], x0 : x1 + 1] = value
    pixels[y0 : y1 + 1, [x0, x1]] = value
    return pixels


def run_manifests(run_dir) -> list[Path]:
    """The run's shard manifests; each must resolve inside the run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LensfinderError(f"run directory {run_dir} does not exist: give --run results/<run>")
    root = run_dir.resolve()
    manifests = sorted(run_dir.glob("cutouts/*/manifest.json"))
    if not manifests:
        raise LensfinderError(f"run directory {run_dir} has no cutouts/*/manifest.json: run the cutouts rule first, "
                              "or give the right --run")
    for m in manifests:
        if not m.resolve().is_relative_to(root):
            raise LensfinderError(f"shard manifest {m} points outside the run directory {root}: refusing to serve it")
    return manifests


class LRU:
    """A thread-safe least-recently-used cache of bytes."""

    def __init__(self, maxsize: int):
        self.maxsize, self._data, self._lock = maxsize, OrderedDict(), threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key, value):
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


class ImageSource:
    """Renders the views of candidates from a run's shards and a context backend."""

    def __init__(self, run_dir, tree=None, service=None, cache_size: int = 4096):
        """``tree``: a SurveyTree, or SurveyTrees when the run reads several regions (the
        context view then comes from the tree of the position's photometric region)."""
        self.run_dir = Path(run_dir)
        self.shards = ShardCollection(run_manifests(run_dir))
        self.tree, self.service = tree, service
        self._extractors = {}
        self._extract_lock = threading.Lock()  # fitsio handles are not shared across threads
        self.cache = LRU(cache_size)

    @property
    def has_context(self) -> bool:
        return self.service is not None or (self.tree is not None and self.tree.root.is_dir())

    def png(self, key, view: str, ra: float, dec: float) -> bytes:
        """The PNG of one view of object ``key`` at (ra, dec) [deg]; KeyError if it has none."""
        if view not in VIEWS:
            raise ValueError(f"view {view!r} is not one of {', '.join(VIEWS)}")
        cache_key = (tuple(int(v) for v in key), view)
        data = self.cache.get(cache_key)
        if data is None:
            data = encode_png(self._render(cache_key[0], view, ra, dec))
            self.cache.put(cache_key, data)
        return data

    def _render(self, key, view, ra, dec) -> np.ndarray:
        if view == "context":
            cube = self._context(ra, dec)
            inner = self.shards.shape[-1] if self.shards.shape else 101
            return frame_box(rgb_pixels(cube), inner)
        if key not in self.shards:
            raise KeyError(f"object {key} has no cutout in the shards of {self.run_dir}")
        cutout = self.shards.get(key).astype(np.float32)
        if view == "rgb":
            return rgb_pixels(cutout)
        return band_pixels(cutout["grz".index(view)])

    def _context(self, ra, dec) -> np.ndarray:
        if self.service is not None:
            return self.service.fetch(ra, dec, CONTEXT_SIZE)
        if self.tree is None:
            raise KeyError("no context view: the survey tree is unknown (give --config) and no --service-url is set")
        from lensfinder.cutouts.extract import CutoutExtractor
        from lensfinder.survey.positions import photometric_region
        from lensfinder.survey.tree import SurveyTrees

        tree = self.tree
        if isinstance(tree, SurveyTrees):
            tree = tree.tree(str(photometric_region(ra, dec)) if tree.multi_region else None)
        with self._extract_lock:
            if tree.region not in self._extractors:
                self._extractors[tree.region] = CutoutExtractor(tree, size=CONTEXT_SIZE, max_missing=1.0)
            extractor = self._extractors[tree.region]
            brick = extractor.grid.lookup(ra, dec)["BRICKNAME"]
            brick = brick[0] if np.ndim(brick) else brick
            brick = brick.decode() if isinstance(brick, bytes) else str(brick)
            cube, info = extractor.cutout(ra, dec, brick)
        if cube is None:
            raise KeyError(f"no context view at ({ra:.5f}, {dec:.5f}): {info} in the survey tree {tree.root}")
        return cube
