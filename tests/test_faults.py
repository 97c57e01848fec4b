"""Faults a 1,400-sweep run meets: empty sweeps, missing and damaged coadds, NaN pixels,
saturated stars. Each becomes an accounted reject or flag; the run goes on; counts add up."""

from pathlib import Path

import fitsio
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MOCK, make_workdir, run_snakemake, tiny_config

from lensfinder.catalog.select import SelectionConfig, select_sweep
from lensfinder.cutouts.extract import extract_sweep
from lensfinder.cutouts.shards import FLAG_MISSING_PIXELS, FLAG_SATURATED, FP16_MAX, ShardSet
from lensfinder.errors import LensfinderError
from lensfinder.mock.layout import MockConfig
from lensfinder.mock.write import write_mock_survey
from lensfinder.survey.bricks import BrickGrid
from lensfinder.survey.tree import SurveyTree

SWEEP_A, SWEEP_B = "sweep-145p000-150p005", "sweep-150p000-155p005"
SWEEP_EMPTY, SWEEP_NO_BRICKS = "sweep-155p000-160p005", "sweep-140p000-145p005"


def rewrite_coadd(path, change):
    """Apply ``change(image)`` to a coadd and write it back as the survey does (RICE, 100 x 100 tiles)."""
    with fitsio.FITS(str(path)) as f:
        image, header = f[1].read(), f[1].read_header()
    image = change(image.astype(np.float32))
    keep = [{"name": k, "value": header[k]} for k in header.keys()
            if k.startswith(("CTYPE", "CRVAL", "CRPIX", "CD", "LSDR", "BRICK", "BAND", "FILTERX", "MAGZERO", "BUNIT"))]
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(image, header=keep, compress="RICE", tile_dims=(100, 100), qlevel=-1e-4,
                qmethod="SUBTRACTIVE_DITHER_2", dither_seed="checksum")


