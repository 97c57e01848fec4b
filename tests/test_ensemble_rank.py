"""The meta-learner and the ranking, on small problems built for the purpose."""

import pickle

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from scipy.special import expit, logit

from conftest import WritesAFile

from lensfinder.cutouts.shards import ShardWriter
from lensfinder.errors import LensfinderError
from lensfinder.metrics import top_n_metrics
from lensfinder.ranking.ensemble import evaluate, fit_meta_learner, meta_logit, save_meta
from lensfinder.ranking.rank import rank
from lensfinder.ranking.scores import RankConfig, combine_scores, select
from lensfinder.ranking.shortlist import shortlist_batch
from lensfinder.survey.positions import desi_names

KEY = ["RELEASE", "BRICKID", "OBJID"]


def test_meta_learner_is_at_least_as_good_as_the_better_base_model():
    """One informative base model and one of pure noise: the stacked AUC is at least the
    informative model's (to 0.002, the wobble of a fitted network on 4,000 validation objects)."""
    rng = np.random.default_rng(0)
    n = 12000
    y = (rng.random(n) < 0.1).astype(int)
    good = 1 / (1 + np.exp(-(2.0 * y + rng.normal(0, 1, n) - 1)))
    noise = rng.random(n)
    feats = np.stack([good, noise], 1)
    train, val = slice(0, 8000), slice(8000, n)
    meta = fit_meta_learner(feats[train], y[train])
    columns = {"good": good[val], "noise": noise[val], "meta": meta.predict_proba(feats[val])[:, 1]}
    table = evaluate(y[val], columns, top_n=(50,)).set_index("scorer")
    assert table.loc["noise", "auc"] == pytest.approx(0.5, abs=0.05)
    assert table.loc["meta", "auc"] >= table.loc["good", "auc"] - 0.002
    # its logit is the probability before the logistic, to float precision, and never saturates
    z = meta_logit(meta, feats[val])
    assert np.allclose(expit(z), meta.predict_proba(feats[val])[:, 1], rtol=0, atol=1e-12)


def _overfit_training_scores(rng, n):
    """Two base models' logits on the training and validation splits: ``fit`` separated its
    training rows (they are what it learnt) but is noise elsewhere; ``honest`` is as
    informative everywhere. ``fresh`` rows stand for the survey."""
    y = (rng.random(n) < 0.2).astype(int)
    split = np.where(np.arange(n) % 3 == 0, "val", "train")
    fit = np.where(split == "train", 4.0 * y - 2 + rng.normal(0, 0.5, n), rng.normal(0, 1.5, n))
    honest = 1.5 * y + rng.normal(0, 1, n)
    fresh_y = (rng.random(4000) < 0.2).astype(int)
    fresh = np.stack([rng.normal(0, 1.5, 4000), 1.5 * fresh_y + rng.normal(0, 1, 4000)], 1)
    return y, split, fit, honest, fresh, fresh_y


