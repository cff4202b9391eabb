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
_MAX_SIDECAR_BYTES = 16 * 2**20  # the sidecar describes the data set and training: kilobytes

__all__ = ["EXPORT_FORMAT", "load_exported_generator"]


def load_exported_generator(path: str | Path, name: str | None = None, device: Any = None) -> Any:
    """Load a ``G_ema`` exported by :func:`sfvq.avatars.export.export_generator` (safetensors + JSON).

    Returns a :class:`~sfvq.generators.stylegan.StyleGANGenerator` built by ``build_stylegan2`` from the
    sidecar's ``init_kwargs``; its ``training_set_kwargs`` holds the data set's description. Raises
    GeneratorError for a missing file or sidecar, a sidecar of another format, or unreadable weights.
    """
    from sfvq.generators import limits
    from sfvq.generators.base import GeneratorError
    from sfvq.io import read_safetensors_with_meta

    path = Path(path)
    side = path.with_suffix(".json")
    if side.is_file() and side.stat().st_size > _MAX_SIDECAR_BYTES:
        raise GeneratorError(
            f"{side}: {limits.format_bytes(side.stat().st_size)} is far too large for an export's JSON "
            f"sidecar (at most {limits.format_bytes(_MAX_SIDECAR_BYTES)})"
        )
    with limits.loading(path, files=[path, side]) as budget:  # reused inside load_generator
        try:
            state_dict, meta = read_safetensors_with_meta(
                path, kind="exported generator", error=GeneratorError
            )
        except FileNotFoundError as e:
            raise GeneratorError(f"{e}; an exported generator needs {path.name} and {side.name}") from e
        budget.charge(sum(t.numel() * t.element_size() for t in state_dict.values()), "the exported tensors")
        return _build(path, side, state_dict, meta, name, device)


def _build(path: Path, side: Path, state_dict: dict, meta: dict, name: str | None, device: Any) -> Any:
    """The generator from the read tensors and sidecar (inside the load budget)."""
    from sfvq.generators.base import GeneratorError
    from sfvq.generators.limits import brief
    from sfvq.generators.stylegan import stylegan_from_state_dict

    if not isinstance(meta.get("init_kwargs"), dict):
        raise GeneratorError(f"{side} has no readable init_kwargs")
    init_kwargs = meta["init_kwargs"]
    if meta.get("format") != EXPORT_FORMAT:
        raise GeneratorError(f"{side}: format {brief(meta.get('format'))}, expected {EXPORT_FORMAT!r}")
    return stylegan_from_state_dict(
        init_kwargs,
        state_dict,
        name=name or str(path),
        family="stylegan2",
        device=device,
        training_set_kwargs={"dataset": meta.get("dataset"), "training": meta.get("training")},
    )
