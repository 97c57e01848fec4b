"""The mock sky: galaxies, stars, strong lenses and look-alikes drawn from the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lensfinder.constants import BANDS, EXTINCTION_R
from lensfinder.mock import light as sky
from lensfinder.mock.layout import MockConfig, mock_bricks
from lensfinder.survey.positions import photometric_region

# Median DECaLS PSF FWHM [arcsec] and 5-sigma point-source depth of one exposure [AB mag].
PSF_FWHM = {"g": 1.29, "r": 1.18, "z": 1.11}
DEPTH_1EXP = {"g": 23.4, "r": 22.8, "z": 21.9}
# North: BASS g, r and MzLS z median FWHM (papers II, III); one-exposure depths approximate.
REGION_PSF_FWHM = {"south": PSF_FWHM, "north": {"g": 1.61, "r": 1.47, "z": 1.01}}
REGION_DEPTH_1EXP = {"south": DEPTH_1EXP, "north": {"g": 23.2, "r": 22.7, "z": 22.0}}
REGION_SURVEY = {"south": "DECaLS", "north": "BASS+MzLS"}
RELEASE_NUMBERS = {("dr10", "south"): 10000, ("dr9", "south"): 9010, ("dr9", "north"): 9011}
TYPE_FRACTIONS = {"SER": 0.49, "DEV": 0.18, "REX": 0.22, "EXP": 0.11}  # DR10 z < 20 non-PSF
DEFLECTOR_TYPES = {"SER": 0.70, "DEV": 0.19, "REX": 0.08, "EXP": 0.03}  # paper IV's training lenses


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
