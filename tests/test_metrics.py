"""Honest quality figures: unbiased top-N at a re-weighted ratio, ties, intervals, sky purity."""

import numpy as np
import pytest
from scipy.stats import binomtest

from lensfinder.metrics import (
    auc_interval,
    expected_top,
    paired_auc_difference,
    partial_auc,
    purity_at_density,
    rates_at,
    recall_at_fpr,
    top_n_metrics,
    wilson_interval,
)


def test_weighted_nonlens_crossing_n_counts_fractionally():
    """(i) 5 lenses above the first nonlens, each nonlens weighing 1,000: the top 100 holds the
    5 lenses and 95/1,000 of a nonlens, so precision is 5/100, not 1.0, and recall 5/5."""
    labels = np.r_[np.ones(5), np.zeros(50)]
    scores = np.r_[np.linspace(10, 9, 5), np.linspace(8, 0, 50)]
    # 5 lenses, 50 nonlenses standing for 50,000: sky_ratio 10,000 per lens -> weight 1,000 each
    recall, precision = top_n_metrics(labels, scores, 100, sky_ratio=10_000)
    assert recall == pytest.approx(1.0)
    assert precision == pytest.approx(5 / 100)
    tp, taken = expected_top(labels, scores, 100, np.where(labels > 0, 1.0, 1000.0))
    assert (tp, taken) == (pytest.approx(5.0), pytest.approx(100.0))


def test_all_tied_scores_give_the_same_figures_in_any_order():
    """(ii) every score tied: the top N holds the sample's average composition, whatever the
    order of the rows (the old stable sort favoured whichever class came first)."""
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(10), np.zeros(90)]
    scores = np.full(100, 17.0)
    results = set()
    for _ in range(5):
        perm = rng.permutation(100)
        r, p = top_n_metrics(labels[perm], scores[perm], 5_000, sky_ratio=1_000)
        results.add((round(r, 12), round(p, 12)))
        tp, taken = expected_top(labels[perm], scores[perm], 20)
        assert tp == pytest.approx(2.0) and taken == pytest.approx(20.0)
    assert len(results) == 1
    # 10 lenses + 90 nonlenses weighing 10,000/90 each: 5,000 of 10,010 taken, half the lenses
    r, p = results.pop()
    assert r == pytest.approx(5_000 / 10_010) and p == pytest.approx(10 / 10_010)


def test_partial_tie_group_at_the_boundary():
    labels = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([5.0, 3.0, 3.0, 3.0, 3.0, 1.0])
    # the top 3: the lens at 5, then 2 of the 4 tied at 3 (half of which are lenses)
    tp, taken = expected_top(labels, scores, 3)
    assert tp == pytest.approx(1 + 2 * 2 / 4) and taken == 3
    with pytest.raises(ValueError, match="NaN"):
        expected_top(labels, np.r_[scores[:-1], np.nan], 3)


def test_wilson_interval_matches_scipy_and_its_edges():
    for k, n in ((0, 10), (3, 10), (10, 10), (47, 1000)):
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_purity_at_the_sky_density_follows_from_the_rates():
    # paper II: p > 0.1 at 1:10^4 gives ~2% purity; here TPR 0.9, FPR 1e-3 at f = 1e-4
    assert purity_at_density(0.9, 1e-3, 1e-4) == pytest.approx(0.9e-4 / (0.9e-4 + 0.9999e-3))
    assert purity_at_density(0.5, 0.0, 1e-4) == 1.0
    rates = rates_at(np.r_[np.ones(10), np.zeros(990)], 8, 18, 1e-4)
    assert rates["recall"] == 0.8 and rates["fpr"] == pytest.approx(10 / 990)
    assert rates["purity_sample"] == pytest.approx(8 / 18)
    assert rates["purity_sky"] == pytest.approx(purity_at_density(0.8, 10 / 990, 1e-4))
    lo, hi = rates["purity_sky_ci"]
    assert lo < rates["purity_sky"] < hi
    # the sample's own purity is far above the sky's: 1% lenses here vs 0.01% on the sky
    assert rates["purity_sky"] < rates["purity_sample"] / 50


