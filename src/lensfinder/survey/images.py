"""Coadd images: their headers and world coordinate systems.
"""

from __future__ import annotations

import os

import fitsio


def read_image_header(path: str | os.PathLike, ext: int = 1):
    """The image header of HDU ``ext`` as an astropy Header.

    For tile-compressed images (``.fits.fz``) the binary-table cards are translated back
    to the image's own (ZNAXISn -> NAXISn) and the compression cards dropped.
    """
    from astropy.io import fits as afits

    hdr = fitsio.read_header(str(path), ext=ext)
    compressed = bool(hdr.get("ZIMAGE", False))
    table_keys = {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS", "COMMENT", "HISTORY", ""}
    header = afits.Header()
    if compressed:
        header["NAXIS"] = hdr["ZNAXIS"]
        for i in range(1, hdr["ZNAXIS"] + 1):
            header[f"NAXIS{i}"] = hdr[f"ZNAXIS{i}"]
    for r in hdr.records():
        name = r["name"]
        if compressed and (name in table_keys or name[:5] in ("TTYPE", "TFORM") or name.startswith("Z")):
            continue
        if name in ("COMMENT", "HISTORY", "") or name in header:
            continue
        header[name] = r["value"]
    return header


def read_header_wcs(path: str | os.PathLike, ext: int = 1):
    """(astropy TAN WCS, header) of a coadd image, from its own FITS header (HDU 1 for .fz)."""
    from astropy.wcs import WCS

    header = read_image_header(path, ext)
    return WCS(header, naxis=2), header
