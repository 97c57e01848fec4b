"""Tables of objects: read them keyed and checked, write them as Parquet, CSV and FITS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path

KEY_BITS = (19, 22, 22)  # RELEASE, BRICKID, OBJID: one int64 per key
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def spreadsheet_safe(text):
    """Free text as a spreadsheet shows it, never runs it: a cell that starts with
    = + - @ tab or CR gets a leading apostrophe (OWASP's rule for CSV injection); so does one
    that starts with an apostrophe, so that ``spreadsheet_unsafe`` gives every text back."""
    return "'" + text if isinstance(text, str) and text.startswith((*FORMULA_START, "'")) else text


def spreadsheet_unsafe(text):
    """The inverse of ``spreadsheet_safe``, for reading back a CSV this package wrote."""
    if isinstance(text, str) and text.startswith("'") and text[1:].startswith((*FORMULA_START, "'")):
        return text[1:]
    return text

def pack_keys(release, brickid, objid) -> np.ndarray:
    """(RELEASE, BRICKID, OBJID) packed into one int64 (19 + 22 + 22 bits), for sorting and
    matching keys without Python tuples."""
    parts = [np.asarray(a, dtype=np.int64) for a in (release, brickid, objid)]
    for name, a, bits in zip(KEY, parts, KEY_BITS):
        if len(a) and (a.min() < 0 or a.max() >= 1 << bits):
            raise LensfinderError(f"{name} values outside 0..{(1 << bits) - 1}: not a Legacy Surveys key")
    return (parts[0] << (KEY_BITS[1] + KEY_BITS[2])) | (parts[1] << KEY_BITS[2]) | parts[2]


def read_keyed(path, columns=None):
    """A Parquet table of objects keyed by (RELEASE, BRICKID, OBJID), checked unique: a
    repeated key would multiply rows in every later join."""
    frame = pd.read_parquet(path, columns=None if columns is None else [*KEY, *(c for c in columns if c not in KEY)])
    dup = frame.duplicated(list(KEY), keep=False)
    if dup.any():
        raise LensfinderError(f"{path} holds {int(frame.duplicated(list(KEY)).sum())} duplicate key(s) (RELEASE, "
                              f"BRICKID, OBJID), e.g. {frame.loc[dup, list(KEY)].head(2).values.tolist()}: "
                              "re-run the job that wrote it")
    return frame


def write_batch_table(tables, sweeps, metadata: dict, out_path) -> int:
    """One Parquet table for a batch of sweeps (inference's scores, the representations'
    index): each sweep's Arrow table gains a SWEEP column, the tables are concatenated in
    order (an empty sweep's untyped columns promoted to the others' types) and written
    atomically with ``metadata`` (bytes -> bytes). Returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([t.append_column("SWEEP", pa.array([s] * len(t), pa.string()))
                              for t, s in zip(tables, sweeps)], promote_options="default")
    with atomic_path(out_path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
    return len(table)


def write_tables(out_dir, table: pd.DataFrame, stem: str) -> None:
    """``<stem>.parquet``, ``<stem>.csv`` and ``<stem>.fits`` (extension ``<STEM>``) in
    ``out_dir``, each written atomically. FITS columns follow ``fits_dtype``; the CSV's text
    cells go through ``spreadsheet_safe``."""
    import fitsio
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    with atomic_path(out_dir / f"{stem}.parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
    with atomic_path(out_dir / f"{stem}.csv") as tmp:  # free text (comments) made spreadsheet-safe
        text = {c: table[c].map(spreadsheet_safe) for c in table.columns
                if table[c].dtype == object or pd.api.types.is_string_dtype(table[c])}
        table.assign(**text).to_csv(tmp, index=False)
    arr = np.zeros(len(table), dtype=[(c, fits_dtype(table[c])) for c in table.columns])
    for c in table.columns:
        if arr.dtype[c].kind == "S":
            arr[c] = table[c].astype(str).str.encode("utf-8").to_numpy()
        else:
            arr[c] = table[c].to_numpy().astype(arr.dtype[c])
    with atomic_path(out_dir / f"{stem}.fits") as tmp:
        fitsio.write(str(tmp), arr, extname=stem.upper(), clobber=True)


def fits_dtype(col: pd.Series) -> str:
    """The FITS column type of a table column: booleans as logicals, integers as 64-bit,
    floats as double, anything else as a UTF-8 string as wide as its longest value."""
    if col.dtype.kind == "b":
        return "?"
    if col.dtype.kind in "iu":
        return "i8"
    if col.dtype.kind == "f":
        return "f8"
    width = int(col.astype(str).str.encode("utf-8").str.len().max()) if len(col) else 1
    return f"S{max(width, 1)}"
