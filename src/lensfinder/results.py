"""``lensfinder-results RUN_DIR``: the run's headline figures as a Markdown table, read from
its outputs (never typed by hand), for the README or a paper's notes; with ``--sealed``, the
sealed test survey's figures (rule sealed).

Quality figures are those of the evaluation stage: objects the networks never saw, purity
at the sky's lens density, 95% intervals. Validation AUCs are listed as what they are: the
split the model selection looked at.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lensfinder.errors import LensfinderError


def _ci(value, ci, fmt="{:.3f}"):
    return f"{fmt.format(value)} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _percent(fraction) -> str:
    """A fraction in percent: one decimal, or two significant digits below 1 %."""
    v = 100 * fraction
    v = 0.0 if abs(v) < 1e-9 else v  # an interval's end at 0 computed as 1e-15
    return f"{v:.1f}" if v >= 1 or v == 0 else f"{v:.2g}"


def _pct(value, ci):
    return f"{_percent(value)} [{_percent(ci[0])}, {_percent(ci[1])}] %"


def _pct_pair(ci) -> str:
    return f"{_percent(ci[0])}, {_percent(ci[1])} %"


def _purity(rates) -> str:
    """The purity at the sky's density, or its one-sided 95 % lower bound where the cut holds
    fewer than ten objects or no false one (a point value would then read 100 %)."""
    if rates.get("purity_sky_is_bound"):
        return (f">= {_percent(rates['purity_sky_lower_bound'])} % (95 % bound: "
                f"{rates['selected']:.3g} selected, {rates['false_positives']:.3g} false)")
    return _pct(rates["purity_sky"], rates["purity_sky_ci"])


def _sci(value, ci):
    return _ci(value, [0.0 if abs(v) < 1e-12 else v for v in ci], "{:.2g}")


def _by_source(ts: dict) -> str:
    """' (109 catalogue, 200 injection)' when the lenses come from more than one source."""
    sources = ts.get("lenses_by_source") or {}
    if len(sources) < 2:
        return ""
    return " (" + ", ".join(f"{n:,} {name}" for name, n in sorted(sources.items())) + ")"


def results_table(run_dir) -> str:
    """The Markdown table of a finished run (``results/<run>``)."""
    d = Path(run_dir)
    need = ["objects/selection_counts.csv", "trainset/summary.json", "ensemble/evaluation.csv",
            "recommendations/summary.json"]
    missing = [n for n in need if not (d / n).exists()]
    if missing:
        raise LensfinderError(f"{d} lacks {missing}: run the workflow to the end first (snakemake --cores all)")
    counts = pd.read_csv(d / "objects/selection_counts.csv").set_index("sweep").loc["total"]
    ts = json.loads((d / "trainset/summary.json").read_text())
    ens = pd.read_csv(d / "ensemble/evaluation.csv").set_index("scorer")
    rec = json.loads((d / "recommendations/summary.json").read_text())
    rows = [("sweep rows / selected objects", f"{int(counts['input']):,} / {int(counts['selected']):,}"),
            ("training set", f"{ts['lenses']} lenses{_by_source(ts)} + {ts['nonlenses']:,} nonlenses (ratio "
                             f"{ts['ratio_target']:g} per stratum); validation {ts['split']['val']['lenses']} + "
                             f"{ts['split']['val']['nonlenses']}")]
    models = [m for m in ens.index if m not in ("mean", "meta-learner")]
    best = []
    for m in models:
        hist = pd.read_csv(d / f"models/{m}/metrics.csv")
        i = hist["val_auc"].idxmax()
        best.append(f"`{m}` {hist['val_auc'][i]:.3f} (epoch {int(hist['epoch'][i])})")
    rows.append(("validation AUC, best epoch (the split model selection used)", "; ".join(best)))
    rows.append(("validation AUC, mean / meta-learner", f"{ens.loc['mean', 'auc']:.3f} / {ens.loc['meta-learner', 'auc']:.3f}"))
    metrics_path = d / "evaluation/metrics.json"
    if metrics_path.exists():
        m = json.loads(metrics_path.read_text())
        sample = m["_sample"]
        f = sample["sky_lens_fraction"]
        rows.append(("never-seen objects (in neither split)", f"{sample['never_seen_objects']:,}, of which "
                     f"{sample['never_seen_lenses']} lenses ({100 * sample['sample_lens_fraction']:.1f} %)"))
        scorers = [k for k in m if not k.startswith("_")]
        rows.append(("never-seen AUC [95 %]", "; ".join(f"`{s}` {_ci(m[s]['auc'], m[s]['auc_ci'])}" for s in scorers)))
        n_cut = sample["recommendation_cut"]["objects_selected"]
        for s in scorers:
            c = m[s]["cut"]
            rows.append((f"`{s}` at the recommendation cut (top {n_cut} of all scored)",
                         f"recall {_pct(c['recall'], c['recall_ci'])}; FPR {_sci(c['fpr'], c['fpr_ci'])}; "
                         f"purity at the sky's density ({f:g}) {_purity(c)}"))
        meta = m["meta-learner"]
        for q, t in meta["top_fractions"].items():
            rows.append((f"`meta-learner` in the top {q} of never-seen objects ({t['selected']:.3g} objects)",
                         f"recall {_pct(t['recall'], t['recall_ci'])}; purity at the sky's density "
                         f"{_purity(t)}"))
        for q, at in meta.get("at_fpr", {}).items():
            rows.append((f"recall at FPR {q} (never-seen)", "; ".join(
                f"`{s}` {_pct(m[s]['at_fpr'][q]['recall'], m[s]['at_fpr'][q]['recall_ci'])}" for s in scorers)
                if at["measurable"] else f"not measurable: {at['n_nonlenses']:,} never-seen nonlenses allow "
                f"no false positive at {q} (the sample's floor is {at['fpr_floor']:.2g})"))
        if "partial_auc" in meta:
            rows.append((f"partial AUC, FPR <= {meta['partial_auc']['max_fpr']:g} (McClish; 0.5 is chance)",
                         "; ".join(f"`{s}` {m[s]['partial_auc']['value']:.3f}" for s in scorers)))
        if m.get("_comparisons"):
            rows.append(("AUC differences on the same objects (paired bootstrap 95 %)", "; ".join(
                f"{k} {_ci(c['difference'], c['difference_ci'], '{:+.3f}')}" for k, c in m["_comparisons"].items())))
        if meta["per_theta_e"]:
            rows.append(("`meta-learner` recall at the cut by theta_E", "; ".join(
                f"{b['theta_e_lo']:g}-{b['theta_e_hi']:g}\": {_pct(b['recall'], b['recall_ci'])} (n={b['n_lenses']})"
                for b in meta["per_theta_e"])))
        if meta.get("fpr_by_kind"):
            kinds = sorted(meta["fpr_by_kind"].items(), key=lambda kv: -kv[1]["recommendation"]["fpr"])
            rows.append(("`meta-learner` FPR at the cut by kind of nonlens (false positives / never-seen)", "; ".join(
                f"{k} {_sci(v['recommendation']['fpr'], v['recommendation']['fpr_ci'])} "
                f"({v['recommendation']['false_positives']}/{v['n']})" for k, v in kinds)))
        recd = sample.get("recommendations")
        if recd:
            rows.append(("never-seen lenses among the recommendations",
                         f"{recd['never_seen_lenses_recommended']} of {recd['recommended']} recommendations"))
    rows += _selection_function_rows(d)
    rows += _selfsupervised_rows(d)
    rows.append(("recommendations", f"{rec['selected']} selected of {rec['scored_objects']:,} scored; "
                 f"{rec['known_systems_removed']} known systems removed, {rec['merged_duplicates']} merged; "
                 f"{rec['recommendations']} recommended"))
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def _selection_function_rows(d: Path) -> list:
    """Injection-recovery where the run has it: completeness at the recommendation cut
    overall, by theta_E and by source magnitude, and the cross-check against real lenses."""
    rows = []
    sf = d / "selection_function"
    if not (sf / "summary.json").exists():
        return rows
    s = json.loads((sf / "summary.json").read_text())
    rows.append(("injections: completeness at the recommendation cut, all",
                 f"{_pct(s['completeness'], [s['ci_lo'], s['ci_hi']])} of {s['n_injected']:,} injections"))
    one_d = pd.read_csv(sf / "completeness_1d.csv")
    for variable, label, unit in (("theta_e", "theta_E", '"'), ("source_mag_g", "source g magnitude", "")):
        part = one_d[(one_d.variable == variable) & (one_d.n_injected > 0)]
        rows.append((f"injections: completeness by {label}", "; ".join(
            f"{r.lo:g}-{r.hi:g}{unit}: {100 * r.completeness:.0f} [{100 * r.ci_lo:.0f}, {100 * r.ci_hi:.0f}] %"
            for r in part.itertuples())))
    if (sf / "crosscheck.json").exists():
        c = json.loads((sf / "crosscheck.json").read_text())
        rows.append(("injections vs never-seen real lenses (cross-check)", c["statement"]))
    return rows


def _selfsupervised_rows(d: Path) -> list:
    """S22's figures where the run has them: lens enrichment among the neighbours of the
    catalogued lenses, and the linear probe's never-seen AUC."""
    rows = []
    enrichment, probe = d / "embed/enrichment.csv", d / "embed/probe_vs_networks.csv"
    if enrichment.exists():
        e = pd.read_csv(enrichment).set_index("k")
        rows.append(("S22: lenses among the k nearest neighbours of the catalogued lenses (queries excluded)",
                     "; ".join(f"k={k}: {100 * r.fraction:.1f} % [{100 * r.fraction_lo:.1f}, {100 * r.fraction_hi:.1f}], "
                               f"{r.enrichment:.1f}x the base rate {100 * r.base_rate:.1f} %"
                               for k, r in e.loc[[k for k in (1, 10, 100) if k in e.index]].iterrows())))
    if probe.exists():
        p = pd.read_csv(probe).set_index("scorer")
        name = next((n for n in p.index if n.startswith("probe")), None)
        if name is not None:
            r = p.loc[name]
            rows.append(("S22: linear probe on frozen representations, never-seen AUC [95 %]",
                         _ci(r.auc, [r.auc_lo, r.auc_hi])))
    return rows


