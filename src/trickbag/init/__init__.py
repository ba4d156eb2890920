"""Initializers with TensorFlow-1 names, whole-model helpers, LSUV and an inspector.

* one function per TF-1 initializer (``initializers``), all in ``INITIALIZERS``;
* ``initialize(model, name, **params)``, ``zero_gamma(model)``, ``lstm_forget_bias(model)``;
* ``lsuv(model, batch, tol=0.1, max_iter=10)`` with a per-layer report;
* ``inspect_init(model, batch)``: weight and activation statistics through depth;
* ``init_patch_whitening(model, images)``: airbench's frozen patch-whitening first layer.
"""

from trickbag.init.apply import initialize, lstm_forget_bias, zero_gamma
from trickbag.init.initializers import (
    INITIALIZERS,
    TRUNCATED_NORMAL_STD,
    compute_fans,
    constant,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    lecun_normal,
    lecun_uniform,
    ones,
    orthogonal,
    random_normal,
    random_uniform,
    truncated_normal,
    uniform_unit_scaling,
    variance_scaling,
    zeros,
)
from trickbag.init.inspection import InitReport, LayerStats, apply_init, compare_inits, inspect_init, probe_batch
from trickbag.init.lsuv import LSUVLayer, lsuv
from trickbag.init.whitening import init_patch_whitening, patch_second_moment, patch_whitening_filters

xavier_normal = glorot_normal
xavier_uniform = glorot_uniform
msra = he_normal

__all__ = [
    "INITIALIZERS",
    "TRUNCATED_NORMAL_STD",
    "compute_fans",
    "constant",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "ones",
    "orthogonal",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "uniform_unit_scaling",
    "variance_scaling",
    "zeros",
    "xavier_normal",
    "xavier_uniform",
    "msra",
    "initialize",
    "lstm_forget_bias",
    "zero_gamma",
    "lsuv",
    "LSUVLayer",
    "init_patch_whitening",
    "patch_second_moment",
    "patch_whitening_filters",
    "inspect_init",
    "apply_init",
    "compare_inits",
    "probe_batch",
    "InitReport",
    "LayerStats",
]
