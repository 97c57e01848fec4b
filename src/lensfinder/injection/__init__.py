"""Injections: simulated strong lenses painted onto real survey cutouts (rule ``inject``, and the
training set's injected positives).

* ``config``: the priors of lens and source, the deflector cuts, the selection function's grid;
* ``arcs``: ray-tracing a lensed Sersic source (lenstronomy), its PSF and photon noise;
* ``deflectors``: which selected objects may carry an injection, found sweep by sweep;
* ``sets``: the selection function's injection set and the training set's injected positives.
"""
