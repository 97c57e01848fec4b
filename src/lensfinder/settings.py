"""Config sections as dataclasses, built from the config's dicts with unknown keys refused.

A settings class subclasses ``Settings`` and names its config section::

    @dataclass
    class RankConfig(Settings):
        section: ClassVar[str] = "rank"
        value: float = 1e-4

``RankConfig.from_dict({"valu": 1})`` then stops with one message naming the section, the
unknown key and the known ones, rather than a ``TypeError`` from the constructor.
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar

from lensfinder.errors import LensfinderError


def check_keys(d, known, where: str) -> dict:
    """``d`` (None: empty) as a new dict, after checking that its keys are among ``known``;
    ``where`` names the section or entry in the message."""
    d = dict(d or {})
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise LensfinderError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return d


class Settings:
    """Mix-in for dataclasses that hold one section of the config."""

    section: ClassVar[str] = "settings"

    @classmethod
    def check_keys(cls, d, where: str | None = None) -> dict:
        """``d`` as a dict whose keys are all fields of the class (``check_keys``)."""
        return check_keys(d, [f.name for f in fields(cls)], where or f"config section {cls.section}")

    @classmethod
    def from_dict(cls, d=None):
        """The settings of a config section (None or {} gives the defaults)."""
        return cls(**cls.check_keys(d))
