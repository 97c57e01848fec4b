"""A trained network applied to cutouts: (B, 3, H, W) fp16 or float nanomaggies, bands g, r, z
-> logits and lens probabilities.

``score_batches`` scores batches for inference (``lensfinder.ranking.infer``): the conversion to fp32 happens on the device, with bf16
autocast and channels_last on GPUs, and optionally the 8 flips and rotations of the square
are averaged (test-time augmentation, on logits). The logit is float32 from a float32 head:
under bf16 autocast the backbone runs in bf16, but the final linear layer runs in float32,
so logits are never rounded to bf16's 8 bits of mantissa (which would make ties of the top
scores). Rankings use the logit; the probability is its sigmoid, in float64, for people to read.

``load_scorer`` and ``score_array`` score arrays for the training set's contamination filter,
with any model it may be given:

* a lensfinder checkpoint (``best.pt`` of the train rule: the previous generation's model),
  with its input transform;
* an exported program (``torch.export.save``, ``.pt2``, batch dimension dynamic) or a
  TorchScript file (``torch.jit.save``) whose forward takes the nanomaggy batch (float32)
  and returns logits (one per image): any model, with its normalisation built in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from lensfinder.errors import LensfinderError
from lensfinder.nets.checkpoint import load_checkpoint


def d4(x):
    """The 8 images of the dihedral group of the square (rotations, then mirrored)."""
    rots = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rots + [torch.flip(r, dims=(-1,)) for r in rots]


def check_compatible(checkpoint_path, ck, manifest_path, manifest):
    """A checkpoint and shards must agree on bands, units and cutout shape."""
    problems = []
    if list(ck.get("cutout_shape", [])) != list(manifest["shape"]):
        problems.append(f"cutout shape {ck.get('cutout_shape')} (model) vs {manifest['shape']} (shards)")
    if ck.get("bands") != manifest["bands"]:
        problems.append(f"bands {ck.get('bands')} vs {manifest['bands']}")
    if ck.get("units") != manifest["units"]:
        problems.append(f"units {ck.get('units')} vs {manifest['units']}")
    if problems:
        raise LensfinderError(
            f"checkpoint {checkpoint_path} does not match shards {manifest_path}: {'; '.join(problems)}; "
            "re-run the cutouts with the model's cutout size, or retrain"
        )


def final_linear(model) -> torch.nn.Linear:
    """The layer that makes a LensNet's logit (DeepLensResNet ``head``, timm's classifier)."""
    backbone = model.backbone
    layer = backbone.get_classifier() if hasattr(backbone, "get_classifier") else backbone.head
    if not isinstance(layer, torch.nn.Linear):
        raise LensfinderError(f"the model's final layer is a {type(layer).__name__}, not a linear layer")
    return layer


def float32_head(model):
    """Make the final linear layer ignore autocast: bf16 features in, a float32 logit out.

    The layer's ``forward`` is replaced on this instance only, so its weights and the
    checkpoint's keys are unchanged.
    """
    layer = final_linear(model)

    def forward(x):
        with torch.autocast(x.device.type, enabled=False):
            return torch.nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float())

    layer.forward = forward
    return model


@torch.no_grad()
def score_batches(model, batches, device, tta=False, bf16=True):
    """Yield (float32 logits, float64 probabilities) per batch of fp16 nanomaggy cutouts;
    with ``tta`` the logits of the 8 flips/rotations are averaged."""
    cuda = device.type == "cuda"
    float32_head(model)
    for images in batches:
        x = images.to(device, non_blocking=True).float()
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        views = d4(x) if tta else [x]
        logits = []
        for v in views:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and bf16):
                logits.append(model(v).float())
        lg = torch.stack(logits).mean(0).cpu().numpy().astype(np.float32)
        yield lg, expit(lg.astype(np.float64))


def load_scorer(path, device: str = "cpu"):
    """A callable: float32 nanomaggy batch (numpy or torch) -> probabilities (numpy)."""
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
    """The model of a lensfinder checkpoint, an exported program or a TorchScript file.
    A pickle that would run code is refused, never passed on to the other loaders; exported
    programs and TorchScript files carry code of their own: give only files you trust."""
    try:
        return load_checkpoint(path, device)[0]
    except LensfinderError as err:
        if "could run code" in str(err):
            raise
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
