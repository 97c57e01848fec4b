"""Catalogues of objects: the selection from the sweeps and the lens catalogues.

* ``select``: rules ``select`` and ``selection_counts``: the lens-search cuts of papers II-IV;
* ``lenses``: known-lens and candidate catalogues (CSV, FITS, lenscat), their union;
* ``crossmatch``: angular matching on the sphere (nearest, within, friends of friends);
* ``truth``: truth lists of lenses (the mock's, or confirmed lenses) matched to objects.
"""