def truncate(path, fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def pixel_of(path, ra, dec):
    from lensfinder.survey.images import read_header_wcs

    wcs, _ = read_header_wcs(path)
    x, y = wcs.all_world2pix(ra, dec, 0)
    return int(round(float(x))), int(round(float(y)))


@pytest.fixture(scope="module")
def faulty_tree(tmp_path_factory):
    """A 4-brick tiny mock (2 bricks per sweep), then damaged:

    * sweep B: one brick's r-band coadd truncated;
    * sweep A: a NaN block over one selected object's cutout, a 1e6-nanomaggy star on another;
    * a sweep whose rows all fail the cuts (all PSF);
    * a sweep whose selected objects lie on bricks that have no coadd at all.
    """
    root = tmp_path_factory.mktemp("faulty")
    cfg = MockConfig(**{**TINY_MOCK, "n_bricks_ra": 4, "galaxies": 200, "stars": 40, "lenses": 6})
    write_mock_survey(root, cfg, progress=False)
    tree = SurveyTree(root)
    sel_dir = tmp_path_factory.mktemp("faulty_sel")
    selected = {}
    for sweep in (SWEEP_A, SWEEP_B):
        select_sweep(tree.sweep_path(sweep), sel_dir / f"{sweep}.parquet", sel_dir / f"{sweep}.csv", SelectionConfig(),
                     progress=False)
        selected[sweep] = pd.read_parquet(sel_dir / f"{sweep}.parquet")
    b_bricks = sorted(selected[SWEEP_B].BRICKNAME.unique())
    truncated_brick = b_bricks[0]
    truncate(tree.coadd_path(truncated_brick, "r"))
    a = selected[SWEEP_A].sort_values("MAG_Z").reset_index(drop=True)
    nan_obj, star_obj = a.iloc[0], a.iloc[1]
    g_path = tree.coadd_path(nan_obj.BRICKNAME, "g")
    x, y = pixel_of(g_path, nan_obj.RA, nan_obj.DEC)

    def nan_block(img):  # 40 x 40 px of NaN (of 101 x 101) east of the object: ~16% missing
        img[y - 20 : y + 20, x + 5 : x + 45] = np.nan
        return img

    rewrite_coadd(g_path, nan_block)
    z_path = tree.coadd_path(star_obj.BRICKNAME, "z")
    sx, sy = pixel_of(z_path, star_obj.RA, star_obj.DEC)

    def star(img):
        img[sy - 1 : sy + 2, sx + 9 : sx + 12] = 1e6  # a saturated core 9 px from the object
        return img

    rewrite_coadd(z_path, star)
    # a sweep whose rows all fail the cuts, and one whose bricks have no coadds (RA - 5 deg)
    rows = fitsio.read(str(tree.sweep_path(SWEEP_A)), ext=1)
    header = fitsio.read_header(str(tree.sweep_path(SWEEP_A)), ext=1)
    empty = rows.copy()
    empty["TYPE"] = "PSF"
    empty["RA"] += 10.0
    fitsio.write(str(tree.sweep_path(SWEEP_EMPTY)), empty, header=header, extname="SWEEP", clobber=True)
    keys = set(zip(a.BRICKID, a.OBJID))
    moved = rows[np.array([(b, o) in keys for b, o in zip(rows["BRICKID"], rows["OBJID"])])].copy()
    moved["RA"] -= 5.0
    grid = BrickGrid.build()
    found = grid.lookup(moved["RA"], moved["DEC"])
    moved["BRICKID"], moved["BRICKNAME"] = found["BRICKID"], found["BRICKNAME"]
    fitsio.write(str(tree.sweep_path(SWEEP_NO_BRICKS)), moved, header=header, extname="SWEEP", clobber=True)
    return root, {"truncated": (truncated_brick, tree.coadd_path(truncated_brick, "r")),
                  "nan": nan_obj, "star": star_obj, "moved": len(moved), "empty_rows": len(empty)}


def test_coadd_faults_become_rejects_and_flags(faulty_tree, tmp_path):
    root, f = faulty_tree
    tree = SurveyTree(root)
    for sweep in (SWEEP_A, SWEEP_B):
        select_sweep(tree.sweep_path(sweep), tmp_path / f"{sweep}.parquet", tmp_path / f"{sweep}.csv",
                     SelectionConfig(), progress=False)
        extract_sweep(tmp_path / f"{sweep}.parquet", tmp_path / sweep, tree, progress=False)
    # the truncated coadd: objects on its lost tiles are rejected with the file and band named
    # (the tiles before the cut still decompress: objects there keep their cutouts)
    fails = pd.read_parquet(tmp_path / SWEEP_B / "failures.parquet")
    objects_b = pd.read_parquet(tmp_path / f"{SWEEP_B}.parquet")
    brick, path = f["truncated"]
    in_brick = objects_b[objects_b.BRICKNAME == brick]
    unreadable = fails[fails.reason == "brick_file_unreadable"]
    assert 0 < len(unreadable) < len(in_brick)
    assert set(unreadable.BRICKID) == {int(in_brick.BRICKID.iloc[0])}
    assert all(f"{path} (band r)" in d for d in unreadable.detail)
    # rows of the image beyond the cut: the lost tiles lie North of the readable ones
    written = ShardSet(tmp_path / SWEEP_B / "manifest.json").index
    lost_dec = in_brick.set_index("OBJID").loc[unreadable.OBJID, "DEC"]
    kept_dec = in_brick[in_brick.OBJID.isin(written.OBJID)].DEC
    assert lost_dec.min() > kept_dec.min()
    # NaN pixels are missing (not passed on), the 1e6 star is clipped to float16's range and flagged
    shards = ShardSet(tmp_path / SWEEP_A / "manifest.json")
    index = shards.index.set_index(["BRICKID", "OBJID"])
    nan_row = index.loc[(f["nan"].BRICKID, f["nan"].OBJID)]
    assert 0.10 < nan_row.FRAC_MISSING_G < 0.2 and nan_row.FRAC_MISSING_R == 0
    assert nan_row.FLAGS & FLAG_MISSING_PIXELS
    star_key = (10000, f["star"].BRICKID, f["star"].OBJID)
    cutout = shards.get(star_key)
    assert np.isfinite(cutout).all() and cutout[2].max() == np.float16(FP16_MAX)
    assert index.loc[(f["star"].BRICKID, f["star"].OBJID)].FLAGS & FLAG_SATURATED
    for images, _ in shards.batches(64):
        assert np.isfinite(images.numpy()).all()


def test_a_wrong_survey_root_stops_the_job_naming_the_cause(faulty_tree, tmp_path):
    root, _ = faulty_tree
    tree = SurveyTree(root)
    select_sweep(tree.sweep_path(SWEEP_A), tmp_path / "a.parquet", tmp_path / "a.csv", SelectionConfig(),
                 progress=False)
    with pytest.raises(LensfinderError, match=r"coadd directory .*/elsewhere/dr10/south/coadd does not exist: "
                                              r"check survey.root"):
        extract_sweep(tmp_path / "a.parquet", tmp_path / "cut", SurveyTree(tmp_path / "elsewhere"), progress=False,
                      max_failed_fraction=0.5)
    assert not (tmp_path / "cut/manifest.json").exists()


@pytest.mark.workflow
def test_the_workflow_runs_through_every_fault_and_accounts_for_every_object(faulty_tree, tmp_path):
    root, f = faulty_tree
    cfg = tiny_config(source="tree", root=str(root))
    cfg["cutouts"]["max_failed_fraction"] = 1.0  # the no-bricks sweep fails whole, on purpose
    work = make_workdir(tmp_path, cfg)
    run_snakemake(work)
    res = work / "results/mock"
    table = pd.read_csv(res / "accounting.csv").set_index("sweep")
    assert set(table.index) == {SWEEP_A, SWEEP_B, SWEEP_EMPTY, SWEEP_NO_BRICKS, "total"}
    cuts = [c for c in table.columns if c.startswith("cut_")]
    reasons = [c for c in table.columns if c.startswith("failed_")]
    for sweep, row in table.iterrows():
        assert row.sweep_rows - row[cuts].sum() == row.selected == row.cutouts_written + row.cutouts_failed
        assert row.cutouts_failed == row[reasons].sum() and row.cutouts_written == row.scored
        assert row.above_cut == row.known_removed + row.merged + row.recommended
    empty = table.loc[SWEEP_EMPTY]
    assert empty.sweep_rows == f["empty_rows"] == empty.cut_type and empty.selected == empty.scored == 0
    nob = table.loc[SWEEP_NO_BRICKS]
    assert nob.selected == f["moved"] == nob.failed_brick_file_missing and nob.scored == 0
    assert table.loc[SWEEP_B].failed_brick_file_unreadable > 0
    missing = pd.read_parquet(res / f"cutouts/{SWEEP_NO_BRICKS}/failures.parquet")
    assert (missing.reason == "brick_file_missing").all() and missing.detail.str.contains("does not exist").all()
    # empty sweeps flow through every stage as valid, empty tables
    assert len(pd.read_parquet(res / f"objects/{SWEEP_EMPTY}.parquet")) == 0
    assert len(pd.read_parquet(res / f"scores/resnet/{SWEEP_EMPTY}.parquet")) == 0
    recs = pd.read_parquet(res / "recommendations/recommendations.parquet")
    assert table.loc["total"].recommended == len(recs) > 0


@pytest.mark.parametrize("damage", ["not_fits", "truncated"])
def test_an_unreadable_neighbouring_coadd_is_named_in_the_manifest(tmp_path, damage):
    """A cutout near a brick's edge takes pixels from the neighbouring brick; when that
    brick's coadd cannot be read (not a FITS file at all, or truncated so that the tiles
    needed do not decompress), the cutout is still written, its lost pixels counted as
    missing, flagged FLAG_NEIGHBOUR_UNREADABLE, and the manifest names the file and error."""
    from lensfinder.cutouts.shards import FLAG_NEIGHBOUR_UNREADABLE

    root = tmp_path / "mock"
    files = write_mock_survey(root, MockConfig(**TINY_MOCK), progress=False)
    tree = SurveyTree(root)
    objects = []
    for sweep in files["sweeps"]:
        stem = Path(sweep).name.removesuffix(".fits")
        select_sweep(sweep, tmp_path / f"{stem}.parquet", tmp_path / f"{stem}.csv", SelectionConfig(), progress=False)
        objects.append((stem, pd.read_parquet(tmp_path / f"{stem}.parquet")))
    bricks = sorted({b for _, o in objects for b in o.BRICKNAME})
    assert len(bricks) == 2
    damaged = tree.coadd_path(bricks[1], "g")
    if damage == "not_fits":
        damaged.write_bytes(b"this is not a FITS file " * 200)
    else:
        truncate(damaged, 0.3)
    flagged, notes, failures, written = 0, [], [], 0
    for stem, o in objects:
        m = extract_sweep(tmp_path / f"{stem}.parquet", tmp_path / stem, tree, size=401, progress=False)
        index = ShardSet(tmp_path / stem / "manifest.json").index
        hit = index[(index.FLAGS & FLAG_NEIGHBOUR_UNREADABLE) > 0]
        flagged += len(hit)
        written += m["counts"]["written"]
        notes += m["notes"]
        failures.append(pd.read_parquet(tmp_path / stem / "failures.parquet"))
        assert (hit.FRAC_MISSING_G > 0).all()  # the neighbour's pixels are missing, not made up
        assert sorted(hit.OBJID) == sorted(n["OBJID"] for n in m["notes"])
    fails = pd.concat(failures)
    home = sum(int((o.BRICKNAME == bricks[1]).sum()) for _, o in objects)
    # objects on the damaged brick fail outright; objects of the other brick near the shared edge keep
    # their cutouts with the flag and a note; nothing is lost
    if damage == "not_fits":
        assert (fails.reason == "brick_file_unreadable").sum() == home
    else:  # objects on the readable tiles before the cut keep their cutouts
        assert 0 < (fails.reason == "brick_file_unreadable").sum() < home
    on_damaged = {int(b) for _, o in objects for b in o[o.BRICKNAME == bricks[1]].BRICKID}
    assert set(fails[fails.reason == "brick_file_unreadable"].BRICKID) <= on_damaged
    assert flagged > 0 and len(notes) == flagged
    assert all(n["reason"] == "neighbour_unreadable" and str(damaged) in n["detail"] for n in notes)
    assert written + len(fails) == sum(len(o) for _, o in objects)
