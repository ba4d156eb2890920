"""Training diagnostics: opt-in monitors in the trainer, rules that turn them into
findings with prescriptions, a short probe run, and a Markdown report with plots.

The rules (``trickbag.doctor.rules``) are torch-free; the monitor and the probe import
torch when first used.
"""

from typing import Any

from trickbag.doctor.report import read_outcome, read_run, write_report
from trickbag.doctor.rules import (
    SEVERITIES,
    Finding,
    Thresholds,
    diagnose,
    worst_severity,
)

__all__ = ["DoctorMonitor", "probe", "ProbeResult", "read_run", "read_outcome", "write_report", "diagnose", "Finding", "Thresholds",
           "SEVERITIES", "worst_severity"]

_LAZY = {"DoctorMonitor": "trickbag.doctor.monitor", "probe": "trickbag.doctor.probe_run", "ProbeResult": "trickbag.doctor.probe_run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trickbag.doctor' has no attribute {name!r}")
