"""A miniature Legacy Surveys tree (DR10 south by default) with simulated strong lenses.

``write_mock_survey(root, MockConfig(...))`` writes, under ``root``:

* ``dr10/survey-bricks.fits.gz``: the bricks-table rows around the mock area (real
  columns and dtypes; the real file holds the whole sky);
* ``dr10/south/survey-bricks-dr10-south.fits.gz``: lower-case summary of bricks with data;
* ``dr10/south/sweep/10.1/sweep-*.fits``: 5x5-deg sweeps with all 130 DR10 columns;
* ``dr10/south/coadd/<AAA>/<brick>/legacysurvey-<brick>-image-{g,r,z}.fits.fz``: float32
  nanomaggies, RICE-compressed in 100x100 tiles in HDU 1 behind an empty primary, TAN WCS;
* ``catalogues/known_lenses.{csv,fits}``: part of the lenses (mostly conspicuous ones) plus
  some grade-C look-alikes;
* ``truth/lenses.csv`` (every lens: deflector key, theta_E, z_d, z_s, sigma_v, source and
  magnification) and ``truth/lookalikes.csv`` (every contaminant: host key and kind).

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
import multiprocessing
from dataclasses import asdict
from pathlib import Path

import fitsio
import numpy as np

from lensfinder.constants import BANDS, EXTINCTION_R, PIXSCALE
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.mock import light as sky
from lensfinder.mock import optics, populations
from lensfinder.mock.layout import (
    MockConfig,
    check_mock_regions,
    mock_trees,
    planned_files,
    planned_sweeps,
    region_bricks_path,
)
from lensfinder.mock.sky import REGION_DEPTH_1EXP, REGION_PSF_FWHM, REGION_SURVEY, RELEASE_NUMBERS, MockSky, _offset
from lensfinder.survey.bricks import BrickGrid
from lensfinder.survey.positions import desi_names
from lensfinder.survey.sweeps import parse_sweep_name, sweep_dtype, sweep_units
from lensfinder.survey.tree import SurveyTree


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
    fwhms = {ib: msky.conditions[region][1][int(brick["BRICKID"])][band] for ib, band in enumerate(BANDS)}
    images = sky.render_bands(components, wcs, (size, size), fwhms)
    for ib, band in enumerate(BANDS):
        fwhm, image = fwhms[ib], images[ib]
        nobs = msky.nobs_map(band, wcs, (size, size), region)
        if cfg.noise:
            # the sky's noise, averaged over NOBS exposures, and the photon noise of every
            # object's light (the same law as injected arcs, lensfinder.mock.optics)
            rng = np.random.default_rng([cfg.seed, int(brick["BRICKID"]), ib, *stream])
            sigma_sky = _pixel_sigma_1exp(band, fwhm, region) / np.sqrt(np.maximum(nobs, 1))
            variance = sigma_sky**2 + optics.photon_variance(image, optics.DECAM_SKY_MAG[band], sigma_sky)
            noise = rng.standard_normal((size, size), dtype=np.float32) * np.sqrt(variance).astype(np.float32)
            image += noise
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
            {"name": "BUNIT", "value": "nanomaggy"}, {"name": "MOCKPSF", "value": fwhm, "comment": "mock Moffat PSF FWHM [arcsec]"},
            {"name": "MOCKBETA", "value": optics.MOFFAT_BETA, "comment": "mock Moffat PSF beta"},
        ]
        path = tree.coadd_path(name, band)
        with atomic_path(path) as tmp:
            with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
                f.write(image, header=hdr, compress="RICE", tile_dims=(100, 100), qlevel=-1e-4,
                        qmethod="SUBTRACTIVE_DITHER_2", dither_seed="checksum")


def _pixel_sigma_1exp(band, fwhm, region="south"):
    """Per-pixel noise [nmgy] of one exposure giving the band's 5-sigma point-source depth."""
    sigma_psf = 10 ** (-0.4 * (REGION_DEPTH_1EXP[region][band] - 22.5)) / 5.0
    return sigma_psf / math.sqrt(optics.noise_equivalent_area(fwhm))