def sealed_table(run_dir) -> str:
    """The Markdown table of the sealed test survey (``results/<run>/sealed``, rule sealed):
    every scorer at the sky's operating point, on objects that chose nothing."""
    path = Path(run_dir) / "sealed/metrics.json"
    if not path.exists():
        raise LensfinderError(f"{path} does not exist: run snakemake --cores all sealed first")
    m = json.loads(path.read_text())
    c, sc = m["counts"], m["scorers"]
    f = m["sky_lens_fraction"]
    rows = [("sealed survey", f"seed {m['survey']['seed']}, {m['survey']['bricks']} bricks at RA "
                              f"{m['survey']['ra_center']:g}, Dec {m['survey']['dec_center']:g}; "
                              f"{c['objects_scored']:,} scored objects"),
            ("lenses / nonlenses", f"{c['lenses_mock']:,} mock lenses, {c['lenses_injected']:,} injected / "
                                   f"{c['nonlenses']:,} nonlenses (" + ", ".join(
                                       f"{k} {n:,}" for k, n in sorted(c["by_kind"].items(), key=lambda kv: -kv[1])) + ")"),
            ("AUC [95 %]", "; ".join(f"`{s}` {_ci(e['auc'], e['auc_ci'])}" for s, e in sc.items()))]
    keys = [k for k in next(iter(sc.values())) if k.startswith("recall_at_fpr_")]
    for key in keys:
        q = key.removeprefix("recall_at_fpr_")
        rows.append((f"recall at FPR {q} [95 %]", "; ".join(
            f"`{s}` {_pct(e[key]['recall'], e[key]['recall_ci'])}" if e[key]["measurable"] else f"`{s}` not measurable"
            for s, e in sc.items())))
        rows.append((f"purity at the sky's density ({f:g}) at FPR {q}", "; ".join(
            f"`{s}` {_purity(e[key]['rates'])}" for s, e in sc.items() if e[key]["measurable"]) or "not measurable"))
    inj = m.get("injected")
    if inj and inj["n"]:
        for q in next(iter(inj["scorers"].values())):
            if q == "per_theta_e":
                continue
            rows.append((f"injected lenses ({inj['n']:,} on {inj['deflectors']:,} deflectors): recall at FPR {q} "
                         "[Wilson; bootstrap over deflectors]", "; ".join(
                             f"`{s}` {_pct(e[q]['recall'], e[q]['recall_ci'])} [{_pct_pair(e[q]['recall_ci_deflectors'])}]"
                             if e[q]["recall"] == e[q]["recall"] else f"`{s}` not measurable"
                             for s, e in inj["scorers"].items())))
    rows.append((f"partial AUC, FPR <= {next(iter(sc.values()))['partial_auc']['max_fpr']:g} (McClish; 0.5 is chance)",
                 "; ".join(f"`{s}` {e['partial_auc']['value']:.3f}" for s, e in sc.items())))
    if m.get("comparisons"):
        rows.append(("AUC differences on the same objects (paired bootstrap 95 %)", "; ".join(
            f"{k} {_ci(d['difference'], d['difference_ci'], '{:+.3f}')}" for k, d in m["comparisons"].items())))
    meta = sc["meta-learner"]
    cut = next(k for k in next(iter(m["fpr_by_kind"].values())) if k != "n")
    if meta["per_theta_e"]:
        rows.append((f"`meta-learner` recall at its {cut} cut by theta_E", "; ".join(
            f"{b['theta_e_lo']:g}-{b['theta_e_hi']:g}\": {_pct(b['recall'], b['recall_ci'])} (n={b['n_lenses']})"
            for b in meta["per_theta_e"])))
    kinds = sorted(m["fpr_by_kind"].items(), key=lambda kv: -kv[1][cut]["fpr"])
    rows.append((f"`meta-learner` FPR at its {cut} cut by kind (false positives / nonlenses)", "; ".join(
        f"{k} {_sci(v[cut]['fpr'], v[cut]['fpr_ci'])} ({v[cut]['false_positives']:g}/{v['n']:,})" for k, v in kinds)))
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def seeds_table(run_dirs) -> str:
    """The sealed survey's headline figures over several runs that differ in their training
    seed (``config/seeds/``): each run's value, and their mean and range."""
    runs = [json.loads((Path(d) / "sealed/metrics.json").read_text()) for d in run_dirs]
    names = [Path(d).name for d in run_dirs]
    scorers = list(runs[0]["scorers"])
    keys = ["auc", *[k for k in runs[0]["scorers"][scorers[0]] if k.startswith("recall_at_fpr_")]]
    rows = []
    for key in keys:
        for s in scorers:
            if key == "auc":
                values = [r["scorers"][s]["auc"] for r in runs]
                fmt = "{:.3f}".format
            else:
                values = [r["scorers"][s][key]["recall"] for r in runs]
                fmt = lambda v: f"{_percent(v)} %"  # noqa: E731
            label = "AUC" if key == "auc" else f"recall at FPR {key.removeprefix('recall_at_fpr_')}"
            if any(v != v for v in values):
                rows.append((f"{label}, `{s}`", "not measurable in " + ", ".join(
                    n for n, v in zip(names, values) if v != v)))
                continue
            each = ", ".join(f"{n} {fmt(v)}" for n, v in zip(names, values))
            rows.append((f"{label}, `{s}`", f"mean {fmt(sum(values) / len(values))}, range {fmt(min(values))} - "
                                            f"{fmt(max(values))} ({each})"))
    lines = [f"| {len(runs)} training seeds | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Print a run's headline figures (Markdown) from its outputs.")
    ap.add_argument("run_dir", nargs="*", default=["results/mock"],
                    help="results/<run> (default results/mock); with --sealed, several runs give their spread")
    ap.add_argument("--sealed", action="store_true",
                    help="the sealed test survey's table (results/<run>/sealed, after snakemake sealed)")
    args = ap.parse_args(argv)
    try:
        if len(args.run_dir) > 1 and not args.sealed:
            raise LensfinderError("several runs are compared on the sealed survey only: add --sealed")
        if len(args.run_dir) > 1:
            print(seeds_table(args.run_dir))
        else:
            print(sealed_table(args.run_dir[0]) if args.sealed else results_table(args.run_dir[0]))
    except LensfinderError as err:
        raise SystemExit(f"lensfinder-results: {err}") from None


if __name__ == "__main__":
    main()
