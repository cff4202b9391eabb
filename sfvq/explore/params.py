"""Requests the explorer accepts: its limits, :class:`ApiError` (a refused request, sent as a 4xx JSON
``{"error", "param"}``) and the parsers that check every parameter (type, bounds, a strict name pattern).

Query values arrive as text, JSON bodies as JSON values: each parser takes both (``json=True`` demands the
JSON type, so ``"3"`` is not accepted where 3 is expected). The seed and layer-range syntax is the command
line's (:mod:`sfvq.parsing`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from sfvq.parsing import parse_layer_range
from sfvq.parsing import parse_seeds as _parse_seeds

MAX_SEEDS = 8  # seeds in one edit grid
SIGMA_MAX = 20.0  # |sigma| of an edit (in data std along the direction, or raw units without latents)
AUGMENT_MAX = 256  # images in one augmentation batch
JITTER_MAX = 2.0
SEED_MAX = 2**32 - 1
BODY_MAX = 4096  # bytes of a POST body

# Names that become file or folder names (augmentation batches) or keys in the directions file: a letter
# or digit, then letters, digits, '_' or '-' (no dots, no spaces, no separators), 64 characters at most.
# Anchored with \A and \Z: "$" would also match before a final newline ("name\n" would pass).
# NAME_PATTERN is the same rule for the page's input fields (a browser's "pattern" is anchored whole).
_NAME_BODY = r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}"
NAME_RE = re.compile(rf"\A{_NAME_BODY}\Z")
NAME_PATTERN = f"^{_NAME_BODY}$"
_INT_RE = re.compile(r"\A[+-]?\d{1,12}\Z")
_FLOAT_RE = re.compile(r"\A[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?\Z")


class ApiError(Exception):
    """A request the API refuses: HTTP ``status``, a message for people and the parameter at fault."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "param": self.param}


def parse_int(text: Any, param: str, lo: int, hi: int, *, json: bool = False) -> int:
    """A decimal integer in [lo, hi], else a 400 naming ``param``: text from a query, or (``json``) a
    JSON integer (not a bool, not a string)."""
    if isinstance(text, bool) or not isinstance(text, (int,) if json else (str, int)):
        raise ApiError(400, f"{param} must be an integer, got {type(text).__name__}", param)
    if isinstance(text, str):
        if not _INT_RE.match(text):
            raise ApiError(400, f"{param} must be an integer, got {text[:40]!r}", param)
        text = int(text)
    if not lo <= text <= hi:
        raise ApiError(400, f"{param} must lie in [{lo}, {hi}], got {text}", param)
    return int(text)


def parse_float(text: Any, param: str, lo: float, hi: float, *, json: bool = False) -> float:
    """A finite number in [lo, hi], else a 400 naming ``param``: text from a query, or (``json``) a JSON
    number (not a bool, not a string)."""
    if isinstance(text, bool) or not isinstance(text, (int, float) if json else (str, int, float)):
        raise ApiError(400, f"{param} must be a number, got {type(text).__name__}", param)
    if isinstance(text, str):
        if not _FLOAT_RE.match(text.strip()):
            raise ApiError(400, f"{param} must be a decimal number, got {text[:40]!r}", param)
        text = float(text)
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(400, f"{param} must be a finite number, got {value}", param)
    if not lo <= value <= hi:
        raise ApiError(400, f"{param} must lie in [{lo:g}, {hi:g}], got {value:g}", param)
    return value


def parse_name(text: Any, param: str = "name") -> str:
    """A name matching :data:`NAME_RE` (it may become a folder name), else a 400."""
    if not isinstance(text, str):
        raise ApiError(400, f"{param} must be a string, got {type(text).__name__}", param)
    if not NAME_RE.match(text):
        raise ApiError(
            400,
            f"{param} {text[:70]!r} is not allowed: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit",
            param,
        )
    return text


def parse_seeds(text: Any, param: str = "seeds") -> list[int]:
    """``"0-3,7"`` -> seeds, at most :data:`MAX_SEEDS`, else a 400."""
    if not isinstance(text, str) or len(text) > 200:
        raise ApiError(400, f"{param} must be a short text such as 0-3,7", param)
    try:
        return _parse_seeds(text, max_count=MAX_SEEDS)
    except ValueError as e:
        raise ApiError(400, f"{param}: {e}", param) from e


def parse_layers(text: Any, num_ws: int, param: str = "layers") -> tuple[int, int] | None:
    """Inclusive ``"a-b"`` (or ``"a"``) -> (a, b + 1) within 0..num_ws-1; None or "" -> all layers."""
    if text is None or text == "":
        return None
    if not isinstance(text, str) or len(text) > 40:
        raise ApiError(400, f"{param} must be an inclusive range text such as 4-7", param)
    try:
        start, stop = parse_layer_range(text)
    except ValueError as e:
        raise ApiError(400, f"{param}: {e}", param) from e
    if num_ws <= 1:
        raise ApiError(400, f"{param}: this space has no style layers; layer ranges apply to W+", param)
    if stop > num_ws:
        raise ApiError(400, f"{param} {text} is outside this space's layers 0-{num_ws - 1}", param)
    return start, stop


__all__ = [
    "AUGMENT_MAX",
    "BODY_MAX",
    "JITTER_MAX",
    "MAX_SEEDS",
    "NAME_PATTERN",
    "NAME_RE",
    "SEED_MAX",
    "SIGMA_MAX",
    "ApiError",
    "parse_float",
    "parse_int",
    "parse_layers",
    "parse_name",
    "parse_seeds",
]
