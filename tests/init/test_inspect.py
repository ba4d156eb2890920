from __future__ import annotations

import torch

from trickbag.init import apply_init, inspect_init
from trickbag.models import plain_mlp


def probe(init, **params):
    torch.manual_seed(0)
    model = plain_mlp(depth=20, width=256)
    batch = torch.randn(256, 784, generator=torch.Generator().manual_seed(1234))
    apply_init(model, init, batch, seed=0, **params)
    return inspect_init(model, batch)


def test_small_random_normal_makes_the_signal_vanish_through_20_layers():
    layers = probe("random_normal", stddev=0.01)
    assert len(layers) == 20
    stds = [layer.act_std for layer in layers]
    assert stds[-1] < 1e-15 and all(b < a for a, b in zip(stds, stds[1:]))
    # each layer multiplies the std by about 0.01 * sqrt(256 / 2) = 0.113 (ReLU halves the second moment)
    assert 0.08 < (stds[-1] / stds[1]) ** (1 / 18) < 0.15


def test_he_and_lsuv_keep_the_signal_near_one():
    for stds in ([l.act_std for l in probe("he_normal")], [l.act_std for l in probe("lsuv")]):
        assert all(0.3 < s < 3 for s in stds), stds


def test_weight_statistics_and_histograms():
    layers = probe("he_normal")
    first = layers[0]
    assert first.shape == (256, 784) and first.kind == "Linear"
    assert abs(first.weight_std - (2 / 784) ** 0.5) < 0.01 * (2 / 784) ** 0.5 * 6
    assert sum(first.hist_counts) == 256 * 784 and len(first.hist_edges) == len(first.hist_counts) + 1
