"""The contaminant zoo: what a lens search mistakes for lenses, drawn into the mock's field.

The false positives of published searches are spirals, rings, edge-on discs with dust
lanes, mergers and tidal tails, clumpy star-forming galaxies, small groups and image
artefacts. Each *kind* below dresses one of the mock's field galaxies (z < ``BRIGHT_ZMAG``)
or puts an artefact over it; ``truth/lookalikes.csv`` records the galaxy's key and kind,
and the evaluation reports the false-positive rate of each kind.

Kinds and their shapes (offsets dx East, dy North in arcsec from the galaxy unless said):

* ``spiral``: 1-4 logarithmic arms (pitch 10-30 deg) on the disc, 0-1.5 mag fainter and
  bluer than it (``light.spiral_shape``);
* ``ring``: a blue Gaussian ring of radius 1.5-4" and width 0.2-0.5" around a red
  early-type galaxy, smooth or in 1-3 clumps (``light.ring_shape``);
* ``edge_on``: the disc seen edge-on (scale-height / scale-length 0.1-0.2) cut along its
  major axis by a dust lane of optical depth 0.6-1.2 (``edge_on_shape``);
* ``merger``: a second galaxy 1.5-4" away and one or two tidal tails: streams along
  circles of radius 3-8" leaving the galaxies over 60-150 deg, 2-3 mag fainter (``tail_shape``);
* ``clumpy``: a blue galaxy with 3-8 star-forming knots within 1.5 half-light radii holding
  20-50% of its light (``knots_shape``);
* ``group``: 2-4 companion galaxies 2-7" away, 0.5-2.5 mag fainter, of either colour;
* ``star_halo``: a bright star (z 10.5-13.5) 8-25" away, with a wide halo and four
  diffraction spikes along the pixel axes (``star_artefact_shape``);
* ``trail``: a satellite trail in one band only (one exposure of the coadd), a straight
  Gaussian line of FWHM 0.4-0.8" and 23-25 mag per arcsec of length, passing within 6" of
  the galaxy (``trail_shape``);
* ``ghost``: a pupil ghost, a faint annulus (24-25.5 mag/arcsec^2) of outer radius 6-15"
  in one or two bands, centred 3-15" from the galaxy (``ghost_shape``).

Spirals, edge-on discs and clumpy galaxies are blue discs resolved by the seeing (half-light
radius >= 0.8"); rings surround red early types; the other kinds take any bright galaxy.

Frequencies (``SKY_FRACTIONS``): the fraction of field galaxies brighter than
``BRIGHT_ZMAG`` that carry each kind. They are stated assumptions, not measurements: about a
third of bright galaxies show spiral arms in Galaxy Zoo (Willett et al. 2013), fewer at the
mock's depth and seeing; mergers are 1-3% (Darg et al. 2010); collisional rings, ghosts and
trails are rare. ``mock.contaminants`` overrides any of them.
"""

from __future__ import annotations

import math

import numpy as np

BRIGHT_ZMAG = 20.5  # dressable galaxies: the selection's z < 20 and a little fainter
SKY_FRACTIONS = {"spiral": 0.12, "edge_on": 0.05, "clumpy": 0.03, "merger": 0.02, "group": 0.03, "ring": 0.005,
                 "star_halo": 0.01, "trail": 0.005, "ghost": 0.005}
KINDS = tuple(SKY_FRACTIONS)


def _rotate(dx, dy, pa_deg):
    """(u, v): along and across the axis at position angle ``pa_deg`` (North through East)."""
    phi = math.radians(pa_deg)
    return dy * math.cos(phi) + dx * math.sin(phi), -dy * math.sin(phi) + dx * math.cos(phi)


def edge_on_shape(h_r, h_z, pa_deg, tau, lane_width):
    """An edge-on disc, exponential along its major axis (scale length ``h_r`` [arcsec], at
    ``pa_deg``) and sech^2 across it (height ``h_z``), dimmed along its mid-plane by a dust
    lane of optical depth ``tau`` and width ``lane_width``: exp(-tau exp(-v^2 / 2 w^2))."""

    def shape(dx, dy):
        u, v = _rotate(dx, dy, pa_deg)
        disc = np.exp(-np.abs(u) / h_r) / np.cosh(v / h_z) ** 2
        return disc * np.exp(-tau * np.exp(-0.5 * (v / lane_width) ** 2))

    return shape


