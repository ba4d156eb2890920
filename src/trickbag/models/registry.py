"""The model registry: builders by name, with a did-you-mean error for unknown names."""

from __future__ import annotations

from typing import Any

from torch import nn

from trickbag._checks import check_keywords
from trickbag._params import typed_kwargs
from trickbag.registry import Registry

__all__ = ["MODELS", "build_model"]

MODELS: Registry = Registry("model")


def build_model(name: str, **params: Any) -> nn.Module:
    """``MODELS[name](**params)``; unknown parameters get a did-you-mean error, and values
    are coerced to the builder's annotations (``pool_first: maybe`` is an error, not true)."""
    builder = MODELS.get(name)
    check_keywords(f"model {name!r}", builder, params)
    return builder(**typed_kwargs(builder, params))
