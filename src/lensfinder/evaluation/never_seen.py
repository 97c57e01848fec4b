"""The search's quality on objects the networks never saw, at the sky's lens density.

Rule ``evaluate``. For every scorer (each model, the mean of their logits, the meta-learner)
and on the *never-seen* objects (scored objects in neither the training nor the validation
split of the training set: the catalogued lenses it trained on and the nonlenses it drew,
hidden mock lenses among them, are left out), against a truth list of lenses:

* ROC AUC, with its Hanley & McNeil 95% interval, and the partial AUC up to FPR
  ``partial_auc_max_fpr``; each scorer's AUC against the meta-learner's on the same objects,
  with a paired-bootstrap interval (``_comparisons``);
* recall at FPR 1e-3 and 1e-4 (``fpr_points``), where the sample holds enough nonlenses to
  reach them (at least one false positive allowed); otherwise marked not measurable;
* recall (TPR) and false-positive rate at the recommendation cut (each scorer selecting as
  many objects as the ensemble's cut did) and in the top fractions (1e-4, 1e-3, 1e-2) of the
  never-seen objects, each with its Wilson 95% interval;
* the purity those cuts would have at the sky's lens density (``sky_lens_fraction``, about
  1 lens in 10,000 objects), f TPR / (f TPR + (1 - f) FPR), beside the purity at the
  sample's own density (the mock holds ~4% lenses: its own purity says little about the
  sky), with one interval from the rates' Beta posteriors, and a lower bound instead where
  fewer than ten objects are selected or none of them is false;
* the same per Tractor TYPE, and recall per Einstein-radius bin where the truth gives
  ``theta_e`` (arcsec);
* with a contaminant list (``lookalikes``: the mock's ``truth/lookalikes.csv``, keys or
  ra, dec and a ``kind`` column), the false-positive rate of each kind of nonlens (spirals,
  rings, mergers, artefacts, ...; ``field`` for the others) at the recommendation cut and in
  the top fractions, with Wilson intervals (``fpr_by_kind``).

Top-N counts use ``lensfinder.metrics.expected_top``: ties count at their average and the
object crossing N counts fractionally. Scores are float32 logits, never probabilities.

Truth: a CSV or FITS table with either the key columns (release, brickid, objid, any case;
the mock's ``truth/lenses.csv``) or ra, dec in degrees (a list of confirmed lenses),
matched to the nearest scored object within ``match_radius_arcsec``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from lensfinder.catalog.truth import load_truth, read_truth, truth_rows
from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.metrics import (
    auc_interval,
    expected_top,
    paired_auc_difference,
    partial_auc,
    purity_at_density,
    rates_at,
    recall_at_fpr,
    wilson_interval,
)
from lensfinder.plots import pyplot, save_figure
from lensfinder.ranking.scores import combine_scores
from lensfinder.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class EvaluationConfig(Settings):
    section: ClassVar[str] = "evaluation"

    truth: str | None = None  # lens list: keys (release, brickid, objid) or ra, dec
    sky_lens_fraction: float = 1e-4  # lenses per object on the sky (~1 in 10,000)
    top_fractions: list = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    theta_e_bins: list = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])  # arcsec
    match_radius_arcsec: float = 1.5  # ra/dec truth lists: nearest scored object within this
    lookalikes: str | None = None  # contaminants by kind: keys or ra, dec and a kind column
    fpr_points: list = field(default_factory=lambda: [1e-3, 1e-4])  # recall at these FPRs
    partial_auc_max_fpr: float = 0.01  # McClish partial AUC over FPR in [0, this]
    bootstrap: int = 1000  # paired-bootstrap draws comparing each scorer with the meta-learner


def scorer_columns(models) -> dict:
    """Scorer name -> the logit column of ``rank.combine_scores`` that ranks it."""
    return {**{m: f"LOGIT_{m.upper()}" for m in models}, "mean": "LOGIT_MEAN", "meta-learner": "LOGIT_ENSEMBLE"}


def training_lenses(labels_path) -> dict:
    """The training set's lenses by SOURCE: catalogue (real) and injection (trainset.injections)."""
    labels = pd.read_parquet(labels_path)
    if "LABEL" not in labels:
        return {}
    lenses = labels[labels["LABEL"] == 1]
    source = lenses["SOURCE"] if "SOURCE" in lenses else pd.Series("catalogue", index=lenses.index)
    return {k: int(v) for k, v in source.value_counts().items()}


