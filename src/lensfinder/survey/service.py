"""Client of the Legacy Surveys viewer's FITS cutout service, for short lists of objects.

``GET {base_url}/cutout.fits?ra=&dec=&layer=&pixscale=0.262&bands=grz&size=`` returns a
primary-HDU float32 cube (nbands, size, size) in nanomaggies, planes in the requested band
order, on a TAN grid centred exactly on (ra, dec) with CD1_1 < 0 (East left) and
CD2_2 > 0 (North up). That is the brick backend's layout (row 0 = South), recentred.

Results are cached on disk (one FILE per request, stored only once it parsed as a cutout
of the requested shape, so a bad answer is never cached); requests run with bounded
concurrency and are retried with exponential backoff on network errors, HTTP 429 and
5xx; after the last retry a LensfinderError names the URL and the last error. Use the
brick backend for bulk work: the service is for known lenses outside a local mirror.
"""

from __future__ import annotations

import io
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lensfinder.constants import PIXSCALE
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path

DEFAULT_URL = "https://www.legacysurvey.org/viewer"
RETRY_STATUS = {429, 500, 502, 503, 504}


class CutoutService:
    def __init__(self, base_url=DEFAULT_URL, layer="ls-dr10", cache_dir=None, bands="grz", pixscale=PIXSCALE,
                 max_workers=4, retries=4, backoff_s=1.0, timeout_s=60.0):
        self.base_url = base_url.rstrip("/")
        self.layer, self.bands, self.pixscale = layer, bands, pixscale
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_workers, self.retries, self.backoff_s, self.timeout_s = max_workers, retries, backoff_s, timeout_s

    def url(self, ra: float, dec: float, size: int) -> str:
        query = urllib.parse.urlencode({"ra": f"{ra:.7f}", "dec": f"{dec:.7f}", "layer": self.layer,
                                        "pixscale": self.pixscale, "bands": self.bands, "size": size})
        return f"{self.base_url}/cutout.fits?{query}"

    def _cache_path(self, ra, dec, size):
        if self.cache_dir is None:
            return None
        return self.cache_dir / self.layer / f"{ra:.7f}_{dec:+.7f}_{size}_{self.bands}_{self.pixscale}.fits"

    def _download(self, url: str) -> bytes:
        last, attempts = None, 0
        for attempt in range(self.retries + 1):
            attempts += 1
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    return resp.read()
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code} {err.reason}"
                if err.code not in RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = str(getattr(err, "reason", err))
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise LensfinderError(
            f"cutout service request {url} failed after {attempts} attempt(s): {last}; "
            "check the service URL and your network, or use the brick backend on a local mirror"
        )

    def fetch(self, ra: float, dec: float, size: int = 101) -> np.ndarray:
        """The (3, size, size) float32 cutout in nanomaggies, bands in ``self.bands`` order."""
        cache = self._cache_path(ra, dec, size)
        if cache is not None and cache.exists():
            return self._parse(cache.read_bytes(), ra, dec, size)
        data = self._download(self.url(ra, dec, size))
        cube = self._parse(data, ra, dec, size)  # raises on a bad answer, which is then not cached
        if cache is not None:
            with atomic_path(cache) as tmp:
                tmp.write_bytes(data)
        return cube

    def _parse(self, data: bytes, ra, dec, size):
        from astropy.io import fits

        try:
            with fits.open(io.BytesIO(data)) as hdul:
                cube = np.asarray(hdul[0].data, dtype=np.float32)
        except Exception as err:  # noqa: BLE001 - any unparsable answer gets the same message
            raise LensfinderError(f"cutout service answer for {self.url(ra, dec, size)} is not a FITS cutout ({err})") from err
        if cube.ndim == 2:
            cube = cube[None]
        if cube.shape != (len(self.bands), size, size):
            raise LensfinderError(f"cutout service answer for {self.url(ra, dec, size)} has shape {cube.shape}")
        return cube

    def fetch_many(self, positions, size: int = 101) -> list:
        """Cutouts for [(ra, dec), ...] with at most ``max_workers`` requests in flight."""
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            return list(pool.map(lambda p: self.fetch(p[0], p[1], size), positions))


def service_fits_bytes(cube: np.ndarray, ra: float, dec: float, bands="grz", pixscale=PIXSCALE, version="DR10") -> bytes:
    """Encode a cube (nbands, H, W) the way the viewer's cutout.fits does (primary HDU, TAN WCS)."""
    from astropy.io import fits

    nb, h, w = cube.shape
    hdr = fits.Header()
    hdr["SURVEY"] = "LegacySurvey"
    hdr["VERSION"] = version
    hdr["IMAGETYP"] = "IMAGE"
    hdr["BANDS"] = bands
    for i, b in enumerate(bands):
        hdr[f"BAND{i}"] = b
    hdr.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec,
                "CRPIX1": (w + 1) / 2, "CRPIX2": (h + 1) / 2, "CD1_1": -pixscale / 3600, "CD1_2": 0.0,
                "CD2_1": 0.0, "CD2_2": pixscale / 3600, "IMAGEW": w, "IMAGEH": h})
    buf = io.BytesIO()
    fits.PrimaryHDU(cube.astype(np.float32), header=hdr).writeto(buf)
    return buf.getvalue()
