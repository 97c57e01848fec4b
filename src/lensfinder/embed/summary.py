"""What the self-supervised search shows against a truth list (rule ``embed_summary``).

* **Enrichment**: for the catalogued lenses as queries, the distinct objects among their k
  nearest neighbours (the queries themselves excluded from every list) and the fraction
  of them that are lenses of the truth list, with its Wilson 95% interval, against the base
  rate (the lens fraction among all indexed objects that are not queries). The enrichment
  factor is their ratio; its interval is the fraction's interval over the base rate (a
  census of the whole sample, not a draw). S22 found ~1 lens in 20 neighbours against 1 in
  10^4 at random on the sky; the mock holds far more lenses per object, so its factor is
  bounded by 1 / base rate.
* **The probe beside the networks**: the probe's scores evaluated exactly as rule
  ``evaluate`` evaluates each network (``lensfinder.evaluation.never_seen.evaluate_scorer`` on the
  never-seen objects, cut at as many objects as the ensemble's recommendations), next to
  the networks' figures from ``evaluation/metrics.json``.

Outputs: ``summary.json``, ``enrichment.csv``, ``probe_vs_networks.csv``, ``enrichment.png``,
``probe.png`` and ``neighbours.png`` (queries and their nearest neighbours, RGB, North up,
East left; lenses of the truth list marked).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.catalog.truth import read_truth
from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardCollection
from lensfinder.display import save_mosaic
from lensfinder.embed.index import SimilarityIndex
from lensfinder.embed.probe import probe_scores_table
from lensfinder.embed.similar import SimilarConfig, catalogue_queries, match_queries, neighbour_lists
from lensfinder.errors import LensfinderError
from lensfinder.evaluation.never_seen import EvaluationConfig, evaluate_scorer, never_seen, truth_arrays
from lensfinder.files import atomic_path
from lensfinder.metrics import wilson_interval
from lensfinder.plots import pyplot, save_figure
from lensfinder.tables import read_keyed


def lens_rows(index: SimilarityIndex, truth_path, radius_arcsec) -> np.ndarray:
    """Boolean per index row: a lens of the truth list."""
    lenses = read_truth(truth_path, index.keys, radius_arcsec)
    mask = np.zeros(len(index.keys), bool)
    mask[lenses.index.to_numpy()] = True
    return mask


def enrichment(index: SimilarityIndex, query_rows, is_lens: np.ndarray, ks) -> pd.DataFrame:
    """One row per k: distinct neighbours, lenses among them, fraction (Wilson 95%), base rate
    and enrichment factor (with the fraction's interval over the base rate)."""
    query_rows = np.asarray(query_rows, dtype=np.int64)
    lists = neighbour_lists(index, query_rows, max(ks))
    others = np.ones(len(is_lens), bool)
    others[query_rows] = False
    base_lenses, base_n = int(is_lens[others].sum()), int(others.sum())
    base = base_lenses / base_n if base_n else float("nan")
    rows = []
    for k in sorted(ks):
        chosen = np.unique(lists.loc[lists["RANK"] <= k, "ROW"].to_numpy(np.int64))
        hits, n = int(is_lens[chosen].sum()), len(chosen)
        lo, hi = wilson_interval(hits, n)
        frac = hits / n if n else float("nan")
        if n:  # the interval's ends can sit a rounding error inside the fraction (0 or 1)
            lo, hi = min(lo, frac), max(hi, frac)
        pooled = lists[lists["RANK"] <= k]
        rows.append({"k": int(k), "queries": int(len(query_rows)), "neighbours": n, "lenses": hits,
                     "fraction": frac, "fraction_lo": lo, "fraction_hi": hi,
                     "base_rate": base, "base_lenses": base_lenses, "base_objects": base_n,
                     "enrichment": frac / base if base > 0 else float("nan"),
                     "enrichment_lo": lo / base if base > 0 else float("nan"),
                     "enrichment_hi": hi / base if base > 0 else float("nan"),
                     "fraction_per_query_mean": float(is_lens[pooled["ROW"].to_numpy(np.int64)].mean()) if len(pooled) else float("nan")})
    return pd.DataFrame(rows)


def evaluate_probe(score_paths, objects_paths, labels_path, rank_summary_path, cfg: EvaluationConfig) -> dict:
    """The probe's never-seen figures, computed as ``lensfinder.evaluation.never_seen`` computes each network's."""
    table = probe_scores_table(score_paths)
    objects = pd.concat([read_keyed(p, ["TYPE"]) for p in objects_paths], ignore_index=True)
    table = table.merge(objects[[*KEY, "TYPE"]], on=list(KEY), how="left", validate="one_to_one")
    table = table[np.isfinite(table["logit"].to_numpy(np.float64))].reset_index(drop=True)
    is_lens, theta = truth_arrays(table, cfg)
    unseen = never_seen(table, labels_path)
    y = is_lens[unseen]
    if not y.any():
        raise LensfinderError(f"no lens of {cfg.truth} is among the never-seen objects: nothing to measure")
    n_cut = int(json.loads(Path(rank_summary_path).read_text())["selected"])
    s = table["logit"].to_numpy(np.float64)
    threshold = np.sort(s)[::-1][n_cut - 1] if 0 < n_cut <= len(s) else np.inf
    types = table["TYPE"].astype(str).str.strip().to_numpy()[unseen]
    out = evaluate_scorer(y, s[unseen], types, theta[unseen], threshold, cfg)
    out["never_seen_objects"] = int(unseen.sum())
    return out


def comparison_table(probe: dict, networks: dict) -> pd.DataFrame:
    """AUC and the recommendation cut's recall and sky purity per scorer, intervals beside."""
    rows = []
    for name, m in [*((n, v) for n, v in networks.items() if not n.startswith("_")), ("probe (S22)", probe)]:
        cut = m["cut"]
        rows.append({"scorer": name, "n_lenses": m["n_lenses"], "n_nonlenses": m["n_nonlenses"],
                     "auc": m["auc"], "auc_lo": m["auc_ci"][0], "auc_hi": m["auc_ci"][1],
                     "recall_at_cut": cut["recall"], "recall_at_cut_lo": cut["recall_ci"][0],
                     "recall_at_cut_hi": cut["recall_ci"][1], "purity_sky_at_cut": cut["purity_sky"],
                     "purity_sky_at_cut_lo": cut["purity_sky_ci"][0], "purity_sky_at_cut_hi": cut["purity_sky_ci"][1]})
    return pd.DataFrame(rows)


def summarise(index_dir, catalog_specs, truth_path, sim_cfg: SimilarConfig, eval_cfg: EvaluationConfig,
              probe_score_paths, objects_paths, labels_path, rank_summary_path, networks_metrics_path, probe_info_path,
              manifests, out_dir) -> dict:
    out_dir = Path(out_dir)
    index = SimilarityIndex(index_dir)
    queries, _ = catalogue_queries(catalog_specs, sim_cfg.query_grades)
    queries = match_queries(index, queries, sim_cfg.match_radius_arcsec)
    if queries.empty:
        raise LensfinderError("no catalogued lens (of embed.similar.query_grades) matches an indexed object: "
                              "nothing to query")
    is_lens = lens_rows(index, truth_path, eval_cfg.match_radius_arcsec)
    enrich = enrichment(index, queries["ROW"].to_numpy(), is_lens, sim_cfg.enrichment_k)
    probe = evaluate_probe(probe_score_paths, objects_paths, labels_path, rank_summary_path, eval_cfg)
    networks = json.loads(Path(networks_metrics_path).read_text())
    compare = comparison_table(probe, networks)
    summary = {"queries": int(len(queries)), "truth": str(truth_path), "index": json.loads((Path(index_dir) / "index.json").read_text()),
               "enrichment": enrich.to_dict(orient="records"), "probe_never_seen": probe,
               "probe_validation": json.loads(Path(probe_info_path).read_text())["validation"],
               "networks_never_seen": {n: {"auc": m["auc"], "auc_ci": m["auc_ci"], "recall_at_cut": m["cut"]["recall"]}
                                       for n, m in networks.items() if not n.startswith("_")}}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    with atomic_path(out_dir / "enrichment.csv") as tmp:
        enrich.to_csv(tmp, index=False)
    with atomic_path(out_dir / "probe_vs_networks.csv") as tmp:
        compare.to_csv(tmp, index=False)
    plot_enrichment(enrich, out_dir / "enrichment.png")
    plot_comparison(compare, out_dir / "probe.png")
    plot_neighbours(index, queries, is_lens, manifests, sim_cfg.mosaic_queries, out_dir / "neighbours.png")
    return summary


def _bars(value, lo, hi):
    """Error bar lengths below and above ``value``: never negative, NaN where undefined."""
    value, lo, hi = (np.asarray(a, dtype=float) for a in (value, lo, hi))
    return [np.clip(value - lo, 0, None), np.clip(hi - value, 0, None)]


def plot_enrichment(enrich: pd.DataFrame, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    k = enrich["k"].to_numpy()
    f = enrich["fraction"].to_numpy()
    # interval ends may sit a rounding error inside the value (e.g. a fraction of 0)
    axes[0].errorbar(k, f, yerr=_bars(f, enrich["fraction_lo"], enrich["fraction_hi"]), fmt="o-", capsize=3,
                     label="lenses among the neighbours (Wilson 95%)")
    axes[0].axhline(enrich["base_rate"].iloc[0], color="0.4", ls="--", label="base rate (all other objects)")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("k nearest neighbours per query")
    axes[0].set_ylabel("fraction of lenses")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"{int(enrich['queries'].iloc[0])} catalogued lenses as queries (excluded from the lists)", fontsize=9)
    e = enrich["enrichment"].to_numpy()
    axes[1].errorbar(k, e, yerr=_bars(e, enrich["enrichment_lo"], enrich["enrichment_hi"]), fmt="o-", color="C1",
                     capsize=3)
    axes[1].axhline(1, color="0.4", ls="--")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("k nearest neighbours per query")
    axes[1].set_ylabel("enrichment factor (fraction / base rate)")
    axes[1].set_ylim(0, None)
    save_figure(fig, path)


def plot_comparison(compare: pd.DataFrame, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(compare) + 1.6))
    y = np.arange(len(compare))
    colours = ["C3" if s.startswith("probe") else "C0" for s in compare["scorer"]]
    for ax, col, label in ((axes[0], "auc", "ROC AUC, never-seen objects"),
                           (axes[1], "recall_at_cut", "recall at the recommendation cut")):
        v = compare[col].to_numpy()
        ax.errorbar(v, y, xerr=_bars(v, compare[f"{col}_lo"], compare[f"{col}_hi"]), fmt="none", ecolor="0.3", capsize=3)
        ax.scatter(v, y, c=colours, zorder=3)
        ax.set_yticks(y, compare["scorer"])
        ax.set_xlabel(f"{label} (95%)")
        ax.invert_yaxis()
    axes[0].set_xlim(min(0.5, float(np.nan_to_num(compare["auc_lo"].min(), nan=0.5)) - 0.02), 1.0)
    axes[1].set_xlim(0, 1)
    fig.suptitle("linear probe on frozen self-supervised representations beside the networks", fontsize=9)
    save_figure(fig, path)


def plot_neighbours(index: SimilarityIndex, queries: pd.DataFrame, is_lens, manifests, n_queries, path, per_row=5):
    """A row per query: the query, then its ``per_row`` nearest neighbours (queries excluded)."""
    shown = queries.head(n_queries)
    lists = neighbour_lists(index, shown["ROW"].to_numpy(), per_row)
    rows, labels = [], []
    for q, query in enumerate(shown.itertuples()):
        rows.append(query.ROW)
        labels.append(f"query {str(query.name)[:18]}")
        for nb in lists[lists["QUERY"] == q].itertuples():
            rows.append(nb.ROW)
            labels.append(f"cos {nb.SIMILARITY:.3f}" + (" LENS" if is_lens[nb.ROW] else ""))
    keys = [tuple(int(v) for v in index.keys.iloc[r][list(KEY)]) for r in rows]
    images = ShardCollection(manifests).stack(keys)
    save_mosaic(images, path, labels, ncol=per_row + 1)
