from __future__ import annotations

import pytest
import torch
from torch import nn

from trickbag.models import BasicBlock, Bottleneck, build_model, resnet, small_cnn
from trickbag.optim import build_optimizer, clip_gradients, linear_scaling, param_groups


def test_no_decay_group_has_exactly_biases_and_norm_parameters():
    model = resnet(layers=(1, 1), width=8, stem="mnist", in_channels=1, num_classes=10)
    groups = {g["name"]: g for g in param_groups(model, 5e-4)}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    expected = set()
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if isinstance(m, nn.BatchNorm2d) or name == "bias":
                expected.add(id(p))
    assert no_decay == expected and len(expected) > 0
    decay = {id(p) for p in groups["decay"]["params"]}
    assert decay.isdisjoint(no_decay) and len(decay) + len(no_decay) == len(list(model.parameters()))
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 5e-4
    assert all(p.dim() > 1 for p in groups["decay"]["params"])
    assert len(param_groups(model, 5e-4, no_bias_decay=False)) == 1


def test_linear_scaling_rule():
    assert linear_scaling(0.1, 1024) == pytest.approx(0.4)
    assert linear_scaling(0.1, 128) == pytest.approx(0.05)


def test_optimizers_by_name():
    p = [nn.Parameter(torch.zeros(2))]
    opt = build_optimizer("nesterov", p, lr=0.1)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    assert isinstance(build_optimizer("adamw", p, lr=1e-3, weight_decay=0.05), torch.optim.AdamW)
    with pytest.raises(KeyError, match="did you mean 'adamw'"):
        build_optimizer("adamww", p, lr=0.1)


def test_clipping_unscales_first_under_amp():
    w = nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss = (w * torch.tensor([3.0, 4.0, 0.0, 0.0])).sum()
    scaler.scale(loss).backward()
    norm = clip_gradients([w], max_norm=1.0, scaler=scaler, optimizer=opt)
    assert norm == pytest.approx(5.0)  # the true norm, not 5 * 1024
    assert float(w.grad.norm()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("variant", ["A", "B", "C", "D"])
def test_resnet_variants(variant):
    m = resnet(depth=50, variant=variant)
    block = m.stages[1][0]
    assert isinstance(block, Bottleneck)
    assert (block.conv1.stride, block.conv2.stride) == (((2, 2), (1, 1)) if variant == "A" else ((1, 1), (2, 2)))
    stem_convs = [c for c in m.stem.modules() if isinstance(c, nn.Conv2d)]
    assert len(stem_convs) == (3 if variant in "CD" else 1)
    has_avgpool = any(isinstance(s, nn.AvgPool2d) for s in block.shortcut.modules())
    assert has_avgpool == (variant == "D")
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_small_models_and_registry():
    assert small_cnn(widths=(8, 16), depth=2, separable=True)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert build_model("row_lstm", hidden=16)(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert build_model("resnet", layers=(1, 1, 1), width=8, stem="cifar", num_classes=100)(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    b = BasicBlock(8, 8)
    b.zero_init_last()
    assert torch.all(b.bn2.weight == 0)
    with pytest.raises(KeyError, match="did you mean 'small_cnn'"):
        build_model("small_cn")
    with pytest.raises(TypeError, match="no parameter 'widht'"):
        build_model("small_cnn", widht=3)
    with pytest.raises(ValueError, match="variant must be one of"):
        resnet(variant="E")
