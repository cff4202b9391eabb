"""Generator adapters behind one protocol (:mod:`sfvq.generators.base`) and the registry that loads them.

The names below resolve on first use, so importing a light submodule (such as
:mod:`sfvq.generators.exported`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Generator": "base",
    "GeneratorBase": "base",
    "GeneratorError": "base",
    "to_uint8": "base",
    "GeneratorFormat": "registry",
    "generator_formats": "registry",
    "list_generators": "registry",
    "load_generator": "registry",
    "register_format": "registry",
    "unregister_format": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"sfvq.generators.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'sfvq.generators' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
