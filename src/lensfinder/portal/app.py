"""The inspection web app (Starlette): the grading page and the JSON API it uses.

Access (``lensfinder.portal.access``): every route needs a token (the portal's, or with
named graders a grader's own); a POST needs it in the ``X-Token`` header, JSON, at most
16 KiB, and no foreign ``Origin``.

* ``GET /api/candidates[?inspector=NAME]``: batch, settings, ``inspector`` (NAME as stored:
  lower case; a grader's token fixes it) and every candidate (id, name, key, RA/Dec, type,
  scores, magnitudes, viewer link, consensus so far, NAME's own grade) and ``queue``: the
  ids in NAME's order (not yet settled first, settled ones at the back);
* ``GET /api/candidates/{id}``: one candidate;
* ``GET /api/candidates/{id}/image.png?view=rgb|g|r|z|context``;
* ``POST /api/grades`` JSON ``{"key": [RELEASE, BRICKID, OBJID], "inspector": NAME,
  "grade": 0-4, "comment": ""}``: the object's key, never a row number, so a page left open
  across a restart on a re-ranked table grades what it showed; committed to the database
  before the answer; returns the candidate's new consensus and NAME's progress;
* ``GET /api/progress``: graded counts per inspector;
* ``GET /api/export.csv``: one row per candidate: every inspector's grade and comment
  (spreadsheet-safe), the number of graders, the mean, the difference (highest - lowest),
  the consensus grade.

Errors are JSON ``{"error": "..."}`` with 400 (bad request, e.g. no inspector or no key),
401 (no or wrong token), 403 (a grader grading as another, a token only in a cookie, a
foreign origin), 404 (unknown candidate or image), 409 (a key not in this batch), 413 (a
body over 16 KiB), 415 (not JSON), 422 (a grade outside 0-4, a comment over 2,000
characters).

Image rendering, context fetches (which wait on the survey tree or a cutout service) and
grade writes each have their own thread limit, so a slow context server never holds up a
grade or the next candidate's cutout.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from anyio import CapacityLimiter, to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from lensfinder.constants import KEY
from lensfinder.portal.access import Access, AccessMiddleware, BadBody, cookie_name, read_json
from lensfinder.portal.consensus import GRADE_MEANING, consensus
from lensfinder.portal.database import GradesDB, check_comment, check_grade, check_inspector
from lensfinder.portal.images import VIEWS, ImageSource
from lensfinder.tables import spreadsheet_safe

HERE = Path(__file__).parent
VIEWER = "https://www.legacysurvey.org/viewer"
VIEWER_LAYERS = {"dr10": "ls-dr10", "dr9": "ls-dr9", "dr8": "dr8"}
INFO_COLUMNS = ("RANK", "TYPE", "REGION", "MAG_G", "MAG_R", "MAG_Z", "STRATUM", "status", "SWEEP", "MERGED")


@dataclass
class Portal:
    """Everything the app serves: the candidates, their grades and their images."""

    candidates: pd.DataFrame
    kind: str
    batch: str
    db: GradesDB
    images: ImageSource
    access: Access = field(default_factory=Access)
    min_graders: int = 2
    prefetch: int = 4
    release: str = "dr10"

    def __post_init__(self):
        self.keys = [tuple(int(v) for v in k) for k in self.candidates[list(KEY)].to_numpy()]
        self.id_of = {k: i for i, k in enumerate(self.keys)}
        self.score_columns = [c for c in self.candidates.columns if c.startswith("SCORE_") or c == "score"]
        self._static = [self._static_record(i) for i in range(len(self.candidates))]

    def _static_record(self, i) -> dict:
        row = self.candidates.iloc[i]
        ra, dec = float(row["RA"]), float(row["DEC"])
        layer = VIEWER_LAYERS.get(self.release, "ls-dr10")
        return {
            "id": i, "name": str(row["NAME"]), "key": list(self.keys[i]), "ra": ra, "dec": dec,
            "scores": {c: _num(row[c]) for c in self.score_columns},
            "info": {c: _num(row[c]) for c in INFO_COLUMNS if c in row.index},
            "viewer": f"{VIEWER}/?ra={ra:.6f}&dec={dec:.6f}&layer={layer}&zoom=16&mark={ra:.6f},{dec:.6f}",
        }

    # --- grades -------------------------------------------------------------------------
    def grades_by_candidate(self) -> dict:
        out = {}
        for g in self.db.grades(self.batch):
            i = self.id_of.get(g["key"])
            if i is not None:
                out.setdefault(i, {})[g["inspector"]] = g
        return out

    def record(self, i, by_cand, inspector=None) -> dict:
        mine = by_cand.get(i, {})
        rec = {**self._static[i], **consensus([g["grade"] for g in mine.values()], self.min_graders).as_dict()}
        if inspector is not None:
            own = mine.get(inspector)
            rec["mine"] = {"grade": own["grade"], "comment": own["comment"]} if own else None
        return rec

    def queue(self, by_cand, inspector) -> list[int]:
        """The inspector's order: the table's order, with candidates settled by others at the back."""
        ids = range(len(self.keys))
        if inspector is None:
            return list(ids)

        def settled_without_me(i):
            g = by_cand.get(i, {})
            return inspector not in g and len(g) >= self.min_graders
        return [i for i in ids if not settled_without_me(i)] + [i for i in ids if settled_without_me(i)]

    def progress(self, by_cand) -> dict:
        counts = {}
        for grades in by_cand.values():
            for name in grades:
                counts[name] = counts.get(name, 0) + 1
        return {"total": len(self.keys), "inspectors": dict(sorted(counts.items()))}

    def export_rows(self) -> tuple[list[str], list[dict]]:
        by_cand = self.grades_by_candidate()
        names = sorted({n for g in by_cand.values() for n in g})
        header = ["id", "NAME", *KEY, "RA", "DEC", *self.score_columns, "n_graders", "mean_grade", "difference",
                  "consensus", "settled"]
        for n in names:
            header += [f"grade_{n}", f"comment_{n}"]
        rows = []
        for i in range(len(self.keys)):
            rec = self.record(i, by_cand)
            row = {"id": i, "NAME": spreadsheet_safe(rec["name"]), **dict(zip(KEY, self.keys[i])), "RA": rec["ra"], "DEC": rec["dec"],
                   **rec["scores"], "n_graders": rec["n_graders"],
                   "mean_grade": "" if rec["mean"] is None else f"{rec['mean']:.4f}",
                   "difference": "" if rec["difference"] is None else rec["difference"],
                   "consensus": rec["consensus"], "settled": int(rec["settled"])}
            for n in names:
                g = by_cand.get(i, {}).get(n)
                row[f"grade_{n}"] = "" if g is None else g["grade"]
                row[f"comment_{n}"] = "" if g is None else spreadsheet_safe(g["comment"])
            rows.append(row)
        return header, rows


def _num(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(v) else float(v)
    return v if isinstance(v, (int, str)) else str(v)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(portal: Portal) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    # separate thread limits: a slow context fetch never starves cutouts or grade writes
    limits = {"images": CapacityLimiter(4), "context": CapacityLimiter(2), "grades": CapacityLimiter(2)}

    async def page(request: Request):
        grader, token = request.state.grader, request.state.token
        response = templates.TemplateResponse(request, "index.html", {
            "batch": portal.batch, "kind": portal.kind, "n": len(portal.keys), "min_graders": portal.min_graders,
            "prefetch": portal.prefetch, "grades": sorted(GRADE_MEANING.items(), reverse=True),
            "has_context": portal.images.has_context, "token": token, "grader": grader or "",
            "port": request.url.port or "",
        })
        if request.query_params.get("token"):
            response.set_cookie(cookie_name(request.url.port), token, httponly=True, samesite="strict")
        response.headers["Cache-Control"] = "no-store"
        return response

    def _inspector(request, name):
        """The inspector a request acts as: a grader's token fixes it; the portal token lets
        any name grade unless the portal has named graders."""
        grader = request.state.grader
        if grader is not None:
            if name is not None and check_inspector(name) != grader:
                raise PermissionError(f"this token belongs to grader {grader!r}: it cannot act as {name[:70]!r}")
            return grader
        return check_inspector(name) if name is not None else None

    def _candidate_id(request) -> int:
        raw = request.path_params["cid"]
        if not (raw.isascii() and raw.isdigit()) or int(raw) >= len(portal.keys):
            raise LookupError(f"unknown candidate {raw[:40]!r}: ids are 0-{len(portal.keys) - 1}")
        return int(raw)

    async def candidates(request: Request):
        try:
            inspector = _inspector(request, request.query_params.get("inspector"))
        except PermissionError as err:
            return error(403, str(err))
        except ValueError as err:
            return error(400, str(err))
        by_cand = portal.grades_by_candidate()
        return JSONResponse({
            "batch": portal.batch, "kind": portal.kind, "min_graders": portal.min_graders, "inspector": inspector,
            "score_columns": portal.score_columns, "views": [v for v in VIEWS if v != "context" or portal.images.has_context],
            "candidates": [portal.record(i, by_cand, inspector) for i in range(len(portal.keys))],
            "queue": portal.queue(by_cand, inspector), "progress": portal.progress(by_cand),
        })

    async def candidate(request: Request):
        try:
            i, inspector = _candidate_id(request), _inspector(request, request.query_params.get("inspector"))
        except LookupError as err:
            return error(404, str(err))
        except PermissionError as err:
            return error(403, str(err))
        except ValueError as err:
            return error(400, str(err))
        return JSONResponse(portal.record(i, portal.grades_by_candidate(), inspector))

    async def image(request: Request):
        try:
            i = _candidate_id(request)
        except LookupError as err:
            return error(404, str(err))
        view = request.query_params.get("view", "rgb")
        if view not in VIEWS:
            return error(400, f"view {view[:20]!r} is not one of {', '.join(VIEWS)}")
        rec = portal._static[i]
        limiter = limits["context" if view == "context" else "images"]
        try:
            data = await to_thread.run_sync(portal.images.png, portal.keys[i], view, rec["ra"], rec["dec"],
                                            limiter=limiter)
        except KeyError as err:
            return error(404, str(err.args[0]) if err.args else "no image")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    async def post_grade(request: Request):
        try:
            body = await read_json(request)
        except BadBody as err:
            return error(err.status, str(err))
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object with key, inspector, grade and optional comment")
        if request.state.grader is None and portal.access.graders:
            return error(403, "this portal has named graders: grade through your own URL (lensfinder-inspect "
                              "printed one per grader)")
        try:
            inspector = _inspector(request, body.get("inspector"))
            if inspector is None:
                raise ValueError("inspector is required: give your name")
        except PermissionError as err:
            return error(403, str(err))
        except ValueError as err:
            return error(400, str(err))
        key = body.get("key")
        if not (isinstance(key, list) and len(key) == 3 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in key)):
            return error(400, "key is required: the object's [RELEASE, BRICKID, OBJID] as three integers")
        cid = portal.id_of.get(tuple(key))
        if cid is None:
            return error(409, f"object {key} is not in batch {portal.batch!r}: the table changed since the page "
                              "loaded; reload the page")
        try:
            grade = check_grade(body.get("grade"))
            comment = check_comment(body.get("comment"))
        except ValueError as err:
            return error(422, str(err))
        # sqlite commits synchronously (fsync): off the event loop, on the grades' own threads
        saved = await to_thread.run_sync(portal.db.set_grade, portal.batch, portal.keys[cid], inspector, grade,
                                         comment, limiter=limits["grades"])
        by_cand = portal.grades_by_candidate()
        mine = sum(1 for g in by_cand.values() if inspector in g)
        return JSONResponse({"saved_at": saved, "candidate": portal.record(cid, by_cand, inspector),
                             "progress": {"graded": mine, "total": len(portal.keys)}})

    async def progress(request: Request):
        return JSONResponse(portal.progress(portal.grades_by_candidate()))

    async def export(request: Request):
        header, rows = portal.export_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in portal.batch)
        return Response(buf.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="grades-{name}.csv"'})

    routes = [
        Route("/", page),
        Route("/api/candidates", candidates),
        Route("/api/candidates/{cid}", candidate),
        Route("/api/candidates/{cid}/image.png", image),
        Route("/api/grades", post_grade, methods=["POST"]),
        Route("/api/progress", progress),
        Route("/api/export.csv", export),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(AccessMiddleware, access=portal.access)])