def test_stacker_never_falls_when_a_base_model_rises():
    """Scores where the training rows invite a bump (lenses' ``a`` in a middle band, nonlenses
    as often above it as below): an unconstrained network learns to lower its output as ``a``
    rises past the band; the stacker never does, anywhere on a grid wider than the data (the
    same network with weights of either sign falls by 0.39 in logit there)."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(3)
    n = 3000
    y = (rng.random(n) < 0.2).astype(int)
    a = np.where(y == 1, rng.normal(2.0, 0.5, n), np.where(rng.random(n) < 0.5, rng.normal(5.0, 0.7, n),
                                                            rng.normal(-2.0, 1.0, n)))
    b = 1.2 * y + rng.normal(0, 1, n)
    x = np.stack([a, b], 1)
    grid_a, grid_b = np.meshgrid(np.linspace(-6, 10, 81), np.linspace(-5, 6, 56), indexing="ij")
    grid = np.stack([grid_a.ravel(), grid_b.ravel()], 1)

    unconstrained = MLPClassifier((300,), max_iter=2000, random_state=0).fit(x, y)
    bumpy = unconstrained.predict_proba(grid)[:, 1].reshape(grid_a.shape)
    assert np.diff(bumpy, axis=0).min() < -0.05  # the control: these rows do provoke a fall

    meta = fit_meta_learner(x, y)
    assert (meta.w1_ >= 0).all() and (meta.w2_ >= 0).all()  # the construction that makes it monotone
    z = meta_logit(meta, grid).reshape(grid_a.shape)
    assert np.diff(z, axis=0).min() >= -1e-9 and np.diff(z, axis=1).min() >= -1e-9
    assert z[:, -1].mean() > z[:, 0].mean() + 2  # and it learnt from b (a, monotone, carries nothing here)


def test_meta_learner_fit_on_validation_ignores_a_model_that_only_fits_its_training_rows(tmp_path):
    """Fit on the training split (paper IV) the stacker trusts the model that separated its own
    training rows, and on fresh objects it is worse than the honest model alone; fit on the
    held-out validation split it is as good as the honest model. Its validation figures are
    then out-of-fold, and meta.json says how it was fit."""
    from sklearn.metrics import roc_auc_score

    from lensfinder.ranking.ensemble import apply_meta, build_ensemble, load_meta

    rng = np.random.default_rng(4)
    n = 3000
    y, split, fit, honest, fresh, fresh_y = _overfit_training_scores(rng, n)
    for name, logits in (("fit", fit), ("honest", honest)):
        pd.DataFrame({"RELEASE": 10000, "BRICKID": 1, "OBJID": np.arange(n), "LABEL": y, "SPLIT": split,
                      "ROW": np.arange(n), "logit": logits.astype(np.float32)}).to_parquet(tmp_path / f"{name}.parquet")
        (tmp_path / f"{name}.pt").write_bytes(name.encode())
    honest_auc = roc_auc_score(fresh_y, fresh[:, 1])
    fresh_auc = {}
    for fit_on in ("training", "validation"):
        out = tmp_path / fit_on
        table = build_ensemble({m: tmp_path / f"{m}.parquet" for m in ("fit", "honest")},
                               {m: tmp_path / f"{m}.pt" for m in ("fit", "honest")}, out, hidden=32, top_n=(10,),
                               fit_on=fit_on).set_index("scorer")
        meta = load_meta(out / "meta.npz")
        fresh_auc[fit_on] = roc_auc_score(fresh_y, apply_meta(meta, pd.DataFrame(fresh, columns=["fit", "honest"])))
        info = __import__("json").loads((out / "meta.json").read_text())
        assert info["fit_on"] == fit_on and info["monotone"] is True
        assert info["n_val"] == int((split == "val").sum())
        assert info["training_auc"]["fit"] > 0.99 and info["training_auc"]["honest"] < 0.9  # the overfit shows
        if fit_on == "validation":
            assert info["cv_folds"] == 5
            # its out-of-fold validation AUC tells the truth about fresh rows
            assert table.loc["meta-learner", "auc"] == pytest.approx(fresh_auc["validation"], abs=0.04)
            assert table.loc["fit", "auc"] < 0.6 and table.loc["honest", "auc"] == pytest.approx(honest_auc, abs=0.04)
    assert fresh_auc["training"] < honest_auc - 0.1
    assert fresh_auc["validation"] >= honest_auc - 0.02


def test_out_of_fold_logits_need_lenses_in_the_validation_split():
    from lensfinder.ranking.ensemble import out_of_fold_logits

    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (40, 2))
    y = np.zeros(40, dtype=int)
    y[:3] = 1
    x[:3] += 2
    z, folds = out_of_fold_logits(x, y, folds=5, hidden=8)  # 3 lenses: 3 folds, every row scored once
    assert folds == 3 and z.shape == (40,) and np.isfinite(z).all() and z[:3].mean() > z[3:].mean()
    y[1:3] = 0
    with pytest.raises(LensfinderError, match="validation split.*1 lenses and 39 nonlenses.*fit_on: training"):
        out_of_fold_logits(x, y, folds=5, hidden=8)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # a 2-row stand-in for an old pickle
def test_a_meta_learner_from_an_older_version_is_an_error_that_says_what_to_re_run():
    from sklearn.neural_network import MLPClassifier

    old = MLPClassifier((4,), max_iter=50).fit(np.array([[0.0, 0], [1, 1]]), [0, 1])
    with pytest.raises(LensfinderError, match="older lensfinder.*forcerun ensemble"):
        meta_logit(old, np.zeros((1, 2)))


def test_the_meta_learner_round_trips_through_npz_and_a_pickle_is_refused_unrun(tmp_path):
    """meta.npz holds NumPy arrays only and scores exactly as the fitted stacker; an older
    meta.pkl (a pickle, which could run code) is refused with the rule to re-run."""
    from lensfinder.ranking.ensemble import apply_meta, load_meta

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    y = (x.sum(axis=1) + rng.normal(scale=0.5, size=60) > 0).astype(int)
    model = fit_meta_learner(x, y, hidden=8)
    save_meta(model, ["a", "b"], tmp_path / "meta.npz")
    loaded = load_meta(tmp_path / "meta.npz")
    frame = pd.DataFrame(x, columns=["a", "b"])
    assert loaded["inputs"] == ["a", "b"]
    assert np.array_equal(apply_meta(loaded, frame), apply_meta({"model": model, "inputs": ["a", "b"]}, frame))
    assert (loaded["model"].n_iter_, loaded["model"].loss_) == (model.n_iter_, model.loss_)
    marker = tmp_path / "the-payload-ran"

    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"model": WritesAFile(marker), "inputs": ["a", "b"]}))
    with pytest.raises(LensfinderError, match=r"meta.pkl cannot be read .* without pickle.*forcerun ensemble"):
        load_meta(tmp_path / "meta.pkl")
    assert not marker.exists()
    np.savez(tmp_path / "other.npz", inputs=np.array(["a"]))
    with pytest.raises(LensfinderError, match="not a lensfinder meta-learner"):
        load_meta(tmp_path / "other.npz")


def test_top_n_metrics_at_a_realistic_ratio():
    labels = np.array([1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.8, 0.1, 0.05, 0.01])
    # 2 lenses and 4 nonlenses standing for 20,000: each nonlens weighs 5,000
    r, p = top_n_metrics(labels, scores, n=1, sky_ratio=10_000)
    assert (r, p) == (0.5, 1.0)
    r, p = top_n_metrics(labels, scores, n=5001, sky_ratio=10_000)  # the lens and one nonlens fit
    assert r == 0.5 and p == pytest.approx(1 / 5001)


@pytest.fixture()
def ranking_inputs(tmp_path):
    """Objects with two models' scores: a known system, a duplicate pair, a NaN score."""
    rng = np.random.default_rng(1)
    n = 40
    ra = 150.0 + rng.uniform(0, 0.2, n)
    dec = 2.0 + rng.uniform(0, 0.2, n)
    ra[1], dec[1] = ra[0] + 2.0 / 3600, dec[0]  # object 1 is 2" from object 0: one system
    objects = pd.DataFrame({"RELEASE": 10000, "BRICKID": 7, "OBJID": np.arange(n), "RA": ra, "DEC": dec,
                            "TYPE": np.where(np.arange(n) % 2, "SER", "DEV"), "REGION": "DECaLS",
                            "MAG_G": 20.0, "MAG_R": 19.0, "MAG_Z": 18.5, "SWEEP": "sweep-150p000-155p005",
                            "ZEXP_BIN": "3", "BRICKNAME": "1501p020"})
    objects.to_parquet(tmp_path / "objects.parquet")
    base = np.linspace(0.99, 0.01, n)
    for model, jitter in (("a", 0.0), ("b", 0.005)):
        s = pd.DataFrame({**{k: objects[k] for k in KEY}, "RA": ra, "DEC": dec, "prob": np.clip(base - jitter, 0, 1)})
        if model == "b":
            s.loc[5, "prob"] = np.nan
        s["logit"] = logit(s["prob"]).astype(np.float32)
        s.to_parquet(tmp_path / f"scores_{model}.parquet")
    y = (rng.random(2000) < 0.3).astype(int)
    x = logit(np.clip(np.stack([y * 0.6 + rng.random(2000) * 0.4, y * 0.6 + rng.random(2000) * 0.4], 1), 1e-3,
                      1 - 1e-3))
    save_meta(fit_meta_learner(x, y), ["a", "b"], tmp_path / "meta.npz")
    pd.DataFrame({"name": ["known-2"], "ra": [ra[2]], "dec": [dec[2]], "grade": ["A"]}).to_csv(tmp_path / "known.csv", index=False)
    writer = ShardWriter(tmp_path / "shards", 21, "dr10")
    for i in range(n):
        writer.add(rng.normal(0, 0.01, (3, 21, 21)).astype(np.float32), {**{k: int(objects[k][i]) for k in KEY},
                                                                          "RA": ra[i], "DEC": dec[i]})
    writer.close(n)
    return tmp_path, objects


