"""Ensembles: average the predicted class probabilities of several trained nets.

Seed 001 (Sutskever): an ensemble of ~10 nets is a cheap few points of accuracy. A member is
a run directory written by ``trickbag train`` (its newest loadable checkpoint: the final
weights, or the EMA of them where the run kept one) or a single checkpoint file (it carries
its recipe). Each member is evaluated through its own recipe's input pipeline (its own
standardization statistics) and test-time views; the ensemble's prediction is the mean of
the members' probabilities:

    p_ens(x) = (1/M) sum_m p_m(x),   accuracy = mean[argmax p_ens(x) == y]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trickbag.recipes.config import from_dict, override
from trickbag.train.checkpoint import load_checkpoint, newest_loadable

__all__ = ["load_member", "ensemble_accuracy"]


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


def ensemble_accuracy(sources: Sequence[str | os.PathLike], tta_flip: bool | None = None, data: Any = None,
                      device: str | None = None) -> dict:
    """Test accuracy of each member and of the mean of their probabilities.

    ``tta_flip``: ``None`` keeps each member's own test-time views; True/False forces the
    mirror view on/off (shifts stay as each recipe has them)."""
    if not sources:
        raise ValueError("ensemble: name at least one run directory or checkpoint")
    members, total, labels = [], None, None
    for source in sources:
        trainer = load_member(source, data, device)
        probs = trainer.predict(trainer.data.test_x, flip=tta_flip).float().cpu()
        y = trainer.data.test_y.cpu()
        if labels is None:
            labels = y
        elif not torch.equal(labels, y):
            raise ValueError(f"ensemble member {source}: its test set differs from the first member's "
                             f"({trainer.recipe.data.name}); members must share one data set")
        total = probs if total is None else total + probs
        members.append({"source": str(source), "test_acc": _accuracy(probs, y)})
    assert total is not None and labels is not None
    accs = [m["test_acc"] for m in members]
    return {"members": members, "n": len(members),
            "member_test_acc_mean": sum(accs) / len(accs), "member_test_acc_best": max(accs),
            "ensemble_test_acc": _accuracy(total / len(members), labels)}
