"""Ensembles: average the predicted class probabilities of several trained nets.

Seed 001 (Sutskever): an ensemble of ~10 nets is a cheap few points of accuracy. A member is
a run directory written by ``trickbag train`` (its newest loadable checkpoint: the final
weights, or the EMA of them where the run kept one) or a single checkpoint file (it carries
its recipe). Each member is evaluated through its own recipe's input pipeline (its own
standardization statistics) and test-time views; the ensemble's prediction is the mean of
the members' probabilities:

    p_ens(x) = (1/M) sum_m p_m(x),   accuracy = mean[argmax p_ens(x) == y]

``fit_members`` trains such an ensemble in one call (what ``trickbag train`` does for a recipe
with ``train.members: M > 1``): member k is the recipe with ``train.seed = seed + k``, trained
into ``OUT/member<k>`` (an ordinary run directory: resumable, and usable alone or in
``trickbag ensemble``), then the members are evaluated as above.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trickbag._json import write_json
from trickbag.recipes.config import Recipe, from_dict, override, save, to_dict
from trickbag.train.checkpoint import load_checkpoint, newest_loadable
from trickbag.train.errors import DivergedError, RunDirError
from trickbag.train.rundir import RunLock, claim_run_dir, clear_run, default_run_dir, finished_summary, run_artifacts

__all__ = ["load_member", "ensemble_accuracy", "fit_members", "member_dirs"]


def _state_of(source: str | os.PathLike) -> tuple[dict, str]:
    path = Path(source)
    if path.is_dir():
        found, state, skipped = newest_loadable(path / "checkpoints")
        if found is None:
            why = "; ".join(f"{p.name}: {reason}" for p, reason in skipped) or "no checkpoints (was train.checkpoint off?)"
            raise ValueError(f"ensemble member {source}: no loadable checkpoint in {path / 'checkpoints'} ({why})")
        return state, str(found)
    if path.is_file():
        try:
            state = load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: say which and why
            raise ValueError(f"ensemble member {source}: cannot load it as a checkpoint ({type(exc).__name__})") from None
        if not isinstance(state, dict) or "model" not in state or "recipe" not in state:
            raise ValueError(f"ensemble member {source}: not a trickbag checkpoint (no model state and recipe)")
        return state, str(path)
    raise FileNotFoundError(f"ensemble member {source}: no such run directory or checkpoint file")


def _accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return int((probs.argmax(1) == labels).sum()) / max(len(labels), 1)  # exact, as the trainer's summary


def load_member(source: str | os.PathLike, data: Any = None, device: str | None = None):
    """A ``Trainer`` holding the member's weights (nothing is written to its directory).
    ``data``: an ``ImageData`` to evaluate on instead of loading the recipe's data set."""
    from trickbag.train.trainer import Trainer

    state, _ = _state_of(source)
    recipe = from_dict(state["recipe"])
    if device is not None:
        recipe = override(recipe, {"train.device": device})
    trainer = Trainer(recipe, out=Path(source) if Path(source).is_dir() else Path(source).parent, quiet=True, data=data,
                      tensorboard=False)
    try:  # the weights only: the optimizer, schedule and global RNG states stay untouched
        trainer.model.load_state_dict(state["model"])
        if trainer.ema is not None and state.get("ema"):
            trainer.ema.load_state_dict(state["ema"])
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"ensemble member {source}: its weights do not fit its recipe's model ({str(exc)[:200]})") from None
    return trainer


