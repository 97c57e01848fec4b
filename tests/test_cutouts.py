"""Cutouts from the coadd bricks: exact pixels, brick-edge completion, failures, shards,
and agreement with the cutout-service backend served from 127.0.0.1."""

import json
import time

import fitsio
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from cutout_server import CutoutServer

from lensfinder.catalog.select import SelectionConfig, select_sweep
from lensfinder.cutouts.extract import CutoutExtractor, extract_sweep, lanczos_shift
from lensfinder.cutouts.shards import FLAG_FROM_NEIGHBOURS, ShardSet
from lensfinder.errors import LensfinderError
from lensfinder.mock.layout import MockConfig
from lensfinder.mock.light import render_image
from lensfinder.mock.sky import PSF_FWHM, MockSky
from lensfinder.mock.write import write_mock_survey
from lensfinder.mock.zoo import SKY_FRACTIONS
from lensfinder.survey.bricks import BrickGrid
from lensfinder.survey.service import CutoutService
from lensfinder.survey.tree import SurveyTree

# A noise-free 2 x 2 block of bricks sharing the corner (RA 150.0, Dec 2.125), one PSF
# everywhere and full exposure coverage, so that a cutout can be compared with a direct
# rendering of the same sky on its own grid.
BLOCK = dict(n_bricks_ra=2, n_bricks_dec=2, galaxies=40, stars=10, lenses=1, contaminants={k: 0.0 for k in SKY_FRACTIONS}, seed=3,
             noise=False, psf_variation=0.0, mean_exposures=40.0)
CORNER = (150.0, 2.125)


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    root = tmp_path_factory.mktemp("block")
    cfg = MockConfig(**BLOCK)
    write_mock_survey(root, cfg, progress=False)
    return root, cfg


@pytest.fixture(scope="module")
def tiny_shards(tiny_mock, tmp_path_factory):
    root, _, files = tiny_mock
    out = tmp_path_factory.mktemp("tiny_shards")
    sets = {}
    for sweep in files["sweeps"]:
        stem = sweep.rsplit("/", 1)[1].removesuffix(".fits")
        select_sweep(sweep, out / f"{stem}.parquet", out / f"{stem}.csv", SelectionConfig(), progress=False)
        extract_sweep(out / f"{stem}.parquet", out / stem, SurveyTree(root), size=101, max_rows=8, progress=False)
        sets[stem] = out
    return root, out, sorted(sets)


def _cutout_grid(extractor, ra, dec, brickname, size):
    home = extractor.brick(brickname)
    x, y = (float(v) for v in home.wcs.all_world2pix(ra, dec, 0))
    x0, y0 = int(round(x)) - size // 2, int(round(y)) - size // 2
    wcs = home.wcs.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix - np.array([x0, y0])
    return wcs, home, x, y, x0, y0


def test_101px_cutout_equals_brick_pixels_and_centres_the_object(tiny_shards):
    root, out, sweeps = tiny_shards
    tree = SurveyTree(root)
    ex = CutoutExtractor(tree, 101)
    checked = 0
    for stem in sweeps:
        shards = ShardSet(out / stem / "manifest.json")
        assert len(shards.manifest["shards"]) > 1  # max_rows=8 splits the sweep
        for i in range(len(shards)):
            row = shards.index.iloc[i]
            _, home, x, y, x0, y0 = _cutout_grid(ex, row.RA, row.DEC, row.BRICKNAME, 101)
            h, w = home.shape
            assert 0 <= x0 and x0 + 101 <= w and 0 <= y0 and y0 + 101 <= h  # fits in its own brick image
            direct = np.array([fitsio.FITS(str(tree.coadd_path(row.BRICKNAME, b)))[1][y0:y0 + 101, x0:x0 + 101]
                               for b in "grz"])
            assert np.array_equal(shards[i], direct.astype(np.float16))  # exact up to fp16 rounding
            assert abs(x - (x0 + 50)) <= 0.5 and abs(y - (y0 + 50)) <= 0.5
            assert row.CENTER_DX == pytest.approx(x - (x0 + 50)) and row.CENTER_DY == pytest.approx(y - (y0 + 50))
            checked += 1
    assert checked > 20


