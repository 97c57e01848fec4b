"""The sealed test survey: apart from the training survey, its cutouts rendered like the
bricks', the catalogue-only baseline, and `snakemake sealed` on the finished tiny run."""

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MOCK, WritesAFile, run_snakemake

from lensfinder.catalog.select import SelectionConfig
from lensfinder.constants import BANDS, PIXSCALE
from lensfinder.cutouts.shards import ShardSet
from lensfinder.errors import LensfinderError
from lensfinder.mock import light
from lensfinder.mock.layout import MockConfig, mock_bricks
from lensfinder.mock.sky import MockSky
from lensfinder.mock.stamps import SkyIndex, render_stamp, stamp_wcs
from lensfinder.sealed import baseline
from lensfinder.sealed.survey import SealedConfig, build_sealed_survey, check_apart, sealed_mock_config

SEALED = dict(n_bricks_ra=2, n_bricks_dec=1, lenses=16)


def test_a_two_region_training_mock_gets_a_south_sealed_survey():
    """A DR9 north + south training mock must not stop the workflow at parse time: the
    sealed survey is south only, in the same release."""
    mock = MockConfig(release="dr9", regions=["north", "south"], ra_center=155.0, dec_center=32.3)
    sealed = sealed_mock_config(mock, SealedConfig())
    assert sealed.regions == ["south"] and sealed.release == "dr9"
    check_apart(mock, sealed)


def test_sealed_defaults_are_apart_from_the_default_mock_and_a_shared_seed_or_brick_stops():
    mock = MockConfig()
    sealed = sealed_mock_config(mock, SealedConfig())
    check_apart(mock, sealed)  # the defaults: own seed, own bricks
    assert sealed.galaxies == mock.galaxies and sealed.contaminants == mock.contaminants  # the same sky's make-up
    with pytest.raises(LensfinderError, match="seed"):
        check_apart(mock, sealed_mock_config(mock, SealedConfig(seed=mock.seed)))
    with pytest.raises(LensfinderError, match="shares .* brick"):
        check_apart(mock, sealed_mock_config(mock, SealedConfig(ra_center=mock.ra_center + 0.3,
                                                                dec_center=mock.dec_center)))


@pytest.fixture(scope="module")
def tiny_sealed(tmp_path_factory):
    out = tmp_path_factory.mktemp("sealed")
    cfg = sealed_mock_config(MockConfig(**TINY_MOCK), SealedConfig(**SEALED))
    summary = build_sealed_survey(out, cfg, SelectionConfig(), workers=2, progress=False)
    return out, cfg, summary


def test_sealed_survey_shares_no_object_brick_or_deflector_with_the_training_survey(tiny_mock, tiny_sealed):
    train_root, train_cfg, _ = tiny_mock
    out, cfg, summary = tiny_sealed
    assert not set(mock_bricks(train_cfg)["BRICKID"]) & set(mock_bricks(cfg)["BRICKID"])
    sealed_objects = pd.concat([pd.read_parquet(p) for p in sorted((out / "objects").glob("*.parquet"))])
    assert not set(sealed_objects.BRICKID) & set(mock_bricks(train_cfg)["BRICKID"])
    lenses = [pd.read_csv(r / "truth/lenses.csv") for r in (train_root, out / "survey")]
    assert len(lenses[1]) == SEALED["lenses"] * 2
    assert not set(zip(lenses[0].brickid, lenses[0].objid)) & set(zip(lenses[1].brickid, lenses[1].objid))
    # no deflector of one lies within 1 arcmin of one of the other
    sep = np.hypot((lenses[0].ra.values[:, None] - lenses[1].ra.values[None]) * math.cos(math.radians(2.0)),
                   lenses[0].dec.values[:, None] - lenses[1].dec.values[None])
    assert sep.min() > 1 / 60
    # counts add up: every selected object has its cutout, and the summary says so
    for sweep, c in summary["sweeps"].items():
        shards = ShardSet(out / "cutouts" / sweep / "manifest.json")
        n = len(pd.read_parquet(out / "objects" / f"{sweep}.parquet"))
        assert c["selected"] == n == len(shards) == c["written"] + c["failed"]
    assert sum(c["selected"] for c in summary["sweeps"].values()) == len(sealed_objects) > 50


