"""Spherical cross-matching with a KD-tree on unit vectors: O(N log N), exact on the
sphere, no trouble at RA 0/360 or at the poles. Coordinates in degrees, radii in arcsec."""

from __future__ import annotations

import numpy as np
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


def friends_of_friends(ra, dec, radius_arcsec: float) -> np.ndarray:
    """Group labels linking every pair closer than the radius (transitively)."""
    n = len(np.atleast_1d(ra))
    labels = np.arange(n)
    if n < 2:
        return labels
    pairs = cKDTree(unit_vectors(ra, dec)).query_pairs(chord(radius_arcsec), output_type="ndarray")
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra_, rb = find(a), find(b)
        if ra_ != rb:
            parent[max(ra_, rb)] = min(ra_, rb)
    return np.array([find(i) for i in range(n)])
