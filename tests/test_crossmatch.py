"""Spherical cross-match: against astropy, across RA 0/360 and near the poles; square cutout
footprints against an astropy TAN WCS."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord, match_coordinates_sky

from lensfinder.catalog.crossmatch import (
    friends_of_friends,
    friends_of_friends_square,
    nearest,
    pairs_in_square,
    separation_arcsec,
    tangent_offsets_arcsec,
    within,
    within_square,
)


def test_nearest_agrees_with_astropy_on_random_catalogues():
    rng = np.random.default_rng(3)
    n1, n2 = 3000, 5000
    ra2 = rng.uniform(0, 360, n2)
    dec2 = np.degrees(np.arcsin(rng.uniform(-1, 1, n2)))
    # half of set 1 sits within a few arcsec of set 2, half at random
    pick = rng.integers(0, n2, n1 // 2)
    ra1 = np.concatenate([ra2[pick] + rng.normal(0, 2 / 3600, n1 // 2) / np.cos(np.radians(dec2[pick])),
                          rng.uniform(0, 360, n1 - n1 // 2)]) % 360
    dec1 = np.clip(np.concatenate([dec2[pick] + rng.normal(0, 2 / 3600, n1 // 2),
                                   np.degrees(np.arcsin(rng.uniform(-1, 1, n1 - n1 // 2)))]), -90, 90)
    radius = 5.0
    idx, sep = nearest(ra1, dec1, ra2, dec2, radius)
    a_idx, a_sep, _ = match_coordinates_sky(SkyCoord(ra1 * u.deg, dec1 * u.deg), SkyCoord(ra2 * u.deg, dec2 * u.deg))
    a_sep = a_sep.to_value(u.arcsec)
    expect = a_sep <= radius
    assert expect.sum() > 1000
    assert np.array_equal(idx >= 0, expect)
    assert np.array_equal(idx[expect], a_idx[expect])
    assert np.allclose(sep[expect], a_sep[expect], atol=1e-6)


def test_ra_wraparound():
    idx, sep = nearest([359.9999], [10.0], [0.0001, 180.0], [10.0, 10.0], 2.0)
    assert idx[0] == 0
    assert sep[0] == pytest.approx(0.72 * np.cos(np.radians(10.0)), rel=1e-4)
    assert within([0.0], [0.0], [359.9995], [0.0], 2.0)[0]


def test_near_the_poles():
    # 0.36" from the pole on opposite meridians: 0.72" apart, although RA differs by 180 deg
    idx, sep = nearest([0.0], [89.9999], [180.0, 90.0], [89.9999, 89.0], 1.0)
    assert idx[0] == 0 and sep[0] == pytest.approx(0.72, rel=1e-4)
    assert separation_arcsec(0.0, -90.0, 123.0, -90.0) == pytest.approx(0.0, abs=1e-6)
    assert not within([10.0], [-89.0], [190.0], [-89.0], 3600.0)[0]  # 2 deg apart across the pole


def test_empty_inputs_and_friends_of_friends_chains():
    idx, sep = nearest([1.0], [1.0], [], [], 1.0)
    assert idx.tolist() == [-1] and np.isinf(sep[0])
    # a chain of points 1.5" apart links into one group; a distant point stays alone
    ra = [10.0, 10.0 + 1.5 / 3600, 10.0 + 3.0 / 3600, 20.0]
    labels = friends_of_friends(ra, [0.0] * 4, 2.0)
    assert labels[0] == labels[1] == labels[2] != labels[3]


def _tan_wcs(ra0, dec0, size=101, pixscale=0.262):
    """A cutout's TAN grid as the coadds have it: +x toward decreasing RA, +y North."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [size // 2 + 1, size // 2 + 1]
    w.wcs.cdelt = [-pixscale / 3600.0, pixscale / 3600.0]
    return w


@pytest.mark.parametrize("ra0,dec0", [(150.0, 2.0), (0.0005, -30.0), (359.9995, 45.0), (12.0, 89.99)])
def test_tangent_offsets_agree_with_a_tan_wcs(ra0, dec0):
    rng = np.random.default_rng(0)
    px = rng.uniform(-80, 80, (200, 2))  # pixel offsets from the centre
    w = _tan_wcs(ra0, dec0)
    ra, dec = w.wcs_pix2world(px[:, 0] + 50, px[:, 1] + 50, 0)
    dx, dy = tangent_offsets_arcsec(ra0, dec0, ra % 360, dec)
    assert np.allclose(dx, px[:, 0] * 0.262, atol=1e-6) and np.allclose(dy, px[:, 1] * 0.262, atol=1e-6)


@pytest.mark.parametrize("ra0,dec0", [(150.0, 2.0), (359.99995, -20.0), (0.00002, 60.0)])
def test_square_cutout_footprint_covers_the_corners_across_ra_0(ra0, dec0):
    hw = 50 * 0.262  # 101-px cutout: 13.1"
    w = _tan_wcs(ra0, dec0)

    def at(dx, dy):  # sky position of a tangent-plane offset [arcsec] from the cutout centre
        ra, dec = w.wcs_pix2world([50 + dx / 0.262], [50 + dy / 0.262], 0)
        return ra % 360, dec

    corner = at(12.5, -12.5)  # inside the square, 17.7" away: outside the inscribed circle
    assert separation_arcsec(ra0, dec0, *corner)[0] > hw
    assert not within([ra0], [dec0], *corner, hw)[0]
    assert within_square([ra0], [dec0], *corner, hw)[0]
    for dx, dy in ((13.2, -12.5), (-12.5, 13.2), (-13.2, 0.0), (0.0, -13.2)):  # just outside an edge
        assert not within_square([ra0], [dec0], *at(dx, dy), hw)[0]
    for dx, dy in ((-13.0, 13.0), (13.0, 0.0), (0.0, 0.0)):
        assert within_square([ra0], [dec0], *at(dx, dy), hw)[0]
    # the pairs name which point lies in which square; the groups link them transitively
    ras, decs = zip(at(0, 0), at(12.5, -12.5), at(25.0, -25.0), at(60.0, 0.0))
    ras, decs = np.concatenate(ras), np.concatenate(decs)
    i, j = pairs_in_square(ras, decs, ras, decs, hw)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (3, 3)]
    assert friends_of_friends_square(ras, decs, hw).tolist() == [0, 0, 0, 3]
