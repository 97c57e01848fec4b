"""Injection settings: the priors of lens and source, the deflector cuts, the grid, one lens's parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from lensfinder.constants import BANDS
from lensfinder.errors import LensfinderError
from lensfinder.mock.light import sersic_b
from lensfinder.mock.optics import DECAM_SKY_MAG  # nominal DECam zenith dark sky [AB mag/arcsec^2]
from lensfinder.settings import Settings, check_keys

INJECTION_RELEASE = 0  # the RELEASE of an injection's key: no survey release is 0
PRIOR_NAMES = ("theta_e", "source_mag", "source_r_e", "source_n", "source_g_r", "source_r_z", "source_q", "lens_q",
               "shear")


@dataclass
class Prior:
    """A one-dimensional prior: ``uniform`` (lo, hi), ``normal`` (mean, sigma, optionally
    truncated to [lo, hi]), ``loguniform`` (lo, hi > 0) or ``fixed`` (value)."""

    dist: str = "fixed"
    lo: float | None = None
    hi: float | None = None
    mean: float | None = None
    sigma: float | None = None
    value: float | None = None

    @classmethod
    def from_dict(cls, d, name: str) -> "Prior":
        if isinstance(d, (int, float)):
            return cls("fixed", value=float(d))
        try:
            prior = cls(**d)
        except TypeError as err:
            raise LensfinderError(f"injection.priors.{name}: {err}; give dist and its parameters") from None
        need = {"uniform": ("lo", "hi"), "loguniform": ("lo", "hi"), "normal": ("mean", "sigma"), "fixed": ("value",)}
        if prior.dist not in need:
            raise LensfinderError(f"injection.priors.{name}.dist {prior.dist!r} must be one of {sorted(need)}")
        missing = [k for k in need[prior.dist] if getattr(prior, k) is None]
        if missing:
            raise LensfinderError(f"injection.priors.{name} ({prior.dist}) needs {missing}")
        if prior.dist in ("uniform", "loguniform") and not prior.lo <= prior.hi:
            raise LensfinderError(f"injection.priors.{name}: lo {prior.lo} > hi {prior.hi}")
        if prior.dist == "loguniform" and prior.lo <= 0:
            raise LensfinderError(f"injection.priors.{name}: a loguniform prior needs lo > 0")
        return prior

    def draw(self, rng) -> float:
        if self.dist == "fixed":
            return float(self.value)
        if self.dist == "uniform":
            return float(rng.uniform(self.lo, self.hi))
        if self.dist == "loguniform":
            return float(np.exp(rng.uniform(np.log(self.lo), np.log(self.hi))))
        lo = -np.inf if self.lo is None else self.lo
        hi = np.inf if self.hi is None else self.hi
        for _ in range(1000):  # truncated normal by rejection (the bounds are wide in practice)
            v = rng.normal(self.mean, self.sigma)
            if lo <= v <= hi:
                return float(v)
        raise LensfinderError(f"normal prior {self} rarely falls inside [{lo}, {hi}]: widen the bounds")


DEFAULT_PRIORS = {  # the mock's own lens population (lensfinder.mock.sky.MockSky._add_lens)
    "theta_e": {"dist": "uniform", "lo": 1.0, "hi": 3.0},  # arcsec
    "source_mag": {"dist": "uniform", "lo": 21.0, "hi": 23.0},  # g AB, unlensed, before extinction
    "source_r_e": {"dist": "uniform", "lo": 0.15, "hi": 0.5},  # arcsec, half-light radius
    "source_n": {"dist": "fixed", "value": 1.0},  # Sersic index
    "source_g_r": {"dist": "normal", "mean": 0.25, "sigma": 0.1},
    "source_r_z": {"dist": "normal", "mean": 0.2, "sigma": 0.1},
    "source_q": {"dist": "uniform", "lo": 0.43, "hi": 1.0},  # axis ratio
    "lens_q": {"dist": "uniform", "lo": 0.54, "hi": 1.0},  # SIE axis ratio
    "shear": {"dist": "uniform", "lo": 0.0, "hi": 0.08},  # external shear strength
}


@dataclass
class DeflectorCuts(Settings):
    """Which selected objects may carry an injection."""

    section: ClassVar[str] = "injection.deflectors"
    types: list = field(default_factory=lambda: ["DEV", "SER", "REX"])
    zmag_max: float = 19.5  # observed z AB
    g_r_min: float | None = 1.0  # dereddened g - r (MAG_G_DERED - MAG_R_DERED); None: no cut
    max_missing: float = 0.0  # largest fraction of missing cutout pixels in any band
    # None: no catalogued or truth lens inside the deflector's cutout (its square, as the training
    # set's nonlens filter); a number: none within this radius [arcsec]
    exclude_radius_arcsec: float | None = None


@dataclass
class Grid(Settings):
    """The selection function's injections: ``n_per_bin`` in every (theta_E, magnitude) cell."""

    section: ClassVar[str] = "injection.grid"
    theta_e_bins: list = field(default_factory=lambda: [1.0, 1.5, 2.0, 2.5, 3.0])  # arcsec
    source_mag_bins: list = field(default_factory=lambda: [20.0, 20.5, 21.0, 21.5, 22.0, 22.5, 23.0, 23.5, 24.0])
    n_per_bin: int = 25
    snr_bins: list = field(default_factory=lambda: [0, 5, 10, 20, 40, 80, 160])  # ARC_SNR; the last bin is open


