"""lensfinder-plan on a synthetic DR10-sized tree: its job counts are Snakemake's own under
the SLURM profile, one GPU inference job per 50 sweeps and model, and its sizes follow the
sweep headers."""

import math
import re
import subprocess
import sys

import fitsio
import numpy as np
import pytest
import yaml
from conftest import REPO, default_config, make_workdir, run_snakemake

pytestmark = pytest.mark.workflow
N_SWEEPS, ROWS = 1436, 7


def make_sweep_tree(root, n=N_SWEEPS, rows=ROWS, release="dr10", region="south", version="10.1"):
    """A tree holding n sweep files (5 x 5 deg names, as DR10's) of ``rows`` rows each: only
    what a dry run and a plan read (names and headers)."""
    sweep_dir = root / release / region / "sweep" / version
    sweep_dir.mkdir(parents=True)
    made = 0
    for dec in range(-90, 90, 5):
        for ra in range(0, 360, 5):
            if made == n:
                return root

            def edge(r, d):
                return f"{r:03d}{'m' if d < 0 else 'p'}{abs(d):03d}"

            name = f"sweep-{edge(ra, dec)}-{edge(ra + 5, dec + 5)}.fits"
            fitsio.write(str(sweep_dir / name), np.zeros(rows, dtype=[("OBJID", "i4")]), clobber=True)
            made += 1
    return root


def _table(text):
    rows = {}
    for m in re.finditer(r"^\| `(\w+)` \| ([\d,]+) \| ([\d,]+) \|", text, flags=re.M):
        rows[m.group(1)] = (int(m.group(2).replace(",", "")), int(m.group(3).replace(",", "")))
    return rows


def test_plan_on_a_dr10_sized_tree_counts_what_snakemake_would_submit(tmp_path):
    root = make_sweep_tree(tmp_path / "legacysurvey")
    work = make_workdir(tmp_path, default_config())  # a checkout: --configfile extends the default
    cfg = yaml.safe_load((REPO / "config/dr10-south-nersc.yaml").read_text())
    cfg["survey"]["root"] = str(root)
    # the site's own catalogue files are placeholders there: keep the packaged lenscat only
    cfg["lens_catalogs"] = [c for c in cfg["lens_catalogs"] if c.get("source") == "lenscat"]
    (work / "config/dr10.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "lensfinder.plan", "--configfile", "config/dr10.yaml",
                           "--profile", "profiles/slurm"], cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    dry = run_snakemake(work, "-n", "--profile", "profiles/slurm", "--configfile", "config/dr10.yaml")
    stats = dry.stdout.split("Job stats:")[1].split("\n\n")[0]
    expected = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, flags=re.M)
                if m.group(1) not in ("job", "all", "total")}
    table = _table(text)
    assert {rule: jobs for rule, (jobs, _) in table.items()} == expected
    # one GPU inference job per 50 sweeps and model (infer.sweeps_per_job: 50), and one
    # shortlist job per batch; select and cutouts go 20 sweeps to a SLURM job
    assert expected["infer"] == table["infer"][1] == 2 * math.ceil(N_SWEEPS / 50) == 58
    assert expected["shortlist"] == table["shortlist"][1] == 29
    assert expected["embed"] == table["embed"][1] == 29  # the representations, batched the same way
    assert table["select"][1] == math.ceil(N_SWEEPS / 20) and table["cutouts"][1] == 0
    assert f"| sweeps | {N_SWEEPS:,} (" in text and f"| sweep rows | {N_SWEEPS * ROWS:,} |" in text
    per_sweep = 43.5e6 / 1436
    assert f"| selected objects | {N_SWEEPS * per_sweep:,.0f} (" in text
    shards_tb = N_SWEEPS * per_sweep * 3 * 101 * 101 * 2 / 1e12
    assert f"| disk: cutout shards (fp16, 101 px) | {shards_tb:,.2f} TB |" in text
    # the gathering stages' memory against the profile's requests: both fit at DR10's size
    rank_row = re.search(r"^\| memory: `rank` merges the shortlists \(~([\d,]+) rows.*?~([\d.]+) GB needed; the profile "
                         r"asks (\d+) GB \|$", text, flags=re.M)
    assert int(rank_row.group(1).replace(",", "")) == N_SWEEPS * 1000
    assert float(rank_row.group(2)) < 4 < int(rank_row.group(3))
    ts_row = re.search(r"^\| memory: `trainset` draws .*?~([\d.]+) GB needed; the profile asks (\d+) GB \|$", text,
                       flags=re.M)
    assert float(ts_row.group(1)) < 8 < int(ts_row.group(2))
    assert "too little" not in text
