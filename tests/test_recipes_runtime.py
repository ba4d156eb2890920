from __future__ import annotations

import pytest
import torch
from torch import nn

from trickbag.recipes import RecipeError, available, load
from trickbag.recipes.parts import resolve_schedule, steps_from_units
from trickbag.train import resolve_runtime


def test_every_shipped_recipe_loads_and_validates():
    names = available()
    for required in ("fashion-mnist", "fashion-mnist-quick", "fashion-mnist-95", "fashion-mnist-best", "fashion-mnist-resnet",
                     "fashion-mnist-lstm", "cifar100-200ep", "cifar100-300ep",
                     "imagenet-bag-of-tricks"):
        assert required in names and names[required]
        load(required)


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lrr=0.1", "recipe key 'optim.lrr' is unknown (did you mean 'optim.lr'?)"),
        ("trian.epochs=3", "recipe key 'trian' is unknown (did you mean 'train'?)"),
        ("optim.lr=fast", "recipe key 'optim.lr' must be a number, got 'fast'"),
        ("train.epochs=2.5", "recipe key 'train.epochs' must be an integer"),
        ("train.epochs=0", "train.epochs must be > 0"),
        ("optim.momentum=1.5", "optim.momentum must be in [0.0, 1.0)"),
        ("train.precision=fp8", "did you mean 'fp32'"),
        ("optim.muon_ns_steps=0", "optim.muon_ns_steps must be > 0"),
        ("train.compile_mode=fastest", "train.compile_mode must be one of 'default', 'reduce-overhead'"),
        ("data.augment=flip", "recipe key 'data.augment' must be a list"),
        ("optim.lr", "--set takes key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(RecipeError) as err:
        load("fashion-mnist", [override])
    assert message in str(err.value)


def test_overrides_parse_yaml_values_and_float_strings():
    r = load("fashion-mnist-quick", ["optim.weight_decay=1e-4", "model.params={widths: [8, 16]}", "train.ema_decay=0"])
    assert r.optim.weight_decay == 1e-4 and r.model.params == {"widths": [8, 16]} and r.train.ema_decay == 0.0


def test_unknown_recipe_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'fashion-mnst' \\(did you mean 'fashion-mnist'\\?\\)"):
        load("fashion-mnst")
    with pytest.raises(RecipeError, match="does not exist"):
        load(str(tmp_path / "nope.yaml"))


def test_units_to_steps():
    assert steps_from_units("3ep", 100, 1000) == 300
    assert steps_from_units("50ba", 100, 1000) == 50
    assert steps_from_units("0.25dur", 100, 1000) == 250
    assert steps_from_units(7, 100, 1000) == 7
    with pytest.raises(RecipeError, match="duration like '3ep'"):
        steps_from_units("3 epochs", 100, 1000, "warmup_steps")


def test_schedule_gets_the_peak_lr_and_units():
    s = resolve_schedule("cosine", {"total_steps": "1dur", "warmup_steps": "2ep"}, 0.4, 10, 100)
    assert s(20) == pytest.approx(0.4) and s(0) == 0.0 and s(100) == 0.0
    c = resolve_schedule("cifar_200_epochs", {"steps_per_epoch": "1ep"}, 0.1, 391, 391 * 200)
    assert c(60 * 391) == 0.02


def test_schedule_text_parameters_pass_through():
    # one_cycle's anneal is a word, not a number or a duration: it once failed as "must be a number"
    s = resolve_schedule("one_cycle", {"total_steps": "1dur", "pct_start": 0.1, "anneal": "linear", "div_factor": 10,
                                       "final_div_factor": 1}, 1.0, 10, 101)
    # up over u = 0.1 * 101 - 1 = 9.1 steps to 1.0, then a straight line down to 0.1 at step 100
    assert s(0) == pytest.approx(0.1)
    assert s(55) == pytest.approx(1.0 - 0.9 * (55 - 9.1) / (100 - 9.1))
    with pytest.raises(RecipeError, match="anneal"):
        resolve_schedule("one_cycle", {"total_steps": "1dur", "anneal": "zigzag"}, 1.0, 10, 100)


def test_runtime_auto_choices():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3))
    rt = resolve_runtime("cpu", "auto", None, conv)
    from trickbag.train.runtime import cpu_has_native_bf16

    assert rt.precision == ("bf16" if cpu_has_native_bf16() else "fp32") and rt.channels_last
    assert not resolve_runtime("cpu", "fp32", None, nn.LSTM(2, 2)).channels_last
    assert resolve_runtime("cpu", "bf16", None, conv).amp_dtype == torch.bfloat16
    assert not resolve_runtime("cpu", "bf16", None, conv).grad_scaler().is_enabled()
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_runtime("cpu", "fp16", None, conv)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_runtime("cuda", "auto", None, conv)


