"""A picture of the mock's lenses and of every contaminant kind, as the networks see them.

``python -m lensfinder.mock.gallery docs/images/mock-gallery.png`` draws the default mock's
sky (no bricks are written), renders 101-pixel cutouts around examples of each kind with the
brick's PSF and noise, and saves them as one mosaic (g, r, z as blue, green, red; East left,
North up).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from lensfinder.constants import BANDS, PIXSCALE
from lensfinder.display import save_mosaic
from lensfinder.mock import optics
from lensfinder.mock.layout import MockConfig
from lensfinder.mock.light import render_image
from lensfinder.mock.sky import MockSky
from lensfinder.mock.write import _pixel_sigma_1exp, _wcs_from_cards


def _cutout_wcs(ra, dec, size):
    cards = [{"name": "CTYPE1", "value": "RA---TAN"}, {"name": "CTYPE2", "value": "DEC--TAN"},
             {"name": "CRVAL1", "value": ra}, {"name": "CRVAL2", "value": dec},
             {"name": "CRPIX1", "value": size / 2 + 0.5}, {"name": "CRPIX2", "value": size / 2 + 0.5},
             {"name": "CD1_1", "value": -PIXSCALE / 3600}, {"name": "CD1_2", "value": 0.0},
             {"name": "CD2_1", "value": 0.0}, {"name": "CD2_2", "value": PIXSCALE / 3600}]
    return _wcs_from_cards(cards, size)


def render_cutout(msky: MockSky, ra, dec, size=101, nobs=5, seed=0) -> np.ndarray:
    """(3, size, size) nanomaggies around (ra, dec) [deg]: every component within reach,
    the region's median PSF, sky noise of ``nobs`` exposures and the light's photon noise."""
    comps = msky.components()
    cra, cdec = np.array([c.ra for c in comps]), np.array([c.dec for c in comps])
    reach = (size * PIXSCALE / 2 + 40) / 3600
    near = (np.abs(cdec - dec) < reach) & (np.abs(cra - ra) * math.cos(math.radians(dec)) < reach)
    wcs = _cutout_wcs(ra, dec, size)
    rng = np.random.default_rng(seed)
    out = np.empty((3, size, size), np.float32)
    fwhm_of = msky.conditions[msky.primary][1][int(msky.bricks[0]["BRICKID"])]
    for b, band in enumerate(BANDS):
        image = render_image([comps[i] for i in np.flatnonzero(near)], wcs, (size, size), fwhm_of[band], b)
        sigma = _pixel_sigma_1exp(band, fwhm_of[band]) / math.sqrt(nobs)
        var = sigma**2 + optics.photon_variance(image, optics.DECAM_SKY_MAG[band], sigma)
        out[b] = image + rng.standard_normal(image.shape) * np.sqrt(var)
    return out


def write_gallery(path, cfg: MockConfig | None = None, per_kind: int = 3) -> None:
    """A mosaic: 2 ``per_kind`` lenses (the quartiles of theta_E, brightest arcs first) and
    ``per_kind`` examples of each contaminant kind."""
    msky = MockSky(cfg or MockConfig())
    tiles, labels = [], []
    lenses = sorted(msky.lenses, key=lambda lens: -lens["theta_e"])
    for lens in lenses[:: max(len(lenses) // (2 * per_kind), 1)][: 2 * per_kind]:
        tiles.append(render_cutout(msky, lens["ra"], lens["dec"], seed=len(tiles)))
        labels.append(f"lens {lens['theta_e']:.1f}\" arc g {lens['arc_mag_g']:.1f}")
    kinds = {}
    for look in msky.lookalikes:
        kinds.setdefault(look["kind"], []).append(look)
    for kind, looks in kinds.items():
        for look in looks[:per_kind]:
            tiles.append(render_cutout(msky, look["ra"], look["dec"], seed=len(tiles)))
            labels.append(kind)
    save_mosaic(np.stack(tiles), path, labels=labels, ncol=per_kind * 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the PNG to write")
    parser.add_argument("--per-kind", type=int, default=3)
    args = parser.parse_args(argv)
    write_gallery(args.path, per_kind=args.per_kind)


if __name__ == "__main__":
    main()
