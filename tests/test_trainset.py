"""The training set on the tiny mock, checked against the mock's truth table."""


import numpy as np
import pandas as pd
import pytest
import torch

from lensfinder.catalog.crossmatch import separation_arcsec, within, within_square
from lensfinder.catalog.lenses import CatalogSpec, union_catalogs
from lensfinder.catalog.select import SelectionConfig, select_sweep
from lensfinder.cutouts.extract import extract_sweep
from lensfinder.cutouts.shards import ShardSet
from lensfinder.errors import LensfinderError
from lensfinder.survey.tree import SurveyTree
from lensfinder.trainset.build import TrainsetConfig, build_trainset

KEY = ["RELEASE", "BRICKID", "OBJID"]


@pytest.fixture(scope="module")
def tiny_inputs(tiny_mock, tmp_path_factory):
    root, _, files = tiny_mock
    out = tmp_path_factory.mktemp("ts_inputs")
    objects, manifests = [], []
    for sweep in files["sweeps"]:
        stem = sweep.rsplit("/", 1)[1].removesuffix(".fits")
        select_sweep(sweep, out / f"{stem}.parquet", out / f"{stem}.csv", SelectionConfig(), progress=False)
        extract_sweep(out / f"{stem}.parquet", out / stem, SurveyTree(root), progress=False)
        objects.append(out / f"{stem}.parquet")
        manifests.append(out / stem / "manifest.json")
    catalogs = [{"path": str(root / "catalogues/known_lenses.csv"), "label": "mock"}]
    return root, objects, manifests, catalogs


def _build(tiny_inputs, out, **kw):
    root, objects, manifests, catalogs = tiny_inputs
    catalogs = kw.pop("catalogs", catalogs)
    cfg = TrainsetConfig(**{"ratio": 5, "grades": ["A", "B"], "truth": str(root / "truth/lenses.csv"), **kw})
    summary = build_trainset(objects, manifests, catalogs, cfg, out, progress=False)
    return summary, pd.read_parquet(out / "labels.parquet"), cfg


def test_training_set_against_the_truth_table(tiny_inputs, tmp_path):
    root, objects, manifests, catalogs = tiny_inputs
    summary, labels, cfg = _build(tiny_inputs, tmp_path)
    truth = pd.read_csv(root / "truth/lenses.csv")
    selected = pd.concat([pd.read_parquet(p) for p in objects])
    with_cutout = set()
    for m in manifests:
        with_cutout |= set(map(tuple, ShardSet(m).index[KEY].to_numpy().tolist()))
    sel_keys = set(map(tuple, selected[KEY].to_numpy().tolist())) & with_cutout
    truth_keys = list(zip(truth.release, truth.brickid, truth.objid))
    expected = {k for k, cat, g in zip(truth_keys, truth.catalogued, truth.grade.fillna(""))
                if cat and g in ("A", "B") and k in sel_keys}
    positives = set(map(tuple, labels[labels.LABEL == 1][KEY].to_numpy().tolist()))
    assert positives == expected and len(expected) >= 3
    # nonlenses at the ratio in every stratum, unless the stratum ran out of candidates
    for s in summary["strata"]:
        assert s["target_nonlenses"] == 5 * s["lenses"]
        assert s["nonlenses"] == s["target_nonlenses"] or s["shortfall"] == s["target_nonlenses"] - s["nonlenses"] > 0
        got = labels[(labels.STRATUM == s["stratum"]) & (labels.LABEL == 0)]
        assert len(got) == s["nonlenses"]
    assert set(labels[labels.LABEL == 0].STRATUM) <= set(labels[labels.LABEL == 1].STRATUM)
    # no catalogued system (any grade) and no positive inside a nonlens's square cutout
    systems, _ = union_catalogs([CatalogSpec(**c) for c in catalogs])
    non, pos = labels[labels.LABEL == 0], labels[labels.LABEL == 1]
    assert summary["filter"] == {"shape": "square", "half_width_arcsec": pytest.approx(50 * 0.262)}
    for ra, dec in ((systems.ra, systems.dec), (pos.RA, pos.DEC)):
        assert not within_square(non.RA.to_numpy(), non.DEC.to_numpy(), ra.to_numpy(), dec.to_numpy(), 50 * 0.262).any()
    excl = pd.read_parquet(tmp_path / "exclusions.parquet")
    near = excl[excl.reason == "near_known_system"]
    assert len(near) > 0 and near.detail.str.contains("inside its cutout").all()
    # split 70/30 within each (stratum, label), aligned cutouts, hidden lenses counted
    for _, g in labels.groupby(["STRATUM", "LABEL"]):
        assert abs((g.SPLIT == "val").sum() - 0.3 * len(g)) <= 0.5 + 1e-9
    images = np.load(tmp_path / "cutouts.npy", mmap_mode="r")
    assert images.shape == (len(labels), 3, 101, 101) and images.dtype == np.float16
    sets = [ShardSet(m) for m in manifests]
    for i in range(0, len(labels), 7):
        key = tuple(int(labels.iloc[i][k]) for k in KEY)
        ref = next(s.get(key) for s in sets if key in s)
        assert np.array_equal(images[labels.iloc[i].ROW], ref)
    hidden = summary["hidden_lenses"]
    assert hidden["among_nonlenses_before_step_b"] == hidden["among_nonlenses_after_step_b"]  # no model
    n_hidden = labels.merge(truth[~truth.catalogued].rename(columns={"release": "RELEASE", "brickid": "BRICKID",
                                                                     "objid": "OBJID"}), on=KEY)
    assert hidden["in_final_sample_as_nonlenses"] == len(n_hidden)
    for name in ("summary.png", "summary.csv", "review.csv", "review.png", "exclusions.parquet"):
        assert (tmp_path / name).exists()
    # deterministic for a seed
    _, again, _ = _build(tiny_inputs, tmp_path / "again")
    assert labels.equals(again)