def test_auto_precision_table():
    from trickbag.train.runtime import auto_precision

    # bf16 needs no GradScaler (whose overflow check reads the GPU every step): first choice where it is native
    assert auto_precision("cuda", True) == "bf16" and auto_precision("cuda", False) == "fp16"
    assert auto_precision("cpu", True) == "bf16" and auto_precision("cpu", False) == "fp32"  # emulated bf16 is slower
    assert auto_precision("mps", True) == "fp32"


def test_data_on_device_moves_every_split_and_keeps_the_caller_object():
    from trickbag.data import load_dataset
    from trickbag.recipes import build, load

    data = load_dataset("synthetic", val_size=20)
    moved = data.to("meta")  # a device without memory: proves each tensor is moved
    assert all(getattr(moved, f).device.type == "meta" for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"))
    assert data.train_x.device.type == "cpu" and moved.num_classes == data.num_classes
    recipe = load("fashion-mnist-quick", ["data.on_device=true", "train.device=cpu", "data.train_subset=64", "data.batch_size=32"])
    parts = build(recipe, data=data)
    assert parts.data.train_x.device.type == "cpu" and len(parts.data.train_y) == 64


def test_the_longer_fashion_mnist_recipes_are_the_default_with_their_stated_changes():
    """What RESULTS.md measures for the default holds for these but for the keys named here."""
    from trickbag.recipes.config import changed_keys, to_dict

    base = to_dict(load("fashion-mnist"))
    changed = {name: {k: after for k, _, after in changed_keys(base, to_dict(load(name)))}
               for name in ("fashion-mnist-95", "fashion-mnist-best")}
    # on a GPU the 95 recipe trains 44 epochs at batch 2048 (its lrs raised with the batch), the best one a width-64 net 60 at 512
    assert set(changed["fashion-mnist-95"]) == {"description", "train.epochs", "cuda.train.epochs", "cuda.data.batch_size",
                                                "cuda.optim.lr", "cuda.optim.muon_lr"}
    assert changed["fashion-mnist-95"]["train.epochs"] == 40 and changed["fashion-mnist-95"]["cuda.train.epochs"] == 44
    assert (changed["fashion-mnist-95"]["cuda.data.batch_size"], changed["fashion-mnist-95"]["cuda.optim.lr"],
            changed["fashion-mnist-95"]["cuda.optim.muon_lr"]) == (2048, 0.6, 0.2)
    assert set(changed["fashion-mnist-best"]) == {"description", "train.epochs", "model.params", "cuda.train.epochs",
                                                  "cuda.model.params.width", "cuda.data.batch_size", "cuda.optim.lr",
                                                  "cuda.optim.muon_lr"}
    assert changed["fashion-mnist-best"]["model.params"] == {"width": 32, "pool_first": False}
    best_gpu = load("fashion-mnist-best").for_device("cuda")[0]
    assert (best_gpu.model.params, best_gpu.data.batch_size, best_gpu.train.epochs) == ({"width": 64, "pool_first": False}, 512, 60)
    assert (best_gpu.optim.lr, best_gpu.optim.muon_lr) == (0.28, 0.11)
    # the description's claim: under 5M parameters, the Fashion-MNIST table's bracket (sum of the seven convs, BN and head)
    from trickbag.models.registry import build_model

    convs = [(1, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    expected = sum(9 * cin * cout + 2 * cout for cin, cout in convs) + 512 * 10 + 10
    assert sum(p.numel() for p in build_model("vgg7", **best_gpu.model.params).parameters()) == expected < 5_000_000
    assert load("fashion-mnist-95").for_device("cuda")[0].train.epochs == 44
    assert all(load(name).for_device("cuda")[0].train.cuda_graph for name in ("fashion-mnist", "fashion-mnist-95", "fashion-mnist-best"))


def test_the_cuda_section_applies_on_a_gpu_only_and_never_over_a_key_set_by_hand():
    from trickbag.recipes.config import RecipeError, load

    r = load("fashion-mnist", ["cuda={data.batch_size: 1024, optim.lr: 0.4, train.epochs: 8}"])
    on_gpu, applied = r.for_device("cuda")
    assert applied == {"data.batch_size": 1024, "optim.lr": 0.4, "train.epochs": 8}
    assert (on_gpu.data.batch_size, on_gpu.optim.lr, on_gpu.train.epochs) == (1024, 0.4, 8) and on_gpu.cuda == {}
    assert on_gpu.optim.muon_lr == r.optim.muon_lr  # keys it does not name stay the recipe's
    on_cpu, none = r.for_device("cpu")
    assert none == {} and on_cpu is r
    # --set wins over the section: the user's 512 stays 512 on a GPU, the rest still adapts
    mine = load("fashion-mnist", ["cuda={data.batch_size: 1024, optim.lr: 0.4}", "data.batch_size=512"])
    assert mine.for_device("cuda")[1] == {"optim.lr": 0.4} and mine.for_device("cuda")[0].data.batch_size == 512
    with pytest.raises(RecipeError, match=r"cuda.*data.batch_sise.*did you mean 'data.batch_size'"):
        load("fashion-mnist", ["cuda={data.batch_sise: 1024}"])
    with pytest.raises(RecipeError, match=r"cuda.*data.batch_size"):
        load("fashion-mnist", ["cuda={data.batch_size: -1}"])


def test_build_applies_the_cuda_section_only_where_the_run_lands(small_data):
    from trickbag.recipes import build, load

    parts = build(load("fashion-mnist", ["cuda={data.batch_size: 100}", "train.device=cpu", "data.train_subset=600"]),
                  data=small_data)
    assert parts.adapted == {} and parts.batch_size == 256 and parts.recipe.cuda == {"data.batch_size": 100}


def test_a_trick_or_override_wins_over_the_cuda_section_too():
    from trickbag.experiments.tricks import TRICKS
    from trickbag.recipes.config import override

    r = load("fashion-mnist")  # its cuda section sets schedule.params.warmup_steps and optim.lr
    assert "schedule.params.warmup_steps" in r.cuda
    no_warmup = TRICKS.get("warmup").off(r)
    on_gpu = no_warmup.for_device("cuda")[0]
    assert on_gpu.schedule.params.get("warmup_steps", 0) in (0, None) and on_gpu.data.batch_size == 1024
    assert override(r, {"optim.lr": 0.3}).for_device("cuda")[0].optim.lr == 0.3
    assert override(r, {"cuda": {}}).for_device("cuda")[1] == {}


def test_compile_mode_reaches_torch_compile(small_data, monkeypatch):
    """``train.compile_mode`` is the mode ``torch.compile`` gets (reduce-overhead: CUDA graphs on
    a GPU); without ``train.compile`` nothing is compiled."""
    from trickbag.recipes import build

    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: calls.append(mode) or fn)
    base = ["train.device=cpu", "data.train_subset=600"]
    plain = build(load("fashion-mnist", base), data=small_data)
    assert calls == [] and plain.forward is plain.model
    parts = build(load("fashion-mnist", [*base, "train.compile=true", "train.compile_mode=reduce-overhead"]), data=small_data)
    assert calls == ["reduce-overhead"] and parts.forward is parts.model
    build(load("fashion-mnist", [*base, "train.compile=true"]), data=small_data)
    assert calls == ["reduce-overhead", "default"]


def test_muon_ns_steps_reach_the_optimizer(small_data):
    from trickbag.recipes import build

    base = ["train.device=cpu", "data.train_subset=600"]
    for steps in (5, 3):
        opt = build(load("fashion-mnist", [*base, f"optim.muon_ns_steps={steps}"]), data=small_data).optimizer
        muon_groups = [g for g in opt.param_groups if g["muon"]]
        assert muon_groups and all(g["ns_steps"] == steps for g in muon_groups)


def test_native_bf16_needs_the_instructions_and_torch_allowed_to_use_them():
    from trickbag.hardware import native_bf16

    avx512 = ["fpu", "avx2", "avx512f", "avx512_bf16"]
    assert native_bf16(avx512, "AVX512")
    assert native_bf16(["avx2", "amx_bf16", "amx_tile"], "AVX512", "AVX512_CORE_AMX")
    assert not native_bf16(["avx2", "avx512f"], "AVX512")  # AVX-512 without its bf16 extension
    assert not native_bf16(avx512, "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert not native_bf16(avx512, "AVX512", "AVX2")  # ONEDNN_MAX_CPU_ISA=AVX2: convolutions emulate bf16
    assert not native_bf16(avx512, "AVX512", "avx512_core_vnni")  # below AVX512_CORE_BF16
    assert native_bf16(avx512, "AVX512", " avx512_core_bf16 ")
    assert native_bf16(avx512, "AVX512", "")  # set but empty: no limit


def test_auto_precision_follows_an_isa_cap_in_the_environment():
    """A process capped to AVX2 kernels (as on an AVX2-only CPU) gets fp32 from ``auto``, and
    Muon's Newton–Schulz iteration runs in fp32 there."""
    import os
    import subprocess
    import sys

    code = ("import torch; from torch import nn; from trickbag.train.runtime import resolve_runtime; "
            "from trickbag.optim.muon import iteration_dtype; "
            "print(resolve_runtime('cpu', 'auto', None, nn.Conv2d(1, 1, 3)).precision, iteration_dtype(torch.device('cpu')))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["fp32", "torch.float32"]  # and Muon's iteration runs in fp32 too


def test_a_gpu_that_only_emulates_bf16_is_not_native(monkeypatch):
    """torch's ``is_bf16_supported()`` says True on pre-Ampere GPUs (emulated bf16); ``auto``
    must pick fp16 + GradScaler there, so only hardware bf16 counts."""
    from trickbag.hardware import bf16_is_native

    pre_ampere = lambda including_emulation=True: including_emulation  # noqa: E731 - emulation only
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", pre_ampere)
    assert not bf16_is_native(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere and later
    assert bf16_is_native(torch.device("cuda"))


def test_cpu_flags_come_from_the_flags_line_and_are_empty_when_unreadable(monkeypatch):
    import io

    from trickbag import hardware

    cpuinfo = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\nbugs\t\t: spectre_v1\n"
    monkeypatch.setattr(hardware, "open", lambda path: io.StringIO(cpuinfo), raising=False)
    assert hardware.cpu_flags() == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert hardware.native_bf16(hardware.cpu_flags(), "AVX512")

    def unreadable(path):
        raise PermissionError(path)

    monkeypatch.setattr(hardware, "open", unreadable, raising=False)
    assert hardware.cpu_flags() == frozenset() and not hardware.cpu_has_native_bf16()
