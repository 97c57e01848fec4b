"""Similarity search: the neighbours of a query, and candidates from a list of queries (S22 4.1).

``lensfinder-similar --query NAME|RA,DEC|KEY --k 100`` prints the k objects most similar to
the query (itself first, similarity 1) with their cosine similarity, and writes them to CSV:

* ``KEY``: ``RELEASE/BRICKID/OBJID`` (``10000/342488/12``; commas work too);
* ``RA,DEC``: degrees (``150.1234,2.3456``): the nearest indexed object within
  ``--radius`` arcsec;
* ``NAME``: a DESI-style name (``DESI-150.1234+02.3456``), or a system name in the run's lens
  catalogues (``lens_catalogs`` of ``--config``).

A query list (``--queries FILE``, CSV or FITS with ra, dec and optionally name; the workflow
uses the catalogued lenses) gives a **candidates table in the recommendations format** of
``lensfinder.ranking.rank``: the union of every query's k nearest neighbours (queries excluded),
ranked by ``SCORE_SIMILARITY`` (the highest cosine similarity to any query), with the query
it resembles most (``QUERY_NAME``) and how many queries list it (``N_QUERIES``); objects
within ``known_radius_arcsec`` of a catalogued system are removed (``known_matches.csv``)
and objects within ``merge_radius_arcsec`` of a better one merged into it (``MERGED``).
``lensfinder-inspect serve results/<run>/embed/candidates.parquet`` grades them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from lensfinder.catalog.crossmatch import friends_of_friends, nearest
from lensfinder.catalog.lenses import CatalogSpec, grade_ok, union_catalogs
from lensfinder.constants import KEY
from lensfinder.embed.index import SimilarityIndex
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.settings import Settings
from lensfinder.survey.positions import desi_names
from lensfinder.tables import read_keyed, write_tables

DESI_NAME = re.compile(r"^DESI-(\d{1,3}\.\d+)([+-]\d{1,2}\.\d+)$", re.IGNORECASE)
KEY_TEXT = re.compile(r"^\s*(\d+)\s*[/,]\s*(\d+)\s*[/,]\s*(\d+)\s*$")
RADEC_TEXT = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*,\s*([+-]?\d+(?:\.\d*)?)\s*$")


@dataclass
class SimilarConfig(Settings):
    section: ClassVar[str] = "embed.similar"

    k: int = 100  # neighbours per query
    query_grades: list | None = field(default_factory=lambda: ["A", "B"])  # catalogued systems used as queries
    match_radius_arcsec: float = 1.5  # a query position -> the nearest indexed object within this
    known_radius_arcsec: float = 3.0  # candidates this close to a catalogued system are removed
    merge_radius_arcsec: float = 5.0  # one system: keep the most similar, list the others
    enrichment_k: list = field(default_factory=lambda: [1, 5, 10, 20, 50, 100])
    mosaic_queries: int = 6  # neighbours.png: this many queries, each with its nearest neighbours


def parse_query(text: str):
    """("key", (release, brickid, objid)) | ("radec", (ra, dec)) | ("desi", (ra, dec)) | ("name", text)."""
    if m := KEY_TEXT.match(text):
        return "key", tuple(int(g) for g in m.groups())
    if m := RADEC_TEXT.match(text):
        ra, dec = float(m.group(1)), float(m.group(2))
        if not (0 <= ra < 360 and -90 <= dec <= 90):
            raise LensfinderError(f"query {text!r}: RA must be in [0, 360) and Dec in [-90, 90] degrees")
        return "radec", (ra, dec)
    if m := DESI_NAME.match(text.strip()):
        return "desi", (float(m.group(1)), float(m.group(2)))
    return "name", text.strip()


def find_object(index: SimilarityIndex, text: str, systems: pd.DataFrame | None = None,
                radius_arcsec: float = 1.5) -> int:
    """The index row of the object a query names (see the module docstring)."""
    kind, value = parse_query(text)
    if kind == "key":
        row = int(index.rows_of([value])[0])
        if row < 0:
            raise LensfinderError(f"object {'/'.join(map(str, value))} is not in the index {index.dir}: "
                                  "check the key (RELEASE/BRICKID/OBJID) or the run")
        return row
    if kind == "name":
        if systems is None or systems.empty:
            raise LensfinderError(f"query {text!r} is neither a key, RA,DEC nor a DESI name, and no lens catalogue "
                                  "is given to look it up (--config names the run's lens_catalogs)")
        hits = systems[systems["name"].astype(str).str.strip().str.lower() == value.lower()]
        if hits.empty:
            raise LensfinderError(f"query {text!r} is no system of the lens catalogues; give RELEASE/BRICKID/OBJID, "
                                  "RA,DEC or a DESI-RRR.rrrr+DD.dddd name")
        value = (float(hits["ra"].iloc[0]), float(hits["dec"].iloc[0]))
    if kind == "desi":
        radius_arcsec = max(radius_arcsec, 0.5)  # names are rounded to 1e-4 deg (0.36")
    idx, sep = nearest([value[0]], [value[1]], index.keys["RA"].to_numpy(), index.keys["DEC"].to_numpy(), radius_arcsec)
    if idx[0] < 0:
        _, closest = nearest([value[0]], [value[1]], index.keys["RA"].to_numpy(), index.keys["DEC"].to_numpy(), 3600.0)
        where = f"the nearest is {closest[0]:.1f} arcsec away" if np.isfinite(closest[0]) else "none within 1 deg"
        raise LensfinderError(f"no indexed object within {radius_arcsec} arcsec of query {text!r} ({where}): "
                              "raise --radius or check the position")
    return int(idx[0])


def similar(index: SimilarityIndex, text: str, k: int, systems=None, radius_arcsec: float = 1.5) -> pd.DataFrame:
    """The k objects most similar to the query ``text``, itself first, with NAME and QUERY."""
    row = find_object(index, text, systems, radius_arcsec)
    out = index.neighbours(row, k)
    out.insert(1, "NAME", desi_names(out["RA"], out["DEC"]))
    out["QUERY"] = text
    return out


def read_query_list(path) -> pd.DataFrame:
    """A CSV or FITS list of queries: ra, dec [deg] (any case) and optionally name."""
    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"query list {path} does not exist")
    if path.name.lower().endswith((".fits", ".fit", ".fits.gz")):
        from astropy.table import Table

        frame = Table.read(path).to_pandas()
    else:
        frame = pd.read_csv(path)
    frame.columns = [c.lower() for c in frame.columns]
    if not {"ra", "dec"} <= set(frame.columns):
        raise LensfinderError(f"query list {path} needs columns ra, dec (degrees); it has {list(frame.columns)}")
    if "name" not in frame.columns:
        frame["name"] = desi_names(frame["ra"], frame["dec"])
    return frame[["name", "ra", "dec"]].reset_index(drop=True)


def catalogue_queries(catalog_specs, grades) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(queries: the catalogued systems of ``grades``, all systems) of the lens catalogues."""
    systems, _ = union_catalogs([CatalogSpec.from_dict(c) for c in catalog_specs])
    return systems[grade_ok(systems["grade"], grades)].reset_index(drop=True), systems


