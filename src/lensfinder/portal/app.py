"""The inspection web app (Starlette): the grading page and the JSON API it uses.

API (every route needs the access token: header ``X-Token: T``, ``Authorization: Bearer T``,
the ``lensfinder_token`` cookie the page sets, or ``?token=T``):

* ``GET /api/candidates[?inspector=NAME]``: batch, settings and every candidate (id, name,
  key, RA/Dec, type, scores, magnitudes, viewer link, consensus so far, NAME's own grade)
  and ``queue``: the ids in NAME's order (not yet settled first, settled ones at the back);
* ``GET /api/candidates/{id}``: one candidate;
* ``GET /api/candidates/{id}/image.png?view=rgb|g|r|z|context``;
* ``POST /api/grades`` JSON ``{"candidate": id, "inspector": NAME, "grade": 0-4, "comment": ""}``:
  committed to the database before the answer; returns the candidate's new consensus and
  NAME's progress;
* ``GET /api/progress``: graded counts per inspector;
* ``GET /api/export.csv``: one row per candidate: every inspector's grade and comment, the
  number of graders, the mean, the difference (highest - lowest), the consensus grade.

Errors are JSON ``{"error": "..."}`` with 400 (bad request, e.g. no inspector), 401 (no or
wrong token), 404 (unknown candidate or image), 422 (a grade outside 0-4).
"""

from __future__ import annotations

import csv
import io
import json
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from lensfinder.constants import KEY
from lensfinder.portal.consensus import GRADE_MEANING, consensus
from lensfinder.portal.database import GradesDB, check_grade, check_inspector
from lensfinder.portal.images import VIEWS, ImageSource

HERE = Path(__file__).parent
COOKIE = "lensfinder_token"
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
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
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
            row = {"id": i, "NAME": rec["name"], **dict(zip(KEY, self.keys[i])), "RA": rec["ra"], "DEC": rec["dec"],
                   **rec["scores"], "n_graders": rec["n_graders"],
                   "mean_grade": "" if rec["mean"] is None else f"{rec['mean']:.4f}",
                   "difference": "" if rec["difference"] is None else rec["difference"],
                   "consensus": rec["consensus"], "settled": int(rec["settled"])}
            for n in names:
                g = by_cand.get(i, {}).get(n)
                row[f"grade_{n}"] = "" if g is None else g["grade"]
                row[f"comment_{n}"] = "" if g is None else g["comment"]
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


class TokenMiddleware:
    """Refuses every request without the access token (401), as notebook servers do."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = (request.headers.get("x-token") or request.query_params.get("token")
                 or request.cookies.get(COOKIE) or "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            msg = ("missing or wrong access token: open the URL with ?token=... that lensfinder-inspect printed "
                   "at start, or send the header X-Token")
            if scope["path"].startswith("/api/"):
                return await error(401, msg)(scope, receive, send)
            return await HTMLResponse(f"<h1>401</h1><p>{msg}</p>", status_code=401)(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(portal: Portal) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    async def page(request: Request):
        response = templates.TemplateResponse(request, "index.html", {
            "batch": portal.batch, "kind": portal.kind, "n": len(portal.keys), "min_graders": portal.min_graders,
            "prefetch": portal.prefetch, "grades": sorted(GRADE_MEANING.items(), reverse=True),
            "has_context": portal.images.has_context,
        })
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, portal.token, httponly=True, samesite="strict")
        response.headers["Cache-Control"] = "no-store"
        return response

    def _inspector(request):
        name = request.query_params.get("inspector")
        return check_inspector(name) if name is not None else None

    def _candidate_id(request) -> int:
        raw = request.path_params["cid"]
        if not raw.isdigit() or int(raw) >= len(portal.keys):
            raise LookupError(f"unknown candidate {raw[:40]!r}: ids are 0-{len(portal.keys) - 1}")
        return int(raw)

    async def candidates(request: Request):
        try:
            inspector = _inspector(request)
        except ValueError as err:
            return error(400, str(err))
        by_cand = portal.grades_by_candidate()
        return JSONResponse({
            "batch": portal.batch, "kind": portal.kind, "min_graders": portal.min_graders,
            "score_columns": portal.score_columns, "views": [v for v in VIEWS if v != "context" or portal.images.has_context],
            "candidates": [portal.record(i, by_cand, inspector) for i in range(len(portal.keys))],
            "queue": portal.queue(by_cand, inspector), "progress": portal.progress(by_cand),
        })

    async def candidate(request: Request):
        try:
            i, inspector = _candidate_id(request), _inspector(request)
        except LookupError as err:
            return error(404, str(err))
        except ValueError as err:
            return error(400, str(err))
        return JSONResponse(portal.record(i, portal.grades_by_candidate(), inspector))

    def image(request: Request):  # sync: runs in the thread pool (rendering is CPU work)
        try:
            i = _candidate_id(request)
        except LookupError as err:
            return error(404, str(err))
        view = request.query_params.get("view", "rgb")
        if view not in VIEWS:
            return error(400, f"view {view[:20]!r} is not one of {', '.join(VIEWS)}")
        rec = portal._static[i]
        try:
            data = portal.images.png(portal.keys[i], view, rec["ra"], rec["dec"])
        except KeyError as err:
            return error(404, str(err.args[0]) if err.args else "no image")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    async def post_grade(request: Request):
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return error(400, "the body must be JSON: {\"candidate\": id, \"inspector\": name, \"grade\": 0-4, \"comment\": \"\"}")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object with candidate, inspector, grade and optional comment")
        try:
            inspector = check_inspector(body.get("inspector"))
        except ValueError as err:
            return error(400, str(err))
        cid = body.get("candidate")
        if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid < len(portal.keys):
            return error(404, f"unknown candidate {str(cid)[:40]!r}: ids are 0-{len(portal.keys) - 1}")
        try:
            grade = check_grade(body.get("grade"))
        except ValueError as err:
            return error(422, str(err))
        comment = body.get("comment") or ""
        if not isinstance(comment, str):
            return error(400, "comment must be a string")
        # sqlite commits synchronously (fsync): keep it off the event loop
        from starlette.concurrency import run_in_threadpool

        saved = await run_in_threadpool(portal.db.set_grade, portal.batch, portal.keys[cid], inspector, grade, comment)
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
    return Starlette(routes=routes, middleware=[Middleware(TokenMiddleware, token=portal.token)])
