"""sfvq.runs.Run: a run directory written by the pipeline (and a bare one written by a fit) opened once,
its lazily loaded parts, and every way a run can be unusable."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "generators"))

from pkl_writer import write_stylegan_pkl  # noqa: E402

from sfvq.generators.base import GeneratorError  # noqa: E402
from sfvq.runs import Run, RunError  # noqa: E402

N = 128


@pytest.fixture(scope="module")
def pkl(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test StyleGAN2 (8 style layers, 32-D W, 32x32 images) as a pickle a run can name."""
    return write_stylegan_pkl(
        shared_dir / "fixtures/stylegan/sg2ada_uncond", tmp_path_factory.mktemp("g") / "sg2.pkl"
    )


@pytest.fixture(scope="module")
def pipeline_run(pkl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run of the main job (sample, fit, maps, walk, edits, smoothness, report) in W."""
    from sfvq.pipeline import RunConfig, run_pipeline

    out = tmp_path_factory.mktemp("runs") / "run"
    config = RunConfig(
        network=str(pkl), outdir=out, bits=3, n=N, seed=2, truncation_psi=0.8, edit_seeds=(0,),
        sigmas=(-1.0, 1.0), walk_frames=2, progress=False,
    )  # fmt: skip
    run_pipeline(config)
    return out


@pytest.fixture(scope="module")
def fit_run(pipeline_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare run as `sfvq fit` writes it: a model fitted to the pipeline run's latents, no space.json,
    no latents beside it, no recorded generator."""
    from sfvq.fitting import fit_curve, write_fit

    X = np.load(pipeline_run / "latents.npy")
    model = fit_curve(X, 2, epochs=1, batch_size=64, metadata={"data": {"name": "latents.npy"}})
    out = tmp_path_factory.mktemp("fit") / "run"
    write_fit(model, X, out)
    return out


def test_open_a_pipeline_run(pipeline_run: Path, pkl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sfvq.generators.registry as registry

    loads = []
    real = registry.load_generator
    monkeypatch.setattr(registry, "load_generator", lambda *a, **k: loads.append(a) or real(*a, **k))
    for path in (pipeline_run, pipeline_run / "model.safetensors"):
        run = Run.open(path)
        assert run.path == pipeline_run and run.model_path == pipeline_run / "model.safetensors"
        assert sorted(run.model.codebooks_) == [2, 3] and run.network == str(pkl)
        assert run.options["bits"] == 3 and run.options["n"] == N
        assert run.num_ws == 8 and run.latents.shape == (N, 32)
        assert run.directions() is None
    assert loads == []  # opening, the options, the latents: no generator loaded yet
    space = run.space
    assert loads == [(str(pkl),)] and run.space is space and run.generator is space.G
    assert space.kind == "w" and space.dim == 32 and space.truncation_psi == 0.8
    images = space.render(run.model.codebooks_[2])  # (4, C, 32, 32)
    assert images.shape[0] == 4 and bool(torch.isfinite(images).all())
    other = run.load_space(truncation_psi=0.5, noise_mode="random")
    assert (other.truncation_psi, other.noise_mode) == (0.5, "random")
    assert (run.space.truncation_psi, run.space.noise_mode) == (0.8, "const")  # the run's own is kept
    assert loads == [(str(pkl),)]  # one generator for all of them


def test_saved_directions_go_into_the_run(pipeline_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(pipeline_run, copy)
    run = Run.open(copy)
    d = run.save_direction("pose", "3:1", (0, 2), -1)
    assert d.layers == (0, 2) and d.sign == -1 and d.std is not None and d.std > 0
    saved = Run.open(copy).directions()
    assert saved.names == ["pose"] and torch.equal(saved["pose"].vector, d.vector)
    with pytest.raises(ValueError, match="already"):
        run.save_direction("pose", "3:2")
    assert run.save_direction("pose", "3:2", overwrite=True).source["corners"] == [2, 3]


def test_a_bare_fit_run_needs_its_space_and_generator(fit_run: Path, pkl: Path) -> None:
    run = Run.open(fit_run)
    assert run.options == {} and run.latents is None and run.num_ws is None
    with pytest.raises(RunError, match="does not record its generator") as e:
        _ = run.network
    assert e.value.param == "network" and e.value.missing
    run = Run.open(fit_run, network=str(pkl))
    with pytest.raises(RunError, match="no space.json beside the model") as e:
        _ = run.space
    assert e.value.param == "space" and e.value.missing
    with pytest.raises(RunError, match="defined by its PCA") as e:
        _ = Run.open(fit_run, network=str(pkl), space="features").space
    assert e.value.param == "space" and not e.value.missing
    space = Run.open(fit_run, network=str(pkl), space="w").space
    assert space.kind == "w" and space.dim == 32
    from sfvq.fitting import fit_curve, write_fit

    X5 = np.random.default_rng(0).standard_normal((64, 5)).astype(np.float32)
    write_fit(fit_curve(X5, 2, epochs=1, batch_size=64), X5, fit_run.parent / "five")
    with pytest.raises(RunError, match="the model is 5-D but space 'w' of .* is 32-D") as e:
        _ = Run.open(fit_run.parent / "five", network=str(pkl), space="w").space
    assert e.value.param is None
    with pytest.raises(RunError, match="no mapping network") as e:
        _ = Run.open(fit_run, network="builtin:faces-dcgan", space="w").space
    assert e.value.param == "space"


def test_unusable_runs(pipeline_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such model file") as e:
        Run.open(tmp_path / "nope.safetensors")
    assert e.value.param == "path"
    with pytest.raises(RunError, match="is a directory without model.safetensors") as e:
        Run.open(tmp_path)
    assert e.value.param == "path"
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(RunError, match="not an sfvq model") as e:
        Run.open(tmp_path / "junk.safetensors")
    assert e.value.param == "path"
    with pytest.raises(RunError, match="fitted in space 'w'") as e:
        _ = Run.open(pipeline_run, space="z").space
    assert e.value.param == "space"
    with pytest.raises(RunError, match="cannot use .*space.json with .*no mapping network") as e:
        _ = Run.open(pipeline_run, network="builtin:faces-dcgan").space
    assert e.value.param is None
    with pytest.raises(GeneratorError, match="unknown built-in"):
        _ = Run.open(pipeline_run, network="builtin:nope").generator
    broken = tmp_path / "broken"
    shutil.copytree(pipeline_run, broken)
    (broken / "options.json").write_text("{not json")
    with pytest.raises(RunError, match="options.json is not readable JSON"):
        _ = Run.open(broken).options
    (broken / "directions.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError):
        Run.open(broken).directions()