def match_queries(index: SimilarityIndex, queries: pd.DataFrame, radius_arcsec: float) -> pd.DataFrame:
    """Queries with the index ROW of their nearest object within the radius (unmatched dropped;
    two queries on one object keep the first)."""
    idx, sep = nearest(queries["ra"].to_numpy(np.float64), queries["dec"].to_numpy(np.float64),
                       index.keys["RA"].to_numpy(), index.keys["DEC"].to_numpy(), radius_arcsec)
    out = queries.assign(ROW=idx, SEPARATION_ARCSEC=sep)
    out = out[out["ROW"] >= 0]
    return out[~out["ROW"].duplicated()].reset_index(drop=True)


def neighbour_lists(index: SimilarityIndex, query_rows, k: int) -> pd.DataFrame:
    """Each query's k nearest indexed objects that are not queries: QUERY (position in
    ``query_rows``), ROW, SIMILARITY, RANK (1 = nearest). Searches 2k + 1 first, and deeper
    only for the queries whose lists other queries crowded."""
    query_rows = np.asarray(query_rows, dtype=np.int64)
    n = len(index.keys)
    found = {}
    pending, fetch = np.arange(len(query_rows)), min(n, 2 * k + 1)
    vectors = index.reps.take(query_rows) if len(query_rows) else np.zeros((0, index.reps.dim), np.float32)
    while len(pending):
        sims, rows = index.search(vectors[pending], fetch)
        short = []
        for q, s, r in zip(pending, sims, rows):
            keep = np.flatnonzero(~np.isin(r, query_rows) & (r >= 0))[:k]
            if len(keep) < k and fetch < n:
                short.append(q)
            found[q] = (r[keep], s[keep])
        pending, fetch = np.asarray(short, dtype=np.int64), min(n, fetch * 4)
    frames = [pd.DataFrame({"QUERY": q, "ROW": found[q][0], "SIMILARITY": found[q][1].astype(np.float64),
                            "RANK": np.arange(1, len(found[q][0]) + 1)}) for q in range(len(query_rows))]
    if not frames:
        return pd.DataFrame({"QUERY": pd.Series(dtype=np.int64), "ROW": pd.Series(dtype=np.int64),
                             "SIMILARITY": pd.Series(dtype=np.float64), "RANK": pd.Series(dtype=np.int64)})
    return pd.concat(frames, ignore_index=True)


