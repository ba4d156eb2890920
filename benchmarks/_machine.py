"""Shared by the benchmarks: the machine description printed with every JSON, and the data."""

from __future__ import annotations

import os
import platform
import sys


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if "torch" in sys.modules:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        from trickbag.hardware import cpu_flags  # imports torch: only where a benchmark has

        info["cpu_flags"] = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))  # what decides a step's speed
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA") if os.environ.get(k)}
    if caps:  # an instruction-set cap: this machine ran as a smaller CPU (e.g. an AVX2-only one)
        info["isa_caps"] = caps
    return info


def benchmark_data(val_size: int):
    """Fashion-MNIST (a local copy or a verified download); generated images when it cannot
    be had (the JSON's ``data`` field says which)."""
    from trickbag.data import load_dataset
    from trickbag.data.sources import DataUnavailableError

    try:
        return load_dataset("fashion-mnist", val_size=val_size)
    except DataUnavailableError:
        return load_dataset("synthetic", val_size=min(val_size, 200))
