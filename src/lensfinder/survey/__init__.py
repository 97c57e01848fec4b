"""The survey: readers of the real DESI Legacy Imaging Surveys files (DR8, DR9, DR10).

* ``tree``: a Legacy Surveys tree on disk (one release, one or several regions) and its paths;
* ``bricks``: the brick grid and the bricks table;
* ``sweeps``: sweep names, sky boxes, columns by release, and reading them;
* ``columns``: the DR10 sweep columns with their dtypes and units;
* ``images``: coadd headers and their WCS;
* ``positions``: DESI names, Galactic latitude, the photometric region of a position;
* ``service``: the Legacy Surveys cutout service, for objects without a local coadd.

Conventions (``lensfinder.constants``): ICRS degrees, AB nanomaggies, bands g, r, z, coadd
pixels with North up and East left; geometry comes from the files, never from constants.
"""