def candidates_table(index: SimilarityIndex, queries: pd.DataFrame, k: int, systems: pd.DataFrame | None,
                     known_radius_arcsec: float, merge_radius_arcsec: float, objects: pd.DataFrame | None = None):
    """(candidates in the recommendations format, known matches, summary) from matched queries
    (``match_queries``); ``objects`` (keyed frame with MAG_G, MAG_R, SWEEP) fills those columns."""
    lists = neighbour_lists(index, queries["ROW"].to_numpy(), k)
    names = queries["name"].astype(str).to_numpy()
    best = lists.sort_values(["SIMILARITY", "ROW"], ascending=[False, True], kind="stable")
    agg = best.groupby("ROW", sort=False).agg(SCORE_SIMILARITY=("SIMILARITY", "first"), QUERY=("QUERY", "first"),
                                              N_QUERIES=("QUERY", "nunique")).reset_index()
    table = index.keys.iloc[agg["ROW"].to_numpy()].reset_index(drop=True)
    table = table.assign(SCORE_SIMILARITY=agg["SCORE_SIMILARITY"].to_numpy(),
                         QUERY_NAME=names[agg["QUERY"].to_numpy(np.int64)] if len(agg) else [],
                         N_QUERIES=agg["N_QUERIES"].to_numpy())
    for col in ("MAG_G", "MAG_R", "SWEEP"):
        table[col] = np.nan if col != "SWEEP" else ""
    if objects is not None and len(table):
        extra = objects.set_index(list(KEY))[["MAG_G", "MAG_R", "SWEEP"]]
        joined = table[list(KEY)].join(extra, on=list(KEY))
        for col in ("MAG_G", "MAG_R", "SWEEP"):
            table[col] = joined[col].to_numpy()
    table = table.sort_values("SCORE_SIMILARITY", ascending=False, kind="stable").reset_index(drop=True)
    known = table.iloc[0:0].assign(KNOWN_NAME=[], SEPARATION_ARCSEC=[])
    if systems is not None and len(systems) and len(table):
        idx, sep = nearest(table["RA"].to_numpy(), table["DEC"].to_numpy(), systems["ra"].to_numpy(),
                           systems["dec"].to_numpy(), known_radius_arcsec)
        known = table[idx >= 0].assign(KNOWN_NAME=systems["name"].to_numpy()[idx[idx >= 0]], SEPARATION_ARCSEC=sep[idx >= 0])
        table = table[idx < 0].reset_index(drop=True)
    groups = friends_of_friends(table["RA"].to_numpy(), table["DEC"].to_numpy(), merge_radius_arcsec) if len(table) else np.zeros(0, int)
    keep = ~pd.Series(groups).duplicated().to_numpy()
    merged = {g: ";".join(f"{r}/{b}/{o}" for r, b, o in zip(grp.RELEASE, grp.BRICKID, grp.OBJID))
              for g, grp in table.assign(GROUP=groups)[~keep].groupby("GROUP")}
    recs = table[keep].copy()
    recs["MERGED"] = [merged.get(g, "") for g in groups[keep]]
    recs.insert(0, "RANK", np.arange(1, len(recs) + 1))
    recs.insert(1, "NAME", desi_names(recs["RA"], recs["DEC"]))
    cols = ["RANK", "NAME", *KEY, "RA", "DEC", "TYPE", "REGION", "MAG_G", "MAG_R", "MAG_Z", "SCORE_SIMILARITY",
            "QUERY_NAME", "N_QUERIES", "MERGED", "SWEEP"]
    recs = recs[cols].reset_index(drop=True)
    summary = {"queries": int(len(queries)), "k": int(k), "neighbours": int(len(lists)),
               "distinct_neighbours": int(lists["ROW"].nunique()), "known_systems_removed": int(len(known)),
               "merged_duplicates": int((~keep).sum()), "candidates": int(len(recs))}
    return recs, known, summary


