"""Shared pieces of the command line: click parameter types and reusable option decorators.

Parameter types (seed lists ``0-15,20``, inclusive layer ranges ``4-7``, float lists, finite floats,
devices, space names, folders and files to write) wrap the plain parsers of :mod:`sfvq.parsing`; bad
values fail as click usage errors that quote the offending part. Output folders and files are probed for
writing when parsed, before a command does any work. The option decorators (``--network``, ``--device``,
``--outdir``, ``--noise-mode``, ``--quiet``, ``--model``, ``--space``, truncation, ...) give every command
the same spelling, type and help for the same option.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from sfvq.parsing import (
    SPACE_NAMES,
    check_space_name,
    parse_floats,
    parse_layer_choice,
    parse_layer_range,
    parse_seeds,
)

NOISE_MODES = ("const", "random", "none")


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
    """An inclusive layer range ``4-7`` (or one layer ``5``) -> ``(start, stop_exclusive)``; with
    ``allow_auto`` also ``auto`` -> ``"auto"`` (each direction's annotated range, :mod:`sfvq.annotate`)."""

    name = "range"

    def __init__(self, allow_auto: bool = False) -> None:
        self.allow_auto = allow_auto
        if allow_auto:
            self.name = "range|auto"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int] | str:
        if isinstance(value, tuple):
            return value
        try:
            return parse_layer_choice(value) if self.allow_auto else parse_layer_range(value)
        except ValueError as e:
            self.fail(str(e) + (" or auto" if self.allow_auto else ""), param, ctx)


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


class FiniteFloat(click.FloatRange):
    """A float that must be finite (no nan/inf; click's FloatRange lets nan through every bound), within
    optional bounds as :class:`click.FloatRange` takes them, e.g. ``--trunc``, ``--jitter``, ``--lr``."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(v, param, ctx)


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def write_problem(folder: Path) -> str | None:
    """Why files cannot be written into ``folder`` (None when they can): it, or the nearest folder above
    it that exists, is tried for real (missing folders made, a probe file written, both removed again),
    since permissions say nothing of read-only mounts, /proc or a full quota. Several processes may
    probe the same folder at once (the ranks of one distributed job): a folder another one made or
    removed meanwhile starts the probe again instead of failing."""
    folder = Path(os.path.abspath(folder))
    problem: str | None = None
    for _ in range(50):
        problem, raced = _probe(folder)
        if not raced:
            break
        time.sleep(random.uniform(0, 0.005))  # back off, so racing probes fall out of step
    return problem


def _probe(folder: Path) -> tuple[str | None, bool]:
    """One try of :func:`write_problem` -> (the problem, whether it may come from a race with another
    process: a folder that appeared or vanished under it; a new try tells that from a real problem, which
    stays)."""
    missing: list[Path] = []
    here = folder
    while not here.exists() and not here.is_symlink():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    if here.exists() and not here.is_dir():  # may also be a folder that vanished between the two looks
        return f"{here} is a file, not a folder", True
    made: list[Path] = []
    try:
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                if p.is_dir():
                    continue  # another process made it: it is theirs to remove
                return f"{p} is a file, not a folder", True  # or theirs, removed again meanwhile
            except FileNotFoundError as e:  # a folder above removed by another process, or /proc
                return f"cannot create {p}: {_reason(e)}", True
            except OSError as e:
                return f"cannot create {p}: {_reason(e)}", False
            made.append(p)
        try:
            fd, probe = tempfile.mkstemp(prefix=f".sfvq-probe.{os.getpid()}.", suffix=".tmp", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except FileNotFoundError as e:
            return f"cannot write into {folder}: {_reason(e)}", True
        except OSError as e:
            return f"cannot write into {folder}: {_reason(e)}", False
    finally:
        for p in reversed(made):
            with contextlib.suppress(OSError):
                p.rmdir()
    return None, False


class OutDir(click.Path):
    """A folder a command writes into: a file there is refused, and it must be writable (probed with
    :func:`write_problem`, leaving nothing behind). The temporary files killed jobs left in it are
    removed (:func:`sfvq.atomic.clean_stale`). ``staged``: the command publishes a whole run, written
    beside the folder first, so its parent must be writable too and it must not hold the current
    directory. Any other command refuses a folder holding a run (its ``model.safetensors``): its own
    ``options.json``, ``latents.npy`` or images would replace the run's."""

    def __init__(self, staged: bool = False) -> None:
        super().__init__(file_okay=False, dir_okay=True, path_type=Path)
        self.staged = staged

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from sfvq.atomic import clean_stale

        path = Path(super().convert(value, param, ctx))
        problem = write_problem(path)
        if problem is None and self.staged:
            full = Path(os.path.abspath(path))
            with contextlib.suppress(OSError):
                cwd = Path.cwd().resolve()
                if full.exists() and (cwd == full.resolve() or full.resolve() in cwd.parents):
                    problem = (
                        f"{path} holds the current directory, which a new run cannot replace: "
                        "run from outside it"
                    )
            if problem is None:
                problem = write_problem(full.resolve().parent)
                if problem is not None:
                    problem += " (a run is written beside its folder, then renamed into place)"
        if problem is None and not self.staged and (path / "model.safetensors").is_file():
            problem = (
                f"{path} holds a run (model.safetensors): this command's files (options.json, latents, "
                f"images) would replace the run's own; write them into another folder, e.g. {path / 'out'}"
            )
        if problem is not None:
            self.fail(problem, param, ctx)
        clean_stale(path)
        return path


