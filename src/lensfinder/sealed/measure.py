"""The search measured on the sealed survey: every scorer at the sky's operating point.

Scorers: each network, their mean, the meta-learner (as fitted by the training run; the
sealed survey fits nothing) and the catalogue-only baseline. Lenses are the sealed sky's
mock lenses (its truth list); every other scored object is a nonlens, of a contaminant
kind (its look-alike list) or ``field``. Figures per scorer: AUC, recall at each FPR of
``evaluation.fpr_points`` (HOLISMOKES XVI's measure), the McClish partial AUC, purity at
the sky's lens density where those cuts hold enough objects (else a bound), recall by
Einstein radius, and the FPR of every contaminant kind at the cut of the largest FPR
point; the meta-learner against each other scorer by a paired bootstrap of the AUC.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.evaluation.never_seen import (
    FIELD_KIND,
    EvaluationConfig,
    compare_scorers,
    evaluate_scorer,
    kind_array,
    plot_fpr_by_kind,
    scorer_columns,
    truth_arrays,
)
from lensfinder.files import atomic_path
from lensfinder.metrics import rates_at, recall_at_fpr
from lensfinder.plots import pyplot, save_figure
from lensfinder.ranking.scores import combine_scores
from lensfinder.tables import read_keyed

CATALOGUE_ONLY = "catalogue_only"
ROC_FPR_MIN = 1e-5


def sealed_table(score_paths: dict, baseline_path, objects_paths, meta_path) -> tuple[pd.DataFrame, dict]:
    """One row per sealed object with every scorer's logit; and scorer name -> column."""
    table = combine_scores(score_paths, objects_paths, meta_path)
    base = read_keyed(baseline_path, ["logit"]).rename(columns={"logit": "LOGIT_CATALOGUE_ONLY"})
    table = table.merge(base.astype({"LOGIT_CATALOGUE_ONLY": np.float64}), on=list(KEY), how="left")
    return table, {**scorer_columns(score_paths), CATALOGUE_ONLY: "LOGIT_CATALOGUE_ONLY"}


def measure_sealed(score_paths: dict, baseline_path, objects_paths, meta_path, truth, lookalikes,
                   cfg: EvaluationConfig, survey_json, out_dir, injections=None) -> dict:
    """Write ``metrics.json``, ``metrics.csv``, ``fpr_by_kind.csv`` and ``roc.png`` to ``out_dir``.

    ``injections``: (the injection set's manifest, {network: its scores}) to measure the
    injected lenses too, at the cuts the sealed nonlenses set."""
    out_dir = Path(out_dir)
    cfg = replace(cfg, truth=str(truth), lookalikes=str(lookalikes))
    table, columns = sealed_table(score_paths, baseline_path, objects_paths, meta_path)
    finite = np.isfinite(table[list(columns.values())].to_numpy()).all(axis=1)
    table = table[finite].reset_index(drop=True)
    y, theta = truth_arrays(table, cfg)
    kinds = kind_array(table, cfg)
    if not y.any() or y.all():
        raise LensfinderError(f"the sealed survey's scored objects hold {int(y.sum())} lenses of {truth} among "
                              f"{len(y)}: both lenses and nonlenses are needed")
    types = table["TYPE"].astype(str).str.strip().to_numpy()
    cut_fpr = max(cfg.fpr_points)
    survey = json.loads(Path(survey_json).read_text())
    metrics = {
        "counts": {"objects_scored": int(finite.sum()), "non_finite_scores": int((~finite).sum()),
                   "nonlenses": int((~y).sum()), "lenses_mock": int(y.sum()), "lenses_injected": 0,
                   "by_kind": {k: int(((kinds == k) & ~y).sum()) for k in sorted(set(kinds[~y]))},
                   "selected": int(sum(v["selected"] for v in survey["sweeps"].values())),
                   "cutouts_failed": int(sum(v["failed"] for v in survey["sweeps"].values()))},
        "survey": {"seed": survey["mock"]["seed"], "bricks": survey["bricks"], "truth": str(truth),
                   "ra_center": survey["mock"]["ra_center"], "dec_center": survey["mock"]["dec_center"]},
        "sky_lens_fraction": cfg.sky_lens_fraction,
        "cut": f"each scorer's threshold at FPR {cut_fpr:g} (the highest of evaluation.fpr_points)",
        "scorers": {},
    }
    scores = {name: table[col].to_numpy() for name, col in columns.items()}
    for name, s in scores.items():
        # the cut: strictly above the threshold that allows the FPR (evaluate_scorer cuts at >=)
        cut = recall_at_fpr(y, s, cut_fpr)
        threshold = np.nextafter(cut["threshold_logit"], np.inf) if cut["measurable"] else np.inf
        detail = evaluate_scorer(y, s, types, theta, threshold, cfg, kinds)
        entry = {"auc": detail["auc"], "auc_ci": detail["auc_ci"], "partial_auc": detail["partial_auc"]}
        for q, at in detail["at_fpr"].items():
            if at["measurable"]:
                sel = s > at["threshold_logit"]
                at = {**at, "rates": rates_at(y, float(y[sel].sum()), float(sel.sum()), cfg.sky_lens_fraction)}
            entry[f"recall_at_fpr_{fpr_label(float(q))}"] = at
        entry.update(per_theta_e=detail["per_theta_e"], per_type=detail["per_type"], cut=detail["cut"])
        entry["fpr_by_kind"] = _by_kind(detail["fpr_by_kind"], f"fpr {cut_fpr:g}")
        metrics["scorers"][name] = entry
    metrics["fpr_by_kind"] = metrics["scorers"]["meta-learner"]["fpr_by_kind"]
    if injections is not None:
        metrics["injected"] = _injected(injections, score_paths, meta_path, baseline_path, columns, metrics, cfg)
        metrics["counts"]["lenses_injected"] = metrics["injected"]["n"]
    metrics["comparisons"] = compare_scorers(y, scores, cfg.bootstrap)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    with atomic_path(out_dir / "metrics.csv") as tmp:
        _scorer_table(metrics).to_csv(tmp, index=False)
    with atomic_path(out_dir / "fpr_by_kind.csv") as tmp:
        _kind_table(metrics).to_csv(tmp, index=False)
    plot_sealed(y, scores, metrics, cfg, out_dir / "roc.png")
    return metrics


