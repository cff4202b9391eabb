"""sfvq evaluate's candidates chosen by the run's annotations instead of by the std along each segment."""

from __future__ import annotations

import pytest
import torch

from sfvq.directions import Direction, DirectionSet
from sfvq.evaluation.benchmark import annotated_candidates


def _segments(n: int) -> DirectionSet:
    """n segment directions of a 4-bit curve, named and sourced as sfvq names them."""
    return DirectionSet(
        [
            Direction(
                f"4:{i}", torch.eye(n)[i], {"method": "sfvq", "bits": 4, "corners": [i, i + 1]}, std=1.0
            )
            for i in range(n)
        ],
        meta={"method": "sfvq", "bits": 4},
    )


def _annotations(effects: list[dict[str, float]]) -> dict:
    rows = [{"segment": i, "effects": e} for i, e in enumerate(effects)]
    return {"scales": {"age": 10.0, "identity": 0.6}, "paired": ["identity"], "bits": {"4": rows}}


def test_scores_take_turns_and_paired_scores_do_not_count() -> None:
    effects = [
        {"age": 1.0, "smile": 0.01, "identity": 5.0},  # the largest identity: paired, ignored
        {"age": -9.0, "smile": 0.02, "identity": 0.1},  # age's best, in either sign
        {"age": 0.5, "smile": -0.30, "identity": 0.1},  # smile's best
        {"age": 2.0, "smile": 0.25, "identity": 0.1},  # smile's second, age's second
        {"age": 0.0, "smile": 0.00, "identity": 0.1},
    ]
    dirs = _segments(5)
    got = annotated_candidates(dirs, _annotations(effects), 4, 3)
    assert got.names == ["4:1", "4:2", "4:3"] and got.meta["candidates"] == "annotations"
    assert torch.equal(got["4:2"].vector, dirs["4:2"].vector)
    # k = 1: the first score's best; more than there are: every segment, best first by turns
    assert annotated_candidates(dirs, _annotations(effects), 4, 1).names == ["4:1"]
    assert annotated_candidates(dirs, _annotations(effects), 4, 9).names == [
        "4:1",
        "4:2",
        "4:3",
        "4:0",
        "4:4",
    ]


def test_missing_or_scoreless_annotations_are_errors() -> None:
    dirs = _segments(2)
    with pytest.raises(ValueError, match="sfvq annotate"):
        annotated_candidates(dirs, None, 4, 2)
    with pytest.raises(ValueError, match="no 4-bit entry for 4:1"):
        annotated_candidates(dirs, _annotations([{"age": 1.0}]), 4, 2)
    with pytest.raises(ValueError, match="no score effects"):
        annotated_candidates(dirs, _annotations([{}, {"identity": 0.2}]), 4, 2)


def test_evaluate_builds_the_sfvq_candidates_the_annotations_choose(tmp_path) -> None:
    import json
    import sys
    from pathlib import Path

    import click
    from rich.console import Console

    from sfvq.cli.compare import build_methods

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from sfvq_runs import make_run

    run = tmp_path / "run"
    make_run(run, "builtin:avatars-sg2", "w", n=300, bits=3)
    effects = [{"smile": 0.0, "hat": 0.0} for _ in range(7)]
    effects[5]["smile"], effects[2]["hat"], effects[6]["hat"] = 0.4, -0.3, 0.2
    rows = [{"segment": i, "effects": e} for i, e in enumerate(effects)]
    (run / "annotations.json").write_text(json.dumps({"format": "sfvq.annotations", "bits": {"3": rows}}))
    build = dict(
        network=None, model_path=run, k=3, n_samples=300, seed=0, bits=3, layers=None, latentclr_steps=1,
        saved={}, device="cpu", outdir=tmp_path / "out", console=Console(quiet=True),
    )  # fmt: skip
    _, _, (md,) = build_methods(["sfvq"], candidates="annotations", **build)
    assert md.directions.names == ["3:2", "3:5", "3:6"]  # hat's best, smile's best, hat's second
    _, _, (by_std,) = build_methods(["sfvq"], **build)
    assert len(by_std.directions) == 3 and by_std.directions.meta.get("candidates") is None
    with pytest.raises(click.BadParameter, match="--model RUN"):
        build_methods(["sfvq"], candidates="annotations", **{**build, "model_path": None, "network": "x"})
    (run / "annotations.json").unlink()
    with pytest.raises(click.UsageError, match="sfvq annotate"):
        build_methods(["sfvq"], candidates="annotations", **build)
