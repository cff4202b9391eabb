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
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Another host name the page may be reached under (repeatable); requests naming any other host "
    "are refused, whatever --host is (a guard against DNS rebinding).",
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
def explore(
    run_dir: Path,
    host: str | None,
    allow_hosts: tuple[str, ...],
    port: int,
    network: str | None,
    device: str,
) -> None:
    """Serve a page to explore the curve of a run: a slider over the curve index rendering live, the
    panoptic map of each bitrate, edits along a selected segment, saving named directions into the run and
    writing augmentation batches into RUN/augment/NAME/.

    Binds 127.0.0.1 unless --host is given; requests must address this machine's loopback names, the
    address listened on (for 0.0.0.0: this machine's names) or a name given with --allow-host. Stop with
    Ctrl+C.
    """
    from sfvq.explore.app import (
        Explorer,
        allowed_hosts_for,
        bind,
        check_host_name,
        create_app,
        is_loopback,
        serve,
        url_of,
    )
    from sfvq.generators.base import GeneratorError
    from sfvq.runs import RunError

    for name in allow_hosts:
        try:
            check_host_name(name)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--allow-host'") from e

    try:
        explorer = Explorer.open(run_dir, network=network, device=device)
    except (RunError, GeneratorError) as e:
        if isinstance(e, RunError) and e.param is None:
            raise click.UsageError(f"cannot explore {run_dir}: {e}") from e
        raise run_error(e, "'--run'") from e
    host = LOOPBACK if host is None else host
    try:
        sock = bind(host, port)
    except OSError as e:
        raise click.UsageError(f"cannot listen on {host}:{port}: {e}") from e
    url = url_of(sock)
    bound = str(sock.getsockname()[0])
    # Requests must name this server (a guard against DNS rebinding), whatever address it listens on.
    hosts = allowed_hosts_for(host, bound, allow_hosts)
    if not is_loopback(bound):
        click.echo(
            f"warning: listening on {host} ({bound}), beyond this machine: anyone who can reach it can use "
            f"the page (no login). Requests must name one of: {', '.join(hosts)}; add names with "
            "--allow-host.",
            err=True,
        )
    click.echo(f"sfvq explore: {explorer.run_dir} ({explorer.network}); open {url}  (Ctrl+C stops)")
    try:
        serve(create_app(explorer, allowed_hosts=hosts), sock)
    finally:
        sock.close()