def _sweep_rows(msky: MockSky, cfg: MockConfig, region: str | None = None) -> np.ndarray:
    """All sources as sweep rows of ``region``'s tree (default: the first region), in the
    release's layout, grouped by brick, OBJID contiguous from 0; NOBS, PSF and depth are
    that region's. Sets each source's key in the tree that keeps it (``home_region``)."""
    region = region or msky.primary
    release_number = RELEASE_NUMBERS[(cfg.release, region)]
    srcs = msky.sources
    n = len(srcs)
    ra = np.array([s.ra for s in srcs], dtype=np.float64)
    dec = np.array([s.dec for s in srcs], dtype=np.float64)
    owner = BrickGrid.build().lookup(ra, dec)
    order = np.lexsort((np.arange(n), owner["BRICKID"]))
    ra, dec, owner = ra[order], dec[order], owner[order]
    src = [srcs[i] for i in order]
    bid = owner["BRICKID"].astype(np.int64)
    # OBJID: 0, 1, ... within each brick (rows are sorted by brick)
    first = np.r_[0, np.flatnonzero(np.diff(bid)) + 1]
    objid = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
    rows = np.zeros(n, dtype=sweep_dtype(cfg.release))
    columns = set(rows.dtype.names)
    rows["RELEASE"], rows["BRICKID"], rows["BRICKNAME"], rows["OBJID"] = release_number, bid, owner["BRICKNAME"], objid
    types = np.array([s.type for s in src])
    rows["TYPE"], rows["RA"], rows["DEC"] = types, ra, dec
    rows["RA_IVAR"] = rows["DEC_IVAR"] = 1.0 / (0.02 / 3600) ** 2
    rows["EBV"] = msky.ebv(ra, dec)
    flux = np.array([s.flux for s in src], dtype=np.float64).reshape(n, 3)
    shape_r = np.array([s.shape_r for s in src], dtype=np.float64)
    psf_of_brick = msky.conditions[region][1]
    for band_i, band in enumerate(BANDS):
        B = band.upper()
        nobs = np.concatenate([msky.nobs(band, ra[i : i + 20000], dec[i : i + 20000], region)
                               for i in range(0, n, 20000)]) if n else np.zeros(0, np.int16)
        default = REGION_PSF_FWHM[region][band]
        fwhm_of = {b: psf_of_brick.get(b, {}).get(band, default) for b in np.unique(bid).tolist()}
        fwhm = np.array([fwhm_of[b] for b in bid.tolist()], dtype=np.float64)
        nea_psf = np.array([optics.noise_equivalent_area(f) for f in fwhm_of.values()])
        nea_psf = nea_psf[np.searchsorted(np.array(list(fwhm_of)), bid)] if n else nea_psf
        sig = np.array([_pixel_sigma_1exp(band, f, region) for f in fwhm_of.values()])
        sig = (sig[np.searchsorted(np.array(list(fwhm_of)), bid)] if n else sig) / np.sqrt(np.maximum(nobs, 1))
        nea = nea_psf + 4 * math.pi * (shape_r / PIXSCALE) ** 2
        seen = nobs > 0
        rows[f"NOBS_{B}"] = nobs
        rows[f"FLUX_{B}"] = np.where(seen, flux[:, band_i], 0.0)
        rows[f"FLUX_IVAR_{B}"] = np.where(seen, 1.0 / (sig**2 * nea), 0.0)
        rows[f"PSFSIZE_{B}"] = np.where(seen, fwhm, 0.0)
        rows[f"PSFDEPTH_{B}"] = np.where(seen, 1.0 / (sig**2 * nea_psf), 0.0)
        rows[f"GALDEPTH_{B}"] = np.where(seen, 1.0 / (sig**2 * (nea_psf + 4 * math.pi * (0.45 / PIXSCALE) ** 2)), 0.0)
        rows[f"FIBERFLUX_{B}"] = rows[f"FIBERTOTFLUX_{B}"] = np.where(seen, 0.4 * flux[:, band_i], 0.0)
        rows[f"FRACIN_{B}"] = np.where(seen, 1.0, 0.0)
    for B in EXTINCTION_R:
        if f"MW_TRANSMISSION_{B}" in columns:  # no i band before DR10
            rows[f"MW_TRANSMISSION_{B}"] = 10 ** (-EXTINCTION_R[B] * rows["EBV"] / 2.5)
    point = types == "PSF"
    rows["DCHISQ"] = np.where(point[:, None], [100.0, 90.0, 80.0, 80.0, 80.0], [100.0, 120.0, 130.0, 130.0, 140.0])
    rows["SHAPE_R"] = shape_r
    rows["SHAPE_E1"] = [s.e1 for s in src]
    rows["SHAPE_E2"] = [s.e2 for s in src]
    for c in ("SHAPE_R_IVAR", "SHAPE_E1_IVAR", "SHAPE_E2_IVAR"):
        rows[c] = np.where(point, 0.0, 100.0)
    rows["SERSIC"] = [s.sersic for s in src]
    rows["REF_CAT"] = "  "
    rows["WISE_COADD_ID"] = "1497p015"
    home = msky.home_regions(ra, dec)
    for s, b, o, h in zip(src, bid.tolist(), objid.tolist(), home):
        if h == region:
            s.key = (release_number, b, o)
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