def test_stamp_holds_the_catalogue_flux_at_the_centre_in_nanomaggies_north_up_east_left():
    """A lone point source: each band's stamp sums to its flux [nmgy], its light peaks within
    half a pixel of the centre as CENTER_DX/DY say, and a companion to the East and North
    lands left of and above it (x decreasing with RA, row increasing with Dec)."""
    msky = MockSky(MockConfig(n_bricks_ra=1, n_bricks_dec=1, galaxies=0, stars=0, lenses=0, seed=3))
    msky.sources, msky.light_only = [], []
    ra, dec = float(msky.bricks[0]["RA"]), float(msky.bricks[0]["DEC"])
    flux = np.array([10.0, 20.0, 40.0])
    msky.sources.append(_point(ra, dec, flux))
    index = SkyIndex(msky)
    image, info = render_stamp(msky, index, ra, dec, int(msky.bricks[0]["BRICKID"]), 101, seed=1, noise=False)
    assert image.shape == (3, 101, 101) and image.dtype == np.float32
    np.testing.assert_allclose(image.reshape(3, -1).sum(1), flux, rtol=0.02)  # the PSF's far wings fall outside
    y, x = np.unravel_index(np.argmax(image[2]), image[2].shape)
    assert abs(x - (50 + info["CENTER_DX"])) <= 0.5 + 1e-9 and abs(y - (50 + info["CENTER_DY"])) <= 0.5 + 1e-9
    east_north = (ra + 5 / 3600 / math.cos(math.radians(dec)), dec + 3 / 3600)
    msky.sources.append(_point(*east_north, flux))
    image, info = render_stamp(msky, SkyIndex(msky), ra, dec, int(msky.bricks[0]["BRICKID"]), 101, seed=1, noise=False)
    right = image[2].copy()
    right[45:56, 45:56] = 0  # hide the central source
    y2, x2 = np.unravel_index(np.argmax(right), right.shape)
    assert x2 == pytest.approx(50 + info["CENTER_DX"] - 5 / PIXSCALE, abs=1) and y2 == pytest.approx(
        50 + info["CENTER_DY"] + 3 / PIXSCALE, abs=1)


def _point(ra, dec, flux):
    from lensfinder.mock.sky import Source

    return Source(ra, dec, "PSF", flux, components=[light.Component(ra, dec, flux, None)])


def test_clipped_rendering_matches_the_whole_profile_for_light_grazing_the_edge():
    """A large galaxy whose centre lies outside a small image: sampling only the part that
    can reach the image gives the same pixels (to 0.3% of their peak) as sampling it all."""
    flux = np.array([100.0, 200.0, 300.0])
    ra0, dec0 = 150.0, 2.0
    wcs = stamp_wcs(ra0, dec0, 41)
    fwhms = {b: f for b, f in enumerate([1.3, 1.2, 1.1])}
    for offset in (4.0, 7.0, 9.0):  # arcsec East of the image centre; the image's half-width is 5.4"
        comp = light.Component(ra0 + offset / 3600 / math.cos(math.radians(dec0)), dec0, flux,
                               light.sersic_shape(2.5, 4.0, 0.2, -0.1), extent=15.0)
        whole = light.render_bands([comp], wcs, (41, 41), fwhms)
        clipped = light.render_bands([comp], wcs, (41, 41), fwhms, clip=True)
        for b in range(3):
            assert whole[b].max() > 0
            assert np.abs(whole[b] - clipped[b]).max() <= 3e-3 * whole[b].max(), (offset, BANDS[b])


def test_a_neighbour_grazing_several_cutouts_keeps_its_normalisation():
    """The clipped rendering's flux normalisation is computed for the first image a
    component grazes and kept on it: a second image, at another sub-pixel offset, gets the
    pixels of its own whole rendering (an exponential disc, whose sum does not depend on
    where the samples fall)."""
    flux = np.array([100.0, 200.0, 300.0])
    fwhms = {b: f for b, f in enumerate([1.3, 1.2, 1.1])}
    comp = light.Component(150.0 + 6.0 / 3600 / math.cos(math.radians(2.0)), 2.0, flux,
                           light.sersic_shape(2.5, 1.0, 0.2, -0.1), extent=15.0)
    light.render_bands([comp], stamp_wcs(150.0, 2.0, 41), (41, 41), fwhms, clip=True)
    kept = dict(comp.norms)
    assert len(kept) >= 1
    second = stamp_wcs(150.0, 2.0 + 1.0 / 3600, 41, dx=0.37, dy=-0.21)
    clipped = light.render_bands([comp], second, (41, 41), fwhms, clip=True)
    assert comp.norms == kept  # reused, not recomputed
    whole = light.render_bands([comp], second, (41, 41), fwhms)
    for b in range(3):
        assert np.abs(whole[b] - clipped[b]).max() <= 3e-3 * whole[b].max(), BANDS[b]


