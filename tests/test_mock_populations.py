"""The mock's sky-realistic populations, its contaminant zoo and its PSF (issue 21, items 1-2)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from lensfinder.errors import LensfinderError
from lensfinder.mock import optics, populations, zoo
from lensfinder.mock.layout import MockConfig
from lensfinder.mock.light import Component, render_image, ring_shape, spiral_shape
from lensfinder.mock.sky import MockSky

# --------------------------------------------------------------------------- populations


def test_source_magnitudes_follow_the_number_counts():
    rng = np.random.default_rng(0)
    mags = populations.draw_source_mags(rng, 20000)
    lo, hi = populations.SOURCE_MAG_RANGE

    def cdf(m):  # dN/dm ~ 10^(0.3 m) on [lo, hi]
        return (10 ** (0.3 * np.clip(m, lo, hi)) - 10 ** (0.3 * lo)) / (10 ** (0.3 * hi) - 10 ** (0.3 * lo))

    assert stats.kstest(mags, cdf).pvalue > 0.01
    # and not a uniform draw on the same range (the test can tell the two apart)
    assert stats.kstest(rng.uniform(lo, hi, 20000), cdf).pvalue < 1e-6


def test_source_redshifts_follow_n_of_z_above_each_deflector():
    rng = np.random.default_rng(1)
    z_min = np.full(20000, 0.8)
    z = populations.draw_source_redshifts(rng, z_min)
    assert z.min() >= 0.8
    grid = np.linspace(0.8, populations.SOURCE_Z_RANGE[1], 4000)
    pdf = populations.source_redshift_pdf(grid)
    cdf = np.cumsum(pdf) / pdf.sum()
    assert stats.kstest(z, lambda x: np.interp(x, grid, cdf)).pvalue > 0.01


def test_einstein_radius_of_an_isothermal_lens():
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=70, Om0=0.3)
    d_s = cosmo.angular_diameter_distance(1.5).value
    d_ds = (cosmo.comoving_distance(1.5).value - cosmo.comoving_distance(0.3).value) / 2.5
    want = 4 * math.pi * (250.0 / 299792.458) ** 2 * d_ds / d_s * 206264.806
    assert populations.einstein_radius(250.0, 0.3, 1.5) == pytest.approx(want, rel=1e-6)
    assert 1.0 < want < 2.0  # a massive elliptical lensing a z = 1.5 source: about 1.5"


def test_faber_jackson_slope_and_scatter():
    rng = np.random.default_rng(2)
    absolute = rng.uniform(-23.5, -20.5, 20000)
    sigma = populations.velocity_dispersion(rng, absolute, np.ones(20000, bool))
    keep = sigma < populations.SIGMA_MAX
    slope, intercept = np.polyfit(absolute[keep], np.log10(sigma[keep]), 1)
    assert slope == pytest.approx(-0.1, abs=0.005)  # L ~ sigma^4
    assert 10 ** (intercept + slope * populations.M_STAR_Z[True]) == pytest.approx(200.0, rel=0.03)


def test_deflectors_are_chosen_by_their_cross_section():
    """Lenses drawn from a pool have the pool's theta_E distribution weighted by theta_E^2,
    none below 0.5"."""
    rng = np.random.default_rng(3)
    theta = rng.uniform(0.2, 3.0, 200000)
    chosen = np.concatenate([theta[populations.choose_deflectors(np.random.default_rng(s), theta, 200)]
                             for s in range(40)])
    assert chosen.min() >= populations.THETA_E_MIN
    edges = np.linspace(0.5, 3.0, 6)
    got = np.histogram(chosen, edges)[0] / len(chosen)
    w = populations.lensing_weights(theta)
    want = np.histogram(theta, edges, weights=w)[0] / w.sum()
    assert got == pytest.approx(want, abs=0.02)
    assert want[-1] > 3 * want[0]  # the weighting matters: a uniform choice would fail


@pytest.fixture(scope="module")
def default_sky():
    return MockSky(MockConfig())


def test_lenses_are_field_galaxies_with_the_skys_einstein_radii(default_sky):
    lenses = default_sky.lenses
    assert len(lenses) == MockConfig().lenses * len(default_sky.bricks)
    theta = np.array([lens["theta_e"] for lens in lenses])
    assert theta.min() >= 0.5
    assert np.median(theta) < 1.5  # most lenses are small: the sky's, not a uniform 1-3"
    deflectors = [lens["_source"] for lens in lenses]
    types = Counter(d.type for d in deflectors)
    assert len(types) >= 3  # drawn from the field's types, not a lens-only population
    assert 0 < sum(not d.red for d in deflectors) < len(deflectors)  # mostly red, not all
    for lens in lenses:
        assert lens["z_s"] > lens["z_d"] + 0.1
        assert lens["theta_e"] == pytest.approx(
            populations.einstein_radius(lens["sigma_v"], lens["z_d"], lens["z_s"]), rel=1e-9)
        assert lens["magnification"] > 1.0
    assert any(lens["source_knots"] > 0 for lens in lenses) and any(lens["source_knots"] == 0 for lens in lenses)


