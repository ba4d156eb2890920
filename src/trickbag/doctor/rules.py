"""Rules that turn the doctor's records into findings (torch-free).

Input: the ``DoctorMonitor`` records (one dict per monitored step, see
``trickbag.doctor.monitor``) and the per-epoch metrics (``metrics.jsonl``). Output:
``Finding`` objects with a severity (``info`` < ``warning`` < ``error``), the evidence
(layer, value, threshold) and a prescription a user can act on.

Where the thresholds come from:

- update/weight ratio ``||Δw|| / ||w||`` per step: seed 001 (Karpathy's CS231n note) puts a
  healthy value near 1e-3; SGD on BN nets sits near 1e-2 (scale-invariant weights reach
  ``sqrt(2 lr wd)``). We flag the median over steps where the lr is at least half its
  peak: above 0.1 (10x the top of the healthy band) as too high, below 1e-4 as too low.
  Measured on our recipes: 1.5e-2..3e-2 (fashion-mnist, SGD lr 0.2), 4e-3..9e-3 (row LSTM,
  Adam 2e-3); lr x100 diverges, lr x1e-4 gives 2e-5..1.3e-4.
- activations: with standardized inputs a healthy layer's output std is O(1); above 1e2
  is exploding, below 1e-3 (and 100x below the first layer) vanishing.
- dead units: a ReLU channel that is zero for the whole batch passes no gradient.
- loss spikes: a step loss above 2x the median of the previous 25 (and at least 0.5 above it).
- plateau: less than 1% improvement over the last 30% of the steps, with the lr still high.
- train/validation gap: validation loss 5% above its best while the training loss falls.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from trickbag._checks import check_positive, check_range

__all__ = ["Finding", "Thresholds", "SEVERITIES", "RULES", "CAUSES", "SYMPTOMS", "diagnose", "worst_severity", "loss_series",
           "activation_explodes", "activation_vanishes"]

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    """One diagnosis. ``layer`` is the parameter or layer it is about (``None``: the run)."""

    code: str
    severity: str
    title: str
    evidence: str
    prescription: str
    layer: str | None = None
    value: float | None = None
    threshold: float | None = None
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """Rule thresholds; see the module docstring for where each comes from."""

    ratio_high: float = 0.1  # median update/weight ratio above this: lr too high
    ratio_low: float = 1e-4  # median (over layers) below this: lr too low
    ratio_target: float = 1e-3  # seed 001's healthy update/weight ratio, for the suggested factor
    act_explode: float = 1e2  # activation std above this: exploding
    act_vanish: float = 1e-3  # activation std below this (and 100x below the first layer): vanishing
    dead_warn: float = 0.4  # fraction of a ReLU layer's channels dead in the whole batch
    dead_info: float = 0.1
    diverge: float = 1.5  # late loss above this x early loss: diverging
    spike_factor: float = 2.0  # step loss above this x the median of the previous window
    spike_rise: float = 0.5  # ... and at least this much above it
    spike_window: int = 25
    grad_spike_factor: float = 10.0  # global gradient norm above this x its median
    plateau_rel: float = 0.01  # less relative improvement than this over the last plateau_frac of steps
    plateau_frac: float = 0.3
    gap_rise: float = 0.05  # validation loss this much above its best: overfitting
    min_steps: int = 30  # fewer loss points than this: no spike/plateau/divergence rules

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("dead_warn", "dead_info", "plateau_frac", "plateau_rel"):
                check_range(f"thresholds.{f.name}", value, 0.0, 1.0, low_open=True)
            else:
                check_positive(f"thresholds.{f.name}", value)


@dataclass
class _Run:
    """What the rules read, computed once."""

    records: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    losses: list[float]
    monitored: list[dict[str, Any]] = field(default_factory=list)  # records with layer data
    active: list[dict[str, Any]] = field(default_factory=list)  # ... where lr >= half its peak
    peak_lr: float = 0.0
    diverged: bool = False
    diverged_how: str = ""  # the evidence when diverged
    outcome: dict[str, Any] = field(default_factory=dict)  # the run's summary.json (how it ended), when known


def loss_series(records: Iterable[dict[str, Any]]) -> list[float]:
    """Every step's loss, in order, from the records' ``losses`` lists."""
    return [float(x) for r in records for x in r.get("losses", [])]


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _prepare(records: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]], t: Thresholds,
             outcome: dict[str, Any] | None = None) -> _Run:
    run = _Run(list(records), list(epochs), loss_series(records), outcome=dict(outcome or {}))
    run.diverged, run.diverged_how = _diverged(run.losses, t)
    run.monitored = [r for r in run.records if "params" in r]
    lrs = _finite(r.get("lr") for r in run.monitored)
    run.peak_lr = max(lrs) if lrs else 0.0
    run.active = [r for r in run.monitored if _finite([r.get("lr")]) and r["lr"] >= 0.5 * run.peak_lr] or run.monitored
    return run


def _module(param: str) -> str:
    """``features.3.weight`` -> ``features.3`` (the layer a user edits); ``weight`` -> ``model``."""
    return param.rsplit(".", 1)[0] if "." in param else "model"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _lr_hint(run: _Run, factor: float, lower: bool) -> str:
    if not run.peak_lr:
        return ""
    new = run.peak_lr / factor if lower else run.peak_lr * factor
    return f" (the lr reached {_fmt(run.peak_lr)}; try --set optim.lr={_fmt(new)})"


def _round_factor(x: float) -> float:
    """1, 2, 3 or 5 times a power of ten, at least 2."""
    x = max(x, 2.0)
    power = 10 ** math.floor(math.log10(x))
    return min((m * power for m in (1, 2, 3, 5, 10)), key=lambda v: abs(math.log(v / x)))


# --- rules ------------------------------------------------------------------------------------


def _weight_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Weight tensors (ndim >= 2) seen in any record, in first-seen order."""
    names: dict[str, None] = {}
    for r in records:
        names.update((n, None) for n, p in r.get("params", {}).items() if p.get("ndim", 0) >= 2)
    return list(names)


