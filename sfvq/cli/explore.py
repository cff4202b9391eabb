"""``sfvq explore --run DIR``: serve the interactive page of a run on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from sfvq.cli.common import run_error
from sfvq.cli.options import device_option, network_option

LOOPBACK = "127.0.0.1"


@click.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, dir_okay=True, path_type=Path),
    required=True,
    help="Run directory: model.safetensors and space.json (as `sfvq run` writes).",
)
@click.option(
    "--host",
    default=None,
    metavar="ADDRESS",
    help=f"Address to listen on (default {LOOPBACK}: this machine only). The page has no login.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@network_option()
@device_option()
def explore(run_dir: Path, host: str | None, port: int, network: str | None, device: str) -> None:
    """Serve a page to explore the curve of a run: a slider over the curve index rendering live, the
    panoptic map of each bitrate, edits along a selected segment, saving named directions into the run and
    writing augmentation batches into RUN/augment/NAME/.

    Binds 127.0.0.1 unless --host is given. Stop with Ctrl+C.
    """
    from sfvq.explore.app import Explorer, bind, create_app, serve, url_of
    from sfvq.generators.base import GeneratorError
    from sfvq.runs import RunError

    try:
        explorer = Explorer.open(run_dir, network=network, device=device)
    except (RunError, GeneratorError) as e:
        if isinstance(e, RunError) and e.param is None:
            raise click.UsageError(f"cannot explore {run_dir}: {e}") from e
        raise run_error(e, "'--run'") from e
    explicit = host is not None
    host = host if explicit else LOOPBACK
    try:
        sock = bind(host, port)
    except OSError as e:
        raise click.UsageError(f"cannot listen on {host}:{port}: {e}") from e
    url = url_of(sock)
    # Requests must name the address we listen on (a guard against DNS rebinding); a wildcard address
    # is reached under names we cannot know, so it accepts any.
    hosts = ["*"] if host in ("0.0.0.0", "::", "") else [host, "127.0.0.1", "localhost", "[::1]", "::1"]
    if explicit and host not in (LOOPBACK, "localhost", "::1"):
        click.echo(
            f"warning: listening on {host}: anyone who can reach it can use the page (no login)", err=True
        )
    click.echo(f"sfvq explore: {explorer.run_dir} ({explorer.network}); open {url}  (Ctrl+C stops)")
    try:
        serve(create_app(explorer, allowed_hosts=hosts), sock)
    finally:
        sock.close()
