"""The sealed test survey: a second mock sky, with its own seed and area, that the search
never sees until its trained networks score it (``snakemake --cores all sealed``, on
request only, after the main run).

* ``survey``: its settings, its sweeps and truth, the selection, and its cutouts, rendered
  straight from the drawn sky by ``lensfinder.mock.stamps`` (rule ``sealed_survey``);
* ``injected``: the selection function's injections on the sealed deflectors (rules
  ``sealed_inject``, ``sealed_infer_injections``), measured at the nonlenses' FPR cuts;
* ``baseline``: the catalogue-only classifier on sweep columns, no pixels (rule
  ``sealed_baseline``);
* ``measure``: every scorer at the sky's operating point, its ROC and the FPR by
  contaminant kind (rule ``sealed_measure``).

The networks score its cutouts with ``lensfinder.ranking.infer`` (rule ``sealed_infer``).
"""
