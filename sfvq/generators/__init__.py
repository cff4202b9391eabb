"""Generator adapters behind one protocol."""

from sfvq.generators.base import Generator, GeneratorError, to_uint8

__all__ = ["Generator", "GeneratorError", "to_uint8"]
