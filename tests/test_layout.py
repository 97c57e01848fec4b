"""The package's layout: stages in layers, no import back up a layer, no cycle; one name from
rule to script to module to docs page."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lensfinder"

# Lowest first. A module may import from its own layer's package and from lower layers only.
LAYERS = [
    {"errors", "files", "settings", "constants", "tables", "metrics", "plots", "display", "workers"},  # shared by every stage
    {"survey"},
    {"mock"},
    {"catalog"},
    {"cutouts"},
    {"injection"},
    {"nets"},  # below trainset: its contamination filter scores with the previous network
    {"trainset"},
    {"ranking"},
    {"evaluation"},
    {"sealed"},  # the sealed test survey: a mock scored by the trained networks, measured
    {"embed"},
    {"portal"},
    {"workflow", "plan", "results"},  # the workflow's glue and the command-line reports
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every lensfinder module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package imports absolutely")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lensfinder"):
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lensfinder")}
    return found


MODULES = modules()


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"module {module} is in no layer: add its package to LAYERS (and to the docs' layout page)")


def test_every_module_is_in_a_layer_and_imports_only_its_own_or_lower_layers():
    upward = []
    for name, path in MODULES.items():
        if name == "lensfinder":
            continue
        for target in imports_of(path):
            if target in ("lensfinder",):
                continue
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports from a later stage into an earlier one:\n" + "\n".join(sorted(upward))


def test_the_import_graph_has_no_cycle():
    graph = {name: {t for t in imports_of(path) if t in MODULES and t != name} for name, path in MODULES.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_layer_test_sees_an_upward_import(tmp_path):
    """The walk is real: an import of a later stage from an earlier one is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lensfinder.ranking.rank import rank\n")
    assert "lensfinder.ranking.rank" in imports_of(bad)
    assert layer_of("lensfinder.ranking.rank") > layer_of("lensfinder.catalog.select")


# ----------------------------------------------------------------------------- rule -> script -> module -> page
def rules() -> dict[str, dict]:
    """Every rule of the workflow: its rule file, and its script or shell command."""
    found = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^ *rule (\w+):(.*?)(?=^ *rule \w+:|\Z)", text, re.S | re.M):
            body = m.group(2)
            script = re.search(r'script:\s*\n\s*"\.\./scripts/([\w]+)\.py"', body)
            shell = re.search(r"python -m (lensfinder[\w.]*)", body)
            found[m.group(1)] = {"file": smk.name, "script": script.group(1) if script else None,
                                 "shell_module": shell.group(1) if shell else None}
    return found


def rule_table() -> dict[str, list[str]]:
    """The rows of docs/reference/rules.md: rule -> [rule file, script, module, page]."""
    rows = {}
    for line in (ROOT / "docs" / "reference" / "rules.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"\w+", cells[0]) and cells[0] != "rule":
            rows[cells[0]] = cells[1:]
    return rows


def test_every_rule_is_in_the_docs_table_with_its_file_script_module_and_page():
    table, found = rule_table(), rules()
    assert set(table) == set(found), f"rules missing from docs/reference/rules.md: {set(found) - set(table)}; " \
                                     f"rows of no rule: {set(table) - set(found)}"
    for rule, info in found.items():
        smk, script, module, page = table[rule]
        assert smk == f"workflow/rules/{info['file']}", rule
        if info["script"]:
            assert script == f"workflow/scripts/{info['script']}.py", rule
            assert module.removeprefix("lensfinder.").replace(".", "/") and module in (
                ROOT / "workflow" / "scripts" / f"{info['script']}.py").read_text(), \
                f"rule {rule}: its script does not call {module}"
        else:
            assert module.startswith(info["shell_module"].rsplit(".", 1)[0]), rule
        assert module in MODULES, f"rule {rule}: {module} is no module"
        assert (ROOT / "docs" / page.split("#")[0]).is_file(), f"rule {rule}: no page {page}"
        # the module, or its stage's package, says which rule it serves
        package = PACKAGE / module.split(".")[1] / "__init__.py"
        docs = ast.get_docstring(ast.parse(MODULES[module].read_text())) or ""
        docs += ast.get_docstring(ast.parse(package.read_text())) or "" if package.exists() else ""
        assert f"``{rule}``" in docs, f"neither {module} nor its package's docstring names rule ``{rule}``"


@pytest.mark.parametrize("script", sorted((ROOT / "workflow" / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_scripts_stay_thin(script):
    lines = [ln for ln in script.read_text().splitlines() if ln.strip()]
    assert len(lines) <= 22, f"{script.name} has {len(lines)} lines: move the logic into the package"


def test_the_lock_pins_every_package_with_hashes_and_agrees_with_the_constraints_and_the_readme():
    """requirements.lock: each entry pinned with == and at least one SHA-256; every tested
    version in constraints.txt is the lock's; the README's set-up is what CI runs."""
    root = Path(__file__).resolve().parents[1]
    lock = (root / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", lock, re.M)
    pinned = {name.lower().replace("_", "-"): version for name, version, _ in entries}
    requirement_lines = [line for line in lock.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
    assert len(entries) == len(requirement_lines) > 150  # every requirement line is a hashed pin
    assert "setuptools" in pinned  # the build backend too: --no-build-isolation uses it
    for line in (root / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert pinned.get(name.lower().replace("_", "-")) == version, line
    readme = (root / "README.md").read_text()
    setup = re.search(r"## Set up \(one command\)\n\n```bash\n(.+)\n```", readme).group(1)
    assert "--require-hashes -r requirements.lock" in setup
    assert setup in (root / ".ci" / "run").read_text()
    # the rules' conda environment installs the same way (Snakemake runs the post-deploy script in it)
    deploy = (root / "envs" / "lensfinder.post-deploy.sh").read_text()
    for command in setup.split(" && ")[2:]:
        assert f"\n{command}\n" in deploy, command
    assert "pip:" not in (root / "envs" / "lensfinder.yaml").read_text()
