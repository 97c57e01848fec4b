"""Visual inspection: a web portal where people grade candidates, and the grades fed back.

* ``candidates``: the table to grade (recommendations or a training set's review.csv);
* ``database``: the SQLite grades file (WAL, every grade committed before the answer);
* ``consensus``: paper IV's consensus of several graders (mean -> A/B/C/D);
* ``images``: PNG views (RGB, g, r, z, 201-px context) from the run's shards, LRU-cached;
* ``access``: who may do what: the portal's and each grader's token, origin, body and
  content-type checks for anything that changes grades, security headers on every answer;
* ``app``: the Starlette app: the page and its JSON API (grades posted by object key);
* ``cli``: ``lensfinder-inspect serve``;
* ``inspection``: rule ``inspection``: graded tables, new lenses, hard negatives and rejections for the next run.
"""
