"""Injection-recovery: the injector's physics, its shard sets, the selection function and
the injected training positives."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lensfinder.constants import PIXSCALE
from lensfinder.cutouts.shards import ShardSet, ShardWriter
from lensfinder.injection.arcs import add_arc, counts_per_nanomaggy, inject, lensed_unit_image, sky_sigma_per_pixel
from lensfinder.injection.config import InjectionConfig, LensParams

SIZE = 101
BANDS = "GRZ"


def deflector_row(dx=0.0, dy=0.0, psf=(1.29, 1.18, 1.11), depth=(2000.0, 900.0, 250.0), trans=(0.9, 0.93, 0.96)):
    row = {"CENTER_DX": dx, "CENTER_DY": dy}
    for b, p, d, t in zip(BANDS, psf, depth, trans):
        row[f"PSFSIZE_{b}"], row[f"PSFDEPTH_{b}"], row[f"MW_TRANSMISSION_{b}"] = p, d, t
    return pd.Series(row)


def real_like_cutout(seed=0):
    """An fp16 cutout like the shards': sky noise, a galaxy, some exact zeros and -0.0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - SIZE // 2
    galaxy = np.exp(-np.hypot(xx, yy) / 3.0)
    cube = rng.normal(0, 0.01, (3, SIZE, SIZE)) + galaxy * np.array([0.2, 0.5, 0.9])[:, None, None]
    cube = cube.astype(np.float16)
    cube[:, 0, :5] = 0.0
    cube[:, 1, :5] = np.float16(-0.0)
    cube[:, 2, :5] = np.float16(-1e-9)  # rounds to -0.0 in fp16
    return cube


def fine_grid_magnification(params: LensParams, step=0.01):
    """Total magnification by brute force: the lensed surface brightness ray-traced on a
    0.01" grid, over the source's own integral on the same grid in the source plane."""
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    lens, light = LensModel(["SIE", "SHEAR"]), LightModel(["SERSIC_ELLIPSE"])
    kw_lens, kw_source = params.lenstronomy_kwargs()
    half = params.theta_e * 1.6 + 3.0
    g = np.arange(-half, half, step) + step / 2
    lensed = 0.0
    for row in g:  # row by row: bounded memory
        bx, by = lens.ray_shooting(g, np.full_like(g, row), kw_lens)
        lensed += light.surface_brightness(bx, by, kw_source).sum()
    s = np.arange(-6.0, 6.0, step / 2) + step / 4
    sx, sy = np.meshgrid(s + params.source_x, s + params.source_y)
    intrinsic = light.surface_brightness(sx, sy, kw_source).sum() * (step / 2) ** 2
    return lensed * step**2 / intrinsic


# ----------------------------------------------------------------------------- physics
def test_zero_flux_source_leaves_the_cutout_unchanged_bit_for_bit(tmp_path):
    cube = real_like_cutout()
    params = LensParams(theta_e=2.0, lens_q=0.8, shear=0.05, source_x=0.3, source_mag=np.inf)  # zero flux
    image, info = inject(cube.astype(np.float32), deflector_row(0.2, -0.3), params, InjectionConfig(),
                         np.random.default_rng(0))
    assert info["SOURCE_FLUX_G"] == 0.0 and info["ARC_FLUX_R"] == 0.0 and info["MAGNIFICATION"] > 1
    assert image.astype(np.float16).tobytes() == cube.tobytes()  # -0.0 stays -0.0
    # and through the on-disk shard format
    for name, arr in (("before", cube), ("after", image)):
        w = ShardWriter(tmp_path / name, SIZE, "dr10")
        w.add(arr, {"RELEASE": 10000, "BRICKID": 1, "OBJID": 0, "RA": 150.0, "DEC": 2.0})
        w.close(1)
    before, after = (ShardSet(tmp_path / n / "manifest.json") for n in ("before", "after"))
    assert before.manifest["shards"][0]["sha256"] == after.manifest["shards"][0]["sha256"]


@pytest.mark.parametrize("n, q, shear, offset", [(1.0, 0.7, 0.05, (0.35, -0.2)), (2.5, 0.9, 0.0, (0.0, 0.5)),
                                                 (1.0, 0.55, 0.08, (1.1, 0.3))])
