"""Who lenses what in the mock: deflectors from the field population, by the physics.

Every lens's deflector is one of the mock's field galaxies, chosen with the probability
that it lenses a background source (``choose_deflectors``):

1. **Redshift** (``deflector_redshifts``): a galaxy of apparent z-band magnitude m has
   absolute magnitude M = m - DM(z_d) (distance modulus of a flat LambdaCDM cosmology,
   H0 = 70 km/s/Mpc, Omega_m = 0.3; no K-correction, which is ~0.1-0.3 mag in z for
   z_d < 0.6). M is drawn about M* = ``M_STAR_Z`` (-22.4 for red galaxies, -21.9 for blue)
   with a scatter of 1 mag, and z_d solves m = M + DM(z_d), kept in 0.02-1.2.
2. **Velocity dispersion** (``velocity_dispersion``): Faber & Jackson (1976), L ~ sigma^4, so
   sigma = sigma* 10^(-0.1 (M - M*)) with sigma* = 200 km/s for red galaxies (SDSS early
   types: Bernardi et al. 2003) and 140 km/s for blue ones (discs: sigma ~ v_c / sqrt 2 by
   Tully-Fisher), a 0.08 dex scatter, at most 420 km/s.
3. **Source redshift** (``draw_source_redshifts``): n(z) ~ z^2 exp(-(z / 1.1)^1.5) on
   0.3-5 (median 1.6, the range of lensed sources in ground-based searches), above z_d + 0.1.
4. **Einstein radius** (``einstein_radius``): of a singular isothermal ellipsoid,
   theta_E = 4 pi (sigma / c)^2 D_ds / D_s [arcsec].
5. **Probability of lensing**: proportional to the multiple-imaging cross-section pi
   theta_E^2 (sources are spread uniformly on the sky; magnification bias is ignored), and
   zero below ``THETA_E_MIN`` = 0.5". The lenses so chosen have the sky's theta_E
   distribution: most are below 1.2", where ground-based imaging blends arc and deflector.

Sources (``draw_source``): unlensed g magnitude from number counts dN/dm ~ 10^(0.3 m) on
20.5-24.5; half-light radius log-normal about 0.25" (0.2 dex; ~2 kpc at z ~ 1.5); a smooth
n = 1 disc holding 40-100% of the light and 0-5 star-forming knots (Gaussians of sigma
0.06-0.12", ~1 kpc, 0.1 mag bluer in g - r) holding the rest; position uniform in area
inside theta_E (the multiple-imaging region of an isothermal lens).

Earlier searches catalogued the lenses that stand out (``conspicuous``: theta_E >= 0.8",
lensed g <= 22.5, arcs at least half as bright in g as the deflector's light at 0.5-1.5
theta_E); the mock's literature list holds mostly those.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

THETA_E_MIN = 0.5  # arcsec
# A lens earlier searches would have found (and catalogued) by eye: arcs outside the
# seeing disc, and bright (g of the lensed light, all images together).
CONSPICUOUS_THETA_E = 0.8  # arcsec
CONSPICUOUS_ARC_MAG = 22.5  # g AB
CONSPICUOUS_CONTRAST = 0.5  # arc light / the deflector's own light at 0.5-1.5 theta_E (g band)
M_STAR_Z = {True: -22.4, False: -21.9}  # red, blue [AB mag, z band]
SIGMA_STAR = {True: 200.0, False: 140.0}  # km/s at M*
SIGMA_MAX = 420.0
SOURCE_MAG_RANGE = (20.5, 24.5)  # unlensed g [AB]
SOURCE_Z_RANGE = (0.3, 5.0)
SOURCE_Z0 = 1.1
C_KM_S = 299792.458
RAD_TO_ARCSEC = 180.0 / math.pi * 3600.0


@lru_cache(maxsize=1)
def _cosmology():
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=70.0, Om0=0.3)


@lru_cache(maxsize=1)
def _distance_modulus_grid():
    z = np.linspace(0.01, 1.5, 600)
    return z, np.asarray(_cosmology().distmod(z).value)


def deflector_redshifts(rng, zmag, red) -> tuple[np.ndarray, np.ndarray]:
    """(z_d, absolute z-band magnitude M) for galaxies of apparent z magnitudes ``zmag``
    (observed AB) and colour class ``red`` (bool array)."""
    zmag, red = np.asarray(zmag, dtype=np.float64), np.asarray(red, dtype=bool)
    m_star = np.where(red, M_STAR_Z[True], M_STAR_Z[False])
    absolute = m_star + rng.normal(0.0, 1.0, len(zmag))
    z_grid, dm_grid = _distance_modulus_grid()
    z = np.interp(zmag - absolute, dm_grid, z_grid)  # DM rises with z: invert by interpolation
    z = np.clip(z, 0.02, 1.2)
    absolute = zmag - np.interp(z, z_grid, dm_grid)
    return z, absolute


def velocity_dispersion(rng, absolute_z, red) -> np.ndarray:
    """Faber-Jackson velocity dispersion [km/s] for absolute z magnitudes and colour class."""
    red = np.asarray(red, dtype=bool)
    m_star = np.where(red, M_STAR_Z[True], M_STAR_Z[False])
    sigma_star = np.where(red, SIGMA_STAR[True], SIGMA_STAR[False])
    sigma = sigma_star * 10 ** (-0.1 * (np.asarray(absolute_z) - m_star) + rng.normal(0.0, 0.08, len(red)))
    return np.minimum(sigma, SIGMA_MAX)


def source_redshift_pdf(z) -> np.ndarray:
    """The unnormalised n(z) of lensed sources."""
    z = np.asarray(z, dtype=np.float64)
    return z**2 * np.exp(-((z / SOURCE_Z0) ** 1.5))


def draw_source_redshifts(rng, z_min) -> np.ndarray:
    """One source redshift per entry of ``z_min`` (each drawn from n(z) above its z_min)."""
    grid = np.linspace(*SOURCE_Z_RANGE, 2000)
    cdf = np.cumsum(source_redshift_pdf(grid))
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    lo = np.interp(np.maximum(np.asarray(z_min, dtype=np.float64), grid[0]), grid, cdf)
    u = lo + rng.random(len(lo)) * (1.0 - lo)
    return np.interp(u, cdf, grid)


def einstein_radius(sigma_km_s, z_d, z_s) -> np.ndarray:
    """SIE Einstein radius [arcsec]: 4 pi (sigma / c)^2 D_ds / D_s."""
    cosmo = _cosmology()
    z_d, z_s = np.asarray(z_d, dtype=np.float64), np.asarray(z_s, dtype=np.float64)
    # flat: D_ds = (D_C(z_s) - D_C(z_d)) / (1 + z_s), D_s = D_C(z_s) / (1 + z_s)
    dc_d, dc_s = cosmo.comoving_distance(z_d).value, cosmo.comoving_distance(z_s).value
    d_ds, d_s = (dc_s - dc_d) / (1 + z_s), dc_s / (1 + z_s)
    return 4 * math.pi * (np.asarray(sigma_km_s) / C_KM_S) ** 2 * d_ds / d_s * RAD_TO_ARCSEC


def lens_candidates(rng, zmag, red) -> dict:
    """For every galaxy (apparent z magnitude, colour class): z_d, M_z, sigma, a source
    redshift and the Einstein radius it would have; arrays keyed by name."""
    z_d, absolute = deflector_redshifts(rng, zmag, red)
    sigma = velocity_dispersion(rng, absolute, red)
    z_s = draw_source_redshifts(rng, z_d + 0.1)
    return {"z_d": z_d, "abs_mag_z": absolute, "sigma_v": sigma, "z_s": z_s,
            "theta_e": einstein_radius(sigma, z_d, z_s)}


def lensing_weights(theta_e) -> np.ndarray:
    """Relative probability of being a strong lens: the cross-section theta_E^2, 0 below THETA_E_MIN."""
    theta_e = np.asarray(theta_e, dtype=np.float64)
    return np.where(theta_e >= THETA_E_MIN, theta_e**2, 0.0)


def choose_deflectors(rng, theta_e, n: int) -> np.ndarray:
    """Indices of ``n`` distinct lenses among the candidates, drawn in proportion to
    ``lensing_weights`` (fewer if fewer candidates can lens)."""
    w = lensing_weights(theta_e)
    n = min(int(n), int((w > 0).sum()))
    if n == 0:
        return np.zeros(0, dtype=int)
    return np.sort(rng.choice(len(w), size=n, replace=False, p=w / w.sum()))


def annulus_fraction(r_e, n, r_in, r_out) -> float:
    """Fraction of a circular Sersic profile's light (half-light radius ``r_e``, index ``n``)
    between radii ``r_in`` and ``r_out`` [arcsec]: P(2n, b_n (r / r_e)^(1/n)) differences."""
    from scipy.special import gammainc

    from lensfinder.mock.light import sersic_b

    b = float(sersic_b(n))
    return float(gammainc(2 * n, b * (r_out / r_e) ** (1 / n)) - gammainc(2 * n, b * (r_in / r_e) ** (1 / n)))


def arc_contrast(arc_flux, deflector_flux, r_e, n, theta_e) -> float:
    """The arc's light over the deflector's own light at 0.5-1.5 theta_E (same band)."""
    return float(arc_flux / max(deflector_flux * annulus_fraction(r_e, n, 0.5 * theta_e, 1.5 * theta_e), 1e-30))


def conspicuous(theta_e: float, arc_mag_g: float, contrast: float) -> bool:
    """Would a search by eye have found it? theta_E >= 0.8", lensed g <= 22.5, and the arcs at
    least half as bright as the deflector's light they sit on (``arc_contrast``, g band)."""
    return bool(theta_e >= CONSPICUOUS_THETA_E and arc_mag_g <= CONSPICUOUS_ARC_MAG
                and contrast >= CONSPICUOUS_CONTRAST)


