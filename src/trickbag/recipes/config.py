"""Recipes: YAML files validated into dataclasses (``Recipe``), with ``--set`` overrides.

``load("fashion-mnist")`` reads a recipe shipped in this package (or a path to a YAML
file); ``load(..., overrides=["optim.lr=0.2", "train.epochs=5"])`` applies overrides.
Unknown keys get a did-you-mean error, wrong types and ranges name the key:
``recipe key 'optim.lrr' is unknown (did you mean 'optim.lr'?)``.

Schedule parameters may carry units (Composer's convention, so epochs and steps are
never confused): ``"3ep"`` (epochs), ``"500ba"`` (optimizer steps), ``"0.25dur"``
(fraction of the whole run); ``recipes.build`` turns them into steps.

Numbers are read the YAML 1.2 way everywhere (``1e-5`` is a float, in files and in
``--set``; ``trickbag._params.load_yaml``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from trickbag._checks import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_range,
    did_you_mean,
)
from trickbag._files import write_text_atomic
from trickbag._params import YamlError, coerce, load_yaml

__all__ = ["Recipe", "DataConfig", "ModelConfig", "OptimConfig", "ScheduleConfig", "LossConfig", "DistillConfig", "TrainConfig",
           "load", "save", "override", "available", "RecipeError", "apply_overrides", "to_dict", "from_dict", "changed_keys",
           "recipe_key", "flat_values"]


class RecipeError(ValueError):
    """A recipe key is unknown, or its value has the wrong type or range."""


@dataclass
class DataConfig:
    name: str = "fashion-mnist"  # trickbag.data.DATASETS name
    data_dir: str | None = None  # the only place looked at when given; else $TRICKBAG_DATA, ~/.cache/trickbag, /usr/share/datasets
    val_size: int = 5000  # examples held out of train for validation (0: none)
    batch_size: int = 256  # examples per optimizer step
    eval_batch_size: int = 1000  # examples per evaluation forward pass
    standardize: bool = True  # per-channel zero mean / unit variance from the training split (seed 001)
    log1p: bool = False  # log(1 + x) before standardizing (seed 001, for heavy-tailed inputs)
    augment: list[dict] = field(default_factory=list)  # [{name: flip}, {name: pad_crop, pad: 2}, ...]
    train_subset: int = 0  # use only the first N training examples (0: all); for quick checks
    progressive: list[list[int]] = field(default_factory=list)  # [[size, epochs], ...]: train at size x size for that many epochs first, then at full size (progressive resizing)
    on_device: bool | None = None  # keep the uint8 data set in the training device's memory (None: on CUDA); batches are then cut and augmented there with no host copy


@dataclass
class ModelConfig:
    name: str = "small_cnn"  # trickbag.models.MODELS name
    params: dict = field(default_factory=dict)  # builder keyword arguments
    init: str | None = None  # trickbag.init initializer applied to conv/linear weights, or lsuv (on a training batch); None: model default
    init_params: dict = field(default_factory=dict)
    zero_gamma: bool = False  # last BN gamma of each residual block = 0 (Bag of Tricks 3.2)


@dataclass
class OptimConfig:
    name: str = "nesterov"  # sgd | nesterov | adam | adamw | muon (Muon on conv filters, Nesterov on the rest)
    lr: float = 0.1  # peak learning rate (per base_batch_size examples if that is set)
    base_batch_size: int = 0  # >0: linear scaling rule, lr * batch_size / base_batch_size
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    no_bias_decay: bool = True  # biases and norm parameters get no weight decay (Bag of Tricks 3.1)
    clip_norm: float = 0.0  # >0: clip the global gradient norm (seed 001: 15; 5 for LSTMs)
    clip_value: float = 0.0  # >0: clip each gradient element
    muon_lr: float = 0.08  # muon only: the filters' lr at the schedule's peak (orthogonalized updates, norm-fixed filters)
    muon_momentum: float = 0.6  # muon only: the filters' Nesterov momentum (airbench94_muon)
    muon_ns_steps: int = 5  # muon only: Newton-Schulz iterations per update (airbench94_muon uses 3)


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # trickbag.schedules name
    params: dict = field(default_factory=lambda: {"total_steps": "1dur", "warmup_steps": "1ep"})  # units: ep, ba, dur
    plateau: dict | None = None  # PlateauController parameters; monitors the validation loss each epoch


@dataclass
class LossConfig:
    label_smoothing: float = 0.0  # eps
    mixup_alpha: float = 0.0  # Beta(alpha, alpha); 0 disables
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0  # probability of mixing a batch when mixup/cutmix is on


@dataclass
class DistillConfig:
    teacher: str | None = None  # a run directory, a checkpoint file, or a recipe (trained first, cached beside the run)
    alpha: float = 0.0  # weight of the soft term (1 - alpha on the labels); 0: no distillation
    temperature: float = 20.0  # T of both softmaxes; the soft term is scaled by T^2 (Bag of Tricks: T = 20)


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA GPUs with bf16, else fp16+GradScaler; bf16 on CPUs with native bf16, else fp32)
    channels_last: bool | None = None  # None: on for conv nets
    compile: bool = False  # torch.compile the model
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead (CUDA graphs on a GPU) | max-autotune | max-autotune-no-cudagraphs
    cuda_graph: bool = False  # CUDA only: record the training forward + backward once as a CUDA graph and replay it each step (trickbag.train.graphs)
    threads: int = 0  # torch CPU threads (0: torch's default)
    ema_decay: float = 0.0  # EMA of weights and buffers; 0 disables
    ema_warmup: bool = True  # decay_t = min(decay, (1 + n) / (10 + n))
    lookahead_steps: int = 0  # k of Lookahead (Zhang et al. 2019): every k optimizer steps the slow weights move toward the fast ones; 0 disables
    lookahead_alpha: float = 0.5  # alpha of Lookahead: the share of the way they move, in (0, 1]
    lookahead_ramp: bool = False  # alpha falls from 1 to lookahead_alpha over the run as 1 - (1 - alpha) (t/T)^3 (airbench: k 5, alpha 0.226)
    prune_easy: float = 0.0  # InfoBatch (Qin et al. 2024): each epoch leave out this share of the samples whose last loss is below the mean, scaling the kept ones' loss by 1/(1 - r); 0 disables (trickbag.train.prune)
    prune_until: float = 0.875  # InfoBatch's annealing: only this share of the epochs is pruned; the last ones (always the last) see every sample
    tta_flip: bool = False  # average predictions with the mirrored image at evaluation
    tta_translate: int = 0  # >0: also the image shifted diagonally by this many pixels each way (airbench's TTA)
    early_stopping: int = 0  # stop after N evaluations without validation improvement (0: never)
    nan_patience: int = 10  # stop after N non-finite losses (each skips its step), or N steps in a row above diverge_factor
    diverge_factor: float = 100.0  # a loss above this many times its start (mean of the first 10 steps) is divergence; 0: off
    sync_every: int = 0  # steps between reads of the training losses from the device (NaN count, divergence rule, epoch loss); 0: every step on CPU, every 50 on a GPU (each read waits for it)
    keep_checkpoints: int = 2  # last K epoch checkpoints kept (plus best.pt)
    snapshots: bool = False  # save checkpoints/snapshot_<step>.pt at the end of every lr cycle (a restart), for snapshot ensembles
    checkpoint: bool = True
    eval_every: int = 1  # epochs between validation evaluations
    eval_test: bool = False  # also evaluate test every epoch (benchmarks' time-to-accuracy; decisions still use val)
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation): data.batch_size is the step's batch, each micro-batch batch_size / accumulate
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm), not each rank's slice
    doctor_every: int = 0  # >0: doctor monitors every N optimizer steps into doctor.jsonl (trickbag doctor RUN_DIR); 0: off
    members: int = 1  # >1: `trickbag train` trains this many nets (seeds seed, seed+1, ...) into OUT/member<k> and reports their ensemble (train.ensemble.fit_members)


@dataclass
class Recipe:
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: what the recipe changes when its run lands on a CUDA GPU ({"data.batch_size": 1024, ...}):
    #: a GPU runs a small net launch-bound, so it wants larger batches (``for_device``)
    cuda: dict = field(default_factory=dict)
    #: what ``trickbag tune`` may change, and over which range: ``{"optim.lr": {"log_uniform": [0.01, 1.0]}, ...}``
    #: (``recipes.search``); training ignores it
    search: dict = field(default_factory=dict)

    def validate(self) -> Recipe:
        """Range checks that types cannot express; errors name the key."""
        for key, check in _RANGE_CHECKS:
            section, name = key.split(".")
            try:
                check(key, getattr(getattr(self, section), name))
            except (TypeError, ValueError) as exc:
                raise RecipeError(f"recipe {exc}") from None
        if self.train.prune_easy:
            self._check_pruning()
        if self.cuda:
            self._check_device_section()
        if self.search:
            self.search_space()
        return self

    def _check_pruning(self) -> None:
        """``train.prune_easy`` beside a part it cannot serve: a ``RecipeError`` naming both keys.
        Pruning changes the number of steps per epoch and weights each sample's loss, so the
        parts that count steps or reduce the loss their own way are refused, not silently bent
        (torchrun, known only at run time, is refused by ``recipes.parts.build``)."""
        conflicts = [(bool(self.train.lookahead_steps), "train.lookahead_steps (its k and ramp count optimizer steps, which pruning removes)"),
                     (self.train.snapshots, "train.snapshots (a cycle's end is a step count, which pruning changes)"),
                     (self.distill.alpha > 0, "distill.alpha (the distillation loss is not computed per sample)")]
        for on, what in conflicts:
            if on:
                raise RecipeError(pruning_refused(what))

    def search_space(self) -> tuple:
        """The ``search`` section parsed and checked (``recipes.search.parse_space``): its keys
        must be this recipe's keys (did-you-mean otherwise) or ``trick.<name>``."""
        from trickbag.recipes.search import SearchError, parse_space

        data = to_dict(self)
        known = [k for k in _flatten({s: v for s, v in data.items() if s not in _NOT_TRAINED})]
        try:
            return parse_space(self.search, known, free_form=[k for k in known if k.rsplit(".", 1)[-1] in _FREE_FORM])
        except SearchError as exc:
            raise RecipeError(f"recipe section search: {exc}") from None

    def _check_device_section(self) -> None:
        """The section names dotted recipe keys, and the recipe with it applied is valid."""
        for key in self.cuda:
            if key.split(".")[0] in _NOT_TRAINED or "." not in str(key):
                raise RecipeError(f"recipe key 'cuda.{key}': the cuda section holds dotted recipe keys (data.batch_size: 1024)")
        try:
            self.for_device("cuda")
        except RecipeError as exc:
            raise RecipeError(f"recipe section cuda: {exc}") from None

    def member(self, k: int = 0) -> Recipe:
        """The recipe of one net of this recipe's ensemble (``train.members``): member ``k``
        trains with ``train.seed + k`` and ``train.members: 1``; a one-net recipe's member 0
        is itself."""
        if self.train.members == 1 and k == 0:
            return self
        return override(self, {"train.members": 1, "train.seed": self.train.seed + k})

    def for_device(self, device_type: str) -> tuple[Recipe, dict]:
        """This recipe as it runs on ``device_type`` (cuda, cpu, ...): on cuda with its
        ``cuda`` section applied. Returns ``(recipe, {key: value} applied)``: elsewhere this
        recipe itself; on cuda a new one with no ``cuda`` section left, so what a GPU run saves
        is the recipe it trained."""
        if device_type != "cuda" or not self.cuda:
            return self, {}
        data = to_dict(self)
        applied = dict(data.pop("cuda"))
        for key, value in applied.items():
            _set_path(data, key, value, f"recipe key 'cuda.{key}'")
        return from_dict(data), applied


