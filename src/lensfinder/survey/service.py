"""Client of the Legacy Surveys viewer's FITS cutout service, for short lists of objects.

``GET {base_url}/cutout.fits?ra=&dec=&layer=&pixscale=0.262&bands=grz&size=`` returns a
primary-HDU float32 cube (nbands, size, size) in nanomaggies, planes in the requested band
order, on a TAN grid centred exactly on (ra, dec) with CD1_1 < 0 (East left) and
CD2_2 > 0 (North up). That is the brick backend's layout (row 0 = South), recentred.

Results are cached on disk (one FILE per request, under a directory named by the service
URL and layer, stored only once it parsed as a cutout of the requested shape, so a bad
answer is never cached; a cached file that no longer parses is removed and fetched
again). Requests run with bounded concurrency and are retried with exponential backoff on
every transport error (refused or reset connections, timeouts, a truncated or unparsable
answer), HTTP 429 and 5xx, waiting at least what a ``Retry-After`` header asks, all within
an overall deadline per cutout (``deadline_s``); then a LensfinderError names the URL, the
attempts and the last error. Use the brick backend for bulk work: the service is for known
lenses outside a local mirror.
"""

from __future__ import annotations

import hashlib
import http.client
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
                 max_workers=4, retries=4, backoff_s=1.0, timeout_s=60.0, deadline_s=300.0):
        self.base_url = base_url.rstrip("/")
        self.layer, self.bands, self.pixscale = layer, bands, pixscale
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_workers, self.retries, self.backoff_s, self.timeout_s = max_workers, retries, backoff_s, timeout_s
        self.deadline_s = deadline_s  # seconds for one cutout, all its attempts and waits together

    def url(self, ra: float, dec: float, size: int) -> str:
        query = urllib.parse.urlencode({"ra": f"{ra:.7f}", "dec": f"{dec:.7f}", "layer": self.layer,
                                        "pixscale": self.pixscale, "bands": self.bands, "size": size})
        return f"{self.base_url}/cutout.fits?{query}"

    def _cache_path(self, ra, dec, size):
        if self.cache_dir is None:
            return None
        # another service (a mirror, a changed service_url) never shares a cached cutout
        server = hashlib.sha256(self.base_url.encode()).hexdigest()[:12]
        return self.cache_dir / f"{server}-{self.layer}" / f"{ra:.7f}_{dec:+.7f}_{size}_{self.bands}_{self.pixscale}.fits"

    def _download(self, ra: float, dec: float, size: int) -> tuple[bytes, np.ndarray]:
        """The answer and its parsed cube, retried (module docstring) until both are good."""
        url = self.url(ra, dec, size)
        start = time.monotonic()
        last, attempts = None, 0
        for attempt in range(self.retries + 1):
            attempts += 1
            wait = self.backoff_s * 2**attempt
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    data = resp.read()
                return data, self._parse(data, ra, dec, size)
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code} {err.reason}"
                if err.code not in RETRY_STATUS:
                    break
                wait = max(wait, _retry_after(err.headers.get("Retry-After")))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                # refused, reset or timed-out connections; IncompleteRead (a truncated answer)
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            except LensfinderError as err:  # an answer that is not a cutout (truncated FITS, wrong shape)
                last = str(err)
            if attempt == self.retries:
                break
            if time.monotonic() - start + wait > self.deadline_s:
                last += f"; the next try would pass the {self.deadline_s:g} s deadline"
                break
            time.sleep(wait)
        raise LensfinderError(
            f"cutout service request {url} failed after {attempts} attempt(s) in {time.monotonic() - start:.0f} s: "
            f"{last}; check the service URL and your network, or use the brick backend on a local mirror"
        )

    def fetch(self, ra: float, dec: float, size: int = 101) -> np.ndarray:
        """The (3, size, size) float32 cutout in nanomaggies, bands in ``self.bands`` order."""
        cache = self._cache_path(ra, dec, size)
        if cache is not None and cache.exists():
            try:
                return self._parse(cache.read_bytes(), ra, dec, size)
            except LensfinderError:
                cache.unlink(missing_ok=True)  # corrupt on disk: evicted, fetched again
        data, cube = self._download(ra, dec, size)  # a bad answer raises, and is never cached
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


def _retry_after(value) -> float:
    """Seconds a ``Retry-After`` header asks for (a number of seconds or an HTTP date); 0 if none."""
    if not value:
        return 0.0
    try:
        return max(float(value), 0.0)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return 0.0


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
