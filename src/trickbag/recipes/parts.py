"""``build(recipe) -> Parts``: the one path from a recipe to the objects a run needs.

Everything a recipe decides is made here, once, in this order: the recipe as it runs on
the device it lands on (its ``cuda`` section applied on a GPU); the seed; the data (and
its ``train_subset``); the model (its builder told the data's channels, classes and
image size), its init and zero-γ; the runtime (device, precision, channels_last); the
input pipeline (standardization, augmentation); batches per epoch and total steps; the
optimizer with no-bias-decay groups and the linear-scaling rule; the schedule with its
durations (``3ep``, ``500ba``, ``0.5dur``) in steps and the peak lr filled in; the
plateau controller inside the lr driver; the GradScaler; the EMA; mixup/cutmix; the loss
(with ``distill``: the frozen teacher, ``train.teacher.resolve_teacher``, and the
distillation loss); and callbacks the recipe asks for (``train.doctor_every`` adds a ``DoctorMonitor``).

``Trainer`` receives these parts and owns only the loop; ``find-lr``, ``check`` and
``ablate``/``tune`` build recipes through this same function without a trainer.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import random
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trickbag._params import parse_number, typed_kwargs
from trickbag.data import ImageData, load_dataset
from trickbag.data.pipeline import InputPipeline
from trickbag.init import init_patch_whitening, initialize, lsuv, zero_gamma
from trickbag.losses import MixUpCutMix, soft_target_cross_entropy
from trickbag.losses.distill import DistillationLoss
from trickbag.models import MODELS, PatchWhiteningConv, build_model
from trickbag.optim import build_optimizer, linear_scaling, param_groups
from trickbag.recipes.config import Recipe, RecipeError, pruning_refused
from trickbag.schedules import SCHEDULES, PlateauController, Schedule
from trickbag.schedules import build as build_schedule
from trickbag.schedules.torch import ScheduledLR, attach
from trickbag.train.distributed import Distributed, join_from_environment
from trickbag.train.ema import build_ema
from trickbag.train.graphs import GraphedForward
from trickbag.train.lookahead import Lookahead
from trickbag.train.prune import EasySamplePruner
from trickbag.train.runtime import Runtime, resolve_device, resolve_runtime

__all__ = ["Parts", "build", "build_model_for", "check_input_sizes", "resolve_schedule", "steps_from_units"]


@dataclass
class Parts:
    """What ``build`` makes of a recipe (see the module docstring)."""

    recipe: Recipe
    data: ImageData
    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its torch.compile'd form
    runtime: Runtime
    inputs: InputPipeline
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    lr_driver: ScheduledLR  # writes schedule(step) * plateau scale * group multiplier into the optimizer
    scaler: torch.amp.GradScaler
    loss_fn: Callable[..., torch.Tensor]  # (float logits, labels or soft targets[, teacher logits]) -> loss
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    base_lr: float  # optim.lr after the linear-scaling rule
    ema: nn.Module | None = None  # torch AveragedModel of weights and buffers
    lookahead: Lookahead | None = None  # slow weights (train.lookahead_steps)
    pruner: EasySamplePruner | None = None  # InfoBatch's scores and loss weights (train.prune_easy)
    mixer: MixUpCutMix | None = None
    callbacks: list[Any] = field(default_factory=list)
    teacher: nn.Module | None = None  # distillation: frozen, eval mode; the loss then takes its logits
    adapted: dict = field(default_factory=dict)  # the recipe's cuda section, where the run landed on a GPU (recipe has it applied)
    dist: Distributed | None = None  # this process's rank when torchrun launched it (train.distributed); forward is then DDP

    @property
    def device(self) -> torch.device:
        return self.runtime.device


def steps_from_units(value: Any, steps_per_epoch: int, total_steps: int, key: str = "") -> Any:
    """``"3ep"`` -> 3 epochs of steps, ``"500ba"`` -> 500, ``"0.25dur"`` -> a quarter of the
    run (Composer's units); numeric text (``"1e-5"``) -> a number; a list converts each
    element (``milestones: [0.5dur, 0.75dur]``); other values pass through."""
    if isinstance(value, (list, tuple)):
        return [steps_from_units(v, steps_per_epoch, total_steps, key) for v in value]
    if not isinstance(value, str):
        return value
    text = value.strip()
    for suffix, scale in (("ep", steps_per_epoch), ("ba", 1), ("dur", total_steps)):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * scale
            except ValueError:
                break
    try:
        return parse_number(key, text)
    except ValueError:
        raise RecipeError(f"recipe key 'schedule.params.{key}' must be a number or a duration like '3ep', '500ba', "
                          f"'0.5dur'; got {value!r}") from None


def _text_parameters(builder: Callable) -> set[str]:
    """Names of ``builder``'s parameters that take text (``str`` or a ``Literal`` of strings,
    e.g. one_cycle's ``anneal``): they are passed through, not read as numbers or durations."""
    try:
        hints = typing.get_type_hints(builder)
    except Exception:  # an unresolvable annotation: treat every parameter as numeric
        return set()
    return {name for name, hint in hints.items()
            if hint is str or (typing.get_origin(hint) is typing.Literal and all(isinstance(a, str) for a in typing.get_args(hint)))}


def resolve_schedule(name: str, params: dict, lr: float, steps_per_epoch: int, total_steps: int) -> Schedule:
    """The recipe's schedule: units turned into steps, values typed from the schedule's
    signature, the peak lr filled in (``learning_rate`` / ``max_lr``), ``final_lr_frac``
    turned into ``final_lr``."""
    builder = SCHEDULES.get(name)
    accepted = inspect.signature(builder).parameters
    text_params = _text_parameters(builder)
    resolved = {k: v if k in text_params else steps_from_units(v, steps_per_epoch, total_steps, k) for k, v in params.items()}
    for lr_name in ("learning_rate", "max_lr"):
        if lr_name in accepted and lr_name not in resolved:
            resolved[lr_name] = lr
    if "final_lr_frac" in resolved:  # convenience: final lr as a fraction of the peak
        resolved["final_lr"] = lr * resolved.pop("final_lr_frac")
    for key in ("total_steps", "steps_per_epoch"):
        if key in resolved and key in accepted and accepted[key].annotation in (int, "int"):
            resolved[key] = int(round(resolved[key]))
    try:
        return build_schedule(name, **typed_kwargs(builder, resolved))
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecipeError(f"recipe schedule {name!r}: {exc}") from None


def build_model_for(recipe: Recipe, data: ImageData) -> nn.Module:
    """The recipe's model for ``data`` (its builder is told ``in_channels``, ``num_classes``
    and ``image_size`` where it takes them and the recipe does not set them), initialized
    with ``model.init`` (seeded by ``train.seed``) and zero-γ if asked."""
    spec = recipe.model
    params = dict(spec.params)
    accepted = inspect.signature(MODELS.get(spec.name)).parameters
    channels, height, _ = data.shape
    for key, value in (("in_channels", channels), ("num_classes", data.num_classes), ("image_size", height)):
        if key in accepted and key not in params:
            params[key] = value
    try:
        model = build_model(spec.name, **params)
        if spec.init == LSUV:
            lsuv_on_training_data(model, recipe, data)
        elif spec.init:
            initialize(model, spec.init, seed=recipe.train.seed, **spec.init_params)
        if any(isinstance(m, PatchWhiteningConv) for m in model.modules()):
            whiten_on_training_data(model, recipe, data)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"recipe model {spec.name!r}: {exc}") from None
    if spec.zero_gamma:
        zero_gamma(model)
    return model


