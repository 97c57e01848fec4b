"""The training set on the tiny mock, checked against the mock's truth table."""


import numpy as np
import pandas as pd
import pytest
import torch

from lensfinder.catalogs import CatalogSpec, union_catalogs
from lensfinder.crossmatch import within
from lensfinder.cutouts import extract_sweep
from lensfinder.errors import LensfinderError
from lensfinder.select import SelectionConfig, select_sweep
from lensfinder.shards import ShardSet
from lensfinder.survey import SurveyTree
from lensfinder.trainset import TrainsetConfig, build_trainset

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
    # no catalogued system (any grade) within the filter radius of a nonlens
    systems, _ = union_catalogs([CatalogSpec(**c) for c in catalogs])
    non = labels[labels.LABEL == 0]
    assert summary["filter_radius_arcsec"] == pytest.approx(50 * 0.262)
    assert not within(non.RA.to_numpy(), non.DEC.to_numpy(), systems.ra.to_numpy(), systems.dec.to_numpy(),
                      summary["filter_radius_arcsec"]).any()
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
    images = np.load(tmp_path / "svc/cutouts.npy")
    for _, row in positives.iterrows():
        if tuple(int(row[k]) for k in KEY) in missing:
            z = images[row.ROW][2].astype(np.float32)
            peak = np.unravel_index(np.argmax(z), z.shape)
            assert abs(peak[0] - 50) <= 2 and abs(peak[1] - 50) <= 2  # the deflector at the centre