def _export(model, path):
    example = (torch.zeros(2, 3, 101, 101),)
    program = torch.export.export(model, example, dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(program, str(path))


class MemoryModel(torch.nn.Module):
    """Scores high exactly the images close to one stored cutout (a hidden lens)."""

    def __init__(self, target):
        super().__init__()
        self.register_buffer("target", torch.as_tensor(target, dtype=torch.float32)[None])

    def forward(self, x):
        dist = ((x - self.target) ** 2).mean(dim=(1, 2, 3)).sqrt()
        return 10.0 - 1e4 * dist  # logit


def test_step_b_reviews_a_planted_hidden_lens_and_rejection_removes_it(tiny_inputs, tmp_path):
    root, objects, manifests, catalogs = tiny_inputs
    # Plant: take a catalogued lens from a stratum with other lenses and delete its catalogue
    # entry (and mark it uncatalogued in the truth), so it is a hidden lens among the nonlenses.
    _, plain, _ = _build(tiny_inputs, tmp_path / "a")
    pos = plain[plain.LABEL == 1]
    stratum = pos.STRATUM.value_counts().index[0]
    assert (pos.STRATUM == stratum).sum() >= 2
    lens = pos[pos.STRATUM == stratum].iloc[0]
    planted = tuple(int(lens[k]) for k in KEY)
    image = np.load(tmp_path / "a/cutouts.npy")[lens.ROW].astype(np.float32)
    known = pd.read_csv(catalogs[0]["path"])
    far = ~within(known.ra.to_numpy(), known.dec.to_numpy(), [lens.RA], [lens.DEC], 3.0)
    assert (~far).sum() == 1
    known[far].to_csv(tmp_path / "known.csv", index=False)
    truth = pd.read_csv(root / "truth/lenses.csv")
    truth.loc[(truth.brickid == planted[1]) & (truth.objid == planted[2]), "catalogued"] = False
    truth.to_csv(tmp_path / "truth.csv", index=False)
    common = dict(ratio=1000, catalogs=[{"path": str(tmp_path / "known.csv")}], truth=str(tmp_path / "truth.csv"))
    model_path = tmp_path / "previous.pt2"
    _export(MemoryModel(image), model_path)

    summary, labels, _ = _build(tiny_inputs, tmp_path / "b", previous_model=str(model_path), review_threshold=0.4,
                                **common)
    review = pd.read_csv(tmp_path / "b/review.csv")
    assert list(map(tuple, review[KEY].to_numpy().tolist())) == [planted]
    assert review.iloc[0].score > 0.99 and review.iloc[0].status == "kept"
    assert planted in set(map(tuple, labels[labels.LABEL == 0][KEY].to_numpy().tolist()))
    # a visual inspector rejects it: the re-run drops it, recording why
    rejections = tmp_path / "rejections.csv"
    pd.DataFrame([dict(zip(KEY, planted))]).to_csv(rejections, index=False)
    summary2, labels2, _ = _build(tiny_inputs, tmp_path / "c", previous_model=str(model_path),
                                  rejections=str(rejections), **common)
    assert planted not in set(map(tuple, labels2[KEY].to_numpy().tolist()))
    excl = pd.read_parquet(tmp_path / "c/exclusions.parquet")
    row = excl[(excl.BRICKID == planted[1]) & (excl.OBJID == planted[2])]
    assert row.reason.tolist() == ["rejected_by_inspection"]
    h1, h2 = summary["hidden_lenses"], summary2["hidden_lenses"]
    assert h1["among_nonlenses_after_step_b"] == h1["among_nonlenses_before_step_b"] >= 1
    assert h2["among_nonlenses_after_step_b"] == h2["among_nonlenses_before_step_b"] - 1
    # an exclusion list drops an object at step c
    drop = labels2[labels2.LABEL == 0].iloc[0]
    excl_csv = tmp_path / "exclude.csv"
    pd.DataFrame([{k: int(drop[k]) for k in KEY}]).to_csv(excl_csv, index=False)
    _, labels3, _ = _build(tiny_inputs, tmp_path / "d", exclude=[str(excl_csv)], **common)
    assert (int(drop.BRICKID), int(drop.OBJID)) not in set(zip(labels3.BRICKID, labels3.OBJID))


class NaNOnModel(MemoryModel):
    """Scores NaN exactly on one stored cutout (a model meeting a bad image), -10 elsewhere."""

    def forward(self, x):
        dist = ((x - self.target) ** 2).mean(dim=(1, 2, 3)).sqrt()
        return torch.where(dist < 1e-3, torch.full_like(dist, float("nan")), torch.full_like(dist, -10.0))


def test_a_nan_previous_model_score_sends_the_nonlens_to_review_never_into_the_set(tiny_inputs, tmp_path):
    summary, plain, _ = _build(tiny_inputs, tmp_path / "a")
    # a nonlens from a stratum with candidates to spare, so that it can be replaced
    spare = [s["stratum"] for s in summary["strata"] if s["shortfall"] == 0 and s["nonlenses"] > 0]
    victim = plain[(plain.LABEL == 0) & plain.STRATUM.isin(spare)].iloc[0]
    key = tuple(int(victim[k]) for k in KEY)
    image = np.load(tmp_path / "a/cutouts.npy")[victim.ROW].astype(np.float32)
    model_path = tmp_path / "nan.pt2"
    _export(NaNOnModel(image), model_path)
    _, labels, _ = _build(tiny_inputs, tmp_path / "b", previous_model=str(model_path))
    assert key not in set(map(tuple, labels[KEY].to_numpy().tolist()))
    review = pd.read_csv(tmp_path / "b/review.csv")
    assert list(map(tuple, review[KEY].to_numpy().tolist())) == [key]
    assert review.iloc[0].status == "score_not_finite" and np.isnan(review.iloc[0].score)
    excl = pd.read_parquet(tmp_path / "b/exclusions.parquet")
    assert excl[(excl.BRICKID == key[1]) & (excl.OBJID == key[2])].reason.tolist() == ["score_not_finite"]
    # the drawn nonlens was replaced from its stratum: the ratio still holds
    assert (labels.LABEL == 0).sum() == (plain.LABEL == 0).sum()


def test_bad_catalogue_rows_and_empty_results(tiny_inputs, tmp_path):
    root, *_ = tiny_inputs
    good = pd.read_csv(root / "catalogues/known_lenses.csv")
    text = good.to_csv(index=False) + "broken,abc,1.0,A,x\n"
    bad = tmp_path / "with_bad_row.csv"
    bad.write_text(text)
    summary, labels, _ = _build(tiny_inputs, tmp_path / "a", catalogs=[{"path": str(bad)}])
    assert summary["catalogue_problems"] == [f"{bad} line {len(good) + 2}: non-numeric or missing coordinate "
                                             "(ra='abc', dec='1.0')"]
    assert summary["lenses"] > 0
    with pytest.raises(LensfinderError, match="line .*strict is on"):
        _build(tiny_inputs, tmp_path / "b", catalogs=[{"path": str(bad)}], strict=True)
    far = tmp_path / "far.csv"
    far.write_text("name,ra,dec,grade\nX,10.0,-30.0,A\n")
    with pytest.raises(LensfinderError, match="no catalogued lens matches a selected object"):
        _build(tiny_inputs, tmp_path / "c", catalogs=[{"path": str(far)}])
    assert not (tmp_path / "c/labels.parquet").exists()


def test_positives_without_a_local_cutout_come_from_the_cutout_service(tiny_inputs, tmp_path):
    from cutout_server import CutoutServer

    root, objects, manifests, catalogs = tiny_inputs
    local_only = (root, objects, manifests[:1], catalogs)  # the second sweep's cutouts are not here
    _, labels, _ = _build(local_only, tmp_path / "local")
    excl = pd.read_parquet(tmp_path / "local/exclusions.parquet")
    missing = set(map(tuple, excl[excl.reason == "positive_without_cutout"][KEY].to_numpy().tolist()))
    assert missing, "some lens must lie in the second sweep"
    assert not missing & set(map(tuple, labels[KEY].to_numpy().tolist()))
    with CutoutServer(root) as server:
        _, fetched, _ = _build(local_only, tmp_path / "svc", service_url=server.url)
        assert server.requests == len(missing)
    positives = fetched[fetched.LABEL == 1]
    got = set(map(tuple, positives[KEY].to_numpy().tolist()))
    assert missing <= got
    # each fetched cutout shows the object's own sky: it matches the brick cutout of the second
    # sweep (the service resamples, so not pixel for pixel) better than any other lens's
    images = np.load(tmp_path / "svc/cutouts.npy")
    local = ShardSet(manifests[1])
    fetched_keys = [k for k in map(tuple, positives[KEY].to_numpy().tolist()) if k in missing]
    rows = positives.set_index(KEY).ROW
    for key in fetched_keys:
        image = images[rows.loc[key]].astype(np.float32).ravel()
        corr = {other: np.corrcoef(image, local.get(other).astype(np.float32).ravel())[0, 1]
                for other in fetched_keys}
        assert corr[key] > 0.8 and max(corr, key=corr.get) == key, corr


def _sky_at(ra0, dec0, dx, dy):
    """Sky position of a tangent-plane offset [arcsec] from (ra0, dec0) on a cutout's TAN
    grid (+x toward decreasing RA, +y North), through astropy's WCS."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [51, 51]
    w.wcs.cdelt = [-0.262 / 3600, 0.262 / 3600]
    ra, dec = w.wcs_pix2world([50 + dx / 0.262], [50 + dy / 0.262], 0)
    return float(ra[0] % 360), float(dec[0])


def test_a_known_system_in_a_cutout_corner_removes_that_nonlens(tiny_inputs, tmp_path):
    root, objects, manifests, catalogs = tiny_inputs
    _, base, _ = _build(tiny_inputs, tmp_path / "base")
    known = pd.read_csv(catalogs[0]["path"])
    nonlens = base[base.LABEL == 0].iloc[0]
    key = (int(nonlens.BRICKID), int(nonlens.OBJID))

    def with_entry(name, dx, dy, **kw):
        ra, dec = _sky_at(nonlens.RA, nonlens.DEC, dx, dy)
        path = tmp_path / f"{name}.csv"
        entry = pd.DataFrame([{"name": name, "ra": ra, "dec": dec, "grade": "C", "reference": "test"}])
        pd.concat([known, entry]).to_csv(path, index=False)
        summary, labels, _ = _build(tiny_inputs, tmp_path / name, catalogs=[{"path": str(path)}], **kw)
        excl = pd.read_parquet(tmp_path / name / "exclusions.parquet")
        return summary, set(zip(labels.BRICKID, labels.OBJID)), excl[(excl.BRICKID == key[0]) & (excl.OBJID == key[1])]

    # in the corner: inside the 101-px square (|dx|, |dy| <= 13.1"), 17.7" away, outside the inscribed circle
    summary, keys, excl = with_entry("corner", -12.5, 12.5)
    assert summary["filter"]["shape"] == "square"
    assert key not in keys
    assert excl.reason.tolist() == ["near_known_system"]
    assert "'corner' at dx=-12.50\", dy=+12.50\" inside its cutout" in excl.detail.iloc[0]
    # just outside the square: the nonlens stays
    _, keys, excl = with_entry("outside", -13.25, 12.5)
    assert key in keys and excl.empty
    # filter_radius_arcsec set explicitly keeps its meaning, a circle: the corner is outside it
    summary, keys, excl = with_entry("circle", -12.5, 12.5, filter_radius_arcsec=50 * 0.262)
    assert summary["filter"] == {"shape": "circle", "radius_arcsec": pytest.approx(13.1)}
    assert key in keys and excl.empty


def test_near_known_square_and_circle_across_ra_0():
    from lensfinder.trainset.filters import near_known

    corner = _sky_at(359.9999, -5.0, -12.0, -12.0)  # East of RA 0: in the corner of a cutout at 359.9999
    outside = _sky_at(*corner, 13.4, 12.0)  # West of RA 0: the corner is 13.4" East of it, outside its square
    assert corner[0] < 0.01 and outside[0] > 359.99
    ra, dec = np.array([359.9999, outside[0], 180.0]), np.array([-5.0, outside[1], 0.0])
    detail = near_known(ra, dec, [corner[0]], [corner[1]], ["catalogued system 'X'"], 13.1)
    assert detail[0] == "catalogued system 'X' at dx=-12.00\", dy=-12.00\" inside its cutout (square of half-width 13.10\")"
    assert detail[1] is None and detail[2] is None
    assert list(near_known(ra, dec, [corner[0]], [corner[1]], ["X"], 13.1, radius_arcsec=13.1)) == [None] * 3
    circle = near_known(ra, dec, [corner[0]], [corner[1]], ["X"], 13.1, radius_arcsec=17.5)
    assert circle[0].startswith("X at dx=-12.00\", dy=-12.00\" within trainset.filter_radius_arcsec (17.5\")")


def _pair_catalogue(tiny_inputs, tmp_path, max_sep=13.1):
    """The mock catalogue plus grade-A entries at two selected objects a few arcsec apart
    (neither already catalogued), so they are two positives of one group."""
    root, objects, manifests, catalogs = tiny_inputs
    objs = pd.concat([pd.read_parquet(p) for p in objects], ignore_index=True)
    known = pd.read_csv(catalogs[0]["path"])
    free = objs[~within(objs.RA.to_numpy(), objs.DEC.to_numpy(), known.ra.to_numpy(), known.dec.to_numpy(), 20.0)]
    free = free.reset_index(drop=True)
    from lensfinder.catalog.crossmatch import pairs_within

    i, j = pairs_within(free.RA, free.DEC, free.RA, free.DEC, max_sep)
    i, j = i[i < j], j[i < j]
    assert len(i), "the tiny mock holds two selected objects a few arcsec apart"
    a, b = free.iloc[i[0]], free.iloc[j[0]]
    sep = separation_arcsec(a.RA, a.DEC, b.RA, b.DEC)
    extra = pd.DataFrame([{"name": f"pair-{n}", "ra": o.RA, "dec": o.DEC, "grade": "A", "reference": "test"}
                          for n, o in (("a", a), ("b", b))])
    path = tmp_path / "with_pair.csv"
    pd.concat([known, extra]).to_csv(path, index=False)
    return [{"path": str(path)}], {(int(a.BRICKID), int(a.OBJID)), (int(b.BRICKID), int(b.OBJID))}, float(sep)


def test_positives_of_one_system_share_a_split(tiny_inputs, tmp_path):
    from lensfinder.catalog.crossmatch import friends_of_friends_square

    catalogs, pair, sep = _pair_catalogue(tiny_inputs, tmp_path)
    assert sep < 13.1
    splits = []
    for seed in range(4):
        summary, labels, _ = _build(tiny_inputs, tmp_path / f"s{seed}", catalogs=catalogs, seed=seed)
        rows = labels[[k in pair for k in zip(labels.BRICKID, labels.OBJID)]]
        assert len(rows) == 2 and (rows.LABEL == 1).all()
        assert rows.SPLIT.nunique() == 1
        assert summary["split_groups"]["lenses_in_them"] >= 2
        # per (stratum, label) the validation count is round(0.3 n), off by at most the grouped rows there
        grouped = pd.Series(friends_of_friends_square(labels.RA.to_numpy(), labels.DEC.to_numpy(), 13.1))
        labels["GROUPED"] = grouped.duplicated(keep=False).to_numpy()
        for _, g in labels.groupby(["STRATUM", "LABEL"]):
            assert abs((g.SPLIT == "val").sum() - 0.3 * len(g)) <= 0.5 + g.GROUPED.sum() + 1e-9
        splits.append(labels.set_index(KEY).SPLIT)
    assert any(not s.equals(splits[0]) for s in splits[1:])  # the seed changes the split


def test_grouped_split_keeps_close_positives_together_over_many_seeds():
    from lensfinder.catalog.crossmatch import friends_of_friends_square
    from lensfinder.trainset.split import grouped_split

    # 3 strata of 10 lenses and 100 nonlenses; lenses 0 and 1 are 5" apart (one system),
    # lens 10 (stratum 1) is 5" from lens 20 (stratum 2); everything else far apart
    rng = np.random.default_rng(0)
    n_l, n_n = 30, 300
    ra = rng.uniform(0, 360, n_l + n_n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_l + n_n)))
    ra[1], dec[1] = ra[0] + 5 / 3600 / np.cos(np.radians(dec[0])), dec[0]
    ra[20], dec[20] = ra[10], dec[10] + 5 / 3600
    label = np.r_[np.ones(n_l, int), np.zeros(n_n, int)]
    stratum = np.r_[np.arange(n_l) // 10, np.arange(n_n) // 100]
    cells = np.char.add(stratum.astype(str), np.char.add("|", label.astype(str)))
    groups = friends_of_friends_square(ra, dec, 13.1)
    assert groups[0] == groups[1] and groups[10] == groups[20] and len(set(groups)) == n_l + n_n - 2
    in_val = {"0-1": 0, "10-20": 0}
    for seed in range(300):
        val = grouped_split(cells, groups, 0.3, np.random.default_rng(seed))
        assert val[0] == val[1] and val[10] == val[20]
        in_val["0-1"] += val[0]
        in_val["10-20"] += val[10]
        for c in np.unique(cells):  # every cell at its target 0.3 * n: singles fill around the groups
            assert (val[cells == c]).sum() == round(0.3 * (cells == c).sum())
        assert np.array_equal(val, grouped_split(cells, groups, 0.3, np.random.default_rng(seed)))  # seeded
    # a group is not pushed toward one split: in validation about 30% of the time
    assert 0.2 < in_val["0-1"] / 300 < 0.4 and 0.2 < in_val["10-20"] / 300 < 0.4


def test_grouped_split_when_a_group_is_a_whole_cell():
    from lensfinder.trainset.split import grouped_split

    # one cell of 2 rows, both in one group: its target (round(0.6) = 1) cannot be met;
    # the other cells still meet theirs exactly
    cells = np.array(["a"] * 2 + ["b"] * 10)
    groups = np.array([0, 0] + list(range(2, 12)))
    for seed in range(50):
        val = grouped_split(cells, groups, 0.3, np.random.default_rng(seed))
        assert val[0] == val[1] and val[2:].sum() == 3


def test_a_key_in_two_sweeps_is_an_error_naming_both_files(tmp_path):
    """The object pool holds every selected object once; a sweep's objects read twice (here
    the same rows under two names) name the key, both files and rows."""
    from lensfinder.trainset.pool import POOL_COLUMNS, ObjectPool

    frame = pd.DataFrame({"RELEASE": 10000, "BRICKID": [5, 5, 6], "OBJID": [1, 2, 1], "RA": [150.0, 150.1, 150.2],
                          "DEC": 2.0, "TYPE": "DEV", "REGION": "DECaLS", "ZEXP_BIN": "3"})[POOL_COLUMNS]
    frame.to_parquet(tmp_path / "a.parquet")
    frame.iloc[[2]].to_parquet(tmp_path / "b.parquet")
    assert len(ObjectPool([tmp_path / "a.parquet"], [])) == 3
    with pytest.raises(LensfinderError, match=r"1 key\(s\).*\(10000, 6, 1\) in .*a.parquet row 2 and .*b.parquet row 0.*"
                                              "listed twice"):
        ObjectPool([tmp_path / "a.parquet", tmp_path / "b.parquet"], [])
