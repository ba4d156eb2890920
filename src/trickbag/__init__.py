"""trickbag: the craft of training neural networks as tested, composable parts.

Subpackages:
    schedules  torch-free ``step -> lr`` schedules (TF-1 decays, warmup, cosine,
               one-cycle, cyclic, join) and ``PlateauController``; ``schedules.torch``
               attaches any of them to a torch optimizer.
    init       TF-1 initializers by name, LSUV, zero-gamma, LSTM forget bias and an
               inspector of weight/activation statistics through depth.

Importing ``trickbag`` imports neither torch nor matplotlib.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
