"""What several commands do the same way: open a run, load a generator, check sampling options, read a
latents file; each turns the library's errors into click usage errors that name the option at fault."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

# How to give an input that a run needed but did not have (RunError.missing), by the input's name.
_MISSING_HINT = {
    "network": "; pass --network NAME|PATH",
    "space": ": pass --space w|z (the space its latents are in)",
}


def run_error(e: Exception, path_hint: str = "'--model'") -> click.ClickException:
    """A :class:`~sfvq.runs.RunError` (or a generator error) as the click error naming its option;
    ``path_hint`` names the option that gave the run (``'--model'``, ``'--run'``)."""
    from sfvq.generators.base import GeneratorError
    from sfvq.runs import RunError

    if isinstance(e, GeneratorError):
        return click.BadParameter(str(e), param_hint="'--network'")
    if not isinstance(e, RunError):
        return click.UsageError(str(e))
    if e.missing:
        return click.UsageError(f"{e}{_MISSING_HINT.get(str(e.param), '')}")
    if e.param == "path":
        return click.BadParameter(str(e), param_hint=path_hint)
    if e.param == "space":
        return click.BadParameter(str(e), param_hint="'--space'")
    return click.UsageError(str(e))


def open_run(
    path: Path,
    *,
    hint: str = "'--model'",
    network: str | None = None,
    device: str = "cpu",
    space: str | None = None,
) -> Any:
    """:meth:`sfvq.runs.Run.open`, with its errors as usage errors naming ``hint`` (the run's option)."""
    from sfvq.runs import Run, RunError

    try:
        return Run.open(path, network=network, device=device, space=space)
    except RunError as e:
        raise run_error(e, hint) from e


def run_space(run: Any, truncation_psi: float | None = None, noise_mode: str | None = None) -> Any:
    """The run's latent space (loading its generator), with settings overridden where given; errors as
    usage errors (``--network``, ``--space``, or the combination)."""
    from sfvq.generators.base import GeneratorError
    from sfvq.runs import RunError

    try:
        if truncation_psi is None and noise_mode is None:
            return run.space
        return run.load_space(truncation_psi, noise_mode)
    except (RunError, GeneratorError) as e:
        raise run_error(e) from e


def run_generator(run: Any) -> Any:
    """The run's generator (loaded on first use), errors as usage errors naming ``--network``."""
    from sfvq.generators.base import GeneratorError
    from sfvq.runs import RunError

    try:
        return run.generator
    except (RunError, GeneratorError) as e:
        raise run_error(e) from e


def run_network(run: Any) -> str:
    """The run's generator name (given or recorded), else a usage error saying to pass --network."""
    from sfvq.runs import RunError

    try:
        return run.network
    except RunError as e:
        raise run_error(e) from e


def load_network(network: str, device: str) -> Any:
    """Load ``--network`` or fail as a usage error naming it."""
    from sfvq.generators.base import GeneratorError
    from sfvq.generators.registry import load_generator

    try:
        return load_generator(network, device=device)
    except GeneratorError as e:
        raise click.BadParameter(str(e), param_hint="'--network'") from e


def check_sampling(
    G: Any, truncation_psi: float, truncation_cutoff: int | None, class_idx: int | None
) -> None:
    """Check truncation and class against the loaded generator; usage errors name the option.

    Then one trial mapping, so that whatever else the generator refuses (e.g. BigGAN's psi outside
    (0, 1]) is a usage error before anything is written.
    """
    import torch

    from sfvq.latents import check_truncation, class_vectors, z_for_seeds

    try:
        check_truncation(G, truncation_psi, truncation_cutoff)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--trunc-cutoff'") from e
    try:
        class_vectors(G, class_idx, 1)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--class'") from e
    try:
        z = torch.from_numpy(z_for_seeds(G, [0], truncation_psi)).to(G.device)  # (1, z_dim)
        G.mapping(z, class_vectors(G, class_idx, 1), truncation_psi, truncation_cutoff)
    except ValueError as e:
        raise click.UsageError(f"{G.name} refuses these options: {e}") from e


def read_latents_arg(path: Path, hint: str = "'--latents'") -> Any:
    """:func:`sfvq.fitting.read_latents` with its errors as a bad ``hint`` option."""
    from sfvq.fitting import read_latents

    try:
        return read_latents(path)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=hint) from e


@contextlib.contextmanager
def publishing(outdir: Path, hint: str = "'--outdir'") -> Iterator[Any]:
    """:func:`sfvq.runs.staged_run` for a command: yields the :class:`~sfvq.runs.Staging` to write the run
    into; it replaces ``outdir`` whole when the block succeeds. A folder that cannot be staged is a bad
    ``hint`` option; a write that fails (a full disk, say) a one-line error saying ``outdir`` is unchanged.
    """
    from sfvq.runs import staged_run

    cm = staged_run(outdir)
    try:
        staging = cm.__enter__()
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise click.BadParameter(f"cannot write a run into {outdir}: {reason}", param_hint=hint) from e
    try:
        yield staging
    except OSError as e:
        cm.__exit__(type(e), e, e.__traceback__)
        raise click.ClickException(f"writing the run failed ({e}); {outdir} is unchanged") from e
    except BaseException as e:
        cm.__exit__(type(e), e, e.__traceback__)
        raise
    try:
        cm.__exit__(None, None, None)
    except OSError as e:
        raise click.ClickException(f"publishing the run into {outdir} failed: {e}") from e


def carry_latents(latents: Path, outdir: Path, staging: Any) -> Path | None:
    """When the data file a run is fitted to is one of the run files of ``outdir`` (its ``latents.npy``),
    put it into the new run (a hard link, else a copy) with its sidecar stamped with the new run id, so
    that publishing the run does not drop the data it was fitted to. Returns the new path, or None."""
    import shutil

    from sfvq.io import sidecar_path, write_json
    from sfvq.runs import RUN_ID_KEY, run_entry

    try:
        rel = Path(os.path.realpath(latents)).relative_to(Path(os.path.realpath(outdir)))
    except ValueError:
        return None  # not inside outdir
    if run_entry(rel.as_posix()) != "drop":
        return None  # a file the new run keeps anyway
    dest = staging.path / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(latents, dest)
    except OSError:
        shutil.copy2(latents, dest)
    side = sidecar_path(latents)
    if side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict):
            write_json(sidecar_path(dest), {**meta, RUN_ID_KEY: staging.run_id})
    return dest


def check_steps(steps: list[float], raw: list[float], hint: str = "'--sigma'") -> None:
    """Edit steps (``raw``: in the space's units) that a latent can take: finite in float32, the
    precision latents are rendered at; else a bad ``hint`` option naming the step."""
    import numpy as np

    limit = float(np.finfo(np.float32).max)
    for s, r in zip(steps, raw, strict=True):
        if not abs(r) < limit:
            raise click.BadParameter(
                f"a step of {s:g} ({r:.3g} in the space's units) overflows float32 latents", param_hint=hint
            )


def fmt(v: float | None, spec: str = ".4g") -> str:
    """A number for a table or a message; ``-`` for None."""
    return "-" if v is None else format(v, spec)
