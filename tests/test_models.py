"""The networks: parameter counts, geometry, input transform, pre-trained weights."""

import logging

import pytest
import torch

from lensfinder.errors import LensfinderError
from lensfinder.nets.deeplens import DeepLensResNet
from lensfinder.nets.layers import (
    BatchDropout,
    BatchDropPath,
    DistBatchNorm2d,
    InputTransform,
    for_data_parallel,
    global_batch_masks,
)
from lensfinder.nets.registry import ModelSpec, count_parameters


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
    with pytest.raises(LensfinderError, match="model config: unknown key\\(s\\) \\['widht'\\]"):
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
    with caplog.at_level(logging.INFO, logger="lensfinder.nets"):
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
    with caplog.at_level(logging.WARNING, logger="lensfinder.nets"):
        model = ModelSpec.from_config({"preset": "efficientnet_mini", "params": {"pretrained": "hub"}}).build()
    assert "training from scratch" in caplog.text and model(torch.zeros(1, 3, 64, 64)).shape == (1,)


# ----------------------------------------------------------------------------- data parallel
def test_efficientnet_layers_span_the_ranks_with_the_same_parameters():
    """Every batch norm of timm's EfficientNet spans the ranks and every dropout / drop-path
    draws per global batch, with parameters, state-dict keys and activations unchanged."""
    import timm

    model = ModelSpec.from_config({"preset": "efficientnet_mini", "params": {"drop_path_rate": 0.1}}).build()
    plain = timm.create_model("tf_efficientnetv2_b0", num_classes=1, drop_rate=0.1, drop_path_rate=0.1)
    assert count_parameters(model) == count_parameters(plain) == 5_859_985
    ours = {k.removeprefix("backbone.") for k in model.state_dict() if k.startswith("backbone.")}
    assert ours == set(plain.state_dict())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in plain.modules()) == 59
    assert all(type(m).__name__ == "DistBatchNormAct2d" for m in norms)
    plain_acts = [type(m.act) for m in plain.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert [type(m.act) for m in norms] == plain_acts and torch.nn.SiLU in plain_acts  # fused activation kept
    drop_paths = [m for m in model.modules() if isinstance(m, BatchDropPath)]
    assert len(drop_paths) == sum(type(m).__name__ == "DropPath" for m in plain.modules()) > 0
    assert [m.p for m in model.modules() if isinstance(m, BatchDropout)] == [0.1]  # the head's
    assert model.backbone.drop_rate == 0  # not applied a second time by timm's F.dropout
    resnet = ModelSpec.from_config({"preset": "resnet_mini"}).build()
    assert all(type(m) is DistBatchNorm2d for m in resnet.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # eval mode: the running statistics, as plain timm
    plain.load_state_dict({k.removeprefix("backbone."): v for k, v in model.state_dict().items()
                           if k.startswith("backbone.")})
    x = torch.rand(3, 3, 64, 64) * 0.1
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), plain.eval()(model.transform(x)).reshape(-1), atol=1e-5)


def test_efficientnet_head_starts_with_glorot_weights():
    """timm's U(-1, 1) for a one-logit head gives logits of ~+-20 at the start."""
    head = ModelSpec.from_config({"preset": "efficientnet_mini"}).build().backbone.classifier
    assert head.weight.abs().max() <= (6 / (head.in_features + 1)) ** 0.5 and not head.bias.any()


def test_layers_that_would_differ_between_ranks_are_refused():
    with pytest.raises(LensfinderError, match=r"layer 1 \(BatchNorm1d\)"):
        for_data_parallel(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)))
    with pytest.raises(LensfinderError, match=r"layer 1 \(Dropout2d\)"):
        for_data_parallel(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Dropout2d(0.1)))
    converted = for_data_parallel(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3),
                                                      torch.nn.Dropout(0.2)))
    assert type(converted[1]) is DistBatchNorm2d and isinstance(converted[2], BatchDropout) and converted[2].p == 0.2


def test_dropout_masks_of_two_ranks_are_the_slices_of_the_global_batch_mask():
    """A rank holding rows 16:32 of a global batch of 32 draws exactly those rows of the mask
    one process draws for all 32; images get independent masks; eval mode drops nothing."""
    x = torch.ones(32, 200)
    for layer in (BatchDropout(0.3), BatchDropPath(0.3)):
        def masks(rows):
            with global_batch_masks(torch.Generator().manual_seed(11), rows, 32):
                return layer(x[rows])

        whole = masks(slice(0, 32))
        assert torch.equal(torch.cat([masks(slice(0, 16)), masks(slice(16, 32))]), whole)
        assert set(whole.unique().tolist()) <= {0.0, float(torch.tensor(1 / 0.7))}  # dropped, or scaled by 1/keep
        assert len(whole.unique(dim=0)) > 1  # not one mask for every image
        assert torch.equal(layer.eval()(x), x)
        layer.train()
        with pytest.raises(LensfinderError, match="holds 16 of the global batch"):
            with global_batch_masks(torch.Generator(), slice(0, 16), 32):
                layer(x)
    with global_batch_masks(torch.Generator().manual_seed(0), slice(0, 8), 8):
        kept = (BatchDropout(0.3)(torch.ones(8, 5000)) > 0).float().mean()
    assert abs(float(kept) - 0.7) < 0.02


BF16_BN_SCRIPT = '''
import sys, torch, torch.distributed as dist
from lensfinder.nets.layers import DistBatchNorm2d
dist.init_process_group("gloo")
rank = dist.get_rank()
x = 3.0 + 0.5 * torch.randn(2, 4, 150, 150, generator=torch.Generator().manual_seed(rank))
x = x.bfloat16().requires_grad_()
bn = DistBatchNorm2d(4, momentum=1.0)  # running statistics = this global batch's
with torch.autocast("cpu", dtype=torch.bfloat16):
    y = bn(x)
y.float().square().sum().backward()
torch.save({"x": x.detach(), "y": y.detach(), "mean": bn.running_mean, "var": bn.running_var,
            "grad": x.grad}, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
'''


def test_distributed_batch_norm_counts_and_sums_in_float32_under_bf16(tmp_path):
    """2 gloo ranks of bf16 activations, 45,000 pixels per channel each (bf16 would round
    that count to 45,056 and its sums to 3 digits): global mean and variance exact to
    float32, the output normalised over both ranks."""
    import subprocess
    import sys

    script = tmp_path / "bn.py"
    script.write_text(BF16_BN_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    x = torch.cat([r["x"] for r in ranks]).double()
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3))  # var: unbiased, as the running statistic
    for r in ranks:
        assert r["y"].dtype == torch.bfloat16 and r["grad"] is not None and torch.isfinite(r["grad"]).all()
        assert torch.allclose(r["mean"].double(), mean, rtol=1e-6)
        assert torch.allclose(r["var"].double(), var, rtol=1e-5)
    y = torch.cat([r["y"] for r in ranks]).double()
    n = x[:, 0].numel()
    expected = (x - mean.view(1, 4, 1, 1)) / torch.sqrt(var.view(1, 4, 1, 1) * (n - 1) / n + 1e-5)
    assert torch.allclose(y, expected, rtol=1 / 64, atol=1 / 64)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-3 and (y.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
