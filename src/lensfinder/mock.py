"""A miniature Legacy Surveys tree (DR10 south by default) with simulated strong lenses.

``write_mock_survey(root, MockConfig(...))`` writes, under ``root``:

* ``dr10/survey-bricks.fits.gz``: the bricks-table rows around the mock area (real
  columns and dtypes; the real file holds the whole sky);
* ``dr10/south/survey-bricks-dr10-south.fits.gz``: lower-case summary of bricks with data;
* ``dr10/south/sweep/10.1/sweep-*.fits``: 5x5-deg sweeps with all 130 DR10 columns;
* ``dr10/south/coadd/<AAA>/<brick>/legacysurvey-<brick>-image-{g,r,z}.fits.fz``: float32
  nanomaggies, RICE-compressed in 100x100 tiles in HDU 1 behind an empty primary, TAN WCS;
* ``catalogues/known_lenses.{csv,fits}``: part of the lenses plus some grade-C look-alikes;
* ``truth/lenses.csv`` and ``truth/lookalikes.csv``: every simulated system.

With ``release: dr9`` and ``regions: [north, south]`` it writes a DR9 tree with both
regions instead (``dr9/{north,south}/sweep/9.0/``: 10x5-deg sweeps, 115 columns,
RELEASE 9011 north and 9010 south): as in the real north/south overlap strip, each
region's tree holds every mock brick, imaged with its own survey's seeing, depth and
exposures, so every object is in both trees (the overlap duplicates) and the selection's
region cut keeps each once. Place such a mock across Dec 32.375 north of the Galactic
plane (e.g. RA 155, Dec 32.3).

The sky is drawn from ``seed`` alone, so the same config writes identical files.
Catalogue rows hold exactly the drawn positions, types, shapes and fluxes (observed,
i.e. after Galactic extinction); the light of lensed arcs is in the images but not in
any row (the Tractor would model it as residual or extra sources).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fitsio
import numpy as np

from . import sky
from .errors import LensfinderError, atomic_path
from .survey import (
    BANDS,
    REGIONS,
    RELEASE_REGIONS,
    BrickGrid,
    SurveyTree,
    desi_names,
    parse_sweep_name,
    photometric_region,
    sweep_box_for,
    sweep_dtype,
    sweep_name,
    sweep_units,
)

PIXSCALE = 0.262  # arcsec / pixel of the coadds (north and south alike)
# Median DECaLS PSF FWHM [arcsec] and 5-sigma point-source depth of one exposure [AB mag].
PSF_FWHM = {"g": 1.29, "r": 1.18, "z": 1.11}
DEPTH_1EXP = {"g": 23.4, "r": 22.8, "z": 21.9}
# North: BASS g, r and MzLS z median FWHM (papers II, III); one-exposure depths approximate.
REGION_PSF_FWHM = {"south": PSF_FWHM, "north": {"g": 1.61, "r": 1.47, "z": 1.01}}
REGION_DEPTH_1EXP = {"south": DEPTH_1EXP, "north": {"g": 23.2, "r": 22.7, "z": 22.0}}
REGION_SURVEY = {"south": "DECaLS", "north": "BASS+MzLS"}
RELEASE_NUMBERS = {("dr10", "south"): 10000, ("dr9", "south"): 9010, ("dr9", "north"): 9011}
MOCK_RELEASES = ("dr9", "dr10")
# A_X = R_X * E(B-V) (SFD98 coefficients used by legacypipe), for g r i z W1-W4.
EXTINCTION_R = {"G": 3.214, "R": 2.165, "I": 1.592, "Z": 1.211, "W1": 0.184, "W2": 0.113, "W3": 0.0241, "W4": 0.0091}
TYPE_FRACTIONS = {"SER": 0.49, "DEV": 0.18, "REX": 0.22, "EXP": 0.11}  # DR10 z < 20 non-PSF
DEFLECTOR_TYPES = {"SER": 0.70, "DEV": 0.19, "REX": 0.08, "EXP": 0.03}  # paper IV's training lenses


@dataclass
class MockConfig:
    """Size and content of the mock. Counts are per brick unless named otherwise."""

    seed: int = 42
    ra_center: float = 150.0  # RA 150 is a sweep boundary: the mock straddles two sweeps
    dec_center: float = 2.0
    n_bricks_ra: int = 4
    n_bricks_dec: int = 3
    image_size: int = 3600
    galaxies: int = 1500  # field galaxies down to z = 22.5
    stars: int = 300
    lenses: int = 20
    lookalikes: int = 12  # split evenly between blue companions, spirals and rings
    catalogued_fraction: float = 0.6
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
        if not set(regions) <= set(RELEASE_REGIONS[self.release]):
            raise LensfinderError(f"mock.regions {regions}: {self.release.upper()} has no north region "
                                  "(BASS/MzLS are in DR9): set mock.release: dr9")

    @property
    def ordered_regions(self) -> list[str]:
        """The regions in a fixed order (south first): the sky does not depend on list order."""
        return [r for r in REGIONS if r in self.regions]

    @classmethod
    def from_dict(cls, d: dict | None) -> "MockConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise LensfinderError(f"config key(s) mock.{sorted(unknown)} are not mock settings")
        return cls(**d)


# ----------------------------------------------------------------------------- layout
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


# ----------------------------------------------------------------------------- sky
@dataclass
class Source:
    """A catalogue row to be: Tractor type, shape and its light components."""

    ra: float
    dec: float
    type: str
    flux: np.ndarray  # observed nanomaggies g, r, z
    shape_r: float = 0.0
    e1: float = 0.0
    e2: float = 0.0
    sersic: float = 0.0
    components: list = field(default_factory=list)
    kind: str = "field"


def _mag_to_flux(mag):
    return 10 ** (-0.4 * (np.asarray(mag) - 22.5))


def _colours(rng, red: bool):
    if red:
        return rng.normal(1.45, 0.15), rng.normal(0.85, 0.10)
    return rng.normal(0.6, 0.2), rng.normal(0.45, 0.15)


def _fluxes_from_z(zmag, g_r, r_z, transmission):
    mags = np.array([zmag + r_z + g_r, zmag + r_z, zmag])
    return _mag_to_flux(mags) * transmission


def _galaxy(rng, ra, dec, zmag, gtype, transmission, red=None, size_scale=1.0) -> Source:
    if red is None:
        red = gtype == "DEV" or (gtype == "SER" and rng.random() < 0.6)
    g_r, r_z = _colours(rng, red)
    flux = _fluxes_from_z(zmag, g_r, r_z, transmission)
    median_re = {"REX": 0.5, "DEV": 1.0, "EXP": 1.3, "SER": 1.2}[gtype] * 10 ** (-0.15 * (zmag - 19.0))
    r_e = float(np.clip(median_re * 10 ** rng.normal(0, 0.2) * size_scale, 0.15, 8.0))
    if gtype == "REX":
        e1 = e2 = 0.0
    else:
        emax = 0.35 if gtype == "DEV" else 0.6
        e, phi = rng.uniform(0, emax), rng.uniform(0, np.pi)
        e1, e2 = e * np.cos(2 * phi), e * np.sin(2 * phi)
    n = {"REX": 1.0, "EXP": 1.0, "DEV": 4.0}.get(gtype) or float(rng.uniform(0.6, 5.5))
    comp = sky.Component(ra, dec, flux, sky.sersic_shape(r_e, n, e1, e2), extent=min(6 * r_e, 25.0),
                         oversample=5 if r_e < 1.0 else 3)
    return Source(ra, dec, gtype, flux, r_e, e1, e2, n, [comp])


def _offset(ra, dec, east, north):
    """Position [deg] offset by (east, north) arcsec from (ra, dec)."""
    return ra + east / 3600.0 / math.cos(math.radians(dec)), dec + north / 3600.0


class MockSky:
    """The drawn sky: sources (catalogue rows), lens and look-alike truth, and each
    region's survey conditions (exposure footprints, per-brick seeing)."""

    def __init__(self, cfg: MockConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.bricks = mock_bricks(cfg)
        self.sources: list[Source] = []
        self.lenses: list[dict] = []
        self.lookalikes: list[dict] = []
        b = self.bricks
        pad = 0.2
        self.area = (b["RA1"].min() - pad, b["RA2"].max() + pad, b["DEC1"].min() - pad, b["DEC2"].max() + pad)
        # The first region's conditions come from the main stream before the sky (so a
        # south-only mock is what it always was); further regions have their own streams.
        self.conditions = {}
        for k, region in enumerate(cfg.ordered_regions):
            rng = self.rng if k == 0 else np.random.default_rng([cfg.seed, 9, k])
            self.conditions[region] = self._draw_conditions(rng, region)
        self.primary = cfg.ordered_regions[0]
        self.exposures, self.psf = self.conditions[self.primary]
        self._draw_sky()

    # -- survey conditions
    def _draw_conditions(self, rng, region):
        """Per band, random 0.35-deg square exposure footprints (NOBS = how many cover a
        point), and per brick and band the seeing, +-psf_variation around the region's median."""
        ra0, ra1, d0, d1 = self.area
        size = 0.35
        n = int(math.ceil(self.cfg.mean_exposures * (ra1 - ra0 + size) * (d1 - d0 + size) / size**2))
        exposures = {}
        for band in BANDS:
            cra = rng.uniform(ra0 - size / 2, ra1 + size / 2, n)
            cdec = rng.uniform(d0 - size / 2, d1 + size / 2, n)
            exposures[band] = np.stack([cra - size / 2, cra + size / 2, cdec - size / 2, cdec + size / 2], 1)
        median = REGION_PSF_FWHM[region]
        psf = {
            int(br["BRICKID"]): {
                band: median[band] * float(rng.uniform(1 - self.cfg.psf_variation, 1 + self.cfg.psf_variation))
                for band in BANDS
            }
            for br in self.bricks
        }
        return exposures, psf

    def nobs(self, band, ra, dec, region=None):
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        e = self.conditions[region or self.primary][0][band]
        inside = (
            (ra[..., None] >= e[:, 0]) & (ra[..., None] < e[:, 1]) & (dec[..., None] >= e[:, 2]) & (dec[..., None] < e[:, 3])
        )
        return inside.sum(-1).astype(np.int16)

    def nobs_map(self, band, wcs, shape, region=None):
        """NOBS on an image grid (separable in RA and Dec: exposures are RA/Dec boxes)."""
        h, w = shape
        ra_x, _ = wcs.all_pix2world(np.arange(w), np.full(w, (h - 1) / 2), 0)
        _, dec_y = wcs.all_pix2world(np.full(h, (w - 1) / 2), np.arange(h), 0)
        e = self.conditions[region or self.primary][0][band]
        in_x = (ra_x[:, None] >= e[:, 0]) & (ra_x[:, None] < e[:, 1])  # (w, n)
        in_y = (dec_y[:, None] >= e[:, 2]) & (dec_y[:, None] < e[:, 3])  # (h, n)
        return (in_y.astype(np.int16) @ in_x.T.astype(np.int16)).astype(np.int16)

    def home_region(self, ra, dec) -> str:
        """The region whose tree keeps an object after the region cut (its photometric
        region when the mock writes it, else the first region written)."""
        region = str(photometric_region([ra], [dec])[0])
        return region if region in self.conditions else self.primary

    @staticmethod
    def ebv(ra, dec):
        """A smooth mock E(B-V) field [mag], 0.02-0.06."""
        return 0.04 + 0.02 * np.sin(np.radians(ra) * 40.0) * np.cos(np.radians(dec) * 30.0)

    def transmission(self, ra, dec):
        ebv = self.ebv(ra, dec)
        return np.array([10 ** (-EXTINCTION_R[b.upper()] * ebv / 2.5) for b in BANDS])

    # -- populations
    def _random_position(self, margin_arcsec=0.0):
        br = self.bricks[self.rng.integers(len(self.bricks))]
        m = margin_arcsec / 3600.0
        ra = self.rng.uniform(br["RA1"] + m, br["RA2"] - m)
        dec = self.rng.uniform(br["DEC1"] + m, br["DEC2"] - m)
        return float(ra), float(dec)

    def _draw_type(self):
        types, p = zip(*TYPE_FRACTIONS.items())
        return str(self.rng.choice(types, p=np.array(p) / sum(p)))

    def _draw_sky(self):
        cfg, rng = self.cfg, self.rng
        nb = len(self.bricks)
        # Field galaxies: dN/dm ~ 10^(0.3 m) for 14.5 < z < 22.5 (inverse-CDF draw).
        u = rng.random(cfg.galaxies * nb)
        lo, hi = 10 ** (0.3 * 14.5), 10 ** (0.3 * 22.5)
        zmags = np.log10(lo + u * (hi - lo)) / 0.3
        for zmag in zmags:
            ra, dec = self._random_position()
            self.sources.append(_galaxy(rng, ra, dec, zmag, self._draw_type(), self.transmission(ra, dec)))
        # Stars: PSF sources, 14 < z < 22.
        for _ in range(cfg.stars * nb):
            ra, dec = self._random_position()
            zmag = rng.uniform(14.0, 22.0)
            g_r, r_z = float(np.clip(rng.normal(0.9, 0.4), -0.3, 1.8)), float(np.clip(rng.normal(0.4, 0.3), -0.3, 1.5))
            flux = _fluxes_from_z(zmag, g_r, r_z, self.transmission(ra, dec))
            self.sources.append(Source(ra, dec, "PSF", flux, components=[sky.Component(ra, dec, flux, None)]))
        # Bright galaxies at the brick corners (cutouts there cross brick edges).
        for br in self.bricks:
            for cra, cdec in ((br["RA1"], br["DEC1"]), (br["RA2"], br["DEC2"]), (br["RA1"], br["DEC2"]), (br["RA2"], br["DEC1"])):
                east = rng.uniform(0.5, 4.0) * (1 if cra == br["RA1"] else -1)
                north = rng.uniform(0.5, 4.0) * (1 if cdec == br["DEC1"] else -1)
                ra, dec = _offset(float(cra), float(cdec), east, north)
                src = _galaxy(rng, ra, dec, rng.uniform(17.5, 19.5), self._draw_type(), self.transmission(ra, dec))
                src.kind = "corner"
                self.sources.append(src)
        for i in range(cfg.lenses * nb):
            self._add_lens(i)
        kinds = ("companion", "spiral", "ring")
        for i in range(cfg.lookalikes * nb):
            getattr(self, f"_add_{kinds[i % 3]}")(i)

    def _add_lens(self, i):
        rng = self.rng
        ra, dec = self._random_position(margin_arcsec=2.0)
        trans = self.transmission(ra, dec)
        types, p = zip(*DEFLECTOR_TYPES.items())
        gtype = str(rng.choice(types, p=p))
        defl = _galaxy(rng, ra, dec, rng.uniform(17.0, 19.5), gtype, trans, red=True, size_scale=1.3)
        defl.kind = "lens"
        theta_e = float(rng.uniform(1.0, 3.0))
        q_e = rng.uniform(0.0, 0.3)
        phi = rng.uniform(0, np.pi)
        shear = rng.uniform(0.0, 0.08)
        sphi = rng.uniform(0, np.pi)
        beta = theta_e * 0.6 * math.sqrt(rng.random())
        bphi = rng.uniform(0, 2 * np.pi)
        src_off = (beta * math.cos(bphi), beta * math.sin(bphi))
        src_re = float(rng.uniform(0.15, 0.5))
        se, sphi2 = rng.uniform(0, 0.4), rng.uniform(0, np.pi)
        src_g = float(rng.uniform(21.0, 23.0))
        g_r, r_z = rng.normal(0.25, 0.1), rng.normal(0.2, 0.1)
        src_flux = _mag_to_flux(np.array([src_g, src_g - g_r, src_g - g_r - r_z])) * trans
        shape = sky.lensed_shape(
            theta_e, q_e * math.cos(2 * phi), q_e * math.sin(2 * phi), shear * math.cos(2 * sphi),
            shear * math.sin(2 * sphi), src_off, src_re, 1.0, se * math.cos(2 * sphi2), se * math.sin(2 * sphi2),
        )
        arc = sky.Component(ra, dec, src_flux, shape, extent=theta_e + 2.5, absolute=True, oversample=4)
        defl.components.append(arc)
        self.sources.append(defl)
        self.lenses.append(
            {
                "lens_id": f"L{i:04d}", "ra": ra, "dec": dec, "theta_e": theta_e, "sie_e": q_e,
                "shear": shear, "source_r_e": src_re, "source_mag_g": src_g,
                "source_flux_g": src_flux[0], "source_flux_r": src_flux[1], "source_flux_z": src_flux[2],
                "_source": defl, "_arc": arc,
            }
        )

    def _add_companion(self, i):
        rng = self.rng
        ra, dec = self._random_position(margin_arcsec=5.0)
        host = _galaxy(rng, ra, dec, rng.uniform(17.5, 19.5), "DEV", self.transmission(ra, dec), red=True)
        sep, pa = rng.uniform(1.5, 4.0), rng.uniform(0, 2 * np.pi)
        cra, cdec = _offset(ra, dec, sep * math.sin(pa), sep * math.cos(pa))
        comp = _galaxy(rng, cra, cdec, rng.uniform(20.5, 21.5), "REX", self.transmission(cra, cdec), red=False, size_scale=0.6)
        host.kind, comp.kind = "lookalike", "lookalike_part"
        self.sources += [host, comp]
        self.lookalikes.append({"lookalike_id": f"K{i:04d}", "kind": "companion", "ra": ra, "dec": dec, "_source": host})

    def _add_spiral(self, i):
        rng = self.rng
        ra, dec = self._random_position(margin_arcsec=5.0)
        trans = self.transmission(ra, dec)
        gal = _galaxy(rng, ra, dec, rng.uniform(17.0, 19.0), "EXP", trans, red=False, size_scale=1.8)
        g_r, r_z = _colours(rng, red=False)
        z_arms = 22.5 - 2.5 * math.log10(gal.flux[2] / trans[2]) + 1.0  # arms: 1 mag below the disc
        arm_flux = _fluxes_from_z(z_arms, g_r - 0.2, r_z - 0.1, trans)
        shape = sky.spiral_shape(max(gal.shape_r, 1.0) / 1.68, rng.uniform(12, 25), 2, gal.e1, gal.e2, rng.uniform(0, 6.28))
        gal.components.append(sky.Component(ra, dec, arm_flux, shape, extent=6 * max(gal.shape_r, 1.0)))
        gal.flux = gal.flux + arm_flux
        gal.kind = "lookalike"
        self.sources.append(gal)
        self.lookalikes.append({"lookalike_id": f"K{i:04d}", "kind": "spiral", "ra": ra, "dec": dec, "_source": gal})

    def _add_ring(self, i):
        rng = self.rng
        ra, dec = self._random_position(margin_arcsec=5.0)
        trans = self.transmission(ra, dec)
        gal = _galaxy(rng, ra, dec, rng.uniform(17.5, 19.5), "DEV", trans, red=True)
        radius, width = rng.uniform(1.8, 3.5), rng.uniform(0.3, 0.5)
        g_r, r_z = _colours(rng, red=False)
        zring = -2.5 * math.log10(gal.flux[2] / trans[2]) + 22.5 + rng.uniform(0.3, 1.2)
        ring_flux = _fluxes_from_z(zring, g_r, r_z, trans)
        shape = sky.ring_shape(radius, width, gal.e1 * 0.5, gal.e2 * 0.5, clumps=int(rng.integers(0, 4)), phase=rng.uniform(0, 6.28))
        gal.components.append(sky.Component(ra, dec, ring_flux, shape, extent=radius + 3 * width))
        gal.flux = gal.flux + ring_flux
        gal.kind = "lookalike"
        self.sources.append(gal)
        self.lookalikes.append({"lookalike_id": f"K{i:04d}", "kind": "ring", "ra": ra, "dec": dec, "_source": gal})

    def components(self):
        return [c for s in self.sources for c in s.components]


# ----------------------------------------------------------------------------- writing
def brick_wcs_header(brick, size: int) -> list[dict]:
    """TAN WCS cards of a coadd centred on the brick centre, legacypipe style."""
    return [
        {"name": "CTYPE1", "value": "RA---TAN", "comment": "TANgent plane"},
        {"name": "CTYPE2", "value": "DEC--TAN", "comment": "TANgent plane"},
        {"name": "CRVAL1", "value": float(brick["RA"]), "comment": "Reference RA"},
        {"name": "CRVAL2", "value": float(brick["DEC"]), "comment": "Reference Dec"},
        {"name": "CRPIX1", "value": size / 2 + 0.5, "comment": "Reference x"},
        {"name": "CRPIX2", "value": size / 2 + 0.5, "comment": "Reference y"},
        {"name": "CD1_1", "value": -PIXSCALE / 3600.0, "comment": "CD matrix"},
        {"name": "CD1_2", "value": 0.0, "comment": "CD matrix"},
        {"name": "CD2_1", "value": 0.0, "comment": "CD matrix"},
        {"name": "CD2_2", "value": PIXSCALE / 3600.0, "comment": "CD matrix"},
        {"name": "EQUINOX", "value": 2000.0, "comment": "Equatorial coordinates definition (yr)"},
    ]


def _wcs_from_cards(cards, size):
    from astropy.io import fits as afits
    from astropy.wcs import WCS

    hdr = afits.Header([(c["name"], c["value"]) for c in cards])
    hdr["NAXIS"], hdr["NAXIS1"], hdr["NAXIS2"] = 2, size, size
    return WCS(hdr)


def _write_bricks(trees: list[SurveyTree], bricks: np.ndarray, cfg: MockConfig):
    grid = BrickGrid.build()
    b = bricks
    around = grid.bricks_in_box(b["RA1"].min() - 1, b["RA2"].max() + 1, b["DEC1"].min() - 1, b["DEC2"].max() + 1)
    with atomic_path(trees[0].bricks_path) as tmp:
        fitsio.write(str(tmp), around, extname="BRICKS", clobber=True)
    summary = np.zeros(len(b), dtype=[("brickname", "S8"), ("brickid", ">i4"), ("ra", ">f8"), ("dec", ">f8"),
                                      ("ra1", ">f8"), ("ra2", ">f8"), ("dec1", ">f8"), ("dec2", ">f8")])
    for name in summary.dtype.names:
        summary[name] = b[name.upper()]
    for tree in trees:  # every region's tree holds every mock brick (the overlap strip)
        with atomic_path(region_bricks_path(tree)) as tmp:
            fitsio.write(str(tmp), summary, clobber=True)


def _render_brick(msky: MockSky, tree: SurveyTree, brick, components, cfg: MockConfig):
    size = cfg.image_size
    cards = brick_wcs_header(brick, size)
    wcs = _wcs_from_cards(cards, size)
    name = brick["BRICKNAME"].decode()
    region = tree.region
    # the first region keeps the noise streams it always had; others get their own
    stream = [] if region == msky.primary else [cfg.ordered_regions.index(region)]
    for ib, band in enumerate(BANDS):
        fwhm = msky.conditions[region][1][int(brick["BRICKID"])][band]
        image = sky.render_image(components, wcs, (size, size), fwhm, ib)
        nobs = msky.nobs_map(band, wcs, (size, size), region)
        if cfg.noise:
            rng = np.random.default_rng([cfg.seed, int(brick["BRICKID"]), ib, *stream])
            sigma1 = _pixel_sigma_1exp(band, fwhm, region)
            noise = rng.standard_normal((size, size), dtype=np.float32) * np.float32(sigma1)
            image += noise / np.sqrt(np.maximum(nobs, 1)).astype(np.float32)
        image[nobs == 0] = 0.0  # no exposures: no data (legacypipe writes 0)
        hdr = [
            {"name": "LSDR", "value": cfg.release.upper()},
            {"name": "DRVERSIO", "value": RELEASE_NUMBERS[(cfg.release, region)]},
            {"name": "SURVEY", "value": "DECaLS+BASS+MzLS"}, {"name": "BRICK", "value": name},
            {"name": "BRICKID", "value": int(brick["BRICKID"])},
            {"name": "RAMIN", "value": float(brick["RA1"])}, {"name": "RAMAX", "value": float(brick["RA2"])},
            {"name": "DECMIN", "value": float(brick["DEC1"])}, {"name": "DECMAX", "value": float(brick["DEC2"])},
            {"name": "CENTRA", "value": float(brick["RA"])}, {"name": "CENTDEC", "value": float(brick["DEC"])},
            {"name": "BANDS", "value": "grz"}, {"name": "NBANDS", "value": 3},
            {"name": "BAND0", "value": "g"}, {"name": "BAND1", "value": "r"}, {"name": "BAND2", "value": "z"},
            *cards,
            {"name": "FILTERX", "value": band}, {"name": "IMTYPE", "value": "image"},
            {"name": "PRODTYPE", "value": "image"}, {"name": "MAGZERO", "value": 22.5},
            {"name": "BUNIT", "value": "nanomaggy"}, {"name": "MOCKPSF", "value": fwhm, "comment": "mock Gaussian PSF FWHM [arcsec]"},
        ]
        path = tree.coadd_path(name, band)
        with atomic_path(path) as tmp:
            with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
                f.write(image, header=hdr, compress="RICE", tile_dims=(100, 100), qlevel=-1e-4,
                        qmethod="SUBTRACTIVE_DITHER_2", dither_seed="checksum")


def _pixel_sigma_1exp(band, fwhm, region="south"):
    """Per-pixel noise [nmgy] of one exposure giving the band's 5-sigma point-source depth."""
    sigma_psf = 10 ** (-0.4 * (REGION_DEPTH_1EXP[region][band] - 22.5)) / 5.0
    nea = 4 * math.pi * (fwhm * sky.FWHM_TO_SIGMA / PIXSCALE) ** 2  # noise-equivalent area [pix]
    return sigma_psf / math.sqrt(nea)


def _sweep_rows(msky: MockSky, cfg: MockConfig, region: str | None = None) -> np.ndarray:
    """All sources as sweep rows of ``region``'s tree (default: the first region), in the
    release's layout, grouped by brick, OBJID contiguous from 0; NOBS, PSF and depth are
    that region's. Sets each source's key in the tree that keeps it (``home_region``)."""
    region = region or msky.primary
    release_number = RELEASE_NUMBERS[(cfg.release, region)]
    grid = BrickGrid.build()
    srcs = msky.sources
    ra = np.array([s.ra for s in srcs])
    dec = np.array([s.dec for s in srcs])
    owner = grid.lookup(ra, dec)
    order = np.lexsort((np.arange(len(srcs)), owner["BRICKID"]))
    rows = np.zeros(len(srcs), dtype=sweep_dtype(cfg.release))
    columns = set(rows.dtype.names)
    psf_of_brick = msky.conditions[region][1]
    objid = {}
    for k, i in enumerate(order):
        s, b = srcs[i], owner[i]
        bid = int(b["BRICKID"])
        objid[bid] = objid.get(bid, -1) + 1
        r = rows[k]
        r["RELEASE"], r["BRICKID"], r["BRICKNAME"], r["OBJID"] = release_number, bid, b["BRICKNAME"], objid[bid]
        r["TYPE"], r["RA"], r["DEC"] = s.type, s.ra, s.dec
        r["RA_IVAR"] = r["DEC_IVAR"] = 1.0 / (0.02 / 3600) ** 2
        r["EBV"] = msky.ebv(s.ra, s.dec)
        for band_i, band in enumerate(BANDS):
            B = band.upper()
            n = int(msky.nobs(band, s.ra, s.dec, region))
            fwhm = psf_of_brick.get(bid, {}).get(band, REGION_PSF_FWHM[region][band])
            sig = _pixel_sigma_1exp(band, fwhm, region) / math.sqrt(max(n, 1))
            nea_psf = 4 * math.pi * (fwhm * sky.FWHM_TO_SIGMA / PIXSCALE) ** 2
            nea = nea_psf + 4 * math.pi * (s.shape_r / PIXSCALE) ** 2
            r[f"NOBS_{B}"] = n
            if n > 0:
                r[f"FLUX_{B}"] = s.flux[band_i]
                r[f"FLUX_IVAR_{B}"] = 1.0 / (sig**2 * nea)
                r[f"PSFSIZE_{B}"] = fwhm
                r[f"PSFDEPTH_{B}"] = 1.0 / (sig**2 * nea_psf)
                r[f"GALDEPTH_{B}"] = 1.0 / (sig**2 * (nea_psf + 4 * math.pi * (0.45 / PIXSCALE) ** 2))
                r[f"FIBERFLUX_{B}"] = r[f"FIBERTOTFLUX_{B}"] = 0.4 * s.flux[band_i]
                r[f"FRACIN_{B}"] = 1.0
        for B in EXTINCTION_R:
            if f"MW_TRANSMISSION_{B}" in columns:  # no i band before DR10
                r[f"MW_TRANSMISSION_{B}"] = 10 ** (-EXTINCTION_R[B] * r["EBV"] / 2.5)
        r["DCHISQ"] = [100.0, 120.0, 130.0, 130.0, 140.0] if s.type != "PSF" else [100.0, 90.0, 80.0, 80.0, 80.0]
        r["SHAPE_R"], r["SHAPE_E1"], r["SHAPE_E2"] = s.shape_r, s.e1, s.e2
        if s.type != "PSF":
            r["SHAPE_R_IVAR"] = r["SHAPE_E1_IVAR"] = r["SHAPE_E2_IVAR"] = 100.0
        r["SERSIC"] = s.sersic
        r["REF_CAT"] = "  "
        r["WISE_COADD_ID"] = "1497p015"
        if msky.home_region(s.ra, s.dec) == region:
            s.key = (release_number, bid, objid[bid])
    return rows


def _write_sweeps(tree: SurveyTree, rows: np.ndarray, cfg: MockConfig):
    units = sweep_units(cfg.release)
    for name in planned_sweeps(cfg):
        box = parse_sweep_name(name)
        sel = rows[box.contains(rows["RA"], rows["DEC"])]
        if len(sel) == 0:
            raise LensfinderError(f"mock sweep {name} would be empty: widen the mock area (mock.n_bricks_*)")
        hdr = [
            {"name": "BANDS", "value": "grz"}, {"name": "DRVERSIO", "value": RELEASE_NUMBERS[(cfg.release, tree.region)]},
            {"name": "LSDR", "value": cfg.release.upper()}, {"name": "SURVEY", "value": REGION_SURVEY[tree.region]},
            {"name": "RAMIN", "value": box.ra_min}, {"name": "DECMIN", "value": box.dec_min},
            {"name": "RAMAX", "value": box.ra_max}, {"name": "DECMAX", "value": box.dec_max},
            {"name": "DEPNAM00", "value": "gen_sweep"}, {"name": "DEPVER00", "value": "lensfinder-mock"},
        ]
        with atomic_path(tree.sweep_path(name)) as tmp:
            with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
                f.write(None, header=hdr)
                f.write(sel, extname="SWEEP", units=units)


def _write_table_csv(path, rows: list[dict], columns):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            for r in rows:
                w.writerow({k: r[k] for k in columns})


def desi_name(ra, dec) -> str:
    return desi_names([ra], [dec])[0]


def _write_catalogues(root: Path, msky: MockSky, cfg: MockConfig):
    rng = np.random.default_rng([cfg.seed, 7])
    known, lenses_truth, look_truth = [], [], []
    for lens in msky.lenses:
        src = lens["_source"]
        catalogued = bool(rng.random() < cfg.catalogued_fraction)
        grade = str(rng.choice(["A", "B", "C"], p=[0.5, 0.35, 0.15])) if catalogued else ""
        row = {k: v for k, v in lens.items() if not k.startswith("_")}
        row.update(release=src.key[0], brickid=src.key[1], objid=src.key[2], type=src.type,
                   flux_z=float(src.flux[2]), catalogued=catalogued, grade=grade)
        lenses_truth.append(row)
        if catalogued:
            jra, jdec = _offset(lens["ra"], lens["dec"], *rng.normal(0, 0.2, 2))
            known.append({"name": desi_name(jra, jdec), "ra": jra, "dec": jdec, "grade": grade, "reference": "mock"})
    for look in msky.lookalikes:
        src = look["_source"]
        listed = bool(rng.random() < 0.2)
        look_truth.append({"lookalike_id": look["lookalike_id"], "kind": look["kind"], "ra": look["ra"], "dec": look["dec"],
                           "release": src.key[0], "brickid": src.key[1], "objid": src.key[2], "type": src.type,
                           "flux_z": float(src.flux[2]), "listed_as_candidate": listed})
        if listed:  # a low-grade literature candidate that is in truth not a lens
            known.append({"name": desi_name(look["ra"], look["dec"]), "ra": look["ra"], "dec": look["dec"],
                          "grade": "C", "reference": "mock-candidate"})
    # literature systems elsewhere on the sky (outside the mock footprint)
    for _ in range(3):
        ra, dec = float(rng.uniform(0, 360)), float(rng.uniform(-30, 30))
        known.append({"name": desi_name(ra, dec), "ra": ra, "dec": dec, "grade": "A", "reference": "mock-elsewhere"})
    _write_table_csv(root / "catalogues/known_lenses.csv", known, ["name", "ra", "dec", "grade", "reference"])
    arr = np.zeros(len(known), dtype=[("NAME", "S24"), ("RA", "f8"), ("DEC", "f8"), ("GRADE", "S2"), ("REFERENCE", "S24")])
    for i, k in enumerate(known):
        arr[i] = (k["name"], k["ra"], k["dec"], k["grade"], k["reference"])
    with atomic_path(root / "catalogues/known_lenses.fits") as tmp:
        fitsio.write(str(tmp), arr, extname="LENSES", clobber=True)
    lens_cols = ["lens_id", "ra", "dec", "release", "brickid", "objid", "type", "flux_z", "theta_e", "sie_e", "shear",
                 "source_r_e", "source_mag_g", "source_flux_g", "source_flux_r", "source_flux_z", "catalogued", "grade"]
    _write_table_csv(root / "truth/lenses.csv", lenses_truth, lens_cols)
    look_cols = ["lookalike_id", "kind", "ra", "dec", "release", "brickid", "objid", "type", "flux_z", "listed_as_candidate"]
    _write_table_csv(root / "truth/lookalikes.csv", look_truth, look_cols)


def write_mock_survey(root, cfg: MockConfig, progress: bool = True) -> dict:
    """Generate the mock sky and write the whole tree under ``root``; returns planned_files."""
    from tqdm import tqdm

    root = Path(root)
    check_mock_regions(cfg)
    trees = mock_trees(root, cfg)
    msky = MockSky(cfg)
    rows = {tree.region: _sweep_rows(msky, cfg, tree.region) for tree in trees}
    _write_bricks(trees, msky.bricks, cfg)
    comps = msky.components()
    cra = np.array([c.ra for c in comps])
    cdec = np.array([c.dec for c in comps])
    for tree in trees:
        for brick in tqdm(msky.bricks, desc=f"mock coadds ({tree.region})", unit="brick", disable=not progress):
            # components whose light can reach this brick's image (image half-width ~0.131 deg)
            half = cfg.image_size * PIXSCALE / 3600 / 2 + 40 / 3600
            near = (np.abs(cdec - brick["DEC"]) < half) & (
                np.abs((cra - brick["RA"] + 180) % 360 - 180) * math.cos(math.radians(brick["DEC"])) < half
            )
            _render_brick(msky, tree, brick, [comps[i] for i in np.flatnonzero(near)], cfg)
        _write_sweeps(tree, rows[tree.region], cfg)
    _write_catalogues(root, msky, cfg)
    with atomic_path(root / "mock.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "n_sources": len(msky.sources),
                                   "n_lenses": len(msky.lenses), "n_lookalikes": len(msky.lookalikes)}, indent=1))
    return planned_files(root, cfg)
