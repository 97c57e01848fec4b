"""The configuration schema: every shipped config validates, sections have defaults, and
impossible values fail at start naming the key."""

import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from snakemake.utils import validate

SCHEMA = str(REPO / "config/schema/config.schema.yaml")
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path):
    cfg = yaml.safe_load(path.read_text())
    validate(cfg, SCHEMA)
    assert cfg["cutouts"]["size"] % 2 == 1


def test_sections_left_out_get_their_defaults():
    minimal = {k: v for k, v in yaml.safe_load((REPO / "config/config.yaml").read_text()).items()
               if k in ("run", "survey", "lens_catalogs", "models")}
    validate(minimal, SCHEMA)
    assert minimal["cutouts"] == {"size": 101, "recentre": False, "max_missing": 0.5, "shard_rows": 20000,
                                  "max_failed_fraction": 0.5}
    assert minimal["selection"]["zmag_max"] == 20.0 and minimal["selection"]["min_nobs"] == 3
    assert minimal["trainset"]["ratio"] == 100 and minimal["trainset"]["validation_fraction"] == 0.3
    assert minimal["rank"] == {"select": "top_fraction", "value": 0.0001, "known_radius_arcsec": 3.0,
                               "merge_radius_arcsec": 5.0, "mosaic_top": 48, "keep_top_per_sweep": 1000,
                               "keep_above_score": 0.5}
    assert minimal["infer"] == {"batch_size": 1024, "tta": False, "sweeps_per_job": 1}
    assert minimal["evaluation"]["sky_lens_fraction"] == 0.0001
    # an empty section is filled the same way
    cfg = {**minimal, "cutouts": {}}
    validate(cfg, SCHEMA)
    assert cfg["cutouts"]["size"] == 101


@pytest.mark.parametrize("section, key, value, message", [
    ("cutouts", "size", 100, "should not be valid under {'multipleOf': 2}"),
    ("trainset", "ratio", -1, "less than or equal to the minimum of 0"),
    ("trainset", "validation_fraction", 1.0, "greater than or equal to the maximum of 1"),
    ("rank", "value", 2.5, "is not of type 'integer'"),  # top_n needs a count
    ("evaluation", "sky_lens_fraction", 0, "less than or equal to the minimum of 0"),
    ("selection", "types", ["SER", "ELLIPSE"], "'ELLIPSE' is not one of"),
])
def test_impossible_values_fail_naming_the_key(section, key, value, message):
    cfg = copy.deepcopy(yaml.safe_load((REPO / "config/config.yaml").read_text()))
    cfg[section][key] = value
    with pytest.raises(Exception) as err:
        validate(cfg, SCHEMA)
    text = str(err.value)
    assert message in text and f"['{section}']['{key}']" in text


def _settings_classes():
    """Every config section's settings class in the package (subclasses of Settings)."""
    import importlib
    import pkgutil

    import lensfinder
    from lensfinder.settings import Settings

    for m in pkgutil.walk_packages(lensfinder.__path__, "lensfinder."):
        importlib.import_module(m.name)
    found, todo = [], list(Settings.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return sorted(found, key=lambda c: c.__name__)


SETTINGS = _settings_classes()


def test_every_config_section_is_a_settings_class():
    assert {c.section for c in SETTINGS} >= {"selection", "trainset", "train", "rank", "evaluation", "injection",
                                             "inspection", "mock", "lens_catalogs", "embed.pretrain", "embed.index",
                                             "embed.similar", "embed.probe"}


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_a_settings_section_gives_its_defaults_and_names_an_unknown_key(cls):
    """One helper for every section: {} gives the defaults; an unknown key is an error naming
    the section, the key and the keys it knows."""
    from lensfinder.errors import LensfinderError

    if cls.__name__ != "CatalogSpec":  # a catalogue entry needs its path or source
        assert cls.from_dict({}) == cls.from_dict(None)
    with pytest.raises(LensfinderError, match=rf"{cls.section}.*unknown key\(s\) \['no_such_key'\]; known: \["):
        cls.from_dict({"no_such_key": 1})
