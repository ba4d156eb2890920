"""Device, precision and memory-format choices, made once per run and recorded.

* device ``auto``: cuda, then mps, then cpu.
* precision ``auto``: bf16 autocast on CUDA GPUs that compute bf16 (Ampere and later: it
  has fp32's range, so no ``GradScaler``, whose overflow check reads a flag back from the
  GPU every step), fp16 with ``GradScaler`` on older GPUs; bf16 autocast on CPUs with
  native bf16 arithmetic (AVX512-BF16 or AMX, and torch not capped below it by
  ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA``); fp32 elsewhere. On a CPU without native bf16,
  bf16 autocast is emulated and much *slower* than fp32 (measured: about 10x on a
  2-core AVX2 EPYC, ``benchmarks/precision.py``), so auto never picks it there.
* channels_last ``None``: on for models with 2-D convolutions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from trickbag.hardware import bf16_is_native, cpu_has_native_bf16

__all__ = ["Runtime", "resolve_device", "resolve_runtime", "cpu_has_native_bf16", "auto_precision"]


def auto_precision(device_type: str, native_bf16: bool) -> str:
    """What ``precision: auto`` picks on ``device_type`` (cuda, cpu, mps, ...), given
    whether that device computes bf16 natively (see the module docstring)."""
    if device_type == "cuda":
        return "bf16" if native_bf16 else "fp16"
    if device_type == "cpu":
        return "bf16" if native_bf16 else "fp32"
    return "fp32"


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for fp16 (bf16 has fp32's range and needs no loss scaling)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def synchronize(self) -> None:
        """Wait for the work queued on the device (GPUs run asynchronously; a CPU has none queued)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def describe(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last}


def resolve_device(device: str) -> torch.device:
    """``train.device`` as a torch device: ``auto`` is cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {device!r} but CUDA is not available here; use device=auto or cpu")
    return dev


def resolve_runtime(device: str, precision: str, channels_last: bool | None, model: nn.Module) -> Runtime:
    dev = resolve_device(device)
    if precision == "auto":
        precision = auto_precision(dev.type, bf16_is_native(dev))
    if precision == "fp16" and dev.type == "cpu":
        raise ValueError("train.precision fp16 needs a GPU; on CPU use bf16 or fp32")
    if channels_last is None:
        channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return Runtime(dev, precision, bool(channels_last))
