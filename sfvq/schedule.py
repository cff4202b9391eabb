"""The default fitting schedule of :class:`~sfvq.quantizer.SFVQ`, as plain data.

Kept apart from the estimator (which needs torch) so that the command line can show these defaults in
its options without importing torch.
"""

from __future__ import annotations

from typing import Any

# Chosen by benchmarks/run.py (workload aniso512): 2 passes a stage with batches of 2048 reach a lower
# error than the authors' 5 passes with batches of 64, in a fraction of the time.
DEFAULT_SCHEDULE: dict[str, Any] = {"epochs": 2, "batch_size": 2048, "lr": 2e-2}

__all__ = ["DEFAULT_SCHEDULE"]
