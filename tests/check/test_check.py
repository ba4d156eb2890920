from __future__ import annotations

import json
import subprocess
import sys

import torch
from torch import nn

from trickbag.check import gradient_check, overfit_batch
from trickbag.models import resnet, small_cnn


class WrongBackward(torch.autograd.Function):
    """y = x * w, but the gradient for w is doubled: a deliberately broken custom layer."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad * w, (2 * grad * x).sum(0)


class BrokenScale(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x):
        return WrongBackward.apply(x, self.w)


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_gradient_check_passes_on_our_models():
    torch.manual_seed(0)
    x, y = batch()
    for model in (small_cnn(widths=(4, 8)), resnet(layers=(1, 1), width=4, stem="mnist", in_channels=1, num_classes=10)):
        report = gradient_check(model, x, y)
        assert report and all(layer.passed for layer in report), [l for l in report if not l.passed]
        assert max(layer.max_rel_error for layer in report) < 1e-4  # a wrong backward gives ~1


def test_gradient_check_flags_the_broken_layer_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 6), BrokenScale(6), nn.Tanh(), nn.Linear(6, 10))
    x, y = batch()
    report = {layer.name: layer for layer in gradient_check(model, x, y)}
    assert not report["2.w"].passed and report["2.w"].max_rel_error > 0.3
    assert report["1.weight"].passed and report["4.weight"].passed  # the broken w does not corrupt the others


def test_tiny_gradients_and_kinks_are_not_false_alarms():
    # Entry 0 of the weight sees an input 1e-9 times smaller than the others: its gradient
    # is ~1e-9 of the tensor's largest, where float64 round-off in the two losses
    # (~1e-16 * L / h = 1e-10) exceeds it. Measured against 1e-3 of the tensor's largest
    # gradient it passes; measured against itself (rel_floor=0) it does not.
    torch.manual_seed(0)
    x = torch.randn(8, 5).double()
    x[:, 0] *= 1e-9
    y = torch.randint(0, 3, (8,))
    lin = nn.Linear(5, 3).double()
    every = {"samples": 15, "seed": 1}  # all 15 entries
    assert all(layer.passed for layer in gradient_check(lin, x, y, **every))
    assert not next(l for l in gradient_check(lin, x, y, rel_floor=0, **every) if l.name == "weight").passed

    # A ReLU pre-activation 3e-7 from its kink: the step h = 1e-6 crosses it, 1e-7 does not.
    class Kink(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0]))

        def forward(self, z):
            return torch.relu(z * self.w - (1 - 3e-7)).expand(-1, 3) * torch.tensor([1.0, 2.0, 3.0])

    (layer,) = gradient_check(Kink(), torch.ones(4, 1), torch.zeros(4, dtype=torch.long))
    assert layer.passed and layer.max_rel_error < 1e-4


def test_gradient_check_leaves_the_model_alone():
    model = small_cnn(widths=(4, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_check(model, *batch())
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_overfit_one_batch_passes_and_fails_with_advice():
    torch.manual_seed(0)
    x, y = batch(16)
    good = overfit_batch(small_cnn(widths=(16, 32)), x, y, steps=300)
    assert good.passed and good.final_loss < 0.05 and good.accuracy == 1.0 and not good.advice
    frozen = small_cnn(widths=(16, 32))
    for p in list(frozen.parameters())[:-2]:
        p.requires_grad_(False)
    frozen[-1].weight.data.zero_()
    bad = overfit_batch(nn.Sequential(frozen, nn.Dropout(0.9)), x, y, steps=60)
    assert not bad.passed and bad.final_loss > 0.05
    assert any("lr" in tip for tip in bad.advice) and any("regularization" in tip for tip in bad.advice)


def test_check_cli(tmp_path):
    from tests.conftest import DATA_ARGS

    # --steps 600: the loss falls below 0.05 after 213 steps on Fashion-MNIST, but 360 on the
    # generated data (the default 300 failed there); the check stops as soon as it passes
    out = subprocess.run([sys.executable, "-m", "trickbag.cli", "check", "--recipe", "fashion-mnist-quick", "--set", "model.params={widths: [8, 16]}",
                          "--set", "data.train_subset=512", "--steps", "600", "--json", *DATA_ARGS],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["gradient_check"] and all(layer["passed"] for layer in res["gradient_check"])
    assert res["overfit"]["passed"] and res["passed"]
