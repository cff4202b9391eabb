"""How well an ordered codebook maps the data it was fitted to (issue 14): quantization, topology and
usage measures per bitrate, beside the classical ordered quantizers at equal K.

Only torch and numpy here; scikit-learn's trustworthiness/continuity are imported where they are used.
"""

from __future__ import annotations

import torch


def u_profile(codebook: torch.Tensor) -> torch.Tensor:
    """The U-profile of an ordered codebook: the distance between each pair of consecutive corners.

    (K, D) -> (K-1,). Large values mark where the curve jumps between regions of the latent space; drawn
    under the panoptic map they show the region boundaries between its tiles.
    """
    if codebook.ndim != 2 or codebook.shape[0] < 2:
        raise ValueError(f"u_profile needs a (K >= 2, D) codebook, got shape {tuple(codebook.shape)}")
    return (codebook[1:] - codebook[:-1]).norm(dim=1)  # (K-1,)
