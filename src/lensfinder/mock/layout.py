"""The mock survey's settings and the files it will write, planned without drawing the sky.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from lensfinder.constants import BANDS, REGIONS, RELEASE_REGIONS
from lensfinder.errors import LensfinderError
from lensfinder.mock import zoo
from lensfinder.settings import Settings
from lensfinder.survey.bricks import BrickGrid
from lensfinder.survey.positions import photometric_region
from lensfinder.survey.sweeps import sweep_box_for, sweep_name
from lensfinder.survey.tree import SurveyTree

MOCK_RELEASES = ("dr9", "dr10")


@dataclass
class MockConfig(Settings):
    """Size and content of the mock. Counts are per brick unless named otherwise."""

    section: ClassVar[str] = "mock"
    seed: int = 42
    ra_center: float = 150.0  # RA 150 is a sweep boundary: the mock straddles two sweeps
    dec_center: float = 2.0
    n_bricks_ra: int = 4
    n_bricks_dec: int = 3
    image_size: int = 3600
    galaxies: int = 1500  # field galaxies down to z = 22.5
    stars: int = 300
    lenses: int = 20  # deflectors chosen among the field galaxies by their lensing cross-section
    contaminants: dict = field(default_factory=dict)  # kind: fraction of bright galaxies (lensfinder.mock.zoo)
    catalogued_fraction: float = 0.8  # of the conspicuous lenses (fewer of the others: lensfinder.mock.write)
    noise: bool = True
    mean_exposures: float = 5.5  # mean NOBS per band (Poisson across the area)
    psf_variation: float = 0.08  # per-brick PSF FWHM scatter (fraction)
    release: str = "dr10"  # dr10 (south only) or dr9 (south and/or north)
    regions: list = field(default_factory=lambda: ["south"])

    def __post_init__(self):
        if self.release not in MOCK_RELEASES:
            raise LensfinderError(f"mock.release {self.release!r} must be one of {MOCK_RELEASES}")
        regions = list(self.regions)
        if not regions or len(set(regions)) != len(regions) or not set(regions) <= set(REGIONS):
            raise LensfinderError(f"mock.regions {regions} must list south and/or north, each once")
        zoo.fractions(self.contaminants)  # a bad kind or fraction fails here, naming it
        if not set(regions) <= set(RELEASE_REGIONS[self.release]):
            raise LensfinderError(f"mock.regions {regions}: {self.release.upper()} has no north region "
                                  "(BASS/MzLS are in DR9): set mock.release: dr9")

    @property
    def ordered_regions(self) -> list[str]:
        """The regions in a fixed order (south first): the sky does not depend on list order."""
        return [r for r in REGIONS if r in self.regions]


def mock_bricks(cfg: MockConfig) -> np.ndarray:
    """The bricks-table rows of the mock area: n_bricks_dec rows x n_bricks_ra columns."""
    grid = BrickGrid.build()
    row0, _ = grid.row_col(cfg.ra_center, cfg.dec_center)
    rows = []
    for r in range(int(row0) - (cfg.n_bricks_dec - 1) // 2, int(row0) + cfg.n_bricks_dec // 2 + 1):
        _, c = grid.row_col(cfg.ra_center, -90 + 0.25 * r)
        cols = np.arange(int(c) - cfg.n_bricks_ra // 2, int(c) + (cfg.n_bricks_ra + 1) // 2)
        rows.append(grid.bricks(np.full(len(cols), r), cols))
    return np.concatenate(rows)


def planned_sweeps(cfg: MockConfig) -> list[str]:
    """Names of the sweep files the mock writes in each region (every cell of the release's
    tiling, 5x5 deg in DR10 and 10x5 deg in DR9, that its bricks touch)."""
    names = set()
    for b in mock_bricks(cfg):
        for ra in (b["RA1"], b["RA2"] - 1e-9):
            for dec in (b["DEC1"], b["DEC2"] - 1e-9):
                box = sweep_box_for(ra, dec, cfg.release)
                names.add(sweep_name(box.ra_min, box.dec_min, box.ra_max, box.dec_max))
    return sorted(names)


def check_mock_regions(cfg: MockConfig) -> None:
    """Each region the mock writes must own part of its area by the photometric rule
    (north iff Dec >= 32.375 and b > 0), or its tree's objects would all be dropped."""
    b = mock_bricks(cfg)
    ra = np.concatenate([b["RA1"], b["RA1"], b["RA2"] - 1e-6, b["RA2"] - 1e-6, b["RA"]])
    dec = np.concatenate([b["DEC1"], b["DEC2"] - 1e-6, b["DEC1"], b["DEC2"] - 1e-6, b["DEC"]])
    owned = set(photometric_region(ra, dec).tolist())
    for region in cfg.regions:
        if region not in owned:
            raise LensfinderError(
                f"mock.regions includes {region}, but no part of the mock area (centre RA {cfg.ra_center}, "
                f"Dec {cfg.dec_center}) is {region} (north: Dec >= 32.375 and Galactic b > 0): move it "
                "across that line, e.g. mock.ra_center: 155, mock.dec_center: 32.3"
            )


def mock_trees(root, cfg: MockConfig) -> list[SurveyTree]:
    """The region trees the mock writes, south first."""
    return [SurveyTree(root, cfg.release, region) for region in cfg.ordered_regions]


def region_bricks_path(tree: SurveyTree) -> Path:
    """``<release>/<region>/survey-bricks-<release>-<region>.fits.gz``."""
    return tree.region_dir / f"survey-bricks-{tree.release}-{tree.region}.fits.gz"


def planned_files(root, cfg: MockConfig) -> dict:
    """Every file the mock writes, grouped: bricks, sweeps, coadds, catalogues, truth."""
    check_mock_regions(cfg)
    trees = mock_trees(root, cfg)
    root = Path(root)
    return {
        "bricks": [str(trees[0].bricks_path), *(str(region_bricks_path(t)) for t in trees)],
        "sweeps": [str(t.sweep_path(n)) for t in trees for n in planned_sweeps(cfg)],
        "coadds": [
            str(t.coadd_path(b["BRICKNAME"].decode(), band)) for t in trees for b in mock_bricks(cfg) for band in BANDS
        ],
        "catalogues": [str(root / "catalogues/known_lenses.csv"), str(root / "catalogues/known_lenses.fits")],
        "truth": [str(root / "truth/lenses.csv"), str(root / "truth/lookalikes.csv")],
        "manifest": [str(root / "mock.json")],
    }
