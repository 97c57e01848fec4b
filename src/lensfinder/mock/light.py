"""Light components and their rendering onto any TAN pixel grid (the mock's, and the injections'
PSF conventions).

A *component* is one piece of light at (ra, dec) [deg] with a flux per band in
nanomaggies (g, r, z) and a surface-brightness shape evaluated in local tangent-plane
offsets (dx = East, dy = North, arcsec). Galaxies, stars, lensed arcs, spiral arms and
rings are all components, so a coadd brick and a cutout grid are rendered by the same
code: ``render_bands(components, wcs, shape, psf_fwhms)`` (``render_image`` for one band).

Rendering: each component is sampled on an oversampled stamp of the target grid,
averaged to pixels, normalised to its flux (or, for lensed light, integrated as
absolute surface brightness), convolved with the band's Moffat PSF
(``lensfinder.mock.optics``: the same PSF as injected arcs get) and added; a point source
is the pixel-integrated PSF itself. Profiles are truncated at the stamp edge (about 6
half-light radii), as the Tractor's are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lensfinder.mock import optics

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
MAX_STAMP_HALF = 110  # pixels
CUSP_HALF = 4  # pixels around a profile's centre always sampled finely (clipped rendering)


def sersic_b(n):
    """b_n such that r_e encloses half the light (Ciotti & Bertin 1999 expansion)."""
    n = np.asarray(n, dtype=np.float64)
    return 2 * n - 1.0 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)


def ellipse_radius(dx, dy, e1, e2):
    """Elliptical radius [arcsec] for Tractor-style ellipticity (e1, e2).

    |e| = (1 - q) / (1 + q) with axis ratio q; the major axis lies at position angle
    phi = atan2(e2, e1) / 2, measured from North through East. r equals the semi-major
    axis on the ellipse.
    """
    e = np.hypot(e1, e2)
    q = (1 - e) / (1 + e)
    phi = 0.5 * np.arctan2(e2, e1)
    # coordinates along the major (u) and minor (v) axes
    u = dy * np.cos(phi) + dx * np.sin(phi)
    v = -dy * np.sin(phi) + dx * np.cos(phi)
    return np.sqrt(u**2 + (v / q) ** 2)


@dataclass
class Component:
    """One piece of light. ``flux``: nanomaggies in (g, r, z).

    ``shape(dx, dy)`` returns surface brightness in arbitrary units (normalised on the
    stamp) unless ``absolute`` is set, in which case it returns nanomaggies per arcsec^2
    per unit ``flux`` (lensed light, whose total depends on the magnification).
    """

    ra: float
    dec: float
    flux: np.ndarray
    shape: Callable | None  # None = point source
    extent: float = 0.0  # arcsec radius that holds the light
    absolute: bool = False
    oversample: int = 3
    tags: dict = field(default_factory=dict)
    # clipped rendering: each band stamp's flux normalisation, (band half, scale) -> sum, kept
    # from the first image it is computed for (see ``_add_clipped``)
    norms: dict = field(default_factory=dict, repr=False, compare=False)


def sersic_shape(r_e, n, e1=0.0, e2=0.0):
    b = float(sersic_b(n))

    def shape(dx, dy):
        r = ellipse_radius(dx, dy, e1, e2)
        return np.exp(-b * ((np.maximum(r, 1e-3) / r_e) ** (1.0 / n) - 1.0))

    return shape


def ring_shape(radius, width, e1=0.0, e2=0.0, clumps=0, phase=0.0):
    """A Gaussian ring of the given radius and width [arcsec]; optional clumpy modulation."""

    def shape(dx, dy):
        r = ellipse_radius(dx, dy, e1, e2)
        sb = np.exp(-0.5 * ((r - radius) / width) ** 2)
        if clumps:
            theta = np.arctan2(dy, dx)
            sb = sb * (1.0 + 0.6 * np.cos(clumps * theta + phase))
        return sb

    return shape


def spiral_shape(r_disc, pitch_deg, arms=2, e1=0.0, e2=0.0, phase=0.0):
    """Logarithmic spiral arms riding on an exponential disc of scale r_disc [arcsec]."""
    tan_pitch = np.tan(np.radians(pitch_deg))

    def shape(dx, dy):
        r = np.maximum(ellipse_radius(dx, dy, e1, e2), 1e-3)
        theta = np.arctan2(dy, dx)
        wave = np.cos(arms * (theta - np.log(r / r_disc) / tan_pitch) + phase)
        return np.exp(-r / r_disc) * np.maximum(wave, 0.0) ** 3 * (r > 0.5 * r_disc)

    return shape


def lensed_shape(theta_e, q_e1, q_e2, gamma1, gamma2, src_offset, src_r_e, src_n, src_e1, src_e2, knots=None):
    """Surface brightness of a source lensed by SIE + external shear (lenstronomy).

    The source is a Sersic disc (``src_r_e`` [arcsec], index ``src_n``, ellipticity) or, with
    ``knots`` (a list of (x, y, sigma) [arcsec] offsets from the source centre, equal flux
    each), its star-forming knots as Gaussians. Offsets are relative to the deflector centre,
    in arcsec (x = East, y = North). The returned shape integrates to 1 over the *unlensed*
    source plane, so multiplying by the source's flux gives nanomaggies per arcsec^2 in the
    image plane.
    """
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    lens = LensModel(["SIE", "SHEAR"])
    kw_lens = [
        {"theta_E": theta_e, "e1": q_e1, "e2": q_e2, "center_x": 0.0, "center_y": 0.0},
        {"gamma1": gamma1, "gamma2": gamma2, "ra_0": 0.0, "dec_0": 0.0},
    ]
    sx, sy = src_offset
    if knots:
        light = LightModel(["GAUSSIAN"] * len(knots))
        kw_src = [{"amp": 1.0, "sigma": s, "center_x": sx + x, "center_y": sy + y} for x, y, s in knots]
        half = max(max(math.hypot(x, y) + 6 * s for x, y, s in knots), 0.3)
    else:
        light = LightModel(["SERSIC_ELLIPSE"])
        kw_src = [{"amp": 1.0, "R_sersic": src_r_e, "n_sersic": src_n, "e1": src_e1, "e2": src_e2,
                   "center_x": sx, "center_y": sy}]
        half = 8 * src_r_e
    # Normalise numerically on a fine source-plane grid: unit total unlensed flux.
    g = np.linspace(-half, half, 401)
    gx, gy = np.meshgrid(g + sx, g + sy)
    norm = light.surface_brightness(gx, gy, kw_src).sum() * (g[1] - g[0]) ** 2

    def shape(dx, dy):
        bx, by = lens.ray_shooting(dx.ravel(), dy.ravel(), kw_lens)
        return (light.surface_brightness(bx, by, kw_src) / norm).reshape(dx.shape)

    return shape


def local_jacobian(wcs, x, y):
    """d(East, North)/d(x, y) [arcsec/pixel] at pixel positions (x, y), shape (N, 2, 2)."""
    x = np.atleast_1d(x).astype(np.float64)
    y = np.atleast_1d(y).astype(np.float64)
    ra0, dec0 = wcs.all_pix2world(x, y, 0)
    rax, decx = wcs.all_pix2world(x + 1.0, y, 0)
    ray, decy = wcs.all_pix2world(x, y + 1.0, 0)
    cosd = np.cos(np.radians(dec0))

    def dra(a, b):
        return ((a - b + 180.0) % 360.0 - 180.0) * cosd * 3600.0

    jac = np.empty((len(x), 2, 2))
    jac[:, 0, 0] = dra(rax, ra0)
    jac[:, 0, 1] = dra(ray, ra0)
    jac[:, 1, 0] = (decx - dec0) * 3600.0
    jac[:, 1, 1] = (decy - dec0) * 3600.0
    return jac


def _pixel_scale(jac):
    return float(np.sqrt(abs(np.linalg.det(jac))))


def render_image(components, wcs, shape, psf_fwhm, band_index) -> np.ndarray:
    """Render components in one band onto the pixel grid of ``wcs`` (image shape (H, W)).

    ``psf_fwhm`` [arcsec] is the FWHM of the band's Moffat PSF; ``band_index`` picks the flux
    (0 g, 1 r, 2 z). Returns float32 nanomaggies per pixel (no noise).
    """
    return render_bands(components, wcs, shape, {band_index: psf_fwhm})[band_index]


def render_bands(components, wcs, shape, psf_fwhms: dict, clip: bool = False) -> dict:
    """Render components in several bands at once: ``psf_fwhms`` maps a band index (0 g, 1 r,
    2 z) to its PSF FWHM [arcsec]; returns {band index: float32 (H, W) nanomaggies per pixel}.

    Each component's profile is sampled once for all bands (it is the same shape in each,
    only its flux and the PSF differ), which is most of the cost of a brick.

    ``clip``: sample a profile only where its light can reach the image (the image grown by
    the PSF's reach), for small images such as cutouts, where most neighbours only graze
    the edge. The clipped part's flux normalisation then sums the whole stamp sampled once
    per pixel except around the profile's centre, which is sampled as usual (the same
    pixels to about 1e-3 of their peak), and is kept on the component for the next image
    it grazes; a component wholly inside is rendered exactly as without it.
    """
    h, w = shape
    images = {b: np.zeros((h, w), dtype=np.float64) for b in psf_fwhms}
    if not components:
        return {b: image.astype(np.float32) for b, image in images.items()}
    ras = np.array([c.ra for c in components])
    decs = np.array([c.dec for c in components])
    xs, ys = wcs.all_world2pix(ras, decs, 0)
    jacs = local_jacobian(wcs, xs, ys)
    for comp, x0, y0, jac in zip(components, xs, ys, jacs):
        bands = [b for b in psf_fwhms if float(comp.flux[b]) != 0.0]
        if not bands:
            continue
        scale = round(_pixel_scale(jac), 4)  # arcsec/pixel; varies by < 1e-4 across a brick
        extent = int(np.ceil(comp.extent / scale)) + 2
        reach = {b: optics.kernel_radius(psf_fwhms[b], scale) for b in bands}
        halves = {b: min(extent + reach[b], MAX_STAMP_HALF) for b in bands}
        half = max(halves.values())
        xc, yc = int(np.round(x0)), int(np.round(y0))
        if xc + half < 0 or yc + half < 0 or xc - half >= w or yc - half >= h:
            continue
        fx, fy = x0 - xc, y0 - yc
        # stamp index k <-> image pixel (yc - half + k, xc - half + k): the part that can reach the image
        k = max(reach.values())
        box = (max(0, half - yc - k), min(2 * half + 1, h + k + half - yc),
               max(0, half - xc - k), min(2 * half + 1, w + k + half - xc))
        if comp.shape is not None and clip and box != (0, 2 * half + 1, 0, 2 * half + 1):
            _add_clipped(images, comp, bands, halves, half, box, fx, fy, xc, yc, jac, scale, psf_fwhms)
            continue
        profile = None if comp.shape is None else _profile_stamp(comp, fx, fy, half, jac, scale)
        for b in bands:
            # each band's stamp as if rendered alone: its own size (the PSF's reach), so a
            # profile is truncated alike however many bands are drawn together
            hb, cut = halves[b], half - halves[b]
            if xc + hb < 0 or yc + hb < 0 or xc - hb >= w or yc - hb >= h:
                continue
            band_profile = None if profile is None else profile[cut : cut + 2 * hb + 1, cut : cut + 2 * hb + 1]
            if band_profile is not None and not comp.absolute:
                band_profile = band_profile / max(band_profile.sum(), 1e-30)
            stamp = _convolved(band_profile, fx, fy, hb, scale, psf_fwhms[b])
            _add_at(images[b], float(comp.flux[b]) * stamp, yc - hb, xc - hb)
    return {b: image.astype(np.float32) for b, image in images.items()}


def _add_at(image, stamp, y_lo, x_lo):
    """Add ``stamp`` with its pixel (0, 0) at image pixel (y_lo, x_lo), the part on the image."""
    h, w = image.shape
    sy0, sx0 = max(0, -y_lo), max(0, -x_lo)
    sy1, sx1 = min(stamp.shape[0], h - y_lo), min(stamp.shape[1], w - x_lo)
    if sy1 > sy0 and sx1 > sx0:
        image[y_lo + sy0 : y_lo + sy1, x_lo + sx0 : x_lo + sx1] += stamp[sy0:sy1, sx0:sx1]


def _add_clipped(images, comp, bands, halves, half, box, fx, fy, xc, yc, jac, scale, psf_fwhms):
    """A component sampled only on ``box`` (row0, row1, col0, col1 of its (2 half + 1)^2
    stamp), each band's part normalised as its whole band stamp would be, convolved and added.
    Stamp pixels outside the box lie beyond the PSF's reach of every image pixel."""
    from scipy.signal import fftconvolve

    r0, r1, c0, c1 = box
    fine = _profile_stamp(comp, fx, fy, half, jac, scale, rows=(r0, r1), cols=(c0, c1))
    keys = {b: (halves[b], scale) for b in bands}
    if not comp.absolute and not all(k in comp.norms for k in keys.values()):
        # each band stamp's sum, which normalises it: sampled as the whole stamp would be
        # around the centre (a cusp needs it), once per pixel elsewhere. A neighbour seen by
        # several cutouts keeps the sum of the first (a third of the cost otherwise). The sum
        # moves with the sub-pixel offset only where the whole rendering's does too: for a
        # cusp narrower than a pixel (de Vaucouleurs, r_e < 1"), where 3x3 samples per pixel
        # set the share of the centre either way
        best = _profile_stamp(comp, fx, fy, half, jac, scale, oversample=1)
        k0, k1 = max(half - CUSP_HALF, 0), min(half + CUSP_HALF + 1, 2 * half + 1)
        best[k0:k1, k0:k1] = _profile_stamp(comp, fx, fy, half, jac, scale, rows=(k0, k1), cols=(k0, k1))
        for b, key in keys.items():
            cut = half - halves[b]
            comp.norms[key] = max(float(best[cut : cut + 2 * halves[b] + 1, cut : cut + 2 * halves[b] + 1].sum()),
                                  1e-30)
    for b in bands:
        hb, cut = halves[b], half - halves[b]
        i0, i1, j0, j1 = max(r0, cut), min(r1, cut + 2 * hb + 1), max(c0, cut), min(c1, cut + 2 * hb + 1)
        if i1 <= i0 or j1 <= j0:
            continue
        part = fine[i0 - r0 : i1 - r0, j0 - c0 : j1 - c0]
        if not comp.absolute:
            part = part / comp.norms[keys[b]]
        stamp = fftconvolve(part, optics.psf_kernel(psf_fwhms[b], scale), mode="same")
        _add_at(images[b], float(comp.flux[b]) * stamp, yc - half + i0, xc - half + j0)


