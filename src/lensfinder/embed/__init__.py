"""Self-supervised representations, similarity search and a linear probe (paper S22).

* ``augment``: S22's augmentations, in S22's order, batched in torch;
* ``encoders``: the encoders (ResNet-50, 2048-d, for GPUs; a small ResNet for CPUs),
  each behind the input transform of ``lensfinder.nets``;
* ``moco``: MoCo v2 (momentum encoder, queue of negatives, InfoNCE);
* ``pretrain``: rule ``pretrain``: the pretraining loop (images drawn uniformly in z
  magnitude, DDP, pre-emption and checkpoints on ``lensfinder.nets.runtime``, as training);
* ``represent``: rule ``embed``: fp16 representations of every cutout, keyed by
  (RELEASE, BRICKID, OBJID);
* ``index``: rule ``similarity_index``: Faiss indexes (exact, or compressed with its recall
  against exact search);
* ``similar``: rule ``similar_candidates``: neighbours of a query, candidate tables from a
  query list, and the ``lensfinder-similar`` command;
* ``probe``: rules ``probe`` and ``probe_injections``: the linear probe (logistic regression
  on frozen representations);
* ``summary``: rule ``embed_summary``: enrichment of lenses among the neighbours of known
  lenses, the probe beside the networks, and their figures.
"""
