"""Map-quality measures of ordered codebooks, checked on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from sfvq.mapquality import u_profile


def test_u_profile_is_the_distance_between_consecutive_corners() -> None:
    c = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0], [0.0, 5.0]])
    assert u_profile(c).tolist() == [5.0, 1.0, 3.0]
    with pytest.raises(ValueError, match=r"\(K >= 2, D\) codebook"):
        u_profile(torch.zeros(1, 3))