def _check_progressive(key: str, plan: list) -> None:
    """``[[size, epochs], ...]`` with size >= 8 pixels and epochs >= 1."""
    for i, entry in enumerate(plan):
        if len(entry) != 2:
            raise ValueError(f"{key}[{i}] must be [size, epochs], got {entry!r}")
        check_range(f"{key}[{i}] size", entry[0], 8, 4096)
        check_positive(f"{key}[{i}] epochs", entry[1])


#: ``torch.compile``'s modes (``train.compile_mode``)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_unit = partial(check_range, low=0.0, high=1.0)
_unit_open = partial(check_range, low=0.0, high=1.0, high_open=True)
#: (key, check(key, value)) for every key with a range beyond its type
_RANGE_CHECKS = [
    ("data.val_size", check_nonnegative), ("data.batch_size", check_positive), ("data.eval_batch_size", check_positive),
    ("data.train_subset", check_nonnegative), ("data.progressive", _check_progressive),
    ("optim.lr", check_nonnegative), ("optim.momentum", _unit_open), ("optim.weight_decay", check_nonnegative),
    ("optim.base_batch_size", check_nonnegative), ("optim.clip_norm", check_nonnegative), ("optim.clip_value", check_nonnegative),
    ("optim.muon_lr", check_positive), ("optim.muon_momentum", _unit_open),
    ("optim.muon_ns_steps", check_positive),
    ("loss.label_smoothing", _unit_open), ("loss.mixup_alpha", check_nonnegative), ("loss.cutmix_alpha", check_nonnegative),
    ("loss.mix_prob", _unit), ("distill.alpha", _unit), ("distill.temperature", check_positive),
    ("train.epochs", check_positive), ("train.accumulate", check_positive), ("train.precision", partial(check_choice, choices=("auto", "fp32", "bf16", "fp16"))),
    ("train.ema_decay", _unit_open), ("train.early_stopping", check_nonnegative), ("train.tta_translate", check_nonnegative), ("train.nan_patience", check_positive),
    ("train.lookahead_steps", check_nonnegative), ("train.lookahead_alpha", partial(check_range, low=0.0, high=1.0, low_open=True)),
    ("train.diverge_factor", check_nonnegative), ("train.sync_every", check_nonnegative),
    ("train.keep_checkpoints", check_positive), ("train.eval_every", check_positive), ("train.threads", check_nonnegative),
    ("train.doctor_every", check_nonnegative), ("train.prune_easy", _unit_open),
    ("train.prune_until", partial(check_range, low=0.0, high=1.0, low_open=True)), ("train.members", check_positive),
    ("train.compile_mode", partial(check_choice, choices=COMPILE_MODES)),
]