def test_added_flux_is_intrinsic_flux_times_magnification(n, q, shear, offset):
    params = LensParams(theta_e=1.6, lens_q=q, lens_phi=30.0, shear=shear, shear_phi=100.0, source_x=offset[0],
                        source_y=offset[1], source_r_e=0.25, source_n=n, source_q=0.7, source_phi=60.0,
                        source_mag=21.5, source_g_r=0.3, source_r_z=0.2)
    row = deflector_row(0.4, -0.1)
    cube = real_like_cutout()
    cfg = InjectionConfig(noise=False)
    image, info = inject(cube.astype(np.float32), row, params, cfg, np.random.default_rng(0))
    mu = fine_grid_magnification(params)
    assert mu > 2  # a strongly lensed configuration
    assert info["MAGNIFICATION"] == pytest.approx(mu, rel=0.02)
    intrinsic = 10 ** (-0.4 * (np.array([21.5, 21.2, 21.0]) - 22.5)) * np.array([0.9, 0.93, 0.96])
    added = (image.astype(np.float64) - cube.astype(np.float64)).reshape(3, -1).sum(1)
    assert added == pytest.approx(intrinsic * mu, rel=0.02)
    for b, band in enumerate(BANDS):
        assert info[f"ARC_FLUX_{band}"] == pytest.approx(added[b], rel=1e-4)
        assert info[f"SOURCE_FLUX_{band}"] == pytest.approx(intrinsic[b], rel=1e-12)


@pytest.mark.parametrize("theta_e", [1.2, 2.0, 2.8])
def test_round_lens_arc_light_peaks_at_theta_e(theta_e):
    """A round lens without shear and a source behind its centre: an Einstein ring whose
    azimuthally averaged light peaks at theta_E from the (off-pixel-centre) deflector."""
    dx, dy = 0.3, -0.2
    params = LensParams(theta_e=theta_e, source_r_e=0.15, source_mag=20.0)
    cube = np.zeros((3, SIZE, SIZE), np.float32)
    image, _ = inject(cube, deflector_row(dx, dy), params, InjectionConfig(noise=False), np.random.default_rng(0))
    x0, y0 = SIZE // 2 + dx, SIZE // 2 + dy
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(xx - x0, yy - y0)
    edges = np.arange(0, 20, 0.25)
    for band in image:
        which = np.digitize(r.ravel(), edges)
        profile = np.bincount(which, band.ravel(), minlength=len(edges) + 1)[1 : len(edges)] / np.maximum(
            np.bincount(which, minlength=len(edges) + 1)[1 : len(edges)], 1)
        peak = (edges[:-1] + 0.125)[np.argmax(profile)]
        assert abs(peak - theta_e / PIXSCALE) <= 1.0


def fwhm_at_half_maximum(img, c):
    """Full width [pixels] where the row through the peak pixel (c, c) falls to half its value."""
    cut = img[c, c:] / img[c, c]
    i = int(np.argmax(cut < 0.5))
    return 2 * (i - 1 + (cut[i - 1] - 0.5) / (cut[i - 1] - cut[i]))


def test_injected_point_source_has_the_fwhm_of_psfsize():
    psf = (1.05, 1.4, 1.8)  # arcsec, different in each band
    row = deflector_row(psf=psf)
    unit = np.zeros((SIZE, SIZE))
    c = SIZE // 2
    unit[c, c] = 1.0  # a point source of unit flux at the deflector's pixel
    image, info = add_arc(np.zeros((3, SIZE, SIZE)), unit, [5.0, 5.0, 5.0], psf,
                          [row[f"PSFDEPTH_{b}"] for b in BANDS], [22.04, 20.91, 18.46], noise=False)
    for b in range(3):
        assert image[b].sum() == pytest.approx(5.0, rel=1e-5)
        # pixel integration widens a 4-pixel core by ~3%
        assert fwhm_at_half_maximum(image[b].astype(np.float64), c) * PIXSCALE == pytest.approx(psf[b], rel=0.04)
        # a PSF with wings: a Gaussian of this FWHM holds 0.002% of its light beyond 2 FWHM, the Moffat 2%
        r = np.hypot(*np.mgrid[0:SIZE, 0:SIZE] - c) * PIXSCALE
        assert image[b][r > 2 * psf[b]].sum() / 5.0 > 0.01