def _injected(injections, score_paths, meta_path, baseline_path, columns, metrics, cfg) -> dict:
    """The injected lenses' recall at every scorer's FPR cuts (``lensfinder.sealed.injected``)."""
    from lensfinder.ranking.ensemble import load_meta
    from lensfinder.sealed.injected import injected_scores, measure_injected

    manifest, inj_scores = injections
    table = injected_scores(manifest, {m: inj_scores[m] for m in score_paths}, load_meta(meta_path), baseline_path)
    thresholds = {name: {k.removeprefix("recall_at_fpr_"): (e[k]["threshold_logit"] if e[k]["measurable"] else np.nan)
                         for k in e if k.startswith("recall_at_fpr_")} for name, e in metrics["scorers"].items()}
    return {"n": len(table), "deflectors": int(table[["DEFLECTOR_BRICKID", "DEFLECTOR_OBJID"]].drop_duplicates().shape[0]),
            "scorers": measure_injected(table, columns, thresholds, cfg.theta_e_bins, cfg.bootstrap)}


def fpr_label(fpr: float) -> str:
    """1e-3 for 0.001: the key of a recall at an FPR point in metrics.json."""
    mantissa, exponent = f"{fpr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _by_kind(by_kind: dict, cut: str) -> dict:
    """fpr_by_kind's entries with the cut renamed: at the sealed survey's FPR cut there is no
    recommendation cut."""
    return {k: {"n": v["n"], cut: v["recommendation"]} for k, v in by_kind.items()}


def _scorer_table(metrics) -> pd.DataFrame:
    """One row per scorer and FPR point: AUC, partial AUC, recall and the sky's purity there."""
    rows = []
    for name, e in metrics["scorers"].items():
        for key, at in e.items():
            if not key.startswith("recall_at_fpr_"):
                continue
            rates = at.get("rates", {})
            rows.append({"scorer": name, "auc": e["auc"], "auc_lo": e["auc_ci"][0], "auc_hi": e["auc_ci"][1],
                         "partial_auc": e["partial_auc"]["value"], "fpr": at["fpr"], "measurable": at["measurable"],
                         "recall": at["recall"], "recall_lo": at["recall_ci"][0], "recall_hi": at["recall_ci"][1],
                         "false_positives_allowed": at["allowed_false_positives"],
                         "purity_sky": rates.get("purity_sky", np.nan),
                         "purity_sky_lo": rates.get("purity_sky_ci", [np.nan, np.nan])[0],
                         "purity_sky_hi": rates.get("purity_sky_ci", [np.nan, np.nan])[1],
                         "purity_sky_is_bound": rates.get("purity_sky_is_bound", np.nan)})
    return pd.DataFrame(rows)


def _kind_table(metrics) -> pd.DataFrame:
    rows = []
    for name, entry in metrics["scorers"].items():
        for kind, k in entry["fpr_by_kind"].items():
            cut = next(c for c in k if c != "n")
            r = k[cut]
            rows.append({"scorer": name, "kind": kind, "cut": cut, "n": k["n"], "false_positives": r["false_positives"],
                         "fpr": r["fpr"], "fpr_lo": r["fpr_ci"][0], "fpr_hi": r["fpr_ci"][1]})
    return pd.DataFrame(rows)


def plot_sealed(y, scores: dict, metrics, cfg: EvaluationConfig, path):
    """ROC on a log FPR axis down to 1e-5, every scorer, the FPR points and the sample's floor
    marked; the meta-learner's FPR by contaminant kind at the cut."""
    plt = pyplot()
    from sklearn.metrics import roc_curve

    n_non = int((~y).sum())
    floor = 0.5 / max(n_non, 1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    for i, (name, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(y, s)
        axes[0].plot(np.maximum(fpr, floor), tpr, color=f"C{i}", ls="--" if name == CATALOGUE_ONLY else "-",
                     label=f"{name} (AUC {metrics['scorers'][name]['auc']:.3f})")
    axes[0].axvline(1 / max(n_non, 1), color="0.4", ls="--", lw=1)
    axes[0].text(1 / max(n_non, 1), 0.98, " one false positive", fontsize=7, va="top", color="0.3")
    for q in cfg.fpr_points:
        axes[0].axvline(q, color="0.7", ls=":", lw=1)
    axes[0].set_xscale("log")
    axes[0].set_xlim(ROC_FPR_MIN, 1)
    axes[0].set_ylim(0, 1)
    axes[0].set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate (recall)")
    axes[0].set_title(f"sealed survey: {int(y.sum())} lenses, {n_non} nonlenses", fontsize=9)
    axes[0].legend(fontsize=8, loc="upper left")
    by_kind = metrics["fpr_by_kind"]
    cut = next(c for c in next(iter(by_kind.values())) if c != "n")
    plot_fpr_by_kind(axes[1], by_kind, floor, cut=cut,
                     title=f"meta-learner, sealed nonlenses by kind at its {cut} cut (<: none; Wilson 95%)")
    save_figure(fig, path)


__all__ = ["CATALOGUE_ONLY", "FIELD_KIND", "measure_sealed", "plot_sealed", "sealed_table"]
