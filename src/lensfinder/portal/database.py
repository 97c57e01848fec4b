"""The grades database: one SQLite file, write-ahead log, every grade committed at once.

Table ``grades``: one row per (batch, RELEASE, BRICKID, OBJID, inspector) with the grade
(0-4, see ``consensus``), an optional comment and the UTC time of the last change. Grades
are keyed by the object, never by a row number, so a re-ranked or re-ordered candidate
table keeps its grades. ``batch`` separates gradings of different tables (e.g. the
recommendations and a training set's review table) in one file.

WAL mode with ``synchronous=FULL``: :meth:`GradesDB.set_grade` returns only after the
commit reached the disk, so a killed server (even SIGKILL) loses no grade it confirmed.
With WAL a commit lands in ``<file>-wal`` and the main file changes only at a checkpoint,
so the file's time says nothing of new grades: the ``inspection`` rule therefore takes
``grades_fingerprint`` (a hash of the batch's grades) as a parameter and re-runs whenever
it changes. Readers (``read_grades``) open the file read-only. WAL needs every process on
one host (its shared memory): serve and run ``inspection`` on the same machine, or export
(``/api/export.csv``) to move grades between hosts.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from lensfinder.errors import LensfinderError
from lensfinder.portal.consensus import GRADES

SCHEMA_VERSION = "1"
INSPECTOR_RE = re.compile(r"^[a-z0-9][a-z0-9_.@ -]{0,63}$")
MAX_COMMENT = 2000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS grades (
    batch TEXT NOT NULL,
    release INTEGER NOT NULL,
    brickid INTEGER NOT NULL,
    objid INTEGER NOT NULL,
    inspector TEXT NOT NULL,
    grade INTEGER NOT NULL CHECK (grade BETWEEN 0 AND 4),
    comment TEXT NOT NULL DEFAULT '',
    graded_at TEXT NOT NULL,
    PRIMARY KEY (batch, release, brickid, objid, inspector)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def canonical_name(name: str) -> str:
    """Lower case, runs of spaces as one: ``Ann`` and ``ann `` are one grader."""
    return " ".join(name.split()).lower()


def check_inspector(name) -> str:
    """The inspector's canonical name (``canonical_name``); a ValueError says what is allowed."""
    name = canonical_name(name) if isinstance(name, str) else ""
    if not name:
        raise ValueError("inspector is required: give your name (letters, digits, space, _ . @ -)")
    if not INSPECTOR_RE.match(name):
        raise ValueError(f"inspector {name[:70]!r} is not allowed: use 1-64 letters, digits, space, _ . @ -, "
                         "starting with a letter or digit")
    return name


def check_comment(comment) -> str:
    """The comment, or a ValueError when it is not a string or is over MAX_COMMENT characters
    (refused, never cut: a grader must know what was kept)."""
    comment = "" if comment is None else comment
    if not isinstance(comment, str):
        raise ValueError("comment must be a string")
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment has {len(comment)} characters, over the {MAX_COMMENT} allowed: shorten it")
    return comment


def check_grade(grade) -> int:
    if isinstance(grade, bool) or not isinstance(grade, (int, str)) or str(grade).strip() not in {str(g) for g in GRADES}:
        raise ValueError(f"grade {grade!r} is not one of 0-4 (4 certain lens, 3 probable, 2 possible, 1 unlikely, 0 not a lens)")
    return int(grade)


class GradesDB:
    """Thread-safe access to one grades file (one connection, serialised by a lock)."""

    def __init__(self, path, read_only: bool = False):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise LensfinderError(f"grades database {self.path} is a directory: give a file name, e.g. grades.sqlite")
        try:
            if read_only:  # a reader changes nothing: no journal mode, no schema
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                             check_same_thread=False, isolation_level=None)
                self._conn.execute("PRAGMA busy_timeout=10000")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA busy_timeout=10000")
                self._conn.executescript(_SCHEMA)
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as err:
            raise LensfinderError(f"grades database {self.path} cannot be opened ({err}): is it an SQLite file?") from err
        self._lock = threading.Lock()

    def close(self):
        with self._lock:
            self._conn.close()

    def set_grade(self, batch: str, key, inspector: str, grade: int, comment: str = "") -> str:
        """Insert or replace one inspector's grade of one object; committed on return."""
        inspector, grade = check_inspector(inspector), check_grade(grade)
        comment = check_comment(comment)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        release, brickid, objid = (int(v) for v in key)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO grades VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (batch, release, brickid, objid, inspector)"
                    " DO UPDATE SET grade = excluded.grade, comment = excluded.comment, graded_at = excluded.graded_at",
                    (batch, release, brickid, objid, inspector, grade, comment, now))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return now

    def grades(self, batch: str) -> list[dict]:
        """Every grade of a batch: dicts with key, inspector, grade, comment, graded_at.
        Names written before they were made canonical (``Ann``) count as their canonical
        form (``ann``); where both graded one object, the later grade stands."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT release, brickid, objid, inspector, grade, comment, graded_at FROM grades WHERE batch = ?"
                " ORDER BY release, brickid, objid, graded_at, rowid", (batch,)).fetchall()
        latest = {}
        for r in rows:  # in time order per object: a later grade replaces an earlier one
            latest[(r[0], r[1], r[2], canonical_name(r[3]))] = r
        return [{"key": (r[0], r[1], r[2]), "inspector": name, "grade": r[4], "comment": r[5], "graded_at": r[6]}
                for (_, _, _, name), r in sorted(latest.items(), key=lambda kv: kv[0])]

    def batches(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT DISTINCT batch FROM grades ORDER BY batch")]


def read_grades(path, batch: str) -> list[dict]:
    """The grades of one batch in an existing database file (for the inspection rule)."""
    path = Path(path)
    if not path.is_file():
        raise LensfinderError(f"grades database {path} does not exist: grade with `lensfinder-inspect serve` first")
    db = GradesDB(path, read_only=True)
    try:
        rows = db.grades(batch)
        if not rows:
            known = db.batches()
            raise LensfinderError(f"grades database {path} holds no grade of batch {batch!r} (batches: {known}): "
                                  "set inspection.batch to the batch you graded")
        return rows
    finally:
        db.close()


def grades_fingerprint(path, batch: str) -> str:
    """A hash of every grade of ``batch`` in the file (its WAL included), or "absent" when
    there is no such file: the ``inspection`` rule's parameter, so that grading more re-runs it."""
    import hashlib
    import json

    if not Path(path).is_file():
        return "absent"
    db = GradesDB(path, read_only=True)
    try:
        rows = db.grades(batch)
    finally:
        db.close()
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