@dataclass
class InjectionConfig(Settings):
    section: ClassVar[str] = "injection"

    seed: int = 5
    oversample: int = 4  # ray-traced points per pixel side
    noise: bool = True  # add the arc's own photon noise
    sky_mag_per_arcsec2: dict = field(default_factory=lambda: dict(DECAM_SKY_MAG))
    source_offset_max: float = 0.6  # |source offset| <= this x theta_E, uniform in area
    priors: dict = field(default_factory=dict)
    deflectors: DeflectorCuts = field(default_factory=DeflectorCuts)
    grid: Grid = field(default_factory=Grid)
    crosscheck_mag_range: list | None = field(default_factory=lambda: [21.0, 23.0])
    shard_rows: int = 20000
    mosaic: int = 36  # injections shown in injections.png

    def __post_init__(self):
        priors = {**DEFAULT_PRIORS, **check_keys(self.priors, PRIOR_NAMES, "config section injection.priors")}
        self.priors = {k: v if isinstance(v, Prior) else Prior.from_dict(v, k) for k, v in priors.items()}
        if isinstance(self.deflectors, dict):
            self.deflectors = DeflectorCuts.from_dict(self.deflectors)
        if isinstance(self.grid, dict):
            self.grid = Grid.from_dict(self.grid)
        missing = [b for b in BANDS if b not in self.sky_mag_per_arcsec2]
        if missing:
            raise LensfinderError(f"injection.sky_mag_per_arcsec2 lacks band(s) {missing}")
        for name in ("theta_e_bins", "source_mag_bins", "snr_bins"):
            edges = list(getattr(self.grid, name))
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise LensfinderError(f"injection.grid.{name} {edges} must be at least two increasing edges")
        if self.oversample < 1:
            raise LensfinderError("injection.oversample must be at least 1")


    def as_dict(self) -> dict:
        d = asdict(self)
        d["priors"] = {k: {f: v for f, v in asdict(p).items() if v is not None} for k, p in self.priors.items()}
        return d