def _rank(d, cfg, out, catalogs=None, sweeps=None, keep=None):
    """rank() on shortlists of the fixture's objects, split into ``sweeps`` (name -> rows;
    default one sweep of all), each shortlisted with ``keep`` (a RankConfig) or ``cfg``."""
    objects = pd.read_parquet(d / "objects.parquet")
    sweeps = sweeps or {"sweep-150p000-155p005": np.arange(len(objects))}
    paths = []
    for name, rows in sweeps.items():
        sub = d / out / "in" / name
        sub.mkdir(parents=True, exist_ok=True)
        objects.iloc[rows].assign(SWEEP=name).to_parquet(sub / "objects.parquet")
        for m in ("a", "b"):
            s = pd.read_parquet(d / f"scores_{m}.parquet")
            s.iloc[rows].to_parquet(sub / f"scores_{m}.parquet")
        shortlist_batch([name], {m: [sub / f"scores_{m}.parquet"] for m in ("a", "b")}, [sub / "objects.parquet"],
                        d / "meta.npz", keep or cfg, sub / "shortlist.parquet")
        paths.append(sub / "shortlist.parquet")
    catalogs = catalogs if catalogs is not None else [{"path": str(d / "known.csv")}]
    return rank(paths, [d / "shards/manifest.json"] * len(paths), catalogs, cfg, d / out)  # every sweep's in one set