def _write_catalogues(root: Path, msky: MockSky, cfg: MockConfig):
    rng = np.random.default_rng([cfg.seed, 7])
    known, lenses_truth, look_truth = [], [], []
    for lens in msky.lenses:
        src = lens["_source"]
        # earlier searches found the lenses that stand out: catalogued_fraction of the
        # conspicuous ones, a tenth as many of the others (lensfinder.mock.populations)
        conspicuous = populations.conspicuous(lens["theta_e"], lens["arc_mag_g"], lens["arc_contrast"])
        catalogued = bool(rng.random() < cfg.catalogued_fraction * (1.0 if conspicuous else 0.1))
        grade = str(rng.choice(["A", "B", "C"], p=[0.5, 0.35, 0.15])) if catalogued else ""
        row = {k: v for k, v in lens.items() if not k.startswith("_")}
        row.update(release=src.key[0], brickid=src.key[1], objid=src.key[2], type=src.type,
                   flux_z=float(src.flux[2]), conspicuous=conspicuous, catalogued=catalogued, grade=grade)
        lenses_truth.append(row)
        if catalogued:
            jra, jdec = _offset(lens["ra"], lens["dec"], *rng.normal(0, 0.2, 2))
            known.append({"name": desi_names([jra], [jdec])[0], "ra": jra, "dec": jdec, "grade": grade, "reference": "mock"})
    for look in msky.lookalikes:
        src = look["_source"]
        listed = bool(rng.random() < 0.03)
        look_truth.append({"lookalike_id": look["lookalike_id"], "kind": look["kind"], "ra": look["ra"], "dec": look["dec"],
                           "release": src.key[0], "brickid": src.key[1], "objid": src.key[2], "type": src.type,
                           "flux_z": float(src.flux[2]), "detail": look.get("detail", ""), "listed_as_candidate": listed})
        if listed:  # a low-grade literature candidate that is in truth not a lens
            known.append({"name": desi_names([look["ra"]], [look["dec"]])[0], "ra": look["ra"], "dec": look["dec"],
                          "grade": "C", "reference": "mock-candidate"})
    # literature systems elsewhere on the sky (outside the mock footprint)
    for _ in range(3):
        ra, dec = float(rng.uniform(0, 360)), float(rng.uniform(-30, 30))
        known.append({"name": desi_names([ra], [dec])[0], "ra": ra, "dec": dec, "grade": "A", "reference": "mock-elsewhere"})
    _write_table_csv(root / "catalogues/known_lenses.csv", known, ["name", "ra", "dec", "grade", "reference"])
    arr = np.zeros(len(known), dtype=[("NAME", "S24"), ("RA", "f8"), ("DEC", "f8"), ("GRADE", "S2"), ("REFERENCE", "S24")])
    for i, k in enumerate(known):
        arr[i] = (k["name"], k["ra"], k["dec"], k["grade"], k["reference"])
    with atomic_path(root / "catalogues/known_lenses.fits") as tmp:
        fitsio.write(str(tmp), arr, extname="LENSES", clobber=True)
    lens_cols = ["lens_id", "ra", "dec", "release", "brickid", "objid", "type", "flux_z", "theta_e", "sie_e", "shear",
                 "z_d", "z_s", "sigma_v", "source_r_e", "source_knots", "source_offset", "source_mag_g", "source_flux_g",
                 "source_flux_r", "source_flux_z", "magnification", "arc_mag_g", "arc_contrast", "conspicuous", "catalogued", "grade"]
    _write_table_csv(root / "truth/lenses.csv", lenses_truth, lens_cols)
    look_cols = ["lookalike_id", "kind", "ra", "dec", "release", "brickid", "objid", "type", "flux_z", "detail",
                 "listed_as_candidate"]
    _write_table_csv(root / "truth/lookalikes.csv", look_truth, look_cols)