#: ``model.init`` value that runs LSUV (it needs data, so it is no registered initializer)
LSUV = "lsuv"
LSUV_BATCH = 256  # training images LSUV measures variances on (the paper's mini-batch)


def training_images_as_seen(recipe: Recipe, data: ImageData, count: int) -> torch.Tensor:
    """The first ``count`` training images as the model sees them (the recipe's standardization,
    no augmentation), on the CPU: what data-dependent initializations measure."""
    cfg = recipe.data
    inputs = InputPipeline.for_data(data, torch.device("cpu"), standardize=cfg.standardize, log1p=cfg.log1p)
    return inputs(data.train_x[:count].cpu())


#: training images the patch-whitening layers are measured on (airbench's count)
WHITENING_IMAGES = 5000


def whiten_on_training_data(model: nn.Module, recipe: Recipe, data: ImageData) -> None:
    """Set every ``PatchWhiteningConv`` (e.g. ``vgg7(whiten=3)``) from the patches of the first
    ``WHITENING_IMAGES`` training images as the model sees them (``trickbag.init.whitening``);
    after ``model.init``, which would otherwise overwrite the filters."""
    init_patch_whitening(model, training_images_as_seen(recipe, data, WHITENING_IMAGES))


def lsuv_on_training_data(model: nn.Module, recipe: Recipe, data: ImageData) -> None:
    """``model.init: lsuv``: LSUV (Mishkin & Matas 2016; ``trickbag.init.lsuv``) on the first
    ``LSUV_BATCH`` training images as the model sees them (standardized, not augmented), in
    eval mode so no BatchNorm statistics move; ``model.init_params`` take ``tol``,
    ``max_iter``, ``orthonormal``. Seeded by ``train.seed``."""
    batch = training_images_as_seen(recipe, data, LSUV_BATCH)
    was_training = model.training
    model.eval()
    try:
        lsuv(model, batch, seed=recipe.train.seed, **recipe.model.init_params)
    finally:
        model.train(was_training)


