"""A picture of the mock's lenses and of every contaminant kind, as the networks see them.

``python -m lensfinder.mock.gallery docs/images/mock-gallery.png`` draws the default mock's
sky (no bricks are written), renders 101-pixel cutouts around examples of each kind as the
sealed survey does (``mock.stamps``: the brick's PSF and noise), and saves them as one
mosaic (g, r, z as blue, green, red; East left, North up).
"""

from __future__ import annotations

import argparse

import numpy as np

from lensfinder.display import save_mosaic
from lensfinder.mock.layout import MockConfig
from lensfinder.mock.sky import MockSky
from lensfinder.mock.stamps import SkyIndex, render_stamp
from lensfinder.survey.bricks import BrickGrid


def render_cutout(msky: MockSky, index: SkyIndex, ra, dec, size=101, nobs=None, seed=0) -> np.ndarray:
    """(3, size, size) nanomaggies around (ra, dec) [deg], as the sealed survey renders its
    cutouts (``mock.stamps``): the PSF of the brick the object lies in, the exposures that
    cover it, and the light's photon noise."""
    brickid = int(BrickGrid.build().lookup(np.array([ra]), np.array([dec]))["BRICKID"][0])
    return render_stamp(msky, index, ra, dec, brickid, size, seed)[0]


def write_gallery(path, cfg: MockConfig | None = None, per_kind: int = 3) -> None:
    """A mosaic: 2 ``per_kind`` lenses (the quartiles of theta_E, brightest arcs first) and
    ``per_kind`` examples of each contaminant kind."""
    msky = MockSky(cfg or MockConfig())
    index = SkyIndex(msky)
    tiles, labels = [], []
    lenses = sorted(msky.lenses, key=lambda lens: -lens["theta_e"])
    for lens in lenses[:: max(len(lenses) // (2 * per_kind), 1)][: 2 * per_kind]:
        tiles.append(render_cutout(msky, index, lens["ra"], lens["dec"], seed=len(tiles)))
        labels.append(f"lens {lens['theta_e']:.1f}\" arc g {lens['arc_mag_g']:.1f}")
    kinds = {}
    for look in msky.lookalikes:
        kinds.setdefault(look["kind"], []).append(look)
    for kind, looks in kinds.items():
        for look in looks[:per_kind]:
            tiles.append(render_cutout(msky, index, look["ra"], look["dec"], seed=len(tiles)))
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
