"""A Legacy Surveys tree on disk: one release, one or several regions, and the paths in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lensfinder.constants import REGIONS, RELEASE_REGIONS, RELEASES, SWEEP_VERSIONS
from lensfinder.errors import LensfinderError
from lensfinder.survey.sweeps import SWEEP_RE, split_sweep_id


@dataclass(frozen=True)
class SurveyTree:
    """One region of one data release of a Legacy Surveys tree on disk.

    ``root`` is the directory that holds ``dr10/`` (or ``dr9/``...): at NERSC
    ``/global/cfs/cdirs/cosmo/data/legacysurvey``.
    """

    root: Path
    release: str = "dr10"
    region: str = "south"
    sweep_version: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if self.release not in RELEASES:
            raise LensfinderError(f"survey.release {self.release!r} is not one of {RELEASES}")
        if self.region not in REGIONS:
            raise LensfinderError(f"survey.region {self.region!r} must be 'south' or 'north'")

    @property
    def release_dir(self) -> Path:
        return self.root / self.release

    @property
    def region_dir(self) -> Path:
        return self.release_dir / self.region

    @property
    def sweep_dir(self) -> Path:
        return self.region_dir / "sweep" / (self.sweep_version or SWEEP_VERSIONS[self.release])

    @property
    def bricks_path(self) -> Path:
        return self.release_dir / "survey-bricks.fits.gz"

    def coadd_path(self, brickname: str, band: str, product: str = "image") -> Path:
        """``<region>/coadd/<AAA>/<brick>/legacysurvey-<brick>-<product>-<band>.fits.fz``."""
        return (
            self.region_dir
            / "coadd"
            / brickname[:3]
            / brickname
            / f"legacysurvey-{brickname}-{product}-{band}.fits.fz"
        )

    def sweep_path(self, name: str) -> Path:
        return self.sweep_dir / f"{name}.fits"

    def check_exists(self) -> None:
        if not self.root.is_dir():
            raise LensfinderError(
                f"survey directory {self.root} does not exist: set survey.root in the config to a "
                "Legacy Surveys mirror (the directory that holds dr10/), or survey.source: mock"
            )
        if not self.sweep_dir.is_dir():
            raise LensfinderError(
                f"sweep directory {self.sweep_dir} does not exist under survey.root {self.root}: "
                "check survey.release, survey.region and survey.sweep_version"
            )

    def list_sweeps(self) -> list[str]:
        """Names (without ``.fits``) of the main sweep files present, sorted."""
        self.check_exists()
        names = []
        for entry in os.listdir(self.sweep_dir):
            m = SWEEP_RE.match(entry)
            if m and m.group(7) is None:
                names.append(entry[: -len(".fits")])
        return sorted(names)


@dataclass(frozen=True)
class SurveyTrees:
    """One data release read from one or several regions' trees (``regions``).

    Sweep IDs name a sweep file: the bare stem (``sweep-150p000-155p005``) when one region
    is read, ``<region>/<stem>`` when several are, since every region has its own file of
    the same name (DR9 ``north/sweep/9.0/sweep-150p030-160p035.fits`` and ``south/...``).
    """

    root: Path
    release: str = "dr10"
    regions: tuple = ("south",)
    sweep_version: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "regions", tuple(self.regions))
        if not self.regions or len(set(self.regions)) != len(self.regions):
            raise LensfinderError(f"survey.regions {list(self.regions)} must list each region once")
        for region in self.regions:
            SurveyTree(self.root, self.release, region, self.sweep_version)  # validates both names
            if region not in RELEASE_REGIONS[self.release]:
                raise LensfinderError(
                    f"survey.regions includes {region!r}, but {self.release.upper()} has no {region} region "
                    "(BASS/MzLS, the north, are in DR9 and DR8): use release dr9 for the north"
                )

    @property
    def multi_region(self) -> bool:
        return len(self.regions) > 1

    def tree(self, region: str | None = None) -> SurveyTree:
        """The tree of ``region`` (default: the only one)."""
        if region is None:
            if self.multi_region:
                raise LensfinderError(f"several regions {list(self.regions)} are read: name one")
            region = self.regions[0]
        if region not in self.regions:
            raise LensfinderError(f"region {region!r} is not among survey.regions {list(self.regions)}")
        return SurveyTree(self.root, self.release, region, self.sweep_version)

    def sweep_id(self, region: str, stem: str) -> str:
        return f"{region}/{stem}" if self.multi_region else stem

    def locate(self, sweep_id: str) -> tuple[SurveyTree, str]:
        """(tree, file stem) of a sweep ID; a multi-region run needs the region prefix."""
        region, stem = split_sweep_id(sweep_id)
        if region is None and self.multi_region:
            raise LensfinderError(
                f"sweep {sweep_id!r} names no region, but survey.regions is {list(self.regions)}: "
                f"write it as <region>/{stem}"
            )
        return self.tree(region), stem

    def sweep_path(self, sweep_id: str) -> Path:
        tree, stem = self.locate(sweep_id)
        return tree.sweep_path(stem)


def survey_regions(config) -> list[str]:
    """The regions a run reads: ``survey.regions`` (a list), or ``survey.region`` (one).

    Both may be given only if they agree (``region: south`` with ``regions: [south]``);
    ``region: null`` counts as not given (for a config file layered on the default).
    """
    s = config["survey"]
    region, regions = s.get("region"), s.get("regions")
    if region is None and not regions:
        raise LensfinderError("the config names no survey region: set survey.regions (e.g. [north, south]) "
                              "or survey.region (south or north)")
    if region is not None and regions and list(regions) != [region]:
        raise LensfinderError(
            f"survey.region ({region}) and survey.regions ({list(regions)}) disagree: give only survey.regions "
            "for several regions (set survey.region: null where another config file sets it)"
        )
    return list(regions) if regions else [region]


def survey_trees(config) -> SurveyTrees:
    s = config["survey"]
    return SurveyTrees(s["root"], s["release"], survey_regions(config), s.get("sweep_version"))


def survey_tree(config, region: str | None = None) -> SurveyTree:
    """The tree of ``region``; without one, of the run's only region."""
    return survey_trees(config).tree(region)
