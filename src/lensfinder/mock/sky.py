"""The mock sky: galaxies, stars, strong lenses and look-alikes drawn from the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lensfinder.constants import BANDS, EXTINCTION_R
from lensfinder.mock import light as sky
from lensfinder.mock import populations, zoo
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
    red: bool = False  # colour class (red sequence or blue cloud)
    zmag: float = 0.0  # z-band AB magnitude before Galactic extinction


def _mag_to_flux(mag):
    return 10 ** (-0.4 * (np.asarray(mag) - 22.5))


def _colours(rng, red: bool):
    if red:
        return rng.normal(1.45, 0.15), rng.normal(0.85, 0.10)
    return rng.normal(0.6, 0.2), rng.normal(0.45, 0.15)


def _fluxes_from_z(zmag, g_r, r_z, transmission):
    mags = np.array([zmag + r_z + g_r, zmag + r_z, zmag])
    return _mag_to_flux(mags) * transmission


# Red-sequence fraction by Tractor type: early types are mostly red, but discs and compact
# galaxies can be red too (a red object is not thereby a lens deflector).
RED_FRACTION = {"DEV": 0.85, "SER": 0.6, "EXP": 0.3, "REX": 0.35}


def _galaxy(rng, ra, dec, zmag, gtype, transmission, red=None, size_scale=1.0) -> Source:
    if red is None:
        red = bool(rng.random() < RED_FRACTION[gtype])
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
    return Source(ra, dec, gtype, flux, r_e, e1, e2, n, [comp], red=bool(red), zmag=float(zmag))


def _magnification(arcs, total_flux, extent, step=0.04) -> float:
    """Total magnification of a lensed source: its arcs' image-plane light [nmgy, g band],
    integrated on a ``step``-arcsec grid out to ``extent``, over its unlensed flux."""
    g = np.arange(-extent, extent, step) + step / 2
    dx, dy = np.meshgrid(g, g)
    light = sum(float(c.flux[0]) * c.shape(dx, dy).sum() for c in arcs) * step**2
    return light / float(total_flux[0])


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
        self.light_only: list[Source] = []  # artefacts with no catalogue row (ghosts)
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

    def home_regions(self, ra, dec) -> np.ndarray:
        """``home_region`` of many positions at once."""
        region = photometric_region(np.asarray(ra), np.asarray(dec)).astype(object)
        region[~np.isin(region, list(self.conditions))] = self.primary
        return region

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
        self._add_lenses(cfg.lenses * nb)
        self._add_contaminants(zoo.fractions(cfg.contaminants))

    def _bright_field(self) -> list[Source]:
        """Field galaxies a search could select (z < zoo.BRIGHT_ZMAG), not yet a lens or a look-alike."""
        return [s for s in self.sources if s.kind == "field" and s.type != "PSF" and s.zmag < zoo.BRIGHT_ZMAG]

    # -- lenses: field galaxies chosen by their cross-section (lensfinder.mock.populations)
    def _add_lenses(self, n: int):
        rng = self.rng
        pool = self._bright_field()
        if not pool:
            return
        cand = populations.lens_candidates(rng, [s.zmag for s in pool], [s.red for s in pool])
        for i, j in enumerate(populations.choose_deflectors(rng, cand["theta_e"], n)):
            self._make_lens(i, pool[j], {k: float(v[j]) for k, v in cand.items()})

    def _make_lens(self, i, defl: Source, physics: dict):
        rng = self.rng
        theta_e = physics["theta_e"]
        ra, dec = defl.ra, defl.dec
        trans = self.transmission(ra, dec)
        q_e, phi = rng.uniform(0.0, 0.3), rng.uniform(0, np.pi)
        shear, sphi = rng.uniform(0.0, 0.08), rng.uniform(0, np.pi)
        src = populations.draw_source(rng, theta_e)
        lens_args = (theta_e, q_e * math.cos(2 * phi), q_e * math.sin(2 * phi), shear * math.cos(2 * sphi),
                     shear * math.sin(2 * sphi), src["offset"])
        g = src["mag_g"]
        total = _mag_to_flux(np.array([g, g - src["g_r"], g - src["g_r"] - src["r_z"]])) * trans
        f = src["knot_fraction"]
        extent = theta_e + math.hypot(*src["offset"]) + 3 * src["r_e"] + 1.5  # holds every image
        disc = sky.Component(ra, dec, total * (1 - f), sky.lensed_shape(*lens_args, src["r_e"], 1.0, src["e1"], src["e2"]),
                             extent=extent, absolute=True, oversample=4)
        defl.components.append(disc)
        if f > 0:  # knots 0.1 mag bluer in g - r than the disc, same total colour budget otherwise
            bluer = _mag_to_flux(np.array([g - 0.1, g - src["g_r"], g - src["g_r"] - src["r_z"]])) * trans
            knots = sky.lensed_shape(*lens_args, src["r_e"], 1.0, 0.0, 0.0, knots=src["knots"])
            defl.components.append(sky.Component(ra, dec, bluer * f, knots, extent=extent, absolute=True, oversample=4))
        mu = _magnification(defl.components[1:], total, extent)
        defl.kind = "lens"
        self.lenses.append({
            "lens_id": f"L{i:04d}", "ra": ra, "dec": dec, "theta_e": theta_e, "sie_e": q_e, "shear": shear,
            "z_d": physics["z_d"], "z_s": physics["z_s"], "sigma_v": physics["sigma_v"],
            "source_r_e": src["r_e"], "source_knots": len(src["knots"]), "source_mag_g": g,
            "source_offset": math.hypot(*src["offset"]), "magnification": mu,
            "arc_mag_g": g - 2.5 * math.log10(max(mu, 1e-6)),
            "arc_contrast": populations.arc_contrast(mu * total[0], defl.flux[0], defl.shape_r, defl.sersic, theta_e),
            "source_flux_g": total[0], "source_flux_r": total[1], "source_flux_z": total[2],
            "_source": defl,
        })

    # -- the contaminant zoo (lensfinder.mock.zoo)
    def _add_contaminants(self, fractions: dict):
        rng = self.rng
        n_bright = len(self._bright_field())
        # a galaxy's features show only if it is resolved (r_e >= 0.8", well above the seeing's 0.6")
        eligible = {"spiral": lambda s: not s.red and s.type in ("EXP", "SER") and s.shape_r >= 0.8,
                    "edge_on": lambda s: not s.red and s.type in ("EXP", "SER") and s.shape_r >= 0.8,
                    "clumpy": lambda s: not s.red and s.type != "DEV" and s.shape_r >= 0.8,
                    "ring": lambda s: s.red and s.type in ("DEV", "SER")}
        count = 0
        for kind, f in fractions.items():
            pool = [s for s in self._bright_field() if eligible.get(kind, lambda s: True)(s)]
            k = min(int(round(f * n_bright)), len(pool))
            for j in rng.choice(len(pool), size=k, replace=False) if k else []:
                host = pool[int(j)]
                extra = getattr(self, f"_dress_{kind}")(host)
                host.kind = "lookalike"
                self.lookalikes.append({"lookalike_id": f"K{count:05d}", "kind": kind, "ra": host.ra, "dec": host.dec,
                                        "_source": host, **(extra or {})})
                count += 1

    def _brighter(self, host, light_flux):
        """Add light to a host's catalogue fluxes (the Tractor models the feature with it)."""
        host.flux = host.flux + light_flux

    def _dress_spiral(self, host):
        rng = self.rng
        trans = self.transmission(host.ra, host.dec)
        arms = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.5, 0.25, 0.15]))
        pitch = float(rng.uniform(10, 30))
        g_r, r_z = _colours(rng, red=False)
        arm_flux = _fluxes_from_z(host.zmag + rng.uniform(0.0, 1.5), g_r - 0.2, r_z - 0.1, trans)
        r_disc = max(host.shape_r, 0.8) / 1.68
        shape = sky.spiral_shape(r_disc, pitch, arms, host.e1 * 0.5, host.e2 * 0.5, rng.uniform(0, 2 * np.pi))
        host.components.append(sky.Component(host.ra, host.dec, arm_flux, shape, extent=6 * r_disc * 1.68))
        self._brighter(host, arm_flux)
        return {"detail": f"arms={arms} pitch={pitch:.0f}"}

    def _dress_ring(self, host):
        rng = self.rng
        trans = self.transmission(host.ra, host.dec)
        radius, width = rng.uniform(1.5, 4.0), rng.uniform(0.2, 0.5)
        g_r, r_z = _colours(rng, red=False)
        ring_flux = _fluxes_from_z(host.zmag + rng.uniform(0.3, 1.5), g_r, r_z, trans)
        clumps = int(rng.choice([0, 1, 2, 3]))
        shape = sky.ring_shape(radius, width, host.e1 * 0.5, host.e2 * 0.5, clumps=clumps, phase=rng.uniform(0, 6.28))
        host.components.append(sky.Component(host.ra, host.dec, ring_flux, shape, extent=radius + 3 * width))
        self._brighter(host, ring_flux)
        return {"detail": f"radius={radius:.2f} clumps={clumps}"}

    def _dress_edge_on(self, host):
        rng = self.rng
        h_r = max(host.shape_r, 0.6) / 1.68
        thin = float(rng.uniform(0.1, 0.2))
        pa = float(rng.uniform(0, 180))
        tau = float(rng.uniform(0.6, 1.2))
        shape = zoo.edge_on_shape(h_r, h_r * thin, pa, tau, 0.35 * h_r * thin)
        host.components = [sky.Component(host.ra, host.dec, host.flux, shape, extent=6 * h_r)]
        e = (1 - thin) / (1 + thin)
        host.e1, host.e2 = e * math.cos(2 * math.radians(pa)), e * math.sin(2 * math.radians(pa))
        return {"detail": f"h_z/h_r={thin:.2f} tau={tau:.2f}"}

    def _dress_clumpy(self, host):
        rng = self.rng
        trans = self.transmission(host.ra, host.dec)
        n = int(rng.integers(3, 9))
        r = max(host.shape_r, 0.5)
        xy = rng.uniform(-1.5 * r, 1.5 * r, (n, 2))
        w = rng.dirichlet(np.ones(n))
        knots = [(float(x), float(y), float(rng.uniform(0.1, 0.25)), float(wi)) for (x, y), wi in zip(xy, w)]
        g_r, r_z = _colours(rng, red=False)
        flux = _fluxes_from_z(host.zmag - 2.5 * math.log10(rng.uniform(0.2, 0.5)), g_r - 0.2, r_z - 0.1, trans)
        host.components.append(sky.Component(host.ra, host.dec, flux, zoo.knots_shape(knots), extent=2 * r + 1.0))
        self._brighter(host, flux)
        return {"detail": f"knots={n}"}

    def _dress_merger(self, host):
        rng = self.rng
        trans = self.transmission(host.ra, host.dec)
        sep, pa = rng.uniform(1.5, 4.0), rng.uniform(0, 2 * np.pi)
        east, north = sep * math.sin(pa), sep * math.cos(pa)
        ra2, dec2 = _offset(host.ra, host.dec, east, north)
        other = _galaxy(rng, ra2, dec2, host.zmag + rng.uniform(0.0, 1.5), self._draw_type(), self.transmission(ra2, dec2))
        other.kind = "lookalike_part"
        self.sources.append(other)
        tails = int(rng.integers(1, 3))
        for t in range(tails):
            x0, y0 = (0.0, 0.0) if t == 0 else (east, north)
            g_r, r_z = _colours(rng, red=False)
            flux = _fluxes_from_z(host.zmag + rng.uniform(2.0, 3.0), g_r, r_z, trans)
            shape = zoo.tail_shape(rng.uniform(3.0, 8.0), rng.uniform(0.3, 0.8), rng.uniform(0, 360),
                                   rng.uniform(60, 150) * (1 if t == 0 else -1), x0, y0)
            host.components.append(sky.Component(host.ra, host.dec, flux, shape, extent=20.0))
        return {"detail": f"separation={sep:.1f} tails={tails}"}

    def _dress_group(self, host):
        rng = self.rng
        n = int(rng.integers(2, 5))
        for _ in range(n):
            sep, pa = rng.uniform(2.0, 7.0), rng.uniform(0, 2 * np.pi)
            ra2, dec2 = _offset(host.ra, host.dec, sep * math.sin(pa), sep * math.cos(pa))
            member = _galaxy(rng, ra2, dec2, host.zmag + rng.uniform(0.5, 2.5), str(rng.choice(["REX", "EXP", "DEV"])),
                             self.transmission(ra2, dec2), size_scale=0.7)
            member.kind = "lookalike_part"
            self.sources.append(member)
        return {"detail": f"companions={n}"}

    def _dress_star_halo(self, host):
        rng = self.rng
        sep, pa = rng.uniform(8.0, 25.0), rng.uniform(0, 2 * np.pi)
        ra2, dec2 = _offset(host.ra, host.dec, sep * math.sin(pa), sep * math.cos(pa))
        zmag = rng.uniform(10.5, 13.5)
        flux = _fluxes_from_z(zmag, rng.normal(0.7, 0.2), rng.normal(0.3, 0.1), self.transmission(ra2, dec2))
        star = Source(ra2, dec2, "PSF", flux, components=[sky.Component(ra2, dec2, flux, None)], kind="lookalike_part",
                      zmag=zmag)
        length = 10.0 * 10 ** (-0.2 * (zmag - 12.0))  # brighter stars: longer spikes
        shape = zoo.star_artefact_shape(rng.uniform(3.0, 6.0), min(length, 28.0), 0.3)
        star.components.append(sky.Component(ra2, dec2, 0.02 * flux, shape, extent=28.0))
        self.sources.append(star)
        return {"detail": f"star_z={zmag:.1f} separation={sep:.0f}"}

    def _dress_trail(self, host):
        rng = self.rng
        band = int(rng.integers(0, 3))
        per_arcsec = 10 ** (-0.4 * (rng.uniform(23.0, 25.0) - 22.5))  # nmgy per arcsec of trail (after NOBS averaging)
        flux = np.zeros(3)
        flux[band] = per_arcsec * 56.0
        shape = zoo.trail_shape(rng.uniform(0, 180), rng.uniform(-6.0, 6.0), rng.uniform(0.4, 0.8) / 2.355, 28.0)
        host.components.append(sky.Component(host.ra, host.dec, flux, shape, extent=28.0))
        return {"detail": f"band={'grz'[band]}"}

    def _dress_ghost(self, host):
        rng = self.rng
        sep, pa = rng.uniform(3.0, 15.0), rng.uniform(0, 2 * np.pi)
        ra2, dec2 = _offset(host.ra, host.dec, sep * math.sin(pa), sep * math.cos(pa))
        outer = rng.uniform(6.0, 15.0)
        flux = np.zeros(3)
        bands = rng.choice(3, size=int(rng.integers(1, 3)), replace=False)
        area = math.pi * outer**2 * (1 - 0.36)
        flux[bands] = 10 ** (-0.4 * (rng.uniform(24.0, 25.5) - 22.5)) * area  # 24-25.5 mag/arcsec^2
        ghost = Source(ra2, dec2, "PSF", flux, components=[sky.Component(ra2, dec2, flux, zoo.ghost_shape(outer),
                                                                         extent=outer + 2.0)], kind="artefact")
        self.light_only.append(ghost)
        return {"detail": f"outer={outer:.0f} bands={''.join('grz'[b] for b in sorted(bands))}"}

    def components(self):
        """Every piece of light: the catalogue's sources and the artefacts no catalogue lists."""
        return [c for s in [*self.sources, *self.light_only] for c in s.components]
