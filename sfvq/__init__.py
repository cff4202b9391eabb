"""sfvq: space-filling vector quantization for readable GAN latent spaces."""

__version__ = "0.1.0"

from sfvq.curve import Projection  # noqa: E402
from sfvq.quantizer import SFVQ, ModelFileError, NotFittedError  # noqa: E402

__all__ = ["SFVQ", "ModelFileError", "NotFittedError", "Projection", "__version__"]
