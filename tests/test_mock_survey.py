"""The mock tree is in the documented on-disk format and its images match its catalogue."""

import csv
import json
from pathlib import Path

import fitsio
import numpy as np
import pytest

from lensfinder.mock.layout import MockConfig, planned_sweeps
from lensfinder.mock.write import write_mock_survey
from lensfinder.survey.bricks import BrickGrid
from lensfinder.survey.images import read_header_wcs
from lensfinder.survey.sweeps import read_sweep, sweep_dtype
from lensfinder.survey.tree import SurveyTree


def test_layout_and_two_sweeps_across_the_boundary(tiny_mock):
    root, cfg, files = tiny_mock
    tree = SurveyTree(root, "dr10", "south")
    assert tree.list_sweeps() == ["sweep-145p000-150p005", "sweep-150p000-155p005"] == planned_sweeps(cfg)
    for group in files.values():
        for path in group:
            assert (root / path).exists(), path
    assert tree.coadd_path("1498p020", "g").relative_to(root).as_posix() == (
        "dr10/south/coadd/149/1498p020/legacysurvey-1498p020-image-g.fits.fz")


def test_sweep_reads_back_with_documented_dtypes(tiny_mock):
    root, _, files = tiny_mock
    expected = sweep_dtype("dr10")
    assert len(expected.names) == 130 and expected.itemsize == 505
    for path in files["sweeps"]:
        with fitsio.FITS(path) as f:
            assert f[1].get_extname() == "SWEEP"
            data = f[1].read()
            hdr0 = f[0].read_header()
            assert {"RAMIN", "RAMAX", "DECMIN", "DECMAX"} <= set(hdr0.keys())
            units = f[1].read_header()
        assert data.dtype.names == expected.names
        # the on-disk binary-table formats (TFORMn) are exactly the documented dtypes
        tforms = {units[f"TTYPE{i}"]: units[f"TFORM{i}"] for i in range(1, units["TFIELDS"] + 1)}
        code = {"i2": "I", "i4": "J", "i8": "K", "f4": "E", "f8": "D", "u1": "B", "b1": "L"}
        for name in expected.names:
            dt = expected[name]
            want = f"{dt.itemsize}A" if dt.kind == "S" else code[dt.base.str[1:]]
            if dt.shape:
                want = f"{dt.shape[0]}{want}"
            assert tforms[name] == want, name
        assert tforms["TYPE"] == "3A" and tforms["MASKBITS"] == "J"
        assert units["TUNIT6"] == "deg"  # RA
        # rows grouped by brick, OBJID contiguous from 0 in each brick, BRICKID consistent with RA/Dec
        grid = BrickGrid.build()
        assert np.array_equal(grid.lookup(data["RA"], data["DEC"])["BRICKID"], data["BRICKID"])
        for bid in np.unique(data["BRICKID"]):
            objids = data["OBJID"][data["BRICKID"] == bid]
            assert np.all(np.diff(objids) == 1)
        # fluxes are zero where their inverse variance is zero; transmission follows EBV
        for b in "GRZ":
            assert np.all(data[f"FLUX_{b}"][data[f"FLUX_IVAR_{b}"] == 0] == 0)
        r_z = 1.211
        assert np.allclose(data["MW_TRANSMISSION_Z"], 10 ** (-r_z * data["EBV"] / 2.5), rtol=1e-5)
        # shapes per TYPE
        t = np.char.strip(data["TYPE"].astype(str))
        assert np.all(data["SHAPE_R"][t == "PSF"] == 0)
        assert np.all(data["SHAPE_E1"][t == "REX"] == 0) and np.all(data["SERSIC"][t == "DEV"] == 4)


def test_coadd_format_and_header(tiny_mock):
    root, cfg, files = tiny_mock
    path = files["coadds"][0]
    with fitsio.FITS(path) as f:
        assert f[0].read_header()["NAXIS"] == 0  # empty primary
        hdr = f[1].read_header()
        assert hdr["ZCMPTYPE"] == "RICE_1" and hdr["ZTILE1"] == 100 and hdr["ZTILE2"] == 100
        assert f[1].is_compressed()
        img = f[1].read()
    assert img.dtype == np.float32 and img.shape == (cfg.image_size, cfg.image_size)
    wcs, header = read_header_wcs(path)
    assert header["BUNIT"] == "nanomaggy" and header["MAGZERO"] == 22.5
    assert header["CRPIX1"] == cfg.image_size / 2 + 0.5
    assert header["CD1_1"] < 0 < header["CD2_2"]  # East left, North up


