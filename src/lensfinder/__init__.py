"""lensfinder: a Snakemake-orchestrated search for strong gravitational lenses in the
DESI Legacy Imaging Surveys (fluxes in nanomaggies, coordinates in degrees, bands g, r, z).

The package is grouped by stage, as the workflow's rule files are, lowest layer first; a
module imports only from its own stage and the layers below it:

* ``errors``, ``files``, ``settings``, ``constants``, ``tables``, ``metrics``, ``plots``:
  what every stage shares;
* ``survey``: the Legacy Surveys files (bricks, sweeps, coadds, the cutout service);
* ``mock``: the mock survey (rule ``mock_survey``);
* ``catalog``: object selection (rules ``select``, ``selection_counts``), lens catalogues,
  cross-matching, truth lists;
* ``cutouts``: cutout shards (rule ``cutouts``);
* ``injection``: simulated lenses on real cutouts (rule ``inject``);
* ``nets``: the networks, their training (rule ``train``) and scoring;
* ``trainset``: the training set (rule ``trainset``);
* ``ranking``: inference, the meta-learner, shortlists, recommendations (rules ``infer``,
  ``ensemble``, ``shortlist``, ``rank``);
* ``evaluation``: never-seen quality, the selection function, the accounting;
* ``embed``: the self-supervised search (paper S22);
* ``portal``: visual inspection and the grades fed back (rule ``inspection``);
* ``workflow``, ``plan``, ``results``: the workflow's glue and the command-line reports.
"""

__version__ = "0.1.0"
