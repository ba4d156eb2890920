"""Muon for convolution filters, Nesterov SGD for everything else, in one optimizer.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; airbench94_muon and the
2025 CIFAR-10 speed records) replaces a weight matrix's momentum update by its nearest
semi-orthogonal matrix, computed with a few Newton–Schulz iterations: every direction of
the update moves at the same rate, so rarely-seen directions are not starved. Filters
``(out, in, kh, kw)`` are treated as ``out x (in*kh*kw)`` matrices. As in airbench, each
filter tensor is rescaled to norm ``sqrt(out)`` before its update (the BatchNorm that
follows makes the scale irrelevant, and a fixed scale keeps the effective step fixed).

``torch.optim.Muon`` (torch >= 2.9) takes 2-D parameters only, hence this class. Groups
with ``"muon": True`` get the Muon update; the others plain Nesterov SGD with coupled
weight decay, exactly ``torch.optim.SGD(nesterov=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from trickbag._checks import check_nonnegative, check_positive, check_range
from trickbag.hardware import bf16_is_native

__all__ = ["Muon", "newton_schulz", "orthogonalize", "iteration_dtype"]

#: the quintic iteration's coefficients from Jordan et al. (maximise the slope at 0)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately ``U V^T`` for ``g = U S V^T`` (the orthogonal polar factor), by the
    quintic Newton–Schulz iteration ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``,
    starting from ``g / ||g||_F``. Returns ``g``'s dtype; ``dtype`` is the iteration's
    (default ``iteration_dtype(g.device)``)."""
    return orthogonalize([g], steps, eps, batched=False, dtype=dtype)[0]


