"""The networks: parameter counts, geometry, input transform, pre-trained weights."""

import logging

import pytest
import torch

from lensfinder.errors import LensfinderError
from lensfinder.models import DeepLensResNet, InputTransform, ModelSpec, count_parameters


def test_l18_has_the_published_parameter_count_and_stage_sizes():
    model = ModelSpec.from_config({"preset": "l18"}).build()
    assert count_parameters(model) == 3_511_681
    sizes = []
    for stage_last in (2, 5, 8, 11, 14):  # the last block of each of the five stages
        model.backbone.features[stage_last].register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    out = model(torch.randn(2, 3, 101, 101))
    assert out.shape == (2,)
    assert sizes == [(32, 101, 101), (64, 51, 51), (128, 26, 26), (256, 13, 13), (512, 7, 7)]


def test_shielded_resnet_is_near_paper_iv_and_shields_are_configurable():
    shielded = count_parameters(ModelSpec.from_config({"preset": "l18_shielded"}).build())
    assert abs(shielded - 194_433) / 194_433 < 0.001
    plain = DeepLensResNet(stages=[[16, 32], [32, 64]], blocks=3)
    with_shields = DeepLensResNet(stages=[[16, 32], [32, 64]], blocks=3, shields=[16, 8])
    # a 1x1 shield of width s after a stage of c channels adds c*s + s; the next stage reads s
    assert count_parameters(with_shields) < count_parameters(plain)
    assert with_shields(torch.randn(1, 3, 33, 33)).shape == (1, 1)
    with pytest.raises(LensfinderError, match="one width"):
        DeepLensResNet(stages=[[16, 32]], shields=[8, 8])


def test_efficientnetv2_s_size():
    n = count_parameters(ModelSpec.from_config({"preset": "efficientnetv2_s"}).build())
    assert 20.0e6 < n < 20.6e6  # paper IV: 20,542,883 with its Keras head


def test_input_transform_is_asinh_of_nanomaggies_and_crops():
    t = InputTransform(scale=[0.02, 0.03, 0.06], crop=5).module()
    x = torch.zeros(1, 3, 9, 9)
    x[0, :, 4, 4] = torch.tensor([0.02, 0.3, 6.0])
    y = t(x)
    assert y.shape == (1, 3, 5, 5)
    assert torch.allclose(y[0, :, 2, 2], torch.asinh(torch.tensor([1.0, 10.0, 100.0])) / 3)


def test_unknown_preset_or_keys_are_clear_errors():
    with pytest.raises(LensfinderError, match="preset 'l19' is unknown"):
        ModelSpec.from_config({"preset": "l19"})
    with pytest.raises(LensfinderError, match="keys \\['widht'\\] are unknown"):
        ModelSpec.from_config({"preset": "l18", "widht": 3})


def _one_step(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(torch.rand(2, 3, 64, 64) * 0.1),
                                                                torch.tensor([1.0, 0.0]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_efficientnetv2_s_trains_a_step_with_and_without_local_weights(tmp_path, caplog):
    import timm

    torch.manual_seed(123)
    donor = timm.create_model("tf_efficientnetv2_s", pretrained=False, num_classes=1000)
    weights = tmp_path / "efficientnetv2_s.pth"
    torch.save(donor.state_dict(), weights)
    with caplog.at_level(logging.INFO, logger="lensfinder.models"):
        model = ModelSpec.from_config({"preset": "efficientnetv2_s", "params": {"pretrained": str(weights)}}).build()
    assert torch.equal(model.backbone.conv_stem.weight, donor.conv_stem.weight)
    assert model.backbone.classifier.out_features == 1
    assert "pre-trained tensors" in caplog.text
    _one_step(model)
    _one_step(ModelSpec.from_config({"preset": "efficientnetv2_s"}).build())  # from scratch


def test_missing_or_foreign_weights_are_named(tmp_path, monkeypatch, caplog):
    with pytest.raises(LensfinderError, match="does not exist"):
        ModelSpec.from_config({"preset": "efficientnet_mini", "params": {"pretrained": str(tmp_path / "no.pth")}}).build()
    foreign = tmp_path / "foreign.pth"
    torch.save({"something.else": torch.zeros(3)}, foreign)
    with pytest.raises(LensfinderError, match="holds no weight"):
        ModelSpec.from_config({"preset": "efficientnet_mini", "params": {"pretrained": str(foreign)}}).build()
    # no network: the hub is unreachable, training goes on from scratch and says so
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="lensfinder.models"):
        model = ModelSpec.from_config({"preset": "efficientnet_mini", "params": {"pretrained": "hub"}}).build()
    assert "training from scratch" in caplog.text and model(torch.zeros(1, 3, 64, 64)).shape == (1,)