def test_contaminant_kinds_come_at_their_fractions(default_sky):
    bright = [s for s in default_sky.sources if s.type != "PSF" and s.zmag < zoo.BRIGHT_ZMAG
              and s.kind in ("field", "lookalike")]
    counts = Counter(look["kind"] for look in default_sky.lookalikes)
    assert set(counts) == set(zoo.KINDS)
    n = len(bright)
    for kind, f in zoo.SKY_FRACTIONS.items():
        assert counts[kind] == round(f * n), kind
    hosts = [look["_source"] for look in default_sky.lookalikes]
    assert len({id(h) for h in hosts}) == len(hosts)  # one kind per galaxy
    assert not {id(h) for h in hosts} & {id(lens["_source"]) for lens in default_sky.lenses}


def test_a_bad_contaminant_setting_names_the_kind():
    with pytest.raises(LensfinderError, match="unknown kind 'spirals'"):
        MockConfig(contaminants={"spirals": 0.1})
    with pytest.raises(LensfinderError, match="mock.contaminants.ring"):
        MockConfig(contaminants={"ring": 1.5})


# --------------------------------------------------------------------------- the zoo's shapes

GRID = np.arange(-15.0, 15.0, 0.05) + 0.025
DX, DY = np.meshgrid(GRID, GRID)  # dx East, dy North [arcsec]
R, THETA = np.hypot(DX, DY), np.arctan2(DY, DX)


def _angular_power(sb, r_lo, r_hi, m_max=6):
    band = (R > r_lo) & (R < r_hi)
    return [abs(np.sum(sb[band] * np.exp(-1j * m * THETA[band]))) for m in range(1, m_max + 1)]


@pytest.mark.parametrize("arms", [1, 2, 3, 4])
def test_spiral_has_its_number_of_arms(arms):
    sb = spiral_shape(1.0, 20.0, arms)(DX, DY)
    power = _angular_power(sb, 1.5, 3.0)
    assert int(np.argmax(power)) + 1 == arms


def test_ring_peaks_at_its_radius_and_is_dark_inside():
    sb = ring_shape(2.5, 0.3)(DX, DY)
    radii = np.arange(0.0, 5.0, 0.1)
    profile = [sb[(R >= a) & (R < a + 0.1)].mean() for a in radii]
    assert radii[int(np.argmax(profile))] == pytest.approx(2.45, abs=0.1)
    assert sb[R < 1.0].max() < 1e-3 * sb.max()


def test_edge_on_disc_is_thin_along_its_angle_with_a_dust_lane():
    sb = zoo.edge_on_shape(1.5, 0.2, 45.0, 1.0, 0.07)(DX, DY)
    u, v = zoo._rotate(DX, DY, 45.0)
    w = sb / sb.sum()
    assert math.sqrt((w * v**2).sum() / (w * u**2).sum()) < 0.2  # thin, and along PA 45 (North through East)
    # across the disc at its centre the light dips in the mid-plane: the lane
    cut = [sb[(np.abs(u) < 0.1) & (np.abs(v - x) < 0.03)].mean() for x in (-0.15, 0.0, 0.15)]
    assert cut[1] < 0.8 * min(cut[0], cut[2])


def test_tidal_tail_lies_on_its_circle_from_its_start():
    shape = zoo.tail_shape(5.0, 0.3, 30.0, 120.0, x0=1.0, y0=-1.0)
    sb = shape(DX, DY)
    cx, cy = shape.centre
    w = sb / sb.sum()
    assert (w * np.abs(np.hypot(DX - cx, DY - cy) - 5.0)).sum() < 0.3
    assert math.hypot(1.0 - cx, -1.0 - cy) == pytest.approx(5.0)  # it leaves the galaxy
    brightest = np.unravel_index(np.argmax(sb), sb.shape)
    assert math.hypot(DX[brightest] - 1.0, DY[brightest] + 1.0) < 1.0  # and fades away from it


def test_clumpy_galaxy_shows_each_knot():
    from scipy.ndimage import maximum_filter

    knots = [(-2.0, 0.0, 0.2, 0.3), (1.5, 1.5, 0.2, 0.3), (0.5, -2.0, 0.25, 0.4)]
    sb = zoo.knots_shape(knots)(DX, DY)
    peaks = (sb == maximum_filter(sb, size=9)) & (sb > 0.1 * sb.max())
    assert peaks.sum() == 3
    assert sb.sum() * 0.05**2 == pytest.approx(1.0, rel=1e-3)


