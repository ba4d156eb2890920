"""Forward hooks that cannot outlive their use: one context manager for every caller
(the init inspector, LSUV, the doctor's monitors)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

__all__ = ["forward_hooks"]


@contextmanager
def forward_hooks(modules: Iterable[nn.Module], hook: Callable[[nn.Module, Any, Any], Any]) -> Iterator[None]:
    """Register ``hook(module, inputs, output)`` on each of ``modules``; remove every one on
    exit, also when the forward pass raises (a hook may raise to end a pass early). The
    hooks observe: what ``hook`` returns is ignored, so outputs are never replaced.

    Example::

        with forward_hooks(layers, lambda m, i, out: outputs.append(out)):
            model(batch)
    """
    def observe(module: nn.Module, inputs: Any, output: Any) -> None:
        hook(module, inputs, output)

    handles = [m.register_forward_hook(observe) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
