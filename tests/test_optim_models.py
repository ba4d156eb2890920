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
    with pytest.raises(ValueError, match="widths must name at least one stage"):
        build_model("small_cnn", widths=[])
    with pytest.raises(ValueError, match="variant must be one of"):
        resnet(variant="E")
    with pytest.raises(ValueError, match="pool_first must be true or false, got 'maybe'"):
        build_model("vgg7", pool_first="maybe")  # a truthy string must not switch the option on
    assert build_model("small_cnn", widths=[4, 8], stem_pool="true")[1].__class__.__name__ == "MaxPool2d"


def test_vgg7_is_the_reference_topology():
    from trickbag.models import vgg7

    for width in (16, 8):
        model = vgg7(width=width)
        w = width
        convs = [(1, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w), (4 * w, 8 * w), (8 * w, 8 * w)]
        expected = sum(9 * a * b for a, b in convs) + sum(2 * b for _, b in convs) + 8 * w * 10 + 10
        assert sum(p.numel() for p in model.parameters()) == expected  # 292,666 at W = 16
        found = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert found == convs and all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 3
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)  # global pooling: progressive resizing works
    assert any(isinstance(m, torch.nn.GELU) for m in vgg7(activation="gelu").modules())
    # explicit channels: the seven convs take them in order, the head the last
    channels = [8, 16, 24, 32, 48, 64, 96]
    model = vgg7(channels=channels, pool_first=True)
    found = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert found == list(zip([1] + channels[:-1], channels))
    assert model[-1].in_features == 96 and model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="channels must list 7"):
        vgg7(channels=[8, 16])
    with pytest.raises(ValueError, match="channels"):
        vgg7(channels=[8, 16, 0, 32, 48, 64, 96])


def test_squeeze_excite_gates_each_channel_by_the_formula():
    """y = x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2), written out in float64 numpy."""
    import numpy as np

    from trickbag.models import SqueezeExcite

    torch.manual_seed(0)
    se = SqueezeExcite(12, reduction=3)
    assert (se.squeeze.in_features, se.squeeze.out_features, se.excite.out_features) == (12, 4, 12)
    x = torch.randn(2, 12, 5, 5)
    assert torch.equal(se(x), x * 0.5)  # a fresh gate is one half everywhere (W2, b2 start at 0)
    for p in se.excite.parameters():
        nn.init.normal_(p)
    w1, b1 = se.squeeze.weight.detach().double().numpy(), se.squeeze.bias.detach().double().numpy()
    w2, b2 = se.excite.weight.detach().double().numpy(), se.excite.bias.detach().double().numpy()
    xs = x.double().numpy()
    z = np.maximum(xs.mean(axis=(2, 3)) @ w1.T + b1, 0.0) @ w2.T + b2
    expected = xs / (1.0 + np.exp(-z))[:, :, None, None]
    assert np.allclose(se(x).detach().double().numpy(), expected, atol=1e-6)
    assert SqueezeExcite(8, reduction=16).squeeze.out_features == 4  # at least 4 hidden units
    with pytest.raises(ValueError, match="se must be > 0"):
        SqueezeExcite(8, reduction=0)