def truth_arrays(table: pd.DataFrame, cfg: "EvaluationConfig"):
    """(is_lens, theta_e in arcsec or NaN) for every row of ``table`` (index 0..n-1)."""
    lenses = read_truth(cfg.truth, table, cfg.match_radius_arcsec)
    is_lens = np.zeros(len(table), bool)
    is_lens[lenses.index] = True
    theta = np.full(len(table), np.nan)
    theta[lenses.index] = lenses["THETA_E"].to_numpy()
    return is_lens, theta


FIELD_KIND = "field"  # a nonlens on no contaminant list


def kind_array(table: pd.DataFrame, cfg: "EvaluationConfig") -> np.ndarray | None:
    """The contaminant kind of every row of ``table`` (``FIELD_KIND`` where none), or None
    without a contaminant list."""
    if not cfg.lookalikes:
        return None
    looks = load_truth(cfg.lookalikes, "evaluation.lookalikes")
    if "kind" not in looks:
        raise LensfinderError(f"contaminant list {cfg.lookalikes} has no kind column (columns: {list(looks.columns)})")
    where = truth_rows(looks, table, cfg.match_radius_arcsec, cfg.lookalikes)
    kinds = np.full(len(table), FIELD_KIND, dtype=object)
    kinds[where[where >= 0]] = looks["kind"].astype(str).to_numpy()[where >= 0]
    return kinds


def fpr_by_kind(y, s, kinds, threshold: float, top_counts: dict) -> dict:
    """False-positive rate of each kind of nonlens at the recommendation cut (score >=
    ``threshold``) and in each named top N (``top_counts``; ties shared out as in
    ``expected_top``, so counts may be fractional)."""
    out = {}
    for kind in sorted(set(kinds[~y])):
        m = ~y & (kinds == kind)
        n = int(m.sum())
        cuts = {"recommendation": float((s[m] >= threshold).sum())}
        for name, top in top_counts.items():
            cuts[name] = expected_top(m, s, top)[0]
        entry = {"n": n}
        for name, fp in cuts.items():
            entry[name] = {"false_positives": fp, "fpr": fp / n, "fpr_ci": list(wilson_interval(fp, n))}
        out[kind] = entry
    return out


def never_seen(table: pd.DataFrame, labels_path) -> np.ndarray:
    """Rows of ``table`` that are in neither split of the training set."""
    labels = pd.read_parquet(labels_path, columns=list(KEY))
    used = pd.MultiIndex.from_frame(labels.astype(np.int64))
    return ~pd.MultiIndex.from_frame(table[list(KEY)].astype(np.int64)).isin(used)


def _cut_rates(y, s, threshold, f_sky):
    sel = s >= threshold
    return rates_at(y, float(y[sel].sum()), float(sel.sum()), f_sky)


def _auc(y, s):
    from sklearn.metrics import roc_auc_score

    if y.all() or not y.any():
        return {"auc": float("nan"), "auc_ci": [float("nan"), float("nan")]}
    auc = float(roc_auc_score(y, s))
    return {"auc": auc, "auc_ci": list(auc_interval(auc, int(y.sum()), int((~y).sum())))}


