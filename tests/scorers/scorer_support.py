"""Skipping a scorer's tests when its packages are missing, unless SFVQ_REQUIRE_SCORERS=1 (CI sets it).

Then the test fails instead, so that a broken install cannot pass as skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import pytest

from sfvq.scorers import ScorerUnavailable

T = TypeVar("T")


def scorer_or_skip(factory: Callable[[], T]) -> T:
    """Build a scorer; skip (or fail when SFVQ_REQUIRE_SCORERS=1) if its packages are missing."""
    try:
        return factory()
    except ScorerUnavailable as e:
        if os.environ.get("SFVQ_REQUIRE_SCORERS") == "1":
            pytest.fail(f"SFVQ_REQUIRE_SCORERS=1 but the scorer is unavailable: {e}")
        pytest.skip(f"scorer unavailable: {e}")