def draw_source_mags(rng, n: int) -> np.ndarray:
    """Unlensed g magnitudes from dN/dm ~ 10^(0.3 m) on SOURCE_MAG_RANGE (inverse CDF)."""
    lo, hi = (10 ** (0.3 * m) for m in SOURCE_MAG_RANGE)
    return np.log10(lo + rng.random(n) * (hi - lo)) / 0.3


def draw_source(rng, theta_e: float) -> dict:
    """One lensed source: offset (East, North) [arcsec] from the deflector, g magnitude,
    colours, disc size and shape, and its star-forming knots (offsets from the source centre)."""
    beta = theta_e * math.sqrt(rng.random())  # uniform in area inside theta_E
    angle = rng.uniform(0, 2 * math.pi)
    r_e = float(np.clip(0.25 * 10 ** rng.normal(0.0, 0.2), 0.08, 0.8))
    n_knots = int(rng.integers(0, 6))
    knot_fraction = float(rng.uniform(0.0, 0.6)) if n_knots else 0.0
    e, phi = rng.uniform(0, 0.4), rng.uniform(0, math.pi)
    return {
        "offset": (beta * math.cos(angle), beta * math.sin(angle)),
        "mag_g": float(draw_source_mags(rng, 1)[0]),
        "g_r": float(rng.normal(0.25, 0.1)), "r_z": float(rng.normal(0.2, 0.1)),
        "r_e": r_e, "e1": e * math.cos(2 * phi), "e2": e * math.sin(2 * phi),
        "knot_fraction": knot_fraction,
        "knots": [(float(x), float(y), float(rng.uniform(0.06, 0.12)))
                  for x, y in np.clip(rng.normal(0.0, r_e, (n_knots, 2)), -2 * r_e, 2 * r_e)],
    }
