"""Capture and restore every random number generator a training step uses, as one value.

Used by checkpoints (bit-exact resume) and by the LR finder (which must leave no trace):
torch's CPU generator, every CUDA device's generator, and Python's ``random``. The state
holds tensors and nested tuples of ints only, so it goes into a checkpoint that loads
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import torch

__all__ = ["rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """``{"torch", "cuda", "python"}`` states of the global generators."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned (CUDA states only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_as_tuple(state["python"]))


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` needs tuples; a checkpoint may give lists back."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