def test_catalogue_only_baseline_learns_colour_and_scores_every_object(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    lens = rng.random(n) < 0.2
    objects = pd.DataFrame({
        "RELEASE": 10000, "BRICKID": 1, "OBJID": np.arange(n), "RA": 150.0, "DEC": 2.0,
        "MAG_G_DERED": 21 + rng.normal(0, 0.5, n) + 1.2 * lens, "MAG_R_DERED": 20 + rng.normal(0, 0.5, n),
        "MAG_Z_DERED": 19.5 + rng.normal(0, 0.5, n), "SHAPE_R": rng.uniform(0.5, 3, n),
        "SHAPE_E1": rng.normal(0, 0.1, n), "SHAPE_E2": rng.normal(0, 0.1, n), "SERSIC": 1.0,
        "TYPE": rng.choice(["SER", "DEV", "REX", "EXP"], n)})
    train = objects.index < 400
    labels = objects.loc[:, ["RELEASE", "BRICKID", "OBJID"]].assign(LABEL=lens.astype(int),
                                                                    SPLIT=np.where(train, "train", "val"))
    labels.to_parquet(tmp_path / "labels.parquet")
    objects.to_parquet(tmp_path / "objects.parquet")
    fitted = baseline.fit_baseline(tmp_path / "labels.parquet", [tmp_path / "objects.parquet"], tmp_path / "m.pkl")
    assert fitted["n_lenses"] == int(lens[train].sum()) and fitted["n_nonlenses"] == int((~lens[train]).sum())
    assert baseline.score_baseline(tmp_path / "m.pkl", [tmp_path / "objects.parquet"], tmp_path / "s.parquet") == n
    scores = pd.read_parquet(tmp_path / "s.parquet")
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(lens[~train], scores.logit[~train]) > 0.9  # g - r tells them apart
    with pytest.raises(LensfinderError, match="SHAPE_R"):
        baseline.features(objects.drop(columns="SHAPE_R"))
    # the model file is read through an allowlist: a pickle that would call anything else is refused unrun
    import pickle

    marker = tmp_path / "the-payload-ran"

    evil = {"classifier": WritesAFile(marker), "features": baseline.FEATURES}
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(evil))
    with pytest.raises(LensfinderError, match=r"evil.pkl is not a baseline model .*global io.open.*could run code"):
        baseline.score_baseline(tmp_path / "evil.pkl", [tmp_path / "objects.parquet"], tmp_path / "x.parquet")
    assert not marker.exists() and not (tmp_path / "x.parquet").exists()


def test_injected_recall_counts_injections_above_the_cut_and_bootstraps_over_deflectors():
    from lensfinder.sealed.injected import recall_at

    rng = np.random.default_rng(1)
    # 40 deflectors with 10 injections each; a deflector's injections are all found or all missed
    found_deflector = rng.random(40) < 0.5
    deflectors = np.repeat(np.arange(40), 10)
    s = np.where(found_deflector[deflectors], 2.0, -2.0)
    r = recall_at(0.0, s, deflectors, n_boot=2000)
    assert r["n"] == 400 and r["recovered"] == 10 * int(found_deflector.sum())
    assert r["recall"] == pytest.approx(found_deflector.mean())
    wilson = r["recall_ci"][1] - r["recall_ci"][0]
    boot = r["recall_ci_deflectors"][1] - r["recall_ci_deflectors"][0]
    assert boot > 2 * wilson  # 40 independent draws, not 400
    assert math.isnan(recall_at(float("nan"), s, deflectors)["recall"])  # no cut: no recall


