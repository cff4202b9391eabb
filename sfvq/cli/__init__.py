"""The ``sfvq`` command line: a thin click front over the library."""

from __future__ import annotations

import click

from sfvq._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sfvq")
def main() -> None:
    """Space-filling vector quantization: readable maps of generative latent spaces."""


def _register() -> None:
    from sfvq.cli import fit as _fit

    main.add_command(_fit.fit)
    main.add_command(_fit.demo)

    from sfvq.cli import generate as _generate

    main.add_command(_generate.sample)
    main.add_command(_generate.generate)

    from sfvq.cli import augment as _augment
    from sfvq.cli import directions as _directions
    from sfvq.cli import edit as _edit
    from sfvq.cli import interop as _interop

    main.add_command(_directions.directions)
    main.add_command(_edit.edit)
    main.add_command(_augment.augment)
    main.add_command(_interop.import_)
    main.add_command(_interop.export)

    from sfvq.cli import run as _run

    main.add_command(_run.run)

    from sfvq.cli import annotate as _annotate

    main.add_command(_annotate.annotate)

    from sfvq.cli import explore as _explore

    main.add_command(_explore.explore)

    from sfvq.cli import avatars as _avatars

    main.add_command(_avatars.avatars)

    from sfvq.cli import compare as _compare

    main.add_command(_compare.compare)
    main.add_command(_compare.evaluate)

    from sfvq.cli import project as _project

    main.add_command(_project.project)
    main.add_command(_project.locate)

    from sfvq.cli import quality as _quality

    main.add_command(_quality.quality)

    from sfvq.cli import report as _report

    main.add_command(_report.report)


_register()
