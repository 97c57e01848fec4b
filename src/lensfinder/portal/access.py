"""Who may use the portal, and what a browser may do with it.

Tokens: the portal token (printed at start, or ``LENSFINDER_INSPECT_TOKEN``) opens the page,
the API and the export; with named graders (``--graders ann,bob``) each grader has a token
of their own (an HMAC of their name under the portal token), grades only under that name,
and may change only their own grades. Without named graders the portal token grades under
any name (one person, or a trusted group, on one machine).

A token is accepted from the ``X-Token`` header, ``Authorization: Bearer``, ``?token=`` on
a GET, or the cookie ``lensfinder_token_<port>`` that the page sets (one per port, so two
portals on one host do not log each other out). Requests that change state (POST) need the
token in a header: a page of another origin can send a cookie but not a custom header
without a CORS preflight, which this app never grants, so it cannot forge a grade. A POST
must also be ``application/json``, at most ``MAX_BODY`` bytes, and, when the browser says
where it comes from (``Origin``), come from the portal's own origin.

Every answer carries a Content-Security-Policy (scripts, styles and images from the portal
only; never framed), X-Frame-Options, Referrer-Policy (the token in the URL never leaves
in a Referer) and X-Content-Type-Options.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from lensfinder.portal.database import check_inspector

MAX_BODY = 16 * 1024
SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def cookie_name(port) -> str:
    return f"lensfinder_token_{port}"


@dataclass
class Access:
    """The portal token and the named graders' tokens derived from it."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    graders: tuple[str, ...] = ()

    def __post_init__(self):
        self.graders = tuple(check_inspector(g) for g in self.graders)
        self._by_token = {self.grader_token(g): g for g in self.graders}

    def grader_token(self, name: str) -> str:
        """The grader's own token: stable for a given portal token, so a restart with
        ``LENSFINDER_INSPECT_TOKEN`` keeps every grader's URL."""
        name = check_inspector(name)
        return "g-" + hmac.new(self.token.encode(), name.encode(), hashlib.sha256).hexdigest()[:32]

    def identify(self, given: str) -> tuple[bool, str | None]:
        """(accepted, grader name or None for the portal token)."""
        if given and secrets.compare_digest(given.encode(), self.token.encode()):
            return True, None
        for token, name in self._by_token.items():
            if given and secrets.compare_digest(given.encode(), token.encode()):
                return True, name
        return False, None


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class AccessMiddleware:
    """Token, origin, content type and body size checks; security headers on every answer."""

    def __init__(self, app, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        refusal = self.check(scope)
        if refusal is not None:
            return await refusal(scope, receive, send_with_headers)
        if scope["method"] not in ("GET", "HEAD"):
            receive = _limited(receive, scope)
        return await self.app(scope, receive, send_with_headers)

    def check(self, scope):
        """None when the request may go on, else the answer that refuses it."""
        request = Request(scope)
        api = scope["path"].startswith("/api/")
        header = request.headers.get("x-token") or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            header = auth[7:].strip()
        cookie = request.cookies.get(cookie_name(request.url.port)) or ""
        query = request.query_params.get("token") or "" if scope["method"] in ("GET", "HEAD") else ""
        given = header or query or cookie
        accepted, grader = self.access.identify(given)
        if not accepted:
            msg = ("missing or wrong access token: open the URL with ?token=... that lensfinder-inspect printed "
                   "at start, or send the header X-Token")
            return _json_error(401, msg) if api else HTMLResponse(f"<h1>401</h1><p>{msg}</p>", status_code=401)
        scope.setdefault("state", {})["grader"] = grader
        scope["state"]["token"] = given
        if scope["method"] in ("GET", "HEAD"):
            return None
        if not header:
            return _json_error(403, "a request that changes grades must carry the token in the X-Token header, "
                                    "not only in a cookie (this refuses forged requests from other pages)")
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin is not None and origin != own:
            return _json_error(403, f"requests from origin {origin[:80]!r} are refused: only the portal's own page "
                                    f"({own}) may change grades")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _json_error(415, "the body must be JSON with Content-Type: application/json")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return _json_error(413, f"the body is over {MAX_BODY} bytes: a grade and its comment fit in far less")
        return None


class BodyTooLarge(Exception):
    pass


def _limited(receive, scope):
    """``receive`` that stops a body (chunked, or longer than it said) at MAX_BODY bytes."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise BodyTooLarge()
        return message
    return wrapped


class BadBody(ValueError):
    """A request body refused, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_json(request: Request):
    """The request's JSON body; BadBody for anything else (over-long: 413; not JSON, or
    nested too deeply to parse: 400)."""
    try:
        raw = await request.body()
    except BodyTooLarge:
        raise BadBody(413, f"the body is over {MAX_BODY} bytes: a grade and its comment fit in far less") from None
    try:
        return json.loads(raw or b"null")
    except (ValueError, RecursionError):
        raise BadBody(400, "the body must be JSON: {\"key\": [RELEASE, BRICKID, OBJID], \"inspector\": name, "
                           "\"grade\": 0-4, \"comment\": \"\"}") from None