def evaluate_scorer(y, s, types, theta, threshold, cfg: EvaluationConfig, kinds=None) -> dict:
    """Every figure of one scorer on the never-seen objects (``y`` lens flags, ``s`` logits,
    ``types`` Tractor TYPE, ``theta`` Einstein radius in arcsec or NaN, ``threshold`` the
    scorer's recommendation cut, ``kinds`` each object's contaminant kind or None)."""
    f = cfg.sky_lens_fraction
    out = {"n_lenses": int(y.sum()), "n_nonlenses": int((~y).sum()), **_auc(y, s),
           "cut": {"threshold_logit": float(threshold), **_cut_rates(y, s, threshold, f)}, "top_fractions": {}}
    for q in cfg.top_fractions:
        tp, taken = expected_top(y, s, q * len(y))
        out["top_fractions"][f"{q:g}"] = {"fraction": q, **rates_at(y, tp, taken, f)}
    # the measure of HOLISMOKES XVI: recall where the FPR reaches the sky's operating point;
    # not measurable (NaN, "measurable": false) below one false positive of the sample
    out["at_fpr"] = {f"{q:g}": recall_at_fpr(y, s, q) for q in cfg.fpr_points}
    out["partial_auc"] = {"max_fpr": cfg.partial_auc_max_fpr, "value": partial_auc(y, s, cfg.partial_auc_max_fpr)}
    out["per_type"] = {}
    for t in sorted(set(types)):
        m = types == t
        out["per_type"][t] = {"n_lenses": int(y[m].sum()), "n_nonlenses": int((~y[m]).sum()), **_auc(y[m], s[m]),
                              "cut": _cut_rates(y[m], s[m], threshold, f)}
    out["per_theta_e"] = []
    edges = cfg.theta_e_bins
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = y & (theta >= lo) & (theta < hi)
        if not m.any():
            continue
        found = int((s[m] >= threshold).sum())
        out["per_theta_e"].append({"theta_e_lo": lo, "theta_e_hi": hi, "n_lenses": int(m.sum()), "recovered": found,
                                   "recall": found / int(m.sum()),
                                   "recall_ci": list(wilson_interval(found, int(m.sum())))})
    if kinds is not None:
        out["fpr_by_kind"] = fpr_by_kind(y, s, kinds, threshold, {f"top {q:g}": q * len(y) for q in cfg.top_fractions})
    return out


def evaluate_run(score_paths: dict, objects_paths, meta_path, labels_path, rank_summary_path, cfg: EvaluationConfig,
                 out_dir, recommendations_path=None) -> dict:
    """Write ``metrics.json`` (keyed by scorer), ``metrics.csv`` and ``pr_sky.png`` in ``out_dir``."""
    if not cfg.truth:
        raise LensfinderError("evaluation.truth is not set: name a list of confirmed lenses (keys or ra, dec)")
    out_dir = Path(out_dir)
    table = combine_scores(score_paths, objects_paths, meta_path)
    columns = scorer_columns(score_paths)
    finite = np.isfinite(table[list(columns.values())].to_numpy()).all(axis=1)
    summary = json.loads(Path(rank_summary_path).read_text())
    n_cut = int(summary["selected"])
    table = table[finite].reset_index(drop=True)
    is_lens, theta = truth_arrays(table, cfg)
    kinds = kind_array(table, cfg)
    unseen = never_seen(table, labels_path)
    y, types = is_lens[unseen], table["TYPE"].astype(str).str.strip().to_numpy()[unseen]
    if not y.any():
        raise LensfinderError(f"no lens of {cfg.truth} is among the never-seen scored objects: nothing to measure "
                              "(are they all in the training set?)")
    metrics = {"_sample": {
        "scored_objects": int(len(table) + (~finite).sum()), "non_finite_scores": int((~finite).sum()),
        "never_seen_objects": int(unseen.sum()), "never_seen_lenses": int(y.sum()),
        "truth_lenses_scored": int(is_lens.sum()), "truth": str(cfg.truth),
        "lookalikes": str(cfg.lookalikes) if cfg.lookalikes else None,
        # real and injected lenses apart: these figures are the truth list's real lenses; the training
        # set's injected positives (SOURCE=injection) are measured by the selection function
        "never_seen_lenses_are": "real (the truth list)", "training_lenses": training_lenses(labels_path),
        "sky_lens_fraction": cfg.sky_lens_fraction, "sample_lens_fraction": float(y.mean()),
        "recommendation_cut": {"objects_selected": n_cut, "mode": summary["selection"]}}}
    for name, col in columns.items():
        s_all = table[col].to_numpy()
        # each scorer's own cut selects as many scored objects as the ensemble's cut did
        threshold = np.sort(s_all)[::-1][n_cut - 1] if 0 < n_cut <= len(s_all) else np.inf
        metrics[name] = evaluate_scorer(y, s_all[unseen], types, theta[unseen], threshold, cfg,
                                        None if kinds is None else kinds[unseen])
    metrics["_comparisons"] = compare_scorers(y, {n: table[c].to_numpy()[unseen] for n, c in columns.items()},
                                              cfg.bootstrap)
    if recommendations_path is not None:
        metrics["_sample"]["recommendations"] = _recommended(recommendations_path, table, is_lens, unseen)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    with atomic_path(out_dir / "metrics.csv") as tmp:
        flatten(metrics).to_csv(tmp, index=False)
    plot_pr_sky(y, {n: table[c].to_numpy()[unseen] for n, c in columns.items()}, metrics, cfg,
                out_dir / "pr_sky.png")
    return metrics