def test_201px_cutouts_at_brick_corners_match_direct_rendering(block):
    """Tolerance: pixels from the home brick equal the rendering to 1e-3 relative + 2e-4 nmgy
    (fp16 and the 1e-4 nmgy RICE quantisation); pixels resampled from a neighbouring brick
    (Lanczos-3 across tangent planes) to 1% of the cutout's peak."""
    root, cfg = block
    tree = SurveyTree(root)
    sky = MockSky(cfg)
    comps = sky.components()
    near = [s for s in sky.sources if s.type != "PSF" and
            np.hypot((s.ra - CORNER[0]) * np.cos(np.radians(s.dec)), s.dec - CORNER[1]) * 3600 < 10]
    assert len(near) >= 4  # one near the shared corner in each of the four bricks
    grid = BrickGrid.build()
    ex = CutoutExtractor(tree, 201, zero_is_missing=False)  # noise-free: empty sky is 0
    used_neighbours = 0
    for src in near:
        brick = grid.lookup(src.ra, src.dec)[0]["BRICKNAME"].decode()
        cube, info = ex.cutout(src.ra, src.dec, brick)
        assert cube is not None and info["FRAC_MISSING_G"] == 0
        wcs, home, *_ , x0, y0 = _cutout_grid(ex, src.ra, src.dec, brick, 201)
        h, w = home.shape
        yy, xx = np.mgrid[0:201, 0:201]
        from_home = (xx + x0 >= 0) & (xx + x0 < w) & (yy + y0 >= 0) & (yy + y0 < h)
        assert (~from_home).any() and info["FLAGS"] & FLAG_FROM_NEIGHBOURS
        used_neighbours += 1
        for b, band in enumerate("grz"):
            direct = render_image(comps, wcs, (201, 201), PSF_FWHM[band], b)
            got = cube[b].astype(np.float16).astype(np.float64)
            diff = np.abs(got - direct)
            assert np.all(diff[from_home] <= 1e-3 * np.abs(direct[from_home]) + 2e-4)
            assert diff[~from_home].max() <= 0.01 * direct.max()
    assert used_neighbours >= 4


