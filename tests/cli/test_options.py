"""Shared click parameter types: seed lists, inclusive layer ranges, float lists, devices."""

from __future__ import annotations

import click
import pytest
import torch
from click.testing import CliRunner

from sfvq.cli.options import (
    DEVICE,
    FINITE_FLOAT,
    FLOATS,
    LAYER_RANGE,
    MAX_SEED,
    SeedList,
    format_layer_range,
    parse_floats,
    parse_layer_range,
    parse_seeds,
)
from sfvq.latents import format_seeds


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0-3,7", [0, 1, 2, 3, 7]), (" 5 ", [5]), ("10-12, 2", [10, 11, 12, 2]), (f"{MAX_SEED}", [MAX_SEED])],
)
def test_parse_seeds(text: str, expected: list[int]) -> None:
    assert parse_seeds(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no seeds"),
        ("a", "'a' is not a seed"),
        ("1,,2", "'' is not a seed"),
        ("-1", "'-1' is not a seed"),
        ("3-1", "reversed"),
        ("1,1", "seed 1 is listed more than once"),
        ("0-3,2", "seed 2 is listed more than once"),
        (f"{MAX_SEED + 1}", "out of range"),
        ("1.5", "'1.5' is not a seed"),
    ],
)
def test_parse_seeds_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_parse_seeds_max_count_checked_before_expanding() -> None:
    with pytest.raises(ValueError, match="more than 10 seeds"):
        parse_seeds("0-4000000000", max_count=10)


def test_format_seeds_round_trip() -> None:
    for seeds in ([0, 1, 2, 3, 7], [5], [10, 11, 12, 2, 3], [9, 7, 8]):
        assert parse_seeds(format_seeds(seeds)) == seeds
    assert format_seeds([0, 1, 2, 3, 7]) == "0-3,7"


def test_layer_ranges() -> None:
    assert parse_layer_range("4-7") == (4, 8)
    assert parse_layer_range("5") == (5, 6)
    assert parse_layer_range("0-0") == (0, 1)
    for start, stop in [(4, 8), (5, 6), (0, 14)]:
        assert parse_layer_range(format_layer_range(start, stop)) == (start, stop)
    with pytest.raises(ValueError, match="reversed"):
        parse_layer_range("7-4")
    with pytest.raises(ValueError, match="not a layer index"):
        parse_layer_range("4:7")
    with pytest.raises(ValueError, match="empty"):
        format_layer_range(3, 3)


def test_floats() -> None:
    assert parse_floats("-8,-4,0,4,8") == [-8.0, -4.0, 0.0, 4.0, 8.0]
    assert parse_floats("1e-2, .5") == [0.01, 0.5]
    for bad, message in [
        ("", "no numbers"),
        ("1,x", "'x' is not a number"),
        ("nan", "not a finite"),
        ("inf", "finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_floats(bad)


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
