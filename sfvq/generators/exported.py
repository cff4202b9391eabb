"""Generators exported by sfvq itself: ``<name>.safetensors`` (G_ema's state dict) + ``<name>.json``.

``sfvq avatars export`` writes this format (:func:`sfvq.avatars.export.export_generator`): the JSON
sidecar holds ``format`` (:data:`EXPORT_FORMAT`), ``init_kwargs`` for sfvq's StyleGAN2 network, and the
data set's and training's description. Importing this module stays light (no torch) so that
:mod:`sfvq.avatars` can name the format without loading the networks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXPORT_FORMAT = "sfvq-avatars-sg2-v1"

__all__ = ["EXPORT_FORMAT", "load_exported_generator"]


def load_exported_generator(path: str | Path, name: str | None = None, device: Any = None) -> Any:
    """Load a ``G_ema`` exported by :func:`sfvq.avatars.export.export_generator` (safetensors + JSON).

    Returns a :class:`~sfvq.generators.stylegan.StyleGANGenerator` built by ``build_stylegan2`` from the
    sidecar's ``init_kwargs``; its ``training_set_kwargs`` holds the data set's description. Raises
    GeneratorError for a missing file or sidecar, a sidecar of another format, or unreadable weights.
    """
    from sfvq.generators.base import GeneratorError
    from sfvq.generators.stylegan import stylegan_from_state_dict
    from sfvq.io import read_safetensors_with_meta

    path = Path(path)
    side = path.with_suffix(".json")
    try:
        state_dict, meta = read_safetensors_with_meta(path, kind="exported generator", error=GeneratorError)
    except FileNotFoundError as e:
        raise GeneratorError(f"{e}; an exported generator needs {path.name} and {side.name}") from e
    if not isinstance(meta.get("init_kwargs"), dict):
        raise GeneratorError(f"{side} has no readable init_kwargs")
    init_kwargs = meta["init_kwargs"]
    if meta.get("format") != EXPORT_FORMAT:
        raise GeneratorError(f"{side}: format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
    return stylegan_from_state_dict(
        init_kwargs,
        state_dict,
        name=name or str(path),
        family="stylegan2",
        device=device,
        training_set_kwargs={"dataset": meta.get("dataset"), "training": meta.get("training")},
    )
