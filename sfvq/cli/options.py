"""Shared click parameter types: seed lists (``0-15,20``), inclusive layer ranges (``4-7``), float lists.

Bad values fail as click usage errors that quote the offending part.
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

MAX_SEED = 2**32 - 1  # numpy.random.RandomState accepts seeds in [0, 2**32 - 1]

_RANGE_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_seeds(text: str, max_count: int | None = None) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``: comma-separated seeds and inclusive ranges, no repeats.

    Raises ValueError naming the bad part (empty, not an integer, reversed range, out of
    [0, 2**32 - 1], repeated seed, more than ``max_count`` seeds).
    """
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ValueError("no seeds given (expected e.g. 0-15,20)")
    spans: list[tuple[int, int]] = []
    total = 0
    for part in parts:
        m = _RANGE_RE.match(part)
        if not m:
            raise ValueError(f"{part!r} is not a seed or a range a-b of non-negative integers (e.g. 0-15,20)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"range {part!r} is reversed (write {hi}-{lo})")
        if hi > MAX_SEED:
            raise ValueError(f"seed {hi} is out of range [0, {MAX_SEED}]")
        total += hi - lo + 1
        if max_count is not None and total > max_count:
            raise ValueError(f"{text!r} gives more than {max_count} seeds")
        spans.append((lo, hi))
    spans_sorted = sorted(spans)
    for prev, nxt in zip(spans_sorted, spans_sorted[1:], strict=False):
        if nxt[0] <= prev[1]:
            raise ValueError(f"seed {nxt[0]} is listed more than once in {text!r}")
    return [s for lo, hi in spans for s in range(lo, hi + 1)]


def parse_layer_range(text: str) -> tuple[int, int]:
    """``"4-7"`` -> ``(4, 8)`` (inclusive when typed, stop exclusive in code); ``"5"`` -> ``(5, 6)``."""
    m = _RANGE_RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a layer index or an inclusive range a-b (e.g. 4-7)")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
        raise ValueError(f"layer range {text!r} is reversed (write {hi}-{lo})")
    return lo, hi + 1


def format_layer_range(start: int, stop: int) -> str:
    """(start, stop_exclusive) -> the inclusive form users type: ``(4, 8)`` -> ``"4-7"``."""
    if stop <= start:
        raise ValueError(f"empty layer range [{start}, {stop})")
    return str(start) if stop == start + 1 else f"{start}-{stop - 1}"


def parse_floats(text: str) -> list[float]:
    """``"-8,-4,0,4,8"`` -> ``[-8.0, -4.0, 0.0, 4.0, 8.0]``; finite numbers only."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ValueError("no numbers given (expected e.g. -8,-4,0,4,8)")
    values = []
    for part in parts:
        try:
            v = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number (expected e.g. -8,-4,0,4,8)") from None
        if not math.isfinite(v):
            raise ValueError(f"{part!r} is not a finite number")
        values.append(v)
    return values


class SeedList(click.ParamType):
    """Seeds like NVIDIA's ``--seeds``: ``0-15,20`` -> list[int]."""

    name = "seeds"

    def __init__(self, max_count: int | None = 1_000_000) -> None:
        self.max_count = max_count

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            return parse_seeds(value, self.max_count)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class LayerRange(click.ParamType):
    """An inclusive layer range ``4-7`` (or one layer ``5``) -> ``(start, stop_exclusive)``."""

    name = "range"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_layer_range(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class FloatList(click.ParamType):
    """Comma-separated finite floats: ``-8,-4,0,4,8`` -> list[float]."""

    name = "floats"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[float]:
        if isinstance(value, list):
            return value
        try:
            return parse_floats(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class FiniteFloat(click.ParamType):
    """A float that must be finite (no nan/inf), e.g. ``--trunc``."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


class Device(click.ParamType):
    """A torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``) that exists on this machine."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        import torch

        try:
            dev = torch.device(str(value))
        except (RuntimeError, ValueError):
            self.fail(f"{value!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)", param, ctx)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                self.fail(f"{value!r}: CUDA is not available on this machine", param, ctx)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                self.fail(f"{value!r}: only {torch.cuda.device_count()} CUDA device(s) here", param, ctx)
        elif dev.type == "mps":
            if not torch.backends.mps.is_available():
                self.fail(f"{value!r}: MPS is not available on this machine", param, ctx)
        elif dev.type != "cpu":
            self.fail(f"{value!r}: unsupported device type {dev.type!r} (use cpu, cuda or mps)", param, ctx)
        return str(dev)


SEEDS = SeedList()
LAYER_RANGE = LayerRange()
FLOATS = FloatList()
FINITE_FLOAT = FiniteFloat()
DEVICE = Device()