def write_mock_survey(root, cfg: MockConfig, progress: bool = True, workers: int = 1) -> dict:
    """Generate the mock sky and write the whole tree under ``root``; returns planned_files.

    The coadds are rendered brick by brick, by ``workers`` processes (each brick's noise has
    its own random stream, so the files do not depend on the number of workers)."""
    root = Path(root)
    check_mock_regions(cfg)
    trees = mock_trees(root, cfg)
    msky = MockSky(cfg)
    rows = {tree.region: _sweep_rows(msky, cfg, tree.region) for tree in trees}
    _write_bricks(trees, msky.bricks, cfg)
    for tree in trees:
        _render_bricks(msky, tree, cfg, workers, progress)
        _write_sweeps(tree, rows[tree.region], cfg)
    _write_catalogues(root, msky, cfg)
    with atomic_path(root / "mock.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "n_sources": len(msky.sources),
                                   "n_lenses": len(msky.lenses), "n_lookalikes": len(msky.lookalikes)}, indent=1))
    return planned_files(root, cfg)


_RENDERING = None  # (msky, tree, cfg, components, their RA and Dec) while a tree's bricks are rendered


def _render_bricks(msky: MockSky, tree: SurveyTree, cfg: MockConfig, workers: int, progress: bool):
    """Every brick's coadds of ``tree``; with several workers, bricks are shared among forked
    processes (they inherit the drawn sky), and a worker that dies fails the job."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    global _RENDERING
    comps = msky.components()
    _RENDERING = (msky, tree, cfg, comps, np.array([c.ra for c in comps]), np.array([c.dec for c in comps]))
    n = len(msky.bricks)
    bar = dict(total=n, desc=f"mock coadds ({tree.region})", unit="brick", disable=not progress, mininterval=10)
    try:
        if workers <= 1 or n <= 1:
            for _ in tqdm(map(_render_one_brick, range(n)), **bar):
                pass
            return
        with ProcessPoolExecutor(min(workers, n), mp_context=multiprocessing.get_context("fork")) as pool:
            for _ in tqdm(pool.map(_render_one_brick, range(n)), **bar):
                pass
    finally:
        _RENDERING = None


def _render_one_brick(i: int) -> int:
    """Render brick ``i`` with the components whose light can reach its image (half-width ~0.131 deg)."""
    msky, tree, cfg, comps, cra, cdec = _RENDERING
    brick = msky.bricks[i]
    half = cfg.image_size * PIXSCALE / 3600 / 2 + 40 / 3600
    near = (np.abs(cdec - brick["DEC"]) < half) & (
        np.abs((cra - brick["RA"] + 180) % 360 - 180) * math.cos(math.radians(brick["DEC"])) < half
    )
    _render_brick(msky, tree, brick, [comps[j] for j in np.flatnonzero(near)], cfg)
    return i
