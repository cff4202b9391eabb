"""The parsers of typed text (sfvq.parsing): seed lists, layer ranges, float lists, space names."""

from __future__ import annotations

import pytest

from sfvq.latents import format_seeds
from sfvq.parsing import (
    MAX_SEED,
    SPACE_NAMES,
    check_space_name,
    format_layer_range,
    parse_floats,
    parse_layer_range,
    parse_seeds,
)


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


def test_space_names_are_one_vocabulary() -> None:
    assert set(SPACE_NAMES) == {"w", "w+", "z", "features", "s"}
    assert check_space_name("w+", ("z", "w", "w+"), "sfvq sample") == "w+"
    with pytest.raises(
        ValueError, match=r"sfvq sample does not support space 'features' .*it takes z, w, w\+"
    ):
        check_space_name("features", ("z", "w", "w+"), "sfvq sample")
    with pytest.raises(ValueError, match=r"sfvq run does not support space 'w\+'"):
        check_space_name("w+", ("w", "z", "features"), "sfvq run")
    with pytest.raises(ValueError, match=r"'W' is not a space name \(spaces: w, w\+, z, features, s\)"):
        check_space_name("W", ("w", "z"), "sfvq edit")


def test_parsing_needs_no_torch() -> None:
    """The parsers serve the command line's option types, which must not load torch to start."""
    import subprocess
    import sys

    code = "import sys, sfvq.parsing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