def _profile_stamp(comp, fx, fy, half, jac, scale, rows=None, cols=None, oversample=None):
    """The component's profile (pixel-averaged, not normalised; if ``absolute``, surface
    brightness per pixel) on a (2 half + 1)^2 stamp centred on the pixel nearest it, before
    the PSF; or on its rows [r0, r1) and columns [c0, c1) only.

    (fx, fy): the component's sub-pixel offset from the stamp's centre pixel; ``oversample``
    (default the component's) sub-samples per pixel side.
    """
    n = 2 * half + 1
    r0, r1 = rows or (0, n)
    c0, c1 = cols or (0, n)
    ov = oversample or comp.oversample
    sub = (np.arange(ov) + 0.5) / ov - 0.5
    ax = lambda a, b, f: ((np.arange(a, b) - half)[:, None] + sub).ravel() - f  # noqa: E731
    px, py = np.meshgrid(ax(c0, c1, fx), ax(r0, r1, fy))
    dx = jac[0, 0] * px + jac[0, 1] * py
    dy = jac[1, 0] * px + jac[1, 1] * py
    sb = comp.shape(dx, dy)
    stamp = sb.reshape(r1 - r0, ov, c1 - c0, ov).mean(axis=(1, 3))
    return stamp * scale**2 if comp.absolute else stamp  # per arcsec^2 -> per pixel


def _convolved(profile, fx, fy, half, scale, psf_fwhm):
    """A profile stamp convolved with the band's PSF; ``None`` (a point source): the
    pixel-integrated PSF itself."""
    from scipy.signal import fftconvolve

    if profile is None:
        return optics.psf_stamp(psf_fwhm, scale, fx, fy, radius=half)
    return fftconvolve(profile, optics.psf_kernel(psf_fwhm, scale), mode="same")
