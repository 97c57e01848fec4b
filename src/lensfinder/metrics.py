"""Statistics for honest quality figures: top-N counts that do not depend on tie order or on
where a weighted object crosses N, Wilson intervals, purity at the sky's lens density with
one (Beta-posterior) interval or a bound, recall at a fixed false-positive rate, partial AUC
and paired comparisons of two scorers on the same objects.

Conventions: ``scores`` are ranking scores where higher means more lens-like (use float32
logits, never probabilities, which saturate at exactly 1.0 for logits above ~17 in float32);
``labels`` are 1 for a lens, 0 for a nonlens; ``weights`` say how many objects each row stands
for (1 on a survey sample; ``sky_ratio * n_lens / n_nonlens`` for a validation nonlens that
stands for the sky's nonlenses).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

Z95 = float(norm.ppf(0.975))  # 1.96: two-sided 95% intervals
MIN_SELECTED = 10  # below this many selected objects a purity is quoted as a bound


def wilson_interval(successes, trials, z=Z95):
    """Wilson score interval (lo, hi) of a binomial rate; (0, 1) when there is no trial.

    ``successes`` may be fractional (an expected count over tie orders); it is used as is.
    """
    k, n = float(successes), float(trials)
    if n <= 0:
        return 0.0, 1.0
    p = min(max(k / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def expected_top(labels, scores, n, weights=None):
    """Expected (lens count, total weight) among the ``n`` highest-weighted scores.

    Objects are taken in decreasing score. A group of tied scores counts at its average
    composition (the expected value over every order of the ties), and the object, or tie
    group, that crosses ``n`` counts by the fraction of its weight that fits, so a nonlens
    standing for 1,000 sky objects is never dropped whole nor taken whole at the boundary.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("NaN scores cannot be ranked: drop or report them first")
    order = np.argsort(-scores, kind="stable")
    s, lab, w = scores[order], labels[order], w[order]
    # tie groups: runs of equal scores in the sorted order
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    group_w = np.add.reduceat(w, starts) if len(s) else np.zeros(0)
    group_lens = np.add.reduceat(w * lab, starts) if len(s) else np.zeros(0)
    before = np.r_[0.0, np.cumsum(group_w)[:-1]]
    frac = np.clip((n - before) / np.where(group_w > 0, group_w, 1), 0.0, 1.0)
    return float((frac * group_lens).sum()), float((frac * group_w).sum())


def top_n_metrics(labels, scores, n, sky_ratio=10_000.0):
    """Recall and precision among the N highest scores when the nonlenses are re-weighted to
    ``sky_ratio`` per lens (each nonlens counts ``sky_ratio * n_lens / n_nonlens``)."""
    labels = np.asarray(labels).astype(bool)
    n_lens, n_non = int(labels.sum()), int((~labels).sum())
    if n_lens == 0 or n_non == 0:
        return float("nan"), float("nan")
    w = np.where(labels, 1.0, sky_ratio * n_lens / n_non)
    tp, taken = expected_top(labels, scores, n, w)
    return tp / n_lens, tp / taken if taken > 0 else float("nan")


def purity_at_density(tpr, fpr, lens_fraction):
    """Purity (precision) that a cut with these rates has where a fraction ``lens_fraction`` of
    the objects are lenses: f TPR / (f TPR + (1 - f) FPR)."""
    tpr, fpr = np.asarray(tpr, dtype=np.float64), np.asarray(fpr, dtype=np.float64)
    num = lens_fraction * tpr
    den = num + (1 - lens_fraction) * fpr
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def auc_interval(auc, n_pos, n_neg, z=Z95):
    """Hanley & McNeil (1982) 95% interval of a ROC AUC from its standard error."""
    if not (n_pos and n_neg) or not np.isfinite(auc):
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    se = float(np.sqrt(max(var, 0.0)))
    return max(0.0, auc - z * se), min(1.0, auc + z * se)


def rates_at(labels, selected_lens, selected_weight, sky_lens_fraction):
    """Recall, false-positive rate and purity (at the sample's and the sky's lens density) of
    a cut that selects ``selected_weight`` objects of which ``selected_lens`` are lenses, each
    with its 95% interval. Counts may be fractional (expected values over tie orders)."""
    labels = np.asarray(labels).astype(bool)
    n_lens, n_non = int(labels.sum()), int((~labels).sum())
    tp, fp = selected_lens, max(selected_weight - selected_lens, 0.0)
    tpr = tp / n_lens if n_lens else float("nan")
    fpr = fp / n_non if n_non else float("nan")
    tpr_ci, fpr_ci = wilson_interval(tp, n_lens), wilson_interval(fp, n_non)
    sample = tp / selected_weight if selected_weight > 0 else float("nan")
    sky = float(purity_at_density(tpr, fpr, sky_lens_fraction))
    sky_lo, sky_hi, sky_bound = beta_purity_interval(tp, n_lens, fp, n_non, sky_lens_fraction)
    return {
        "selected": float(selected_weight), "true_positives": float(tp), "false_positives": float(fp),
        "recall": tpr, "recall_ci": list(tpr_ci), "fpr": fpr, "fpr_ci": list(fpr_ci),
        "purity_sample": sample, "purity_sample_ci": list(wilson_interval(tp, selected_weight)),
        "purity_sky": sky, "purity_sky_ci": [sky_lo, sky_hi],
        # with fewer than MIN_SELECTED objects or no false one the point purity means nothing
        # (100 % for one lucky object): quote the one-sided 95 % lower bound instead
        "purity_sky_is_bound": bool(selected_weight < MIN_SELECTED or fp < 1), "purity_sky_lower_bound": sky_bound,
    }