def _weight_ratios(run: _Run) -> dict[str, float]:
    """Median update/weight ratio per weight tensor (ndim >= 2) over the active steps."""
    out: dict[str, float] = {}
    for name in _weight_names(run.monitored):
        values = _finite(r["params"].get(name, {}).get("ratio") for r in run.active)
        if values:
            out[name] = statistics.median(values)
    return out


def _diverged(losses: Sequence[float], t: Thresholds) -> tuple[bool, str]:
    """Non-finite losses, or the late loss above ``diverge`` x the early loss."""
    bad = sum(1 for x in losses if not math.isfinite(x))
    n = max(len(losses) // 10, 3)  # the first and the last tenth
    early = _finite(losses[:n])
    start = f" (it started at {_fmt(statistics.mean(early))})" if early else ""
    if bad:
        return True, f"{bad} of {len(losses)} losses were non-finite{start}"
    if len(losses) < t.min_steps or not early:
        return False, ""
    begin, end = statistics.mean(early), statistics.mean(losses[-n:])
    if end > t.diverge * begin:
        return True, f"the loss rose from {_fmt(begin)} to {_fmt(end)} (> {t.diverge}x)"
    return False, ""


def activation_explodes(std: float, t: Thresholds | None = None) -> bool:
    """An activation std that is non-finite or above ``act_explode`` (the one definition of
    "exploding", shared with ``trickbag.init.InitReport.verdict``)."""
    t = t or Thresholds()
    return not math.isfinite(std) or std > t.act_explode


def activation_vanishes(std: float, first_std: float, t: Thresholds | None = None) -> bool:
    """An activation std below ``act_vanish`` and 100x below the first layer's."""
    t = t or Thresholds()
    return math.isfinite(std) and math.isfinite(first_std) and std < t.act_vanish and std < first_std / 100


def _explodes(act: dict[str, Any], t: Thresholds) -> bool:
    """An activation record that is non-finite or whose std is above ``act_explode``."""
    return not act.get("finite", True) or activation_explodes(act["std"], t)


def _exploding_at_init(run: _Run, t: Thresholds) -> bool:
    return bool(run.monitored) and any(_explodes(a, t) for _, a in _acts(run.monitored[0]))


def rule_learning_rate(run: _Run, t: Thresholds) -> list[Finding]:
    """lr too high (update ratio >> 1e-2, or the loss diverging from a healthy init) /
    too low (ratio << 1e-4)."""
    ratios = _weight_ratios(run)
    diverged, how = run.diverged, run.diverged_how
    bad_init = _exploding_at_init(run, t)  # then the init is the cause; rule_activations says so
    diverged = diverged and not bad_init
    findings = []
    worst = max(ratios, key=ratios.get) if ratios else None
    high = worst is not None and ratios[worst] > t.ratio_high
    if high or diverged:
        factor = _round_factor(ratios[worst] / (t.ratio_high / 10)) if high else 10.0
        evidence = f"median update/weight ratio of {worst} is {_fmt(ratios[worst])} (threshold {t.ratio_high})" if worst else ""
        if diverged:
            evidence += ("; " if evidence else "") + how
        if bad_init:
            evidence += "; the activations were already exploding at initialization, which inflates the updates"
        findings.append(Finding(
            "lr_too_high", "error" if diverged else "info" if bad_init else "warning", "learning rate too high", evidence,
            f"lower the lr about {factor:g}x{_lr_hint(run, factor, lower=True)}; add a warmup "
            "(schedule.params.warmup_steps=1ep) and gradient clipping (optim.clip_norm=5) if it still spikes",
            layer=_module(worst) if worst else None, value=ratios[worst] if worst else None, threshold=t.ratio_high))
    moving = {n: r for n, r in ratios.items() if r > 0}  # layers with no update at all: rule_gradients
    typical = statistics.median(moving.values()) if moving else None
    if not diverged and typical is not None and typical < t.ratio_low:
        slowest = min(moving, key=moving.get)
        factor = _round_factor(t.ratio_target / typical)
        findings.append(Finding(
            "lr_too_low", "warning", "learning rate too low",
            f"median update/weight ratio over layers is {_fmt(typical)} (threshold {t.ratio_low}); "
            f"slowest: {slowest} at {_fmt(moving[slowest])}",
            f"raise the lr about {factor:g}x{_lr_hint(run, factor, lower=False)}, or run trickbag find-lr",
            layer=_module(slowest), value=moving[slowest], threshold=t.ratio_low))
    return findings


def _acts(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(record.get("acts", {}).items())


def rule_activations(run: _Run, t: Thresholds) -> list[Finding]:
    """Exploding/vanishing activations at initialization (init or normalization) and
    activations that blow up during training (lr)."""
    if not run.monitored:
        return []
    findings = []
    first, last = run.monitored[0], run.monitored[-1]
    acts = _acts(first)
    for name, a in acts:
        if _explodes(a, t):
            layer = a.get("after") or name
            stds = ", ".join(f"{n}: {_fmt(x['std'])}" for n, x in acts)
            findings.append(Finding(
                "activations_exploding", "error", "exploding activations at initialization",
                f"output std after {layer} ({name}) is {_fmt(a['std'])} at step {first['step']} (threshold {t.act_explode}); "
                f"through depth: {stds}",
                f"re-initialize {layer}: he_normal (fan_in, for ReLU) or glorot for tanh (model.init=he_normal), or lsuv; "
                "or add batch normalization after it",
                layer=layer, value=a["std"], threshold=t.act_explode, step=first["step"]))
            break
    if acts:
        top = acts[0][1]["std"]
        for name, a in acts[1:]:
            dead = a.get("dead", 0.0) >= t.dead_warn  # zero because its units are dead: rule_dead_units
            if not dead and activation_vanishes(a["std"], top, t):
                layer = a.get("after") or name
                findings.append(Finding(
                    "activations_vanishing", "warning", "vanishing activations at initialization",
                    f"output std after {layer} ({name}) is {_fmt(a['std'])} vs {_fmt(top)} at the first layer "
                    f"(threshold {t.act_vanish})",
                    f"re-initialize with a larger scale (he_normal for ReLU, lsuv) or add batch normalization; "
                    f"check {layer}'s init",
                    layer=layer, value=a["std"], threshold=t.act_vanish, step=first["step"]))
                break
    if not findings and last is not first:
        start = dict(acts)
        for name, a in _acts(last):
            s0 = start.get(name, {}).get("std")
            if _explodes(a, t) and _finite([s0]) and s0 <= t.act_explode:
                layer = a.get("after") or name
                findings.append(Finding(
                    "activations_growing", "warning", "activations blew up during training",
                    f"output std after {layer} ({name}) grew from {_fmt(s0)} at step {first['step']} to {_fmt(a['std'])} "
                    f"at step {last['step']} (threshold {t.act_explode})",
                    "lower the lr (the updates outgrow the weights), add a warmup, clip gradients (optim.clip_norm=5) "
                    "or add weight decay / normalization",
                    layer=layer, value=a["std"], threshold=t.act_explode, step=last["step"]))
                break
    return findings


def rule_dead_units(run: _Run, t: Thresholds) -> list[Finding]:
    """ReLU channels that never fire in the batch at the last monitored step."""
    if not run.monitored:
        return []
    first, last = dict(_acts(run.monitored[0])), _acts(run.monitored[-1])
    if not last:
        return []
    name, a = max(last, key=lambda kv: kv[1].get("dead", 0.0))  # first of equals: forward order
    dead = a.get("dead", 0.0)
    if dead < t.dead_info:
        return []
    layer = a.get("after") or name
    at_init = first.get(name, {}).get("dead", 0.0) >= t.dead_info
    severity = "warning" if dead >= t.dead_warn else "info"
    when = "already at initialization" if at_init else "appeared during training"
    advice = (f"initialize {layer}'s bias at 0 or a small positive value and its weights with he_normal; "
              "or use leaky ReLU / GELU") if at_init else (
              "lower the lr (large updates push units into the dead zone), add a warmup, or use leaky ReLU / GELU")
    return [Finding("dead_units" if at_init else "units_dying", severity, "dead ReLU units",
                    f"{dead:.0%} of the channels after {layer} ({name}) are zero for the whole batch at step {run.monitored[-1]['step']} "
                    f"(threshold {t.dead_warn:.0%}); {when}",
                    advice, layer=layer, value=dead, threshold=t.dead_warn, step=run.monitored[-1]["step"])]


def rule_gradients(run: _Run, t: Thresholds) -> list[Finding]:
    """Gradient-norm spikes (clip) and weight tensors whose gradient is exactly zero at every active step."""
    norms = [(r["step"], r.get("grad_norm")) for r in run.monitored]
    values = _finite(v for _, v in norms)
    findings = []
    skip = max(len(norms) // 10, 1)  # the first steps' gradients are large by nature
    if len(values) >= 5:
        median = statistics.median(values)
        spikes = [(s, v) for s, v in norms[skip:] if _finite([v]) and median > 0 and v > t.grad_spike_factor * median]
        if spikes:
            s, v = max(spikes, key=lambda sv: sv[1])
            findings.append(Finding(
                "gradient_spikes", "warning", "gradient-norm spikes",
                f"{len(spikes)} of {len(norms)} monitored steps had a global gradient norm above {t.grad_spike_factor:g}x "
                f"its median {_fmt(median)}; largest {_fmt(v)} at step {s}",
                f"clip the global gradient norm (optim.clip_norm={_fmt(2 * median)}, about 2x the median), add a warmup, "
                "or lower the lr",
                value=v, threshold=t.grad_spike_factor * median, step=s))
    active = [r for r in run.active if r.get("params")]
    if active:
        names = _weight_names(active)
        silent = [n for n in names if all(r["params"].get(n, {}).get("grad", 1.0) == 0.0 for r in active)]
        if silent:
            findings.append(Finding(
                "no_gradient", "warning", "layers receive no gradient",
                f"{len(silent)} weight tensors had an exactly zero gradient at every monitored step: {', '.join(silent[:5])}",
                "the units feeding them may be dead (see dead_units), or the graph is cut (detach, no_grad, "
                "requires_grad=False, an integer cast); run trickbag check", layer=_module(silent[0]), value=0.0))
    return findings


def rule_nonfinite(run: _Run, t: Thresholds) -> list[Finding]:
    bad = [(r["step"], r["nonfinite"]) for r in run.monitored if r.get("nonfinite")]
    nan_losses = sum(1 for x in run.losses if not math.isfinite(x))
    if not bad and not nan_losses:
        return []
    named = [n for _, names in bad for n in names if n != "loss"]
    where = named[0].split(":", 1)[-1] if named else None
    evidence = f"{nan_losses} non-finite losses" if nan_losses else ""
    if bad:
        evidence += ("; " if evidence else "") + f"first non-finite value at step {bad[0][0]}: {', '.join(bad[0][1][:3])}"
    return [Finding("non_finite", "error", "non-finite values (NaN/inf)", evidence,
                    "lower the lr 10x, add a warmup and gradient clipping (optim.clip_norm=5); under fp16 use "
                    "precision=bf16 or fp32; check the inputs for NaN", layer=where,
                    step=bad[0][0] if bad else None)]


def rule_outcome(run: _Run, t: Thresholds) -> list[Finding]:
    """The trainer stopped the run as diverged (a loss far above its start, or non-finite
    losses or evaluations): an error even when no monitors were on."""
    stopped = str(run.outcome.get("stopped", ""))
    if not stopped.startswith("diverged"):
        return []
    return [Finding("diverged", "error", "training diverged and was stopped",
                    f"{stopped.removeprefix('diverged: ')} (after {run.outcome.get('steps', '?')} steps)",
                    "lower the lr 10x (--set optim.lr=...), add a warmup (schedule.params.warmup_steps=1ep) and gradient "
                    "clipping (optim.clip_norm=5); train with train.doctor_every=10 to see which layer goes first",
                    step=run.outcome.get("steps"))]


def rule_loss_spikes(run: _Run, t: Thresholds) -> list[Finding]:
    losses = run.losses
    if len(losses) < t.min_steps or run.diverged:
        return []
    spikes = []
    w = t.spike_window
    for i in range(w, len(losses)):
        window = _finite(losses[i - w : i])
        if not window or not math.isfinite(losses[i]):
            continue
        median = statistics.median(window)
        if losses[i] > t.spike_factor * median and losses[i] - median > t.spike_rise:
            spikes.append((i, losses[i], median))
    if not spikes:
        return []
    i, value, median = max(spikes, key=lambda s: s[1] / s[2])
    return [Finding("loss_spikes", "warning", "loss spikes",
                    f"{len(spikes)} steps had a loss above {t.spike_factor:g}x the median of the previous {w}; "
                    f"largest {_fmt(value)} vs {_fmt(median)} at loss point {i}",
                    "add a warmup (schedule.params.warmup_steps=1ep), clip gradients (optim.clip_norm=5), or lower the lr 2x",
                    value=value, threshold=t.spike_factor * median, step=i)]


def rule_plateau(run: _Run, t: Thresholds) -> list[Finding]:
    losses = _finite(run.losses)
    if len(losses) < t.min_steps or run.diverged:
        return []
    n = max(int(len(losses) * t.plateau_frac), 5)
    before, last = statistics.mean(losses[-2 * n : -n]), statistics.mean(losses[-n:])
    if last < (1 - t.plateau_rel) * before:
        return []
    late_lrs = _finite(r.get("lr") for r in run.records[-max(len(run.records) // 3, 1):])
    lr_now = late_lrs[-1] if late_lrs else None
    if lr_now is not None and run.peak_lr and lr_now < 0.1 * run.peak_lr:
        return [Finding("converged", "info", "training loss flat at a low lr",
                        f"the loss changed from {_fmt(before)} to {_fmt(last)} over the last {n} steps with the lr at "
                        f"{_fmt(lr_now)} (< 10% of its peak)", "the schedule has run its course; more epochs or a restart would be needed for more",
                        value=last, step=len(losses))]
    return [Finding("plateau", "warning", "training loss plateau",
                    f"the loss changed from {_fmt(before)} to {_fmt(last)} over the last {n} steps (< {t.plateau_rel:.0%} better)",
                    "divide the lr by 2-10 (a step decay, or schedule plateau control: schedule.plateau={patience: 2}), "
                    "or enlarge the batch (seed 002)", value=last, step=len(losses))]


def rule_generalization(run: _Run, t: Thresholds) -> list[Finding]:
    """Overfitting: validation loss rising from its best while the training loss falls."""
    rows = [e for e in run.epochs if len(_finite([e.get("val_loss"), e.get("train_loss")])) == 2]
    if len(rows) < 2:
        return []
    best = min(rows, key=lambda e: e["val_loss"])
    last = rows[-1]
    rising = last["val_loss"] > (1 + t.gap_rise) * best["val_loss"]
    train_falling = last["train_loss"] < best["train_loss"]
    if not (rising and train_falling):
        return []
    gap = last["val_loss"] - last["train_loss"]
    return [Finding("overfitting", "warning", "train/validation gap growing",
                    f"validation loss {_fmt(last['val_loss'])} at epoch {last.get('epoch')} is {last['val_loss'] / best['val_loss'] - 1:.0%} "
                    f"above its best {_fmt(best['val_loss'])} (epoch {best.get('epoch')}) while the training loss fell to "
                    f"{_fmt(last['train_loss'])} (gap {_fmt(gap)})",
                    "regularize: more augmentation (data.augment), dropout (model.params.dropout=0.2), weight decay "
                    "(optim.weight_decay), label smoothing (loss.label_smoothing=0.1), mixup; or stop earlier "
                    "(train.early_stopping=3)", value=last["val_loss"], threshold=(1 + t.gap_rise) * best["val_loss"])]


#: every rule, in report order
RULES = [rule_outcome, rule_nonfinite, rule_learning_rate, rule_activations, rule_dead_units, rule_gradients, rule_loss_spikes,
         rule_plateau, rule_generalization]


#: findings that name a cause; when one is present, the symptoms below become "info"
CAUSES = ("diverged", "non_finite", "lr_too_high", "lr_too_low", "activations_exploding", "dead_units", "no_gradient")
SYMPTOMS = ("plateau", "loss_spikes", "gradient_spikes", "activations_vanishing", "activations_growing", "units_dying")


def diagnose(records: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]] = (),
             thresholds: Thresholds | None = None, outcome: dict[str, Any] | None = None) -> list[Finding]:
    """All findings for a run, most severe first (stable within a severity).

    A symptom (plateau, spikes) seen together with a cause (lr too high or too low, bad
    init, dead units) is kept as ``info`` with the cause named, so the table leads with
    what to change.
    """
    t = thresholds or Thresholds()
    run = _prepare(records, epochs, t, outcome)
    findings = [f for rule in RULES for f in rule(run, t)]
    causes = [f.title for f in findings if f.code in CAUSES and f.severity != "info"]
    if causes:
        findings = [replace(f, severity="info", evidence=f"{f.evidence}; likely a symptom of: {', '.join(causes)}")
                    if f.code in SYMPTOMS else f for f in findings]
    return sorted(findings, key=lambda f: -SEVERITIES.index(f.severity))


def worst_severity(findings: Sequence[Finding]) -> str | None:
    return max((f.severity for f in findings), key=SEVERITIES.index, default=None)
