"""train.cuda_graph: the checks that run anywhere, and on a GPU a graphed run against the eager one."""

from __future__ import annotations

import json

import pytest
import torch

from tests.train.helpers import recipe
from trickbag.recipes import RecipeError, load
from trickbag.recipes.parts import build, resolve_cuda_graph
from trickbag.train import Trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA graphs need a CUDA GPU, and this machine has none (the device checks run them)")


def test_cuda_graph_off_a_gpu_is_a_clear_error_before_any_data_is_loaded():
    with pytest.raises(RecipeError, match=r"train\.cuda_graph needs a CUDA device, and this run is on cpu: leave it off"):
        build(recipe("train.cuda_graph=true", "train.device=cpu", "data.name=no-such-dataset"))


@pytest.mark.parametrize("extra, named", [
    ("train.compile=true", "train.compile"),
    ("data.progressive=[[20, 1]]", "data.progressive"),
    ("train.doctor_every=5", "train.doctor_every"),
])
def test_cuda_graph_set_by_hand_names_what_it_cannot_be_combined_with(extra, named):
    alone = recipe("train.cuda_graph=true")
    assert resolve_cuda_graph(alone, {}, "cuda", distributed=False) == (alone, {})  # alone: no complaint
    with pytest.raises(RecipeError, match=rf"train\.cuda_graph cannot be combined with {named}.*turn one of them off"):
        resolve_cuda_graph(recipe("train.cuda_graph=true", extra), {}, "cuda", distributed=False)
    with pytest.raises(RecipeError, match="torchrun"):
        resolve_cuda_graph(alone, {}, "cuda", distributed=True)


@pytest.mark.parametrize("extra, distributed", [("train.doctor_every=50", False), ("train.compile=true", False), (None, True)])
def test_the_cuda_sections_graph_gives_way_to_what_the_user_asked_for(extra, distributed):
    """The default's cuda section turns the graph on; a user's doctor monitor, torch.compile or
    torchrun then runs eagerly (no error over a key they never set), and the rest of the
    section still applies."""
    on_gpu, adapted = load("fashion-mnist", [extra] if extra else []).for_device("cuda")
    assert on_gpu.train.cuda_graph and adapted["train.cuda_graph"] is True
    resolved, kept = resolve_cuda_graph(on_gpu, adapted, "cuda", distributed)
    assert not resolved.train.cuda_graph and "train.cuda_graph" not in kept
    assert kept == {k: v for k, v in adapted.items() if k != "train.cuda_graph"} and resolved.data.batch_size == 1024
    if extra:  # set by hand, the same conflict is an error
        with pytest.raises(RecipeError, match=r"train\.cuda_graph cannot be combined"):
            resolve_cuda_graph(load("fashion-mnist", [extra, "train.cuda_graph=true"]).for_device("cuda")[0], {}, "cuda", distributed)


def _losses(out):
    return [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def deterministic_cuda(monkeypatch):
    """cuDNN's deterministic algorithms and no TF32, so two runs of the same math agree to fp32 rounding."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@needs_cuda
def test_graphed_steps_are_the_eager_steps(small_data, deterministic_cuda):
    """fp32, same seed, same batches: after the recording step and after two replays the
    weights and BatchNorm statistics equal the eager run's (the capture's warm-up passes are
    undone: the running statistics count real steps only)."""
    extra = ["train.device=cuda", "train.precision=fp32", "train.checkpoint=false", "data.on_device=true", "train.ema_decay=0"]
    eager = Trainer(recipe(*extra), quiet=True, data=small_data)
    graphed = Trainer(recipe(*extra, "train.cuda_graph=true"), quiet=True, data=small_data)
    for step in range(3):
        for t in (eager, graphed):
            t.model.train()
            idx = torch.arange(step * 50, (step + 1) * 50, device=t.data.train_x.device)
            t.train_step(t.data.train_x[idx], t.data.train_y[idx], index=idx)
        we, wg = eager.model.state_dict(), graphed.model.state_dict()
        worst = max((we[k].float() - wg[k].float()).abs().max().item() for k in we)
        assert worst <= 1e-5, f"step {step}: the graphed weights differ from the eager ones by up to {worst:.3g}"
        assert all(int(wg[k]) == step + 1 for k in wg if k.endswith("num_batches_tracked"))


@needs_cuda
def test_a_graphed_bf16_run_ends_where_the_eager_one_does(tmp_path, small_data):
    """The whole loop in bf16 (the GPU recipes' precision): the same epoch losses and test
    accuracy as the eager run, to bf16's rounding."""
    extra = ["train.device=cuda", "train.precision=bf16", "train.checkpoint=false", "data.on_device=true"]
    se = Trainer(recipe(*extra), out=tmp_path / "eager", quiet=True, data=small_data).fit()
    sg = Trainer(recipe(*extra, "train.cuda_graph=true"), out=tmp_path / "graphed", quiet=True, data=small_data).fit()
    for a, b in zip(_losses(tmp_path / "eager"), _losses(tmp_path / "graphed"), strict=True):
        assert abs(a - b) <= 0.02 * max(1.0, abs(a)), (a, b)
    assert abs(se["test_acc"] - sg["test_acc"]) <= 0.02


@needs_cuda
def test_a_graphed_forward_refuses_a_batch_of_another_shape():
    from trickbag.train.graphs import GraphedForward

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(144, 3)).cuda()
    x = torch.randn(16, 1, 8, 8, device="cuda")
    expected = model(x).detach()  # training mode: batch statistics, so the same output whatever the running ones
    forward = GraphedForward(model, amp_dtype=None)
    torch.testing.assert_close(forward(x), expected)  # recorded, then replayed
    torch.testing.assert_close(forward(x), expected)
    before = model[1].num_batches_tracked.item()
    forward(x).sum().backward()
    assert model[1].num_batches_tracked.item() == before + 1
    with pytest.raises(ValueError, match=r"train\.cuda_graph recorded the training forward for inputs of shape \(16, 1, 8, 8\)"):
        forward(torch.randn(8, 1, 8, 8, device="cuda"))
    model.eval()  # evaluation takes any shape: the model's own forward
    assert forward(torch.randn(5, 1, 8, 8, device="cuda")).shape == (5, 3)
