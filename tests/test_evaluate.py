"""The evaluation stage: never-seen objects only, figures at the sky's lens density."""

import json

import numpy as np
import pandas as pd
import pytest

from lensfinder.evaluation.never_seen import EvaluationConfig, evaluate_run
from lensfinder.metrics import purity_at_density
from lensfinder.ranking.ensemble import fit_meta_learner, save_meta

KEY = ["RELEASE", "BRICKID", "OBJID"]


@pytest.fixture()
def run_outputs(tmp_path):
    """400 scored objects, 40 of them lenses; 100 objects (10 lenses) are the training set.

    Model "good" separates the never-seen lenses perfectly; model "noise" is random. The
    training objects get the opposite of the truth from both, so any leak of them into the
    evaluation would show."""
    rng = np.random.default_rng(0)
    n = 400
    objid = np.arange(n)
    lens = objid % 10 == 0
    used = objid < 100
    objects = pd.DataFrame({"RELEASE": 10000, "BRICKID": 5, "OBJID": objid, "RA": 150 + objid * 1e-3, "DEC": 2.0,
                            "TYPE": np.where(objid % 2, "SER", "DEV"), "REGION": "DECaLS", "MAG_G": 20.0,
                            "MAG_R": 19.5, "MAG_Z": 19.0, "SWEEP": "sweep-150p000-155p005"})
    objects.to_parquet(tmp_path / "objects.parquet")
    good = np.where(lens, 5.0, -5.0) + rng.normal(0, 0.5, n)
    good[used] = -good[used]
    noise = rng.normal(0, 1, n)
    for name, logit in (("good", good), ("noise", noise)):
        pd.DataFrame({**{k: objects[k] for k in KEY}, "RA": objects.RA, "DEC": objects.DEC,
                      "logit": logit.astype(np.float32), "prob": 1 / (1 + np.exp(-logit))}).to_parquet(
            tmp_path / f"{name}.parquet")
    y = (rng.random(2000) < 0.2).astype(int)
    x = np.stack([np.where(y, 4.0, -4.0) + rng.normal(0, 1, 2000), rng.normal(0, 1, 2000)], 1)
    save_meta(fit_meta_learner(x, y, hidden=16), ["good", "noise"], tmp_path / "meta.npz")
    objects[used][KEY].assign(LABEL=lens[used].astype(int), SPLIT="train").to_parquet(tmp_path / "labels.parquet")
    pd.DataFrame({"release": 10000, "brickid": 5, "objid": objid[lens],
                  "theta_e": np.where(objid[lens] % 20 == 0, 1.2, 2.2), "catalogued": False}).to_csv(
        tmp_path / "truth.csv", index=False)
    (tmp_path / "summary.json").write_text(json.dumps({"selected": 120, "selection": {"mode": "top_n", "value": 120}}))
    return tmp_path


def run(d, **cfg):
    cfg = EvaluationConfig(truth=str(d / "truth.csv"), theta_e_bins=[1.0, 2.0, 3.0], **cfg)
    return evaluate_run({"good": [d / "good.parquet"], "noise": [d / "noise.parquet"]}, [d / "objects.parquet"],
                        d / "meta.npz", d / "labels.parquet", d / "summary.json", cfg, d / "out")


def test_only_never_seen_objects_are_measured(run_outputs):
    m = run(run_outputs)
    assert m["_sample"]["never_seen_objects"] == 300 and m["_sample"]["never_seen_lenses"] == 30
    good, noise = m["good"], m["noise"]
    assert good["n_lenses"] == 30 and good["n_nonlenses"] == 270
    # the training objects, scored upside down, are not counted: "good" is perfect
    assert good["auc"] == 1.0
    assert 0.3 < noise["auc"] < 0.7
    # the recommendation cut selects 120 of all 400 by each scorer: for "good" the 90 training
    # nonlenses (scored high) and the 30 never-seen lenses; only the latter are counted
    assert good["cut"]["true_positives"] == 30 and good["cut"]["false_positives"] == 0
    assert good["cut"]["recall"] == 1.0 and good["cut"]["purity_sky"] == 1.0


def test_rates_carry_intervals_and_the_sky_purity_follows_tpr_and_fpr(run_outputs):
    m = run(run_outputs)
    for scorer in ("good", "noise", "mean", "meta-learner"):
        for rates in [m[scorer]["cut"], *m[scorer]["top_fractions"].values()]:
            for k in ("recall", "fpr", "purity_sample", "purity_sky"):
                lo, hi = rates[f"{k}_ci"]
                assert 0 <= lo <= 1 and 0 <= hi <= 1
                # a purity with no false positive is a bound: its point value (100 %) lies above
                # the interval, which the rates' Beta posteriors give; the bound lies below it
                if k == "purity_sky" and rates["purity_sky_is_bound"]:
                    assert rates["purity_sky_lower_bound"] <= hi
                elif np.isfinite(rates[k]):
                    assert lo - 1e-12 <= rates[k] <= hi + 1e-12
            if rates["true_positives"] > 0:
                assert rates["purity_sky"] == pytest.approx(
                    float(purity_at_density(rates["recall"], rates["fpr"], 1e-4)))
    # top 1% of 300 never-seen objects = 3 objects, all lenses for the perfect scorer
    top = m["good"]["top_fractions"]["0.01"]
    assert top["selected"] == pytest.approx(3.0) and top["true_positives"] == pytest.approx(3.0)
    # top 1e-4 of 300 = 0.03 of an object: counted fractionally, never rounded up to a whole one
    assert m["good"]["top_fractions"]["0.0001"]["selected"] == pytest.approx(0.03)
    # the noise scorer's sky purity is far below its sample purity (10% lenses in the sample)
    cut = m["noise"]["cut"]
    assert cut["purity_sky"] < cut["purity_sample"] / 100