def _ensemble_of(named_trainers, tta_flip: bool | None = None) -> dict:
    """Accuracy of each ``(name, trainer)`` and of their mean probabilities, with each
    member's own test-time views (``tta_flip`` forces the mirror on/off) and with none."""
    members, total, plain, labels = [], None, None, None
    for name, trainer in named_trainers:
        probs, bare = (p.float().cpu() for p in trainer.predict_views(trainer.data.test_x, [(tta_flip, None), (False, 0)]))
        y = trainer.data.test_y.cpu()
        if labels is None:
            labels = y
        elif not torch.equal(labels, y):
            raise ValueError(f"ensemble member {name}: its test set differs from the first member's "
                             f"({trainer.recipe.data.name}); members must share one data set")
        total = probs if total is None else total + probs
        plain = bare if plain is None else plain + bare
        members.append({"source": str(name), "test_acc": _accuracy(probs, y)})
    assert total is not None and plain is not None and labels is not None
    accs = [m["test_acc"] for m in members]
    return {"members": members, "n": len(members),
            "member_test_acc_mean": sum(accs) / len(accs), "member_test_acc_best": max(accs),
            "ensemble_test_acc": _accuracy(total / len(members), labels),
            "ensemble_test_acc_no_tta": _accuracy(plain / len(members), labels)}


def ensemble_accuracy(sources: Sequence[str | os.PathLike], tta_flip: bool | None = None, data: Any = None,
                      device: str | None = None) -> dict:
    """Test accuracy of each member and of the mean of their probabilities (also without
    any test-time view: ``ensemble_test_acc_no_tta``).

    ``tta_flip``: ``None`` keeps each member's own test-time views; True/False forces the
    mirror view on/off (shifts stay as each recipe has them)."""
    if not sources:
        raise ValueError("ensemble: name at least one run directory or checkpoint")
    return _ensemble_of(((source, load_member(source, data, device)) for source in sources), tta_flip)


# --- training an ensemble -----------------------------------------------------------------------


def _member_index(folder: Path) -> int | None:
    """k of a ``member<k>`` folder name, else None."""
    digits = folder.name[len("member"):]
    return int(digits) if folder.name.startswith("member") and digits.isdigit() else None


def member_dirs(out: str | os.PathLike) -> list[Path]:
    """The ``member<k>`` run directories under ``out``, in k order."""
    found = [p for p in Path(out).glob("member*") if p.is_dir() and _member_index(p) is not None]
    return sorted(found, key=_member_index)


def _open_members_run(out: Path, members: int, resume: bool, overwrite: bool) -> None:
    """The guards of ``Trainer._open_run`` for the ensemble's directory: a previous run there
    is refused unless continued (``resume``) or replaced (``overwrite``, which also removes
    its member directories)."""
    if resume:
        extra = [p.name for p in member_dirs(out) if _member_index(p) >= members]
        if extra:
            raise RunDirError(f"{out} holds {', '.join(extra)} beyond the recipe's train.members={members}; "
                              "--overwrite to start again")
    else:
        claim_run_dir(out, run_artifacts(out) + [p.name for p in member_dirs(out)], overwrite, clear=_clear_members_run)


def _clear_members_run(out: Path) -> None:
    clear_run(out)
    for folder in member_dirs(out):
        shutil.rmtree(folder)


def _member_row(k: int, summary: dict) -> dict:
    keys = ("out", "test_acc", "train_time_s", "wall_time_s", "epochs", "stopped", "images_per_s")
    return {"member": k, "seed": summary["config"]["train"]["seed"], **{key: summary.get(key) for key in keys}}


def _curve(summaries: Sequence[dict]) -> list[tuple[float, float]]:
    """Test accuracy against the ensemble's training clock: each member's own curve, shifted
    by the training time of the members before it (a single net's accuracy at that time)."""
    curve, offset = [], 0.0
    for summary in summaries:
        curve += [(offset + t, acc) for t, acc in summary.get("test_acc_by_train_time") or []]
        offset += summary.get("train_time_s") or 0.0
    return curve


