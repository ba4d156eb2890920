"""The loop's features inside real ``fit`` runs, each checked against a value computed
here: plateau control (and its resume), early stopping, gradient clipping, the linear
scaling rule, a double Ctrl-C, and a GradScaler skip that must not advance the schedule."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from tests.train.helpers import StopAfterEpoch, recipe
from trickbag.recipes import build
from trickbag.train import Callback, Trainer

STEPS_PER_EPOCH = 600 // 50  # small_data has 600 training images
CONSTANT = ["schedule.name=constant", "schedule.params={}"]


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- 1. plateau control -----------------------------------------------------------------


def plateau_lrs(base_lr, val_losses, factor, threshold):
    """The lr of each epoch under PlateauController's documented rule (min mode,
    threshold_mode="rel", patience 0, cooldown 0, floor not reached): an evaluation
    improves when ``loss < best * (1 - threshold)`` (best >= 0; the first always
    improves); every other one divides the lr by ``factor``, from the next epoch on."""
    lrs, lr, best = [], base_lr, math.inf
    for loss in val_losses:
        lrs.append(lr)  # the lr this epoch trained with; the evaluation comes after it
        if best == math.inf or loss < best * (1 - threshold):
            best = loss
        else:
            lr /= factor
    return lrs


PLATEAU = [*CONSTANT, "optim.lr=0.01", "train.epochs=6",
           "schedule.plateau={factor: 2, patience: 0, threshold: 0.02, threshold_mode: rel}"]


def test_plateau_halves_the_lr_on_each_stall_and_survives_a_resume(tmp_path, small_data):
    full = Trainer(recipe(*PLATEAU), out=tmp_path / "full", quiet=True, data=small_data)
    full.fit()
    lines = metrics(tmp_path / "full")
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5, 6]
    expected = plateau_lrs(0.01, [m["val_loss"] for m in lines], factor=2, threshold=0.02)
    assert [m["lr"] for m in lines] == pytest.approx(expected, rel=1e-12)
    assert len(set(expected)) > 1  # the rule fired: at least one stall was seen and halved the lr

    # stopped after epoch 2 the controller's best matters for what follows; after epoch 4 (on
    # Fashion-MNIST the lr is halved by then) its scale does too
    for stop in (2, 4):
        out = tmp_path / f"part{stop}"
        part = Trainer(recipe(*PLATEAU), out=out, quiet=True, data=small_data, callbacks=[StopAfterEpoch(stop)])
        part.fit()
        assert part.epoch == stop
        again = Trainer(recipe(*PLATEAU), out=out, quiet=True, data=small_data)
        summary = again.fit(resume=True)
        assert summary["resumed_from"] == f"epoch_{stop:04d}.pt"
        resumed = metrics(out)
        assert [m["epoch"] for m in resumed] == [1, 2, 3, 4, 5, 6]
        assert [m["lr"] for m in resumed] == [m["lr"] for m in lines]
        assert [m["val_loss"] for m in resumed] == [m["val_loss"] for m in lines]


# --- 2. early stopping ------------------------------------------------------------------


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path, small_data, patience):
    # lr 0, no BN (its running statistics would move) and no EMA: the weights never change,
    # so the validation accuracy is the same at every evaluation and only the first improves
    r = recipe("optim.lr=0", "model.params={widths: [8, 16], depth: 1, bn: false}", "train.ema_decay=0",
               "train.epochs=6", f"train.early_stopping={patience}")
    t = Trainer(r, out=tmp_path, quiet=True, data=small_data)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    summary = t.fit()
    assert all(torch.equal(v, before[k]) for k, v in t.model.state_dict().items())
    expected_epochs = 1 + patience  # the first evaluation sets the best, then `patience` that do not beat it
    lines = metrics(tmp_path)
    assert [m["epoch"] for m in lines] == list(range(1, expected_epochs + 1))
    assert len({m["val_acc"] for m in lines}) == 1
    assert summary["epochs"] == expected_epochs and summary["steps"] == expected_epochs * STEPS_PER_EPOCH
    assert summary["stopped"].startswith("early stopping") and f"for {patience} evaluations" in summary["stopped"]
    assert summary["best_epoch"] == 1


# --- 3. gradient clipping ---------------------------------------------------------------


class StopAfterFirstStep(Callback):
    def on_step_end(self, trainer, loss):
        self.params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        trainer.should_stop = True


def clip_by_norm(grads, max_norm):
    total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
    coef = min(1.0, max_norm / (total + 1e-6))  # torch.nn.utils.clip_grad_norm_'s documented coefficient
    return {k: g * coef for k, g in grads.items()}, total


@pytest.mark.parametrize("key, c", [("clip_norm", 0.05), ("clip_value", 0.1)])
def test_clipping_in_the_loop_gives_the_hand_computed_sgd_step(tmp_path, small_data, key, c):
    lr, eps = 0.1, 0.1
    r = recipe(*CONSTANT, f"optim.lr={lr}", "optim.name=sgd", "optim.momentum=0", "optim.weight_decay=0",
               "data.augment=[]", f"loss.label_smoothing={eps}", "train.ema_decay=0", "train.precision=fp32",
               f"optim.{key}={c}")
    spy = StopAfterFirstStep()
    t = Trainer(r, out=tmp_path, quiet=True, data=small_data, callbacks=[spy])
    t.fit()
    assert t.step == 1

    # the same model (same seed), the same first batch, gradients by hand
    model = build(r, data=small_data).model.train()
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    idx = torch.randperm(600, generator=torch.Generator().manual_seed(r.train.seed))[:50]  # the loop's data order
    unit = small_data.train_x.float() / 255
    mean, std = unit.mean(dim=(0, 2, 3)).view(1, -1, 1, 1), unit.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
    x = (unit[idx] - mean) / std
    loss = F.cross_entropy(model(x), small_data.train_y[idx], label_smoothing=eps)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    if key == "clip_norm":
        clipped, total = clip_by_norm(grads, c)
        assert total > 10 * c  # the clip is active, and strongly
    else:
        clipped = {k: g.clamp(-c, c) for k, g in grads.items()}
        over = sum(int((g.abs() > c).sum()) for g in grads.values())
        assert 500 < over < sum(g.numel() for g in grads.values()) - 500  # many elements clipped, many not
    for k, p in spy.params.items():
        step = p - w0[k]
        assert torch.allclose(step, -lr * clipped[k], rtol=1e-3, atol=1e-7), k
    # and the unclipped step would have been far from it
    assert any(not torch.allclose(spy.params[k] - w0[k], -lr * grads[k], rtol=1e-2, atol=1e-5) for k in grads)


# --- 4. linear scaling rule -------------------------------------------------------------


def test_linear_scaling_rule_sets_the_lr(tmp_path, small_data):
    seen = []

    class Spy(Callback):
        def on_step_end(self, trainer, loss):
            seen.extend(g["lr"] for g in trainer.optimizer.param_groups)

    r = recipe(*CONSTANT, "optim.lr=0.1", "optim.base_batch_size=256", "train.epochs=1")
    Trainer(r, out=tmp_path, quiet=True, data=small_data, callbacks=[Spy()]).fit()
    expected = 0.1 * 50 / 256  # Goyal et al.: lr per 256 examples, times batch / 256
    assert len(seen) == 2 * STEPS_PER_EPOCH  # two param groups (decay, no_decay), every step
    assert seen == pytest.approx([expected] * len(seen), rel=1e-12)
    (line,) = metrics(tmp_path)
    assert line["lr"] == pytest.approx(expected, rel=1e-12)


# --- 5. a double Ctrl-C -----------------------------------------------------------------


class DoubleCtrlCAt(Callback):
    def __init__(self, step):
        self.at = step

    def on_step_end(self, trainer, loss):
        if trainer.step == self.at:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the second one: stop at once


def test_a_double_ctrl_c_stops_at_once_and_leaves_the_run_resumable(tmp_path, small_data):
    full = Trainer(recipe(), out=tmp_path / "full", quiet=True, data=small_data)
    full.fit()
    handler = signal.getsignal(signal.SIGINT)
    cut = Trainer(recipe(), out=tmp_path / "cut", quiet=True, data=small_data, callbacks=[DoubleCtrlCAt(17)])
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    assert cut.step == 17 and cut.epoch == 1  # inside epoch 2
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer put the previous handler back
    folder = tmp_path / "cut" / "checkpoints"
    assert not (folder / "interrupt.pt").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "epoch_0001.pt"]
    assert not (tmp_path / "cut" / ".lock").exists()
    again = Trainer(recipe(), out=tmp_path / "cut", quiet=True, data=small_data)  # would raise RunDirError if locked
    summary = again.fit(resume=True)
    assert summary["resumed_from"] == "epoch_0001.pt" and summary["epochs"] == 3
    assert again.step == full.step == 3 * STEPS_PER_EPOCH
    full_sd, again_sd = full.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(full_sd[k], again_sd[k]) for k in full_sd)  # resuming from the epoch checkpoint is exact
    assert [m["epoch"] for m in metrics(tmp_path / "cut")] == [1, 2, 3]


# --- 6. a step the GradScaler skips -----------------------------------------------------


def test_a_step_skipped_by_the_grad_scaler_does_not_advance_the_schedule(tmp_path, small_data):
    lr = 0.1
    r = recipe(f"optim.lr={lr}", "schedule.params={total_steps: 1dur, warmup_steps: 0}", "train.precision=fp32",
               "train.ema_decay=0")
    t = Trainer(r, out=tmp_path, quiet=True, data=small_data)
    total = 3 * STEPS_PER_EPOCH

    def cosine(step):  # no warmup: lr (1 + cos(pi t / T)) / 2
        return lr * (1 + math.cos(math.pi * step / total)) / 2

    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # fp16's loss scaling, simulated on the CPU
    used = []  # the lr of every update the optimizer really made (a fused optimizer is called, and skips on the device)
    probe = next(t.model.parameters())
    seen = {}
    t.optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.update(before=probe.detach().clone()))
    t.optimizer.register_step_post_hook(
        lambda opt, args, kwargs: None if torch.equal(seen["before"], probe) else used.append(opt.param_groups[0]["lr"]))
    poison = {"on": True}
    param = next(t.model.parameters())
    param.register_hook(lambda g: g * math.inf if poison["on"] else g)

    def params():
        return {k: v.detach().clone() for k, v in t.model.named_parameters()}

    x, y = small_data.train_x[:50], small_data.train_y[:50]
    before = params()
    t.train_step(x, y)  # its gradient is inf: the scaler skips the update
    assert t.step == 0 and used == []
    assert t.lr_driver.last_step == 0 and t.current_lr == pytest.approx(cosine(0), rel=1e-12)
    assert all(torch.equal(v, before[k]) for k, v in params().items())
    assert t.scaler.get_scale() == 2.0**9

    poison["on"] = False
    t.train_step(x, y)
    assert t.step == 1 and t.scaler.get_scale() == 2.0**9
    assert all(not torch.equal(v, before[k]) for k, v in params().items())
    t.train_step(x, y)
    assert t.step == 2
    assert used == pytest.approx([cosine(0), cosine(1)], rel=1e-12)  # the skipped step took no lr of its own
    assert cosine(1) < cosine(0)


# --- 7. what each test-time view is worth -------------------------------------------------


def test_summary_gives_test_accuracy_for_every_subset_of_the_tta_views(tmp_path, small_data):
    """Each entry is recomputed here from the final weights by hand: softmax averages over
    the views (mirror = flip of the width axis; shifts move the image diagonally by 1 pixel,
    filling with the value of black), half the weight on the unshifted views."""
    trainer = Trainer(recipe("train.epochs=1", "train.tta_flip=true", "train.tta_translate=1", "train.ema_decay=0"),
                      out=tmp_path / "run", quiet=True, data=small_data, tensorboard=False)
    summary = trainer.fit()
    by_tta = summary["test_acc_by_tta"]
    assert set(by_tta) == {"none", "flip", "translate1", "flip+translate1"}
    assert by_tta["flip+translate1"] == summary["test_acc"]

    model = trainer.model.eval()
    x = trainer.inputs(small_data.test_x, train=False)
    black = float(trainer.inputs.black)

    def shifted(img, s):
        out = torch.full_like(img, black)
        if s > 0:
            out[..., s:, s:] = img[..., :-s, :-s]
        else:
            out[..., :s, :s] = img[..., -s:, -s:]
        return out

    def acc(views_weights):
        with torch.no_grad(), trainer.runtime.autocast():
            probs = sum(w * F.softmax(model(v).float(), dim=1) for v, w in views_weights)
        return (probs.argmax(1) == small_data.test_y).float().mean().item()

    mirror = x.flip(-1)
    expected = {
        "none": acc([(x, 1.0)]),
        "flip": acc([(x, 0.5), (mirror, 0.5)]),
        "translate1": acc([(x, 0.5), (shifted(x, 1), 0.25), (shifted(x, -1), 0.25)]),
        "flip+translate1": acc([(x, 0.25), (mirror, 0.25)] + [(shifted(v, s), 0.125) for s in (1, -1) for v in (x, mirror)]),
    }
    for name, value in expected.items():
        assert by_tta[name] == pytest.approx(value, abs=1.5 / len(small_data.test_y)), name  # one image may flip on a tie


def test_evaluate_views_runs_each_distinct_view_once_and_matches_one_set_at_a_time(tmp_path, small_data):
    """Four sets of views share six distinct views (image, mirror, both moved +-1 px): one
    forward per view and batch, and each set's figures equal a separate ``evaluate``."""
    trainer = Trainer(recipe("train.epochs=1", "train.ema_decay=0", "data.eval_batch_size=128"), out=tmp_path / "run",
                      quiet=True, data=small_data, tensorboard=False)
    sets = [(False, 0), (False, 1), (True, 0), (True, 1)]
    calls = []
    hook = trainer.model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    together = trainer.evaluate_views(small_data.test_x, small_data.test_y, None, sets)
    hook.remove()
    batches = -(-len(small_data.test_y) // 128)
    assert len(calls) == 6 * batches and sum(calls) == 6 * len(small_data.test_y)
    for (flip, shift), got in zip(sets, together):
        alone = trainer.evaluate(small_data.test_x, small_data.test_y, flip=flip, shift=shift)
        assert got["acc"] == alone["acc"] and got["loss"] == pytest.approx(alone["loss"], rel=1e-9)


def test_no_tta_breakdown_without_test_time_augmentation(tmp_path, small_data):
    summary = Trainer(recipe("train.epochs=1", "train.tta_flip=false", "train.tta_translate=0"), out=tmp_path / "run",
                      quiet=True, data=small_data, tensorboard=False).fit()
    assert summary["test_acc_by_tta"] == {}


# --- alternating flips ----------------------------------------------------------------


def test_the_loop_gives_alternating_flip_each_images_position_and_epoch(tmp_path, small_data):
    """Every training image is seen mirrored in exactly one of two consecutive epochs:
    the trainer passes the batch's positions in the training set and the epoch."""
    trainer = Trainer(recipe("train.epochs=3", "data.augment=[{name: alt_flip}]", "train.ema_decay=0"),
                      out=tmp_path / "run", quiet=True, data=small_data, tensorboard=False)
    augment, seen = trainer.inputs.augment, []

    def recording(x, generator, index=None, epoch=0):
        out = augment(x, generator, index=index, epoch=epoch)
        mirrored = (out == x.flip(-1)).flatten(1).all(1) & ~(x == x.flip(-1)).flatten(1).all(1)
        seen.append((epoch, index.clone(), mirrored))
        return out

    trainer.inputs.augment = recording
    trainer.fit()
    n = len(small_data.train_y)
    flips = torch.full((3, n), -1)
    for epoch, index, mirrored in seen:
        flips[epoch, index] = mirrored.long()
    assert bool((flips >= 0).all())  # every image, every epoch (600 images, batch 50: none dropped)
    assert 0.3 < float(flips[0].float().mean()) < 0.7
    assert torch.equal(flips[1], 1 - flips[0]) and torch.equal(flips[2], flips[0])


# --- 9. losses read in windows, non-finite steps skipped on the device (the GPU path) -----


def test_losses_read_every_k_steps_train_the_same_run_as_reading_every_step(tmp_path, small_data):
    """train.sync_every=5 takes the device-guard path (the GPU default: skip decided on the
    device, losses read in windows); on finite losses it is the same run, weight for weight,
    with the same epoch losses, and it resumes bit-exactly from a mid-window stop."""
    from tests.train.helpers import StopAtStep
    from tests.train.test_trainer import assert_same, weights

    every_step = Trainer(recipe("train.sync_every=1"), out=tmp_path / "a", quiet=True, data=small_data)
    a = every_step.fit()
    windowed = Trainer(recipe("train.sync_every=5"), out=tmp_path / "b", quiet=True, data=small_data)
    b = windowed.fit()
    assert windowed.sync_every == 5 and every_step.sync_every == 1
    assert_same(weights(every_step), weights(windowed))
    assert a["steps"] == b["steps"] == 3 * STEPS_PER_EPOCH
    losses = [[json.loads(line)["train_loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in "ab"]
    assert losses[1] == pytest.approx(losses[0], rel=1e-12)
    cut = Trainer(recipe("train.sync_every=5"), out=tmp_path / "c", quiet=True, data=small_data, callbacks=[StopAtStep(7)])
    cut.fit()
    again = Trainer(recipe("train.sync_every=5"), out=tmp_path / "c", quiet=True, data=small_data)
    again.fit(resume=True)
    assert_same(weights(windowed), weights(again))


def test_a_non_finite_loss_is_skipped_on_the_device_and_counted_when_read(tmp_path, small_data):
    from tests.train.test_trainer import InfAfter  # noqa: F401  (registers inf_after_test)
    from trickbag.train import NonFiniteLossError

    t = Trainer(recipe("model.name=inf_after_test", "model.params={after: 3}", "train.nan_patience=4", "train.sync_every=3",
                       "train.ema_decay=0"), out=tmp_path, quiet=True, data=small_data)
    updates = []
    t.optimizer.register_step_post_hook(lambda opt, args, kwargs: updates.append(next(t.model.parameters()).detach().clone()))
    with pytest.raises(NonFiniteLossError, match="4 times"):
        t.fit()
    # the optimizer was called on 9 steps (3 windows of 3); steps 4-9 were skipped on the device
    assert len(updates) == 9 and t.nonfinite == 4 and t.step == 3
    assert not torch.equal(updates[1], updates[2])  # the good steps moved the weights
    assert all(torch.equal(u, updates[2]) for u in updates[3:])  # the skipped ones left them exactly
    assert all(torch.isfinite(v).all() for v in t.model.state_dict().values())
    assert all(torch.isfinite(b).all() for s in t.optimizer.state.values() for b in s.values() if torch.is_tensor(b))


def test_the_ema_is_the_warmup_decay_recursion_computed_by_hand():
    from trickbag.train.ema import build_ema

    model = torch.nn.BatchNorm1d(2)
    ema = build_ema(model, decay=0.9)
    expected = None
    for n in range(4):
        with torch.no_grad():
            model.weight.copy_(torch.tensor([float(n + 1), -2.0 * n]))
            model.running_mean.copy_(torch.tensor([0.5 * n, 1.0]))
        model.num_batches_tracked.fill_(n + 7)
        ema.update_parameters(model)
        current = torch.cat([model.weight.detach(), model.running_mean])
        if n == 0:
            expected = current.clone()  # the first update copies
        else:
            d = min(0.9, (1 + n) / (10 + n))
            expected = d * expected + (1 - d) * current
        got = torch.cat([ema.module.weight.detach(), ema.module.running_mean])
        assert torch.allclose(got, expected, rtol=1e-6, atol=1e-7)
        assert int(ema.module.num_batches_tracked) == n + 7 and int(ema.n_averaged) == n + 1
    assert ema.n_averaged.device.type == "cpu"