def beta_purity_interval(tp, n_lens, fp, n_non, lens_fraction, draws=20_000, seed=0, level=0.95):
    """Interval of the purity at a lens density ``lens_fraction``, f TPR / (f TPR + (1 - f) FPR),
    as one interval: TPR and FPR drawn from their Jeffreys posteriors, Beta(k + 1/2, n - k + 1/2),
    and the purity's central ``level`` quantiles taken (fixed ``seed``: the same figures on
    every run). Returns (lo, hi, one_sided_lower_bound), the last at ``level`` one-sided,
    which is what to quote where no selected object is false (the point purity is then 100%
    whatever the sample's size). Counts may be fractional (expected values over tie orders)."""
    if not (n_lens > 0 and n_non > 0):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    tp, fp = min(max(float(tp), 0.0), n_lens), min(max(float(fp), 0.0), n_non)
    tpr = rng.beta(tp + 0.5, n_lens - tp + 0.5, draws)
    fpr = rng.beta(fp + 0.5, n_non - fp + 0.5, draws)
    purity = purity_at_density(tpr, fpr, lens_fraction)
    tail = (1 - level) / 2
    lo, hi = np.quantile(purity, [tail, 1 - tail])
    return float(lo), float(hi), float(np.quantile(purity, 1 - level))


def recall_at_fpr(labels, scores, fpr):
    """Recall at the highest-recall cut whose false-positive rate is at most ``fpr``: the cut
    just above the (floor(fpr n_non) + 1)-th highest nonlens score, so at most floor(fpr n_non)
    nonlenses pass (ties with that nonlens are left out). With fewer nonlenses than 1 / fpr
    the rate cannot be measured (it would be the rate at zero false positives): ``measurable``
    is then false and the recall is NaN. Returns recall, its Wilson interval, the threshold,
    the false positives allowed and the FPR floor 1 / n_non."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_lens, n_non = int(labels.sum()), int((~labels).sum())
    out = {"fpr": fpr, "fpr_floor": 1.0 / n_non if n_non else float("nan"), "n_nonlenses": n_non,
           "n_lenses": n_lens}
    allowed = int(np.floor(fpr * n_non + 1e-9))
    if n_lens == 0 or allowed < 1:
        return {**out, "measurable": False, "allowed_false_positives": allowed, "threshold_logit": float("nan"),
                "recall": float("nan"), "recall_ci": [float("nan"), float("nan")]}
    non = np.sort(scores[~labels])[::-1]
    # everything strictly above the (allowed + 1)-th nonlens score passes
    threshold = non[allowed] if allowed < n_non else -np.inf
    found = int((scores[labels] > threshold).sum())
    return {**out, "measurable": True, "allowed_false_positives": allowed, "threshold_logit": float(threshold),
            "recall": found / n_lens, "recall_ci": list(wilson_interval(found, n_lens))}


def partial_auc(labels, scores, max_fpr):
    """McClish-standardised partial ROC AUC over FPR in [0, ``max_fpr``] (scikit-learn's
    ``max_fpr``: 0.5 is chance, 1 perfect); NaN without both classes."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores, max_fpr=max_fpr))


def paired_auc_difference(labels, scores_a, scores_b, n_boot=2000, seed=0):
    """AUC(a) - AUC(b) on the same objects with a paired bootstrap 95% interval (lenses and
    nonlenses resampled apart, the same draw for both scorers) and the fraction of draws in
    which b is at least as good (a one-sided p-value for "a beats b")."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool)
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if not (len(pos) and len(neg)):
        return {"difference": float("nan"), "difference_ci": [float("nan"), float("nan")], "p_b_at_least_a": float("nan")}
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        y = labels[idx]
        diffs[i] = roc_auc_score(y, a[idx]) - roc_auc_score(y, b[idx])
    d = float(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"difference": d, "difference_ci": [float(lo), float(hi)], "p_b_at_least_a": float((diffs <= 0).mean())}
