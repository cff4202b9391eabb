"""How many images to render at once: a per-image memory estimate held against a memory budget.

The one place that sizes generator calls (:func:`render_batch_size`, used by :mod:`sfvq.spaces`, the main
job and the render commands), and that refuses up front an image that cannot fit (:class:`RenderMemoryError`).

Rendering memory grows linearly with the batch: at 1024 px a StyleGAN2 image passes through activations of
32 channels x 1024 x 1024 (128 MiB in float32), and a few of those are alive at once. The batch is
therefore chosen from the generator's widest activation and a budget: by default half the memory the
machine has available (``MemAvailable`` of /proc/meminfo, or the free memory of the CUDA device), and on
the CPU at most :data:`CPU_BUDGET_CAP`, so that a render's peak stays predictable on a shared machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CPU_BUDGET_CAP",
    "LIVE_ACTIVATIONS",
    "REFUSE_SHARE",
    "RenderMemoryError",
    "auto_batch_size",
    "available_memory",
    "default_budget",
    "image_bytes",
    "render_batch_size",
    "widest_activation",
]

CPU_BUDGET_CAP = 2 * 2**30
"""Largest default rendering budget on the CPU (bytes), whatever the machine has free."""

BUDGET_SHARE = 0.5
"""Share of the available memory that the default budget takes."""

LIVE_ACTIVATIONS = 4
"""Activations of the widest size counted per image: a batched layer holds its input, the style-scaled
input and its output (the FIR and the bias/activation work in place or row by row), and the allocator's
slack adds some; ``benchmarks/fullsize.py`` measured 3.6 widest activations an image at 512 and 1024 px."""

_MEMINFO = Path("/proc/meminfo")
_CGROUP_MAX = Path("/sys/fs/cgroup/memory.max")
_CGROUP_CURRENT = Path("/sys/fs/cgroup/memory.current")

REFUSE_SHARE = 0.9
"""One image predicted to need more than this share of the available memory is refused up front."""


class RenderMemoryError(MemoryError):
    """One image would not fit in the memory available: said before rendering, not by the kernel's OOM
    killer half-way through a run."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes that can be allocated now on ``device`` (None: the CPU), or None where nothing can be read.

    CUDA: the device's free memory plus what torch's allocator holds cached but unused (it is reused
    before new memory is asked for). CPU: the smaller of ``MemAvailable`` (/proc/meminfo) and the room
    left under a cgroup (container) limit; without /proc, the free physical pages.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free) + max(0, int(cached))
    found: list[int] = []
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = _CGROUP_MAX.read_text().strip()
        if limit != "max":
            found.append(max(0, int(limit) - int(_CGROUP_CURRENT.read_text().strip())))
    except (OSError, ValueError):
        pass
    if found:
        return min(found)
    try:  # not Linux (or no /proc): free physical pages
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def default_budget(device: torch.device | str | None = None) -> int:
    """The default rendering budget (bytes): half the available memory, at most CPU_BUDGET_CAP on the CPU."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    available = available_memory(dev)
    budget = int((CPU_BUDGET_CAP if available is None else available) * BUDGET_SHARE)
    return min(budget, CPU_BUDGET_CAP) if dev.type != "cuda" else budget


def _modules(G: Any) -> Iterator[nn.Module]:
    """The torch modules behind a generator: G itself, or the modules among its attributes."""
    if isinstance(G, nn.Module):
        yield G
        return
    for value in getattr(G, "__dict__", {}).values():
        if isinstance(value, nn.Module):
            yield value


def _stylegan2_rule(resolution: int) -> int:
    """Widest activation under StyleGAN2's channel rule min(32768 / r, 512) over r = 4 .. resolution."""
    best, r = 0, 4
    while r <= max(4, resolution):
        best = max(best, min(32768 // r, 512) * r * r)
        r *= 2
    return best


def widest_activation(G: Any) -> int:
    """Elements (channels x height x width) of the largest activation one image passes through.

    Read from the network where it says: StyleGAN2 layers (``resolution`` and a conv ``weight``), StyleGAN3
    layers (``spec`` with sizes and channels, including the conv's grown output), rosinality's
    ``config.channels``. Otherwise StyleGAN2's channel rule at ``G.img_resolution`` is assumed.
    """
    best = 0
    for module in _modules(G):
        for m in module.modules():
            spec = getattr(m, "spec", None)
            if spec is not None and hasattr(spec, "out_size") and hasattr(spec, "in_channels"):
                grown = [s + spec.conv_kernel - 1 for s in spec.in_size]
                best = max(
                    best,
                    spec.in_channels * math.prod(spec.in_size),
                    spec.out_channels * math.prod(grown),
                    spec.out_channels * math.prod(spec.out_size),
                )
                continue
            res, weight = getattr(m, "resolution", None), getattr(m, "weight", None)
            if isinstance(res, int) and isinstance(weight, torch.Tensor) and weight.ndim == 4:
                up = int(getattr(m, "up", 1) or 1)  # an up-sampling layer reads res/up pixels
                best = max(best, weight.shape[0] * res * res, weight.shape[1] * (res // up) ** 2)
    channels = getattr(getattr(G, "config", None), "channels", None)
    if isinstance(channels, Mapping):
        best = max([best] + [int(c) * int(r) * int(r) for r, c in channels.items()])
    if best == 0:
        best = _stylegan2_rule(int(getattr(G, "img_resolution", 0) or 0))
    return best


def image_bytes(G: Any) -> int:
    """Estimated peak memory (bytes) of rendering one image with G in float32, the output included."""
    res = int(getattr(G, "img_resolution", 0) or 0)
    out = int(getattr(G, "img_channels", 3) or 3) * res * res
    return 4 * (LIVE_ACTIVATIONS * widest_activation(G) + out)


def auto_batch_size(G: Any, budget_bytes: int | None = None, limit: int | None = None) -> int:
    """Images to render at once with G so that their activations fit ``budget_bytes``.

    ``budget_bytes`` defaults to :func:`default_budget` on G's device; ``limit`` caps the result. At least 1.
    """
    if budget_bytes is None:
        budget_bytes = default_budget(getattr(G, "device", None))
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 0:
        raise ValueError(f"budget_bytes must be a non-negative int, got {budget_bytes!r}")
    n = max(1, budget_bytes // max(1, image_bytes(G)))
    return n if limit is None else max(1, min(n, int(limit)))


def render_batch_size(
    G: Any, requested: int | None = None, budget_bytes: int | None = None, *, check: bool = False
) -> int:
    """The batch to render with: ``requested`` (None: no preference) lowered to what the budget allows.

    The one place sfvq sizes its generator calls (:func:`auto_batch_size` within ``budget_bytes``, None:
    :func:`default_budget` on G's device). With ``check``, first make sure one image fits at all: a
    :class:`RenderMemoryError` when :func:`image_bytes` is over an explicit ``budget_bytes``, or (without
    one) over :data:`REFUSE_SHARE` of the memory available now on G's device (not refused where that
    cannot be read). Whatever the resolution asked for, the estimate is the full-size image's, which a
    preview never exceeds.
    """
    if requested is not None and (
        isinstance(requested, bool) or not isinstance(requested, int) or requested < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {requested!r}")
    if check:
        per_image = image_bytes(G)
        side = getattr(G, "img_resolution", "?")
        name = getattr(G, "name", type(G).__name__)
        what = f"rendering one image of {name} ({side} px, a preview included) needs about {_gib(per_image)}"
        if budget_bytes is not None and per_image > budget_bytes:
            raise RenderMemoryError(f"{what}, over the {_gib(budget_bytes)} allowed")
        available = available_memory(getattr(G, "device", None))
        if budget_bytes is None and available is not None and per_image > REFUSE_SHARE * available:
            raise RenderMemoryError(
                f"{what}, but only {_gib(available)} of memory is available: free memory or use a machine "
                "with more"
            )
    return auto_batch_size(G, budget_bytes, limit=requested)
