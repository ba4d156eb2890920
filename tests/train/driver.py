"""A driver for tests that stop ``trickbag train`` from outside (kill -9, Ctrl-C, a second run).

``run_until(tmp_path, out, mode, at)`` starts ``trickbag train`` in a subprocess through a
small script that wraps ``trickbag.cli.main`` and returns once the run reached the point:
``step`` parks it (marker file, then sleep) before optimizer step ``at``; ``slow`` makes
every step from ``at`` on 1 s longer; ``save`` parks it halfway through writing the
checkpoint of epoch ``at`` (part of the file already on disk).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA_ARGS

# 1000 images, batches of 100: 10 steps an epoch, 3 epochs
TINY = [*DATA_ARGS, "--set", "data.train_subset=1000", "--set", "data.val_size=200", "--set", "data.batch_size=100",
        "--set", "model.name=small_cnn", "--set", "model.params={widths: [8, 16], depth: 1}", "--set", "train.threads=1", "--set", "train.epochs=3",
        "--set", "loss.mixup_alpha=0.2", "--set", "train.ema_decay=0.9", "--quiet"]

DRIVER = '''
import os, sys, time
import torch
import trickbag.train.trainer as trainer_module

mode, at, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def park():
    open(marker, "w").close()
    time.sleep(600)

if mode == "step":  # park before optimizer step `at`
    real_step = trainer_module.Trainer.train_step
    def train_step(self, x, y, **kw):
        if self.step == at:
            park()
        return real_step(self, x, y, **kw)
    trainer_module.Trainer.train_step = train_step
elif mode == "slow":  # from step `at` on, each step takes 1 s longer (time for a Ctrl-C to land mid-epoch)
    real_step = trainer_module.Trainer.train_step
    def train_step(self, x, y, **kw):
        if self.step >= at:
            open(marker, "w").close()
            time.sleep(1.0)
        return real_step(self, x, y, **kw)
    trainer_module.Trainer.train_step = train_step
elif mode == "save":  # park halfway through writing the checkpoint of epoch `at`
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == at and obj.get("batch_in_epoch") == 0:
            f.write(b"PK\\x03\\x04 half a checkpoint")
            f.flush()
            park()
        return real_save(obj, f, *args, **kwargs)
    torch.save = save

from trickbag.cli import main
sys.argv = ["trickbag", *sys.argv[4:]]
main()
'''


def train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trickbag.cli", "train", "--out", str(out), *TINY, *extra],
                          capture_output=True, text=True, timeout=300)


def run_until(tmp_path: Path, out: Path, mode: str, at: int, *extra: str) -> subprocess.Popen:
    """Start ``trickbag train`` through the driver; return once it reached ``mode`` ``at``."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    marker = tmp_path / f"parked-{mode}-{at}"
    proc = subprocess.Popen([sys.executable, str(driver), mode, str(at), str(marker), "train", "--out", str(out), *TINY, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached {mode} {at}: {proc.communicate()}")
        time.sleep(0.05)
    return proc


