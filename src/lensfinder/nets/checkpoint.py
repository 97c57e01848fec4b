"""Checkpoints: one loader for every model lensfinder writes (networks and encoders).

A checkpoint is a ``torch.save`` dict with a ``format`` tag, the spec that rebuilds the
model and its ``state_dict``; ``restore`` checks the tag and returns the model in eval mode
with the dict. Every checkpoint holds tensors and plain Python values only and is read
with ``torch.load(weights_only=True)``: a file handed over cannot run code here.
``load_checkpoint`` is that for the networks of the ``train`` rule.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from lensfinder.errors import LensfinderError
from lensfinder.nets.registry import ModelSpec

NETWORK_FORMAT = "lensfinder-checkpoint-1"


def restore(path, fmt: str, build, device="cpu", what: str = "checkpoint", rule: str = "train"):
    """(model in eval mode on ``device``, checkpoint dict) of the ``fmt`` checkpoint at
    ``path``; ``build(ck)`` makes the untrained model. A missing file names the ``rule``
    that writes it."""
    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"{what} {path} does not exist: run the {rule} rule")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise LensfinderError(f"{path} holds Python objects beyond tensors and plain values (lensfinder writes "
                              "none since 2026-12-07; older checkpoints held NumPy arrays); it is not loaded, as it "
                              f"could run code ({str(err).splitlines()[0]}). Re-run the {rule} rule to write it "
                              "again") from err
    if not isinstance(ck, dict) or ck.get("format") != fmt:
        found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise LensfinderError(f"{path} is not a lensfinder {what} (format {found!r}, expected {fmt!r})")
    model = build(ck)
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval(), ck


def load_checkpoint(path, device="cpu"):
    """(network in eval mode, checkpoint dict) from a ``best.pt`` or ``last.pt``."""
    return restore(path, NETWORK_FORMAT, lambda ck: ModelSpec(**ck["model_spec"]).build(), device)
