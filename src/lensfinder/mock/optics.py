"""The point-spread function and the noise of the mock's coadds and of injected arcs.

One model serves both, so a mock lens and an injected one look alike to a network:

* **PSF**: a circular Moffat profile, I(r) ~ (1 + (r / alpha)^2)^-beta, with ``MOFFAT_BETA`` =
  3 and alpha set by the band's FWHM [arcsec]: alpha = FWHM / (2 sqrt(2^(1/beta) - 1)).
  Ground-based seeing has such power-law wings (Racine 1996; Trujillo et al. 2001 find
  beta about 2.5-4.5 for real stars); a Gaussian of the same FWHM holds 3.4x less light
  beyond 2 FWHM. The kernel is the profile integrated over pixels (5 x 5 samples per
  pixel), cut at ``KERNEL_RADIUS_FWHM`` FWHM (0.3% of the light lies beyond) and
  normalised to unit sum.
* **Depth**: a point source's optimal flux has variance sigma_pix^2 NEA, with the
  noise-equivalent area of the Moffat, NEA = pi alpha^2 (2 beta - 1) / (beta - 1)^2 pixels
  (it tends to a Gaussian's 4 pi sigma^2 as beta grows): PSFDEPTH = 1 / (sigma_pix^2 NEA).
* **Photon noise**: the per-pixel sky noise sigma_pix is the sky's own photon noise, so a
  sky of mu_sky mag/arcsec^2 holding S nanomaggies per pixel sets k = S / sigma_pix^2 counts
  per nanomaggy, and light of a nanomaggies in a pixel adds variance a / k (drawn as a
  Gaussian: every pixel holds many photons). The nominal DECam dark sky is
  ``DECAM_SKY_MAG`` (22.04, 20.91, 18.46 mag/arcsec^2 in g, r, z).

Units: FWHM and pixel scale in arcsec, fluxes in nanomaggies; kernels are (2R + 1)^2 arrays
centred on their middle pixel, rows = y.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from lensfinder.constants import PIXSCALE

MOFFAT_BETA = 3.0
KERNEL_RADIUS_FWHM = 4.0  # the kernel's half-width, in FWHM
DECAM_SKY_MAG = {"g": 22.04, "r": 20.91, "z": 18.46}  # nominal DECam dark sky [AB mag/arcsec^2]


def moffat_alpha(fwhm, beta: float = MOFFAT_BETA):
    """The Moffat core width alpha (same unit as ``fwhm``) that gives the FWHM."""
    return np.asarray(fwhm, dtype=np.float64) / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def noise_equivalent_area(fwhm, pixscale: float = PIXSCALE, beta: float = MOFFAT_BETA):
    """NEA [pixels] of the Moffat PSF of FWHM ``fwhm`` [arcsec]: 1 / sum(p^2) of the unit PSF."""
    alpha = moffat_alpha(fwhm, beta) / pixscale
    return math.pi * alpha**2 * (2 * beta - 1) / (beta - 1) ** 2


def sky_sigma_per_pixel(psf_depth, psf_fwhm, pixscale: float = PIXSCALE):
    """Per-pixel sky noise [nanomaggy] from the 5-sigma point-source depth as an inverse
    variance (PSFDEPTH, 1/nanomaggy^2) and the PSF FWHM [arcsec]: 1 / sqrt(PSFDEPTH NEA)."""
    return 1.0 / np.sqrt(np.asarray(psf_depth, dtype=np.float64) * noise_equivalent_area(psf_fwhm, pixscale))


def counts_per_nanomaggy(sky_mag_per_arcsec2, sky_sigma, pixscale: float = PIXSCALE):
    """Photon counts per nanomaggy, k = S / sigma_pix^2, with S the sky per pixel [nmgy]
    of a sky of ``sky_mag_per_arcsec2``: the scale at which the pixel noise is the sky's
    photon noise."""
    sky = 10 ** (-0.4 * (np.asarray(sky_mag_per_arcsec2, dtype=np.float64) - 22.5)) * pixscale**2
    return sky / np.asarray(sky_sigma, dtype=np.float64) ** 2


def photon_variance(light, sky_mag_per_arcsec2, sky_sigma, pixscale: float = PIXSCALE):
    """Variance [nmgy^2] that ``light`` [nmgy per pixel] adds by its own photons (a / k)."""
    return np.maximum(light, 0.0) / counts_per_nanomaggy(sky_mag_per_arcsec2, sky_sigma, pixscale)


def kernel_radius(fwhm, pixscale: float = PIXSCALE) -> int:
    """Half-width [pixels] of the PSF kernel of a band of FWHM ``fwhm`` [arcsec]."""
    return int(math.ceil(KERNEL_RADIUS_FWHM * fwhm / pixscale))


def psf_stamp(fwhm, pixscale: float = PIXSCALE, fx: float = 0.0, fy: float = 0.0, radius: int | None = None,
              beta: float = MOFFAT_BETA, oversample: int = 5) -> np.ndarray:
    """The pixel-integrated Moffat PSF of unit flux centred at (fx, fy) pixels from the
    middle pixel of a (2 radius + 1)^2 stamp (rows = y), cut at the stamp and normalised."""
    radius = kernel_radius(fwhm, pixscale) if radius is None else int(radius)
    alpha = float(moffat_alpha(fwhm, beta)) / pixscale
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    axis = (np.arange(-radius, radius + 1)[:, None] + sub).ravel()
    ux, uy = axis - fx, axis - fy
    r2 = ux[None, :] ** 2 + uy[:, None] ** 2
    n = 2 * radius + 1
    stamp = ((1.0 + r2 / alpha**2) ** -beta).reshape(n, oversample, n, oversample).mean(axis=(1, 3))
    return stamp / stamp.sum()


@lru_cache(maxsize=64)
def _kernel(fwhm: float, pixscale: float) -> np.ndarray:
    return psf_stamp(fwhm, pixscale)


def psf_kernel(fwhm, pixscale: float = PIXSCALE) -> np.ndarray:
    """The centred unit-sum PSF kernel of a band (cached by FWHM to 1e-4 arcsec)."""
    return _kernel(round(float(fwhm), 4), round(float(pixscale), 6))


def convolve_psf(image, fwhm, pixscale: float = PIXSCALE) -> np.ndarray:
    """``image`` (H, W) convolved with the band's PSF, same shape; light beyond the edges
    is lost. Pixels outside the lit pixels' bounding box grown by the kernel's radius stay
    exactly 0 (so adding the result leaves them untouched)."""
    from scipy.signal import fftconvolve

    image = np.asarray(image, dtype=np.float64)
    out = np.zeros_like(image)
    rows, cols = np.nonzero(image)
    if not len(rows):
        return out
    kernel = psf_kernel(fwhm, pixscale)
    r = kernel.shape[0] // 2
    y0, y1 = max(rows.min() - r, 0), min(rows.max() + r + 1, image.shape[0])
    x0, x1 = max(cols.min() - r, 0), min(cols.max() + r + 1, image.shape[1])
    out[y0:y1, x0:x1] = fftconvolve(image, kernel, mode="same")[y0:y1, x0:x1]
    return out