def fit_members(recipe: Recipe, out: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
                quiet: bool = False, data: Any = None, tensorboard: bool = True) -> dict:
    """Train ``recipe.train.members`` nets and return the summary of their ensemble.

    Member k trains ``recipe`` with ``train.seed = seed + k`` in ``out/member<k>`` (its own
    data split where the recipe holds out a validation set, exactly as ``trickbag train
    --set train.seed=...`` would). ``resume`` keeps the members that finished and continues
    the first unfinished one from its newest checkpoint (bit-exact). The summary's
    ``test_acc`` is the ensemble's, ``train_time_s`` the members' sum; ``members`` lists
    each one's figures. ``data``: an ``ImageData`` shared by every member instead of loading
    the recipe's data set for each.

    Raises ``RunDirError`` before training when ``out`` holds another run, and the member's
    ``DivergedError`` when one diverges (a diverged member found on resume raises it again).
    """
    from trickbag.train.distributed import launched
    from trickbag.train.trainer import Trainer

    n = recipe.train.members
    if launched():
        raise RunDirError(f"recipe train.members={n}: an ensemble is trained one member after another, not under "
                          "torchrun; run each seed under torchrun and evaluate them with `trickbag ensemble`")
    out = Path(out) if out else default_run_dir(recipe)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the run directory {out}: {exc.strerror or exc}") from None
    wall0 = time.perf_counter()
    with RunLock(out):
        _open_members_run(out, n, resume, overwrite)
        save(recipe, out / "config.yaml")
        summaries, trainers = [], []
        for k in range(n):
            folder = out / f"member{k}"
            done = finished_summary(folder) if resume else None
            if done is not None:
                if done.get("diverged"):
                    raise DivergedError(f"member {k} ({folder}) diverged: {done.get('stopped')}", done)
                summaries.append(done)
                trainers.append((folder, None))
                continue
            if not quiet:
                print(f"member {k + 1} of {n} (seed {recipe.train.seed + k}) -> {folder}", file=sys.stderr, flush=True)
            trainer = Trainer(recipe.member(k), out=folder, quiet=quiet, data=data, tensorboard=tensorboard)
            summary = trainer.fit_or_continue()
            summaries.append(summary)
            if str(summary.get("stopped", "")).startswith("interrupted"):  # Ctrl-C: the member saved its checkpoint
                return _write_members_summary(out, recipe, summaries, None, wall0, summary["stopped"])
            trainers.append((folder, trainer))
        if not quiet:
            print(f"evaluating the ensemble of {n}", file=sys.stderr, flush=True)
        result = _ensemble_of((name, trainer or load_member(name, data)) for name, trainer in trainers)
        return _write_members_summary(out, recipe, summaries, result, wall0, "completed")


def _write_members_summary(out: Path, recipe: Recipe, summaries: list[dict], result: dict | None, wall0: float,
                           stopped: str) -> dict:
    train_time = sum(s.get("train_time_s") or 0.0 for s in summaries)
    images = sum((s.get("images_per_s") or 0.0) * (s.get("train_time_s") or 0.0) for s in summaries)
    first = summaries[0]
    summary = {
        "stopped": stopped, "diverged": False, "members": [_member_row(k, s) for k, s in enumerate(summaries)],
        "epochs": recipe.train.epochs, "train_time_s": train_time, "wall_time_s": time.perf_counter() - wall0,
        "images_per_s": images / max(train_time, 1e-9),
        "test_acc": result["ensemble_test_acc"] if result else None,
        "test_acc_by_tta": {"none": result["ensemble_test_acc_no_tta"]} if result else {},
        "member_test_acc_mean": result["member_test_acc_mean"] if result else None,
        "member_test_acc_best": result["member_test_acc_best"] if result else None,
        "test_acc_by_train_time": _curve(summaries) + ([(train_time, result["ensemble_test_acc"])] if result else []),
        "runtime": first.get("runtime"), "adapted_for_device": first.get("adapted_for_device"), "parameters": first.get("parameters"),
        "versions": first.get("versions"), "machine": first.get("machine"), "data": first.get("data"),
        "out": str(out), "config": to_dict(recipe),
    }
    write_json(out / "summary.json", summary)
    return summary
