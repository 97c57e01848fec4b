"""Applying a trained model to cutouts: load a checkpoint, score fp16 nanomaggy arrays.

A scorer maps cutouts (B, 3, H, W) in nanomaggies (bands g, r, z) to lens probabilities
in [0, 1]. Supported checkpoints:

* a lensfinder checkpoint (``best.pt`` of the train rule: the previous generation's model),
  with its input transform;
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
    model = _load_model(path, device)

    @torch.no_grad()
    def score(batch):
        x = torch.as_tensor(np.asarray(batch), dtype=torch.float32, device=device)
        return torch.sigmoid(model(x).reshape(-1)).double().cpu().numpy()

    return score


def _load_model(path, device):
    """The model of a lensfinder checkpoint, an exported program or a TorchScript file."""
    import torch

    from .train import load_checkpoint

    try:
        return load_checkpoint(path, device)[0]
    except Exception:  # noqa: BLE001 - not a lensfinder checkpoint: try the next format
        pass
    try:
        return torch.export.load(str(path)).module().to(device)
    except Exception:  # noqa: BLE001 - not an exported program: try the next format
        pass
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as err:
        raise LensfinderError(
            f"model checkpoint {path} is neither a lensfinder checkpoint, a torch.export program nor a "
            f"TorchScript model ({err})"
        ) from err


def score_array(scorer, images, batch_size: int = 256) -> np.ndarray:
    """Probabilities for an (N, 3, H, W) array (fp16 is converted batch by batch)."""
    out = [scorer(images[i : i + batch_size].astype(np.float32)) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)
