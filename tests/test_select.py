"""Selection cuts, region label, exposure bins and counts, against independent numpy."""

import csv
from pathlib import Path

import fitsio
import numpy as np
import pyarrow.parquet as pq
import pytest

from lensfinder.catalog.select import SelectionConfig, select_sweep, zexp_bin_labels
from lensfinder.errors import LensfinderError
from lensfinder.survey.positions import photometric_region
from lensfinder.survey.sweeps import read_sweep, sweep_dtype


def _independent_selection(path, zmag_max=20.0, deredden=False):
    d = fitsio.read(str(path), ext=1)
    t = np.char.strip(d["TYPE"].astype(str))
    flux = d["FLUX_Z"] / (d["MW_TRANSMISSION_Z"] if deredden else 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = 22.5 - 2.5 * np.log10(flux)
    keep = np.isin(t, ["SER", "DEV", "REX", "EXP"]) & (flux > 0) & (mag < zmag_max)
    keep &= (d["NOBS_G"] >= 3) & (d["NOBS_R"] >= 3) & (d["NOBS_Z"] >= 3)
    return d[keep]


def _with_shallow_patch(sweep, tmp_path):
    """A copy of the sweep in which every fifth object has one r exposure: the tiny mock is
    deep everywhere, and the NOBS cut must have objects to remove."""
    data, header = fitsio.read(str(sweep), ext=1, header=True)
    data["NOBS_R"][::5] = 1
    out = tmp_path / f"shallow-{Path(sweep).name}"
    fitsio.write(str(out), data, header=header, clobber=True)
    return out


@pytest.mark.parametrize("deredden", [False, True])
def test_selection_equals_independent_numpy(tiny_mock, tmp_path, deredden):
    _, _, files = tiny_mock
    for sweep in (_with_shallow_patch(s, tmp_path) for s in files["sweeps"]):
        out = tmp_path / "objects.parquet"
        n, removed = select_sweep(sweep, out, tmp_path / "counts.csv", SelectionConfig(deredden=deredden), progress=False)
        expected = _independent_selection(sweep, deredden=deredden)
        table = pq.read_table(out).to_pandas()
        assert n == len(table) == len(expected) > 0
        got = set(zip(table["RELEASE"], table["BRICKID"], table["OBJID"]))
        assert got == set(zip(expected["RELEASE"].tolist(), expected["BRICKID"].tolist(), expected["OBJID"].tolist()))
        assert set(table["TYPE"]) <= {"SER", "DEV", "REX", "EXP"}
        assert (table["MAG_Z_DERED" if deredden else "MAG_Z"] < 20).all()
        assert set(table["REGION"]) == {"DECaLS"}
        # counts add up: input = selected + removed by each cut
        rows = list(csv.DictReader(open(tmp_path / "counts.csv")))
        assert [r["cut"] for r in rows] == ["input", "type", "photometry", "zmag", "nobs", "maskbits", "region", "dec"]
        n_in = int(rows[0]["remaining"])
        assert n_in == len(fitsio.read(str(sweep), ext=1, columns=["OBJID"]))
        assert n_in - sum(int(r["removed"]) for r in rows[1:]) == n == int(rows[-1]["remaining"])
        assert removed["type"] > 0 and removed["zmag"] > 0 and removed["nobs"] > 0


def test_chunked_reading_gives_the_same_rows(tiny_mock, tmp_path):
    _, _, files = tiny_mock
    sweep = files["sweeps"][0]
    select_sweep(sweep, tmp_path / "a.parquet", tmp_path / "a.csv", SelectionConfig(), progress=False)
    select_sweep(sweep, tmp_path / "b.parquet", tmp_path / "b.csv", SelectionConfig(chunk_rows=37), progress=False)
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def _write_variant(path, rows, release):
    """Re-write DR10 rows in the DR9 or DR8 sweep layout (no i band, int16 MASKBITS; DR8: S4
    TYPE, SER fitted as COMP, the DEV/EXP shape columns instead of SHAPE_*)."""
    dt = sweep_dtype(release)
    out = np.zeros(len(rows), dtype=dt)
    for name in dt.names:
        if name in rows.dtype.names:
            out[name] = rows[name]
    if release == "dr8":
        t = np.char.strip(rows["TYPE"].astype(str))
        # a DR8 composite: the dominant component holds the SER fit's shape
        dev_like = (t == "DEV") | ((t == "SER") & (rows["SERSIC"] >= 2.5))
        out["FRACDEV"] = np.where(t == "SER", np.where(dev_like, 0.7, 0.3), np.where(t == "DEV", 1.0, 0.0))
        for q in ("R", "E1", "E2"):
            out[f"SHAPEDEV_{q}"] = np.where(dev_like, rows[f"SHAPE_{q}"], 0.0)
            out[f"SHAPEEXP_{q}"] = np.where(~dev_like & (t != "PSF"), rows[f"SHAPE_{q}"], 0.0)
        out["TYPE"] = np.char.ljust(np.where(t == "SER", "COMP", t).astype("S4"), 4)  # padded 'REX ' as on disk
    fitsio.write(str(path), out, extname="SWEEP", clobber=True)
    return out


@pytest.mark.parametrize("release,ncols", [("dr9", 115), ("dr8", 120)])
def test_dr8_dr9_layouts_select_like_dr10(tiny_mock, tmp_path, release, ncols):
    _, _, files = tiny_mock
    sweep = files["sweeps"][0]
    rows = fitsio.read(str(sweep), ext=1)
    path = tmp_path / "sweep-145p000-150p005.fits"
    written = _write_variant(path, rows, release)
    assert len(written.dtype.names) == ncols and written.dtype["MASKBITS"].itemsize == 2
    header = fitsio.read_header(str(path), ext=1)
    tform_type = header[f"TFORM{list(written.dtype.names).index('TYPE') + 1}"]
    assert tform_type == ("4A" if release == "dr8" else "3A")
    if release == "dr8":
        raw = open(path, "rb").read()
        assert b"REX " in raw and b"COMP" in raw  # padded values on disk
        assert "SHAPE_R" not in written.dtype.names and "SERSIC" not in written.dtype.names
    types = ["SER", "DEV", "REX", "EXP", "COMP"]
    select_sweep(sweep, tmp_path / "ref.parquet", tmp_path / "ref.csv", SelectionConfig(types=types), progress=False)
    select_sweep(path, tmp_path / "v.parquet", tmp_path / "v.csv", SelectionConfig(types=types), progress=False)
    ref, var = pq.read_table(tmp_path / "ref.parquet").to_pandas(), pq.read_table(tmp_path / "v.parquet").to_pandas()
    assert len(var) == len(ref) > 0
    assert var["OBJID"].tolist() == ref["OBJID"].tolist()
    assert set(var["TYPE"]) <= {"SER", "DEV", "REX", "EXP", "COMP"}
    # (viii) DR8 shapes come from the DEV/EXP fit of each type: the values DR10 holds
    for q in ("SHAPE_R", "SHAPE_E1", "SHAPE_E2"):
        assert np.array_equal(var[q].to_numpy(), ref[q].to_numpy()), q
    if release == "dr8":
        assert set(var["TYPE"]) == {"COMP", "DEV", "REX", "EXP"}


def _dr8_rows(types, fracdev, dev_r, exp_r):
    dt = sweep_dtype("dr8")
    rows = np.zeros(len(types), dtype=dt)
    rows["RELEASE"], rows["BRICKID"], rows["BRICKNAME"], rows["OBJID"] = 8000, 1, "0001p000", np.arange(len(types))
    rows["TYPE"] = [t.ljust(4) for t in types]
    rows["RA"], rows["DEC"] = 0.1, 0.0
    rows["FRACDEV"] = fracdev
    rows["SHAPEDEV_R"], rows["SHAPEDEV_E1"], rows["SHAPEDEV_E2"] = dev_r, 0.1, -0.1
    rows["SHAPEEXP_R"], rows["SHAPEEXP_E1"], rows["SHAPEEXP_E2"] = exp_r, 0.2, 0.3
    for b in "GRZ":
        rows[f"FLUX_{b}"], rows[f"MW_TRANSMISSION_{b}"], rows[f"NOBS_{b}"] = 100.0, 1.0, 5
    return rows


def test_dr8_shapes_by_type_from_a_real_dr8_sweep(tmp_path):
    """(viii) DEV -> SHAPEDEV_*, EXP/REX -> SHAPEEXP_*, COMP -> the component with the larger
    flux fraction (FRACDEV >= 0.5 -> DEV), PSF -> 0; padded TYPE strings stripped."""
    types = ["DEV", "EXP", "REX", "COMP", "COMP", "COMP", "PSF"]
    rows = _dr8_rows(types, fracdev=[1, 0, 0, 0.5, 0.49, 0.9, 0],
                     dev_r=[1.5, 9, 9, 2.5, 9, 3.5, 9], exp_r=[9, 1.1, 0.4, 9, 1.7, 9, 9])
    rows["SHAPEEXP_E1"][2] = rows["SHAPEEXP_E2"][2] = 0.0  # REX: round
    path = tmp_path / "sweep-000m005-010p000.fits"
    fitsio.write(str(path), rows, extname="SWEEP", clobber=True)
    assert fitsio.read_header(str(path), ext=1)["TFORM5"] == "4A"
    cfg = SelectionConfig(types=["DEV", "EXP", "REX", "COMP"], min_nobs=3)
    select_sweep(path, tmp_path / "o.parquet", tmp_path / "c.csv", cfg, progress=False)
    t = pq.read_table(tmp_path / "o.parquet").to_pandas()
    assert t["TYPE"].tolist() == types[:-1]  # PSF removed by the type cut
    assert t["SHAPE_R"].tolist() == pytest.approx([1.5, 1.1, 0.4, 2.5, 1.7, 3.5])
    assert t["SHAPE_E1"].tolist() == pytest.approx([0.1, 0.2, 0.0, 0.1, 0.2, 0.1])
    assert t["SHAPE_E2"].tolist() == pytest.approx([-0.1, 0.3, 0.0, -0.1, 0.3, -0.1])
    assert t["SERSIC"].tolist() == [4.0, 1.0, 1.0, 4.0, 1.0, 4.0]
    # PSF -> 0 (read directly: the selection drops it)
    psf = read_sweep(path, ["TYPE", "SHAPE_R", "SHAPE_E1", "SHAPE_E2", "SERSIC"])[-1]
    assert psf["TYPE"] == "PSF" and [psf[c] for c in ("SHAPE_R", "SHAPE_E1", "SHAPE_E2", "SERSIC")] == [0, 0, 0, 0]
    # a DR8-like file without FRACDEV: COMP takes the DEV fit
    names = [n for n in rows.dtype.names if n not in ("FRACDEV", "FRACDEV_IVAR")]
    fitsio.write(str(path), rows[names], extname="SWEEP", clobber=True)
    got = read_sweep(path, ["TYPE"], ["SHAPE_R"])
    assert got["SHAPE_R"].tolist() == pytest.approx([1.5, 1.1, 0.4, 2.5, 9.0, 3.5, 0.0])


def test_maskbits_cut(tiny_mock, tmp_path):
    _, _, files = tiny_mock
    rows = fitsio.read(str(files["sweeps"][0]), ext=1)
    rows["MASKBITS"][::2] = 1 << 1  # BRIGHT on every other row
    path = tmp_path / "sweep-145p000-150p005.fits"
    fitsio.write(str(path), rows, extname="SWEEP", clobber=True)
    select_sweep(path, tmp_path / "a.parquet", tmp_path / "a.csv", SelectionConfig(), progress=False)
    select_sweep(path, tmp_path / "b.parquet", tmp_path / "b.csv", SelectionConfig(maskbits_reject=[1]), progress=False)
    a, b = pq.read_table(tmp_path / "a.parquet").to_pandas(), pq.read_table(tmp_path / "b.parquet").to_pandas()
    assert (b["MASKBITS"] & 2 == 0).all() and len(b) == (a["MASKBITS"] & 2 == 0).sum() < len(a)


@pytest.mark.parametrize("deredden", [False, True])
def test_non_finite_photometry_is_rejected_with_its_reason(tiny_mock, tmp_path, deredden):
    """An infinite flux, a NaN flux or a zero transmission would give z = -inf or NaN
    magnitudes; -inf passes any magnitude cut. Such rows are removed by the photometry cut
    and counted there, whatever the other cuts say."""
    _, _, files = tiny_mock
    rows = fitsio.read(str(files["sweeps"][0]), ext=1)
    path = tmp_path / "sweep-145p000-150p005.fits"
    fitsio.write(str(path), rows, extname="SWEEP", clobber=True)
    select_sweep(path, tmp_path / "a.parquet", tmp_path / "a.csv", SelectionConfig(deredden=deredden), progress=False)
    clean = pq.read_table(tmp_path / "a.parquet").to_pandas()
    bad = {int(o): None for o in clean["OBJID"][:3]}  # three selected rows made corrupt
    idx = [int(np.flatnonzero(rows["OBJID"] == o)[0]) for o in bad]
    rows["FLUX_Z"][idx[0]] = np.inf
    rows["MW_TRANSMISSION_Z"][idx[1]] = 0.0
    rows["FLUX_G"][idx[2]] = np.nan
    fitsio.write(str(path), rows, extname="SWEEP", clobber=True)
    n, removed = select_sweep(path, tmp_path / "b.parquet", tmp_path / "b.csv", SelectionConfig(deredden=deredden),
                              progress=False)
    table = pq.read_table(tmp_path / "b.parquet").to_pandas()
    assert n == len(clean) - 3 and not set(table["OBJID"]) & set(bad)
    assert removed["photometry"] == 3
    counts = {r["cut"]: int(r["removed"]) for r in csv.DictReader(open(tmp_path / "b.csv"))}
    assert counts["photometry"] == 3
    for col in ("MAG_G", "MAG_Z", "MAG_Z_DERED"):
        assert not np.isinf(table[col]).any()


def test_region_rule_and_exposure_bins():
    # North iff Dec >= 32.375 and Galactic b > 0: (180, 40) NGC; (60, 40) is south of the plane.
    assert photometric_region([180.0, 180.0, 60.0, 180.0], [40.0, 10.0, 40.0, 32.37]).tolist() == [
        "north", "south", "south", "south"]
    assert zexp_bin_labels([3, 4, 5, 6, 7, 8, 10, 11, 30, 2], [3, 4, 5, 6, 8, 11]).tolist() == [
        "3", "4", "5", "6-7", "6-7", "8-10", "8-10", "11+", "11+", "<3"]


def test_missing_column_is_named(tiny_mock, tmp_path):
    _, _, files = tiny_mock
    rows = fitsio.read(str(files["sweeps"][0]), ext=1)
    names = [n for n in rows.dtype.names if n != "NOBS_Z"]
    path = tmp_path / "sweep-145p000-150p005.fits"
    fitsio.write(str(path), rows[names], extname="SWEEP", clobber=True)
    with pytest.raises(LensfinderError, match=r"sweep-145p000-150p005.fits lacks required column\(s\) \['NOBS_Z'\]"):
        select_sweep(path, tmp_path / "o.parquet", tmp_path / "c.csv", SelectionConfig(), progress=False)
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("cut_bytes", [5000, 100])
def test_truncated_or_garbage_sweep_is_named(tiny_mock, tmp_path, cut_bytes):
    _, _, files = tiny_mock
    data = open(files["sweeps"][0], "rb").read()
    path = tmp_path / "sweep-145p000-150p005.fits"
    path.write_bytes(data[: len(data) - cut_bytes] if cut_bytes > 1000 else b"not a fits file" * 10)
    with pytest.raises(LensfinderError, match=r"sweep-145p000-150p005.fits (is truncated|is not a readable FITS)"):
        read_sweep(path, ["RA"])
    with pytest.raises(LensfinderError, match="re-download it"):
        select_sweep(path, tmp_path / "o.parquet", tmp_path / "c.csv", SelectionConfig(), progress=False)
    assert not (tmp_path / "o.parquet").exists()


def test_dec_max_footprint_cut_is_counted(tiny_mock, tmp_path):
    """Paper IV's footprint (Dec < +32): here a cut through the mock's Dec range."""
    _, _, files = tiny_mock
    sweep = files["sweeps"][0]
    select_sweep(sweep, tmp_path / "a.parquet", tmp_path / "a.csv", SelectionConfig(), progress=False)
    all_ = pq.read_table(tmp_path / "a.parquet").to_pandas()
    cut = float(np.median(all_["DEC"]))
    n, removed = select_sweep(sweep, tmp_path / "b.parquet", tmp_path / "b.csv", SelectionConfig(dec_max=cut),
                              progress=False)
    kept = pq.read_table(tmp_path / "b.parquet").to_pandas()
    assert (kept["DEC"] < cut).all() and n == (all_["DEC"] < cut).sum() > 0
    rows = {r["cut"]: r for r in csv.DictReader(open(tmp_path / "b.csv"))}
    assert int(rows["dec"]["removed"]) == removed["dec"] == (all_["DEC"] >= cut).sum() > 0
    # the earlier cuts are unchanged: the footprint cut comes last
    before = {r["cut"]: r for r in csv.DictReader(open(tmp_path / "a.csv"))}
    assert all(rows[c]["removed"] == before[c]["removed"] for c in ("type", "photometry", "zmag", "nobs", "maskbits", "region"))
    assert int(before["dec"]["removed"]) == 0


def test_a_repeated_key_in_a_sweep_is_an_error_naming_it(tiny_mock, tmp_path):
    _, _, files = tiny_mock
    rows = fitsio.read(files["sweeps"][0], ext=1)
    header = fitsio.read_header(files["sweeps"][0], ext=1)
    fitsio.write(str(tmp_path / "sweep-145p000-150p005.fits"), np.concatenate([rows, rows[-3:]]), header=header,
                 extname="SWEEP", clobber=True)
    with pytest.raises(LensfinderError, match=r"sweep-145p000-150p005.fits repeats \d+ selected key"):
        select_sweep(tmp_path / "sweep-145p000-150p005.fits", tmp_path / "o.parquet", tmp_path / "c.csv",
                     SelectionConfig(zmag_max=30, types=["PSF", "REX", "DEV", "EXP", "SER", "DUP"], min_nobs=0),
                     progress=False)
    assert not (tmp_path / "o.parquet").exists()