def test_ranking_drops_known_systems_merges_duplicates_and_reports_nan(ranking_inputs):
    d, objects = ranking_inputs
    cfg = RankConfig(select="top_n", value=10, known_radius_arcsec=3.0, merge_radius_arcsec=5.0, mosaic_top=6)
    summary = _rank(d, cfg, "out", catalogs=[{"path": str(d / "known.csv"), "label": "lit"}])
    recs = pd.read_parquet(d / "out/recommendations.parquet")
    ids = recs.OBJID.tolist()
    assert 2 not in ids and 5 not in ids  # the catalogued system and the NaN score
    known = pd.read_csv(d / "out/known_matches.csv")
    assert known.OBJID.tolist() == [2] and known.KNOWN_CATALOGS.tolist() == ["lit"]
    nan = pd.read_csv(d / "out/nan_scores.csv")
    assert nan.OBJID.tolist() == [5]
    # objects 0 and 1 are one system: the better-scored one is kept, the other listed
    assert 0 in ids and 1 not in ids
    assert recs.loc[recs.OBJID == 0, "MERGED"].item() == "10000/7/1"
    assert summary == {**summary, "selected": 10, "known_systems_removed": 1, "merged_duplicates": 1,
                       "recommendations": 8, "nan_scores": 1}
    assert recs.RANK.tolist() == list(range(1, 9))
    assert (np.diff(recs.SCORE_ENSEMBLE) <= 0).all()
    assert recs.NAME.iloc[0] == desi_names([recs.RA.iloc[0]], [recs.DEC.iloc[0]])[0]
    assert recs.NAME.iloc[0].startswith("DESI-150.") and "+02." in recs.NAME.iloc[0]
    # the FITS table opens with astropy and the CSV with pandas, with the same rows
    fits = Table.read(d / "out/recommendations.fits").to_pandas()
    csv = pd.read_csv(d / "out/recommendations.csv")
    assert len(fits) == len(csv) == len(recs)
    assert fits.OBJID.tolist() == csv.OBJID.tolist() == ids
    assert np.allclose(fits.SCORE_ENSEMBLE, csv.SCORE_ENSEMBLE)
    assert [n.decode() if isinstance(n, bytes) else n for n in fits.NAME] == csv.NAME.tolist()
    assert (d / "out/mosaic.png").stat().st_size > 1000


