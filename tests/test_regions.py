"""Several regions of one release: the photometric region rule, sweep IDs, and a tiny
two-region DR9 mock (north and south trees holding the same objects, as in the overlap
strip) through selection, cutouts and the real workflow."""

import csv
import json

import fitsio
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import TINY_TRAIN, make_workdir, run_snakemake, tiny_config

from lensfinder.catalog.select import SelectionConfig, select_sweep
from lensfinder.constants import REGION_LABELS
from lensfinder.cutouts.extract import extract_sweep
from lensfinder.cutouts.shards import ShardSet
from lensfinder.errors import LensfinderError
from lensfinder.mock.layout import MockConfig
from lensfinder.mock.write import write_mock_survey
from lensfinder.survey.images import read_header_wcs
from lensfinder.survey.positions import galactic_latitude, photometric_region
from lensfinder.survey.sweeps import split_sweep_id, sweep_dtype
from lensfinder.survey.tree import SurveyTree, SurveyTrees, survey_regions
from lensfinder.workflow import sweeps_to_process

# Two bricks on either side of Dec 32.375 at RA 155 (b ~ +58): the south row is DECaLS's,
# the north row BASS/MzLS's, and both trees hold both rows. One DR9 sweep (10 x 5 deg) per region.
TWO_REGION_MOCK = dict(n_bricks_ra=1, n_bricks_dec=2, galaxies=250, stars=60, lenses=16, seed=7,
                       mean_exposures=6.0, catalogued_fraction=1.0, release="dr9", regions=["north", "south"], ra_center=155.0, dec_center=32.3)
STEM = "sweep-150p030-160p035"
REGIONS = ("north", "south")