def test_noise_follows_the_depth_formula():
    """sigma_pix = 1/sqrt(PSFDEPTH * NEA) with the Moffat's NEA = pi alpha^2 (2 beta - 1)/(beta - 1)^2;
    the arc's photon variance is a * sigma_pix^2 / S, measured over many draws of one arc."""
    depth, fwhm = 900.0, 1.18
    sigma = sky_sigma_per_pixel(depth, fwhm)
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / 3) - 1)) / PIXSCALE  # beta = 3
    nea = math.pi * alpha**2 * 5 / 4
    assert sigma == pytest.approx(1 / math.sqrt(depth * nea), rel=1e-3)
    # a 5-sigma point source at the depth: flux 5/sqrt(PSFDEPTH), optimal S/N = 5 (sky-limited)
    unit = np.zeros((SIZE, SIZE))
    unit[50, 50] = 1.0
    flux = 5 / math.sqrt(depth)
    _, info = add_arc(np.zeros((3, SIZE, SIZE)), unit, [flux] * 3, [fwhm] * 3, [depth] * 3, [0.0] * 3, noise=False)
    # a very bright sky (0 mag/arcsec^2): many counts per nanomaggy, the source's own photon noise vanishes
    assert info["ARC_SNR_R"] == pytest.approx(5.0, rel=0.02)
    k = counts_per_nanomaggy(20.91, sigma)
    rng = np.random.default_rng(1)
    flat = np.full((SIZE, SIZE), 1.0 / SIZE**2)  # uniform light: 2 nmgy per pixel after scaling
    draws = np.stack([add_arc(np.zeros((3, SIZE, SIZE)), flat, [2.0 * SIZE**2] * 3, [fwhm] * 3, [depth] * 3,
                              [22.04, 20.91, 18.46], rng)[0][1, 20:80, 20:80] for _ in range(3)])
    assert draws.mean() == pytest.approx(2.0, rel=1e-3)
    assert draws.var() == pytest.approx(2.0 / k, rel=0.05)


