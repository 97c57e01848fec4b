"""Applying a trained model to cutouts: load a checkpoint, score fp16 nanomaggy arrays.

A scorer maps cutouts (B, 3, H, W) in nanomaggies (bands g, r, z) to lens probabilities
in [0, 1]. Supported checkpoints:

* an exported program (``torch.export.save``, ``.pt2``, batch dimension dynamic) or a
  TorchScript file (``torch.jit.save``) whose forward takes the nanomaggy batch (float32)
  and returns logits (one per image): any model, with its normalisation built in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import LensfinderError


def load_scorer(path, device: str = "cpu"):
    """A callable: float32 nanomaggy batch (numpy or torch) -> probabilities (numpy)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"model checkpoint {path} does not exist: check trainset.previous_model")
    try:
        model = torch.export.load(str(path)).module().to(device)
    except Exception:  # noqa: BLE001 - not an exported program: try TorchScript
        try:
            model = torch.jit.load(str(path), map_location=device)
            model.eval()
        except RuntimeError as err:
            raise LensfinderError(
                f"model checkpoint {path} is neither a torch.export program nor a TorchScript model ({err})"
            ) from err

    @torch.no_grad()
    def score(batch):
        x = torch.as_tensor(np.asarray(batch), dtype=torch.float32, device=device)
        return torch.sigmoid(model(x).reshape(-1)).double().cpu().numpy()

    return score


def score_array(scorer, images, batch_size: int = 256) -> np.ndarray:
    """Probabilities for an (N, 3, H, W) array (fp16 is converted batch by batch)."""
    out = [scorer(images[i : i + batch_size].astype(np.float32)) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)
