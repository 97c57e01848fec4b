"""The inspection portal: consensus, access control, and two inspectors grading in headless chromium."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import urllib.error
import urllib.request

import numpy as np
import pytest
import yaml
from conftest import unavailable
from portal_support import Server, chrome, close_chrome, make_run, write_recommendations

from lensfinder.errors import LensfinderError
from lensfinder.portal.consensus import consensus, consensus_grade
from lensfinder.portal.database import GradesDB
from lensfinder.portal.images import ImageSource


@pytest.fixture(scope="module")
def small_run(tiny_mock, tmp_path_factory):
    """results/tiny/ with real shards of the tiny mock and a 20-candidate recommendations table,
    and a config naming the survey tree (for the context view)."""
    root, _, files = tiny_mock
    base = tmp_path_factory.mktemp("portal")
    run_dir = base / "results" / "tiny"
    make_run(root, files, run_dir)
    recs = write_recommendations(run_dir, n=20)
    config = base / "config.yaml"
    config.write_text(yaml.safe_dump({"run": "tiny", "survey": {"source": "tree", "root": str(root),
                                                                 "release": "dr10", "region": "south"}}))
    return run_dir, recs, config


def start_server(small_run, db, *extra):
    run_dir, _, config = small_run
    return Server(run_dir / "recommendations" / "recommendations.parquet", db, "--config", config, *extra).start()


def KEY0(small_run):  # noqa: N802 - the first candidate's key, as the page sends it
    recs = small_run[1]
    return [int(recs.RELEASE[0]), int(recs.BRICKID[0]), int(recs.OBJID[0])]


def browser_or_fail():
    try:
        return chrome()
    except Exception as err:  # noqa: BLE001 - any start failure: fail in CI, else skip with the reason
        unavailable(f"headless chromium could not start: {err}")


# --- consensus ----------------------------------------------------------------------------

@pytest.mark.parametrize("grades, letter", [
    ([4, 3], "A"),        # mean 3.5: A at the boundary
    ([4, 3, 3], "B"),     # 3.33
    ([3, 3], "B"),        # 3.0: B at the boundary
    ([4, 2, 3, 2], "C"),  # 2.75
    ([3, 2], "C"),        # 2.5
    ([2, 2], "C"),        # 2.0: C at the boundary
    ([2, 1], "D"),        # 1.5
    ([0, 0], "D"),
    ([], ""),
])
def test_consensus_at_its_boundaries(grades, letter):
    assert consensus(grades).grade == letter


def test_consensus_thresholds_and_settling():
    assert [consensus_grade(m) for m in (4.0, 3.5, np.nextafter(3.5, 0), 3.0, np.nextafter(3.0, 0), 2.0,
                                         np.nextafter(2.0, 0), 0.0)] == ["A", "A", "B", "B", "C", "C", "D", "D"]
    c = consensus([4, 1], min_graders=2)
    assert (c.n_graders, c.mean, c.difference, c.grade, c.settled) == (2, 2.5, 3, "C", True)
    assert not consensus([4], min_graders=2).settled and consensus([4], min_graders=1).settled


# --- access control -----------------------------------------------------------------------

def test_token_required_and_path_traversal_refused(small_run, tmp_path):
    server = start_server(small_run, tmp_path / "grades.sqlite")
    try:
        routes = ["/api/candidates", "/api/candidates/0", "/api/candidates/0/image.png?view=rgb", "/api/progress",
                  "/api/export.csv", "/", "/static/portal.js"]
        for path in routes:
            assert server.request(path, token=False)[0] == 401, path
            status, body = server.request(path, token="wrong-" + server.token)
            assert status == 401, path
        assert b"access token" in server.request("/api/candidates", token=False)[1]
        grade = json.dumps({"key": KEY0(small_run), "inspector": "eve", "grade": 4}).encode()
        assert server.request("/api/grades", data=grade, token=False)[0] == 401
        assert json.loads(server.get("/api/progress"))["inspectors"] == {}
        # the other ways to give the token
        assert server.request("/api/progress", token=False, headers={"Authorization": f"Bearer {server.token}"})[0] == 200
        assert server.request(f"/api/progress?token={server.token}", token=False)[0] == 200
        cookie = {"Cookie": f"lensfinder_token_{server.port}={server.token}"}
        assert server.request("/api/progress", token=False, headers=cookie)[0] == 200
        # the cookie is per port: one for another portal on this host opens nothing here
        other = {"Cookie": f"lensfinder_token_{server.port + 1}={server.token}"}
        assert server.request("/api/progress", token=False, headers=other)[0] == 401
        # path traversal: nothing outside the package's static files or the run's shards is served
        for path in ["/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static/..%2fapp.py",
                     "/static/%2e%2e/app.py", "/api/candidates/..%2f..%2fetc%2fpasswd/image.png",
                     "/api/candidates/0/image.png?view=../../etc/passwd", "/api/candidates/-1/image.png",
                     "/..%2f..%2fetc%2fpasswd", "/static//etc/passwd"]:
            status, body = server.request(path)
            assert status in (400, 404), (path, status)
            assert b"root:" not in body and b"import" not in body, path
        # clear 4xx answers
        post = lambda d: server.request("/api/grades", data=json.dumps(d).encode())  # noqa: E731
        status, body = post({"key": [1, 2, 3], "inspector": "eve", "grade": 3})
        assert status == 409 and b"not in batch" in body
        status, body = post({"key": KEY0(small_run), "inspector": "eve", "grade": 5})
        assert status == 422 and b"not one of 0-4" in body
        status, body = post({"key": KEY0(small_run), "grade": 3})
        assert status == 400 and b"inspector is required" in body
        status, body = post({"candidate": 0, "inspector": "eve", "grade": 3})  # a row number is not a key
        assert status == 400 and b"key is required" in body
        assert server.request("/api/candidates/0/image.png?view=w1")[0] == 400
        assert server.get("/api/candidates/0/image.png?view=context")[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        server.stop()


def test_shards_outside_the_run_are_refused(small_run, tmp_path):
    run_dir, _, _ = small_run
    elsewhere = tmp_path / "results" / "other"
    (elsewhere / "cutouts").mkdir(parents=True)
    outside = next(run_dir.glob("cutouts/*"))
    os.symlink(outside, elsewhere / "cutouts" / outside.name)
    with pytest.raises(LensfinderError, match="outside the run directory"):
        ImageSource(elsewhere)


# --- the page in a real browser -------------------------------------------------------------

GRADES = {"ann": [4, 4, 3, 3, 2, 2, 1, 1, 0, 0], "bob": [3, 4, 4, 3, 2, 1, 1, 0, 0, 4]}


def _open_as(driver, server, name):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(server.url)
    box = driver.find_element(By.ID, "inspector")
    box.clear()
    box.send_keys(name, Keys.ENTER)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return window.lensfinder.ready && window.lensfinder.state.inspector === arguments[0]"
        " && document.body.dataset.shown !== undefined", name))


def _shown(driver):
    return driver.execute_script("return [document.body.dataset.shown, document.getElementById('mine').dataset.grade,"
                                 " document.getElementById('progress-text').textContent]")


def _press(driver, key):
    """Press a key on the page and wait until the next candidate is fully shown."""
    from selenium.webdriver.support.ui import WebDriverWait

    n = driver.execute_script("return window.lensfinder.timings.length")
    driver.find_element("tag name", "body").send_keys(key)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.lensfinder.timings.length") > n)


def test_two_inspectors_grade_with_the_keyboard_reload_and_survive_sigkill(small_run, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir, recs, _ = small_run
    db = tmp_path / "grades.sqlite"
    server = start_server(small_run, db)
    driver = browser_or_fail()
    try:
        for name, grades in GRADES.items():
            _open_as(driver, server, name)
            assert _shown(driver)[0] == "0"  # both start at the top: nothing is settled yet
            for g in grades:
                _press(driver, str(g))
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.lensfinder.state.pending") == 0)
            assert "NOT SAVED" not in driver.find_element("id", "status").text
        # reload as bob: the grades come back from the server; resume at the first ungraded
        driver.refresh()
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return window.lensfinder.ready && document.body.dataset.shown !== undefined"))
        shown, mine, progress = _shown(driver)
        assert shown == "10" and mine == "" and progress == "bob: 10 / 20 graded"
        for k in range(9, -1, -1):  # p walks back through bob's ten grades
            _press(driver, "p")
            shown, mine, _ = _shown(driver)
            assert (shown, mine) == (str(k), str(GRADES["bob"][k]))
        # ann sees her own grades after a reload too
        _open_as(driver, server, "ann")
        assert _shown(driver)[0] == "10"
        _press(driver, "p")
        assert _shown(driver)[:2] == ["9", "0"]
    finally:
        close_chrome(driver)
        server.kill(signal.SIGKILL)
    assert server.proc.returncode == -signal.SIGKILL
    # a fresh server on the same database: every grade is there, with the right consensus
    server = start_server(small_run, db)
    try:
        rows = list(csv.DictReader(io.StringIO(server.get("/api/export.csv").decode())))
    finally:
        server.stop()
    assert len(rows) == 20 and [r["NAME"] for r in rows] == list(recs.NAME)
    assert sum(r["grade_ann"] != "" for r in rows) + sum(r["grade_bob"] != "" for r in rows) == 20
    for i, row in enumerate(rows[:10]):
        a, b = GRADES["ann"][i], GRADES["bob"][i]
        assert (int(row["grade_ann"]), int(row["grade_bob"])) == (a, b)
        assert int(row["n_graders"]) == 2 and row["settled"] == "1"
        assert float(row["mean_grade"]) == pytest.approx((a + b) / 2)
        assert int(row["difference"]) == abs(a - b)
        assert row["consensus"] == consensus_grade((a + b) / 2)
    assert [r["consensus"] for r in rows[:10]] == ["A", "A", "A", "B", "C", "D", "D", "D", "D", "C"]
    assert all(r["n_graders"] == "0" and r["consensus"] == "" for r in rows[10:])
    # the database itself holds them too (what the inspection rule reads)
    assert len(GradesDB(db).grades("tiny/recommendations")) == 20


def test_settled_candidates_go_to_the_back_of_the_queue(small_run, tmp_path):
    db = tmp_path / "grades.sqlite"
    grades = GradesDB(db)
    run_dir, recs, _ = small_run
    for name in ("ann", "bob"):
        for i in (0, 2):
            grades.set_grade("tiny/recommendations", (recs.RELEASE[i], recs.BRICKID[i], recs.OBJID[i]), name, 3)
    grades.set_grade("tiny/recommendations", (recs.RELEASE[1], recs.BRICKID[1], recs.OBJID[1]), "ann", 3)
    grades.close()
    server = start_server(small_run, db)
    try:
        carl = json.loads(server.get("/api/candidates?inspector=carl"))
        ann = json.loads(server.get("/api/candidates?inspector=ann"))
    finally:
        server.stop()
    assert carl["queue"] == [1, *range(3, 20), 0, 2]  # settled by two others: last
    assert ann["queue"] == list(range(20))  # her own grades stay where they are
    assert carl["candidates"][0]["consensus"] == "B" and carl["candidates"][0]["settled"]
    assert carl["progress"]["inspectors"] == {"ann": 3, "bob": 2}


# --- what a hostile local page, a careless client or a mistyped name can do ------------------


def test_forged_oversized_and_formula_requests_are_refused_and_every_answer_is_hardened(small_run, tmp_path):
    db = tmp_path / "grades.sqlite"
    server = start_server(small_run, db)
    key = KEY0(small_run)
    cookie = f"lensfinder_token_{server.port}={server.token}"
    grade = json.dumps({"key": key, "inspector": "mallory", "grade": 4}).encode()
    try:
        # a page on another local port posts a "simple" request (no preflight) with the cookie
        status, body = server.request("/api/grades", data=grade, token=False, headers={
            "Cookie": cookie, "Content-Type": "text/plain", "Origin": "http://127.0.0.1:8888"})
        assert status == 403 and b"X-Token header" in body
        # with the token in the header but from a foreign origin
        status, body = server.request("/api/grades", data=grade, headers={"Origin": "http://127.0.0.1:8888"})
        assert status == 403 and b"origin" in body
        # the right origin but not JSON
        own = {"Origin": server.base, "Content-Type": "text/plain"}
        assert server.request("/api/grades", data=grade, headers=own)[0] == 415
        # a body over 16 KiB, declared or chunked, and JSON nested past the parser's depth
        big = json.dumps({"key": key, "inspector": "eve", "grade": 1, "comment": "x" * 20000}).encode()
        assert server.request("/api/grades", data=big)[0] == 413
        nested = ("[" * 5000 + "]" * 5000).encode()
        status, body = server.request("/api/grades", data=nested)
        assert status == 400 and b"must be JSON" in body
        # a comment over 2,000 characters is refused, never cut
        status, body = server.request("/api/grades", data=json.dumps(
            {"key": key, "inspector": "eve", "grade": 1, "comment": "y" * 2001}).encode())
        assert status == 422 and b"2001 characters" in body
        # an id that Python calls a digit but is not one
        assert server.request("/api/candidates/%C2%B2/image.png")[0] == 404
        assert server.request("/api/candidates/%C2%B2")[0] == 404
        assert json.loads(server.get("/api/progress"))["inspectors"] == {}  # nothing above was saved
        # Ann and "ann " are one grader; a formula in a comment is exported as text
        for name, g in (("Ann", 3), ("ann ", 4)):
            status, body = server.request("/api/grades", data=json.dumps(
                {"key": key, "inspector": name, "grade": g, "comment": '=HYPERLINK("http://x","y")'}).encode(),
                headers={"Origin": server.base})
            assert status == 200, body
        assert json.loads(server.get("/api/progress"))["inspectors"] == {"ann": 1}
        assert json.loads(server.get("/api/candidates?inspector=ANN"))["inspector"] == "ann"
        row = next(csv.DictReader(io.StringIO(server.get("/api/export.csv").decode())))
        assert row["grade_ann"] == "4" and row["comment_ann"] == '\'=HYPERLINK("http://x","y")'
        # security headers on the page, the API, a static file and a refusal alike
        for path, token in (("/", True), ("/api/progress", True), ("/static/portal.js", True), ("/api/progress", False)):
            req = urllib.request.Request(server.base + path, headers={"X-Token": server.token} if token else {})
            try:
                headers = urllib.request.urlopen(req, timeout=30).headers
            except urllib.error.HTTPError as err:
                headers = err.headers
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
            assert "script-src 'self'" in headers["Content-Security-Policy"], path
            assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer", path
            assert headers["X-Content-Type-Options"] == "nosniff", path
        page = server.get("/").decode()
        assert "<script>" not in page  # no inline script: the policy forbids it
    finally:
        server.stop()
    graded = GradesDB(db).grades("tiny/recommendations")
    assert [(g["inspector"], g["grade"]) for g in graded] == [("ann", 4)]
    assert graded[0]["comment"] == '=HYPERLINK("http://x","y")'  # stored as given; made safe on export


def test_named_graders_change_only_their_own_grades(small_run, tmp_path):
    db = tmp_path / "grades.sqlite"
    server = start_server(small_run, db, "--graders", "Ann,bob")
    key = KEY0(small_run)
    try:
        assert set(server.graders) == {"ann", "bob"}
        ann = server.graders["ann"].split("token=")[1]
        bob = server.graders["bob"].split("token=")[1]
        assert len({ann, bob, server.token}) == 3
        post = lambda body, token: server.request("/api/grades", data=json.dumps(body).encode(), token=token)  # noqa: E731
        assert post({"key": key, "grade": 4}, ann)[0] == 200  # the token says who grades
        status, body = post({"key": key, "inspector": "ann", "grade": 0}, bob)
        assert status == 403 and b"belongs to grader 'bob'" in body
        status, body = post({"key": key, "inspector": "carl", "grade": 0}, server.token)
        assert status == 403 and b"own URL" in body
        assert post({"key": key, "inspector": "bob", "grade": 2}, bob)[0] == 200
        assert json.loads(server.get("/api/candidates", token=ann))["inspector"] == "ann"
        assert server.request("/api/candidates?inspector=bob", token=ann)[0] == 403
        rows = list(csv.DictReader(io.StringIO(server.get("/api/export.csv").decode())))  # the portal token reads
        assert (rows[0]["grade_ann"], rows[0]["grade_bob"]) == ("4", "2")
    finally:
        server.stop()
    # the same portal token gives the same grader URLs after a restart
    env = {"LENSFINDER_INSPECT_TOKEN": "fixed-token-for-the-test"}
    urls = []
    for _ in range(2):
        run_dir, _, config = small_run
        s = Server(run_dir / "recommendations" / "recommendations.parquet", db, "--config", config,
                   "--graders", "ann", env=env).start()
        urls.append(s.graders["ann"].split("token=")[1])
        s.stop()
    assert urls[0] == urls[1]


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("::", False), ("0.0.0.0", False)])
def test_only_loopback_addresses_bind_without_a_warning(host, loopback):
    from lensfinder.portal.cli import is_loopback

    assert is_loopback(host) is loopback


def test_grades_survive_two_server_crashes_a_new_token_and_a_reranked_table(small_run, tmp_path):
    """The page keeps every grade in its outbox until the server commits it: grades given
    while the server is down are sent when it is back; after a restart with a new token and a
    re-ranked table, the page opened at the new URL sends what was left, by key."""
    import socket

    from selenium.webdriver.support.ui import WebDriverWait

    run_dir, recs, config = small_run
    reranked = run_dir / "recommendations" / "reranked.parquet"
    recs.iloc[::-1].reset_index(drop=True).to_parquet(reranked, index=False)
    db = tmp_path / "grades.sqlite"
    with socket.socket() as sock:  # a free port, kept across the restarts
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def serve(table, token):
        return Server(table, db, "--config", config, "--batch", "tiny/recommendations", port=port,
                      env={"LENSFINDER_INSPECT_TOKEN": token}).start()

    def saved():
        g = GradesDB(db, read_only=True)
        try:
            return {(r["key"], r["grade"]) for r in g.grades("tiny/recommendations")}
        finally:
            g.close()

    def banner(driver):
        return driver.execute_script("const b = document.getElementById('outbox'); return b.hidden ? '' : b.textContent")

    key = lambda i: tuple(int(recs[k][i]) for k in ("RELEASE", "BRICKID", "OBJID"))  # noqa: E731
    server = serve(run_dir / "recommendations" / "recommendations.parquet", "first-token")
    driver = browser_or_fail()
    try:
        _open_as(driver, server, "ann")
        for g in (4, 3, 2):
            _press(driver, str(g))
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return window.lensfinder.state.pending === 0 && window.lensfinder.state.prefetching === 0"))
        server.kill(signal.SIGKILL)  # crash 1: grades given now wait in the outbox
        for g in (1, 0, 4):
            _press(driver, str(g))
        WebDriverWait(driver, 30).until(lambda d: "NOT SAVED" in banner(d))
        assert driver.execute_script("return window.lensfinder.state.pending") == 3
        server = serve(run_dir / "recommendations" / "recommendations.parquet", "first-token")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.lensfinder.state.pending") == 0)
        assert banner(driver) == ""
        assert saved() == {(key(i), g) for i, g in enumerate((4, 3, 2, 1, 0, 4))}
        # the page fetches again the images it could not preload while the server was away
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.lensfinder.state.prefetching") == 0)
        # a grade changed while the first is still in flight (the server hangs): the newer one wins
        # and nothing behind it in the queue is dropped
        server.proc.send_signal(signal.SIGSTOP)
        _press(driver, "3")
        _press(driver, "p")
        _press(driver, "1")
        assert driver.execute_script("return window.lensfinder.state.pending") == 1
        server.proc.send_signal(signal.SIGCONT)
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.lensfinder.state.pending") == 0)
        assert saved() == {(key(i), g) for i, g in enumerate((4, 3, 2, 1, 0, 4, 1))}
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.lensfinder.state.prefetching") == 0)
        server.kill(signal.SIGKILL)  # crash 2: back with a new token and the table re-ranked
        for g in (3, 3):
            _press(driver, str(g))
        server = serve(reranked, "second-token")
        WebDriverWait(driver, 60).until(lambda d: "does not accept this page's token" in banner(d))
        assert driver.execute_script("return window.lensfinder.state.pending") == 2
        driver.get(server.url)  # the new URL: the outbox is still in this browser
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return window.lensfinder.ready && window.lensfinder.state.pending === 0"))
        assert banner(driver) == ""
    finally:
        close_chrome(driver)
        server.stop()
    # every grade on the object it was given to, although the ids changed with the ranking
    assert saved() == {(key(i), g) for i, g in enumerate((4, 3, 2, 1, 0, 4, 1, 3, 3))}


def test_grades_stored_under_an_older_spelling_count_as_one_grader(tmp_path):
    """Rows written before names were made canonical ("Ann") and after ("ann") are one
    grader: the later grade of an object stands, for the portal and the inspection rule."""
    import sqlite3

    db = GradesDB(tmp_path / "grades.sqlite")
    db.close()
    with sqlite3.connect(tmp_path / "grades.sqlite") as conn:
        conn.execute("INSERT INTO grades VALUES ('b', 1, 2, 3, 'Ann', 4, 'old', '2026-01-01T00:00:00+00:00')")
        conn.execute("INSERT INTO grades VALUES ('b', 1, 2, 4, 'Ann', 2, '', '2026-01-01T00:00:00+00:00')")
    db = GradesDB(tmp_path / "grades.sqlite")
    db.set_grade("b", (1, 2, 3), "ann", 1, "new")
    rows = db.grades("b")
    db.close()
    assert [(r["key"], r["inspector"], r["grade"], r["comment"]) for r in rows] == [
        ((1, 2, 3), "ann", 1, "new"), ((1, 2, 4), "ann", 2, "")]
