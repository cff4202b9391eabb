"""Text the user types, parsed: seed lists (``0-15,20``), inclusive layer ranges (``4-7``), float lists,
and the one vocabulary of latent-space names every command shares.

Plain functions that raise ``ValueError`` naming the offending part; the command line (its click
parameter types) and the explorer's HTTP API wrap them in their own error types. Nothing
here imports torch, so both stay light.

Space names (:data:`SPACE_NAMES`) mean the same thing wherever they are accepted:

* ``w``: StyleGAN's W, one style vector per latent (``mapping(z)[:, 0]``), the paper's space;
* ``w+``: all style layers of a latent, flattened ``(num_ws * w_dim)``;
* ``z``: the generator's input noise;
* ``features``: a layer's activations, reduced by PCA (for generators without a mapping network);
* ``s``: StyleSpace, the style codes of every style layer (each layer's affine of its w) concatenated;
  ``s:GROUP`` keeps only the layers of a group (:func:`parse_style_group`, :func:`style_group_range`):
  ``s:coarse``, ``s:middle``, ``s:fine`` or an inclusive W+ range such as ``s:4-7``.

Each command accepts the subset it supports (``sfvq sample``: ``z``, ``w``, ``w+``: latents to a file;
``sfvq run``: ``w``, ``z``, ``features``, ``s``: spaces a curve can be fitted in) and says so when given a
name of the vocabulary it does not support (:func:`check_space_name`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

MAX_SEED = 2**32 - 1  # numpy.random.RandomState accepts seeds in [0, 2**32 - 1]

SPACE_NAMES: dict[str, str] = {
    "w": "StyleGAN's W: one style vector per latent",
    "w+": "all style layers of a latent, flattened (num_ws * w_dim)",
    "z": "the generator's input noise",
    "features": "a layer's activations reduced by PCA",
    "s": "StyleSpace: every style layer's code (its affine of w), concatenated; s:GROUP for a group",
}
STYLE_GROUPS = ("coarse", "middle", "fine")
"""Named groups of ``s:GROUP``; any other group is an inclusive W+ layer range (``s:4-7``)."""

_RANGE_RE = re.compile(r"\A\s*(\d+)\s*(?:-\s*(\d+)\s*)?\Z")


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


AUTO_LAYERS = "auto"  # --layers auto: each segment's annotated range (sfvq.annotate)


def parse_layer_choice(text: str) -> tuple[int, int] | str:
    """``"auto"`` -> ``"auto"`` (the annotated range of each direction), else :func:`parse_layer_range`."""
    if str(text).strip().lower() == AUTO_LAYERS:
        return AUTO_LAYERS
    return parse_layer_range(text)


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


def parse_style_group(text: str) -> str:
    """The group of ``s:GROUP``, normalised: a name of :data:`STYLE_GROUPS` or an inclusive W+ layer range
    (``"4-7"``, ``"5"``; written back as :func:`format_layer_range` writes it). ValueError otherwise."""
    group = str(text).strip().lower()
    if group in STYLE_GROUPS:
        return group
    try:
        return format_layer_range(*parse_layer_range(group))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a style group: use {', '.join(STYLE_GROUPS)} or a W+ layer range such as 4-7"
        ) from None


def split_space_name(name: str) -> tuple[str, str | None]:
    """``"s:coarse"`` -> ``("s", "coarse")``, ``"w"`` -> ``("w", None)``: a space name and its group
    (:func:`parse_style_group`; only StyleSpace ``s`` takes one). ValueError for a bad group."""
    base, sep, group = str(name).strip().partition(":")
    if not sep:
        return base, None
    if base != "s":
        raise ValueError(f"only StyleSpace takes a layer group (s:GROUP), got {name!r}")
    return base, parse_style_group(group)


def style_group_range(group: str | None, num_ws: int) -> tuple[int, int]:
    """The W+ layers ``[start, stop)`` of a style group for a generator of ``num_ws`` W+ layers.

    None: all. ``coarse``, ``middle``, ``fine``: W+ layers 0-3, 4-7 and 8 up, the StyleGAN paper's split
    (for a StyleGAN2: the 4-8 px, 16-32 px and 64 px-and-up blocks); a generator of at most 8 W+ layers
    (a StyleGAN2 of 32 px or less) has no layer 8, so its layers are split into three contiguous parts as
    evenly as possible instead (coarse and middle take the remainder first). A range must lie inside
    ``0..num_ws-1``.
    """
    if num_ws < 1:
        raise ValueError(f"a generator without style layers has no style groups (num_ws {num_ws})")
    if group is None:
        return 0, num_ws
    group = parse_style_group(group)
    if group in STYLE_GROUPS:
        if num_ws > 8:
            bounds = [0, 4, 8, num_ws]
        else:
            if num_ws < 3:
                raise ValueError(f"{num_ws} W+ layers are too few to split into coarse, middle and fine")
            size = [num_ws // 3 + (i < num_ws % 3) for i in range(3)]
            bounds = [0, size[0], size[0] + size[1], num_ws]
        i = STYLE_GROUPS.index(group)
        return bounds[i], bounds[i + 1]
    start, stop = parse_layer_range(group)
    if stop > num_ws:
        raise ValueError(f"style layer range {group} is outside the W+ layers 0-{num_ws - 1}")
    return start, stop


def check_space_name(name: str, supported: Sequence[str], where: str) -> str:
    """``name`` when ``where`` (e.g. ``"sfvq sample"``) supports it; else a ValueError that says whether
    the name is unknown or a space of the shared vocabulary that ``where`` does not take. ``s:GROUP`` is
    accepted where ``s`` is, and comes back normalised (``s:Coarse`` -> ``s:coarse``)."""
    if name in supported:
        return name
    base = name.partition(":")[0].strip()
    if ":" in name and base == "s" and "s" in supported:
        return "s:" + parse_style_group(name.partition(":")[2])
    if ":" in name and base in supported:
        raise ValueError(f"only StyleSpace takes a layer group (s:GROUP), got {name!r}")
    takes = ", ".join(supported)
    if base in SPACE_NAMES:
        raise ValueError(f"{where} does not support space {name!r} ({SPACE_NAMES[base]}); it takes {takes}")
    known = ", ".join(SPACE_NAMES)
    raise ValueError(f"{name!r} is not a space name (spaces: {known}); {where} takes {takes}")


__all__ = [
    "MAX_SEED",
    "SPACE_NAMES",
    "STYLE_GROUPS",
    "check_space_name",
    "AUTO_LAYERS",
    "format_layer_range",
    "parse_floats",
    "parse_layer_choice",
    "parse_layer_range",
    "parse_seeds",
    "parse_style_group",
    "split_space_name",
    "style_group_range",
]
