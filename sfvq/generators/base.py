"""The one interface every generator adapter meets.

Images are NCHW float tensors in roughly [-1, 1]; everything runs batched under ``torch.no_grad``;
the device follows the generator's parameters (fp32 on CPU).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


class GeneratorError(ValueError):
    """A generator file or name that cannot be loaded; the message says what was found."""


@runtime_checkable
class Generator(Protocol):
    """A pretrained generator seen through sfvq's eyes.

    Attributes:
        name: registry name or path it was loaded from.
        z_dim, w_dim (None without a mapping network), num_ws (1 without style layers), c_dim,
        img_resolution, img_channels.
        spaces: latent spaces this generator offers, e.g. ``("z", "w", "w+")``.
        layers: names of intermediate layers usable with :meth:`features` / :meth:`synthesis_from`.
    """

    name: str
    z_dim: int
    w_dim: int | None
    num_ws: int
    c_dim: int
    img_resolution: int
    img_channels: int
    spaces: tuple[str, ...]
    layers: tuple[str, ...]

    @property
    def device(self) -> torch.device: ...

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim) -> ws (N, num_ws, w_dim). Generators without a mapping return z as (N, 1, z_dim)."""
        ...

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> images (N, C, H, W) in about [-1, 1]."""
        ...

    def features(self, z: torch.Tensor, c: torch.Tensor | None, layer: str) -> torch.Tensor:
        """Activations at ``layer`` for latents z: (N, ...)."""
        ...

    def synthesis_from(self, layer: str, features: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """The exact rest of the forward pass from ``layer``'s activations to images."""
        ...


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW float images in [-1, 1] -> NHWC uint8 numpy array (clamped, rounded)."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5  # (N, C, H, W) in [0, 255]
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
