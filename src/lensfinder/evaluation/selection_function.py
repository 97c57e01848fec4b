"""The search's selection function: how many injected lenses the search recovers.

Every model scores the held-out injection set (``lensfinder.injection.sets.write_injection_set``;
rule ``infer_injections``), the meta-learner combines the float32 logits as it does for
the survey's objects (``ensemble.apply_meta``), and an injection is *recovered* when its
ensemble logit reaches the run's recommendation cut: ``cut_logit_ensemble`` of the rank
summary, the ensemble logit of the last object the ranking selected. Completeness is the
recovered fraction, with its Wilson 95% interval:

* per cell of Einstein radius x source magnitude (``completeness.csv``: theta_e_lo,
  theta_e_hi, mag_lo, mag_hi, n_injected, n_recovered, completeness, ci_lo, ci_hi);
* against theta_E, source magnitude and the arc's signal-to-noise (``completeness_1d.csv``:
  variable, lo, hi, ...; the last S/N bin is open);
* with a heat map (``heatmap.png``) and 1-D curves (``curves.png``).

An injection whose score is not finite is counted as injected and not recovered (the
ranking leaves such objects out), and the summary counts them.

The cross-check (``crosscheck``) puts the completeness in each theta_E bin of the
evaluation beside the recall, at the same cut, of the never-seen real lenses of the
truth list (``evaluation/metrics.json``, meta-learner) and says whether the two Wilson
intervals overlap. On the mock, whose lenses are drawn with the injector's physics, they
should: a disagreement points at the injector (or at the deflectors it chooses).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardSet
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.injection.config import InjectionConfig
from lensfinder.metrics import wilson_interval
from lensfinder.plots import pyplot, save_figure
from lensfinder.ranking.ensemble import apply_meta, load_meta

log = logging.getLogger(__name__)


CELL_COLUMNS = ["theta_e_lo", "theta_e_hi", "mag_lo", "mag_hi", "n_injected", "n_recovered", "completeness", "ci_lo",
                "ci_hi"]


def score_injections(index: pd.DataFrame, score_paths: dict, meta_path) -> pd.DataFrame:
    """The injection index with every model's logit (LOGIT_<MODEL>) and the ensemble's
    (LOGIT_ENSEMBLE, NaN where a model's score is not finite)."""
    table = index.set_index(list(KEY))
    features = {}
    for model, path in score_paths.items():
        scores = pd.read_parquet(path).set_index(list(KEY))
        if len(scores) != len(table) or not scores.index.sort_values().equals(table.index.sort_values()):
            raise LensfinderError(f"scores {path} of model {model} do not cover the injection set: re-run "
                                  "rule infer_injections")
        features[model] = scores["logit"].reindex(table.index).astype(np.float64)
        table[f"LOGIT_{model.upper()}"] = features[model].to_numpy()
    features = pd.DataFrame(features, index=table.index)
    meta = load_meta(meta_path)
    missing = [m for m in meta["inputs"] if m not in features.columns]
    if missing:
        raise LensfinderError(f"the meta-learner {meta_path} needs scores of model(s) {missing} on the injections")
    finite = np.isfinite(features[meta["inputs"]].to_numpy()).all(axis=1)
    ensemble = np.full(len(table), np.nan)
    if finite.any():
        ensemble[finite] = apply_meta(meta, features[finite])
    table["LOGIT_ENSEMBLE"] = ensemble
    return table.reset_index()


def _rate_row(recovered: np.ndarray) -> dict:
    n, k = int(len(recovered)), int(recovered.sum())
    lo, hi = wilson_interval(k, n)
    return {"n_injected": n, "n_recovered": k, "completeness": k / n if n else float("nan"), "ci_lo": lo, "ci_hi": hi}


def _bin_of(values, edges, open_last=False) -> np.ndarray:
    """Bin index of each value for edges e0 < e1 < ... (right-open; the last bin is closed,
    or open-ended with ``open_last``); -1 outside."""
    values = np.asarray(values, dtype=np.float64)
    k = np.searchsorted(edges, values, side="right") - 1
    last = len(edges) - 2
    k = np.where((values == edges[-1]) | (open_last & (values >= edges[-1])), last, k)
    return np.where((k < 0) | (k > last) | ~np.isfinite(values), -1, k)


def completeness_cells(t: pd.DataFrame, theta_bins, mag_bins) -> pd.DataFrame:
    """One row per (theta_E, source magnitude) cell of the grid."""
    ti, mi = _bin_of(t["THETA_E"], theta_bins), _bin_of(t["SOURCE_MAG_G"], mag_bins)
    rec = t["RECOVERED"].to_numpy()
    rows = []
    for i, (t_lo, t_hi) in enumerate(zip(theta_bins[:-1], theta_bins[1:])):
        for j, (m_lo, m_hi) in enumerate(zip(mag_bins[:-1], mag_bins[1:])):
            rows.append({"theta_e_lo": t_lo, "theta_e_hi": t_hi, "mag_lo": m_lo, "mag_hi": m_hi,
                         **_rate_row(rec[(ti == i) & (mi == j)])})
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def completeness_1d(t: pd.DataFrame, column: str, edges, name: str, open_last=False) -> pd.DataFrame:
    k = _bin_of(t[column], edges, open_last)
    rec = t["RECOVERED"].to_numpy()
    his = list(edges[1:])
    if open_last:
        his[-1] = np.inf
    return pd.DataFrame([{"variable": name, "lo": lo, "hi": hi, **_rate_row(rec[k == i])}
                         for i, (lo, hi) in enumerate(zip(edges[:-1], his))])


def selection_function(manifest_path, score_paths: dict, meta_path, rank_summary_path, cfg: InjectionConfig,
                       out_dir) -> dict:
    """Score, count and plot; writes completeness.csv, completeness_1d.csv,
    injections_scored.parquet, summary.json, heatmap.png and curves.png in ``out_dir``."""
    out_dir = Path(out_dir)
    rank_summary = json.loads(Path(rank_summary_path).read_text())
    cut = rank_summary.get("cut_logit_ensemble")
    if cut is None:
        raise LensfinderError(f"{rank_summary_path} has no cut_logit_ensemble (the ranking selected nothing): "
                              "nothing defines recovery; check rank.select")
    shards = ShardSet(manifest_path)
    t = score_injections(shards.index, score_paths, meta_path)
    for c in ("THETA_E", "SOURCE_MAG_G", "ARC_SNR", "MAGNIFICATION"):  # an empty set's index has no columns
        if c not in t:
            t[c] = pd.Series(dtype=np.float64)
    finite = np.isfinite(t["LOGIT_ENSEMBLE"].to_numpy())
    t["RECOVERED"] = finite & (np.nan_to_num(t["LOGIT_ENSEMBLE"].to_numpy(), nan=-np.inf) >= cut)
    g = cfg.grid
    cells = completeness_cells(t, g.theta_e_bins, g.source_mag_bins)
    one_d = pd.concat([completeness_1d(t, "THETA_E", g.theta_e_bins, "theta_e"),
                       completeness_1d(t, "SOURCE_MAG_G", g.source_mag_bins, "source_mag_g"),
                       completeness_1d(t, "ARC_SNR", g.snr_bins, "arc_snr", open_last=True)], ignore_index=True)
    overall = _rate_row(t["RECOVERED"].to_numpy())
    summary = {"cut_logit_ensemble": float(cut), "recommendation_cut": rank_summary.get("selection"),
               "models": list(score_paths), **overall, "non_finite_scores": int((~finite).sum()),
               "outside_grid": int(len(t) - cells["n_injected"].sum()),
               "theta_e_bins": list(g.theta_e_bins), "source_mag_bins": list(g.source_mag_bins),
               "median_magnification": float(np.median(t["MAGNIFICATION"])) if len(t) else None,
               "median_arc_snr": float(np.median(t["ARC_SNR"])) if len(t) else None}
    if (~finite).any():
        log.warning("%d injection(s) have non-finite scores: counted as not recovered", int((~finite).sum()))
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "completeness.csv") as tmp:
        cells.to_csv(tmp, index=False)
    with atomic_path(out_dir / "completeness_1d.csv") as tmp:
        one_d.to_csv(tmp, index=False)
    with atomic_path(out_dir / "injections_scored.parquet") as tmp:
        t.to_parquet(tmp, index=False)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    plot_heatmap(cells, summary, out_dir / "heatmap.png")
    plot_curves(t, one_d, cfg, out_dir / "curves.png")
    return summary