@pytest.fixture(scope="module")
def two_region_mock(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_region_mock")
    cfg = MockConfig(**TWO_REGION_MOCK)
    files = write_mock_survey(root, cfg, progress=False)
    return root, cfg, files


def _sweep(root, region):
    return root / f"dr9/{region}/sweep/9.0/{STEM}.fits"


# ----------------------------------------------------------------------------- the rule
def test_photometric_region_is_the_documented_rule():
    """North iff Dec >= 32.375 and Galactic b > 0, with b from astropy's Galactic frame."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 360, 20000), rng.uniform(20, 45, 20000)
    b = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").galactic.b.deg
    assert np.abs(galactic_latitude(ra, dec) - b).max() < 2e-3  # deg
    clear = np.abs(b) > 0.01
    expected = np.where((dec >= 32.375) & (b > 0), "north", "south")
    assert np.array_equal(photometric_region(ra, dec)[clear], expected[clear])
    assert {"north", "south"} <= set(expected[clear & (dec >= 32.375)])  # both sides of the plane sampled
    # the Dec boundary belongs to the north; the Galactic plane splits Dec > 32.375
    assert photometric_region([155.0, 155.0, 60.0, 180.0], [32.375, 32.374999, 40.0, 40.0]).tolist() == [
        "north", "south", "south", "north"]


def test_sweep_ids_single_and_multi_region(tmp_path):
    multi = SurveyTrees(tmp_path, "dr9", ["north", "south"])
    assert multi.multi_region and multi.sweep_id("north", STEM) == f"north/{STEM}"
    assert multi.sweep_path(f"north/{STEM}") == tmp_path / f"dr9/north/sweep/9.0/{STEM}.fits"
    tree, stem = multi.locate(f"south/{STEM}")
    assert (tree.region, stem) == ("south", STEM)
    with pytest.raises(LensfinderError, match=f"sweep '{STEM}' names no region.*write it as <region>/{STEM}"):
        multi.locate(STEM)
    single = SurveyTrees(tmp_path, "dr10", ["south"])
    assert single.sweep_id("south", "sweep-150p000-155p005") == "sweep-150p000-155p005"
    assert single.sweep_path("sweep-150p000-155p005") == tmp_path / "dr10/south/sweep/10.1/sweep-150p000-155p005.fits"
    assert single.sweep_path("south/sweep-150p000-155p005") == single.sweep_path("sweep-150p000-155p005")
    with pytest.raises(LensfinderError, match="region 'north' is not among survey.regions"):
        single.locate(f"north/{STEM}")
    with pytest.raises(LensfinderError, match="DR10 has no north region"):
        SurveyTrees(tmp_path, "dr10", ["north", "south"])
    with pytest.raises(LensfinderError, match="is not a sweep ID"):
        split_sweep_id("east/sweep-150p000-155p005")


def _config(**survey):
    cfg = tiny_config()
    cfg["mock"].update({k: v for k, v in TWO_REGION_MOCK.items()})
    cfg["survey"].update(release="dr9", region=None, regions=["north", "south"])
    cfg["survey"].update(survey)
    return cfg


def test_region_or_regions_and_their_disagreement():
    assert survey_regions({"survey": {"region": "south"}}) == ["south"]
    assert survey_regions({"survey": {"region": None, "regions": ["north", "south"]}}) == ["north", "south"]
    assert survey_regions({"survey": {"region": "north", "regions": ["north"]}}) == ["north"]
    with pytest.raises(LensfinderError, match=r"survey.region \(south\) and survey.regions \(\['north', 'south'\]\) "
                                              r"disagree: give only survey.regions"):
        survey_regions({"survey": {"region": "south", "regions": ["north", "south"]}})
    with pytest.raises(LensfinderError, match="names no survey region"):
        survey_regions({"survey": {"region": None}})


def test_sweeps_to_process_carry_their_region():
    assert sweeps_to_process(_config()) == [f"north/{STEM}", f"south/{STEM}"]
    assert sweeps_to_process(_config(regions=["south", "north"])) == [f"south/{STEM}", f"north/{STEM}"]
    assert sweeps_to_process(_config(regions=None, region="south")) == [STEM]  # one region: bare stems
    assert sweeps_to_process(_config(sweeps=[STEM])) == [f"north/{STEM}", f"south/{STEM}"]
    assert sweeps_to_process(_config(sweeps=[f"north/{STEM}.fits"])) == [f"north/{STEM}"]
    assert sweeps_to_process(_config(sweeps={"ra_min": 151, "ra_max": 152, "dec_min": 31, "dec_max": 33})) == [
        f"north/{STEM}", f"south/{STEM}"]
    with pytest.raises(LensfinderError, match="survey.sweeps lists"):
        sweeps_to_process(_config(sweeps=["north/sweep-000p000-010p005"]))
    with pytest.raises(LensfinderError, match="survey.release dr10 is not the mock's"):
        sweeps_to_process(_config(release="dr10", regions=None, region="south"))
    cfg = _config()
    cfg["mock"]["regions"] = ["south"]
    with pytest.raises(LensfinderError, match=r"the mock writes only \['south'\]"):
        sweeps_to_process(cfg)


def test_mock_regions_are_checked():
    with pytest.raises(LensfinderError, match="DR10 has no north region.*mock.release: dr9"):
        MockConfig(regions=["north", "south"])
    from lensfinder.mock.layout import planned_files

    with pytest.raises(LensfinderError, match="mock.regions includes north, but no part of the mock area"):
        planned_files("/tmp/x", MockConfig(release="dr9", regions=["north", "south"]))  # Dec 2: all south


# ----------------------------------------------------------------------------- the mock
def test_two_region_mock_writes_both_trees_with_the_overlap_duplicates(two_region_mock):
    root, cfg, files = two_region_mock
    rows = {}
    for region in REGIONS:
        tree = SurveyTree(root, "dr9", region)
        assert tree.list_sweeps() == [STEM]
        assert (root / f"dr9/{region}/survey-bricks-dr9-{region}.fits.gz").exists()
        with fitsio.FITS(str(_sweep(root, region))) as f:
            rows[region] = f[1].read()
            assert f[0].read_header()["SURVEY"] == {"north": "BASS+MzLS", "south": "DECaLS"}[region]
        assert rows[region].dtype.names == sweep_dtype("dr9").names and len(rows[region].dtype.names) == 115
        assert set(rows[region]["RELEASE"]) == {9011 if region == "north" else 9010}
        for brick in ("1550p322", "1550p325"):
            assert tree.coadd_path(brick, "z").exists()
    n, s = rows["north"], rows["south"]
    # every object is in both trees (same brick, OBJID, position), observed by each survey
    assert np.array_equal(n[["BRICKID", "OBJID", "RA", "DEC"]], s[["BRICKID", "OBJID", "RA", "DEC"]])
    assert not np.array_equal(n["NOBS_Z"], s["NOBS_Z"])
    assert set(photometric_region(n["RA"], n["DEC"])) == {"north", "south"}
    # each tree imaged with its survey's seeing: BASS g ~1.61", DECaLS g ~1.29"
    psf = {r: read_header_wcs(SurveyTree(root, "dr9", r).coadd_path("1550p325", "g"))[1]["MOCKPSF"] for r in REGIONS}
    assert psf["north"] > 1.45 > psf["south"]
    # the truth key of each lens is that of the copy the region cut keeps
    for lens in csv.DictReader(open(root / "truth/lenses.csv")):
        home = photometric_region([float(lens["ra"])], [float(lens["dec"])])[0]
        assert int(lens["release"]) == (9011 if home == "north" else 9010)


# ----------------------------------------------------------------------------- selection
def _independent(path, region):
    d = fitsio.read(str(path), ext=1)
    t = np.char.strip(d["TYPE"].astype(str))
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = 22.5 - 2.5 * np.log10(d["FLUX_Z"])
    keep = np.isin(t, ["SER", "DEV", "REX", "EXP"]) & (d["FLUX_Z"] > 0) & (mag < 20)
    keep &= (d["NOBS_G"] >= 3) & (d["NOBS_R"] >= 3) & (d["NOBS_Z"] >= 3)
    keep &= photometric_region(d["RA"], d["DEC"]) == region
    return {(int(r), int(b), int(o)) for r, b, o in zip(d["RELEASE"][keep], d["BRICKID"][keep], d["OBJID"][keep])}


def test_selection_keeps_each_overlap_duplicate_once(two_region_mock, tmp_path):
    root, _, _ = two_region_mock
    tables, expected = [], set()
    for region in REGIONS:
        _, removed = select_sweep(_sweep(root, region), tmp_path / f"{region}.parquet", tmp_path / f"{region}.csv",
                                  SelectionConfig(), tree_region=region, progress=False, sweep_id=f"{region}/{STEM}")
        assert removed["region"] > 0  # this tree's copies of the other region's objects
        t = pq.read_table(tmp_path / f"{region}.parquet").to_pandas()
        assert set(t["REGION"]) == {REGION_LABELS[region]} and set(t["SWEEP"]) == {f"{region}/{STEM}"}
        tables.append(t)
        expected |= _independent(_sweep(root, region), region)
    both = pd.concat(tables)
    assert len(both) > 0 and not both.duplicated(["BRICKID", "OBJID"]).any()
    assert set(zip(both["RELEASE"], both["BRICKID"], both["OBJID"])) == expected
    labels = np.vectorize(REGION_LABELS.get)(photometric_region(both["RA"], both["DEC"]))
    assert np.array_equal(both["REGION"].to_numpy(), labels)
    # without the region cut the duplicates are there: the rule is what removes them
    kept = []
    for region in REGIONS:
        select_sweep(_sweep(root, region), tmp_path / "all.parquet", tmp_path / "all.csv",
                     SelectionConfig(drop_other_region=False), tree_region=region, progress=False)
        kept.append(pq.read_table(tmp_path / "all.parquet").to_pandas())
    assert pd.concat(kept).duplicated(["BRICKID", "OBJID"]).sum() > 0


def test_cutouts_come_from_the_objects_own_tree(two_region_mock, tmp_path):
    root, _, _ = two_region_mock
    objects = tmp_path / "north.parquet"
    select_sweep(_sweep(root, "north"), objects, tmp_path / "c.csv", SelectionConfig(), tree_region="north",
                 progress=False)
    north, south = SurveyTree(root, "dr9", "north"), SurveyTree(root, "dr9", "south")
    extract_sweep(objects, tmp_path / "shards", north, size=31, progress=False)
    shards = ShardSet(tmp_path / "shards/manifest.json")
    row = shards.index.iloc[0]
    cube = np.asarray(shards.get((int(row.RELEASE), int(row.BRICKID), int(row.OBJID)))).astype(np.float32)
    pixels = {}
    for tree in (north, south):
        path = tree.coadd_path(row.BRICKNAME, "z")
        wcs, _ = read_header_wcs(path)
        x, y = (int(round(float(v))) for v in wcs.all_world2pix(row.RA, row.DEC, 0))
        with fitsio.FITS(str(path)) as f:
            pixels[tree.region] = f[1][y - 15 : y + 16, x - 15 : x + 16]
    assert np.allclose(cube[2], pixels["north"], rtol=1e-3, atol=1e-3)  # fp16 of the north coadd
    assert not np.allclose(cube[2], pixels["south"], rtol=1e-3, atol=1e-3)
    with pytest.raises(LensfinderError, match=r"holds REGION \['BASS-MzLS'\], but its cutouts would come from the south"):
        extract_sweep(objects, tmp_path / "wrong", south, size=31, progress=False)


# ----------------------------------------------------------------------------- the workflow
@pytest.mark.workflow
def test_two_region_mock_plans_per_region_jobs(tmp_path):
    proc = run_snakemake(make_workdir(tmp_path, _config()), "-n")
    counts = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()
              if line.startswith(("select ", "cutouts ", "mock_survey "))}
    assert counts == {"mock_survey": "1", "select": "2", "cutouts": "2"}
    for region in REGIONS:
        assert f"results/mock/objects/{region}/{STEM}.parquet" in proc.stdout
        assert f"resources/mock_survey/dr9/{region}/sweep/9.0/{STEM}.fits" in proc.stdout
    cfg = _config(region="south")  # both keys, disagreeing
    proc = run_snakemake(make_workdir(tmp_path / "both", cfg), "-n", check=False)
    assert proc.returncode != 0
    assert "survey.region (south) and survey.regions (['north', 'south']) disagree" in proc.stdout


@pytest.mark.workflow
def test_two_region_run_has_strata_in_both_regions(two_region_mock, tmp_path):
    """(iv) The real workflow over a north + south tree: per-region sweep IDs, each overlap
    duplicate once, and training-set strata (TYPE x REGION x exposures) in both regions."""
    root, _, _ = two_region_mock
    cfg = tiny_config(source="tree", root=str(root))
    cfg["survey"].update(release="dr9", region=None, regions=["north", "south"])
    cfg["models"] = {"resnet": {"model": {"preset": "resnet_mini"}, "train": TINY_TRAIN}}
    cfg["selection"]["zexp_bins"] = [3]  # strata TYPE x REGION: a handful of lenses each, some for validation
    work = make_workdir(tmp_path, cfg)
    run_snakemake(work)
    res = work / "results/mock"
    objects = []
    for region in REGIONS:
        t = pq.read_table(res / f"objects/{region}/{STEM}.parquet").to_pandas()
        assert set(t["SWEEP"]) == {f"{region}/{STEM}"} and set(t["REGION"]) == {REGION_LABELS[region]}
        objects.append(t)
        manifest = json.loads((res / f"cutouts/{region}/{STEM}/manifest.json").read_text())
        assert manifest["counts"]["selected"] == len(t) and manifest["release"] == "dr9"
        assert (res / f"scores/resnet/{region}/{STEM}.parquet").exists()
    objects = pd.concat(objects)
    assert not objects.duplicated(["BRICKID", "OBJID"]).any()  # every overlap duplicate once
    counts = list(csv.DictReader(open(res / "objects/selection_counts.csv")))
    assert [r["sweep"] for r in counts] == [f"north/{STEM}", f"south/{STEM}", "total"]
    assert all(int(r["region"]) > 0 for r in counts)
    labels = pd.read_parquet(res / "trainset/labels.parquet")
    assert set(labels["REGION"]) == {"DECaLS", "BASS-MzLS"}
    lenses = labels[labels["LABEL"] == 1]
    assert set(lenses["REGION"]) == {"DECaLS", "BASS-MzLS"}  # positives, hence strata, in both
    for stratum in set(lenses["STRATUM"]):
        assert (labels[(labels["STRATUM"] == stratum) & (labels["LABEL"] == 0)]).shape[0] > 0
    assert not labels.duplicated(["RELEASE", "BRICKID", "OBJID"]).any()
    recs = pd.read_parquet(res / "recommendations/recommendations.parquet")
    assert set(recs["SWEEP"]) <= {f"north/{STEM}", f"south/{STEM}"}
    # the injections' deflector search met each region's objects with its own shard set
    written = sum(json.loads((res / f"cutouts/{r}/{STEM}/manifest.json").read_text())["counts"]["written"]
                  for r in REGIONS)
    cuts = json.loads((res / "injections/summary.json").read_text())["deflector_cuts"]
    assert cuts["candidates_with_cutout"] == written