def _build(cls: type, data: Any, prefix: str):
    if not isinstance(data, dict):
        what = f"recipe key '{prefix}'" if prefix else "a recipe"
        raise RecipeError(f"{what} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            known = [f"{prefix}.{n}" if prefix else n for n in names]
            raise RecipeError(f"recipe key '{full}' is unknown{did_you_mean(full, known)}; known: {', '.join(known)}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, full)
            continue
        try:
            converted = coerce(full, value, annotation, text=False, label="recipe key '{}'")
        except ValueError as exc:
            raise RecipeError(str(exc)) from None
        kwargs[key] = float(converted) if annotation is float else converted
    return cls(**kwargs)


def from_dict(data: dict) -> Recipe:
    """A validated ``Recipe`` from a plain mapping (what YAML gives)."""
    return _build(Recipe, data, "").validate()


def to_dict(recipe: Recipe) -> dict:
    """The recipe as plain data (YAML- and JSON-ready); ``from_dict(to_dict(r)) == r``."""
    return dataclasses.asdict(recipe)


#: top-level recipe keys that say how to run or tune a recipe, not what it trains
_NOT_TRAINED = ("description", "cuda", "search")
#: recipe keys whose values are free-form mappings (a model's or a schedule's own parameters): compared whole
_FREE_FORM = ("params", "init_params", "plateau")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; free-form mappings stay values."""
    if not isinstance(data, dict) or prefix.rsplit(".", 1)[-1] in _FREE_FORM:
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def flat_values(recipe: Recipe) -> dict[str, Any]:
    """``{"optim.lr": 0.2, "model.params": {...}, ...}``: every key of the recipe with its value."""
    return _flatten(to_dict(recipe))


def changed_keys(before: dict, after: dict) -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in before, value in after)`` for every key of two recipe mappings
    (``to_dict``) that differs, sorted by key."""
    a, b = _flatten(before), _flatten(after)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def recipe_key(recipe: Recipe) -> str:
    """12 hex digits naming what a recipe trains (its seed and description aside): runs of
    equal keys differ only in their seed. Ablations and teacher caches are keyed by it."""
    import hashlib
    import json

    data = to_dict(recipe)
    data.pop("description", None)
    data.pop("search", None)  # a search space changes no run
    data["train"] = {k: v for k, v in data["train"].items() if k != "seed"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _recipe_dir():
    return resources.files("trickbag.recipes")


def available() -> dict[str, str]:
    """``{name: description}`` of the recipes shipped with trickbag."""
    out = {}
    for entry in sorted(_recipe_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            data = load_yaml(entry.read_text(), f"recipe {entry.name}") or {}
            out[entry.name[:-5]] = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
    return out


def _set_path(data: dict, dotted: str, value: Any, what: str) -> None:
    keys = dotted.split(".")
    node = data
    for depth, k in enumerate(keys[:-1]):
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise RecipeError(f"{what}: '{'.'.join(keys[: depth + 1])}' is a value, not a section")
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` strings to a recipe mapping (values read as YAML: numbers,
    ``1e-5`` included, lists, mappings). Returns ``data``, changed in place."""
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe must be a mapping of sections (data, model, optim, ...), got {data!r}")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set takes key=value, got {item!r}")
        try:
            value = load_yaml(text, f"--set {item}") if text.strip() else None
        except YamlError as exc:
            raise RecipeError(str(exc)) from None
        _set_path(data, key.strip(), value, f"--set {item}")
    return data


def pruning_refused(what: str) -> str:
    """The message of a ``train.prune_easy`` conflict with ``what`` (a key and its reason)."""
    return f"recipe train.prune_easy cannot be combined with {what}: set train.prune_easy=0 or turn the other off"


def override(recipe: Recipe, changes: dict[str, Any]) -> Recipe:
    """A new, validated recipe with ``{"optim.lr": 0.1, ...}`` applied (``recipe`` unchanged).

    The pure recipe -> recipe step that ``find-lr --apply``, ablations and tuning share.
    """
    data = to_dict(recipe)
    for key, value in changes.items():
        _set_path(data, key, value, f"recipe key '{key}'")
    _drop_device_keys_set_by_hand(data, list(changes))
    return from_dict(data)


def _read_source(name_or_path: str) -> tuple[str, str]:
    """(YAML text, how to name it in errors) of a shipped recipe name or a file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name_or_path:
        if path.is_dir():
            raise RecipeError(f"recipe {path} is a directory; give a recipe YAML file (or a run's config.yaml)")
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        return path.read_text(), f"recipe file {path}"
    entry = _recipe_dir() / f"{name_or_path}.yaml"
    if not entry.is_file():
        names = list(available())
        raise RecipeError(f"unknown recipe {name_or_path!r}{did_you_mean(name_or_path, names)}; known: {', '.join(names)}")
    return entry.read_text(), f"recipe {name_or_path!r}"


def load(name_or_path: str = "fashion-mnist", overrides: list[str] | None = None) -> Recipe:
    """Load a shipped recipe by name, or a YAML file by path, then apply ``overrides``."""
    text, what = _read_source(name_or_path)
    try:
        data = load_yaml(text, what)
    except YamlError as exc:
        raise RecipeError(str(exc)) from None
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"{what} must be a mapping of sections (data, model, optim, ...), got {data!r}")
    data = apply_overrides({} if data is None else data, overrides or [])
    _drop_device_keys_set_by_hand(data, [item.partition("=")[0].strip() for item in overrides or []])
    return from_dict(data)


def _drop_device_keys_set_by_hand(data: dict, keys: list[str]) -> None:
    """A key set explicitly (``--set``, ``override``: a trick, a tuner) wins over the recipe's
    ``cuda`` section: that section adapts the recipe's own choices to a GPU, never those."""
    section = data.get("cuda")
    if not isinstance(section, dict):
        return
    for key in keys:
        if key == "cuda":
            continue
        for own in list(section):
            if own == key or own.startswith(key + ".") or key.startswith(own + "."):
                del section[own]


def save(recipe: Recipe, path: str | Path) -> Path:
    """Write ``recipe`` as YAML to ``path`` atomically (temporary file, then rename), so a
    crash never leaves half a recipe; the folder must exist."""
    path = Path(path)
    if not path.parent.is_dir():
        raise RecipeError(f"cannot write the recipe to {path}: folder {path.parent} does not exist")
    return write_text_atomic(path, yaml.safe_dump(to_dict(recipe), sort_keys=False))
