"""The loop: ``Trainer(recipes.build(recipe)).fit()``; callbacks, EMA, checkpoints, runtime
choices, run-directory guards and the errors a run can end with."""

from trickbag.train.callbacks import Callback
from trickbag.train.checkpoint import latest_checkpoint, load_checkpoint, newest_loadable, save_atomic
from trickbag.train.errors import (
           DivergedError,
           NonFiniteLossError,
           ResumeError,
           RunDirError,
           RunWriteError,
           TrainingError,
)
from trickbag.train.runtime import Runtime, cpu_has_native_bf16, resolve_runtime
from trickbag.train.trainer import Trainer

__all__ = ["Trainer", "Callback", "TrainingError", "NonFiniteLossError", "DivergedError", "ResumeError", "RunDirError",
           "RunWriteError", "save_atomic", "load_checkpoint", "latest_checkpoint", "newest_loadable", "Runtime",
           "resolve_runtime", "cpu_has_native_bf16"]
