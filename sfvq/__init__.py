"""sfvq: space-filling vector quantization for readable GAN latent spaces.

The public API is what this module exports. Every name is imported on first use (torch included), so
``import sfvq`` and ``sfvq.__version__`` stay light: the command line starts without loading torch.
"""

from importlib import import_module
from typing import Any

from sfvq._version import __version__

_LAZY = {
    "SFVQ": "sfvq.quantizer",
    "ModelFileError": "sfvq.quantizer",
    "NotFittedError": "sfvq.quantizer",
    "Projection": "sfvq.curve",
    "Generator": "sfvq.generators.base",
    "GeneratorError": "sfvq.generators.base",
    "to_uint8": "sfvq.generators.base",
    "load_generator": "sfvq.generators.registry",
    "list_generators": "sfvq.generators.registry",
    "LatentSpace": "sfvq.spaces",
    "Direction": "sfvq.directions",
    "DirectionSet": "sfvq.directions",
    "segment_directions": "sfvq.directions",
    "Run": "sfvq.runs",
    "RunConfig": "sfvq.pipeline",
    "run_pipeline": "sfvq.pipeline",
    "Projector": "sfvq.project",
    "ProjectionSettings": "sfvq.project",
    "place": "sfvq.locate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sfvq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["__version__", *_LAZY]
