"""Models by name (``MODELS`` registry). For now: plain deep nets used to study
initialization (``plain_mlp``, ``plain_cnn``)."""

from trickbag.models.plain import MODELS, build_model, plain_cnn, plain_mlp

__all__ = ["MODELS", "build_model", "plain_cnn", "plain_mlp"]