@dataclass
class LensParams:
    """One injection's lens and source. Angles: arcsec; PHI: degrees from East toward North."""

    theta_e: float
    lens_q: float = 1.0
    lens_phi: float = 0.0
    shear: float = 0.0
    shear_phi: float = 0.0
    source_x: float = 0.0  # source offset East of the deflector [arcsec]
    source_y: float = 0.0  # source offset North of the deflector [arcsec]
    source_r_e: float = 0.3
    source_n: float = 1.0
    source_q: float = 1.0
    source_phi: float = 0.0
    source_mag: float = 22.0  # g AB, unlensed, before Galactic extinction
    source_g_r: float = 0.25
    source_r_z: float = 0.2

    @staticmethod
    def _e12(q, phi_deg):
        e = (1.0 - q) / (1.0 + q)
        phi = math.radians(phi_deg)
        return e * math.cos(2 * phi), e * math.sin(2 * phi)

    def lenstronomy_kwargs(self):
        """(lens kwargs for ["SIE", "SHEAR"], source kwargs for ["SERSIC_ELLIPSE"]) in the
        (East, North) frame centred on the deflector; the source's amp is 1 (any scale)."""
        le1, le2 = self._e12(self.lens_q, self.lens_phi)
        se1, se2 = self._e12(self.source_q, self.source_phi)
        g1 = self.shear * math.cos(2 * math.radians(self.shear_phi))
        g2 = self.shear * math.sin(2 * math.radians(self.shear_phi))
        kw_lens = [{"theta_E": self.theta_e, "e1": le1, "e2": le2, "center_x": 0.0, "center_y": 0.0},
                   {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0}]
        kw_source = [{"amp": 1.0, "R_sersic": self.source_r_e, "n_sersic": self.source_n, "e1": se1, "e2": se2,
                      "center_x": self.source_x, "center_y": self.source_y}]
        return kw_lens, kw_source

    def source_mags(self) -> np.ndarray:
        """Unlensed source magnitudes (g, r, z), AB, before Galactic extinction."""
        g = self.source_mag
        return np.array([g, g - self.source_g_r, g - self.source_g_r - self.source_r_z])

    def source_fluxes(self, transmission) -> np.ndarray:
        """Unlensed source fluxes (g, r, z) in nanomaggies as observed through the
        deflector's Galactic extinction (``transmission``: MW_TRANSMISSION_{G,R,Z})."""
        return 10 ** (-0.4 * (self.source_mags() - 22.5)) * np.asarray(transmission, dtype=np.float64)

    def image_reach(self) -> float:
        """An image-plane radius [arcsec] around the deflector outside which the lensed
        source has no light to speak of (< 0.1% of the source's flux)."""
        from scipy.special import gammaincinv

        b = _sersic_b(self.source_n)
        r999 = (gammaincinv(2 * self.source_n, 0.999) / b) ** self.source_n * self.source_r_e / math.sqrt(self.source_q)
        offset = math.hypot(self.source_x, self.source_y)
        return self.theta_e / math.sqrt(self.lens_q) * (1 + 3 * self.shear) + offset + r999 + 0.5

    def columns(self) -> dict:
        """The parameters as index columns (upper case), with the lenstronomy ellipticities."""
        kw_lens, kw_source = self.lenstronomy_kwargs()
        mags = self.source_mags()
        return {"THETA_E": self.theta_e, "LENS_Q": self.lens_q, "LENS_PHI": self.lens_phi,
                "LENS_E1": kw_lens[0]["e1"], "LENS_E2": kw_lens[0]["e2"], "SHEAR": self.shear,
                "SHEAR_PHI": self.shear_phi, "GAMMA1": kw_lens[1]["gamma1"], "GAMMA2": kw_lens[1]["gamma2"],
                "SOURCE_X": self.source_x, "SOURCE_Y": self.source_y,
                "SOURCE_OFFSET": math.hypot(self.source_x, self.source_y), "SOURCE_R_E": self.source_r_e,
                "SOURCE_N": self.source_n, "SOURCE_Q": self.source_q, "SOURCE_PHI": self.source_phi,
                "SOURCE_E1": kw_source[0]["e1"], "SOURCE_E2": kw_source[0]["e2"],
                "SOURCE_MAG_G": mags[0], "SOURCE_MAG_R": mags[1], "SOURCE_MAG_Z": mags[2]}


def _sersic_b(n):
    """b_n of a Sersic profile (as lensfinder.mock.light; lenstronomy's own differs by < 0.1%)."""
    return float(sersic_b(n))


def draw_params(rng, cfg: InjectionConfig, theta_e: float | None = None, source_mag: float | None = None) -> LensParams:
    """One injection's parameters from the priors; ``theta_e``/``source_mag`` override theirs."""
    p = cfg.priors
    theta = p["theta_e"].draw(rng) if theta_e is None else float(theta_e)
    mag = p["source_mag"].draw(rng) if source_mag is None else float(source_mag)
    beta = cfg.source_offset_max * theta * math.sqrt(rng.random())  # uniform in area
    angle = rng.uniform(0, 2 * np.pi)
    return LensParams(
        theta_e=theta, lens_q=p["lens_q"].draw(rng), lens_phi=float(rng.uniform(0, 180)),
        shear=p["shear"].draw(rng), shear_phi=float(rng.uniform(0, 180)),
        source_x=beta * math.cos(angle), source_y=beta * math.sin(angle),
        source_r_e=p["source_r_e"].draw(rng), source_n=p["source_n"].draw(rng), source_q=p["source_q"].draw(rng),
        source_phi=float(rng.uniform(0, 180)), source_mag=mag,
        source_g_r=p["source_g_r"].draw(rng), source_r_z=p["source_r_z"].draw(rng),
    )