def crosscheck(scored_path, metrics_path, theta_e_bins, out_dir, mag_range=None, scorer="meta-learner") -> dict:
    """Completeness of the injections per theta_E bin (source magnitudes within
    ``mag_range``, the real lenses' range) beside the recall of the never-seen real lenses
    in the same bin at the same cut, with both Wilson intervals. Writes crosscheck.csv,
    crosscheck.json (the statement) and crosscheck.png."""
    out_dir = Path(out_dir)
    t = pd.read_parquet(scored_path)
    if mag_range is not None:
        t = t[(t["SOURCE_MAG_G"] >= mag_range[0]) & (t["SOURCE_MAG_G"] <= mag_range[1])]
    metrics = json.loads(Path(metrics_path).read_text())
    if scorer not in metrics:
        raise LensfinderError(f"{metrics_path} has no scorer {scorer!r}: re-run the evaluate rule")
    real = {(round(b["theta_e_lo"], 6), round(b["theta_e_hi"], 6)): b for b in metrics[scorer]["per_theta_e"]}
    k = _bin_of(t["THETA_E"], theta_e_bins)
    rec = t["RECOVERED"].to_numpy()
    rows = []
    for i, (lo, hi) in enumerate(zip(theta_e_bins[:-1], theta_e_bins[1:])):
        r = real.get((round(lo, 6), round(hi, 6)), {"n_lenses": 0, "recovered": 0, "recall": float("nan"),
                                                      "recall_ci": [0.0, 1.0]})
        inj = _rate_row(rec[k == i])
        both = inj["n_injected"] > 0 and r["n_lenses"] > 0
        overlap = bool(inj["ci_lo"] <= r["recall_ci"][1] and r["recall_ci"][0] <= inj["ci_hi"]) if both else None
        rows.append({"theta_e_lo": lo, "theta_e_hi": hi, **inj, "n_lenses": int(r["n_lenses"]),
                     "recovered": int(r["recovered"]), "recall": r["recall"], "recall_ci_lo": r["recall_ci"][0],
                     "recall_ci_hi": r["recall_ci"][1], "overlap": overlap})
    table = pd.DataFrame(rows)
    compared = table[table["overlap"].notna()]
    apart = compared[~compared["overlap"].astype(bool)]
    agree = bool(len(compared) and apart.empty)
    if not len(compared):
        statement = "no theta_E bin holds both injections and never-seen real lenses: nothing to compare"
    elif agree:
        statement = (f"the intervals overlap in all {len(compared)} theta_E bins: the injections' completeness agrees "
                     "with the recall of the never-seen real lenses")
    else:
        bins = ", ".join(f"[{r.theta_e_lo:g}, {r.theta_e_hi:g})" for r in apart.itertuples())
        statement = (f"the intervals do not overlap in {len(apart)} of {len(compared)} theta_E bins ({bins}): the "
                     "injections and the real lenses disagree there")
    result = {"agree": agree, "statement": statement, "scorer": scorer, "source_mag_range": mag_range,
              "bins": table.to_dict(orient="records")}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "crosscheck.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out_dir / "crosscheck.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=float))
    plot_crosscheck(table, statement, out_dir / "crosscheck.png")
    return result


