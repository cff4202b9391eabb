"""Bad input to the command line gets a one-line error and a non-zero exit, never a traceback, and leaves
nothing half-written (issue 13, item 6): unwritable output folders, absurd sizes and steps, non-finite
options, latents a curve cannot be fitted to, broken .npy files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sfvq_runs import dcgan_test_run

from sfvq.cli import main


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(r: Any, *needles: str, code: int = 2) -> None:
    """A click error: exit ``code``, no traceback, an ``Error:`` line holding every needle."""
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # not an uncaught exception
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dcgan_test_run(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def latents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("x") / "X.npy"
    np.save(path, np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    return path


def _commands(run: Path, latents: Path, codebooks: Path) -> dict[str, list[Any]]:
    """Every command with an --outdir, with arguments that are otherwise fine."""
    return {
        "fit": ["fit", "--latents", latents, "--bits", 2, "--epochs", 1, "--quiet"],
        "demo": ["demo", "--bits", 2, "--epochs", 1, "--quiet"],
        "sample": ["sample", "--network", "builtin:faces-dcgan", "--n", 10],
        "generate": ["generate", "--network", "builtin:faces-dcgan", "--seeds", 0],
        "augment": ["augment", "--model", run, "--segment", "2:0", "--n", 2],
        "edit": ["edit", "--model", run, "--direction", "2:0", "--seeds", 0, "--sigma", 0],
        "run": ["run", "--network", "builtin:faces-dcgan", "--bits", 2, "--n", 64, "--quiet"],
        "compare": ["compare", "--model", run, "--methods", "sfvq", "--k", 1, "--n-samples", 100],
        "export codebooks": ["export", "codebooks", "--model", run],
        "export directions": ["export", "directions", "--model", run, "--bits", 2],
        "import codebooks": ["import", "codebooks", codebooks],
    }


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_unwritable_outdirs_are_usage_errors(run: Path, latents: Path, tmp_path: Path) -> None:
    codebooks = tmp_path / "paper"
    codebooks.mkdir()
    np.save(codebooks / "codebook_2bit.npy", np.random.default_rng(0).standard_normal((4, 4)))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    bad = {
        "/proc/sfvq-test-outdir": "cannot create /proc/sfvq-test-outdir",  # /proc takes no new folders
        "/proc": "cannot write into /proc",  # a folder nothing can be written into, root or not
        str(a_file / "sub"): "is a file",
    }
    for name, args in _commands(run, latents, codebooks).items():
        for outdir, message in bad.items():
            r = invoke(*args, "--outdir", outdir)
            assert_one_line_error(r, "'--outdir'", message)
            assert outdir == "/proc" or not Path(outdir).exists(), name


def test_out_under_a_file(run: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    r = invoke("directions", "--model", run, "--out", a_file / "dirs")
    assert_one_line_error(r, "'--out'", "is a file")
    boundary = tmp_path / "b.npy"
    np.save(boundary, np.ones((1, 8), np.float32))
    r = invoke("import", "directions", boundary, "--from", "interfacegan", "--out", a_file / "x" / "dirs")
    assert_one_line_error(r, "'--out'", "is a file")


def test_absurd_sample_counts(tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = invoke("run", "--network", "builtin:faces-dcgan", "--n", 1_000_000_000, "--outdir", out)
    assert_one_line_error(r, "'--n'", "GiB of memory", "use a smaller --n")
    r = invoke("sample", "--network", "builtin:faces-dcgan", "--n", 1_000_000_000_000, "--outdir", out)
    assert_one_line_error(r, "'--n'", "GiB", "free")
    assert not out.exists()


def test_non_finite_and_overflowing_steps(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = invoke(
        "edit", "--model", run, "--direction", "2:0", "--seeds", 0, "--sigma", "1e308", "--outdir", out
    )
    assert_one_line_error(r, "'--sigma'", "overflows float32")
    r = invoke("edit", "--model", run, "--direction", "2:0", "--sigma", "0,nan", "--outdir", out)
    assert_one_line_error(r, "'--sigma'", "not a finite number")
    for jitter in ("nan", "inf", "-1"):
        r = invoke("augment", "--model", run, "--segment", "2:0", "--jitter", jitter, "--outdir", out)
        assert_one_line_error(r, "'--jitter'")
    r = invoke("fit", "--latents", run / "latents.npy", "--lr", "nan", "--outdir", out)
    assert_one_line_error(r, "'--lr'", "not a finite number")
    assert not out.exists()


def test_latents_a_curve_cannot_be_fitted_to(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = {
        "one-dim.npy": (rng.standard_normal((300, 1)).astype(np.float32), ["'--latents'", "D >= 2"]),
        "huge.npy": ((rng.standard_normal((300, 4)) * 1e30).astype(np.float32), ["rescale the data"]),
        "huge64.npy": (rng.standard_normal((300, 4)) * 1e300, ["rescale the data"]),
    }
    for name, (X, needles) in cases.items():
        np.save(tmp_path / name, X)
        out = tmp_path / f"out-{name}"
        r = invoke(
            "fit", "--latents", tmp_path / name, "--bits", 2, "--epochs", 1, "--quiet", "--outdir", out
        )
        assert_one_line_error(r, *needles)
        assert not out.exists()  # nothing half-written (the curve plot used to fail after the model)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    r = invoke("fit", "--latents", empty, "--outdir", tmp_path / "o")
    assert_one_line_error(r, "'--latents'", "not a .npy file (0 bytes)")
    cut = tmp_path / "cut.npy"
    cut.write_bytes((tmp_path / "huge.npy").read_bytes()[:40])
    r = invoke("fit", "--latents", cut, "--outdir", tmp_path / "o")
    assert_one_line_error(r, "'--latents'", "not a")
    assert not (tmp_path / "o").exists()


def test_constant_data_warns_and_says_nmse_is_undefined(tmp_path: Path) -> None:
    path = tmp_path / "const.npy"
    np.save(path, np.full((300, 4), 2.5, np.float32))
    out = tmp_path / "o"
    r = CliRunner().invoke(
        main, ["fit", "--latents", str(path), "--bits", "2", "--epochs", "1", "--quiet", "--outdir", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "warning: the data are constant" in r.output and "NMSE is undefined" in r.output
    assert "undefined" in r.output.split("NMSE", 2)[-1] and "nan" not in r.output.lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_variance"] == 0 and all(s["nmse"] is None for s in summary["stages"])