def tail_shape(radius, width, start_deg, sweep_deg, x0=0.0, y0=0.0):
    """A tidal stream along the circle of ``radius`` [arcsec] that passes through (x0, y0):
    it leaves that point at position angle ``start_deg`` (as seen from the circle's centre,
    measured from East toward North), runs ``sweep_deg`` (sign: direction) and fades
    linearly to its end; Gaussian across, of sigma ``width``."""
    a0 = math.radians(start_deg)
    cx, cy = x0 - radius * math.cos(a0), y0 - radius * math.sin(a0)
    sweep = math.radians(sweep_deg)

    def shape(dx, dy):
        r = np.hypot(dx - cx, dy - cy)
        along = (np.arctan2(dy - cy, dx - cx) - a0) * math.copysign(1.0, sweep)
        along = np.mod(along, 2 * math.pi)
        frac = along / abs(sweep)
        return np.exp(-0.5 * ((r - radius) / width) ** 2) * np.clip(1.0 - frac, 0.0, 1.0) * (frac <= 1.0)

    shape.centre = (cx, cy)
    return shape


def knots_shape(knots):
    """Gaussian knots: ``knots`` a list of (x, y, sigma, weight) [arcsec], weights summing to 1."""

    def shape(dx, dy):
        out = np.zeros(np.shape(dx))
        for x, y, s, w in knots:
            out += w / (2 * math.pi * s**2) * np.exp(-0.5 * ((dx - x) ** 2 + (dy - y) ** 2) / s**2)
        return out

    return shape


def star_artefact_shape(halo_r, spike_length, spike_width, spike_weight=0.5, pa_deg=0.0):
    """A bright star's scattered light: a halo (1 + (r / halo_r)^2)^-1.5 and four diffraction
    spikes along the axes at ``pa_deg`` and ``pa_deg`` + 90 deg (Gaussian across, of sigma
    ``spike_width``, fading linearly to ``spike_length``); ``spike_weight`` of the peak."""

    def shape(dx, dy):
        r = np.hypot(dx, dy)
        halo = (1.0 + (r / halo_r) ** 2) ** -1.5
        u, v = _rotate(dx, dy, pa_deg)
        fade = np.clip(1.0 - r / spike_length, 0.0, 1.0)
        spikes = (np.exp(-0.5 * (v / spike_width) ** 2) + np.exp(-0.5 * (u / spike_width) ** 2)) * fade
        return halo + spike_weight * spikes

    return shape


def trail_shape(pa_deg, impact, width, half_length):
    """A straight trail at position angle ``pa_deg`` passing ``impact`` [arcsec] from the
    origin (to its right, looking along it), Gaussian across with sigma ``width``, uniform
    along it over +-``half_length``."""

    def shape(dx, dy):
        u, v = _rotate(dx, dy, pa_deg)
        return np.exp(-0.5 * ((v - impact) / width) ** 2) * (np.abs(u) <= half_length)

    return shape


def ghost_shape(outer, inner_fraction=0.6, edge=0.5):
    """A pupil ghost: a flat annulus between ``inner_fraction`` x ``outer`` and ``outer``
    [arcsec], with soft edges (logistic, scale ``edge``), empty at its centre."""
    inner = inner_fraction * outer

    def shape(dx, dy):
        r = np.hypot(dx, dy)
        return 1.0 / (1.0 + np.exp((r - outer) / edge)) / (1.0 + np.exp((inner - r) / edge))

    return shape


def fractions(overrides: dict | None) -> dict:
    """SKY_FRACTIONS with ``overrides`` (``mock.contaminants``) applied and checked."""
    from lensfinder.errors import LensfinderError

    out = dict(SKY_FRACTIONS)
    for kind, value in (overrides or {}).items():
        if kind not in SKY_FRACTIONS:
            raise LensfinderError(f"mock.contaminants: unknown kind {kind!r}; the kinds are {', '.join(KINDS)}")
        if not 0.0 <= float(value) <= 1.0:
            raise LensfinderError(f"mock.contaminants.{kind} = {value}: a fraction of galaxies, between 0 and 1")
        out[kind] = float(value)
    if sum(out.values()) > 1.0:
        raise LensfinderError(f"mock.contaminants sum to {sum(out.values()):.3f}: at most 1 (one kind per galaxy)")
    return out
