"""The brick grid against rows of the real survey-bricks.fits.gz."""

import fitsio
import numpy as np
import pytest

from lensfinder.errors import LensfinderError
from lensfinder.survey.bricks import BrickGrid, brick_names, read_bricks_table

GRID = BrickGrid.build()

# Verified rows of the real table (legacypipe test copies), per legacysurvey-formats.md 2.1.
REAL_ROWS = [
    dict(BRICKNAME=b"3521p002", BRICKID=333216, BRICKQ=2, BRICKROW=361, BRICKCOL=1408, RA=352.125, DEC=0.25,
         RA1=352.0, RA2=352.25, DEC1=0.125, DEC2=0.375),
    dict(BRICKNAME=b"0364m042", BRICKID=306043, BRICKQ=3, BRICKROW=343, BRICKCOL=145, RA=36.4255910987483,
         DEC=-4.25, RA1=36.3004172461752, RA2=36.5507649513213, DEC1=-4.375, DEC2=-4.125),
]


@pytest.mark.parametrize("row", REAL_ROWS, ids=lambda r: r["BRICKNAME"].decode())
def test_brick_from_algorithm_equals_real_row(row):
    got = GRID.lookup(row["RA"], row["DEC"])[0]
    for key, value in row.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-10), key
        else:
            assert got[key] == value, key


def test_whole_sky_has_the_documented_number_of_bricks():
    table = GRID.all_bricks()
    assert GRID.n_bricks == len(table) == 662_174
    assert np.array_equal(table["BRICKID"], np.arange(1, 662_175))
    assert len(np.unique(table["BRICKNAME"])) == len(table)


def test_lookup_at_edges_and_wraparound():
    # RA1 belongs to the brick, RA2 to the next one; RA 360 wraps to 0.
    b = GRID.lookup(352.0, 0.25)[0]
    assert b["BRICKNAME"] == b"3521p002"
    assert GRID.lookup(352.25, 0.25)[0]["RA1"] == pytest.approx(352.25)
    assert GRID.lookup(360.0, 0.0)[0]["RA1"] == 0.0
    assert GRID.lookup(-0.1, 0.0)[0]["RA2"] == pytest.approx(360.0)
    # random points fall inside the brick returned
    rng = np.random.default_rng(1)
    ra, dec = rng.uniform(0, 360, 5000), rng.uniform(-89.8, 89.8, 5000)
    t = GRID.lookup(ra, dec)
    assert np.all((t["RA1"] <= ra) & (ra < t["RA2"]) & (t["DEC1"] <= dec) & (dec < t["DEC2"]))


def test_names_truncate_and_handle_poles():
    assert brick_names([0.125, 0.125, 180.0, 180.0], [0.0, -0.25, -90.0, 90.0]).tolist() == [
        b"0001p000", b"0001m002", b"1800m900", b"1800p900"]
    assert GRID.lookup(0, -90)[0]["BRICKNAME"] == b"1800m900"


def test_bricks_table_reader_is_case_insensitive(tmp_path):
    rows = GRID.lookup([352.1, 36.4], [0.25, -4.25])
    lower = rows.astype([(n.lower(), rows.dtype[n].str) for n in rows.dtype.names])
    path = tmp_path / "survey-bricks.fits.gz"
    fitsio.write(str(path), lower)
    table = read_bricks_table(path)
    assert table.dtype.names[:2] == ("BRICKNAME", "BRICKID")
    assert table["BRICKID"].tolist() == [333216, 306043]


def test_bricks_table_missing_file_names_it(tmp_path):
    with pytest.raises(LensfinderError, match="survey-bricks.fits.gz does not exist"):
        read_bricks_table(tmp_path / "survey-bricks.fits.gz")