def check_input_sizes(recipe: Recipe, data: ImageData, model: nn.Module) -> None:
    """Fail at build time, naming the key, when ``data.progressive`` asks for a size the model
    cannot take (a head sized for the full image, pooling down to nothing) or
    ``train.tta_translate`` shifts by the whole image."""
    channels, height, width = data.shape
    if recipe.train.tta_translate >= min(height, width):
        raise RecipeError(f"recipe train.tta_translate must be < the image size {min(height, width)}, got {recipe.train.tta_translate}")
    was_training = model.training
    model.eval()
    try:
        for size, _ in recipe.data.progressive:
            try:
                with torch.no_grad():
                    model(torch.zeros(2, channels, size, size))
            except RuntimeError as exc:
                raise RecipeError(f"recipe data.progressive: model {recipe.model.name!r} cannot take {size}x{size} images "
                                  f"({str(exc).splitlines()[0][:120]})") from None
    finally:
        model.train(was_training)


def cuda_graph_conflict(recipe: Recipe, device_type: str, distributed: bool) -> str | None:
    """Why ``train.cuda_graph`` cannot serve this run (another device, batches of changing
    shape, module hooks, a model already compiled or wrapped for data parallelism), or None."""
    train = recipe.train
    if device_type != "cuda":
        return f"needs a CUDA device, and this run is on {device_type}"
    conflicts = [(train.compile, "train.compile (torch.compile's reduce-overhead mode records its own graphs)"),
                 (bool(recipe.data.progressive), "data.progressive (a graph replays one input size)"),
                 (bool(train.doctor_every), "train.doctor_every (its forward hooks do not run inside a graph)"),
                 (distributed, "torchrun (DDP's gradient hooks do not run inside a graph)")]
    return next((f"cannot be combined with {what}" for on, what in conflicts if on), None)