def test_snakemake_sealed_scores_the_sealed_survey_with_every_scorer(tiny_run, tmp_path):
    """On the finished tiny run: `snakemake sealed` runs only the sealed rules, writes every
    scorer's figures with counts that add up, and the main run's DAG reads nothing of it."""
    src, _, _ = tiny_run
    work = tmp_path / "wf"
    shutil.copytree(src, work, symlinks=True)
    dry = run_snakemake(work, "-n", "sealed").stdout
    jobs = {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", dry.split("Job stats:")[1].split("\n\n")[0], flags=re.M)}
    assert jobs - {"job", "total"} == {"sealed_survey", "sealed_infer", "sealed_baseline", "sealed_measure", "sealed",
                                       "sealed_inject", "sealed_infer_injections"}
    run_snakemake(work, "sealed")
    res, data = work / "results/mock/sealed", work / "resources/sealed_survey"
    m = json.loads((res / "metrics.json").read_text())
    c = m["counts"]
    objects = sum(len(pd.read_parquet(p)) for p in (data / "objects").glob("*.parquet"))
    assert c["objects_scored"] == objects == c["nonlenses"] + c["lenses_mock"]
    injected = json.loads((data / "injections/summary.json").read_text())
    assert c["lenses_injected"] == injected["injections"] == m["injected"]["n"] == len(ShardSet(data / "injections/manifest.json"))
    assert set(m["injected"]["scorers"]) == {"resnet", "shielded", "mean", "meta-learner", "catalogue_only"}
    assert c["lenses_mock"] == len(pd.read_csv(data / "survey/truth/lenses.csv").merge(
        pd.concat([pd.read_parquet(p) for p in (data / "objects").glob("*.parquet")]),
        left_on=["release", "brickid", "objid"], right_on=["RELEASE", "BRICKID", "OBJID"])) > 0
    assert sum(c["by_kind"].values()) == c["nonlenses"]
    assert set(m["scorers"]) == {"resnet", "shielded", "mean", "meta-learner", "catalogue_only"}
    for entry in m["scorers"].values():
        assert 0 <= entry["auc_ci"][0] <= entry["auc"] <= entry["auc_ci"][1] <= 1
        # FPR 1e-4 needs 10,000 nonlenses: on a tiny survey it is not measurable, never a number
        assert entry["recall_at_fpr_1e-4"]["measurable"] is False and math.isnan(entry["recall_at_fpr_1e-4"]["recall"])
        at = entry["recall_at_fpr_1e-3"]
        assert at["measurable"] == (c["nonlenses"] >= 1000)
    assert set(m["fpr_by_kind"]) == set(c["by_kind"])
    kinds = pd.read_csv(res / "fpr_by_kind.csv")
    assert set(kinds.scorer) == set(m["scorers"]) and (kinds.groupby("scorer").n.sum() == c["nonlenses"]).all()
    assert (res / "roc.png").stat().st_size > 10_000
    from lensfinder.results import sealed_table, seeds_table

    table = sealed_table(work / "results/mock")
    assert f"{c['objects_scored']:,} scored objects" in table and f"{c['lenses_mock']:,} mock lenses" in table
    row = next(line for line in table.splitlines() if line.startswith("| recall at FPR 1e-4"))
    assert all(f"`{s}` not measurable" in row for s in m["scorers"])
    other = tmp_path / "other/mock-seed1"  # a second run with the same figures: no spread, each run listed
    (other / "sealed").mkdir(parents=True)
    (other / "sealed/metrics.json").write_text((res / "metrics.json").read_text())
    spread = seeds_table([work / "results/mock", other])
    auc = m["scorers"]["meta-learner"]["auc"]
    assert f"| AUC, `meta-learner` | mean {auc:.3f}, range {auc:.3f} - {auc:.3f} (mock {auc:.3f}, mock-seed1 {auc:.3f}) |" in spread
    assert "| recall at FPR 1e-4, `meta-learner` | not measurable in mock, mock-seed1 |" in spread
    # the main run's DAG (rule all) holds no sealed rule: nothing of it reads the sealed survey
    dry_all = run_snakemake(work, "-n", "--forceall").stdout
    assert "sealed" not in dry_all.split("Job stats:")[1].split("\n\n")[0]
