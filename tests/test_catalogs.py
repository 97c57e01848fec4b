"""Lens catalogues: CSV, FITS and the lenscat package (offline), bad rows named by file and
line, union with provenance, config entries."""

import fitsio
import numpy as np
import pytest

from lensfinder.catalog.lenses import CatalogSpec, read_catalog, union_catalogs
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


# Run in a fresh interpreter whose sockets cannot connect: the lenscat source must work offline.
OFFLINE = """
import socket
def _no_network(*args, **kwargs):
    raise OSError("network disabled by the test")
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = _no_network
"""

LENSCAT_CHECK = OFFLINE + """
import json
from lensfinder.catalog.lenses import CatalogSpec, read_catalog, union_catalogs
from lensfinder.errors import LensfinderError

confident, problems = read_catalog(CatalogSpec(source="lenscat", gradings=["confident"]))
galaxies, _ = read_catalog(CatalogSpec(source="lenscat", gradings=["Probable"], types=["galaxy"], label="lc"))
everything, _ = read_catalog(CatalogSpec(source="lenscat"))
try:
    read_catalog(CatalogSpec(source="lenscat", gradings=["confident", "definite"]))
    unknown = None
except LensfinderError as err:
    unknown = str(err)

import lenscat  # the package's own table, filtered the same way
table = lenscat.catalog
sel = table[table["grading"] == "confident"]
gal = table[(table["grading"] == "probable") & (table["type"] == "galaxy")]
print(json.dumps({
    "problems": problems, "unknown": unknown, "n_table": len(table), "n_everything": len(everything),
    "n_confident": len(confident), "n_confident_table": len(sel),
    "names_match": confident["name"].tolist() == [str(n).strip() for n in sel["name"]],
    "ra_match": confident["ra"].tolist() == [float(x) for x in sel["RA"]],
    "dec_match": confident["dec"].tolist() == [float(x) for x in sel["DEC"]],
    "refs_match": confident["reference"].tolist() == [str(r).strip() for r in sel["ref"]],
    "grades": sorted(set(confident["grade"])), "galaxy_grades": sorted(set(galaxies["grade"])),
    "labels": sorted(set(confident["catalog"])) + sorted(set(galaxies["catalog"])),
    "n_galaxies": len(galaxies), "n_galaxies_table": len(gal),
    "everything_grades": everything["grade"].value_counts().to_dict(),
    "table_gradings": {str(k): int((table["grading"] == k).sum()) for k in set(table["grading"])},
}))
"""


def test_lenscat_source_offline_with_a_grading_filter(tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", LENSCAT_CHECK], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["problems"] == [] and got["n_table"] > 30000 and got["n_everything"] == got["n_table"]
    assert got["n_confident"] == got["n_confident_table"] > 1000
    assert got["names_match"] and got["ra_match"] and got["dec_match"] and got["refs_match"]
    assert got["grades"] == ["A"] and got["galaxy_grades"] == ["B"]  # confident -> A, probable -> B
    assert got["labels"] == ["lenscat", "lc"]
    assert got["n_galaxies"] == got["n_galaxies_table"] > 1000
    gradings = got["table_gradings"]
    expected = {"A": gradings.get("confident", 0), "B": gradings.get("probable", 0)}
    expected["C"] = got["n_table"] - expected["A"] - expected["B"]
    assert got["everything_grades"] == {k: v for k, v in expected.items() if v}
    assert "unknown grading value(s) ['definite']" in got["unknown"] and "confident" in got["unknown"]


def test_lenscat_entries_join_the_union_with_their_provenance(tmp_path):
    from lensfinder.catalog.lenses import grade_ok

    lens = read_catalog(CatalogSpec(source="lenscat", gradings=["probable"]))[0].iloc[0]
    mine = _csv(tmp_path / "mine.csv", f"name,ra,dec,grade\nmine-1,{lens.ra},{lens.dec + 0.5 / 3600},A\n"
                                        "far,10.0,-89.0,C\n")
    systems, problems = union_catalogs([CatalogSpec(source="lenscat", gradings=["probable"]), CatalogSpec(mine)])
    merged = systems[systems["catalogs"] == "lenscat;mine.csv"]
    assert len(merged) == 1 and merged.iloc[0]["grade"] == "A" and merged.iloc[0]["name"] == "mine-1"
    assert set(systems["grade"]) == {"A", "B", "C"}
    alone = systems[systems["catalogs"] == "lenscat"]
    assert (alone["grade"] == "B").all() and (alone["reference"] != "").all()
    assert grade_ok(systems["grade"], ["A"]).sum() == 1  # trainset.grades works on the mapped letters


def test_catalog_entries_are_checked_and_only_files_are_rule_inputs(tmp_path):
    from lensfinder.catalog.lenses import catalog_input_files, catalog_versions

    specs = [{"path": "a.csv", "label": "mine"}, {"source": "lenscat", "gradings": ["confident"]}, {"path": "b.fits"}]
    assert catalog_input_files(specs) == ["a.csv", "b.fits"]
    assert catalog_input_files([CatalogSpec.from_dict(s) for s in specs]) == ["a.csv", "b.fits"]
    versions = catalog_versions(specs)
    assert list(versions) == ["lenscat"] and versions["lenscat"].count(".") >= 1
    for bad, message in [({"path": "a.csv", "source": "lenscat"}, "either path .* or source"),
                         ({"label": "x"}, "either path .* or source"),
                         ({"source": "masterlens"}, "unknown source 'masterlens'"),
                         ({"path": "a.csv", "gradings": ["confident"]}, "apply to source: lenscat only"),
                         ({"source": "lenscat", "ra": "RA"}, "takes no column names \\(ra\\)"),
                         ({"source": "lenscat", "grading": ["confident"]}, "unknown key\\(s\\) \\['grading'\\]")]:
        with pytest.raises(LensfinderError, match=message):
            CatalogSpec.from_dict(bad)
    with pytest.raises(LensfinderError, match="unknown type value\\(s\\) \\['quasar'\\]"):
        read_catalog(CatalogSpec(source="lenscat", types=["quasar"]))
