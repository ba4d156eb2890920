"""CUDA graphs for the training forward and backward passes (``train.cuda_graph``).

A small net at a large batch is launch-bound on a GPU: each step issues a few hundred
kernels that each run for microseconds, and the host's time to launch them is the step's
time (fourth session, H100: about 9 ms per step at batch 512, 1024 and 2048 alike). A CUDA
graph records those launches once and replays them as one. ``torch.cuda.make_graphed_callables``
(PyTorch's "partial-network capture", docs: CUDA Graphs) records the model's training forward
and its backward for one input shape; the loss, the optimizer, the augmentation and the
evaluation (in eval mode, not graphed) stay eager, so every other part of the trainer works
unchanged. Unlike ``torch.compile(mode="reduce-overhead")`` it needs no compilation: the
capture costs a few warm-up steps' time, counted in the run's training time.

What it asks of a run: a CUDA device, one input shape (no progressive resizing; the trainer
drops the last partial batch anyway), no module hooks (the doctor's monitor), and parameters
changed only in place (optimizers, Lookahead and checkpoint loading all copy into them).
"""

from __future__ import annotations

import torch
from torch import nn


class GraphedForward:
    """Calls ``model``; in training mode, through a CUDA graph of its forward and backward,
    recorded on the first call (for that call's input shape, memory format and dtype).

    The capture's warm-up passes run in training mode and would move BatchNorm's running
    statistics; they are put back afterwards, so a graphed run's buffers are those of the
    eager run. ``amp_dtype``: the run's autocast dtype (None: fp32); the capture runs under
    autocast without its weight-cast cache, as ``make_graphed_callables`` requires.
    """

    def __init__(self, model: nn.Module, amp_dtype: torch.dtype | None, warmup_steps: int = 3) -> None:
        self.model = model
        self.amp_dtype = amp_dtype
        self.warmup_steps = warmup_steps
        self.signature: tuple | None = None  # (shape, stride, dtype) of the recorded input

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.model.training:  # evaluation: the model's own forward (the graphed one would check this too)
            return self.model(x)
        signature = (tuple(x.shape), x.stride(), x.dtype)
        if self.signature is None:
            self._capture(x)
            self.signature = signature
        elif signature != self.signature:
            raise ValueError(f"train.cuda_graph recorded the training forward for inputs of shape {self.signature[0]} "
                             f"(stride {self.signature[1]}, {self.signature[2]}), got {tuple(x.shape)} (stride {x.stride()}, "
                             f"{x.dtype}): a graph replays one shape; turn train.cuda_graph off for runs whose batches change shape")
        return self.model(x)

    def _capture(self, x: torch.Tensor) -> None:
        saved = {name: buf.detach().clone() for name, buf in self.model.named_buffers()}
        sample = x.detach().clone()  # keeps x's memory format (channels_last)
        enabled = self.amp_dtype is not None
        with torch.autocast("cuda", dtype=self.amp_dtype or torch.bfloat16, enabled=enabled, cache_enabled=False):
            # replaces model.forward by one that replays the graphs while model.training is True
            torch.cuda.make_graphed_callables(self.model, (sample,), num_warmup_iters=self.warmup_steps)
        with torch.no_grad():
            for name, buf in self.model.named_buffers():
                buf.copy_(saved[name])