class OutFile(click.Path):
    """A file a command writes (``--out``): not a folder, and its folder must be writable (probed with
    :func:`write_problem`, leaving nothing behind)."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = Path(super().convert(value, param, ctx))
        problem = write_problem(Path(os.path.abspath(path)).parent)
        if problem is not None:
            self.fail(problem, param, ctx)
        return path


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


class SpaceName(click.ParamType):
    """A name of the one space vocabulary (:data:`sfvq.parsing.SPACE_NAMES`: ``w``, ``w+``, ``z``,
    ``features``), of which a command supports ``supported``; a name it does not take fails saying so."""

    name = "space"

    def __init__(self, supported: Sequence[str], command: str) -> None:
        unknown = set(supported) - set(SPACE_NAMES)
        if unknown:
            raise ValueError(f"not space names: {sorted(unknown)}")
        self.supported = tuple(supported)
        self.command = command

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(self.supported) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_space_name(str(value).strip(), self.supported, f"sfvq {self.command}")
        except ValueError as e:
            self.fail(str(e), param, ctx)


SEEDS = SeedList()
LAYER_RANGE = LayerRange()
LAYER_RANGE_OR_AUTO = LayerRange(allow_auto=True)  # --layers auto: the annotated range of each direction
FLOATS = FloatList()
FINITE_FLOAT = FiniteFloat()
DEVICE = Device()

Decorator = Callable[[Any], Any]


# ---------------------------------------------------------------------------------------------- options
def options(*decorators: Decorator) -> Decorator:
    """Apply click options in the order given (the order they appear in --help)."""

    def decorate(f: Any) -> Any:
        for option in reversed(decorators):
            f = option(f)
        return f

    return decorate


def _default(value: Any) -> dict[str, Any]:
    """click keywords for an option's default: none at all for None (click counts an explicit
    ``default=None`` as a value, and a required option given one is never reported missing)."""
    return {} if value is None else {"default": value, "show_default": True}


AUTO_DEVICE = "auto"  # device_option's default: cuda where available, else cpu (see default_device)


def default_device() -> str:
    """``cuda`` where torch sees a CUDA device, else ``cpu`` (torch is imported only when this is called,
    so that loading the command line stays light)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_option(default: str | None = AUTO_DEVICE, help: str = "Torch device.") -> Decorator:
    """``--device``: a torch device that exists here (cpu, cuda, cuda:1, mps). The default,
    :data:`AUTO_DEVICE`, is :func:`default_device`, looked up when the command runs; None gives no default
    (the command decides)."""
    if default == AUTO_DEVICE:
        return click.option(
            "--device",
            type=DEVICE,
            help=help,
            default=default_device,
            show_default="cuda if available, else cpu",
        )
    return click.option("--device", type=DEVICE, help=help, **_default(default))