def test_workers_give_the_same_shards_and_each_tile_is_decompressed_once(tiny_shards, tmp_path):
    import json

    root, out, stems = tiny_shards
    # both sweeps' objects in one table: two bricks, so two workers each get one
    objects = pd.concat([pd.read_parquet(out / f"{s}.parquet") for s in stems], ignore_index=True)
    assert objects.BRICKNAME.nunique() > 1
    objects.to_parquet(tmp_path / "objects.parquet")
    manifests = {}
    for workers in (1, 2):
        extract_sweep(tmp_path / "objects.parquet", tmp_path / f"w{workers}", SurveyTree(root), size=101, max_rows=8,
                      progress=False, workers=workers)
        manifests[workers] = json.loads((tmp_path / f"w{workers}/manifest.json").read_text())
    one, two = manifests[1], manifests[2]
    assert two["counts"] == one["counts"] and two["counts"]["selected"] == len(objects) and len(two["shards"]) > 1
    assert [s["sha256"] for s in two["shards"]] == [s["sha256"] for s in one["shards"]]
    assert pd.read_parquet(tmp_path / "w2/failures.parquet").equals(pd.read_parquet(tmp_path / "w1/failures.parquet"))
    # the tiles the brick's cutouts touch, counted from their sections (independently of
    # cutouts.touched_tiles), each decompressed once per band
    brick = objects.BRICKNAME.value_counts().index[0]
    ex = CutoutExtractor(SurveyTree(root), 101)
    home = ex.brick(brick)
    assert home.tiles[0] == (100, 100)  # the coadds' RICE tiles
    h, w = home.shape
    touched, per_cutout = set(), 0
    for r in objects[objects.BRICKNAME == brick].itertuples():
        x, y = (float(v) for v in home.wcs.all_world2pix(r.RA, r.DEC, 0))
        x0, y0 = int(round(x)) - 50, int(round(y)) - 50
        tiles = {(ty, tx) for ty in range(max(y0, 0) // 100, (min(y0 + 101, h) - 1) // 100 + 1)
                 for tx in range(max(x0, 0) // 100, (min(x0 + 101, w) - 1) // 100 + 1)}
        touched |= tiles
        per_cutout += len(tiles)
        assert ex.cutout(r.RA, r.DEC, brick)[0] is not None
    assert home.tiles_read == 3 * len(touched) < 3 * per_cutout


def test_failures_are_recorded_with_reasons(block, tmp_path):
    root, cfg = block
    grid = BrickGrid.build()
    b = grid.lookup(150.1, 2.0)[0]
    objs = pd.DataFrame({
        "RELEASE": [10000] * 4, "BRICKID": [1, 2, 3, int(b["BRICKID"])], "OBJID": [0, 0, 0, 5],
        "BRICKNAME": ["0001p000", b["BRICKNAME"].decode(), b["BRICKNAME"].decode(), b["BRICKNAME"].decode()],
        "RA": [0.1, 151.5, float(b["RA"]) + 0.1305, 150.1], "DEC": [0.0, 2.0, 2.0, 2.0],
        "TYPE": ["SER"] * 4, "REGION": ["DECaLS"] * 4, "ZEXP_BIN": ["3"] * 4, "MAG_Z": [19.0] * 4})
    objs.to_parquet(tmp_path / "objects.parquet")
    m = extract_sweep(tmp_path / "objects.parquet", tmp_path / "cut", SurveyTree(root), size=101,
                      max_missing=0.3, zero_is_missing=False, progress=False)
    assert m["counts"] == {"selected": 4, "written": 1, "failed": 3}
    fails = pq.read_table(tmp_path / "cut/failures.parquet").to_pandas().set_index("BRICKID")["reason"]
    # no such brick file; a position off its brick's image; the outer edge of the block (half empty)
    assert fails.to_dict() == {1: "brick_file_missing", 2: "off_image", 3: "mostly_empty"}


def test_shard_reader_batches_keys_and_checksums(tiny_shards, tmp_path):
    _, out, sweeps = tiny_shards
    shards = ShardSet(out / sweeps[0] / "manifest.json")
    m = shards.manifest
    assert m["dtype"] == "float16" and m["bands"] == ["g", "r", "z"] and m["units"] == "nanomaggy"
    assert m["counts"]["selected"] == m["counts"]["written"] + m["counts"]["failed"]
    assert m["counts"]["selected"] == pq.read_table(out / f"{sweeps[0]}.parquet").num_rows
    seen = 0
    for images, rows in shards.batches(batch_size=32):
        assert images.dtype.__str__() == "torch.float16" and tuple(images.shape[1:]) == (3, 101, 101)
        assert len(rows) == images.shape[0]
        key = tuple(int(rows.iloc[0][k]) for k in ("RELEASE", "BRICKID", "OBJID"))
        assert np.array_equal(shards.get(key), images[0].numpy())
        seen += images.shape[0]
    assert seen == len(shards) == len(shards.index)
    shards.verify()
    assert isinstance(shards.arrays[0], np.memmap)
    with pytest.raises(KeyError, match="not in"):
        shards.get((1, 2, 3))
    # a damaged shard is caught by its checksum; a missing one by the reader (on a copy: the
    # shard set is shared with other tests)
    import shutil

    copy = tmp_path / sweeps[0]
    shutil.copytree(out / sweeps[0], copy)
    arr = copy / m["shards"][0]["array"]
    data = bytearray(arr.read_bytes())
    data[-1] ^= 0xFF
    arr.write_bytes(bytes(data))
    with pytest.raises(LensfinderError, match="does not match its checksum"):
        ShardSet(copy / "manifest.json").verify()
    with pytest.raises(LensfinderError, match="does not match its checksum"):  # the reader checks as it reads
        for _ in ShardSet(copy / "manifest.json").batches(batch_size=7):
            pass
    older = json.loads((copy / "manifest.json").read_text())  # a manifest from before the CRC: SHA-256
    for entry in older["shards"]:
        del entry["crc32"]
    (copy / "manifest.json").write_text(json.dumps(older))
    with pytest.raises(LensfinderError, match="does not match its checksum"):
        for _ in ShardSet(copy / "manifest.json").batches(batch_size=7):
            pass
    ShardSet(out / sweeps[0] / "manifest.json").verify()  # the original is untouched
    intact = tmp_path / "intact"  # an undamaged set with a manifest from before the CRC reads cleanly
    shutil.copytree(out / sweeps[0], intact)
    before_crc = json.loads((intact / "manifest.json").read_text())
    for entry in before_crc["shards"]:
        del entry["crc32"]
    (intact / "manifest.json").write_text(json.dumps(before_crc))
    assert sum(len(b) for b, _ in ShardSet(intact / "manifest.json").batches(batch_size=7)) == len(shards)
    arr.unlink()
    with pytest.raises(LensfinderError, match="is missing: re-run its cutouts job"):
        ShardSet(copy / "manifest.json")


def test_lanczos_shift_moves_a_band_limited_image():
    yy, xx = np.mgrid[0:41, 0:41].astype(float)
    img = np.exp(-((xx - 20.3) ** 2 + (yy - 19.6) ** 2) / (2 * 2.0**2))
    shifted = lanczos_shift(img, 0.3, -0.4)  # point (20.3, 19.6) -> (20, 20), minus 3 px a side
    yy2, xx2 = np.mgrid[0:35, 0:35].astype(float)
    expect = np.exp(-((xx2 + 3 - 20.0) ** 2 + (yy2 + 3 - 20.0) ** 2) / (2 * 2.0**2))
    assert np.abs(shifted - expect).max() < 5e-3  # Lanczos-3 on a sigma = 2 px Gaussian


def test_service_backend_agrees_with_brick_backend(block, tmp_path):
    """Same shape, band order and orientation; values equal within what sub-pixel
    resampling makes (server: cubic spline; bricks: Lanczos-3 recentring):
    max |difference| <= 2% of the cutout's peak."""
    root, cfg = block
    sky = MockSky(cfg)
    grid = BrickGrid.build()
    targets = [s for s in sky.sources if s.type in ("DEV", "SER", "EXP") and s.flux[2] > 20][:5]
    assert targets
    ex = CutoutExtractor(SurveyTree(root), 101, recentre=True, zero_is_missing=False)
    with CutoutServer(root, delay_s=0.05) as server:
        service = CutoutService(server.url, cache_dir=tmp_path / "cache", max_workers=2, backoff_s=0.01)
        fetched = service.fetch_many([(s.ra, s.dec) for s in targets], size=101)
        assert server.max_in_flight <= 2 and server.requests == len(targets)
        for src, remote in zip(targets, fetched):
            local, info = ex.cutout(src.ra, src.dec, grid.lookup(src.ra, src.dec)[0]["BRICKNAME"].decode())
            assert remote.shape == local.shape == (3, 101, 101)
            assert np.unravel_index(np.argmax(remote[2]), (101, 101)) == np.unravel_index(np.argmax(local[2]), (101, 101))
            assert np.abs(remote - local).max() <= 0.02 * local.max()
            # band order g, r, z: the brighter of g and z is the same in both, and as the source says
            assert (remote[0].sum() < remote[2].sum()) == (local[0].sum() < local[2].sum()) == (src.flux[0] < src.flux[2])
        service.fetch(targets[0].ra, targets[0].dec, 101)
        assert server.requests == len(targets)  # served from the cache


def test_service_retries_then_succeeds_and_fails_clearly(block, tmp_path):
    root, cfg = block
    with CutoutServer(root, fail_first=2) as server:
        cube = CutoutService(server.url, retries=3, backoff_s=0.01).fetch(150.1, 2.0, 31)
        assert cube.shape == (3, 31, 31) and server.requests == 3
    with CutoutServer(root, always_fail=True) as server:
        with pytest.raises(LensfinderError, match=r"cutout\.fits\?ra=150\.1000000.*failed after 3 attempt\(s\) in \d+ s: HTTP 503"):
            CutoutService(server.url, retries=2, backoff_s=0.01).fetch(150.1, 2.0, 31)
        assert server.requests == 3
    # a 200 answer that is not a FITS cutout is an error naming the URL, and is never cached
    with CutoutServer(root, garbage_first=1) as server:
        service = CutoutService(server.url, cache_dir=tmp_path / "cache", retries=0)
        with pytest.raises(LensfinderError, match=r"answer for .*cutout\.fits\?ra=150\.1000000.* is not a FITS cutout"):
            service.fetch(150.1, 2.0, 31)
        assert not list((tmp_path / "cache").rglob("*.fits"))
        cube = service.fetch(150.1, 2.0, 31)  # asks again, gets a cutout, caches it
        assert cube.shape == (3, 31, 31) and server.requests == 2
        assert len(list((tmp_path / "cache").rglob("*.fits"))) == 1
        assert np.array_equal(service.fetch(150.1, 2.0, 31), cube) and server.requests == 2
    with CutoutServer(root) as server:
        with pytest.raises(LensfinderError, match="failed after 1 attempt"):
            CutoutService(server.url + "/nope", retries=3, backoff_s=0.01).fetch(150.1, 2.0, 31)  # 404: no retry


def test_service_retries_every_transport_error_within_its_deadline(block, tmp_path):
    """A truncated answer (IncompleteRead) is retried like a 503; a Retry-After is waited
    for, never less; the overall deadline stops the retries with the reason said."""
    root, cfg = block
    with CutoutServer(root, truncate_first=2) as server:
        cube = CutoutService(server.url, retries=3, backoff_s=0.01).fetch(150.1, 2.0, 31)
        assert cube.shape == (3, 31, 31) and server.requests == 3
    with CutoutServer(root, fail_first=1, retry_after=1) as server:
        CutoutService(server.url, retries=2, backoff_s=0.01).fetch(150.1, 2.0, 31)
        assert server.requests == 2 and server.times[1] - server.times[0] >= 0.95
    with CutoutServer(root, always_fail=True, retry_after=30) as server:
        start = time.monotonic()
        with pytest.raises(LensfinderError, match=r"failed after 1 attempt\(s\).*HTTP 503.*the 5 s deadline"):
            CutoutService(server.url, retries=5, backoff_s=0.01, deadline_s=5).fetch(150.1, 2.0, 31)
        assert time.monotonic() - start < 5 and server.requests == 1


def _bright_source(cfg):
    return next(s for s in MockSky(cfg).sources if s.type in ("DEV", "SER", "EXP") and s.flux[2] > 20)


def test_service_cache_is_per_server_and_evicts_corrupt_entries(block, tmp_path):
    root, cfg = block
    src = _bright_source(cfg)
    with CutoutServer(root) as first, CutoutServer(root, blank=True) as second:
        a = CutoutService(first.url, cache_dir=tmp_path / "cache").fetch(src.ra, src.dec, 31)
        b = CutoutService(second.url, cache_dir=tmp_path / "cache").fetch(src.ra, src.dec, 31)
        assert second.requests == 1 and np.abs(a).max() > 0 and not b.any()  # not the first server's cutout
        cached = [p for p in (tmp_path / "cache").rglob("*.fits") if p.parent.name.endswith(f"-{'ls-dr10'}")]
        assert len(cached) == 2
        parse = CutoutService(first.url)._parse
        path = next(p for p in cached if np.array_equal(parse(p.read_bytes(), src.ra, src.dec, 31), a))
        path.write_bytes(path.read_bytes()[:1000])  # a cache entry cut short on disk
        again = CutoutService(first.url, cache_dir=tmp_path / "cache").fetch(src.ra, src.dec, 31)
        assert np.array_equal(again, a) and first.requests == 2
        assert len(path.read_bytes()) > 1000  # evicted and written again


def test_service_cutouts_get_the_brick_cutouts_checks(block, tmp_path):
    """NaN and infinite pixels are missing, values beyond float16 clipped and flagged; a
    service cutout with no data (zeros, outside the footprint) never enters a training set."""
    from types import SimpleNamespace

    from lensfinder.cutouts.extract import screen_cutout
    from lensfinder.cutouts.shards import FLAG_MISSING_PIXELS, FLAG_SATURATED
    from lensfinder.trainset.build import _fetch_from_service

    cube = np.ones((3, 11, 11), np.float32)
    cube[0, 0, 0], cube[1, 0, 0], cube[2, 5, 5] = np.nan, np.inf, 1e6
    out, flags, frac, _ = screen_cutout(cube)
    assert np.isfinite(out).all() and out[2, 5, 5] == 65504 and out[0, 0, 0] == 0
    assert flags == FLAG_MISSING_PIXELS | FLAG_SATURATED and frac[0] == frac[1] == 1 / 121 and frac[2] == 0
    root, cfg = block
    src = _bright_source(cfg)
    row = {"RA": src.ra, "DEC": src.dec}
    for blank in (False, True):
        with CutoutServer(root, blank=blank) as server:
            got, detail = _fetch_from_service(SimpleNamespace(service_url=server.url, service_layer="ls-dr10"), row, 31,
                                              tmp_path / str(blank))
        if blank:
            assert got is None and f"cutout.fits?ra={src.ra:.7f}" in detail and "100% of the pixels have no data" in detail
        else:
            assert got.dtype == np.float16 and got.shape == (3, 31, 31) and detail == ""


def test_a_cutouts_worker_that_dies_fails_the_job_naming_the_brick(tiny_shards, tmp_path, monkeypatch):
    """A worker killed mid-brick (as the out-of-memory killer would) made Pool.imap wait
    forever; now the job stops at once with the sweep's objects file and the brick named,
    and writes no manifest."""
    import os

    import lensfinder.cutouts.extract as extract

    root, out, stems = tiny_shards
    objects = pd.concat([pd.read_parquet(out / f"{s}.parquet") for s in stems], ignore_index=True)
    objects.to_parquet(tmp_path / "objects.parquet")
    doomed = sorted(objects.BRICKNAME.unique())[-1]
    cut = extract._cut_brick

    def dies_on_doomed(rows):
        if rows["BRICKNAME"].iloc[0] == doomed:
            os._exit(137)  # no exception, no cleanup: what SIGKILL leaves
        return cut(rows)

    monkeypatch.setattr(extract, "_cut_brick", dies_on_doomed)  # the forked workers inherit it
    start = time.monotonic()
    with pytest.raises(LensfinderError, match=rf"cutouts of .*objects\.parquet: a worker process died .* in flight: .*brick {doomed}"):
        extract_sweep(tmp_path / "objects.parquet", tmp_path / "cut", SurveyTree(root), size=101, progress=False,
                      workers=2)
    assert time.monotonic() - start < 120
    assert not (tmp_path / "cut/manifest.json").exists()


def test_touched_tiles_at_tile_edges():
    from lensfinder.cutouts.extract import touched_tiles

    assert touched_tiles(0, 100, 0, 100, (100, 100)) == [(0, 0)]  # exactly one tile
    assert touched_tiles(99, 101, 0, 1, (100, 100)) == [(0, 0), (1, 0)]  # a row on each side of an edge
    assert touched_tiles(3550, 3600, 3590, 3600, (100, 100)) == [(35, 35)]  # the image's last, partial tile
    assert touched_tiles(0, 30, 0, 30, (1, 3600)) == [(y, 0) for y in range(30)]  # row-tiled images
