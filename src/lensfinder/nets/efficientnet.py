"""EfficientNetV2 from timm, with one logit (paper IV).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from lensfinder.errors import LensfinderError
from lensfinder.nets.layers import BatchDropout

log = logging.getLogger(__name__)


def efficientnet(variant="tf_efficientnetv2_s", pretrained=None, drop_rate=0.2, drop_path_rate=0.0):
    """EfficientNetV2 from timm with 3 input channels and one logit.

    ``pretrained``: None (from scratch), "hub" (timm's weights; needs network access) or
    the path of a local weights file (a timm state dict; the classifier is re-initialised).
    When the weights cannot be had, training goes on from scratch and the log says so.
    ``drop_rate``: dropout before the classifier; ``drop_path_rate``: stochastic depth.
    """
    import timm

    kwargs = dict(in_chans=3, num_classes=1, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    model = None
    if pretrained == "hub":
        try:
            model = timm.create_model(variant, pretrained=True, **kwargs)
        except Exception as err:  # noqa: BLE001 - offline machines: say so, go on from scratch
            log.warning("pre-trained %s weights could not be downloaded (%s): training from scratch", variant, err)
    if model is None:
        model = timm.create_model(variant, pretrained=False, **kwargs)
    if pretrained and pretrained != "hub":
        _load_local_weights(model, pretrained, variant)
    _init_one_logit_head(model.get_classifier())
    return _head_dropout_as_module(model)


def _init_one_logit_head(head: nn.Linear):
    """Glorot-uniform weights and zero bias, as paper IV's Keras Dense head. timm draws
    U(-1/sqrt(n_out), +1/sqrt(n_out)): with one output that is U(-1, 1), logits of ~+-20 at
    the start, saturated and chaotic training (the rounding of one step grows ~2x per step)."""
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)


def _load_local_weights(model, path, variant):
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"pre-trained weights file {path} does not exist: fix the model's 'pretrained' setting")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    head = model.get_classifier()
    head_keys = {f"classifier.{k}" for k in head.state_dict()} if head is not None else set()
    state = {k: v for k, v in state.items() if k not in head_keys and not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = len(state) - len(unexpected)
    if loaded == 0:
        raise LensfinderError(f"pre-trained weights file {path} holds no weight of {variant}")
    log.info("loaded %d pre-trained tensors from %s (%d left at init: %s)", loaded, path, len(missing),
             ", ".join(sorted(missing)[:4]))


def _head_dropout_as_module(model):
    """timm's EfficientNet drops out before its classifier with F.dropout (torch's generator,
    per process); do the same with a BatchDropout right after the pooling, so the masks are
    drawn per global batch. The pooling holds no state: state-dict keys are unchanged."""
    p, model.drop_rate = model.drop_rate, 0.0
    if p > 0:
        model.global_pool = nn.Sequential(model.global_pool, BatchDropout(p))
    return model
