"""What the training set writes: labels, the packed cutouts, exclusions, the review table and
mosaic, the per-stratum summary and its chart."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.display import save_mosaic
from lensfinder.files import atomic_path
from lensfinder.plots import pyplot, save_figure, save_note
from lensfinder.trainset.filters import key_tuples


def summarise(table, strata_rows, exclusions, problems, systems, usable, matched, counts_b, hidden, hidden_final,
             cfg, half_width, split_groups):
    by_split = table.groupby(["STRATUM", "SPLIT", "LABEL"]).size().unstack(["SPLIT", "LABEL"], fill_value=0)
    per_stratum = []
    for row in strata_rows:
        s = row["stratum"]
        entry = dict(row)
        for split in ("train", "val"):
            for label, name in ((1, "lenses"), (0, "nonlenses")):
                entry[f"{split}_{name}"] = int(by_split.get((split, label), pd.Series(dtype=int)).get(s, 0))
        per_stratum.append(entry)
    reasons = pd.Series([e["reason"] for e in exclusions], dtype=str).value_counts().to_dict()
    summary = {
        "lenses": int((table["LABEL"] == 1).sum()),
        "nonlenses": int((table["LABEL"] == 0).sum()),
        "lenses_by_source": {k: int(v) for k, v in table.loc[table["LABEL"] == 1, "SOURCE"].value_counts().items()},
        "nonlenses_by_source": {k: int(v) for k, v in table.loc[table["LABEL"] == 0, "SOURCE"].value_counts().items()},
        "ratio_target": cfg.ratio,
        "split": {s: {"lenses": int(((table["SPLIT"] == s) & (table["LABEL"] == 1)).sum()),
                      "nonlenses": int(((table["SPLIT"] == s) & (table["LABEL"] == 0)).sum())} for s in ("train", "val")},
        "catalogued_systems": len(systems),
        "systems_of_allowed_grade": len(usable),
        "systems_matched_to_selected_objects": len(matched),
        "filter": ({"shape": "square", "half_width_arcsec": half_width} if cfg.filter_radius_arcsec is None
                   else {"shape": "circle", "radius_arcsec": cfg.filter_radius_arcsec}),
        "split_groups": split_groups,
        "exclusions_by_reason": {k: int(v) for k, v in reasons.items()},
        "catalogue_problems": problems,
        "strata": per_stratum,
        "strata_short": [r["stratum"] for r in strata_rows if r["shortfall"] > 0],
    }
    if hidden:
        summary["hidden_lenses"] = {"among_nonlenses_before_step_b": int(counts_b["hidden_before_b"]),
                                    "among_nonlenses_after_step_b": int(counts_b["hidden_after_b"]),
                                    "in_final_sample_as_nonlenses": hidden_final}
    return summary


def cutout_writer(keys, fetched, objects):
    """A function writing the training set's cutouts in row order to an .npy path: local
    ones straight from their shard sets into a memory map, so they are never all in memory."""

    def write(path):
        shape = objects.shape or next(iter(fetched.values())).shape
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(keys), *shape))
        local = [n for n, k in enumerate(keys) if k not in fetched]
        objects.fill([keys[n] for n in local], out, local)
        for n, k in enumerate(keys):
            if k in fetched:
                out[n] = fetched[k]
        out.flush()
        del out

    return write


def write_outputs(out_dir, table, images, exclusions, summary, review, objects, cfg):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    cols = [*KEY, "RA", "DEC", "TYPE", "REGION", "ZEXP_BIN", "MAG_Z", "SWEEP", "STRATUM", "LABEL", "SPLIT",
            "SOURCE_CATALOG", "SYSTEM_NAME", "SCORE_PREVIOUS", "SOURCE", "INJECTION_ID", "ROW"]
    with atomic_path(out_dir / "cutouts.npy") as tmp:
        images(tmp)
    with atomic_path(out_dir / "labels.parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(table[cols], preserve_index=False), tmp)
    excl_schema = pa.schema([(k, pa.int64()) for k in KEY] + [("RA", pa.float64()), ("DEC", pa.float64()),
                                                               ("reason", pa.string()), ("detail", pa.string())])
    with atomic_path(out_dir / "exclusions.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(list(exclusions), schema=excl_schema), tmp)
    review_frame = pd.DataFrame(review, columns=[*KEY, "RA", "DEC", "TYPE", "STRATUM", "score", "status"])
    review_frame = review_frame.sort_values("score", ascending=False)
    with atomic_path(out_dir / "review.csv") as tmp:
        review_frame.to_csv(tmp, index=False)
    plot_review(out_dir / "review.png", review_frame, objects, cfg)
    with atomic_path(out_dir / "summary.csv") as tmp:
        pd.DataFrame(summary["strata"]).to_csv(tmp, index=False)
    plot_summary(out_dir / "summary.png", summary)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))


def plot_review(path, review_frame, objects, cfg):
    """Mosaic of the nonlenses the previous model scored above the review threshold."""
    top = review_frame.head(cfg.review_mosaic_max)
    if top.empty:
        save_note(path, "no nonlens above the review threshold" if cfg.previous_model else "no previous model configured")
        return
    keys = key_tuples(top)
    labels = [f"{b}/{o} p={s:.2f}" for (_, b, o), s in zip(keys, top["score"])]
    save_mosaic(objects.stack(keys), path, labels)


def plot_summary(path, summary):
    """Bar chart of lenses and nonlenses per stratum and split (for the report)."""
    plt = pyplot()

    strata = summary["strata"]
    names = [s["stratum"] for s in strata]
    x = np.arange(len(names))
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(names) + 2), 6), sharex=True)
    for ax, label in zip(axes, ("lenses", "nonlenses")):
        tr = [s[f"train_{label}"] for s in strata]
        va = [s[f"val_{label}"] for s in strata]
        ax.bar(x, tr, label="train")
        ax.bar(x, va, bottom=tr, label="validation")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[1].set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    axes[0].set_title(f"training set: {summary['lenses']} lenses, {summary['nonlenses']} nonlenses "
                      f"(target ratio {summary['ratio_target']:g} per stratum)")
    save_figure(fig, path)
