"""Fit checkpoints: everything a fit needs to continue where it stopped, in one atomic file.

A checkpoint is a safetensors file: the tensors (the codebook being trained, Adam's moments, the random
generator's state, every finished bitrate's codebook) and a JSON description under the metadata key
``sfvq_checkpoint`` (where the fit stands, its settings, the data's size and total variance, the
losses so far). It is written to a temporary name and renamed, so a process killed at any moment
leaves either the previous checkpoint or the new one, never a torn file. :class:`SFVQ.fit` writes one
after every stage and every ``checkpoint_every`` steps and, with ``resume=True``, continues from it;
see :meth:`sfvq.quantizer.SFVQ.fit`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from sfvq.atomic import atomic_path

FORMAT = "sfvq.fit-checkpoint"
FORMAT_VERSION = 1
META_KEY = "sfvq_checkpoint"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another fit."""


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and the JSON-able ``meta`` to ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **meta}, allow_nan=False)
    tensors = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: text})
        with open(tmp, "rb+") as f:  # on disk before the rename makes it the checkpoint
            os.fsync(f.fileno())
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: (tensors on the CPU, description).

    FileNotFoundError when there is none; :class:`CheckpointError` naming the problem otherwise.
    """
    from sfvq.io import read_safetensors_with_meta

    path = Path(path)
    tensors, meta = read_safetensors_with_meta(
        path, kind="fit checkpoint", meta_key=META_KEY, error=CheckpointError
    )
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer sfvq (checkpoint format {meta['format_version']})"
        )
    return tensors, meta


__all__ = ["FORMAT", "CheckpointError", "load_checkpoint", "save_checkpoint"]
