"""The memory ceiling of a generator load, and error text that stays short whatever a file holds.

A generator file is untrusted input: a few hundred bytes of pickle can describe gigabytes (a stride-0
tensor, a network whose init kwargs ask for ``w_dim=2**17``, a zip entry that inflates a thousandfold).
Every loader therefore works against a :class:`LoadBudget`: a ceiling on the bytes it may hold for one
file (the data it reads, the tensors it rebuilds, the network it builds), charged *before* anything large
is allocated. The ceiling is, in this order of precedence:

* ``load_generator(..., max_bytes=N)``;
* the environment variable ``SFVQ_MAX_LOAD_BYTES`` (bytes, or with a unit: ``8GiB``, ``512M``);
* the default ``max(4 x file size, 256 MiB)``.

A load that would pass the ceiling fails with :class:`LoadLimitError`, a GeneratorError that names the
limit and how to raise it. The active budget travels in a context variable (:func:`loading`), so the
adapters' ``load(path, device)`` signature stays as it is.

:func:`brief` is the one way loaders put a value from a file into a message: bounded in depth, width and
length, and it never calls a ``repr`` it does not know, so a self-referencing or heavily shared structure
costs microseconds, not minutes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sfvq.generators.base import GeneratorError

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_FLOOR",
    "ENV_VAR",
    "LoadBudget",
    "LoadLimitError",
    "activate",
    "brief",
    "brief_text",
    "budget_for",
    "current_budget",
    "default_limit",
    "format_bytes",
    "loading",
    "parse_byte_size",
    "resolve_limit",
]

ENV_VAR = "SFVQ_MAX_LOAD_BYTES"
DEFAULT_FACTOR = 4  # default ceiling: this many times the file size ...
DEFAULT_FLOOR = 256 * 2**20  # ... but never below 256 MiB

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_byte_size(text: str) -> int:
    """``"268435456"``, ``"256MiB"``, ``"8G"``, ``"1.5 GiB"`` -> bytes (binary units). ValueError if bad."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a byte size: {brief_text(str(text), 40)!r} (use e.g. 8GiB, 512MiB or 1000000)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"not a positive byte size: {brief_text(str(text), 40)!r}")
    return int(value)


def format_bytes(n: int | float) -> str:
    """Bytes as a short human text: ``'256 MiB'``, ``'1.5 GiB'``, ``'646 bytes'``."""
    n = float(n)
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def default_limit(file_size: int) -> int:
    """``max(4 x file_size, 256 MiB)``: room for the file, its tensors and the network built from them."""
    return max(DEFAULT_FACTOR * int(file_size), DEFAULT_FLOOR)


def resolve_limit(max_bytes: int | None, file_size: int) -> tuple[int, str]:
    """The ceiling for a file of ``file_size`` bytes and where it came from (for messages).

    ``max_bytes`` wins, then the environment variable, then :func:`default_limit`. A bad ``max_bytes`` or
    environment value raises GeneratorError.
    """
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise GeneratorError(f"max_bytes must be a positive int (bytes), got {brief(max_bytes)}")
        return max_bytes, "max_bytes"
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        try:
            return parse_byte_size(env), ENV_VAR
        except ValueError as e:
            raise GeneratorError(f"environment variable {ENV_VAR}: {e}") from None
    return default_limit(
        file_size
    ), f"default: max({DEFAULT_FACTOR} x file size, {format_bytes(DEFAULT_FLOOR)})"


class LoadLimitError(GeneratorError):
    """A load would hold more bytes than its :class:`LoadBudget` allows (nothing large was allocated)."""


