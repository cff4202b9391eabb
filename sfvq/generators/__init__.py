"""Generator adapters behind one protocol."""

from sfvq.generators.base import Generator, GeneratorError, to_uint8
from sfvq.generators.registry import list_generators, load_generator

__all__ = ["Generator", "GeneratorError", "list_generators", "load_generator", "to_uint8"]