def compare_scorers(y, scores: dict, n_boot: int, reference="meta-learner") -> dict:
    """Each scorer against ``reference`` on the same never-seen objects: the AUC difference
    (reference minus scorer) with a paired-bootstrap 95% interval, so that two scorers'
    overlapping intervals are not read as a tie when one wins on nearly every draw."""
    if reference not in scores:
        return {}
    return {f"{reference} - {name}": paired_auc_difference(y, scores[reference], s, n_boot=n_boot)
            for name, s in scores.items() if name != reference}


def _recommended(path, table, is_lens, unseen) -> dict:
    """How many never-seen truth lenses the recommendation table holds (known systems are
    already removed from it)."""
    recs = pd.read_parquet(path, columns=list(KEY))
    where = pd.MultiIndex.from_frame(table[list(KEY)].astype(np.int64)).get_indexer(
        pd.MultiIndex.from_frame(recs.astype(np.int64)))
    where = where[where >= 0]
    return {"recommended": int(len(recs)), "never_seen_recommended": int(unseen[where].sum()),
            "never_seen_lenses_recommended": int((is_lens & unseen)[where].sum())}


def flatten(metrics: dict) -> pd.DataFrame:
    """One row per (scorer, subset, cut) with every rate and interval, for metrics.csv."""
    rows = []

    def row(scorer, subset, cut, rates, extra=None):
        r = {"scorer": scorer, "subset": subset, "cut": cut, **(extra or {})}
        for k, v in rates.items():
            if isinstance(v, list):  # "recall_ci" -> recall_lo, recall_hi
                r[f"{k.removesuffix('_ci')}_lo"], r[f"{k.removesuffix('_ci')}_hi"] = v
            elif not isinstance(v, dict):
                r[k] = v
        rows.append(r)

    for name, m in metrics.items():
        if name.startswith("_"):
            continue
        base = {"n_lenses": m["n_lenses"], "n_nonlenses": m["n_nonlenses"], "auc": m["auc"],
                "auc_lo": m["auc_ci"][0], "auc_hi": m["auc_ci"][1]}
        row(name, "all", "recommendation", m["cut"], base)
        for q, rates in m["top_fractions"].items():
            row(name, "all", f"top {q}", rates, base)
        for q, at in m.get("at_fpr", {}).items():
            row(name, "all", f"fpr <= {q}", {k: at[k] for k in ("recall", "recall_ci", "threshold_logit", "measurable")},
                {**base, "partial_auc": m["partial_auc"]["value"]})
        for t, sub in m["per_type"].items():
            row(name, f"TYPE={t}", "recommendation", sub["cut"],
                {"n_lenses": sub["n_lenses"], "n_nonlenses": sub["n_nonlenses"], "auc": sub["auc"],
                 "auc_lo": sub["auc_ci"][0], "auc_hi": sub["auc_ci"][1]})
        for b in m["per_theta_e"]:
            row(name, f"theta_e=[{b['theta_e_lo']:g},{b['theta_e_hi']:g})", "recommendation",
                {"recall": b["recall"], "recall_ci": b["recall_ci"]}, {"n_lenses": b["n_lenses"]})
        for kind, k in m.get("fpr_by_kind", {}).items():
            for cut, rates in k.items():
                if cut != "n":
                    row(name, f"kind={kind}", cut, rates, {"n_lenses": 0, "n_nonlenses": k["n"]})
    return pd.DataFrame(rows)


