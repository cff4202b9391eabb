"""What every scorer shares: the error for a missing optional package, and one image format.

Scorers take images as either what generators return (a torch NCHW float tensor in [-1, 1]) or what
:func:`sfvq.generators.base.to_uint8` makes of it (numpy NHWC uint8); grey images are repeated to RGB.
"""

from __future__ import annotations

import numpy as np
import torch

from sfvq.generators.base import to_uint8

INSTALL_HINT = "pip install 'sfvq[scorers]'"


class ScorerUnavailable(RuntimeError):
    """A scorer's optional packages or model files are not installed; the message says how to get them."""


def as_uint8_rgb(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Images -> C-contiguous numpy uint8 (N, H, W, 3).

    Accepts numpy uint8 (N, H, W, C) or (H, W, C) with C in {1, 3}, or a torch float tensor (N, C, H, W) in
    [-1, 1] as generators return it.
    """
    if isinstance(images, torch.Tensor):
        if not images.is_floating_point():
            raise ValueError(
                f"expected a float image tensor (N, C, H, W) in [-1, 1], got dtype {images.dtype}; "
                "pass uint8 images as a numpy (N, H, W, 3) array"
            )
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"expected an image tensor (N, C, H, W) with C in (1, 3), got {tuple(images.shape)}"
            )
        arr = to_uint8(images)  # (N, H, W, C)
    elif isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(
                f"expected numpy images of dtype uint8 (N, H, W, 3), got {images.dtype}; "
                "convert float images with sfvq.generators.base.to_uint8"
            )
        arr = images
    else:
        raise TypeError(f"expected images as a numpy array or torch tensor, got {type(images).__name__}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected images (N, H, W, 3) or (N, H, W, 1), got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError("no images given")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)
