"""The trainer: ``Trainer(recipe).fit()``; callbacks, EMA, checkpoints, runtime choices."""

from trickbag.train.callbacks import Callback
from trickbag.train.checkpoint import latest_checkpoint, load_checkpoint, save_atomic
from trickbag.train.runtime import Runtime, cpu_has_native_bf16, resolve_runtime
from trickbag.train.trainer import (
           NonFiniteLossError,
           Trainer,
           resolve_schedule,
           steps_from_units,
)

__all__ = ["Trainer", "Callback", "NonFiniteLossError", "resolve_schedule", "steps_from_units", "save_atomic",
           "load_checkpoint", "latest_checkpoint", "Runtime", "resolve_runtime", "cpu_has_native_bf16"]