def network_option(required: bool = False, help: str | None = None, default: str | None = None) -> Decorator:
    """``--network NAME|PATH``: a built-in generator name or a generator file / directory."""
    if help is None:
        help = (
            "Built-in name (builtin:faces-dcgan), StyleGAN .pkl, rosinality .pt or BigGAN directory."
            if required
            else "Generator (default: the one recorded in the model)."
        )
    return click.option("--network", required=required, metavar="NAME|PATH", help=help, **_default(default))


def outdir_option(
    help: str | None = None, *, required: bool = True, default: str | Path | None = None, staged: bool = False
) -> Decorator:
    """``--outdir DIRECTORY`` where a command writes: a file there and a folder that cannot be written are
    refused (:class:`OutDir`; ``staged`` for the commands that publish a whole run)."""
    return click.option(
        "--outdir",
        type=OutDir(staged),
        required=required and default is None,
        help=help,
        **_default(default),
    )


def quiet_option(help: str = "No progress bar.") -> Decorator:
    """``--quiet``: no progress bars."""
    return click.option("--quiet", is_flag=True, help=help)


def noise_mode_option(default: str | None = "const", help: str | None = None) -> Decorator:
    """``--noise-mode const|random|none``: the synthesis noise of StyleGAN-like generators."""
    if help is None and default is None:
        help = "Default: the space's (const)."
    return click.option(
        "--noise-mode",
        type=click.Choice(NOISE_MODES),
        help=help,
        **_default(default),
    )


def model_option(
    required: bool = True, help: str = "An sfvq model.safetensors, or the run directory holding one."
) -> Decorator:
    """``--model``: a model file or the run directory holding ``model.safetensors``."""
    return click.option(
        "--model", "model_path", type=click.Path(path_type=Path), required=required, help=help
    )


def space_option(
    supported: Sequence[str],
    command: str,
    *,
    dest: str = "space",
    default: str | None = None,
    help: str | None = None,
) -> Decorator:
    """``--space``: one of the shared space names that ``command`` supports (see :class:`SpaceName`)."""
    return click.option(
        "--space",
        dest,
        type=SpaceName(supported, command),
        help=help,
        **_default(default),
    )


def model_space_option(command: str) -> Decorator:
    """``--space w|z|features|s[:GROUP]`` of a run's model, for a model without a ``space.json`` beside it
    (e.g. fitted by ``sfvq fit`` on latents from ``sfvq sample``)."""
    return space_option(
        ("w", "z", "features", "s"),
        command,
        dest="space_kind",
        help="Space of the model's latents; needed only when no space.json lies beside the model.",
    )


def batch_size_option(default: int, help: str | None = None) -> Decorator:
    """``--batch-size N`` (N >= 1)."""
    return click.option(
        "--batch-size", type=click.IntRange(min=1), default=default, show_default=True, help=help
    )


def truncation_options(psi_default: float | None = 1.0) -> Decorator:
    """``--trunc`` (psi), ``--trunc-cutoff`` and ``--class`` (conditional generators)."""
    return options(
        click.option(
            "--trunc",
            "truncation_psi",
            type=FINITE_FLOAT,
            help="Truncation psi.",
            **_default(psi_default),
        ),
        click.option(
            "--trunc-cutoff",
            type=click.IntRange(min=0),
            default=None,
            help="Truncate only the first N style layers.",
        ),
        click.option(
            "--class",
            "class_idx",
            type=click.IntRange(min=0),
            default=None,
            help="Class (conditional models).",
        ),
    )


__all__ = [
    "AUTO_DEVICE",
    "DEVICE",
    "FINITE_FLOAT",
    "FLOATS",
    "LAYER_RANGE",
    "LAYER_RANGE_OR_AUTO",
    "NOISE_MODES",
    "SEEDS",
    "Device",
    "FiniteFloat",
    "FloatList",
    "LayerRange",
    "OutDir",
    "OutFile",
    "SeedList",
    "SpaceName",
    "batch_size_option",
    "default_device",
    "device_option",
    "model_option",
    "model_space_option",
    "network_option",
    "noise_mode_option",
    "options",
    "outdir_option",
    "quiet_option",
    "space_option",
    "truncation_options",
    "write_problem",
]
