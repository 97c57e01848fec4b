"""Arcs: a simulated strong lens painted onto a real survey cutout (``inject``).

A *deflector* is a real selected object with a cutout (default: DEV, SER or REX, z < 19.5,
dereddened g - r >= 1.0: red, bright early-type-like galaxies). Its cutout receives the
light of a Sersic source lensed by a singular isothermal ellipsoid (SIE) plus external
shear, centred on the object's true position (the cutout's centre pixel plus
``CENTER_DX``, ``CENTER_DY``). The parameters are drawn from configurable priors
(``InjectionConfig.priors``), or on a grid of Einstein radius and source magnitude for the
selection function.

Units and conventions:

* fluxes in nanomaggies (AB, m = 22.5 - 2.5 log10 f); angles in arcsec; bands g, r, z;
* the source magnitude is the g-band AB magnitude of the *unlensed* source before Galactic
  extinction; r and z follow from its g - r and r - z colours, and the fluxes painted in
  are multiplied by the deflector's ``MW_TRANSMISSION_{G,R,Z}`` (observed fluxes, as the
  coadds hold);
* cutout orientation as the coadds: array row 0 is the South edge, +x is toward
  decreasing RA (East is left, North up when shown with origin='lower'). Lens-model
  offsets are (East, North) in arcsec, so pixel (x, y) lies at East = -(x - x0) * 0.262",
  North = (y - y0) * 0.262" from the deflector at (x0, y0);
* ellipticities follow lenstronomy: e = (1 - q) / (1 + q), (e1, e2) = e (cos 2 phi,
  sin 2 phi), phi measured from East toward North (PHI columns, degrees); the same for the
  shear (gamma1, gamma2).

Rendering (``lensed_unit_image``): the lensed surface brightness of a source of unit
intrinsic flux is ray-traced through the lens with lenstronomy (the physics of the mock's
lenses, ``lensfinder.mock.light.lensed_shape``) at ``oversample`` x ``oversample`` points per
pixel, averaged to pixels, over the part of the cutout the light can reach. The source is
normalised by its analytic total flux (``LightModel.total_flux``), not on a finite grid,
so any Sersic index is exact; the pixel sum is the total magnification. Each band is then
scaled to the source's flux and convolved with the Moffat PSF of the object's own
``PSFSIZE_{G,R,Z}`` (FWHM, arcsec): the PSF the mock renders with (``lensfinder.mock.optics``).

Noise (``add_arc``): the cutout already holds the sky's noise; the arc adds its own photon
noise, by the mock's law. The per-pixel sky noise comes from the depth: ``PSFDEPTH`` is the
inverse variance of a point source's flux, the optimal point-source flux has variance
sigma_pix^2 * NEA with the Moffat PSF's noise-equivalent area NEA [pixels], so

    sigma_pix = 1 / sqrt(PSFDEPTH * NEA)                       [nanomaggy per pixel].

Treating that noise as the sky's photon noise, a sky of mu_sky mag/arcsec^2 (nominal DECam
22.04, 20.91, 18.46 in g, r, z; ``sky_mag_per_arcsec2``) holding S = 10^(-0.4 (mu_sky -
22.5)) * 0.262^2 nanomaggies per pixel sets the counts per nanomaggy, k = S / sigma_pix^2,
and an arc pixel of flux a has photon variance a / k = a * sigma_pix^2 / S (drawn as a
Gaussian: every pixel holds many photons). The arc's signal-to-noise per band is the
matched-filter value sqrt(sum_pixels a^2 / (sigma_pix^2 + a / k)) and ``ARC_SNR`` combines
the bands in quadrature; the deflector's light counts neither as signal nor as noise.

Pixels the arc does not reach keep their stored values bit for bit (nothing is added to
them), so a zero-flux source leaves the cutout unchanged.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np

from lensfinder.constants import BANDS, PIXSCALE
from lensfinder.errors import LensfinderError
from lensfinder.injection.config import InjectionConfig, LensParams
from lensfinder.mock.optics import convolve_psf, counts_per_nanomaggy, sky_sigma_per_pixel

__all__ = ["add_arc", "counts_per_nanomaggy", "deflector_centre", "inject", "lensed_unit_image", "sky_sigma_per_pixel"]

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _models():
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    return LensModel(["SIE", "SHEAR"]), LightModel(["SERSIC_ELLIPSE"])


def lensed_unit_image(params: LensParams, size: int, x0: float, y0: float, pixscale: float = PIXSCALE,
                      oversample: int = 4):
    """The lensed source of unit intrinsic flux on a size x size cutout grid.

    (x0, y0): the deflector's pixel position (0-based, row 0 = South). Returns (image,
    magnification): float64 flux per pixel (row = y) summing to the total magnification of
    the light that falls in the cutout, and that sum.
    """
    lens, light = _models()
    kw_lens, kw_source = params.lenstronomy_kwargs()
    total = float(light.total_flux(kw_source)[0])
    reach = params.image_reach() / pixscale + 1.0
    x_lo, x_hi = max(0, math.floor(x0 - reach)), min(size - 1, math.ceil(x0 + reach))
    y_lo, y_hi = max(0, math.floor(y0 - reach)), min(size - 1, math.ceil(y0 + reach))
    image = np.zeros((size, size))
    if x_hi < x_lo or y_hi < y_lo:
        return image, 0.0
    nx, ny, ov = x_hi - x_lo + 1, y_hi - y_lo + 1, oversample
    sub = (np.arange(ov) + 0.5) / ov - 0.5  # sub-pixel centres within a pixel
    xs = (np.arange(x_lo, x_hi + 1)[:, None] + sub).ravel()
    ys = (np.arange(y_lo, y_hi + 1)[:, None] + sub).ravel()
    east, north = np.meshgrid(-(xs - x0) * pixscale, (ys - y0) * pixscale)  # +x is West: East = -x
    bx, by = lens.ray_shooting(east.ravel(), north.ravel(), kw_lens)
    sb = light.surface_brightness(bx, by, kw_source).reshape(ny * ov, nx * ov) / total  # per arcsec^2
    stamp = sb.reshape(ny, ov, nx, ov).mean(axis=(1, 3)) * pixscale**2
    image[y_lo : y_hi + 1, x_lo : x_hi + 1] = stamp
    return image, float(stamp.sum())


def add_arc(cutout, unit_image, fluxes, psf_fwhm, psf_depth, sky_mag, rng=None, noise=True,
            pixscale: float = PIXSCALE):
    """Paint the arc onto a (3, H, W) nanomaggy cutout; returns (float32 image, info).

    ``unit_image``: (H, W) flux per pixel of a unit-flux source before the PSF (e.g.
    ``lensed_unit_image``); ``fluxes``, ``psf_fwhm`` [arcsec], ``psf_depth`` (PSFDEPTH) and
    ``sky_mag`` [mag/arcsec^2] per band g, r, z. Each band: scaled to its flux, blurred with
    its Moffat PSF, photon noise added (``noise``; ``rng`` a numpy Generator), and added
    only where the arc has light. Info: ARC_FLUX_b (noise-free flux added in the cutout),
    ARC_SNR_b, ARC_SNR (quadrature over bands) and SKY_SIGMA_b (nanomaggy per pixel).
    """
    out = np.array(cutout, dtype=np.float32, copy=True)
    info, snr2 = {}, 0.0
    for b, band in enumerate(BANDS):
        sigma_pix = sky_sigma_per_pixel(psf_depth[b], psf_fwhm[b], pixscale)
        if not (np.isfinite(sigma_pix) and sigma_pix > 0):
            raise LensfinderError(f"band {band}: PSFDEPTH {psf_depth[b]} and PSFSIZE {psf_fwhm[b]} give no sky noise: "
                                  "a deflector needs positive PSFSIZE and PSFDEPTH in every band")
        arc = convolve_psf(unit_image * float(fluxes[b]), psf_fwhm[b], pixscale)
        var_arc = np.maximum(arc, 0.0) / counts_per_nanomaggy(sky_mag[b], sigma_pix, pixscale)
        snr = float(np.sqrt(np.sum(arc**2 / (sigma_pix**2 + var_arc))))
        lit = arc != 0.0  # pixels the arc reaches; all others keep their bits
        added = arc[lit]
        if noise and lit.any():
            added = added + rng.standard_normal(added.shape) * np.sqrt(var_arc[lit])
        plane = out[b]
        plane[lit] = (plane[lit].astype(np.float64) + added).astype(np.float32)
        info[f"ARC_FLUX_{band.upper()}"] = float(arc.sum())
        info[f"ARC_SNR_{band.upper()}"] = snr
        info[f"SKY_SIGMA_{band.upper()}"] = float(sigma_pix)
        snr2 += snr**2
    info["ARC_SNR"] = float(np.sqrt(snr2))
    return out, info


def deflector_centre(row, size: int):
    """Pixel position (x, y) of the deflector in its cutout: the centre pixel plus the
    recorded offset of the true centre (CENTER_DX, CENTER_DY; 0 when absent)."""
    c = size // 2
    dx = float(row.get("CENTER_DX", 0.0) or 0.0)
    dy = float(row.get("CENTER_DY", 0.0) or 0.0)
    return c + dx, c + dy


def inject(cutout, row, params: LensParams, cfg: InjectionConfig, rng, pixscale: float = PIXSCALE):
    """One injection onto one deflector's cutout (3, S, S) in nanomaggies.

    ``row``: the deflector's objects/index row (CENTER_DX, CENTER_DY, MW_TRANSMISSION_*,
    PSFSIZE_*, PSFDEPTH_*). Returns (float32 image, info with MAGNIFICATION, the source's
    observed fluxes SOURCE_FLUX_b, arc fluxes and S/N).
    """
    size = cutout.shape[-1]
    x0, y0 = deflector_centre(row, size)
    unit, mu = lensed_unit_image(params, size, x0, y0, pixscale, cfg.oversample)
    trans = [float(row[f"MW_TRANSMISSION_{b.upper()}"]) for b in BANDS]
    fluxes = params.source_fluxes(trans)
    image, info = add_arc(cutout, unit, fluxes, [float(row[f"PSFSIZE_{b.upper()}"]) for b in BANDS],
                          [float(row[f"PSFDEPTH_{b.upper()}"]) for b in BANDS],
                          [cfg.sky_mag_per_arcsec2[b] for b in BANDS], rng, cfg.noise, pixscale)
    return image, {"MAGNIFICATION": mu, **{f"SOURCE_FLUX_{b.upper()}": float(f) for b, f in zip(BANDS, fluxes)},
                   **info}
