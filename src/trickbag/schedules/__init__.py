"""Learning-rate schedules as pure, picklable functions of the step (torch-free).

* TF-1 decays (``tf1``): ``exponential_decay``, ``inverse_time_decay``,
  ``natural_exp_decay``, ``piecewise_constant``, ``polynomial_decay``, ``cosine_decay``,
  ``cosine_decay_restarts``, ``linear_cosine_decay``, ``noisy_linear_cosine_decay``.
* modern (``modern``): ``constant``, ``linear_warmup``, ``cosine`` and ``linear_decay`` (+ warmup, final lr),
  ``one_cycle``, ``cyclic``/``triangular``, ``step_decay``, ``multistep``, and the seed's
  ``cifar_200_epochs``/``cifar_300_epochs`` presets.
* composition (``compose``): ``join``, ``scale``, ``warmup``.
* ``PlateauController`` (``plateau``): divide the lr when a metric stalls.
* ``trickbag.schedules.torch.attach`` drives a torch optimizer (imports torch; not
  imported here).

Every name is in ``SCHEDULES``; ``build(name, **params)`` and ``from_config`` make
schedules from names and configs.
"""

from trickbag.schedules.base import (
    SCHEDULES,
    Schedule,
    build,
    evaluate,
    from_config,
    register,
)
from trickbag.schedules.compose import Join, Scale, join, scale, warmup
from trickbag.schedules.modern import (
    Constant,
    CosineAnneal,
    Cyclic,
    Linear,
    StepValues,
    cifar_200_epochs,
    cifar_300_epochs,
    constant,
    cosine,
    linear_decay,
    cyclic,
    linear_warmup,
    multistep,
    one_cycle,
    step_decay,
    triangular,
)
from trickbag.schedules.plateau import PlateauController, PlateauDecision
from trickbag.schedules.tf1 import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LinearCosineDecay,
    NaturalExpDecay,
    NoisyLinearCosineDecay,
    PiecewiseConstant,
    PolynomialDecay,
    cosine_decay,
    cosine_decay_restarts,
    exponential_decay,
    inverse_time_decay,
    linear_cosine_decay,
    natural_exp_decay,
    noisy_linear_cosine_decay,
    piecewise_constant,
    polynomial_decay,
)

__all__ = [
    "SCHEDULES",
    "Schedule",
    "build",
    "evaluate",
    "from_config",
    "register",
    "Join",
    "Scale",
    "join",
    "scale",
    "warmup",
    "Constant",
    "CosineAnneal",
    "Cyclic",
    "Linear",
    "StepValues",
    "cifar_200_epochs",
    "cifar_300_epochs",
    "constant",
    "cosine",
    "linear_decay",
    "cyclic",
    "linear_warmup",
    "multistep",
    "one_cycle",
    "step_decay",
    "triangular",
    "PlateauController",
    "PlateauDecision",
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LinearCosineDecay",
    "NaturalExpDecay",
    "NoisyLinearCosineDecay",
    "PiecewiseConstant",
    "PolynomialDecay",
    "cosine_decay",
    "cosine_decay_restarts",
    "exponential_decay",
    "inverse_time_decay",
    "linear_cosine_decay",
    "natural_exp_decay",
    "noisy_linear_cosine_decay",
    "piecewise_constant",
    "polynomial_decay",
]
