"""Positions on the sky: DESI names, Galactic latitude, the photometric region.
"""

from __future__ import annotations

import numpy as np

from lensfinder.constants import NORTH_DEC_MIN


def desi_names(ra, dec) -> list[str]:
    """DESI-style system names ``DESI-RRR.rrrr+DD.dddd`` from RA and Dec [deg]."""
    return [f"DESI-{r:08.4f}{d:+08.4f}" for r, d in zip(ra, dec, strict=True)]


def galactic_latitude(ra, dec) -> np.ndarray:
    """Galactic latitude b [deg] of ICRS (ra, dec) [deg] (IAU 1958 pole, J2000)."""
    ra_gp, dec_gp = np.radians(192.85948), np.radians(27.12825)
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    sinb = np.sin(dec) * np.sin(dec_gp) + np.cos(dec) * np.cos(dec_gp) * np.cos(ra - ra_gp)
    return np.degrees(np.arcsin(np.clip(sinb, -1, 1)))


def photometric_region(ra, dec) -> np.ndarray:
    """'north' (BASS/MzLS) iff Dec >= 32.375 and b > 0, else 'south' (DECaLS)."""
    north = (np.asarray(dec) >= NORTH_DEC_MIN) & (galactic_latitude(ra, dec) > 0)
    return np.where(north, "north", "south")