def resolve_cuda_graph(recipe: Recipe, adapted: dict, device_type: str, distributed: bool) -> tuple[Recipe, dict]:
    """``train.cuda_graph`` where it cannot serve the run: set by hand, a ``RecipeError``
    naming the key and the conflict; set by the recipe's cuda section (a default for GPUs),
    turned off, so that what the user asked for (``--set train.doctor_every=50``, torchrun)
    runs eagerly instead of failing. Returns the recipe and the cuda section's applied keys."""
    if not recipe.train.cuda_graph:
        return recipe, adapted
    conflict = cuda_graph_conflict(recipe, device_type, distributed)
    if conflict is None:
        return recipe, adapted
    if "train.cuda_graph" in adapted:
        off = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, cuda_graph=False))
        return off, {k: v for k, v in adapted.items() if k != "train.cuda_graph"}
    advice = ("leave it off (recipes set it in their cuda section, which auto applies only on a GPU)" if device_type != "cuda"
              else "turn one of them off")
    raise RecipeError(f"recipe train.cuda_graph {conflict}: {advice}")


def check_pruning(recipe: Recipe, distributed: bool) -> None:
    """``train.prune_easy`` under torchrun: a ``RecipeError`` naming both (the recipe-only
    conflicts are refused when the recipe is validated, ``Recipe._check_pruning``)."""
    if recipe.train.prune_easy and distributed:
        raise RecipeError(pruning_refused("torchrun (each rank would score only its own slice of the samples)"))


