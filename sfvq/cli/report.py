"""``sfvq report``: draw a run's ``report.html`` again, with the annotations (``sfvq annotate``) and
map-quality measures (``sfvq quality``) the run holds now."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--run",
    "run_path",
    type=click.Path(path_type=Path),
    required=True,
    help="A run directory written by `sfvq run` (or its model.safetensors).",
)
def report(run_path: Path) -> None:
    """Redraw RUN/report.html from RUN/report.json, adding annotations.json and quality.json when there."""
    from sfvq.report import ReportInputsError, read_annotations, read_quality, redraw_report

    run_dir = run_path.parent if run_path.is_file() else run_path
    if not run_dir.is_dir():
        raise click.BadParameter(f"{run_path} is not a run directory", param_hint="'--run'")
    try:
        path = redraw_report(run_dir, str(run_dir))
    except ReportInputsError as e:
        raise click.BadParameter(str(e), param_hint="'--run'") from e
    for rf in (read_annotations(run_dir), read_quality(run_dir)):
        state = (
            "included" if rf.data is not None else (f"not readable: {rf.problem}" if rf.problem else "absent")
        )
        click.echo(f"{rf.name}: {state}")
    click.echo(f"report: {path}")


def refresh_report(run_dir: Path) -> None:
    """After a command added to a run (``sfvq annotate``, ``sfvq quality``): draw its report.html again
    when it has one, so the page shows what was added; a run without ``report.json`` is left alone."""
    from sfvq.report import REPORT_INPUTS, ReportInputsError, redraw_report

    if not (run_dir / REPORT_INPUTS).is_file():
        return
    try:
        click.echo(f"updated {redraw_report(run_dir, str(run_dir))}")
    except ReportInputsError as e:
        click.echo(f"report.html not updated: {e}")