def plot_pr_sky(y, scores: dict, metrics, cfg: EvaluationConfig, path):
    """ROC (log FPR) and precision-recall at the sky's lens density, per scorer, with each
    scorer's recommendation cut marked; recall per Einstein-radius bin of the meta-learner."""
    plt = pyplot()
    from sklearn.metrics import roc_curve

    f = cfg.sky_lens_fraction
    fpr_floor = 0.5 / max(int((~y).sum()), 1)  # half a false positive: where FPR = 0 is drawn
    by_kind = metrics["meta-learner"].get("fpr_by_kind")
    fig, axes = plt.subplots(1, 4 if by_kind else 3, figsize=(20 if by_kind else 15, 4.2))
    for i, (name, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(y, s)
        color = f"C{i}"
        axes[0].plot(np.maximum(fpr, fpr_floor), tpr, color=color, label=f"{name} (AUC {metrics[name]['auc']:.3f})")
        keep = tpr > 0
        axes[1].plot(tpr[keep], purity_at_density(tpr[keep], fpr[keep], f), color=color, label=name)
        cut = metrics[name]["cut"]
        axes[1].plot(cut["recall"], max(cut["purity_sky"], 1e-6), "o", color=color)
        axes[1].errorbar(cut["recall"], max(cut["purity_sky"], 1e-6), color=color, capsize=2,
                         yerr=[[max(cut["purity_sky"] - cut["purity_sky_ci"][0], 0)],
                               [max(cut["purity_sky_ci"][1] - cut["purity_sky"], 0)]])
    n_non = max(int((~y).sum()), 1)
    axes[0].axvline(1 / n_non, color="0.4", ls="--", lw=1)
    axes[0].text(1 / n_non, 0.98, " one false positive: below this,\n nothing is measured", fontsize=7,
                 va="top", color="0.3")
    for q in cfg.fpr_points:
        axes[0].axvline(q, color="0.7", ls=":", lw=1)
    axes[0].set_xscale("log")
    axes[0].set_xlim(min([fpr_floor, *cfg.fpr_points]) / 2, 1)
    axes[0].set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate (recall)")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[1].set_yscale("log")
    axes[1].set_ylim(1e-5, 1.5)
    axes[1].set_xlabel("recall")
    axes[1].set_ylabel(f"purity at the sky's density ({f:g} lenses/object)")
    axes[1].set_title(f"never-seen: {int(y.sum())} lenses, {int((~y).sum())} nonlenses; dots: recommendation cut",
                      fontsize=9)
    axes[1].legend(fontsize=8)
    bins = metrics["meta-learner"]["per_theta_e"]
    if bins:
        centres = [(b["theta_e_lo"] + b["theta_e_hi"]) / 2 for b in bins]
        widths = [b["theta_e_hi"] - b["theta_e_lo"] for b in bins]
        rec = np.array([b["recall"] for b in bins])
        lo = rec - np.array([b["recall_ci"][0] for b in bins])
        hi = np.array([b["recall_ci"][1] for b in bins]) - rec
        axes[2].bar(centres, rec, width=widths, alpha=0.5, edgecolor="k")
        axes[2].errorbar(centres, rec, yerr=[lo, hi], fmt="none", color="k", capsize=3)
        for c, b in zip(centres, bins):
            axes[2].text(c, 0.02, f"n={b['n_lenses']}", ha="center", fontsize=8)
    axes[2].set_ylim(0, 1)
    axes[2].set_xlabel("Einstein radius theta_E (arcsec)")
    axes[2].set_ylabel("recall at the recommendation cut")
    axes[2].set_title("meta-learner, never-seen lenses (Wilson 95%)", fontsize=9)
    if by_kind:
        plot_fpr_by_kind(axes[3], by_kind, fpr_floor)
    save_figure(fig, path)


def plot_fpr_by_kind(ax, by_kind: dict, fpr_floor: float, cut: str = "recommendation", title: str | None = None):
    """The meta-learner's false-positive rate of each kind of nonlens at a cut (the
    recommendation cut by default), with Wilson 95% intervals; a kind with none drawn at
    half a false positive."""
    kinds = sorted(by_kind, key=lambda k: by_kind[k][cut]["fpr"])
    y = np.arange(len(kinds))
    for i, k in enumerate(kinds):
        r, n = by_kind[k][cut], by_kind[k]["n"]
        floor = 0.5 / n
        value = max(r["fpr"], floor)
        ax.errorbar(value, i, xerr=[[value - max(r["fpr_ci"][0], floor / 2)], [max(r["fpr_ci"][1] - value, 0)]],
                    fmt="o" if r["false_positives"] else "<", color="C3" if k != FIELD_KIND else "k", capsize=2)
        ax.text(1.05, i, f"{r['false_positives']}/{n}", transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.set_yticks(y, kinds, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(fpr_floor, 0.1 / max(by_kind[k]["n"] for k in kinds)), 1)
    ax.set_xlabel(f"false-positive rate at the {cut} cut")
    ax.set_title(title or "meta-learner, never-seen nonlenses by kind (<: none; Wilson 95%)", fontsize=9)