def test_select_modes(ranking_inputs):
    d, _ = ranking_inputs
    for mode, value, expected in (("threshold", 0.5, None), ("top_fraction", 0.1, 4)):
        summary = _rank(d, RankConfig(select=mode, value=value), mode)
        recs = pd.read_parquet(d / mode / "recommendations.parquet")
        if expected:
            assert summary["selected"] == expected  # ceil(0.1 * 39 scored)
        else:
            # exactly the scored objects at or above the threshold, the rest below it
            table = pd.read_parquet(d / mode / "recommendations.parquet")
            assert (table.SCORE_ENSEMBLE >= 0.5).all()
            assert summary["selected"] == summary["known_systems_removed"] + summary["merged_duplicates"] + len(table)
            assert 1 < summary["selected"] < 39
        # the cut is a logit: nothing recommended is below it
        assert (recs.LOGIT_ENSEMBLE >= summary["cut_logit_ensemble"]).all()


def test_ranking_orders_saturated_probabilities_by_logit(ranking_inputs):
    """Logits of 20 and 30 both give a float32 probability of exactly 1.0: the ranking still
    puts the larger logit first, whatever the row order."""
    d, objects = ranking_inputs
    for model in ("a", "b"):
        s = pd.read_parquet(d / f"scores_{model}.parquet")
        s["logit"] = np.float32(-5.0)
        s.loc[30, "logit"], s.loc[20, "logit"] = np.float32(20.0), np.float32(30.0)
        assert np.float32(expit(np.float32(20.0))) == np.float32(expit(np.float32(30.0))) == 1.0
        s.to_parquet(d / f"scores_{model}.parquet")
    _rank(d, RankConfig(select="top_n", value=2), "sat")
    recs = pd.read_parquet(d / "sat/recommendations.parquet")
    assert recs.OBJID.tolist() == [20, 30]
    assert recs.LOGIT_ENSEMBLE.iloc[0] > recs.LOGIT_ENSEMBLE.iloc[1]


def test_duplicate_keys_in_a_score_file_are_an_error_naming_it(ranking_inputs):
    d, _ = ranking_inputs
    s = pd.read_parquet(d / "scores_b.parquet")
    pd.concat([s, s.iloc[[3]]]).to_parquet(d / "scores_b.parquet")
    with pytest.raises(LensfinderError, match=r"scores_b.parquet holds 1 duplicate key.*\[\[10000, 7, 3\], \[10000, 7, 3\]\]"):
        combine_scores({"a": [d / "scores_a.parquet"], "b": [d / "scores_b.parquet"]}, [d / "objects.parquet"],
                       d / "meta.npz")
    # the same key in two sweeps' shortlists
    with pytest.raises(LensfinderError, match=r"shortlists hold the same key in two sweeps, e\.g\. \[\[10000, 7, 0\]"):
        _rank(d, RankConfig(), "dup", sweeps={"sweep-150p000-155p005": [0, 1, 2], "sweep-155p000-160p005": [0, 4]})