def iteration_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the device computes it natively, as the reference implementation runs
    the iteration (it tolerates bf16, and there it is about 1.7x faster than fp32 for the
    default net's filters on an AVX512-BF16 CPU); float32 elsewhere, where emulated bf16
    matmuls are about 20x *slower* than fp32 (AVX2 kernels: benchmarks/RESULTS.md)."""
    return torch.bfloat16 if bf16_is_native(device) else torch.float32


def orthogonalize(matrices: list[torch.Tensor], steps: int = 5, eps: float = 1e-7,
                  batched: bool | None = None, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """``newton_schulz`` of every matrix, the iteration in ``dtype`` (default
    ``iteration_dtype`` of their device). ``batched`` (default: on CUDA) runs them all as one
    batch, each zero-padded to the largest shape: the padding stays exactly zero through
    the iteration (zero rows and columns of ``X`` give zero rows and columns of ``A`` and of
    ``(b A + c A^2) X``) and adds nothing to the norm, so each matrix gets its own result,
    in ~40 kernel launches for all instead of ~40 per matrix: on a GPU a small net's Muon
    step is bound by launches (measured on an H100, benchmarks/RESULTS.md). Unbatched (the
    CPU default, where the padding would be real work), each matrix alone."""
    if not matrices:
        return []
    if dtype is None:
        dtype = iteration_dtype(matrices[0].device)
    if batched is None:
        batched = matrices[0].is_cuda
    if not batched or len(matrices) < 2:
        return [_newton_schulz_batch([m], steps, eps, dtype)[0] for m in matrices]
    return _newton_schulz_batch(matrices, steps, eps, dtype)


def _newton_schulz_batch(matrices: list[torch.Tensor], steps: int, eps: float, dtype: torch.dtype) -> list[torch.Tensor]:
    a, b, c = NS_COEFFICIENTS
    wide = [m.T if m.size(0) > m.size(1) else m for m in matrices]  # iterate on the smaller Gram matrix
    if len(wide) == 1:
        x = wide[0].to(dtype)
        x = x / (x.norm() + eps)
    else:
        rows, cols = max(w.size(0) for w in wide), max(w.size(1) for w in wide)
        x = wide[0].new_zeros((len(wide), rows, cols), dtype=dtype)
        for i, w in enumerate(wide):
            x[i, : w.size(0), : w.size(1)].copy_(w)
        x = x / (torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    out = []
    for i, (m, w) in enumerate(zip(matrices, wide)):
        block = x if len(wide) == 1 else x[i, : w.size(0), : w.size(1)]
        out.append((block.T if w is not m else block).to(m.dtype))
    return out


def _without_compiler_guard(method: Any) -> Any:
    """One of ``torch.optim.Optimizer``'s methods without its ``torch._disable_dynamo`` wrapper
    (the function ``functools.wraps`` keeps as ``__wrapped__``; the method itself where torch
    no longer wraps it). That wrapper only tells ``torch.compile`` not to trace the method,
    but its first call imports the compiler stack (``torch._dynamo``, sympy): 1.3 s of a
    CPU run's start-up, 4.8 s on an H200's host, where it is most of what a run spends
    besides training (benchmarks/startup.py, RESULTS.md)."""
    return getattr(method, "__wrapped__", method)


class Muon(torch.optim.Optimizer):
    """See the module docstring.

    Args:
        params: parameters or groups; a group with ``"muon": True`` holds filters (>= 2-D).
        lr: learning rate (each group may set its own, e.g. through ``lr_mult``).
        momentum: Nesterov momentum of the SGD groups, in [0, 1).
        muon_momentum: Nesterov momentum of the Muon groups (airbench: 0.6), in [0, 1).
        weight_decay: coupled L2 of the SGD groups (>= 0); Muon groups keep a fixed norm instead.
        ns_steps: Newton–Schulz iterations (>= 1).
    """

    # torch's own bodies, without the wrapper whose first call imports torch._dynamo (above):
    # trickbag's training loop is never traced by torch.compile (train.compile compiles the model)
    add_param_group = _without_compiler_guard(torch.optim.Optimizer.add_param_group)
    zero_grad = _without_compiler_guard(torch.optim.Optimizer.zero_grad)
    state_dict = _without_compiler_guard(torch.optim.Optimizer.state_dict)
    load_state_dict = _without_compiler_guard(torch.optim.Optimizer.load_state_dict)

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, muon_momentum: float = 0.6,
                 weight_decay: float = 0.0, ns_steps: int = 5) -> None:
        check_nonnegative("lr", lr)
        check_range("momentum", momentum, 0.0, 1.0, high_open=True)
        check_range("muon_momentum", muon_momentum, 0.0, 1.0, high_open=True)
        check_nonnegative("weight_decay", weight_decay)
        check_positive("ns_steps", ns_steps)
        defaults = {"lr": lr, "momentum": momentum, "muon_momentum": muon_momentum, "weight_decay": weight_decay,
                    "ns_steps": int(ns_steps), "muon": False}
        super().__init__(params, defaults)
        self._iteration_dtypes: dict[torch.device, torch.dtype] = {}
        for i, group in enumerate(self.param_groups):
            if group["muon"] and any(p.dim() < 2 for p in group["params"]):
                raise ValueError(f"param group {i} is a Muon group but holds a parameter with fewer than 2 dimensions")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter with a gradient. With ``self.found_inf`` set (a
        float tensor on the parameters' device, non-zero: skip; the attribute torch's fused
        optimizers read, see ``trickbag.optim.step_unless``) the update is computed but
        committed only where it is zero, so a step on a non-finite loss leaves parameters
        and momenta exactly as they were, decided on the device with no host sync."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        skip = None if found_inf is None else found_inf.reshape(()).ne(0)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            bufs = [self._buffer(p) for p in params]
            if group["muon"]:
                new_params, new_bufs = _muon_update(params, grads, bufs, group["lr"], group["muon_momentum"], group["ns_steps"],
                                                    self._iteration_dtype(params[0].device))
            else:
                new_params, new_bufs = _nesterov_update(params, grads, bufs, group["lr"], group["momentum"], group["weight_decay"])
            _commit([*params, *bufs], [*new_params, *new_bufs], skip)
        return loss

    def _iteration_dtype(self, device: torch.device) -> torch.dtype:
        """``iteration_dtype(device)``, asked once per device (it reads the CPU's flags)."""
        if device not in self._iteration_dtypes:
            self._iteration_dtypes[device] = iteration_dtype(device)
        return self._iteration_dtypes[device]

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        """The momentum buffer, zeros at first (then ``mu * 0 + d = d``: torch's SGD, which
        starts it at ``d``, exactly)."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["momentum_buffer"]


def _nesterov_update(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor], lr: float, mu: float,
                     wd: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``torch.optim.SGD(nesterov=True)``: ``d = g + wd p; b <- mu b + d; p <- p - lr (d + mu b)``
    (new tensors; foreach ops, a few kernel launches for the whole group)."""
    d = torch._foreach_add(grads, params, alpha=wd) if wd else list(grads)
    new_bufs = torch._foreach_mul(bufs, mu)
    torch._foreach_add_(new_bufs, d)
    torch._foreach_add_(d, new_bufs, alpha=mu)
    return torch._foreach_add(params, d, alpha=-lr), new_bufs


def _muon_update(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor], lr: float, mu: float,
                 ns_steps: int, dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``b <- mu b + g``; ``u = g + mu b`` (Nesterov); ``p <- p sqrt(out) / ||p||`` (norm fixed);
    ``p <- p - lr NS(u)`` with ``u`` as an ``out x (in kh kw)`` matrix (new tensors)."""
    new_bufs = torch._foreach_mul(bufs, mu)
    torch._foreach_add_(new_bufs, grads)
    updates = torch._foreach_add(grads, new_bufs, alpha=mu)
    norms = torch._foreach_norm(params)
    new_params = [p * (p.size(0) ** 0.5 / norm.clamp_min(1e-12)) for p, norm in zip(params, norms)]
    directions = orthogonalize([u.reshape(p.size(0), -1) for p, u in zip(params, updates)], ns_steps, dtype=dtype)
    torch._foreach_add_(new_params, [d.view_as(p) for d, p in zip(directions, params)], alpha=-lr)
    return new_params, new_bufs


def _commit(targets: list[torch.Tensor], values: list[torch.Tensor], skip: torch.Tensor | None) -> None:
    """``targets[i] <- values[i]``, or, with ``skip`` (a bool tensor), only where it is false,
    chosen elementwise on the device (a NaN in a skipped value never reaches the target)."""
    if skip is None:
        torch._foreach_copy_(targets, values)
        return
    for target, value in zip(targets, values):
        torch.where(skip, target, value, out=target)
