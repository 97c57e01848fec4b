"""Ranking: inference, the meta-learner, per-sweep shortlists and the recommendations.

* ``infer``: rules ``infer``, ``trainset_scores`` and ``infer_injections``: a network over shard
  sets, scores to Parquet;
* ``stacking``: the monotone stacking network;
* ``ensemble``: rule ``ensemble``: the meta-learner of paper IV, fit and compared;
* ``scores``: each object's base-model, mean and ensemble logits, the ranking order and cut;
* ``shortlist``: rule ``shortlist``: each sweep's rows the ranking could need;
* ``rank``: rule ``rank``: the ranked recommendations, their summary and mosaic.
"""
