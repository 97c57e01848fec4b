"""Consensus of several inspectors' grades, as in paper IV.

Each inspector grades a candidate 4 (certain lens), 3 (probable), 2 (possible),
1 (unlikely) or 0 (not a lens). The consensus is the mean of the graders' grades mapped to
A (mean >= 3.5), B (>= 3.0), C (>= 2.0) and D (below); the spread is the difference of the
highest and lowest grade (paper IV reports mean and difference of its two graders). A
candidate is *settled* once ``min_graders`` inspectors have graded it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRADES = (0, 1, 2, 3, 4)
GRADE_MEANING = {4: "certain lens", 3: "probable lens", 2: "possible lens", 1: "unlikely", 0: "not a lens"}
# (letter, lowest mean), best first
THRESHOLDS = (("A", 3.5), ("B", 3.0), ("C", 2.0))


def consensus_grade(mean: float) -> str:
    """A, B, C or D for a mean grade (empty string when there is no grade)."""
    if mean is None or not math.isfinite(mean):
        return ""
    for letter, lowest in THRESHOLDS:
        if mean >= lowest:
            return letter
    return "D"


@dataclass(frozen=True)
class Consensus:
    n_graders: int
    mean: float  # NaN without grades
    difference: int | None  # highest - lowest grade
    grade: str  # A, B, C, D, or "" without grades
    settled: bool

    def as_dict(self) -> dict:
        return {"n_graders": self.n_graders, "mean": None if math.isnan(self.mean) else self.mean,
                "difference": self.difference, "consensus": self.grade, "settled": self.settled}


def consensus(grades, min_graders: int = 2) -> Consensus:
    """The consensus of one candidate's grades (one per inspector)."""
    grades = [int(g) for g in grades]
    if not grades:
        return Consensus(0, math.nan, None, "", False)
    mean = sum(grades) / len(grades)
    return Consensus(len(grades), mean, max(grades) - min(grades), consensus_grade(mean), len(grades) >= min_graders)
