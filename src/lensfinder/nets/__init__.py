"""The networks and their training (rule ``train``), as timm lays out models: one file per
architecture, the layers they share, a registry of named configurations.

* ``layers``: the input transform and the rank-spanning batch norms and dropouts;
* ``deeplens``: L18, the DeepLens ResNet of papers II-IV, and its shielded variant;
* ``efficientnet``: EfficientNetV2 from timm (paper IV);
* ``registry``: ``ModelSpec``: presets and architectures by name;
* ``scoring``: a trained network applied to cutouts (checkpoints, exported programs, TorchScript);
* ``runtime``: ranks, devices, seeds, determinism and pre-emption, shared with the S22 pretraining;
* ``train``: the data-parallel trainer; ``launch``: ``lensfinder-train`` (torchrun, one node or several).

The package sits below the training set: its contamination filter scores drawn nonlenses
with the previous generation's network.
"""
