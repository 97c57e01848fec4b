"""What the search achieves, measured.

* ``never_seen``: rule ``evaluate``: quality on objects the networks never saw, at the sky's
  lens density;
* ``selection_function``: rules ``selection_function`` and ``selection_crosscheck``:
  completeness of injected lenses by Einstein radius and source magnitude;
* ``accounting``: rule ``accounting``: every object followed from sweep row to recommendation.
"""
