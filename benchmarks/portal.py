"""Inspection portal: grade key -> next candidate fully shown, in headless chromium; images/s.

    python benchmarks/portal.py            # --candidates 200 --pause 0.3

Writes a 2-brick mock survey, selects and cuts its objects (a real run directory), makes a
recommendations table of N candidates, starts ``lensfinder-inspect serve`` and grades every
candidate with the keyboard in headless chromium, pausing ``--pause`` s on each (a person
takes about 1 s). The page itself times each key press to the moment all five images of the
next candidate are decoded and painted (``window.lensfinder.timings``). Then it times the
server alone: PNGs per second rendered from the shards (cold) and from its LRU cache (warm).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from portal_support import Server, chrome, close_chrome, make_run, write_recommendations  # noqa: E402

from lensfinder.mock.layout import MockConfig  # noqa: E402
from lensfinder.mock.write import write_mock_survey

VIEWS = ("rgb", "g", "r", "z", "context")


def fetch_all(server, ids, workers=4) -> float:
    """Images per second for every view of the ids, ``workers`` requests in flight."""
    def one(args):
        i, view = args
        req = urllib.request.Request(f"{server.base}/api/candidates/{i}/image.png?view={view}",
                                     headers={"X-Token": server.token})
        with urllib.request.urlopen(req) as resp:
            return len(resp.read())
    jobs = [(i, v) for i in ids for v in VIEWS]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, jobs))
    return len(jobs) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--pause", type=float, default=0.3, help="seconds a grader looks at each candidate")
    ap.add_argument("--prefetch", type=int, default=4)
    args = ap.parse_args()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "survey"
        files = write_mock_survey(root, MockConfig(n_bricks_ra=2, n_bricks_dec=1, galaxies=1500, stars=100, seed=5),
                                  progress=False)
        run_dir = tmp / "results" / "bench"
        make_run(root, files, run_dir)
        write_recommendations(run_dir, n=args.candidates)
        (tmp / "config.yaml").write_text(yaml.safe_dump({"survey": {"source": "tree", "root": str(root),
                                                                     "release": "dr10", "region": "south"}}))
        server = Server(run_dir / "recommendations/recommendations.parquet", tmp / "grades.sqlite",
                        "--config", tmp / "config.yaml", "--prefetch", args.prefetch).start()
        driver = chrome()
        try:
            driver.get(server.url)
            driver.find_element(By.ID, "inspector").send_keys("bench", Keys.ENTER)
            WebDriverWait(driver, 120).until(lambda d: d.execute_script(
                "return window.lensfinder.ready && window.lensfinder.timings.length > 0"))
            body = driver.find_element(By.TAG_NAME, "body")
            t0 = time.perf_counter()
            for k in range(args.candidates - 1):
                time.sleep(args.pause)
                body.send_keys(str(k % 5))
                WebDriverWait(driver, 60).until(lambda d, n=k + 2: d.execute_script(
                    "return window.lensfinder.timings.length") >= n)
            wall = time.perf_counter() - t0
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.lensfinder.state.pending") == 0)
            timings = np.array(driver.execute_script("return window.lensfinder.timings")[1:])
        finally:
            close_chrome(driver)
        graded = json.loads(server.get("/api/progress"))["inspectors"].get("bench", 0)
        server.stop()
        # the server alone: a fresh process (cold cache), then the same requests again (warm)
        server = Server(run_dir / "recommendations/recommendations.parquet", tmp / "grades2.sqlite",
                        "--config", tmp / "config.yaml").start()
        ids = list(range(args.candidates))
        cold = fetch_all(server, ids)
        warm = fetch_all(server, ids)
        server.stop()
    print(f"grade key -> next candidate fully shown ({len(timings)} candidates, pause {args.pause} s, "
          f"prefetch {args.prefetch}): median {np.median(timings):.1f} ms, p95 {np.percentile(timings, 95):.1f} ms, "
          f"max {timings.max():.1f} ms; {graded} grades saved; {len(timings) / wall:.2f} candidates/s with the pause")
    print(f"images served: {cold:.0f}/s rendered from shards and bricks (cold, 5 views x {args.candidates}), "
          f"{warm:.0f}/s from the LRU cache (4 requests in flight)")


if __name__ == "__main__":
    main()
