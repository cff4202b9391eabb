"""What several commands do the same way: open a run, load a generator, check sampling options, read a
latents file; each turns the library's errors into click usage errors that name the option at fault."""

from __future__ import annotations

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


def fmt(v: float | None, spec: str = ".4g") -> str:
    """A number for a table or a message; ``-`` for None."""
    return "-" if v is None else format(v, spec)
