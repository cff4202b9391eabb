"""sfvq: space-filling vector quantization for readable GAN latent spaces.

The public API is what this module exports. The core (``SFVQ``) needs only torch and numpy; the rest is
imported on first use, so ``import sfvq`` stays light.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

from sfvq.curve import Projection  # noqa: E402
from sfvq.quantizer import SFVQ, ModelFileError, NotFittedError  # noqa: E402

_LAZY = {
    "Generator": "sfvq.generators.base",
    "GeneratorError": "sfvq.generators.base",
    "to_uint8": "sfvq.generators.base",
    "load_generator": "sfvq.generators.registry",
    "list_generators": "sfvq.generators.registry",
    "LatentSpace": "sfvq.spaces",
    "Direction": "sfvq.directions",
    "DirectionSet": "sfvq.directions",
    "segment_directions": "sfvq.directions",
    "RunConfig": "sfvq.pipeline",
    "run_pipeline": "sfvq.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sfvq' has no attribute {name!r}")


__all__ = ["SFVQ", "ModelFileError", "NotFittedError", "Projection", "__version__", *_LAZY]