def test_vgg7_gates_the_last_se_layers_convs():
    from trickbag.models import SqueezeExcite, vgg7

    w, r = 8, 4
    outs = [w, 2 * w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w]
    plain = sum(p.numel() for p in vgg7(width=w).parameters())
    for k, pool_first in ((7, True), (4, True), (4, False), (1, False)):
        model = vgg7(width=w, se=r, se_layers=k, pool_first=pool_first)
        gated = outs[7 - k:]
        extra = sum(2 * c * max(c // r, 4) + max(c // r, 4) + c for c in gated)  # W1, W2, b1, b2
        assert sum(p.numel() for p in model.parameters()) == plain + extra
        # each gate follows its conv layer's activation, in the layer's own block
        blocks = [b for b in model if isinstance(b, nn.Sequential)]
        assert [isinstance(b[-1], SqueezeExcite) for b in blocks] == [i >= 7 - k for i in range(7)]
        assert [b[-1].excite.out_features for b in blocks if isinstance(b[-1], SqueezeExcite)] == gated
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert not any(isinstance(m, SqueezeExcite) for m in vgg7(width=w).modules())
    with pytest.raises(ValueError, match="se must be >= 0"):
        vgg7(se=-1)
    with pytest.raises(ValueError, match="se_layers"):
        vgg7(se=4, se_layers=8)


def test_vgg7_pool_first_computes_the_same_function_for_positive_bn_scales():
    """max-pool commutes with x -> relu(a x + b) for a > 0, so with the same weights and BN
    in eval mode (positive gammas, any running statistics) both orders give one output."""
    from trickbag.models import vgg7

    torch.manual_seed(0)
    plain, pooled = vgg7(width=4), vgg7(width=4, pool_first=True)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in pooled.modules()) == 3
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    values = list(plain.state_dict().values())
    assert len(values) == len(pooled.state_dict())
    pooled.load_state_dict(dict(zip(pooled.state_dict(), values)))
    plain.eval()
    pooled.eval()
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(pooled(x), plain(x), rtol=1e-5, atol=1e-5)
    # a negative scale breaks the identity: the option is an approximation in training, stated as such
    for m in list(plain.modules()) + list(pooled.modules()):
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.neg_()
    assert not torch.allclose(pooled(x), plain(x), atol=1e-3)


def test_muon_sgd_groups_match_torch_nesterov_sgd_exactly():
    from trickbag.optim import Muon

    torch.manual_seed(0)
    a, b = torch.randn(5, requires_grad=True), None
    b = a.detach().clone().requires_grad_(True)
    ours = Muon([{"params": [a]}], lr=0.1, momentum=0.9, weight_decay=1e-2)
    ref = torch.optim.SGD([b], lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    for step in range(4):
        g = torch.randn(5, generator=torch.Generator().manual_seed(step))
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        assert torch.equal(a, b)


def test_muon_filter_update_is_an_orthogonalized_step_on_a_norm_fixed_filter():
    from trickbag.optim import Muon, newton_schulz

    g = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    o = newton_schulz(g.reshape(8, -1)).float()
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.3  # the quintic iteration lands near 1, not exactly (Jordan et al.)
    u, _, vh = torch.linalg.svd(g.reshape(8, -1), full_matrices=False)
    assert torch.nn.functional.cosine_similarity(o.flatten(), (u @ vh).flatten(), dim=0) > 0.95
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    w0 = w.detach().clone()
    opt = Muon([{"params": [w], "muon": True}], lr=0.05, muon_momentum=0.6)
    w.grad = g.clone()
    opt.step()
    # first step: buffer = g, Nesterov update = g + 0.6 g; the filter is rescaled to norm sqrt(8) first
    expected = w0 * (8 ** 0.5 / w0.norm()) - 0.05 * newton_schulz((1.6 * g).reshape(8, -1)).view_as(g)
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        Muon([{"params": [torch.zeros(3, requires_grad=True)], "muon": True}], lr=0.1)


def test_the_muon_recipe_puts_every_filter_in_the_muon_group_with_its_lr():
    from trickbag.recipes import build, load

    parts = build(load("fashion-mnist", ["model.name=vgg7", "model.params={}", "optim.name=muon", "optim.lr=0.2", "optim.muon_lr=0.05",
                                         "schedule.name=constant", "schedule.params={}", "data.train_subset=500"]))
    groups = parts.optimizer.param_groups
    filters = [p for g in groups if g["muon"] for p in g["params"]]
    assert len(filters) == 7 and all(p.dim() == 4 for p in filters)
    assert all(p.dim() != 4 for g in groups if not g["muon"] for p in g["params"])
    assert [g["lr"] for g in groups if g["muon"]] == [pytest.approx(0.05)]
    assert all(g["lr"] == pytest.approx(0.2) for g in groups if not g["muon"])


@pytest.mark.parametrize("name", ["nesterov", "sgd", "adamw", "muon"])
def test_step_unless_leaves_weights_and_state_exactly_on_a_skipped_step_and_steps_otherwise(name):
    """The on-device skip of the GPU path (found_inf), first step included: torch's fused SGD
    allocates its momentum uninitialised there (build_optimizer starts it at zeros)."""
    from trickbag.optim import build_optimizer, skips_on_device, step_unless

    def make():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        return net, build_optimizer(name, param_groups(net, 1e-3), lr=0.1, muon_lr=0.05)

    def snapshot(net, opt):
        return [p.detach().clone() for p in net.parameters()] + [
            b.clone() for s in opt.state.values() for b in s.values() if torch.is_tensor(b)]

    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    net, opt = make()
    ref_net, ref_opt = make()
    assert skips_on_device(opt)
    for step in range(3):
        net(x).sum().backward()
        if step == 0:  # a poisoned gradient, skipped on the device
            for p in net.parameters():
                p.grad.fill_(float("nan"))
            before = snapshot(net, opt)
            step_unless(opt, torch.tensor(True))
            after = snapshot(net, opt)
            assert all(torch.equal(a, b) for a, b in zip(before, after))
            opt.zero_grad(set_to_none=True)
            continue
        ref_net(x).sum().backward()
        step_unless(opt, torch.tensor(False))
        ref_opt.step()
        opt.zero_grad(set_to_none=True)
        ref_opt.zero_grad(set_to_none=True)
    # the skipped step changed nothing: the two made the same two updates
    for a, b in zip(net.parameters(), ref_net.parameters()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7) and all(torch.isfinite(a).flatten())
    assert not hasattr(opt, "found_inf")


def test_orthogonalize_in_one_zero_padded_batch_gives_each_matrix_its_own_result():
    """The GPU path (one padded batch for all filters) against each matrix alone, tall ones too:
    equal up to bf16 rounding, and each result is (near) orthogonal, not a mix of the others."""
    from trickbag.optim.muon import newton_schulz, orthogonalize

    gen = torch.Generator().manual_seed(3)
    shapes = [(16, 9), (32, 144), (64, 288), (8, 8), (40, 12)]
    mats = [torch.randn(s, generator=gen) * (i + 1) for i, s in enumerate(shapes)]
    together = orthogonalize(mats, batched=True)
    for m, t in zip(mats, together):
        alone = newton_schulz(m)
        assert t.shape == m.shape and t.dtype == m.dtype
        assert torch.allclose(t, alone, atol=2e-2), (m.shape, (t - alone).abs().max())
        s = torch.linalg.svdvals(t)
        assert s.min() > 0.5 and s.max() < 1.3


def test_newton_schulz_iterates_in_the_dtype_it_is_given():
    """fp32: the quintic recurrence computed independently in float64 numpy; bf16: the same up
    to bf16 rounding (the path of devices with native bf16)."""
    import numpy as np

    from trickbag.optim.muon import NS_COEFFICIENTS, newton_schulz

    g = torch.randn(12, 27, generator=torch.Generator().manual_seed(4))
    a, b, c = NS_COEFFICIENTS
    x = g.double().numpy()
    x = x / np.linalg.norm(x)
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    fp32 = newton_schulz(g, dtype=torch.float32)
    assert fp32.dtype == torch.float32 and np.allclose(fp32.numpy(), x, atol=1e-4)
    assert torch.allclose(newton_schulz(g, dtype=torch.bfloat16), fp32, atol=3e-2)
    assert not torch.allclose(newton_schulz(g, dtype=torch.bfloat16), fp32, atol=1e-5)  # bf16 really ran


def test_muon_iterates_in_bf16_only_where_the_device_has_it_natively(monkeypatch):
    """On a CPU without native bf16 (AVX2: emulated bf16 matmuls, about 20x slower) the
    iteration runs in fp32; the CPU's flags are read once per device, not every step."""
    import trickbag.optim.muon as muon

    seen, asked = [], []
    real = muon._newton_schulz_batch
    monkeypatch.setattr(muon, "_newton_schulz_batch", lambda m, s, e, dtype: seen.append(dtype) or real(m, s, e, dtype))
    for native, expected in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(muon, "bf16_is_native", lambda device, native=native: asked.append(device) or native)
        w = torch.randn(4, 2, 3, 3, requires_grad=True)
        opt = muon.Muon([{"params": [w], "muon": True}], lr=0.1)
        seen.clear(), asked.clear()
        for _ in range(3):
            w.grad = torch.randn_like(w)
            opt.step()
        assert seen == [expected] * 3 and asked == [torch.device("cpu")]


_NO_COMPILER_IMPORT = r"""
import sys, tempfile, torch
from trickbag.data import load_dataset
from trickbag.recipes import load
from trickbag.train import Trainer
data = load_dataset("synthetic", val_size=100, seed=0)
data.train_x, data.train_y = data.train_x[:512], data.train_y[:512]
data.test_x, data.test_y = data.test_x[:100], data.test_y[:100]
with tempfile.TemporaryDirectory() as out:
    trainer = Trainer(load("fashion-mnist", ["train.epochs=1"]), out=out, quiet=True, data=data, tensorboard=False)
    trainer.fit()
    state = torch.load(f"{out}/checkpoints/epoch_0001.pt", weights_only=True)
    trainer.optimizer.load_state_dict(state["optimizer"])
    assert trainer.optimizer.state_dict()["state"], "the trained optimizer has momenta"
print("torch._dynamo" in sys.modules, type(trainer.optimizer).__name__)
"""


def test_the_default_recipe_trains_checkpoints_and_reloads_without_importing_torchs_compiler():
    """torch wraps Optimizer.add_param_group, zero_grad, state_dict and load_state_dict in
    torch._disable_dynamo, whose first call imports torch._dynamo (1.3 s of start-up on a CPU,
    4.8 s on an H200's host); Muon runs their bodies without it. In a fresh process, a whole
    run of the default recipe (build, steps, checkpoints, the final evaluation) and a reload
    of the optimizer's state never import it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    done = subprocess.run([sys.executable, "-c", _NO_COMPILER_IMPORT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["False", "Muon"], done.stdout


def test_muons_unwrapped_state_dict_round_trips():
    """The methods Muon takes without the compiler wrapper still do their jobs: the state dict
    holds both groups and every momentum, loading it into a fresh optimizer gives the very next
    step the original takes, and zero_grad clears the gradients."""
    import copy

    from trickbag.optim.muon import Muon

    def make():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        groups = [{"params": [net[0].weight], "muon": True}, {"params": [net[0].bias, *net[2].parameters()]}]
        return net, Muon(groups, lr=0.1, weight_decay=1e-3)

    x = torch.randn(8, 1, 6, 6)
    net, opt = make()
    for _ in range(2):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    ours = opt.state_dict()
    assert [g["muon"] for g in ours["param_groups"]] == [True, False] and len(ours["state"]) == 4
    net2, opt2 = make()
    net2.load_state_dict(net.state_dict())
    opt2.load_state_dict(copy.deepcopy(ours))  # a state dict holds the live momenta (torch's too): a checkpoint's copy
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        assert all(p.grad is None for p in n.parameters())
        n(x).square().mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))