def plot_heatmap(cells: pd.DataFrame, summary: dict, path):
    """Completeness per (source magnitude, theta_E) cell, with the count in each."""
    plt = pyplot()
    t_edges, m_edges = summary["theta_e_bins"], summary["source_mag_bins"]
    grid = cells["completeness"].to_numpy().reshape(len(t_edges) - 1, len(m_edges) - 1)
    fig, ax = plt.subplots(figsize=(1.0 * len(m_edges) + 2.5, 0.9 * len(t_edges) + 1.8))
    mesh = ax.pcolormesh(m_edges, t_edges, np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis")
    for r in cells.itertuples():
        if r.n_injected:
            ax.text((r.mag_lo + r.mag_hi) / 2, (r.theta_e_lo + r.theta_e_hi) / 2,
                    f"{r.completeness:.2f}\n{r.n_recovered}/{r.n_injected}", ha="center", va="center", fontsize=7,
                    color="w" if r.completeness < 0.6 else "k")
    fig.colorbar(mesh, ax=ax, label="completeness at the recommendation cut")
    ax.set_xlabel("source magnitude g (AB, unlensed, before extinction)")
    ax.set_ylabel("Einstein radius theta_E (arcsec)")
    ax.set_title(f"injections recovered: {summary['n_recovered']}/{summary['n_injected']} "
                 f"(ensemble logit >= {summary['cut_logit_ensemble']:.3g})", fontsize=9)
    save_figure(fig, path)


def _errorbar(ax, rows, x, **kw):
    y = rows["completeness"].to_numpy()
    yerr = [np.maximum(y - rows["ci_lo"].to_numpy(), 0), np.maximum(rows["ci_hi"].to_numpy() - y, 0)]
    ax.errorbar(x, y, yerr=yerr, capsize=3, **kw)


def plot_curves(t: pd.DataFrame, one_d: pd.DataFrame, cfg: InjectionConfig, path):
    """Completeness against theta_E (one line per magnitude bin and all), source magnitude
    (one line per theta_E bin and all) and arc S/N, with Wilson 95% intervals."""
    plt = pyplot()
    g = cfg.grid
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = ((axes[0], "theta_e", "THETA_E", g.theta_e_bins, "source g", "SOURCE_MAG_G", g.source_mag_bins,
               "Einstein radius theta_E (arcsec)"),
              (axes[1], "source_mag_g", "SOURCE_MAG_G", g.source_mag_bins, "theta_E", "THETA_E", g.theta_e_bins,
               "source magnitude g (AB)"))
    cmap = plt.get_cmap("plasma")
    for ax, var, col, edges, other, other_col, other_edges, label in panels:
        rows = one_d[one_d["variable"] == var]
        x = (rows["lo"].to_numpy() + rows["hi"].to_numpy()) / 2
        which = _bin_of(t[other_col], other_edges)
        for j, (lo, hi) in enumerate(zip(other_edges[:-1], other_edges[1:])):
            per = completeness_1d(t[which == j], col, edges, var)
            ax.plot(x, per["completeness"], color=cmap(j / max(len(other_edges) - 2, 1)), lw=1, alpha=0.7,
                    label=f"{other} {lo:g}-{hi:g}")
        _errorbar(ax, rows, x, color="k", lw=2, fmt="o-", label="all")
        ax.set_xlabel(label)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=6, ncol=2)
    axes[0].set_ylabel("completeness at the recommendation cut")
    rows = one_d[one_d["variable"] == "arc_snr"]
    lo, hi = rows["lo"].to_numpy(), rows["hi"].to_numpy()
    x = np.where(np.isfinite(hi), np.sqrt(np.maximum(lo, 1) * np.where(np.isfinite(hi), hi, 1)), lo * 1.5)
    keep = rows["n_injected"].to_numpy() > 0
    _errorbar(axes[2], rows[keep], x[keep], color="k", fmt="o-")
    for xi, r in zip(x[keep], rows[keep].itertuples()):
        axes[2].text(xi, 0.02, f"n={r.n_injected}", ha="center", fontsize=7)
    axes[2].set_xscale("log")
    axes[2].set_ylim(0, 1.02)
    axes[2].set_xlabel("arc S/N (matched filter, g, r, z in quadrature)")
    save_figure(fig, path)


def plot_crosscheck(table: pd.DataFrame, statement: str, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    centre = (table["theta_e_lo"] + table["theta_e_hi"]).to_numpy() / 2
    width = (table["theta_e_hi"] - table["theta_e_lo"]).to_numpy()
    _errorbar(ax, table, centre - 0.08 * width, fmt="o", color="C0", label="injections (completeness)")
    real = table.assign(completeness=table["recall"], ci_lo=table["recall_ci_lo"], ci_hi=table["recall_ci_hi"])
    has = real["n_lenses"].to_numpy() > 0
    _errorbar(ax, real[has], centre[has] + 0.08 * width[has], fmt="s", color="C3",
              label="never-seen real lenses (recall)")
    for c, r in zip(centre, table.itertuples()):
        ax.text(c, 0.02, f"{r.n_injected} inj.\n{r.n_lenses} real", ha="center", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Einstein radius theta_E (arcsec)")
    ax.set_ylabel("fraction recovered at the recommendation cut")
    ax.set_title(statement, fontsize=7, wrap=True)
    ax.legend(fontsize=8)
    save_figure(fig, path)