def test_star_artefact_has_four_spikes():
    sb = zoo.star_artefact_shape(2.0, 14.0, 0.3)(DX, DY)
    on_axis = [sb[(np.abs(R - 8.0) < 0.1) & (np.abs(np.angle(np.exp(1j * (THETA - a)))) < 0.02)].mean()
               for a in np.arange(4) * np.pi / 2]
    diagonal = [sb[(np.abs(R - 8.0) < 0.1) & (np.abs(np.angle(np.exp(1j * (THETA - a)))) < 0.02)].mean()
                for a in np.pi / 4 + np.arange(4) * np.pi / 2]
    assert min(on_axis) > 5 * max(diagonal)


def test_satellite_trail_is_one_band_and_straight():
    shape = zoo.trail_shape(30.0, 2.0, 0.3, 14.0)
    sb = shape(DX, DY)
    u, v = zoo._rotate(DX, DY, 30.0)
    along = [sb[(np.abs(u - a) < 0.05) & (np.abs(v - 2.0) < 0.05)].mean() for a in (-10.0, 0.0, 10.0)]
    assert along == pytest.approx([along[1]] * 3, rel=0.05)  # uniform along the line
    assert sb[np.abs(v - 2.0) > 1.5].max() < 1e-5  # and nothing off it
    sky = MockSky(MockConfig(n_bricks_ra=1, n_bricks_dec=1, galaxies=400, stars=10, lenses=1, seed=5,
                             contaminants={"trail": 0.05}))
    trails = [look for look in sky.lookalikes if look["kind"] == "trail"]
    assert trails
    for look in trails:
        assert np.count_nonzero(look["_source"].components[-1].flux) == 1  # one exposure: one band


def test_ghost_is_an_annulus_with_an_empty_centre():
    sb = zoo.ghost_shape(8.0)(DX, DY)
    assert sb[R < 2.0].max() < 0.01 * sb.max()
    assert sb[(R > 5.5) & (R < 7.5)].min() > 0.5 * sb.max()
    assert sb[R > 10.0].max() < 0.02 * sb.max()


def test_group_companions_sit_around_their_host():
    sky = MockSky(MockConfig(n_bricks_ra=1, n_bricks_dec=1, galaxies=400, stars=10, lenses=1, seed=6,
                             contaminants={"group": 0.05}))
    groups = [look for look in sky.lookalikes if look["kind"] == "group"]
    parts = [s for s in sky.sources if s.kind == "lookalike_part"]
    assert groups
    for look in groups:
        n = int(look["detail"].split("=")[1])
        host = look["_source"]
        near = [p for p in parts if 1.9 / 3600 < math.hypot((p.ra - host.ra) * math.cos(math.radians(host.dec)),
                                                             p.dec - host.dec) < 7.1 / 3600]
        assert 2 <= n <= 4 and len(near) >= n


# --------------------------------------------------------------------------- the PSF


def test_moffat_psf_has_its_fwhm_and_wings():
    fine = 0.01  # arcsec per pixel: pixelisation negligible
    stamp = optics.psf_stamp(1.2, fine, radius=600)
    c = 600
    cut = stamp[c, c:] / stamp[c, c]
    i = int(np.argmax(cut < 0.5))
    half = i - 1 + (cut[i - 1] - 0.5) / (cut[i - 1] - cut[i])
    assert 2 * half * fine == pytest.approx(1.2, abs=0.01)
    r = np.hypot(*np.mgrid[-c : c + 1, -c : c + 1]) * fine
    gaussian_beyond = math.exp(-4 * math.log(2) * 4)  # a Gaussian's light beyond 2 FWHM: 2e-5
    assert stamp[r > 2.4].sum() > 100 * gaussian_beyond
    assert 1 / (stamp**2).sum() == pytest.approx(optics.noise_equivalent_area(1.2, fine), rel=0.01)


def test_mock_stars_and_injected_arcs_share_the_psf():
    """A point source rendered by the mock and a point of light blurred as an injected arc
    are the same image."""
    from astropy.io import fits as afits
    from astropy.wcs import WCS

    size, c = 41, 20
    hdr = afits.Header({"NAXIS": 2, "NAXIS1": size, "NAXIS2": size, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
                        "CRVAL1": 150.0, "CRVAL2": 2.0, "CRPIX1": c + 1, "CRPIX2": c + 1,
                        "CD1_1": -0.262 / 3600, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.262 / 3600})
    star = Component(150.0, 2.0, np.array([3.0, 3.0, 3.0]), None)
    mock = render_image([star], WCS(hdr), (size, size), 1.3, 0)
    point = np.zeros((size, size))
    point[c, c] = 3.0
    injected = optics.convolve_psf(point, 1.3)
    assert mock.sum() == pytest.approx(3.0, rel=1e-3)
    assert mock == pytest.approx(injected.astype(np.float32), abs=1e-3 * float(mock.max()))  # the TAN scale to 1e-4
