from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trickbag import init as I
from trickbag.models import plain_cnn, plain_mlp


class BasicBlock(nn.Module):
    """A torchvision-style residual block with a projection shortcut."""

    def __init__(self, cin, cout, affine=True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, affine=affine)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.downsample(x))


def small_net():
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), BasicBlock(16, 32), BasicBlock(32, 32, affine=False),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_initialize_fills_weights_zeroes_biases_and_resets_norms():
    net = small_net()
    for p in net.parameters():
        nn.init.constant_(p, 3.0)
    names = I.initialize(net, "he_normal", seed=0)
    assert "0.weight" in names and "6.bias" in names and "1.weight" in names
    assert torch.all(net[0].bias == 0) and torch.all(net[6].bias == 0)
    assert torch.all(net[1].weight == 1) and torch.all(net[1].bias == 0)
    w = net[2].conv2.weight  # 32 x 32 x 3 x 3 -> fan_in 288
    assert float(w.detach().std()) == pytest.approx(math.sqrt(2 / 288), rel=0.15)


def test_initialize_passes_parameters_and_is_seeded():
    a, b = plain_mlp(depth=3), plain_mlp(depth=3)
    I.initialize(a, "truncated_normal", stddev=0.01, seed=5)
    I.initialize(b, "truncated_normal", stddev=0.01, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert float(a[1].weight.detach().abs().max()) <= 0.02 + 1e-7


def test_initialize_bad_name_and_parameter():
    with pytest.raises(KeyError, match="did you mean 'orthogonal'"):
        I.initialize(plain_mlp(depth=2), "orthogonl")
    with pytest.raises(TypeError, match="no parameter 'std' \\(did you mean 'stddev'\\?\\)"):
        I.initialize(plain_mlp(depth=2), "random_normal", std=0.1)


def test_zero_gamma_zeroes_the_last_bn_of_each_block_only():
    net = small_net()
    names = I.zero_gamma(net)
    assert names == ["2.bn2.weight"]  # block 3's last BN has no gamma (affine=False): skipped
    assert torch.all(net[2].bn2.weight == 0)
    assert torch.all(net[2].bn1.weight == 1) and torch.all(net[2].downsample[1].weight == 1)
    # the residual branch now outputs 0: the block computes relu(shortcut(x))
    block = net[2].eval()
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(block(x), torch.relu(block.downsample(x)))


def test_zero_gamma_calls_zero_init_last_when_a_block_defines_it():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(4)
            self.called = False

        def zero_init_last(self):
            self.called = True
            nn.init.zeros_(self.norm.weight)

    net = nn.Sequential(Custom())
    assert I.zero_gamma(net) == ["0"] and net[0].called and torch.all(net[0].norm.weight == 0)


@pytest.mark.parametrize("make", [lambda: nn.LSTM(5, 8, num_layers=2), lambda: nn.LSTMCell(5, 8)])
def test_lstm_forget_bias_sums_to_value(make):
    lstm = make()
    before = {n: p.detach().clone() for n, p in lstm.named_parameters()}
    names = I.lstm_forget_bias(nn.Sequential(lstm), 1.0)
    assert names
    layers = [""] if isinstance(lstm, nn.LSTMCell) else ["_l0", "_l1"]
    for sfx in layers:
        b_ih, b_hh = getattr(lstm, "bias_ih" + sfx), getattr(lstm, "bias_hh" + sfx)
        total = b_ih + b_hh
        assert torch.allclose(total[8:16], torch.ones(8))
        assert torch.equal(b_ih[:8], before["bias_ih" + sfx][:8])  # other gates untouched
        assert torch.equal(b_hh[16:], before["bias_hh" + sfx][16:])


def layer_output_variances(model, batch):
    """Output variance of each conv/linear layer, measured with our own hooks."""
    out = []
    hooks = [m.register_forward_hook(lambda m, i, o: out.append(float(o.var())))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("make,shape", [(lambda: plain_mlp(depth=10, width=128), (512, 784)), (lambda: plain_cnn(depth=10, width=16), (64, 1, 28, 28))])
def test_lsuv_output_variance_within_tol_at_every_layer(make, shape):
    torch.manual_seed(0)
    model = make()
    batch = torch.randn(shape, generator=torch.Generator().manual_seed(99)) * 3 + 1
    report = I.lsuv(model, batch, tol=0.05, max_iter=10, seed=0)
    assert len(report) == 10 and all(r.converged for r in report)
    assert all(r.iterations >= 1 for r in report[1:])  # orthonormal alone is not unit variance
    variances = layer_output_variances(model, batch)
    assert len(variances) == 10
    assert all(abs(v - 1) < 0.05 for v in variances), variances


def test_lsuv_validates_arguments():
    with pytest.raises(ValueError, match="tol must be > 0"):
        I.lsuv(plain_mlp(depth=2), torch.randn(4, 784), tol=0)
