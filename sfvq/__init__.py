"""sfvq: space-filling vector quantization for readable GAN latent spaces."""

__version__ = "0.1.0"

__all__ = ["__version__"]
