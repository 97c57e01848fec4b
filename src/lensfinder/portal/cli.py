"""``lensfinder-inspect serve``: start the inspection portal on a candidates table.

    lensfinder-inspect serve results/mock/recommendations/recommendations.parquet --db grades.sqlite

Run it from the repository root (the survey tree's path in the config is relative to it).
The run directory (for the shards) is ``--run`` or, by default, the directory two levels
above the table (``results/<run>/recommendations/x.parquet`` -> ``results/<run>``). The
survey tree for the context view comes from ``--config`` (default ``config/config.yaml``),
or the cutout service with ``--service-url``. The server binds 127.0.0.1 and prints a URL
with a fresh random access token (``LENSFINDER_INSPECT_TOKEN`` sets a fixed one, which keeps
every URL valid across restarts). With ``--graders ann,bob`` it prints one URL per grader:
each grades only under their own name (see ``lensfinder.portal.access``).

Grades live in one SQLite file in write-ahead-log mode, which needs every process that opens
it on one host: serve and run the ``inspection`` rule on the same machine (or move grades as
``/api/export.csv``).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import sys
from pathlib import Path

from lensfinder.errors import LensfinderError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lensfinder-inspect", description="Visual inspection of lens candidates.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the grading page and its JSON API")
    serve.add_argument("candidates", help="recommendations table (Parquet/CSV/FITS) or a training set's review.csv")
    serve.add_argument("--db", required=True, help="SQLite grades file (created if missing; grading resumes from it)")
    serve.add_argument("--batch", help="name of this grading in the database (default: <run>/<table stem>)")
    serve.add_argument("--run", help="the run directory results/<run> (default: two levels above the table)")
    serve.add_argument("--config", default="config/config.yaml",
                       help="the run's config, for the survey tree of the context view (default: %(default)s)")
    serve.add_argument("--service-url", help="take the context view from this cutout service instead of the tree")
    serve.add_argument("--service-layer", default=None, help="cutout service layer (default: ls-<release>)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    serve.add_argument("--port", type=int, default=8765, help="port (0: any free port; default %(default)s)")
    serve.add_argument("--min-graders", type=int, default=2, help="graders that settle a candidate (default %(default)s)")
    serve.add_argument("--prefetch", type=int, default=4, help="next candidates the page preloads (default %(default)s)")
    serve.add_argument("--cache", type=int, default=4096, help="PNGs kept in memory (default %(default)s)")
    serve.add_argument("--graders", default="",
                       help="comma-separated grader names: each gets a URL of their own and may change only "
                            "their own grades (default: anyone with the portal's URL grades under any name)")
    return parser


def default_batch(candidates: Path, run_dir: Path) -> str:
    return f"{run_dir.name}/{candidates.name.split('.')[0]}"


def infer_run_dir(candidates: Path) -> Path:
    run_dir = candidates.resolve().parent.parent
    if not (run_dir / "cutouts").is_dir():
        raise LensfinderError(f"cannot tell the run of {candidates}: no cutouts/ in {run_dir}; give --run results/<run>")
    return run_dir


def context_backends(args, release_default="dr10"):
    """(survey trees or None, cutout service or None, release) from --config / --service-url."""
    import yaml

    from lensfinder.survey.service import CutoutService
    from lensfinder.survey.tree import survey_trees

    tree, release = None, release_default
    config = Path(args.config) if args.config else None
    if config is not None and config.is_file():
        cfg = yaml.safe_load(config.read_text()) or {}
        if "survey" in cfg:
            tree = survey_trees(cfg)  # one tree per region; the context view picks by position
            release = tree.release
    elif args.config and args.config != "config/config.yaml":
        raise LensfinderError(f"config {args.config} does not exist: give the run's config file with --config")
    service = None
    if args.service_url:
        service = CutoutService(args.service_url, layer=args.service_layer or f"ls-{release}", max_workers=1, retries=2)
    return tree, service, release


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` binds is this machine's loopback (``::`` and
    ``0.0.0.0``, every interface, are not)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def serve(args) -> None:
    import uvicorn

    from lensfinder.portal.app import Portal, create_app
    from lensfinder.portal.candidates import load_candidates
    from lensfinder.portal.database import GradesDB
    from lensfinder.portal.images import ImageSource

    candidates_path = Path(args.candidates)
    frame, kind = load_candidates(candidates_path)
    run_dir = Path(args.run) if args.run else infer_run_dir(candidates_path)
    tree, service, release = context_backends(args)
    if args.min_graders < 1:
        raise LensfinderError(f"--min-graders {args.min_graders} must be at least 1")
    images = ImageSource(run_dir, tree=tree, service=service, cache_size=args.cache)
    missing = [k for k in zip(frame.RELEASE, frame.BRICKID, frame.OBJID) if k not in images.shards]
    if missing:
        print(f"warning: {len(missing)} candidate(s) have no cutout in {run_dir}/cutouts (e.g. {missing[0]}); "
              "their views will be missing", file=sys.stderr)
    from lensfinder.portal.access import Access

    try:
        access = Access(os.environ.get("LENSFINDER_INSPECT_TOKEN") or secrets.token_urlsafe(24),
                        tuple(g for g in args.graders.split(",") if g.strip()))
    except ValueError as err:
        raise LensfinderError(f"--graders {args.graders!r}: {err}") from err
    portal = Portal(frame, kind, args.batch or default_batch(candidates_path, run_dir), GradesDB(args.db), images,
                    access=access, min_graders=args.min_graders, prefetch=args.prefetch, release=release)
    if not is_loopback(args.host):
        print(f"warning: binding {args.host}: anyone who can reach it and has a token can grade; "
              "prefer 127.0.0.1 and an SSH tunnel", file=sys.stderr)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as err:
        raise LensfinderError(f"cannot listen on {args.host}:{args.port} ({err}): choose another --port") from err
    port = sock.getsockname()[1]
    print(f"lensfinder-inspect: batch {portal.batch!r}, {len(frame)} candidates ({kind}), grades in {args.db}", flush=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    for name in access.graders:
        print(f"grader {name}: http://{host}:{port}/?token={access.grader_token(name)}", flush=True)
    print(f"open http://{host}:{port}/?token={access.token}"
          + (" (reads and exports; graders grade through their own URLs)" if access.graders else ""), flush=True)
    config = uvicorn.Config(create_app(portal), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)
    except LensfinderError as err:
        print(f"lensfinder-inspect: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