def test_per_sweep_shortlists_rank_as_the_whole_table(ranking_inputs):
    """Split into three sweeps, each keeping its 5 best (and nothing by score): the same
    recommendations, cut and counts as ranking every object at once; the summary records
    what was kept."""
    d, _ = ranking_inputs
    cfg = RankConfig(select="top_n", value=10, mosaic_top=0)
    whole = _rank(d, cfg, "whole")
    sweeps = {"sweep-150p000-155p005": np.arange(0, 40, 3), "sweep-155p000-160p005": np.arange(1, 40, 3),
              "sweep-160p000-165p005": np.arange(2, 40, 3)}
    keep = RankConfig(select="top_n", value=10, keep_top_per_sweep=5, keep_above_score=1.0)
    split = _rank(d, cfg, "split", sweeps=sweeps, keep=keep)
    a, b = pd.read_parquet(d / "whole/recommendations.parquet"), pd.read_parquet(d / "split/recommendations.parquet")
    assert b.drop(columns="SWEEP").equals(a.drop(columns="SWEEP"))
    assert split["cut_logit_ensemble"] == whole["cut_logit_ensemble"]
    assert split["scored_objects"] == whole["scored_objects"] == 40
    # 5 best of each sweep, plus the NaN object (kept to be reported), the rest dropped
    assert split["shortlists"] == {"keep_top_per_sweep": 5, "keep_above_score": 1.0, "kept": 15, "dropped": 24}
    per_sweep = pd.read_csv(d / "split/counts_per_sweep.csv").set_index("sweep")
    assert per_sweep["scored"].tolist() == [14, 13, 13] and per_sweep["shortlisted"].tolist() == [5, 5, 5]
    assert per_sweep["recommended"].sum() == len(b)


def test_an_empty_sweep_has_an_empty_shortlist(ranking_inputs):
    """A sweep that selected nothing (or whose cutouts all failed) is shortlisted, counted as
    zero and ranked beside the others."""
    d, _ = ranking_inputs
    cfg = RankConfig(select="top_n", value=10, mosaic_top=0)
    whole = _rank(d, cfg, "whole")
    split = _rank(d, cfg, "empty", sweeps={"sweep-150p000-155p005": np.arange(40), "sweep-155p000-160p005": []})
    per_sweep = pd.read_csv(d / "empty/counts_per_sweep.csv").set_index("sweep")
    assert per_sweep.loc["sweep-155p000-160p005"].sum() == 0 and per_sweep.loc["sweep-150p000-155p005", "scored"] == 40
    assert split["cut_logit_ensemble"] == whole["cut_logit_ensemble"] and split["selected"] == whole["selected"]


def test_a_cut_below_what_a_sweep_dropped_is_an_error_naming_the_sweep(ranking_inputs):
    d, _ = ranking_inputs
    sweeps = {"sweep-150p000-155p005": np.arange(0, 20), "sweep-155p000-160p005": np.arange(20, 40)}
    keep = RankConfig(keep_top_per_sweep=2, keep_above_score=1.0)
    # the 10 best are all in the first sweep (scores fall with the row): it kept only 2
    with pytest.raises(LensfinderError, match=r"sweep-150p000-155p005 .*kept its top 2.*raise rank.keep_top_per_sweep"):
        _rank(d, RankConfig(select="top_n", value=10), "short", sweeps=sweeps, keep=keep)
    # a score floor keeps enough: every object with p >= 0.5 is kept whatever K
    floor = RankConfig(keep_top_per_sweep=0, keep_above_score=0.5)
    summary = _rank(d, RankConfig(select="threshold", value=0.6), "floor", sweeps=sweeps, keep=floor)
    whole = combine_scores({"a": [d / "scores_a.parquet"], "b": [d / "scores_b.parquet"]}, [d / "objects.parquet"],
                           d / "meta.npz").dropna(subset=["LOGIT_ENSEMBLE"])
    assert summary["selected"] == len(select(whole, RankConfig(select="threshold", value=0.6)))
    p = expit(whole["LOGIT_ENSEMBLE"].to_numpy())
    best_dropped = p[p < 0.5].max()  # a cut at or below it needs an object the floor dropped
    with pytest.raises(LensfinderError, match="could rank above the cut"):
        _rank(d, RankConfig(select="threshold", value=best_dropped - 1e-9), "floor2", sweeps=sweeps, keep=floor)
    # a cut asking for more than the shortlists hold: 10 wanted, 2 + 2 kept, the rest dropped
    keep2 = RankConfig(keep_top_per_sweep=2, keep_above_score=1.0)
    with pytest.raises(LensfinderError, match="could rank above the cut"):
        _rank(d, RankConfig(select="top_n", value=10), "short2", sweeps=sweeps, keep=keep2)
    with pytest.raises(LensfinderError, match="could rank above the cut"):
        _rank(d, RankConfig(select="top_fraction", value=0.5), "short3", sweeps=sweeps, keep=keep2)
