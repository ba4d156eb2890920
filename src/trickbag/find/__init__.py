"""Find a learning rate: the LR range test with several suggestion rules and exact restore,
and seed 002's descending trials."""

from trickbag.find.sweep import (
           LRFinderResult,
           descending_trials,
           lr_range_test,
           SavedState,
           parts_batches,
           parts_range_test,
)
from trickbag.find.rules import (
           DEFAULT_RULE,
           RULES,
           Suggestion,
           consensus,
           fall,
           minimum,
           steepest,
           suggest,
           valley,
)

__all__ = ["lr_range_test", "parts_range_test", "parts_batches", "descending_trials", "LRFinderResult", "SavedState", "Suggestion", "RULES", "DEFAULT_RULE", "fall", "suggest", "valley",
           "steepest", "minimum", "consensus"]
