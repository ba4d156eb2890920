"""Test-time augmentation: predictions averaged over a few views of each image.

``tta_views(x, flip=True, shift=1, fill=black)`` gives the views with their weights, after
airbench (``legacy/airbench94.py``): the image and its mirror carry half the weight, and
the image shifted diagonally by ``shift`` pixels each way (and their mirrors) the other
half. Shifted-in pixels are ``fill`` (the value of black in the model's input units), as
the training translation pads with black. Costs nothing at training time.
"""

from __future__ import annotations

import torch

from trickbag._checks import check_nonnegative

__all__ = ["translate", "tta_view_specs", "tta_views", "view", "view_name", "view_subsets"]


def translate(x: torch.Tensor, dy: int, dx: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``x`` (B, C, H, W) moved ``dy`` pixels down and ``dx`` right; the uncovered border is ``fill``."""
    out = torch.empty_like(x)
    out[:] = fill  # a scalar, or a (1, C, 1, 1) tensor broadcast over the batch
    h, w = x.shape[-2:]
    src_y, dst_y = slice(max(-dy, 0), h - max(dy, 0)), slice(max(dy, 0), h - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), w - max(dx, 0)), slice(max(dx, 0), w - max(-dx, 0))
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


def tta_view_specs(flip: bool = True, shift: int = 0) -> list[tuple[bool, int, float]]:
    """``[(mirrored, offset, weight), ...]``: which views (the image or its mirror, moved
    ``offset`` pixels down and right) and their weights, summing to 1 (module docstring).
    A smaller set of views (no flip, or no shift) is a subset of these keys, so one pass over
    the union serves every subset (``Trainer.evaluate_views``)."""
    shift = int(check_nonnegative("shift", shift))
    base = [False, True] if flip else [False]
    if not shift:
        return [(m, 0, 1.0 / len(base)) for m in base]
    moved = [(m, s) for s in (shift, -shift) for m in base]
    return [(m, 0, 0.5 / len(base)) for m in base] + [(m, s, 0.5 / len(moved)) for m, s in moved]


def view(x: torch.Tensor, mirrored: bool, offset: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """One test-time view of ``x``: mirrored (width axis) if asked, then moved diagonally."""
    v = x.flip(-1) if mirrored else x
    return translate(v, offset, offset, fill) if offset else v


def tta_views(x: torch.Tensor, flip: bool = True, shift: int = 0, fill: torch.Tensor | float = 0.0) -> list[tuple[torch.Tensor, float]]:
    """``[(view, weight), ...]`` whose weights sum to 1 (see the module docstring)."""
    return [(view(x, m, s, fill), w) for m, s, w in tta_view_specs(flip, shift)]


def view_name(flip: bool, shift: int) -> str:
    """``none``, ``flip``, ``translate1``, ``flip+translate1``: a set of views by name."""
    return "+".join(["flip"] * bool(flip) + [f"translate{shift}"] * bool(shift)) or "none"


def view_subsets(flip: bool, shift: int) -> list[tuple[bool, int]]:
    """Every set of views ``(flip', shift')`` inside ``(flip, shift)``, the full set last:
    ``(True, 1)`` -> ``[(False, 0), (False, 1), (True, 0), (True, 1)]``."""
    return [(f, s) for f in sorted({False, bool(flip)}) for s in sorted({0, int(shift)})]
