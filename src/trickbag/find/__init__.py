"""Find a learning rate: the LR range test with several suggestion rules and exact restore,
and seed 002's descending trials."""

from trickbag.find.range_test import (
           LRFinderResult,
           descending_trials,
           lr_range_test,
           saved_state,
           trainer_batches,
           trainer_range_test,
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

__all__ = ["lr_range_test", "trainer_range_test", "trainer_batches", "descending_trials", "LRFinderResult", "saved_state", "Suggestion", "RULES", "DEFAULT_RULE", "fall", "suggest", "valley",
           "steepest", "minimum", "consensus"]
