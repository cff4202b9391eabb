"""A world with known factors: rendered cartoon faces, a small StyleGAN2 trained on them, a factor read-out.

* :mod:`sfvq.avatars.dataset`: the data-set builder (python-avatars + cairosvg), factors per face.
* :mod:`sfvq.avatars.train`: compact StyleGAN2 training (our :mod:`sfvq.generators.stylegan2` modules,
  a residual discriminator, logistic loss, lazy R1, EMA); the networks and the fast training forward are
  in :mod:`sfvq.avatars.networks`, the export of ``G_ema`` in :mod:`sfvq.avatars.export`.
* :mod:`sfvq.avatars.classifier`: a small CNN that reads every factor from an image.
* :mod:`sfvq.avatars.benchmark`: the ground-truth benchmark of direction methods (purity, coverage, and
  how well ranges of the SFVQ curve separate factor values).

The exported generator lives in ``sfvq/avatars/weights/`` and loads as ``builtin:avatars-sg2``
(:func:`load_avatars_sg2`); the export format itself is read by :mod:`sfvq.generators.exported` (also
reachable here as :func:`load_exported_generator`). This module imports neither torch-heavy code nor
python-avatars until asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The export format lives with its reader, among the generator formats (a light import: no torch).
from sfvq.generators.exported import EXPORT_FORMAT, load_exported_generator

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUILTIN_NAME = "builtin:avatars-sg2"
GENERATOR_FILE = "avatars-sg2.safetensors"
CLASSIFIER_FILE = "avatars-classifier.safetensors"
TRAIN_COMMAND = (
    "sfvq avatars build-dataset && sfvq avatars train --threads 1 && sfvq avatars train-classifier && "
    "sfvq avatars export --classifier runs/avatars-classifier/avatars-classifier.safetensors"
)

__all__ = [
    "BUILTIN_NAME",
    "EXPORT_FORMAT",
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


def load_avatars_sg2(device: Any = None) -> Any:
    """``builtin:avatars-sg2``: the small StyleGAN2 trained on rendered faces (32x32, W space)."""
    return load_exported_generator(avatars_sg2_weights_path(), name=BUILTIN_NAME, device=device)
