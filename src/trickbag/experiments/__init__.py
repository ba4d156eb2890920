"""Experiments over many runs: paired statistics (``stats``, torch-free)."""

from trickbag.experiments.stats import PairedComparison, Spread, compare_paired, seeds_to_resolve, spread

__all__ = ["PairedComparison", "Spread", "compare_paired", "seeds_to_resolve", "spread"]