def test_per_type_and_theta_e_bins(run_outputs):
    m = run(run_outputs)
    per_type = m["good"]["per_type"]
    assert set(per_type) == {"SER", "DEV"}
    assert per_type["SER"]["n_lenses"] + per_type["DEV"]["n_lenses"] == 30
    bins = m["good"]["per_theta_e"]
    assert [(b["theta_e_lo"], b["n_lenses"]) for b in bins] == [(1.0, 15), (2.0, 15)]
    assert all(b["recall"] == 1.0 for b in bins)
    table = pd.read_csv(run_outputs / "out/metrics.csv")
    row = table[(table.scorer == "good") & (table.subset == "all") & (table.cut == "recommendation")].iloc[0]
    assert row.recall == 1.0 and row.n_lenses == 30 and row.recall_lo < 1.0
    assert set(table.scorer) == {"good", "noise", "mean", "meta-learner"}
    assert (run_outputs / "out/pr_sky.png").stat().st_size > 10_000


def test_truth_by_position_and_bad_truth(run_outputs):
    d = run_outputs
    objects = pd.read_parquet(d / "objects.parquet")
    lenses = objects[objects.OBJID % 10 == 0]
    pd.DataFrame({"RA": lenses.RA + 0.3 / 3600, "DEC": lenses.DEC}).to_csv(d / "truth.csv", index=False)
    m = run(d)
    assert m["_sample"]["never_seen_lenses"] == 30 and m["good"]["auc"] == 1.0
    pd.DataFrame({"x": [1]}).to_csv(d / "truth.csv", index=False)
    from lensfinder.errors import LensfinderError

    with pytest.raises(LensfinderError, match="truth.csv needs columns release, brickid, objid or ra, dec"):
        run(d)


def test_false_positive_rate_of_each_contaminant_kind(run_outputs):
    """Never-seen nonlenses listed as spirals all score high under "good" (they are made
    false positives), rings score low; the FPR of each kind and the counts add up."""
    d = run_outputs
    objid = np.arange(400)
    spirals = objid[(objid >= 100) & (objid % 10 == 3)][:20]  # never-seen nonlenses
    rings = objid[(objid >= 100) & (objid % 10 == 7)][:10]
    scores = pd.read_parquet(d / "good.parquet")
    scores.loc[scores.OBJID.isin(spirals), "logit"] = np.float32(9.0)  # above every lens
    scores.to_parquet(d / "good.parquet")
    looks = pd.DataFrame({"kind": ["spiral"] * 20 + ["ring"] * 10 + ["merger"],
                          "release": 10000, "brickid": 5, "objid": [*spirals, *rings, 5]})  # objid 5: training
    looks.to_csv(d / "lookalikes.csv", index=False)
    m = run(d, lookalikes=str(d / "lookalikes.csv"))
    k = m["good"]["fpr_by_kind"]
    assert set(k) == {"spiral", "ring", "field"}  # the merger is a training object: not measured
    assert k["spiral"]["n"] == 20 and k["ring"]["n"] == 10 and k["field"]["n"] == 270 - 30
    assert k["spiral"]["recommendation"]["false_positives"] == 20 and k["spiral"]["recommendation"]["fpr"] == 1.0
    assert k["ring"]["recommendation"]["false_positives"] == 0
    lo, hi = k["ring"]["recommendation"]["fpr_ci"]
    assert lo == 0.0 and 0.2 < hi < 0.35  # none in ten: a Wilson bound, not a zero
    # the kinds' false positives are the scorer's, split
    assert sum(v["recommendation"]["false_positives"] for v in k.values()) == m["good"]["cut"]["false_positives"]
    # top 1% of 300 = 3 objects: all three are spirals now
    assert k["spiral"]["top 0.01"]["false_positives"] == pytest.approx(3.0)
    table = pd.read_csv(d / "out/metrics.csv")
    row = table[(table.scorer == "good") & (table.subset == "kind=spiral") & (table.cut == "recommendation")].iloc[0]
    assert row.fpr == 1.0 and row.n_nonlenses == 20
    # without the list there is no per-kind entry
    assert "fpr_by_kind" not in run(d)["good"]