def build(recipe: Recipe, data: ImageData | None = None, teacher_cache: str | Path | None = None) -> Parts:
    """Every part of a run of ``recipe``; ``data`` replaces loading ``recipe.data.name``
    (the caller's object is not changed). Seeds torch's and Python's global RNGs with
    ``train.seed`` first, so the same recipe builds the same parts. ``teacher_cache``: the
    folder a recipe-named distillation teacher is trained into and kept (default ``runs``)."""
    device_type = resolve_device(recipe.train.device).type
    recipe, adapted = recipe.for_device(device_type)
    dist = join_from_environment(device_type)  # None unless torchrun started this process
    recipe, adapted = resolve_cuda_graph(recipe, adapted, device_type, dist is not None)
    check_pruning(recipe, dist is not None)
    train, data_cfg, optim_cfg, loss_cfg = recipe.train, recipe.data, recipe.optim, recipe.loss
    if train.threads:
        torch.set_num_threads(train.threads)
    torch.manual_seed(train.seed)
    random.seed(train.seed)
    given = data
    if data is None:
        data = load_dataset(data_cfg.name, data_cfg.data_dir, data_cfg.val_size, train.seed)
    if data_cfg.train_subset:
        n = data_cfg.train_subset
        data = dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
    batch_size = data_cfg.batch_size  # the global batch: under torchrun each rank takes batch_size / world_size of it
    if dist is not None and batch_size % dist.world_size:
        raise RecipeError(f"recipe data.batch_size ({batch_size}) is the global batch and must be divisible by the "
                          f"{dist.world_size} processes torchrun started")
    per_process = batch_size // (dist.world_size if dist is not None else 1)
    if per_process % train.accumulate:
        raise RecipeError(f"recipe data.batch_size ({per_process} per process) must be divisible by train.accumulate "
                          f"({train.accumulate}): each step is that many equal micro-batches")
    steps_per_epoch = len(data.train_y) // batch_size
    if steps_per_epoch < 1:
        raise RecipeError(f"recipe data.batch_size ({batch_size}) must be <= the {len(data.train_y)} training examples")

    model = build_model_for(recipe, data)
    check_input_sizes(recipe, data, model)
    runtime = resolve_runtime(train.device, train.precision, train.channels_last, model)
    if dist is not None and runtime.device.type == "cuda":
        runtime = dataclasses.replace(runtime, device=torch.device("cuda", dist.local_rank))
    model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    if train.sync_bn and dist is not None:
        if runtime.device.type != "cuda":
            raise RecipeError("recipe train.sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); on CPU leave it "
                              "off: each rank then normalizes its own slice of the batch")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    on_device = data_cfg.on_device if data_cfg.on_device is not None else runtime.device.type == "cuda"
    if on_device:  # batches are then cut and augmented where the model is: no host copy per step
        data = data.to(runtime.device)
    try:
        inputs = InputPipeline.for_data(data, runtime.device, standardize=data_cfg.standardize, log1p=data_cfg.log1p,
                                        augment=data_cfg.augment, channels_last=runtime.channels_last)
    except (KeyError, ValueError, TypeError) as exc:
        raise RecipeError(f"recipe data.augment: {exc}") from None

    total_steps = train.epochs * steps_per_epoch
    base_lr = linear_scaling(optim_cfg.lr, batch_size, optim_cfg.base_batch_size) if optim_cfg.base_batch_size else optim_cfg.lr
    groups = param_groups(model, optim_cfg.weight_decay, optim_cfg.no_bias_decay)
    optimizer = build_optimizer(optim_cfg.name, groups, lr=base_lr, momentum=optim_cfg.momentum, betas=tuple(optim_cfg.betas),
                                muon_lr=optim_cfg.muon_lr, muon_momentum=optim_cfg.muon_momentum,
                                muon_ns_steps=optim_cfg.muon_ns_steps)
    sched_cfg = recipe.schedule
    schedule = resolve_schedule(sched_cfg.name, dict(sched_cfg.params), base_lr, steps_per_epoch, total_steps)
    try:
        plateau = PlateauController(max(base_lr, 1e-12), **sched_cfg.plateau) if sched_cfg.plateau else None
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"recipe schedule.plateau: {exc}") from None

    mixer = None
    if loss_cfg.mixup_alpha > 0 or loss_cfg.cutmix_alpha > 0:
        mixer = MixUpCutMix(data.num_classes, loss_cfg.mixup_alpha, loss_cfg.cutmix_alpha, loss_cfg.mix_prob,
                            label_smoothing=loss_cfg.label_smoothing, seed=train.seed + 1)
    # the mixer smooths its soft targets itself; smoothing them again would count eps twice
    smoothing = 0.0 if mixer is not None else loss_cfg.label_smoothing
    teacher, loss_fn = None, functools.partial(soft_target_cross_entropy, label_smoothing=smoothing)
    if recipe.distill.alpha > 0:
        from trickbag.train.teacher import resolve_teacher

        # the teacher trains on / is sized by the data the caller gave, else loads its own
        teacher = resolve_teacher(recipe, given, runtime.device, runtime.channels_last, teacher_cache)
        loss_fn = DistillationLoss(recipe.distill.alpha, recipe.distill.temperature, smoothing)
    callbacks: list[Any] = []
    if train.doctor_every:
        from trickbag.doctor.monitor import DoctorMonitor

        callbacks.append(DoctorMonitor(train.doctor_every))  # writes <run dir>/doctor.jsonl
    forward = dist.wrap(model, runtime.device) if dist is not None else model
    if train.cuda_graph:
        forward = GraphedForward(model, runtime.amp_dtype)
    return Parts(
        recipe=recipe, data=data, model=model, forward=torch.compile(forward, mode=train.compile_mode) if train.compile else forward,
        runtime=runtime, inputs=inputs, optimizer=optimizer, schedule=schedule,
        lr_driver=attach(optimizer, schedule, plateau=plateau), scaler=runtime.grad_scaler(),
        loss_fn=loss_fn, teacher=teacher,
        batch_size=batch_size, steps_per_epoch=steps_per_epoch, total_steps=total_steps, base_lr=base_lr,
        ema=build_ema(model, train.ema_decay, train.ema_warmup) if train.ema_decay else None,
        lookahead=(Lookahead(model, train.lookahead_steps, train.lookahead_alpha, train.lookahead_ramp)
                   if train.lookahead_steps else None),
        pruner=(EasySamplePruner(len(data.train_y), train.prune_easy, train.prune_until, train.epochs, runtime.device)
                if train.prune_easy else None),
        mixer=mixer, callbacks=callbacks, adapted=adapted, dist=dist,
    )
