"""Apply initializers to whole models: ``initialize``, ``zero_gamma``, ``lstm_forget_bias``."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from trickbag._checks import check_keywords, check_number
from trickbag.init.initializers import INITIALIZERS

__all__ = ["initialize", "zero_gamma", "lstm_forget_bias", "WEIGHTED_LAYERS", "NORM_LAYERS"]

#: layers whose ``weight`` an initializer fills (their ``bias`` is zeroed)
WEIGHTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: normalization layers (gamma = 1, beta = 0)
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_RNN_LAYERS = (nn.RNNBase, nn.RNNCellBase)


@torch.no_grad()
def initialize(model: nn.Module, name: str = "he_normal", seed: int | None = None, **params: Any) -> list[str]:
    """Initialize every conv/linear (and RNN) weight of ``model`` with initializer ``name``.

    Biases of those layers are set to zero; normalization layers get gamma = 1, beta = 0.
    Other parameters are left as they are.

    Args:
        model: any ``nn.Module``.
        name: a registered initializer (``trickbag.init.INITIALIZERS``), e.g. ``he_normal``,
            ``truncated_normal``, ``orthogonal``.
        seed: seed of a private ``torch.Generator`` (None: torch's global RNG).
        **params: the initializer's parameters, e.g. ``stddev=0.01``.

    Returns:
        the qualified names of the parameters that were initialized.

    Example: ``initialize(model, "truncated_normal", stddev=0.01, seed=0)``.
    """
    init = INITIALIZERS.get(name)
    check_keywords(f"initializer {name!r}", init, params, skip=("tensor",))
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if "generator" in inspect.signature(init).parameters:
        params = {**params, "generator": generator}
    done: list[str] = []
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(module, WEIGHTED_LAYERS) or isinstance(module, _RNN_LAYERS):
            for p_name, p in module.named_parameters(recurse=False):
                if p_name.startswith("weight"):
                    _init_on_cpu(init, p, params)
                elif p_name.startswith("bias"):
                    p.zero_()
                else:
                    continue
                done.append(prefix + p_name)
        elif isinstance(module, NORM_LAYERS):
            for p_name, fill in (("weight", 1.0), ("bias", 0.0)):
                p = getattr(module, p_name, None)
                if isinstance(p, torch.Tensor):
                    p.fill_(fill)
                    done.append(prefix + p_name)
    return done


def _init_on_cpu(init: Any, p: torch.Tensor, params: dict[str, Any]) -> None:
    # A CPU generator cannot fill a CUDA tensor: draw on the CPU, then copy.
    if p.device.type == "cpu" or params.get("generator") is None:
        init(p, **params)
    else:
        tmp = torch.empty(p.shape, dtype=p.dtype)
        init(tmp, **params)
        p.copy_(tmp)


_SHORTCUT_NAMES = ("downsample", "shortcut", "skip", "proj", "projection")


@torch.no_grad()
def zero_gamma(model: nn.Module) -> list[str]:
    """Zero the gamma of the last BatchNorm in each residual block (Goyal et al.; Bag of Tricks 3.2).

    A block starts as an identity (its residual branch outputs 0), which makes deep
    ResNets train faster at the start. A residual block is found as:

    * a module with a ``zero_init_last()`` method (timm's convention): it is called;
    * a module whose class name ends in ``Block``, ``BasicBlock`` or ``Bottleneck``: the
      last BatchNorm registered in it, outside its shortcut branch (a child named
      ``downsample``/``shortcut``/``skip``/``proj``), gets gamma = 0.

    BatchNorms without an affine gamma (``affine=False``) are skipped (timm PR#1063).

    Returns:
        names of the zeroed gamma parameters (or of blocks whose ``zero_init_last`` ran).
    """
    done: list[str] = []
    for name, module in model.named_modules():
        if hasattr(module, "zero_init_last") and callable(module.zero_init_last):
            module.zero_init_last()
            done.append(name)
            continue
        if not type(module).__name__.endswith(("Block", "Bottleneck")):
            continue
        last = None
        for sub_name, sub in module.named_modules():
            if sub_name.split(".")[0] in _SHORTCUT_NAMES:
                continue
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                last = (sub_name, sub)
        if last is not None and last[1].weight is not None:
            last[1].weight.zero_()
            done.append(f"{name}.{last[0]}.weight")
    return done


@torch.no_grad()
def lstm_forget_bias(model: nn.Module, value: float = 1.0) -> list[str]:
    """Set the forget-gate bias of every ``nn.LSTM``/``nn.LSTMCell`` so that it sums to ``value``.

    torch's gate order is (input, forget, cell, output) and the effective bias is
    ``bias_ih + bias_hh``: the forget slice ``[H:2H]`` of ``bias_ih`` is set to ``value`` and
    that of ``bias_hh`` to 0. Jozefowicz et al. 2015 (seed 001): 1.0 helps LSTMs learn
    long dependencies.

    Returns:
        names of the bias parameters changed.
    """
    value = check_number("value", value)
    done: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.LSTM, nn.LSTMCell)):
            continue
        hidden = module.hidden_size
        for p_name, p in module.named_parameters(recurse=False):
            if p_name.startswith("bias_ih"):
                p[hidden : 2 * hidden] = value
            elif p_name.startswith("bias_hh"):
                p[hidden : 2 * hidden] = 0.0
            else:
                continue
            done.append(f"{name}.{p_name}" if name else p_name)
    return done
