"""Experiments over many runs: paired statistics (``stats``) and tricks as recipe
transformations (``tricks``); both torch-free."""

from trickbag.experiments.stats import PairedComparison, Spread, compare_paired, seeds_to_resolve, spread
from trickbag.experiments.tricks import TRICKS, Trick, TrickError, register_trick, trick_names, with_tricks

__all__ = ["PairedComparison", "Spread", "compare_paired", "seeds_to_resolve", "spread",
           "TRICKS", "Trick", "TrickError", "register_trick", "trick_names", "with_tricks"]
