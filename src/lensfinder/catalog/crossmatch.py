"""Spherical cross-matching with a KD-tree on unit vectors: O(N log N), exact on the
sphere, no trouble at RA 0/360 or at the poles. Coordinates in degrees, radii in arcsec.

Besides circles, a point can be tested against a cutout's square footprint: offsets on the
tangent plane at the cutout's centre, +x toward decreasing RA (East left, as the coadds'
images) and +y North.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def unit_vectors(ra, dec) -> np.ndarray:
    """(N, 3) Cartesian unit vectors of (ra, dec) [deg]."""
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    cosd = np.cos(dec)
    return np.stack([cosd * np.cos(ra), cosd * np.sin(ra), np.sin(dec)], axis=-1)


def chord(radius_arcsec: float) -> float:
    """Chord length on the unit sphere of an angular separation [arcsec]."""
    return 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)


def separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Angular separation [arcsec] (via the chord: accurate at all separations)."""
    d = np.linalg.norm(unit_vectors(ra1, dec1) - unit_vectors(ra2, dec2), axis=-1)
    return np.degrees(2.0 * np.arcsin(np.clip(d / 2.0, 0, 1))) * 3600.0


def nearest(ra1, dec1, ra2, dec2, radius_arcsec: float):
    """For each point of set 1, the index of its nearest neighbour in set 2 within radius.

    Returns (index, separation_arcsec); index is -1 (separation inf) where none is within.
    """
    ra1 = np.atleast_1d(ra1)
    if len(ra1) == 0 or len(np.atleast_1d(ra2)) == 0:
        return np.full(len(ra1), -1), np.full(len(ra1), np.inf)
    tree = cKDTree(unit_vectors(ra2, dec2))
    dist, idx = tree.query(unit_vectors(ra1, dec1), k=1, distance_upper_bound=chord(radius_arcsec))
    found = np.isfinite(dist)
    sep = np.where(found, np.degrees(2.0 * np.arcsin(np.clip(np.where(found, dist, 0) / 2.0, 0, 1))) * 3600.0, np.inf)
    return np.where(found, idx, -1), sep


def within(ra1, dec1, ra2, dec2, radius_arcsec: float) -> np.ndarray:
    """Boolean per point of set 1: is any point of set 2 within the radius?"""
    idx, _ = nearest(ra1, dec1, ra2, dec2, radius_arcsec)
    return idx >= 0


def tangent_offsets_arcsec(ra0, dec0, ra, dec):
    """Gnomonic (TAN) offsets [arcsec] of (ra, dec) on the tangent plane at (ra0, dec0).

    Returns (dx, dy) in the image convention: +dx toward decreasing RA (West, as +x of the
    coadds, East left), +dy North. Exact for any RA (0/360 wrap) and declination; points
    90 deg or more away (no projection) get inf.
    """
    ra0, dec0 = np.radians(np.asarray(ra0, dtype=np.float64)), np.radians(np.asarray(dec0, dtype=np.float64))
    ra, dec = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64))
    dra = ra - ra0
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(dra)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.where(cos_c > 0, np.cos(dec) * np.sin(dra) / cos_c, np.inf)  # toward East
        eta = np.where(cos_c > 0, (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(dra)) / cos_c,
                       np.inf)
    to_arcsec = np.degrees(1.0) * 3600.0
    return -xi * to_arcsec, eta * to_arcsec


def pairs_within(ra1, dec1, ra2, dec2, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i in set 1, j in set 2) closer than the radius, as two index arrays.

    Only the points of set 1 that have a neighbour are expanded, so a large set 1 against
    a small set 2 costs little memory.
    """
    ra1 = np.atleast_1d(ra1)
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if len(ra1) == 0 or len(np.atleast_1d(ra2)) == 0:
        return empty
    tree = cKDTree(unit_vectors(ra2, dec2))
    v1 = unit_vectors(ra1, dec1)
    r = chord(radius_arcsec)
    some = np.flatnonzero(tree.query_ball_point(v1, r, return_length=True))
    if len(some) == 0:
        return empty
    lists = tree.query_ball_point(v1[some], r)
    i = np.repeat(some, [len(x) for x in lists]).astype(np.int64)
    j = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
    return i, j


def pairs_in_square(ra1, dec1, ra2, dec2, half_width_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) with point j of set 2 inside the square centred on point i of set 1.

    The square is the footprint of a cutout centred on i: |dx| <= half-width and
    |dy| <= half-width on the tangent plane at i (axes along RA and Dec, as the coadd's TAN
    grid there). A KD-tree pre-selects within the half-diagonal (a point on the square's
    boundary is never farther on the sphere than its tangent-plane distance), then the
    exact square test.
    """
    i, j = pairs_within(ra1, dec1, ra2, dec2, half_width_arcsec * np.sqrt(2.0))
    if len(i) == 0:
        return i, j
    ra1, dec1, ra2, dec2 = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (ra1, dec1, ra2, dec2))
    dx, dy = tangent_offsets_arcsec(ra1[i], dec1[i], ra2[j], dec2[j])
    inside = (np.abs(dx) <= half_width_arcsec) & (np.abs(dy) <= half_width_arcsec)
    return i[inside], j[inside]


def within_square(ra1, dec1, ra2, dec2, half_width_arcsec: float) -> np.ndarray:
    """Boolean per point of set 1: does the square of this half-width centred on it (a
    cutout's footprint, see ``pairs_in_square``) contain any point of set 2?"""
    n = len(np.atleast_1d(ra1))
    i, _ = pairs_in_square(ra1, dec1, ra2, dec2, half_width_arcsec)
    return np.bincount(i, minlength=n) > 0


def linked_groups(n: int, i, j) -> np.ndarray:
    """Connected components of n points linked by the pairs (i, j); each point's label is
    the smallest index of its group (so labels do not depend on the pairs' order)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (np.asarray(i), np.asarray(j))), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    first = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n))
    return first[comp]


def friends_of_friends(ra, dec, radius_arcsec: float) -> np.ndarray:
    """Group labels linking every pair closer than the radius (transitively); a label is
    the smallest index of its group."""
    n = len(np.atleast_1d(ra))
    if n < 2:
        return np.arange(n)
    pairs = cKDTree(unit_vectors(ra, dec)).query_pairs(chord(radius_arcsec), output_type="ndarray")
    return linked_groups(n, pairs[:, 0], pairs[:, 1])


def friends_of_friends_square(ra, dec, half_width_arcsec: float) -> np.ndarray:
    """Group labels linking every pair where one lies in the other's cutout (a square of
    this half-width, see ``pairs_in_square``), transitively; a label is the smallest index
    of its group."""
    n = len(np.atleast_1d(ra))
    if n < 2:
        return np.arange(n)
    i, j = pairs_in_square(ra, dec, ra, dec, half_width_arcsec)
    return linked_groups(n, i, j)
