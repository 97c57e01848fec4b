"""MkDocs hook: the configuration reference, generated from the config's JSON Schema.

``docs/reference/configuration.md`` holds the marker ``<!-- config-reference -->``; at build
time it is replaced by one table per config section (key, type, default, description),
read from ``config/schema/config.schema.yaml``: its ``properties``, ``type`` (or ``enum``,
``const``, ``oneOf``, ``$ref``), ``default`` and ``description``. Nested objects get their
own rows with dotted keys (``injection.grid.n_per_bin``); the items of a list of objects are
written ``lens_catalogs[].path``, and the entries of a map ``models.<name>.train.epochs``.
So the page can never disagree with the schema the workflow validates against.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import yaml

MARKER = "<!-- config-reference -->"
SCHEMA = Path("config") / "schema" / "config.schema.yaml"


def on_config(config):
    """Rebuild when the schema changes under ``mkdocs serve``."""
    root = Path(config["config_file_path"]).parent
    schema = str(root / SCHEMA)
    if schema not in config["watch"]:
        config["watch"].append(schema)
    return config


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    root = Path(config["config_file_path"]).parent
    schema = yaml.safe_load((root / SCHEMA).read_text())
    return markdown.replace(MARKER, render(schema))


# ----------------------------------------------------------------------------- formatting
def _value(v) -> str:
    """A value in the config's own YAML flow style."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return v if v and re.fullmatch(r"[A-Za-z0-9_.\-/<>]+", v) else '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _code(text: str) -> str:
    """A code span for a table cell (Python-Markdown's tables never split a cell inside one)."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _prose(text: str) -> str:
    """Schema prose for a table cell: HTML-escaped outside code spans, pipes escaped."""
    parts = re.split(r"(`[^`]*`)", " ".join(str(text).split()))
    out = [p if p.startswith("`") else html.escape(p, quote=False).replace("|", "\\|") for p in parts]
    return "".join(out)


def _bounds(node: dict) -> list[str]:
    out = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            out.append(f"{sign} {_value(node[key])}")
    if "not" in node and node["not"].get("multipleOf") == 2:
        out.append("odd")
    for key, word in (("minItems", "at least"), ("maxItems", "at most")):
        if key in node:
            out.append(f"{word} {node[key]} item" + ("" if node[key] == 1 else "s"))
    if node.get("uniqueItems"):
        out.append("unique")
    if "pattern" in node:
        out.append("pattern " + _code(node["pattern"]))
    return out


def _type(node: dict, defs: dict) -> str:
    """What a key takes, in words: its type(s), enum or alternatives, and its bounds."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"{name} ([see below](#{name}))"
    if "const" in node:
        return _code(_value(node["const"]))
    if "enum" in node:
        return "one of " + ", ".join(_code(_value(v)) for v in node["enum"])
    alts = node.get("oneOf") or node.get("anyOf")
    if alts and "type" not in node and not all(set(a) <= {"required"} for a in alts):
        return " or ".join(_type(a, defs) for a in alts)
    types = node.get("type")
    if types is None:
        text = "object" if "properties" in node else "any"
    else:
        types = [types] if isinstance(types, str) else list(types)
        words = []
        for t in types:
            if t == "array" and "items" in node:
                words.append("list of " + _type(node["items"], defs))
            elif t == "object" and "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
                words.append("map of name to object")
            else:
                words.append(t)
        text = " or ".join(words)
    bounds = _bounds(node)
    return text + (" (" + ", ".join(bounds) + ")" if bounds else "")


def _description(node: dict, required: bool) -> str:
    desc = _prose(node.get("description", ""))
    alts = node.get("oneOf") or node.get("anyOf") or []
    if alts and all(set(a) == {"required"} for a in alts):
        keys = " or ".join(_code(", ".join(a["required"])) for a in alts)
        word = "exactly one" if "oneOf" in node else "at least one"
        desc += f" (needs {word} of {keys})" if desc else f"Needs {word} of {keys}."
    names = node.get("propertyNames")
    if names:
        rule = f"names match {_code(names['pattern'])}" if "pattern" in names else "named entries"
        if "const" in (names.get("not") or {}):
            rule += f", except {_code(_value(names['not']['const']))}"
        desc = f"{desc} ({rule})" if desc else rule[0].upper() + rule[1:] + "."
    if required:
        desc = "**Required.** " + desc
    return desc.strip()


def _default(node: dict) -> str:
    return _code(_value(node["default"])) if "default" in node else ""


def _rows(name: str, node: dict, defs: dict, required: bool, rows: list, own_row: bool = True) -> None:
    """The row of ``name`` and, for an object, the rows of its keys (recursively)."""
    if own_row:
        rows.append((_code(name), _type(node, defs), _default(node), _description(node, required)))
    for child_prefix, child in _children(name, node):
        if child is not node and child_prefix != name:
            rows.append((_code(child_prefix), "object", "", _description(child, False)))
        needed = set(child.get("required", []))
        for key, sub in (child.get("properties") or {}).items():
            _rows(f"{child_prefix}.{key}", sub, defs, key in needed, rows)


def _children(name: str, node: dict):
    """The objects whose properties are nested under ``name``: the node itself, a list's
    items, a map's values, and the object alternatives of a oneOf/anyOf."""
    if node.get("properties"):
        yield name, node
    items = node.get("items")
    if isinstance(items, dict) and items.get("properties"):
        yield name + "[]", items
    values = node.get("additionalProperties")
    if isinstance(values, dict) and values.get("properties"):
        yield name + ".<name>", values
    for alt in (node.get("oneOf") or []) + (node.get("anyOf") or []):
        if isinstance(alt, dict) and alt.get("properties") and alt.get("type") == "object":
            yield name, alt


def _table(rows: list) -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(cell or "" for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render(schema: dict) -> str:
    """The reference: a summary of the sections, a table per section, then the shared definitions."""
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    props = schema["properties"]
    out = ["## Sections", "",
           "| key | type | default | description |", "|---|---|---|---|"]
    for key, node in props.items():
        link = f"[`{key}`](#{key})" if _nested(node) else _code(key)
        out.append(f"| {link} | {_type(node, defs)} | {_default(node)} | {_description(node, key in required)} |")
    for key, node in props.items():
        if not _nested(node):
            continue
        rows: list = []
        _rows(key, node, defs, key in required, rows, own_row=False)
        out += ["", f"## {key}", ""]
        intro = _description(node, key in required)
        if intro:
            out += [intro, ""]
        out.append(_table(rows))
    for name, node in defs.items():
        out += ["", f"## {name}", ""]
        if node.get("description"):
            out += [_prose(node["description"]), ""]
        rows = []
        for alt in node.get("oneOf", [node]):
            for key, sub in (alt.get("properties") or {}).items():
                _rows(key, sub, defs, key in set(alt.get("required", [])), rows)
        if rows:
            out.append(_table(rows))
    return "\n".join(out) + "\n"


def _nested(node: dict) -> bool:
    return any(True for _ in _children("", node))