class LoadBudget:
    """A running count of the bytes one load holds, against a ceiling.

    Attributes:
        limit: the ceiling in bytes.
        origin: where the ceiling came from ("max_bytes", the environment variable, or the default).
        source: the file or directory being loaded (for messages).
        used: bytes charged so far.
    """

    def __init__(self, limit: int, origin: str = "max_bytes", source: str | Path | None = None) -> None:
        self.limit = int(limit)
        self.origin = origin
        self.source = None if source is None else str(source)
        self.used = 0

    def __repr__(self) -> str:
        return f"LoadBudget(used={self.used}, limit={self.limit}, origin={self.origin!r})"

    def how_to_raise(self) -> str:
        """The sentence every limit message ends with."""
        return (
            f"the load limit is {format_bytes(self.limit)} ({self.origin}); for a trusted file that needs "
            f"more, raise it with {ENV_VAR}=16GiB (environment) or load_generator(..., max_bytes=N)"
        )

    def exceeded(self, what: str, nbytes: int) -> LoadLimitError:
        """The error for ``what`` needing ``nbytes`` more than the budget has left."""
        where = f"{self.source}: " if self.source else ""
        return LoadLimitError(
            f"{where}{what} would need {format_bytes(nbytes)} on top of the {format_bytes(self.used)} "
            f"already held; {self.how_to_raise()}"
        )

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` about to be held for ``what``; LoadLimitError (nothing counted) if past it."""
        nbytes = max(0, int(nbytes))
        if self.used + nbytes > self.limit:
            raise self.exceeded(what, nbytes)
        self.used += nbytes

    def out_of_memory(self) -> GeneratorError:
        """The error for a MemoryError met while loading: it names the ceiling."""
        where = f"{self.source}: " if self.source else ""
        return LoadLimitError(
            f"{where}ran out of memory while loading ({format_bytes(self.used)} counted so far); "
            f"{self.how_to_raise()}, or free memory"
        )


_ACTIVE: ContextVar[LoadBudget | None] = ContextVar("sfvq_load_budget", default=None)


def current_budget() -> LoadBudget | None:
    """The budget of the load in progress in this context, or None outside :func:`loading`."""
    return _ACTIVE.get()


def _size_of(path: str | Path | None, files: list[Path] | None = None) -> int:
    if files is not None:
        return sum(p.stat().st_size for p in files if p.is_file())
    if path is None:
        return 0
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(q.stat().st_size for q in p.iterdir() if q.is_file())
    return 0


@contextmanager
def loading(
    source: str | Path | None,
    max_bytes: int | None = None,
    *,
    size: int | None = None,
    files: list[Path] | None = None,
) -> Iterator[LoadBudget]:
    """Make a budget the active one for the loads inside the ``with`` block, and yield it.

    If a budget is already active (a loader called from :func:`~sfvq.generators.registry.load_generator`)
    and ``max_bytes`` is None, that budget is reused, so one load counts against one ceiling. ``size`` (or
    the total size of ``files``, or of ``source``) sets the default ceiling.
    """
    active = _ACTIVE.get()
    if active is not None and max_bytes is None:
        yield active
        return
    file_size = size if size is not None else _size_of(source, files)
    limit, origin = resolve_limit(max_bytes, file_size)
    budget = LoadBudget(limit, origin, source)
    token = _ACTIVE.set(budget)
    try:
        yield budget
    finally:
        _ACTIVE.reset(token)


@contextmanager
def activate(budget: LoadBudget) -> Iterator[LoadBudget]:
    """Make ``budget`` (an existing one) the active budget inside the ``with`` block."""
    token = _ACTIVE.set(budget)
    try:
        yield budget
    finally:
        _ACTIVE.reset(token)


def budget_for(source: str | Path | None, size: int | None = None) -> LoadBudget:
    """The active budget, or a fresh default one for ``source`` (a loader called on its own)."""
    active = _ACTIVE.get()
    if active is not None:
        return active
    file_size = size if size is not None else _size_of(source)
    limit, origin = resolve_limit(None, file_size)
    return LoadBudget(limit, origin, source)


# --------------------------------------------------------------------------------------------------
# Bounded text
# --------------------------------------------------------------------------------------------------


def brief_text(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters (newlines folded, the rest elided with its length)."""
    text = " ".join(str(text).split("\n"))
    if len(text) <= limit:
        return text
    return f"{text[: limit - 30]}... ({len(text)} characters)"


def brief(value: Any, limit: int = 120, *, depth: int = 2, width: int = 6) -> str:
    """A bounded description of a value read from a file, for error messages.

    Containers show at most ``width`` items to a nesting ``depth``; strings and bytes are cut; tensors and
    arrays show their shape; any other object shows only its type. Work is bounded whatever the value:
    no ``repr`` of an unknown object is ever called, and shared or self-referencing structures are cheap.
    """
    return brief_text(_brief(value, depth, width), limit)


def _brief(value: Any, depth: int, width: int) -> str:
    if value is None or isinstance(value, bool | float | complex):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, str):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    if isinstance(value, bytes | bytearray):
        head = bytes(value[:16])
        return f"<{len(value)} bytes {head!r}{'...' if len(value) > 16 else ''}>"
    package = type(value).__module__.split(".")[0]
    if package == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _brief(value.item(), depth, width)  # a numpy scalar
    shape = getattr(value, "shape", None)
    if shape is not None and package in ("torch", "numpy"):
        try:
            dims = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            dims = ()
        return f"<{type(value).__name__} of shape {dims}>"
    if isinstance(value, dict | list | tuple | set | frozenset):
        try:
            n = len(value)
        except Exception:  # a container subclass with a broken __len__
            return f"<{type(value).__name__}>"
        if depth <= 0:
            return f"<{type(value).__name__} of {n} items>"
        if isinstance(value, dict):
            items = []
            for i, (k, v) in enumerate(value.items()):
                if i >= width:
                    break
                items.append(f"{_brief(k, 0, width)}: {_brief(v, depth - 1, width)}")
            more = f", ... ({n} items)" if n > width else ""
            return "{" + ", ".join(items) + more + "}"
        items = []
        for i, v in enumerate(value):
            if i >= width:
                break
            items.append(_brief(v, depth - 1, width))
        more = f", ... ({n} items)" if n > width else ""
        opening, closing = {list: "[]", tuple: "()"}.get(type(value), "{}")
        if isinstance(value, tuple) and n == 1:
            return f"({items[0]},)"
        return opening + ", ".join(items) + more + closing
    return f"<{type(value).__name__}>"