def test_coadd_pixel_at_an_object_holds_its_light(tiny_mock):
    """A bright isolated star: the header WCS puts its peak within a pixel of its RA/Dec,
    and the pixels hold its catalogue flux (nanomaggies), East toward decreasing x."""
    root, cfg, files = tiny_mock
    tree = SurveyTree(root)
    rows = np.concatenate([read_sweep(p, ["RA", "DEC", "TYPE", "FLUX_R", "NOBS_R", "BRICKNAME"]) for p in files["sweeps"]])
    stars = rows[(rows["TYPE"] == "PSF") & (rows["NOBS_R"] > 0)]
    star = stars[np.argsort(stars["FLUX_R"])[-1]]
    path = tree.coadd_path(str(star["BRICKNAME"]), "r")
    wcs, _ = read_header_wcs(path)
    x, y = (float(v) for v in wcs.all_world2pix(star["RA"], star["DEC"], 0))
    xi, yi = int(round(x)), int(round(y))
    with fitsio.FITS(str(path)) as f:
        box = f[1][yi - 20 : yi + 21, xi - 20 : xi + 21]
    peak = np.unravel_index(np.argmax(box), box.shape)
    assert abs(peak[0] - 20) <= 1 and abs(peak[1] - 20) <= 1
    assert box.sum() == pytest.approx(star["FLUX_R"], rel=0.05)
    # a point 3 arcsec East (larger RA) lands at smaller x
    xe, _ = wcs.all_world2pix(star["RA"] + 3 / 3600 / np.cos(np.radians(star["DEC"])), star["DEC"], 0)
    assert float(xe) == pytest.approx(x - 3 / 0.262, abs=0.05)


def test_truth_and_known_lens_catalogue(tiny_mock):
    root, cfg, files = tiny_mock
    truth = list(csv.DictReader(open(root / "truth/lenses.csv")))
    assert len(truth) == cfg.lenses * cfg.n_bricks_ra * cfg.n_bricks_dec
    known = list(csv.DictReader(open(root / "catalogues/known_lenses.csv")))
    fits_known = fitsio.read(str(root / "catalogues/known_lenses.fits"))
    assert len(fits_known) == len(known)
    catalogued = [t for t in truth if t["catalogued"] == "True"]
    assert 0 < len(catalogued) < len(truth)  # some lenses are hidden
    names = {k["name"] for k in known}
    assert all(k["name"].startswith("DESI-") for k in known) and len(names) == len(known)
    # each lens's deflector is a catalogue row at the truth position
    rows = np.concatenate([read_sweep(p, ["RELEASE", "BRICKID", "OBJID", "RA", "DEC"]) for p in files["sweeps"]])
    for t in truth:
        hit = rows[(rows["BRICKID"] == int(t["brickid"])) & (rows["OBJID"] == int(t["objid"]))]
        assert len(hit) == 1 and hit["RA"][0] == pytest.approx(float(t["ra"]), abs=1e-9)
    assert json.loads((root / "mock.json").read_text())["n_lenses"] == len(truth)


def test_mock_is_deterministic(tiny_mock, tmp_path):
    from lensfinder.mock.sky import MockSky
    from lensfinder.mock.write import _sweep_rows

    _, cfg, _ = tiny_mock
    a = _sweep_rows(MockSky(cfg), cfg)
    b = _sweep_rows(MockSky(cfg), cfg)
    assert np.array_equal(a, b)
    c = _sweep_rows(MockSky(MockConfig(**{**cfg.__dict__, "seed": cfg.seed + 1})), cfg)
    assert len(c) != len(a) or not np.array_equal(a["RA"], c["RA"])


def test_default_mock_writes_dr10_south_only(tiny_mock):
    """The region options default to the DR10-south tree (two-region mocks: test_regions.py)."""
    root, cfg, files = tiny_mock
    assert (cfg.release, cfg.regions) == ("dr10", ["south"])
    assert sorted(p.name for p in root.iterdir()) == ["catalogues", "dr10", "mock.json", "truth"]
    assert sorted(p.name for p in (root / "dr10").iterdir()) == ["south", "survey-bricks.fits.gz"]
    assert [p.split("/dr10/")[1] for p in files["bricks"]] == ["survey-bricks.fits.gz",
                                                               "south/survey-bricks-dr10-south.fits.gz"]
    saved = json.loads((root / "mock.json").read_text())["config"]
    assert saved["release"] == "dr10" and saved["regions"] == ["south"]
    assert {int(r) for r in np.concatenate([read_sweep(p, ["RELEASE"])["RELEASE"] for p in files["sweeps"]])} == {10000}


def test_bricks_rendered_by_two_workers_are_the_same_files(tiny_mock, tmp_path):
    """The coadds are rendered brick by brick in worker processes; each brick's noise has its
    own stream, so two workers write exactly the files one does."""
    root, cfg, files = tiny_mock
    other = write_mock_survey(tmp_path / "two", cfg, progress=False, workers=2)
    assert len(files["coadds"]) == len(other["coadds"]) == 2 * 3  # two bricks, three bands
    for a, b in zip(files["coadds"] + files["sweeps"], other["coadds"] + other["sweeps"]):
        assert Path(a).read_bytes() == Path(b).read_bytes(), b
