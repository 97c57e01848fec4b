"""Cutouts rendered straight from a drawn mock sky, without writing coadd bricks: the
sealed survey's cutouts (``lensfinder.sealed``) and the gallery's (``mock.gallery``).

The sealed survey needs about 100,000 scored nonlenses, and rendering the coadd bricks that
hold them would cost far more for pixels no cutout reads. Each stamp here is
rendered with the bricks' own code (``lensfinder.mock.light.render_bands``: the same
profiles, Moffat PSF and photon noise), the PSF of the brick the object lies in and the
exposures (NOBS) that cover each pixel, and every piece of light that reaches it
(neighbours, contaminant dressings, ghosts).

Orientation and units are the shards': (3, size, size) g, r, z nanomaggies, North up,
East left, row 0 South. As in a cutout from a coadd, the object sits within half a pixel
of the central pixel (a random sub-pixel offset), not on it.
"""

from __future__ import annotations

import math

import numpy as np

from lensfinder.constants import BANDS, PIXSCALE
from lensfinder.mock import optics
from lensfinder.mock.light import render_bands
from lensfinder.mock.sky import REGION_PSF_FWHM, MockSky

REACH_ARCSEC = 40.0  # light beyond the stamp edge that can still fall on it (as the bricks use)


class SkyIndex:
    """The sky's components sorted by Dec, for the pieces of light near a position."""

    def __init__(self, msky: MockSky):
        comps = msky.components()
        dec = np.array([c.dec for c in comps])
        order = np.argsort(dec, kind="stable")
        self.components = [comps[i] for i in order]
        self.ra = np.array([c.ra for c in self.components])
        self.dec = dec[order]

    def near(self, ra: float, dec: float, half_arcsec: float) -> list:
        """Components within ``half_arcsec`` [arcsec] of (ra, dec) [deg] in RA and in Dec."""
        half = half_arcsec / 3600.0
        lo, hi = np.searchsorted(self.dec, [dec - half, dec + half])
        dra = np.abs((self.ra[lo:hi] - ra + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec))
        return [self.components[lo + j] for j in np.flatnonzero(dra < half)]


def stamp_wcs(ra: float, dec: float, size: int, dx: float = 0.0, dy: float = 0.0):
    """TAN WCS of a ``size``-pixel stamp, 0.262"/px, North up and East left, with (ra, dec)
    [deg] at pixel (c + dx, c + dy), c the central pixel (0-based)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [size // 2 + 1 + dx, size // 2 + 1 + dy]
    w.wcs.cd = [[-PIXSCALE / 3600.0, 0.0], [0.0, PIXSCALE / 3600.0]]
    w.pixel_shape = (size, size)
    return w


def render_stamp(msky: MockSky, index: SkyIndex, ra: float, dec: float, brickid: int, size: int,
                 seed, noise: bool = True) -> tuple[np.ndarray, dict]:
    """(3, size, size) float32 nanomaggies around (ra, dec) [deg]: the light of every nearby
    component, convolved with the brick's PSF in each band, plus the sky noise of the
    exposures covering each pixel and the light's photon noise (as ``mock.write`` does);
    and the index columns a coadd cutout gets (CENTER_DX/DY [pixels], FLAGS,
    FRAC_MISSING_*). ``seed`` fixes the sub-pixel offset and the noise."""
    from lensfinder.mock.write import _pixel_sigma_1exp

    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(-0.5, 0.5, 2)
    wcs = stamp_wcs(ra, dec, size, dx, dy)
    # an object just outside the mock's bricks (a corner galaxy) gets its region's median seeing, as in its sweep row
    psf = msky.conditions[msky.primary][1].get(int(brickid), REGION_PSF_FWHM[msky.primary])
    fwhms = {b: psf[band] for b, band in enumerate(BANDS)}
    comps = index.near(ra, dec, size * PIXSCALE / 2 + REACH_ARCSEC)
    images = render_bands(comps, wcs, (size, size), fwhms, clip=True)  # light grazing the edge: only what reaches
    out = np.empty((3, size, size), np.float32)
    info = {"CENTER_DX": float(dx), "CENTER_DY": float(dy), "FLAGS": 0}
    for b, band in enumerate(BANDS):
        image = images[b]
        nobs = msky.nobs_map(band, wcs, (size, size))
        if noise:
            sigma = _pixel_sigma_1exp(band, fwhms[b], msky.primary) / np.sqrt(np.maximum(nobs, 1))
            var = sigma**2 + optics.photon_variance(image, optics.DECAM_SKY_MAG[band], sigma)
            image = image + rng.standard_normal((size, size), dtype=np.float32) * np.sqrt(var).astype(np.float32)
        image[nobs == 0] = 0.0  # no exposure: no data, as legacypipe writes
        out[b] = image
        info[f"FRAC_MISSING_{band.upper()}"] = float((nobs == 0).mean())
    return out, info
