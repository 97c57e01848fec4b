"""The mock survey: a miniature Legacy Surveys tree, in the real files' exact format, with
simulated strong lenses and look-alikes (rule ``mock_survey``).

* ``layout``: its settings (``MockConfig``) and the files it will write, planned without
  drawing anything (the workflow reads this at DAG-build time);
* ``sky``: the population: galaxies, stars, lenses, look-alikes, PSFs and depths;
* ``light``: light components (Sersic, rings, spirals, lensed arcs) rendered onto any TAN
  pixel grid;
* ``write``: the bricks tables, sweeps, RICE-compressed coadds, lens catalogues and truth lists.
"""
