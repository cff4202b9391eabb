"""Shared click parameter types (seed lists, layer ranges, float lists, devices, space names) and the
shared option decorators."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from sfvq.cli.options import (
    DEVICE,
    FINITE_FLOAT,
    FLOATS,
    LAYER_RANGE,
    SeedList,
    SpaceName,
    device_option,
    noise_mode_option,
    options,
    outdir_option,
    space_option,
)


@click.command()
@click.option("--seeds", type=SeedList(max_count=100))
@click.option("--layers", type=LAYER_RANGE)
@click.option("--strengths", type=FLOATS)
@click.option("--trunc", type=FINITE_FLOAT)
@click.option("--device", type=DEVICE)
def _probe(**kwargs) -> None:
    click.echo(repr(sorted(kwargs.items())))


def _run(*args: str):
    return CliRunner().invoke(_probe, list(args))


def test_click_types_convert() -> None:
    res = _run(
        "--seeds", "0-2,9", "--layers", "4-7", "--strengths", "-8,-4,0", "--trunc", "0.7", "--device", "cpu"
    )
    assert res.exit_code == 0, res.output
    expected = {"seeds": [0, 1, 2, 9], "layers": (4, 8), "strengths": [-8.0, -4.0, 0.0], "trunc": 0.7}
    assert repr(sorted({**expected, "device": "cpu"}.items())) in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0-200"], "Invalid value for '--seeds': '0-200' gives more than 100 seeds"),
        (["--seeds", "x"], "Invalid value for '--seeds'"),
        (["--layers", "7-4"], "Invalid value for '--layers': layer range '7-4' is reversed"),
        (["--strengths", "1,oops"], "Invalid value for '--strengths': 'oops' is not a number"),
        (["--trunc", "nan"], "Invalid value for '--trunc': 'nan' is not a finite number"),
        (["--device", "gpu7"], "Invalid value for '--device'"),
    ],
)
def test_click_types_fail_as_usage_errors(args: list[str], message: str) -> None:
    res = _run(*args)
    assert res.exit_code == 2
    assert message in res.output


def test_device_availability() -> None:
    res = _run("--device", "cuda")
    if torch.cuda.is_available():
        assert res.exit_code == 0
    else:
        assert res.exit_code == 2 and "CUDA is not available" in res.output


@click.command()
@options(
    space_option(("z", "w", "w+"), "probe"),
    noise_mode_option(default=None),
    device_option(),
    outdir_option("Where to write."),
)
def _shared(**kwargs) -> None:
    click.echo(repr(sorted(kwargs.items())))


def test_shared_options_parse_and_default() -> None:
    res = CliRunner().invoke(_shared, ["--space", "w+", "--outdir", "o"])
    assert res.exit_code == 0, res.output
    assert "('device', 'cpu')" in res.output and "('noise_mode', None)" in res.output
    assert "('space', 'w+')" in res.output and "('outdir', PosixPath('o'))" in res.output
    res = CliRunner().invoke(_shared, ["--space", "features", "--outdir", "o"])
    assert res.exit_code == 2
    assert "sfvq probe does not support space 'features'" in res.output and "takes z, w, w+" in res.output
    res = CliRunner().invoke(_shared, ["--noise-mode", "loud", "--outdir", "o"])
    assert res.exit_code == 2 and "'--noise-mode'" in res.output
    res = CliRunner().invoke(_shared, [])
    assert res.exit_code == 2 and "Missing option '--outdir'" in res.output
    helptext = CliRunner().invoke(_shared, ["--help"]).output
    assert "--space [z|w|w+]" in helptext and "Where to write." in helptext


def test_space_name_refuses_names_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="not space names"):
        SpaceName(("w", "latent"), "probe")


def test_sample_and_run_share_the_space_vocabulary() -> None:
    """`sfvq sample` takes z, w, w+ and `sfvq run` w, z, features: the same names mean the same spaces, and
    each says which it takes when given one of the others."""
    from sfvq.cli import main

    res = CliRunner().invoke(main, ["sample", "--network", "builtin:faces-dcgan", "--space", "features",
                                    "--outdir", "o"])  # fmt: skip
    assert res.exit_code == 2 and "sfvq sample does not support space 'features'" in res.output
    res = CliRunner().invoke(
        main, ["run", "--network", "builtin:faces-dcgan", "--space", "w+", "--outdir", "o"]
    )
    assert res.exit_code == 2 and "sfvq run does not support space 'w+'" in res.output
    assert "takes w, z, features" in res.output


def _probe_many(folder: str, rounds: int) -> list[str | None]:
    from sfvq.cli.options import write_problem

    return [write_problem(Path(folder)) for _ in range(rounds)]


def test_write_problem_tolerates_other_processes_probing_the_same_new_folder(tmp_path: Path) -> None:
    """The ranks of one torchrun job validate the same --outdir at once: one making (then removing) the
    folder while another probes it must not fail either of them (the CI failure of a two-process fit)."""
    import multiprocessing as mp

    folder = tmp_path / "a" / "b" / "run"
    with mp.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_probe_many, [(str(folder), 40)] * 4)
    problems = [r for rs in results for r in rs if r is not None]
    assert not problems, problems


def test_write_problem_names_a_file_in_the_way(tmp_path: Path) -> None:
    from sfvq.cli.options import write_problem

    (tmp_path / "f").write_text("x")
    assert write_problem(tmp_path / "f" / "run") == f"{tmp_path / 'f'} is a file, not a folder"
