"""The split of the training set by system: rows whose cutouts contain one another go to one
split, stratified by (stratum, label) as closely as whole groups allow (step 4 of
``lensfinder.trainset.build``)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def grouped_split(cells, groups, fraction: float, rng) -> np.ndarray:
    """Validation flags (True = validation) that keep every group in one split.

    ``cells`` (e.g. stratum|label) and ``groups`` label each row. Each cell's target is
    round(fraction * its rows). Groups of several rows are placed first (largest first,
    seeded order among equals): each goes where the cells it touches can still end
    closest to their targets, and where both are equally good, to validation with
    probability ``fraction`` (so grouped rows are not biased toward one split). Single
    rows then fill each cell to its target, drawn at random: with singles to spare the
    counts are exact, as without groups.
    """
    cells, groups = np.asarray(cells), np.asarray(groups)
    val = np.zeros(len(cells), dtype=bool)
    if len(cells) == 0:
        return val
    _, cell = np.unique(cells, return_inverse=True)
    size = np.bincount(cell)
    target = np.array([int(round(fraction * n)) for n in size])
    taken, left = np.zeros_like(size), size.copy()

    def deviation(t, lft, tgt):  # the least |final - target| a cell can still reach
        return np.maximum(0, t - tgt) + np.maximum(0, tgt - t - lft)

    _, group, group_size = np.unique(groups, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(group, kind="stable"), np.cumsum(group_size)[:-1])
    several = np.flatnonzero(group_size > 1)
    several = several[rng.permutation(len(several))]
    several = several[np.argsort(-group_size[several], kind="stable")]
    for g in several:
        c, k = np.unique(cell[members[g]], return_counts=True)
        left[c] -= k
        cost_val = deviation(taken[c] + k, left[c], target[c]).sum()
        cost_train = deviation(taken[c], left[c], target[c]).sum()
        if cost_val < cost_train or (cost_val == cost_train and rng.random() < fraction):
            val[members[g]] = True
            taken[c] += k
    singles = np.flatnonzero(group_size[group] == 1)
    for c in range(len(size)):
        rows = np.sort(singles[cell[singles] == c])
        need = int(np.clip(target[c] - taken[c], 0, len(rows)))
        val[rng.permutation(rows)[:need]] = True
    return val


def split_group_summary(table, groups) -> dict:
    """How many rows the split had to keep together (groups of several rows)."""
    sizes = pd.Series(groups).value_counts()
    shared = np.isin(groups, sizes[sizes > 1].index.to_numpy())
    return {"groups_of_several_rows": int((sizes > 1).sum()), "rows_in_them": int(shared.sum()),
            "lenses_in_them": int((shared & (table["LABEL"].to_numpy() == 1)).sum())}