def test_orientation_east_left_north_up():
    """A source offset to the East makes its bright image East of the deflector, at smaller
    x (East is left); offset North, at larger y (row 0 is South). A brick-like TAN WCS
    (CD1_1 < 0) puts the arc at larger RA and Dec accordingly."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [SIZE // 2 + 1, SIZE // 2 + 1]
    wcs.wcs.cd = [[-PIXSCALE / 3600, 0], [0, PIXSCALE / 3600]]
    c = SIZE // 2
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for east, north in ((1.0, 0.0), (0.0, 1.0), (-0.7, -0.7)):
        params = LensParams(theta_e=1.2, source_x=east, source_y=north, source_r_e=0.2, source_mag=20.0)
        unit, _ = lensed_unit_image(params, SIZE, c, c)
        xc, yc = (unit * xx).sum() / unit.sum(), (unit * yy).sum() / unit.sum()
        assert np.sign(c - xc) == np.sign(east) or east == 0
        assert np.sign(yc - c) == np.sign(north) or north == 0
        ra, dec = wcs.all_pix2world([xc], [yc], 0)
        if east:
            assert np.sign((ra[0] - 150.0)) == np.sign(east)
        if north:
            assert np.sign(dec[0] - 2.0) == np.sign(north)


# ----------------------------------------------------------------------------- injection sets
@pytest.fixture(scope="module")
def tiny_shards(tiny_mock, tmp_path_factory):
    """The tiny mock's objects and cutout shards (real select and cutouts), and a training
    set's labels naming a few objects."""
    from lensfinder.catalog.select import SelectionConfig, select_sweep
    from lensfinder.cutouts.extract import extract_sweep
    from lensfinder.survey.tree import SurveyTree

    root, _, files = tiny_mock
    out = tmp_path_factory.mktemp("inject_inputs")
    objects, manifests = [], []
    for sweep in files["sweeps"]:
        stem = sweep.rsplit("/", 1)[1].removesuffix(".fits")
        select_sweep(sweep, out / f"{stem}.parquet", out / f"{stem}.csv", SelectionConfig(), progress=False)
        extract_sweep(out / f"{stem}.parquet", out / stem, SurveyTree(root), progress=False)
        objects.append(out / f"{stem}.parquet")
        manifests.append(out / stem / "manifest.json")
    table = pd.concat([pd.read_parquet(p) for p in objects], ignore_index=True)
    red = table[(table["MAG_Z"] < 19.5) & (table["MAG_G_DERED"] - table["MAG_R_DERED"] >= 1.0)]
    labels = red.iloc[::3][["RELEASE", "BRICKID", "OBJID", "RA", "DEC"]].assign(
        LABEL=[1, 0] * (len(red.iloc[::3]) // 2) + [0] * (len(red.iloc[::3]) % 2), SPLIT="train")
    labels.to_parquet(out / "labels.parquet")
    catalogs = [{"path": str(root / "catalogues/known_lenses.csv"), "label": "mock"}]
    return root, objects, manifests, out / "labels.parquet", catalogs


SMALL_GRID = {"theta_e_bins": [1.0, 2.0, 3.0], "source_mag_bins": [20.0, 21.0, 22.0], "n_per_bin": 3}


def test_injection_set_is_reproducible_by_seed_and_avoids_the_training_set(tiny_shards, tmp_path):
    from lensfinder.injection.sets import write_injection_set

    root, objects, manifests, labels, catalogs = tiny_shards
    truth = root / "truth/lenses.csv"
    runs = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        cfg = InjectionConfig(seed=seed, grid=SMALL_GRID)
        runs[name] = write_injection_set(objects, manifests, labels, catalogs, cfg, tmp_path / name, truth_path=truth,
                                         progress=False)
    sets = {n: ShardSet(tmp_path / n / "manifest.json") for n in runs}
    a, b, c = sets["a"], sets["b"], sets["c"]
    assert len(a) == 12 and a.manifest["counts"] == {"selected": 12, "written": 12, "failed": 0}
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]
    pd.testing.assert_frame_equal(a.index, b.index)
    assert [s["sha256"] for s in a.manifest["shards"]] != [s["sha256"] for s in c.manifest["shards"]]
    idx = a.index
    # every cell holds n_per_bin injections, each drawn inside its cell
    assert idx.groupby(["THETA_E_BIN", "MAG_BIN"]).size().tolist() == [3, 3, 3, 3]
    lo = np.array(SMALL_GRID["theta_e_bins"])[idx["THETA_E_BIN"]]
    assert ((idx["THETA_E"] >= lo) & (idx["THETA_E"] < lo + 1.0)).all()
    # keys are the injections'; the deflectors are real objects outside the training set
    assert (idx["RELEASE"] == 0).all() and idx["OBJID"].tolist() == list(range(12))
    used = set(zip(idx.DEFLECTOR_RELEASE, idx.DEFLECTOR_BRICKID, idx.DEFLECTOR_OBJID))
    trained = set(map(tuple, pd.read_parquet(labels)[["RELEASE", "BRICKID", "OBJID"]].to_numpy().tolist()))
    assert used and not used & trained
    objects_table = pd.concat([pd.read_parquet(p) for p in objects]).set_index(["RELEASE", "BRICKID", "OBJID"])
    defl = objects_table.loc[list(used)]
    assert defl["TYPE"].str.strip().isin(["DEV", "SER", "REX"]).all() and (defl["MAG_Z"] < 19.5).all()
    assert ((defl["MAG_G_DERED"] - defl["MAG_R_DERED"]) >= 1.0).all()
    hidden = pd.read_csv(truth)
    assert not used & set(zip(hidden.release, hidden.brickid, hidden.objid))  # no deflector is already a lens
    for col in ("MAGNIFICATION", "ARC_FLUX_G", "ARC_FLUX_R", "ARC_FLUX_Z", "ARC_SNR", "SOURCE_R_E", "LENS_Q", "SHEAR"):
        assert np.isfinite(idx[col]).all()
    assert (idx["MAGNIFICATION"] > 1).all() and (idx["ARC_SNR"] > 0).all()
    # the injected cutout is the deflector's plus the arc
    row = idx.iloc[0]
    from lensfinder.cutouts.shards import ShardCollection

    cutouts = ShardCollection(manifests)
    original = cutouts.get((row.DEFLECTOR_RELEASE, row.DEFLECTOR_BRICKID, row.DEFLECTOR_OBJID)).astype(np.float64)
    added = (np.asarray(a[0], dtype=np.float64) - original).reshape(3, -1).sum(1)
    assert added == pytest.approx([row.ARC_FLUX_G, row.ARC_FLUX_R, row.ARC_FLUX_Z], rel=0.05, abs=0.05)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    cuts = summary["deflector_cuts"]
    assert cuts["in_training_set"] > 0 and cuts["near_known_lens"] > 0  # both exclusions act on the tiny mock
    assert summary["deflectors_used"] == min(12, cuts["deflectors"])
    assert sum(v for k, v in cuts.items() if k not in ("candidates_with_cutout", "deflectors")) + cuts["deflectors"] \
        == cuts["candidates_with_cutout"]
    assert (tmp_path / "a" / "injections.png").stat().st_size > 0


def test_deflectors_found_sweep_by_sweep_are_those_of_one_whole_table(tiny_shards):
    """Sweep by sweep, each sweep's objects meeting only its own shard index, the search keeps
    the deflectors, order and cut counts of one pass over every object joined with every
    shard index (the search before); the shard sets are matched to sweeps by directory
    name, whatever their order, and each deflector's cutout is its own."""
    from lensfinder.catalog.lenses import CatalogSpec, union_catalogs
    from lensfinder.catalog.truth import read_truth
    from lensfinder.injection.config import DeflectorCuts
    from lensfinder.injection.deflectors import DEFLECTOR_COLUMNS, INDEX_EXTRA, find_deflectors, select_deflectors

    key = ["RELEASE", "BRICKID", "OBJID"]
    root, objects, manifests, labels, catalogs = tiny_shards
    truth = root / "truth/lenses.csv"
    lab = pd.read_parquet(labels)
    lenses = lab[lab["LABEL"] == 1]
    training = list(zip(*(lab[k] for k in key)))
    labelled = (lenses["RA"].to_numpy(), lenses["DEC"].to_numpy())
    found = find_deflectors(objects, list(reversed(manifests)), DeflectorCuts(), catalogs, truth, training, labelled)

    whole = pd.concat([pd.read_parquet(p, columns=[*key, *DEFLECTOR_COLUMNS]) for p in objects], ignore_index=True)
    index = pd.concat([ShardSet(m).index for m in manifests], ignore_index=True)
    whole = whole.merge(index[[*key, *(c for c in INDEX_EXTRA if c in index)]], on=key, validate="one_to_one")
    systems, _ = union_catalogs([CatalogSpec.from_dict(c) for c in catalogs])
    hidden = read_truth(truth, whole, 1.5).index
    avoid_ra = np.concatenate([systems["ra"].to_numpy(), whole["RA"].to_numpy()[hidden]])
    avoid_dec = np.concatenate([systems["dec"].to_numpy(), whole["DEC"].to_numpy()[hidden]])
    half = (found.shape[-1] // 2) * found.pixscale
    ref, counts = select_deflectors(whole, DeflectorCuts(), half, avoid_ra, avoid_dec, training, labelled)

    assert found.counts == counts
    assert counts["deflectors"] > 5 and counts["near_known_lens"] > 0 and counts["in_training_set"] > 0
    pd.testing.assert_frame_equal(found.table[ref.columns], ref)
    cutouts = found.cutouts([len(found) - 1, 0, 0])
    assert sorted(cutouts) == [0, len(found) - 1]
    for i, image in cutouts.items():
        row = found.table.iloc[i]
        sweep_set = ShardSet(manifests[[m.parent.name for m in manifests].index(row["SWEEP"])])
        assert np.array_equal(image, np.asarray(sweep_set.get(tuple(int(row[k]) for k in key))))


def test_shard_sets_are_found_for_region_qualified_sweeps():
    """Several regions share sweep names: ids carry the region, and each sweep's shard set is
    the one under its own region, whatever the order of the list."""
    from lensfinder.cutouts.shards import manifests_by_sweep, sweep_ids

    stem = "sweep-150p030-160p035"
    objects = [f"res/objects/{r}/{s}.parquet" for r, s in (("north", stem), ("south", stem), ("south", "sweep-x"))]
    ids = sweep_ids(objects)
    assert ids == [f"north/{stem}", f"south/{stem}", "south/sweep-x"]
    assert sweep_ids(["res/objects/a.parquet", "res/objects/b.parquet"]) == ["a", "b"]
    manifests = [f"res/cutouts/{i}/manifest.json" for i in reversed(ids)]
    found = manifests_by_sweep(ids, manifests)
    assert {i: str(m) for i, m in found.items()} == {i: f"res/cutouts/{i}/manifest.json" for i in ids}


def test_no_deflector_gives_an_empty_selection_function_and_says_so(tiny_shards, tmp_path, caplog):
    """A small area whose objects all fail the cuts: an empty injection set and a table of
    zero counts, with the cut counts and a warning, not a failed run."""
    from lensfinder.evaluation.selection_function import selection_function
    from lensfinder.injection.sets import write_injection_set

    root, objects, manifests, labels, catalogs = tiny_shards
    cfg = InjectionConfig(grid=SMALL_GRID, deflectors={"zmag_max": 10.0})
    with caplog.at_level("WARNING"):
        summary = write_injection_set(objects, manifests, labels, catalogs, cfg, tmp_path / "x", progress=False)
    assert "no object passes the deflector cuts" in caplog.text and summary["warning"]
    assert summary["injections"] == 0 and summary["deflector_cuts"]["zmag"] > 0
    assert len(ShardSet(tmp_path / "x/manifest.json")) == 0
    d = _fake_scored_set(tmp_path / "fake", n_per_cell=1)  # for its meta-learner and rank summary
    empty = pd.DataFrame({"RELEASE": pd.Series(dtype="int64"), "BRICKID": pd.Series(dtype="int64"),
                          "OBJID": pd.Series(dtype="int64"), "logit": pd.Series(dtype="float32")})
    for m in ("good", "noise"):
        empty.to_parquet(tmp_path / f"{m}.parquet")
    s = selection_function(tmp_path / "x/manifest.json", {m: tmp_path / f"{m}.parquet" for m in ("good", "noise")},
                           d / "meta.npz", d / "rank.json", cfg, tmp_path / "sf")
    cells = pd.read_csv(tmp_path / "sf/completeness.csv")
    assert s["n_injected"] == 0 and len(cells) == 4 and (cells["n_injected"] == 0).all()


def test_bad_prior_names_the_key():
    from lensfinder.errors import LensfinderError

    with pytest.raises(LensfinderError, match="injection.priors.shear"):
        InjectionConfig(priors={"shear": {"dist": "uniform", "lo": 0.1}})
    with pytest.raises(LensfinderError, match="unknown key"):
        InjectionConfig(priors={"theta": 1.0})


# ----------------------------------------------------------------------------- selection function
def _fake_scored_set(tmp_path, n_per_cell=40):
    """An injection index on a 2 x 2 grid whose 'good' model scores rise with theta_E and
    fall with magnitude, a noise model, and a meta-learner fit on them."""

    from lensfinder.ranking.ensemble import fit_meta_learner, save_meta

    rng = np.random.default_rng(0)
    rows = []
    for t_lo in (1.0, 2.0):
        for m_lo in (20.0, 22.0):
            for _ in range(n_per_cell):
                rows.append({"THETA_E": rng.uniform(t_lo, t_lo + 1), "SOURCE_MAG_G": rng.uniform(m_lo, m_lo + 2)})
    idx = pd.DataFrame(rows)
    n = len(idx)
    idx["RELEASE"], idx["BRICKID"], idx["OBJID"] = 0, 0, np.arange(n)
    idx["MAGNIFICATION"], idx["ARC_SNR"] = 5.0, np.exp(rng.uniform(0, 5.5, n))
    w = ShardWriter(tmp_path / "inj", 11, "dr10", source="injection")
    for r in idx.to_dict(orient="records"):
        w.add(np.zeros((3, 11, 11), np.float32), r)
    w.close(n)
    good = 3 * (idx["THETA_E"] - 2) - 2 * (idx["SOURCE_MAG_G"] - 22) + rng.normal(0, 0.5, n)
    for name, logit in (("good", good), ("noise", rng.normal(0, 1, n))):
        pd.DataFrame({"RELEASE": 0, "BRICKID": 0, "OBJID": np.arange(n), "logit": np.float32(logit)}).to_parquet(
            tmp_path / f"{name}.parquet")
    y = (rng.random(2000) < 0.3).astype(int)
    x = np.stack([np.where(y, 3.0, -3.0) + rng.normal(0, 1, 2000), rng.normal(0, 1, 2000)], 1)
    save_meta(fit_meta_learner(x, y, hidden=8), ["good", "noise"], tmp_path / "meta.npz")
    (tmp_path / "rank.json").write_text(json.dumps({"cut_logit_ensemble": 0.0, "selection": {"mode": "top_n"}}))
    return tmp_path


def test_completeness_counts_add_up_and_follow_the_scores(tmp_path):
    from lensfinder.evaluation.selection_function import selection_function

    d = _fake_scored_set(tmp_path)
    cfg = InjectionConfig(grid={"theta_e_bins": [1.0, 2.0, 3.0], "source_mag_bins": [20.0, 22.0, 24.0],
                                "snr_bins": [0, 10, 100]})
    s = selection_function(d / "inj/manifest.json", {"good": d / "good.parquet", "noise": d / "noise.parquet"},
                           d / "meta.npz", d / "rank.json", cfg, d / "sf")
    cells = pd.read_csv(d / "sf/completeness.csv")
    assert list(cells.columns) == ["theta_e_lo", "theta_e_hi", "mag_lo", "mag_hi", "n_injected", "n_recovered",
                                   "completeness", "ci_lo", "ci_hi"]
    assert cells["n_injected"].tolist() == [40, 40, 40, 40] and cells["n_injected"].sum() == s["n_injected"] == 160
    assert cells["n_recovered"].sum() == s["n_recovered"]
    assert (cells["completeness"] == cells["n_recovered"] / cells["n_injected"]).all()
    assert ((cells["ci_lo"] <= cells["completeness"]) & (cells["completeness"] <= cells["ci_hi"])).all()
    scored = pd.read_parquet(d / "sf/injections_scored.parquet")
    assert scored["RECOVERED"].sum() == s["n_recovered"]
    assert (scored["RECOVERED"] == (scored["LOGIT_ENSEMBLE"] >= 0.0)).all()
    c = cells.set_index(["theta_e_lo", "mag_lo"])["completeness"]
    assert c[(2.0, 20.0)] > c[(1.0, 20.0)] and c[(2.0, 20.0)] > c[(2.0, 22.0)]  # rises with theta_E, falls with mag
    one_d = pd.read_csv(d / "sf/completeness_1d.csv")
    for var in ("theta_e", "source_mag_g", "arc_snr"):
        assert one_d[one_d.variable == var]["n_injected"].sum() == 160  # the open last S/N bin keeps every one
    assert np.isinf(one_d[one_d.variable == "arc_snr"]["hi"].iloc[-1])
    assert (d / "sf/heatmap.png").stat().st_size > 0 and (d / "sf/curves.png").stat().st_size > 0


def test_crosscheck_states_whether_the_intervals_overlap(tmp_path):
    from lensfinder.evaluation.selection_function import crosscheck

    scored = pd.DataFrame({"THETA_E": [1.2] * 10 + [2.5] * 10, "SOURCE_MAG_G": [21.5] * 19 + [23.8],
                           "RECOVERED": [True] * 2 + [False] * 8 + [True] * 9 + [False]})
    scored.to_parquet(tmp_path / "scored.parquet")

    def metrics(recall_ci):
        return {"meta-learner": {"per_theta_e": [
            {"theta_e_lo": 1.0, "theta_e_hi": 2.0, "n_lenses": 12, "recovered": 3, "recall": 0.25,
             "recall_ci": [0.09, 0.53]},
            {"theta_e_lo": 2.0, "theta_e_hi": 3.0, "n_lenses": 9, "recovered": 8, "recall": 0.9,
             "recall_ci": recall_ci}]}}

    (tmp_path / "m.json").write_text(json.dumps(metrics([0.6, 0.98])))
    r = crosscheck(tmp_path / "scored.parquet", tmp_path / "m.json", [1.0, 2.0, 3.0], tmp_path / "a", [21.0, 23.0])
    table = pd.read_csv(tmp_path / "a/crosscheck.csv")
    assert table["n_injected"].tolist() == [10, 9]  # the 23.8-mag injection is outside the compared range
    assert table["n_lenses"].tolist() == [12, 9] and table["overlap"].tolist() == [True, True]
    assert r["agree"] and "overlap in all 2" in r["statement"]
    (tmp_path / "m.json").write_text(json.dumps(metrics([0.0, 0.3])))
    r = crosscheck(tmp_path / "scored.parquet", tmp_path / "m.json", [1.0, 2.0, 3.0], tmp_path / "b", [21.0, 23.0])
    assert not r["agree"] and "[2, 3)" in r["statement"]
    assert json.loads((tmp_path / "b/crosscheck.json").read_text())["agree"] is False


# ----------------------------------------------------------------------------- the workflow
def test_rules_write_the_selection_function_on_the_tiny_workflow(tmp_path):
    """inject -> infer_injections -> selection_function -> selection_crosscheck through
    Snakemake on the tiny mock: the completeness table's counts add up to the injection set."""
    from conftest import make_workdir, run_snakemake, tiny_config

    cfg = tiny_config()
    cfg["injection"]["grid"]["n_per_bin"] = 4
    work = make_workdir(tmp_path, cfg)
    results = work / "results" / cfg["run"]
    target = f"results/{cfg['run']}/selection_function"  # targets relative to the workflow directory
    run_snakemake(work, f"{target}/completeness.csv", f"{target}/crosscheck.csv")
    shards = ShardSet(results / "injections/manifest.json")
    g = cfg["injection"]["grid"]
    n_cells = (len(g["theta_e_bins"]) - 1) * (len(g["source_mag_bins"]) - 1)
    assert len(shards) == 4 * n_cells
    cells = pd.read_csv(results / "selection_function/completeness.csv")
    assert len(cells) == n_cells and (cells["n_injected"] == 4).all()
    assert cells["n_injected"].sum() == len(shards)
    scored = pd.read_parquet(results / "selection_function/injections_scored.parquet")
    cut = json.loads((results / "recommendations/summary.json").read_text())["cut_logit_ensemble"]
    assert cells["n_recovered"].sum() == (scored["LOGIT_ENSEMBLE"] >= cut).sum() == scored["RECOVERED"].sum()
    assert ((cells["n_recovered"] <= cells["n_injected"]) & (cells["ci_lo"] <= cells["ci_hi"])).all()
    summary = json.loads((results / "selection_function/summary.json").read_text())
    assert summary["n_injected"] == len(shards) and summary["cut_logit_ensemble"] == cut
    for model in cfg["models"]:
        assert len(pd.read_parquet(results / f"injections/scores/{model}.parquet")) == len(shards)
    labels = pd.read_parquet(results / "trainset/labels.parquet")
    trained = set(zip(labels.RELEASE, labels.BRICKID, labels.OBJID))
    idx = shards.index
    assert not trained & set(zip(idx.DEFLECTOR_RELEASE, idx.DEFLECTOR_BRICKID, idx.DEFLECTOR_OBJID))
    cross = pd.read_csv(results / "selection_function/crosscheck.csv")
    assert cross["theta_e_lo"].tolist() == cfg["evaluation"]["theta_e_bins"][:-1]
    assert "statement" in json.loads((results / "selection_function/crosscheck.json").read_text())


# ----------------------------------------------------------------------------- augmented training
def test_injected_training_positives_join_the_training_split_only(tiny_shards, tmp_path):
    """trainset.injections: injected positives marked SOURCE=injection, in the training split
    only, on deflectors that are none of the other rows and hold no validation object in
    their cutout; their images carry the arc; the selection function's set avoids them."""
    from lensfinder.catalog.crossmatch import within_square
    from lensfinder.cutouts.shards import ShardCollection
    from lensfinder.injection.sets import write_injection_set
    from lensfinder.trainset.build import TrainsetConfig, build_trainset

    root, objects, manifests, _, catalogs = tiny_shards
    injection = {"seed": 3, "grid": SMALL_GRID}
    cfg = TrainsetConfig(ratio=1, seed=2, injections=3, injection=injection, truth=str(root / "truth/lenses.csv"))
    summary = build_trainset(objects, manifests, catalogs, cfg, tmp_path / "ts", progress=False)
    labels = pd.read_parquet(tmp_path / "ts/labels.parquet")
    inj = labels[labels["SOURCE"] == "injection"]
    assert len(inj) == 3 and summary["lenses_by_source"]["injection"] == 3
    from lensfinder.evaluation.never_seen import training_lenses

    assert training_lenses(tmp_path / "ts/labels.parquet") == summary["lenses_by_source"]  # reported apart
    assert set(summary["lenses_by_source"]) == {"catalogue", "injection"}
    assert (inj["SPLIT"] == "train").all() and (inj["LABEL"] == 1).all()
    assert sorted(inj["INJECTION_ID"]) == [0, 1, 2]
    assert (labels.loc[labels.SOURCE != "injection", "INJECTION_ID"] == -1).all()
    assert set(labels.loc[labels.LABEL == 1, "SOURCE"]) == {"catalogue", "injection"}
    assert set(labels.loc[labels.LABEL == 0, "SOURCE"]) == {"random"}
    assert not labels.duplicated(["RELEASE", "BRICKID", "OBJID"]).any()
    val = labels[labels["SPLIT"] == "val"]
    half = (SIZE // 2) * PIXSCALE
    assert not within_square(inj.RA.to_numpy(), inj.DEC.to_numpy(), val.RA.to_numpy(), val.DEC.to_numpy(), half).any()
    params = pd.read_parquet(tmp_path / "ts/injections.parquet").set_index("INJECTION_ID")
    images = np.load(tmp_path / "ts/cutouts.npy")
    shards = ShardCollection(manifests)
    for r in inj.itertuples():
        added = (images[r.ROW].astype(np.float64) - shards.get((r.RELEASE, r.BRICKID, r.OBJID))).reshape(3, -1).sum(1)
        p = params.loc[r.INJECTION_ID]
        assert added == pytest.approx([p.ARC_FLUX_G, p.ARC_FLUX_R, p.ARC_FLUX_Z], rel=0.05, abs=0.05)
        assert 1.0 <= p.THETA_E <= 3.0 and 21.0 <= p.SOURCE_MAG_G <= 23.0  # the priors, not the grid
    # the same config builds the same training set
    build_trainset(objects, manifests, catalogs, cfg, tmp_path / "ts2", progress=False)
    assert np.array_equal(np.load(tmp_path / "ts2/cutouts.npy"), images)
    # the selection function's deflectors avoid every labelled object, injected ones included
    write_injection_set(objects, manifests, tmp_path / "ts/labels.parquet", catalogs,
                        InjectionConfig(**injection), tmp_path / "sf", progress=False)
    idx = ShardSet(tmp_path / "sf/manifest.json").index
    assert not set(zip(idx.DEFLECTOR_RELEASE, idx.DEFLECTOR_BRICKID, idx.DEFLECTOR_OBJID)) & \
        set(zip(labels.RELEASE, labels.BRICKID, labels.OBJID))


def test_shard_sets_of_different_cutout_sizes_are_an_error_naming_both():
    from lensfinder.cutouts.shards import common_shape
    from lensfinder.errors import LensfinderError

    assert common_shape([]) is None and common_shape([{"shape": [3, 101, 101]}] * 2) == (3, 101, 101)
    with pytest.raises(LensfinderError, match=r"different shapes \[\(3, 101, 101\), \(3, 151, 151\)\].*one size"):
        common_shape([{"shape": [3, 101, 101]}, {"shape": [3, 151, 151]}])
