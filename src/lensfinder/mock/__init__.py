"""The mock survey: a miniature Legacy Surveys tree, in the real files' exact format, with
simulated strong lenses and contaminants (rule ``mock_survey``).

* ``layout``: its settings (``MockConfig``) and the files it will write, planned without
  drawing anything (the workflow reads this at DAG-build time);
* ``sky``: the drawn sky: galaxies, stars, lenses, contaminants, seeing and exposures;
* ``populations``: who lenses what: deflectors chosen from the field by their lensing
  cross-section, and their sources;
* ``zoo``: the contaminant kinds (spirals, rings, mergers, artefacts, ...) and their shapes;
* ``optics``: the Moffat PSF and the noise law, shared with the injections;
* ``light``: light components (Sersic, rings, spirals, lensed arcs) rendered onto any TAN
  pixel grid;
* ``write``: the bricks tables, sweeps, RICE-compressed coadds, lens catalogues and truth lists;
* ``stamps``: cutouts rendered straight from the drawn sky, without coadds (the sealed
  survey's and the gallery's);
* ``gallery``: a picture of the lenses and of every contaminant kind.
"""
