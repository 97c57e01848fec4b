"""The training set (rule ``trainset``): positives from lens catalogues (and injections),
stratified nonlenses, contamination filtering with every exclusion recorded, a grouped split.

* ``build``: the recipe, step by step (``build_trainset``);
* ``pool``: every selected object of the run in compact arrays, as the recipe draws them;
* ``filters``: the contamination filters of drawn nonlenses, and hard negatives;
* ``injections``: the injected positives (``trainset.injections``) and each row's SOURCE;
* ``split``: the split by system, stratified by (stratum, label);
* ``outputs``: labels, packed cutouts, exclusions, review table, summary and charts.
"""
