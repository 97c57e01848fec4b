"""Spherical cross-match: against astropy, across RA 0/360 and near the poles."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord, match_coordinates_sky

from lensfinder.crossmatch import friends_of_friends, nearest, separation_arcsec, within


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
