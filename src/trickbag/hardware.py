"""What this machine computes natively, asked once per decision: bf16 on a CPU or a GPU.

bf16 arithmetic is native on CPUs with AVX512-BF16 or AMX and on CUDA GPUs from Ampere on;
elsewhere torch emulates it, correctly but several times slower than fp32 (about 10x for a
small conv net's training step on an AVX2-only CPU, 20x for Muon's Newton–Schulz matmuls:
``benchmarks/RESULTS.md``). ``precision: auto`` and Muon's iteration both ask here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

__all__ = ["ONEDNN_BF16_ISAS", "cpu_flags", "native_bf16", "cpu_has_native_bf16", "bf16_is_native"]

#: oneDNN ISA limits (``ONEDNN_MAX_CPU_ISA``) under which its kernels still use bf16 instructions
ONEDNN_BF16_ISAS = frozenset({"ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                              "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
                              "AVX10_2_512", "AVX10_2_512_AMX_2"})


def native_bf16(cpu_flags: Iterable[str], aten_capability: str, onednn_max_isa: str | None = None) -> bool:
    """Whether bf16 runs natively: the CPU has the instructions (``avx512_bf16`` or
    ``amx_bf16`` in its flags) *and* torch may use them. ``aten_capability`` is
    ``torch.backends.cpu.get_cpu_capability()`` (``AVX2`` when ``ATEN_CPU_CAPABILITY=avx2``
    caps ATen's kernels); ``onednn_max_isa`` the ``ONEDNN_MAX_CPU_ISA`` limit on oneDNN's
    (convolutions, matmuls), if set: capped below ``AVX512_CORE_BF16``, bf16 is emulated."""
    has_instructions = bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags))
    aten_ok = aten_capability.upper().startswith(("AVX512", "AMX"))
    onednn_ok = not onednn_max_isa or onednn_max_isa.strip().upper() in ONEDNN_BF16_ISAS
    return has_instructions and aten_ok and onednn_ok


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s ``flags`` line); empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line for line in f if line.startswith("flags")), "").partition(":")[2].split())
    except OSError:
        return frozenset()


def cpu_has_native_bf16() -> bool:
    """``native_bf16`` of this machine: its ``cpu_flags()``, torch's kernel capability and
    the oneDNN ISA limit from the environment (``ONEDNN_MAX_CPU_ISA`` or its older name
    ``DNNL_MAX_CPU_ISA``). False where the flags cannot be read."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return native_bf16(cpu_flags(), torch.backends.cpu.get_cpu_capability(), isa)


def bf16_is_native(device: torch.device) -> bool:
    """``cpu_has_native_bf16()`` on a CPU; on CUDA, whether the GPU computes bf16 in
    hardware (Ampere and later: ``is_bf16_supported(including_emulation=False)``; torch's
    default also counts the emulation pre-Ampere GPUs run, where fp16 is the fast choice);
    False elsewhere."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()
