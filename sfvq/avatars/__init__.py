"""A world with known factors: rendered cartoon faces, a small StyleGAN2 trained on them, a factor read-out.

* :mod:`sfvq.avatars.dataset`: the data-set builder (python-avatars + cairosvg), factors per face.
* :mod:`sfvq.avatars.train`: compact StyleGAN2 training (our :mod:`sfvq.generators.stylegan2` modules,
  a residual discriminator, logistic loss, lazy R1, EMA) and the export of ``G_ema``.
* :mod:`sfvq.avatars.classifier`: a small CNN that reads every factor from an image.
* :mod:`sfvq.avatars.benchmark`: the ground-truth benchmark of direction methods (purity, coverage, and
  how well ranges of the SFVQ curve separate factor values).

The exported generator lives in ``sfvq/avatars/weights/`` and loads as ``builtin:avatars-sg2``
(:func:`load_avatars_sg2`); this module imports neither torch-heavy code nor python-avatars until asked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUILTIN_NAME = "builtin:avatars-sg2"
GENERATOR_FILE = "avatars-sg2.safetensors"
CLASSIFIER_FILE = "avatars-classifier.safetensors"
EXPORT_FORMAT = "sfvq-avatars-sg2-v1"
TRAIN_COMMAND = (
    "sfvq avatars build-dataset && sfvq avatars train --threads 1 && sfvq avatars train-classifier && "
    "sfvq avatars export --classifier runs/avatars-classifier/avatars-classifier.safetensors"
)

__all__ = [
    "BUILTIN_NAME",
    "TRAIN_COMMAND",
    "WEIGHTS_DIR",
    "avatars_sg2_weights_path",
    "load_avatars_sg2",
    "load_exported_generator",
]


def _missing(what: str, path: Path) -> Any:
    from sfvq.generators.base import GeneratorError

    return GeneratorError(
        f"{BUILTIN_NAME}: {what} ({path}). This generator is trained, not downloaded; train and "
        f"export it (about 100 minutes on one CPU thread) with: {TRAIN_COMMAND}"
    )


def avatars_sg2_weights_path(weights_dir: str | Path | None = None) -> Path:
    """Path of the exported ``G_ema`` weights of ``builtin:avatars-sg2``; GeneratorError when absent."""
    path = Path(weights_dir or WEIGHTS_DIR) / GENERATOR_FILE
    if not path.is_file():
        raise _missing("no trained weights", path)
    if not path.with_suffix(".json").is_file():
        raise _missing("the weights have no JSON sidecar (init_kwargs)", path.with_suffix(".json"))
    return path


def load_exported_generator(path: str | Path, name: str | None = None, device: Any = None) -> Any:
    """Load a ``G_ema`` exported by :func:`sfvq.avatars.train.export_generator` (safetensors + JSON).

    Returns a :class:`~sfvq.generators.stylegan_pkl.StyleGANGenerator` built by ``build_stylegan2`` from
    the sidecar's ``init_kwargs``; its ``training_set_kwargs`` holds the data set's description.
    """
    from safetensors.torch import load_file

    from sfvq.generators.base import GeneratorError
    from sfvq.generators.stylegan_pkl import stylegan_from_state_dict

    path = Path(path)
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        raise GeneratorError(f"{path}: an exported generator needs {path.name} and {side.name}")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        init_kwargs = meta["init_kwargs"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise GeneratorError(f"{side} has no readable init_kwargs ({e})") from e
    if meta.get("format") != EXPORT_FORMAT:
        raise GeneratorError(f"{side}: format {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
    try:
        state_dict = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise GeneratorError(f"{path} is not a readable safetensors file ({e})") from e
    return stylegan_from_state_dict(
        init_kwargs,
        state_dict,
        name=name or str(path),
        family="stylegan2",
        device=device,
        training_set_kwargs={"dataset": meta.get("dataset"), "training": meta.get("training")},
    )


def load_avatars_sg2(device: Any = None) -> Any:
    """``builtin:avatars-sg2``: the small StyleGAN2 trained on rendered faces (32x32, W space)."""
    return load_exported_generator(avatars_sg2_weights_path(), name=BUILTIN_NAME, device=device)
