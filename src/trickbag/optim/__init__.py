"""Optimizers by name, no-bias-decay parameter groups, the linear scaling rule, clipping."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from trickbag._checks import check_nonnegative, check_positive
from trickbag.init.apply import NORM_LAYERS
from trickbag.optim.muon import Muon, newton_schulz
from trickbag.registry import Registry

__all__ = ["param_groups", "linear_scaling", "OPTIMIZERS", "build_optimizer", "clip_gradients", "Muon", "newton_schulz",
           "skips_on_device", "step_unless"]

OPTIMIZERS: Registry = Registry("optimizer")


def param_groups(model: nn.Module, weight_decay: float, no_bias_decay: bool = True) -> list[dict[str, Any]]:
    """Two param groups: weights with ``weight_decay``; biases and every normalization
    parameter (BN/GN/LN gamma and beta) with 0 when ``no_bias_decay`` (seed 004, sec. 3.1:
    decay only conv/linear weights).

    Returns ``[{"params": decay, "weight_decay": wd, "name": "decay"},
    {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]`` (empty groups dropped).
    """
    check_nonnegative("weight_decay", weight_decay)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            skip = no_bias_decay and (isinstance(module, NORM_LAYERS) or name.endswith("bias"))
            (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def linear_scaling(base_lr: float, batch_size: int, base_batch_size: int = 256) -> float:
    """Goyal et al. 2017: ``lr = base_lr * batch_size / base_batch_size`` (Bag of Tricks: 0.1 per 256)."""
    check_nonnegative("base_lr", base_lr)
    check_positive("batch_size", batch_size)
    check_positive("base_batch_size", base_batch_size)
    return base_lr * batch_size / base_batch_size


def _fused(params: Any) -> bool:
    """torch's fused (one kernel per step) implementation where every parameter's device has it
    (CPU and CUDA): fewer launches, and the on-device skip of ``step_unless``."""
    groups = params if isinstance(params, list) and params and isinstance(params[0], dict) else [{"params": params}]
    tensors = [p for g in groups for p in g["params"]]
    return bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)


def _sgd_with_zero_momenta(params: Any, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> torch.optim.SGD:
    """``torch.optim.SGD``, fused where it can be, with its momentum buffers made (zeros) now:
    torch starts a buffer at the first step's ``d`` and the fused kernel allocates it
    uninitialised then, so a first step skipped on the device (``found_inf``) would leave
    garbage in it (seen with torch 2.13). ``mu * 0 + d = d``: the same updates, exactly."""
    params = _listed(params)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, fused=_fused(params))
    if momentum:
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return opt


@OPTIMIZERS.register("sgd")
def _sgd(params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, **_: Any) -> torch.optim.Optimizer:
    return _sgd_with_zero_momenta(params, lr, momentum, weight_decay, nesterov=False)


@OPTIMIZERS.register("nesterov", "nag")
def _nesterov(params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, **_: Any) -> torch.optim.Optimizer:
    return _sgd_with_zero_momenta(params, lr, momentum, weight_decay, nesterov=True)


@OPTIMIZERS.register("adam")
def _adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, **_: Any):
    params = _listed(params)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=_fused(params))


@OPTIMIZERS.register("adamw")
def _adamw(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, **_: Any):
    params = _listed(params)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=_fused(params))


def _listed(params: Any) -> list:
    return params if isinstance(params, list) else list(params)


@OPTIMIZERS.register("muon")
def _muon(params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, muon_lr: float = 0.08,
          muon_momentum: float = 0.6, muon_ns_steps: int = 5, **_: Any) -> torch.optim.Optimizer:
    """Muon on every convolution filter (4-D weight), Nesterov SGD on the rest (head, biases,
    norm parameters). The filters' group gets ``lr_mult = muon_lr / lr``, so one schedule
    drives both: the filters' lr is ``muon_lr`` at the schedule's peak. ``muon_ns_steps``:
    Newton–Schulz iterations per update (5 in Jordan et al.; airbench94_muon uses 3)."""
    groups = params if isinstance(params, list) and params and isinstance(params[0], dict) else [{"params": list(params)}]
    check_positive("muon_lr", muon_lr)
    out = []
    for group in groups:
        filters = [p for p in group["params"] if p.dim() == 4]
        rest = [p for p in group["params"] if p.dim() != 4]
        base = {k: v for k, v in group.items() if k != "params"}
        if filters:
            out.append({**base, "params": filters, "muon": True, "lr_mult": muon_lr / lr if lr > 0 else 1.0,
                        "name": f"{base.get('name', 'group')}_filters"})
        if rest:
            out.append({**base, "params": rest})
    return Muon(out, lr=lr, momentum=momentum, muon_momentum=muon_momentum, weight_decay=weight_decay,
                ns_steps=muon_ns_steps)


def build_optimizer(name: str, params: Iterable, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """``OPTIMIZERS[name](params, lr, **kwargs)``: sgd, nesterov (nag), adam, adamw, muon.

    ``params`` may be ``param_groups(...)``; each group's ``weight_decay`` wins over the
    keyword.
    """
    check_nonnegative("lr", lr)
    if "momentum" in kwargs:
        check_nonnegative("momentum", kwargs["momentum"])
    return OPTIMIZERS.get(name)(params, lr=lr, **kwargs)


def clip_gradients(
    parameters: Iterable[torch.Tensor],
    max_norm: float | None = None,
    max_value: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> float | None:
    """Clip by global norm and/or by value; under AMP, unscale first (Lightning#9694).

    Returns the total gradient norm before clipping (None when only value-clipping).
    Seed 001: clip the norm at 15 (5 for LSTMs).
    """
    params = [p for p in parameters if p.grad is not None]
    if scaler is not None and scaler.is_enabled():
        if optimizer is None:
            raise ValueError("clip_gradients needs the optimizer to unscale gradients under AMP")
        scaler.unscale_(optimizer)
    norm = None
    if max_value is not None:
        torch.nn.utils.clip_grad_value_(params, check_positive("max_value", max_value))
    if max_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(params, check_positive("max_norm", max_norm)))
    return norm


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``step_unless`` can skip this optimizer's update on the device: ``Muon`` and
    torch's fused optimizers (which read the ``found_inf`` flag ``GradScaler`` sets)."""
    return isinstance(optimizer, Muon) or bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()``, except that where ``skip`` (a 0-dim bool tensor on the parameters'
    device, e.g. ``~isfinite(loss)``) is true, parameters and optimizer state stay exactly
    as they were. Decided on the device: no host synchronisation, so a GPU never waits for
    the host to learn the loss (``skips_on_device`` says which optimizers can)."""
    if not skips_on_device(optimizer):
        raise ValueError(f"{type(optimizer).__name__} cannot skip a step on the device; use a fused torch optimizer or Muon")
    optimizer.found_inf = skip.to(torch.float32)
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf
