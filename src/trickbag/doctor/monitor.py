"""``DoctorMonitor``: opt-in training monitors, measured every ``every`` optimizer steps.

On a monitored step it records, for one step only (so the cost is spread over ``every``):

- per parameter: gradient norm, weight norm and the update/weight ratio
  ``||w_{t+1} - w_t|| / ||w_t||`` (seed 001: about 1e-3 is healthy), and the global
  gradient norm; gradients are read in an optimizer step pre-hook, after the AMP scaler
  has unscaled them;
- per activation module (ReLU, GELU, tanh, ...) and per recurrent layer: output mean,
  std, the dead fraction (channels that are zero for the whole batch) and the weighted
  layer that feeds it (the last conv/linear that ran before it), from forward hooks that
  exist only during that step;
- non-finite losses, gradients and activations.

Every step's loss is kept (a float), so spikes and plateaus are seen at full resolution.
Records go to ``doctor.jsonl`` in the run directory, one JSON object per monitored step;
``trickbag.doctor.diagnose`` turns them into findings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trickbag._checks import check_positive
from trickbag._json import append_jsonl
from trickbag.train.callbacks import Callback, parse_line

__all__ = ["DoctorMonitor", "ACTIVATIONS", "WEIGHTED"]

# Modules whose outputs are "activations" for the dead-unit and scale monitors.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Hardswish, nn.Hardtanh, nn.Softplus,
)
# Modules that hold the weights an activation's scale depends on; recurrent ones have no
# activation modules after them, so their own outputs are measured too.
RECURRENT: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU, nn.RNN)
WEIGHTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Embedding) + RECURRENT
# Activations whose exact zeros mean "no gradient flows" (dead units).
ZERO_DEAD: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


def _activation_stats(out: torch.Tensor) -> dict[str, Any]:
    """mean, std, fraction of features (dim 1; the last dim for (B, T, F)) never > 0 in the batch.

    Two passes over the tensor plus a max-reduction (the max of a float tensor, not a
    comparison tensor: 35x faster on channels_last here); a NaN or inf anywhere makes
    the mean or std non-finite, so no separate isfinite pass is needed.
    """
    t = out.detach().float()
    feature_dim = 1 if t.dim() != 3 else 2  # (B, C, ...) images; (B, T, F) sequences
    if t.dim() >= 2:
        alive = t.amax(dim=[d for d in range(t.dim()) if d != feature_dim]) > 0
        dead = 1.0 - float(alive.float().mean())
    else:
        dead = 0.0
    mean, std = float(t.mean()), float(t.std()) if t.numel() > 1 else 0.0
    return {"mean": mean, "std": std, "dead": dead, "finite": math.isfinite(mean) and math.isfinite(std)}


class DoctorMonitor(Callback):
    """Collect the monitors every ``every`` optimizer steps; see the module docstring.

    Args:
        every: optimizer steps between monitored steps (>= 1); 50 costs 0.3% of training
            time on the default recipe here (benchmarks/doctor_overhead.py).
        path: JSON-lines file for the records (default ``<run dir>/doctor.jsonl``;
            ``None`` with ``write=False`` keeps them in memory only).
        write: write the records to ``path``.
    """

    def __init__(self, every: int = 50, path: str | Path | None = None, write: bool = True) -> None:
        check_positive("every", every)
        self.every = int(every)
        self.path = Path(path) if path is not None else None
        self.write = write
        self.records: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._record: dict[str, Any] | None = None
        self._before: list[torch.Tensor] = []  # the monitored step's parameters before the update
        self._params: list[torch.Tensor] = []  # ... and the parameters themselves
        self._last_armed = -1  # the step hooks were last armed for (a skipped step keeps its number)
        self._hooks: list[Any] = []
        self._opt_hooks: list[Any] = []
        self._last_weighted = ""
        self._calls: dict[str, int] = {}

    # --- lifecycle ----------------------------------------------------------------------

    def on_fit_start(self, trainer: Any) -> None:
        if self.path is None:
            self.path = Path(trainer.out) / "doctor.jsonl"
        if self.write and self.path.exists():  # resume: keep the records whose steps the checkpoint holds
            keep = [line for line in self.path.read_text().splitlines() if (record := parse_line(line)) is not None
                    and record.get("end", 0) <= trainer.step]
            self.path.write_text("".join(line + "\n" for line in keep))
        self._model = trainer.model
        self._names = {id(p): n for n, p in trainer.model.named_parameters()}
        opt = trainer.optimizer
        self._opt_hooks = [opt.register_step_pre_hook(self._before_update), opt.register_step_post_hook(self._after_update)]
        if trainer.step % self.every == 0:
            self._arm(trainer)

    def on_step_end(self, trainer: Any, loss: Any) -> None:
        loss = float(loss)  # the trainer passes a tensor on the device: the doctor reads every step
        self._losses.append(loss)
        if self._record is not None:
            self._finish(trainer, loss)
        elif not math.isfinite(loss):  # a run about to diverge may never reach on_fit_end: write it now
            self._emit({"step": trainer.step, "lr": trainer.current_lr, "losses": self._losses, "nonfinite": ["loss"]}, trainer)
            self._losses = []
        if trainer.step % self.every == 0 and self._record is None and self._last_armed != trainer.step:
            self._arm(trainer)

    def on_epoch_end(self, trainer: Any, metrics: dict) -> None:
        self.epochs.append({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})

    def on_fit_end(self, trainer: Any, summary: dict) -> None:
        self._disarm()
        for handle in self._opt_hooks:
            handle.remove()
        self._opt_hooks = []
        if self._losses:  # the tail of the loss series after the last monitored step
            self._emit({"step": trainer.step, "lr": trainer.current_lr, "losses": self._losses, "tail": True}, trainer)
            self._losses = []

    # --- one monitored step ---------------------------------------------------------------

    def _arm(self, trainer: Any) -> None:
        """Hooks for the next forward/backward/update only."""
        self._record = {"step": trainer.step, "acts": {}, "params": {}, "nonfinite": []}
        self._last_armed = trainer.step
        self._calls = {}
        self._last_weighted = ""
        for name, module in self._model.named_modules():
            if isinstance(module, WEIGHTED + ACTIVATIONS):
                self._hooks.append(module.register_forward_hook(self._make_hook(name or "model", module)))

    def _disarm(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _make_hook(self, name: str, module: nn.Module):
        weighted = isinstance(module, WEIGHTED)
        measured = isinstance(module, ACTIVATIONS + RECURRENT)
        zero_dead = isinstance(module, ZERO_DEAD)

        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if not mod.training or self._record is None:
                return
            if measured:
                out = output[0] if isinstance(output, tuple) else output
                if isinstance(out, torch.Tensor) and out.is_floating_point():
                    n = self._calls.get(name, 0) + 1
                    self._calls[name] = n
                    stats = _activation_stats(out)
                    if not zero_dead:
                        stats["dead"] = 0.0
                    stats["after"] = name if weighted else self._last_weighted
                    stats["kind"] = type(mod).__name__
                    self._record["acts"][name if n == 1 else f"{name}#{n}"] = stats
            if weighted:
                self._last_weighted = name

        return hook

    @torch.no_grad()
    def _before_update(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._record is None:
            return
        self._disarm()  # the forward is over
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self._params = params
        grads = [p.grad.detach().float() for p in params]
        grad_norms = torch._foreach_norm(grads) if grads else []
        weight_norms = torch._foreach_norm([p.detach().float() for p in params]) if params else []
        self._before = [p.detach().clone() for p in params]
        total = math.sqrt(sum(float(g) ** 2 for g in grad_norms))
        self._record["grad_norm"] = total
        for p, g, w in zip(params, grad_norms, weight_norms):
            g, w = float(g), float(w)
            name = self._names.get(id(p), "?")
            self._record["params"][name] = {"grad": g, "weight": w, "ndim": p.dim(), "numel": p.numel()}
            if not math.isfinite(g):
                self._record["nonfinite"].append(f"grad:{name}")

    @torch.no_grad()
    def _after_update(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._record is None or not self._before:
            return
        deltas = torch._foreach_sub([p.detach() for p in self._params], self._before)
        for p, d in zip(self._params, torch._foreach_norm(deltas)):
            entry = self._record["params"][self._names.get(id(p), "?")]
            entry["update"] = float(d)
            entry["ratio"] = float(d) / entry["weight"] if entry["weight"] > 0 else None
        self._before, self._params = [], []

    def _finish(self, trainer: Any, loss: float) -> None:
        record, self._record = self._record, None
        self._disarm()
        self._before, self._params = [], []
        record["lr"] = trainer.current_lr
        record["loss"] = loss
        record["losses"] = self._losses
        self._losses = []
        if not math.isfinite(loss):
            record["nonfinite"].append("loss")
        for name, act in record["acts"].items():
            if not act["finite"]:
                record["nonfinite"].append(f"activation:{name}")
        self._emit(record, trainer)

    def _emit(self, record: dict[str, Any], trainer: Any) -> None:
        record["end"] = trainer.step  # the optimizer steps done when written: what a resume keeps
        self.records.append(record)
        if self.write and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(self.path, record)
