"""Lens catalogues: CSV and FITS, bad rows named by file and line, union with provenance."""

import fitsio
import numpy as np
import pytest

from lensfinder.catalogs import CatalogSpec, read_catalog, union_catalogs
from lensfinder.errors import LensfinderError


def _csv(path, text):
    path.write_text(text)
    return str(path)


def test_bad_rows_are_reported_with_file_and_line_and_skipped(tmp_path):
    path = _csv(tmp_path / "lenses.csv", "name,ra,dec,grade\nA1,10.0,1.0,A\nbad1,ten,1.0,A\nbad2,,1.0,B\n"
                                         "bad3,370.0,1.0,A\nbad4,10.0,-91,A\nB2,11.0,2.0,b\n")
    table, problems = read_catalog(CatalogSpec(path))
    assert table["name"].tolist() == ["A1", "B2"] and table["grade"].tolist() == ["A", "B"]
    assert len(problems) == 4
    assert problems[0].startswith(f"{path} line 3: non-numeric")
    assert f"{path} line 5: coordinate out of range" in problems[2]
    with pytest.raises(LensfinderError, match=r"lenses.csv line 3: non-numeric.*strict is on"):
        read_catalog(CatalogSpec(path), strict=True)


def test_empty_or_unusable_catalogues_are_errors(tmp_path):
    with pytest.raises(LensfinderError, match="holds no usable row"):
        read_catalog(CatalogSpec(_csv(tmp_path / "e.csv", "ra,dec\n")))
    with pytest.raises(LensfinderError, match="has no column 'ra'"):
        read_catalog(CatalogSpec(_csv(tmp_path / "x.csv", "RAdeg,DEdeg\n1,2\n")))
    with pytest.raises(LensfinderError, match="does not exist"):
        read_catalog(CatalogSpec(str(tmp_path / "missing.csv")))


def test_fits_catalogue_with_named_columns_and_union(tmp_path):
    arr = np.zeros(3, dtype=[("RA_DEG", "f8"), ("DEC_DEG", "f8"), ("Q", "S2"), ("ID", "S10")])
    arr["RA_DEG"] = [10.0, 10.0 + 1.0 / 3600, 50.0]
    arr["DEC_DEG"] = [1.0, 1.0, -5.0]
    arr["Q"] = [b"C", b"A", b"B"]
    arr["ID"] = [b"x", b"y", b"z"]
    fits_path = tmp_path / "cands.fits"
    fitsio.write(str(fits_path), arr)
    csv_path = _csv(tmp_path / "known.csv", "name,ra,dec,grade,reference\nK1,10.0,1.0,B,paper\n")
    specs = [CatalogSpec(str(fits_path), ra="RA_DEG", dec="DEC_DEG", grade="Q", name="ID", label="cands"),
             CatalogSpec(csv_path, label="known")]
    systems, problems = union_catalogs(specs, dedup_radius_arcsec=2.0)
    assert problems == [] and len(systems) == 2
    merged = systems[systems["n_entries"] == 3].iloc[0]
    assert merged["grade"] == "A" and merged["name"] == "y" and merged["catalogs"] == "cands;known"