def test_auc_interval_narrows_with_more_objects():
    lo1, hi1 = auc_interval(0.9, 10, 100)
    lo2, hi2 = auc_interval(0.9, 1000, 10000)
    assert lo1 < lo2 < 0.9 < hi2 < hi1


def test_recall_at_fpr_takes_the_cut_that_lets_through_at_most_the_allowed_false_positives():
    # 10 lenses scored 1..10, 1,000 nonlenses scored below 0 except three high ones
    y = np.r_[np.ones(10), np.zeros(1000)].astype(bool)
    s = np.r_[np.arange(1, 11), np.full(997, -5.0), 9.5, 5.5, 2.5].astype(float)
    r = recall_at_fpr(y, s, 1e-3)  # one false positive allowed: the cut sits at the second (5.5)
    assert r["measurable"] and r["allowed_false_positives"] == 1 and r["threshold_logit"] == 5.5
    assert r["recall"] == 0.5  # lenses 6..10
    r = recall_at_fpr(y, s, 3e-3)  # three allowed: all three pass, the cut is the first -5
    assert r["recall"] == 1.0 and r["threshold_logit"] == -5.0
    lo, hi = r["recall_ci"]
    assert lo < 1.0 and hi == pytest.approx(1.0)


def test_recall_at_fpr_below_the_sample_floor_is_not_measured():
    y = np.r_[np.ones(20), np.zeros(1396)].astype(bool)
    s = np.r_[np.full(20, 3.0), np.linspace(-5, 2, 1396)]
    r = recall_at_fpr(y, s, 1e-4)  # 0.14 false positives: the rate at zero, not at 1e-4
    assert not r["measurable"] and np.isnan(r["recall"]) and r["fpr_floor"] == pytest.approx(1 / 1396)
    assert recall_at_fpr(y, s, 1e-3)["measurable"]


def test_purity_with_no_false_positive_is_a_bound_and_intervals_are_one_beta_interval():
    # 5 of 50 lenses selected and no nonlens of 1,400: the point purity is 100 %, which says nothing
    y = np.r_[np.ones(50), np.zeros(1400)].astype(bool)
    r = rates_at(y, 5, 5, 1e-4)
    assert r["purity_sky"] == 1.0 and r["purity_sky_is_bound"]
    # the bound is small: an FPR below ~1/1400 is all the sample can say
    assert 0 < r["purity_sky_lower_bound"] < 0.2
    # with ten false positives of 100,000 the figure is measured, and its interval holds it
    y = np.r_[np.ones(1000), np.zeros(100_000)].astype(bool)
    r = rates_at(y, 500, 510, 1e-4)
    assert not r["purity_sky_is_bound"]
    lo, hi = r["purity_sky_ci"]
    assert lo < r["purity_sky"] < hi and hi - lo < r["purity_sky"]  # ~+-60 %: ten false positives
    # Monte Carlo of the interval against the Jeffreys posteriors drawn independently here
    rng = np.random.default_rng(1)
    tpr, fpr = rng.beta(500.5, 500.5, 200_000), rng.beta(10.5, 99_990.5, 200_000)
    p = purity_at_density(tpr, fpr, 1e-4)
    assert r["purity_sky_ci"] == pytest.approx(list(np.quantile(p, [0.025, 0.975])), rel=0.03)


def test_partial_auc_and_the_paired_comparison():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(200), np.zeros(2000)].astype(bool)
    good = np.where(y, rng.normal(3, 1, len(y)), rng.normal(0, 1, len(y)))
    noise = rng.normal(0, 1, len(y))
    worse = good + 1.5 * noise
    assert 0.5 < partial_auc(y, worse, 0.01) < partial_auc(y, good, 0.01) <= 1
    assert partial_auc(y, np.where(y, 1.0, 0.0), 0.01) == 1.0
    c = paired_auc_difference(y, good, worse, n_boot=300)
    assert c["difference"] > 0 and c["difference_ci"][0] > 0 and c["p_b_at_least_a"] < 0.01
    same = paired_auc_difference(y, good, good + 1e-9 * noise, n_boot=300)
    assert abs(same["difference"]) < 1e-3 and same["difference_ci"][0] <= 0 <= same["difference_ci"][1]
