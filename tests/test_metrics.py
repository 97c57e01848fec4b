"""Honest quality figures: unbiased top-N at a re-weighted ratio, ties, intervals, sky purity."""

import numpy as np
import pytest
from scipy.stats import binomtest

from lensfinder.metrics import auc_interval, expected_top, purity_at_density, rates_at, top_n_metrics, wilson_interval


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