def write_candidates(out_dir, recs: pd.DataFrame, known: pd.DataFrame, summary: dict, stem="candidates"):
    """``<stem>.{parquet,csv,fits}`` (as rank writes recommendations), ``<stem>_known_matches.csv``
    and ``<stem>_summary.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tables(out_dir, recs, stem)
    with atomic_path(out_dir / f"{stem}_known_matches.csv") as tmp:
        known[[*KEY, "RA", "DEC", "SCORE_SIMILARITY", "QUERY_NAME", "KNOWN_NAME", "SEPARATION_ARCSEC"]].to_csv(tmp, index=False)
    with atomic_path(out_dir / f"{stem}_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))


def run_candidates(index_dir, catalog_specs, objects_paths, cfg: SimilarConfig, out_dir) -> dict:
    """Rule ``similar_candidates``: the catalogued lenses of ``query_grades`` as queries."""
    index = SimilarityIndex(index_dir)
    queries, systems = catalogue_queries(catalog_specs, cfg.query_grades)
    matched = match_queries(index, queries, cfg.match_radius_arcsec)
    objects = pd.concat([read_keyed(p, ["MAG_G", "MAG_R", "SWEEP"]) for p in objects_paths], ignore_index=True)
    recs, known, summary = candidates_table(index, matched, cfg.k, systems, cfg.known_radius_arcsec,
                                            cfg.merge_radius_arcsec, objects)
    summary = {**summary, "catalogued_systems": int(len(queries)), "query_grades": cfg.query_grades,
               "unmatched_queries": int(len(queries) - len(matched))}
    write_candidates(out_dir, recs, known, summary)
    return summary


def _config(path):
    import yaml

    path = Path(path)
    if not path.exists():
        return None
    return yaml.safe_load(path.read_text())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "query"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="lensfinder-similar", description="Objects most similar to a query in the "
                                 "self-supervised representation space (cosine similarity), as paper S22's search.")
    ap.add_argument("--query", action="append", default=[],
                    help="RELEASE/BRICKID/OBJID, RA,DEC (deg) or a name (DESI-RRR.rrrr+DD.dddd or a catalogued system); "
                         "repeat for several")
    ap.add_argument("--queries", help="a CSV/FITS list (ra, dec[, name]): write a candidates table of all their neighbours")
    ap.add_argument("--k", type=int, default=100, help="neighbours per query (default %(default)s)")
    ap.add_argument("--config", default="config/config.yaml", help="the run's config: run name, lens catalogues")
    ap.add_argument("--index", help="the index directory (default results/<run>/embed/index)")
    ap.add_argument("--radius", type=float, default=1.5, help="RA,DEC and name queries: match radius [arcsec]")
    ap.add_argument("--out", help="output: a CSV (one query), or a directory (several, or --queries); default "
                                  "results/<run>/embed/similar/")
    ap.add_argument("--quiet", action="store_true", help="do not print the neighbours")
    args = ap.parse_args(argv)
    try:
        if not args.query and not args.queries:
            raise LensfinderError("give --query (one or more) or --queries FILE")
        if args.k < 1:
            raise LensfinderError(f"--k {args.k} must be at least 1")
        config = _config(args.config)
        if args.index is None and config is None:
            raise LensfinderError(f"config {args.config} does not exist: give --index or --config")
        index_dir = Path(args.index) if args.index else Path("results") / config["run"] / "embed" / "index"
        index = SimilarityIndex(index_dir)
        # the lens catalogues: for names and to remove known systems from candidates
        specs = [c for c in (config or {}).get("lens_catalogs", []) if c.get("path") or c.get("source")]
        needed = args.queries or any(parse_query(q)[0] == "name" for q in args.query)
        systems = union_catalogs([CatalogSpec.from_dict(c) for c in specs])[0] if specs and needed else None
        default_out = index_dir.parent / "similar"
        written = []
        for text in args.query:
            table = similar(index, text, args.k, systems, args.radius)
            out = Path(args.out) if args.out and len(args.query) == 1 and not args.queries and args.out.endswith(".csv") \
                else Path(args.out or default_out) / f"{_slug(text)}.csv"
            with atomic_path(out) as tmp:
                table.to_csv(tmp, index=False)
            written.append(out)
            if not args.quiet:
                print(f"# {args.k} objects most similar to {text} (cosine similarity; the query first)")
                cols = ["RANK", "NAME", *KEY, "RA", "DEC", "TYPE", "MAG_Z", "SIMILARITY"]
                print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.6f}"))
        if args.queries:
            queries = match_queries(index, read_query_list(args.queries), args.radius)
            recs, known, summary = candidates_table(index, queries, args.k, systems, 3.0, 5.0)
            out_dir = Path(args.out or default_out)
            write_candidates(out_dir, recs, known, {**summary, "query_list": str(args.queries)})
            written.append(out_dir / "candidates.parquet")
            if not args.quiet:
                print(f"# {summary['queries']} queries matched; {summary['candidates']} candidates "
                      f"({summary['known_systems_removed']} known systems removed)")
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
    except LensfinderError as err:
        print(f"lensfinder-similar: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
