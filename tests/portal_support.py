"""Helpers of the portal tests and benchmark: a small real run, the server, headless chromium."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.catalog.select import SelectionConfig, select_sweep
from lensfinder.constants import KEY
from lensfinder.cutouts.extract import extract_sweep
from lensfinder.cutouts.shards import ShardSet
from lensfinder.survey.positions import desi_names
from lensfinder.survey.tree import SurveyTree

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,900"]


def make_run(survey_root: Path, files: dict, run_dir: Path) -> list[Path]:
    """A run directory as the workflow writes it, up to the cutouts: objects/ and
    cutouts/<sweep>/ for every sweep of the survey tree (select + cutouts, package level)."""
    manifests = []
    for sweep in files["sweeps"]:
        stem = Path(sweep).name.removesuffix(".fits")
        objects = run_dir / "objects" / f"{stem}.parquet"
        objects.parent.mkdir(parents=True, exist_ok=True)
        select_sweep(sweep, objects, run_dir / "objects" / f"{stem}.counts.csv", SelectionConfig(), progress=False)
        extract_sweep(objects, run_dir / "cutouts" / stem, SurveyTree(survey_root), progress=False)
        manifests.append(run_dir / "cutouts" / stem / "manifest.json")
    return manifests


def write_recommendations(run_dir: Path, n: int = 20, seed: int = 0, first=()) -> pd.DataFrame:
    """A recommendations table with rank.py's columns for n objects that have cutouts
    (the keys in ``first`` lead), scores drawn at random and sorted; Parquet, CSV and FITS."""
    rng = np.random.default_rng(seed)
    index = pd.concat([ShardSet(m).index for m in sorted(run_dir.glob("cutouts/*/manifest.json"))], ignore_index=True)
    keys = list(zip(*(index[k].tolist() for k in KEY)))
    lead = [keys.index(tuple(k)) for k in first]
    rest = [i for i in rng.permutation(len(index)) if i not in lead]
    rows = index.iloc[lead + rest[: n - len(lead)]].reset_index(drop=True)
    objects = pd.concat([pd.read_parquet(p) for p in run_dir.glob("objects/*.parquet")]).set_index(list(KEY))
    extra = objects.loc[list(zip(*(rows[k] for k in KEY))), ["MAG_G", "MAG_R", "SWEEP"]].reset_index(drop=True)
    scores = np.sort(rng.uniform(0.5, 1.0, (n, 2)), axis=0)[::-1]
    recs = pd.DataFrame({
        "RANK": np.arange(1, n + 1), "NAME": desi_names(rows.RA, rows.DEC), **{k: rows[k].astype(np.int64) for k in KEY},
        "RA": rows.RA, "DEC": rows.DEC, "TYPE": rows.TYPE, "REGION": rows.REGION, "MAG_G": extra.MAG_G,
        "MAG_R": extra.MAG_R, "MAG_Z": rows.MAG_Z, "SCORE_EFFICIENTNET": scores[:, 0], "SCORE_RESNET": scores[:, 1],
        "SCORE_MEAN": scores.mean(1), "SCORE_ENSEMBLE": scores.mean(1), "MERGED": "", "SWEEP": extra.SWEEP,
    })
    out = run_dir / "recommendations"
    out.mkdir(parents=True, exist_ok=True)
    recs.to_parquet(out / "recommendations.parquet", index=False)
    recs.to_csv(out / "recommendations.csv", index=False)
    return recs


class Server:
    """``lensfinder-inspect serve`` in a subprocess on a free port; ``url`` holds the token."""

    def __init__(self, candidates, db, *args, cwd=None, env=None, port=0):
        self.args = [sys.executable, "-m", "lensfinder.portal.cli", "serve", str(candidates), "--db", str(db),
                     "--port", str(port), *map(str, args)]
        self.cwd, self.env = cwd, env
        self.proc = None

    def start(self, timeout=60):
        """Start the server; ``graders`` maps each named grader to their URL."""
        self.log = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(self.args, cwd=self.cwd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env)
        self.graders = {}
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.log.seek(0)
                raise RuntimeError(f"lensfinder-inspect exited: {self.log.read()[-3000:]}")
            grader = re.match(r"grader (\S+): (http://\S+)", line)
            if grader:
                self.graders[grader.group(1)] = grader.group(2)
            m = re.search(r"open (http://\S+)/\?token=(\S+)", line)
            if m:
                self.base, self.token = m.group(1), m.group(2)
                self.port = int(self.base.rsplit(":", 1)[1])
                self.url = f"{self.base}/?token={self.token}"
                self._wait_ready(deadline)
                return self
        raise RuntimeError("lensfinder-inspect did not print its URL")

    def _wait_ready(self, deadline):
        while time.time() < deadline:
            try:
                self.get("/api/progress")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise RuntimeError("lensfinder-inspect does not answer")

    def request(self, path, data=None, token=True, headers=None, method=None):
        """(status, body bytes); the token goes in the X-Token header unless token=False/str."""
        hdrs = dict(headers or {})
        if token is True:
            hdrs["X-Token"] = self.token
        elif isinstance(token, str):
            hdrs["X-Token"] = token
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, headers=hdrs, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get(self, path, **kw):
        status, body = self.request(path, **kw)
        if status != 200:
            raise AssertionError(f"GET {path}: HTTP {status} {body[:300]!r}")
        return body

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self):
        self.kill(signal.SIGTERM)


def chrome(download_dir=None):
    """Headless Debian chromium through chromedriver (selenium), with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver_path)):
        raise RuntimeError("Debian's chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="lf-chromium-")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.lf_profile = profile
    return driver


def close_chrome(driver):
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "lf_profile", ""), ignore_errors=True)
