"""The compact StyleGAN2 trainer on tiny data: finite losses, EMA, exact resume, export through
build_stylegan2, the training run and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from sfvq.avatars import GENERATOR_FILE, load_avatars_sg2, load_exported_generator
from sfvq.avatars.export import export_generator
from sfvq.avatars.networks import new_generator
from sfvq.avatars.train import (
    CHECKPOINT_FILE,
    TrainConfig,
    Trainer,
    TrainingError,
    load_checkpoint,
    train,
)
from sfvq.cli import main
from sfvq.generators.base import GeneratorError
from sfvq.generators.stylegan2 import build_stylegan2

TINY = dict(
    resolution=16,
    z_dim=16,
    w_dim=16,
    mapping_layers=2,
    channel_base=128,
    channel_max=16,
    batch=4,
    r1_interval=2,
    ema_kimg=0.01,
    ema_rampup=None,
    use_noise=True,
)


def _images(n: int = 12, res: int = 16, seed: int = 0) -> np.ndarray:
    """Blobs on coloured backgrounds: (n, res, res, 3) uint8."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, res, res, 3), np.uint8)
    yy, xx = np.mgrid[:res, :res]
    for i in range(n):
        out[i] = rng.integers(0, 256, 3)
        cy, cx = rng.integers(res // 4, res - res // 4, 2).tolist()
        r = int(rng.integers(2, max(3, res // 4)))
        out[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(0, 256, 3)
    return out


def test_steps_have_finite_losses_and_ema_follows_g() -> None:
    config = TrainConfig(**TINY)
    trainer = Trainer(_images(), config)
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    stats = [trainer.step() for _ in range(3)]
    for s in stats:
        assert all(np.isfinite([s.loss_G, s.loss_D, s.D_real, s.D_fake]))
    assert stats[0].r1 is not None and stats[1].r1 is None and np.isfinite(stats[2].r1)
    assert trainer.nimg == 12 and trainer.step_count == 3
    after = trainer.G.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(after["mapping.w_avg"], before["mapping.w_avg"])
    # EMA: G_ema <- lerp(G, G_ema, beta) on every parameter, buffers copied
    ema_old = {k: v.clone() for k, v in trainer.G_ema.named_parameters()}
    beta = trainer.ema_beta(trainer.nimg)
    assert 0 < beta < 1
    trainer.step()
    G_now = dict(trainer.G.named_parameters())
    for k, p in trainer.G_ema.named_parameters():
        torch.testing.assert_close(p, G_now[k].detach().lerp(ema_old[k], beta))
    diffs = [float((p - G_now[k]).detach().abs().max()) for k, p in trainer.G_ema.named_parameters()]
    assert max(diffs) > 0
    torch.testing.assert_close(trainer.G_ema.mapping.w_avg, trainer.G.mapping.w_avg)


def test_ema_rampup_and_settings_checks() -> None:
    config = TrainConfig(**{**TINY, "ema_rampup": 0.05, "ema_kimg": 10.0})
    trainer = Trainer(_images(), config)
    assert trainer.ema_beta(0) == 0.0  # first step copies G
    assert trainer.ema_beta(1_000_000) == pytest.approx(0.5 ** (4 / 10_000))
    with pytest.raises(TrainingError, match="power of two"):
        TrainConfig(resolution=24)
    with pytest.raises(TrainingError, match="config.resolution"):
        Trainer(_images(res=8), config)
    with pytest.raises(TrainingError, match="uint8"):
        Trainer(_images().astype(np.float32), config)


def test_resume_takes_the_same_next_steps(tmp_path: Path) -> None:
    config = TrainConfig(**TINY)
    images = _images()
    straight = Trainer(images, config)
    for _ in range(4):
        straight.step()
    first = Trainer(images, config)
    for _ in range(2):
        first.step()
    ckpt = first.save_checkpoint(tmp_path / CHECKPOINT_FILE, extra={"note": "x"})
    resumed = Trainer(images, config)
    state = load_checkpoint(ckpt)
    assert state["extra"] == {"note": "x"}
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed.step()
    for name in ("G", "D", "G_ema"):
        want, got = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for k in want:
            assert torch.equal(want[k], got[k]), f"{name}.{k}"
    assert resumed.nimg == straight.nimg and resumed.step_count == 4
    other = Trainer(images, TrainConfig(**{**TINY, "g_lr": 0.01}))
    with pytest.raises(TrainingError, match="g_lr"):
        other.load_state_dict(load_checkpoint(ckpt))
    # the R1 weight may change on resume; the change is recorded and survives the next checkpoint
    softer = Trainer(images, TrainConfig(**{**TINY, "r1_gamma": config.r1_gamma * 10}))
    softer.load_state_dict(load_checkpoint(ckpt))
    assert softer.history == [{"nimg": first.nimg, "r1_gamma": [config.r1_gamma, config.r1_gamma * 10]}]
    softer.step()
    again = Trainer(images, softer.config)
    again.load_state_dict(load_checkpoint(softer.save_checkpoint(tmp_path / "second.pt")))
    assert again.history == softer.history and again.config.r1_gamma == config.r1_gamma * 10
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="not a readable"):
        load_checkpoint(tmp_path / "bad.pt")


def _tiny_dataset(path: Path, n: int = 12) -> Path:
    """A data set on disk in build_dataset's layout (blobs, not faces: fast)."""
    from sfvq.avatars.dataset import FORMAT, factor_vocabularies
    from sfvq.io import sha256_file, write_json

    path.mkdir(parents=True)
    np.savez_compressed(path / "avatars.npz", images_16=_images(n))
    vocab = factor_vocabularies()
    rows = ["index," + ",".join(vocab)] + [f"{i}," + ",".join(v[0] for v in vocab.values()) for i in range(n)]
    (path / "factors.csv").write_text("\n".join(rows) + "\n")
    write_json(
        path / "dataset.json",
        {
            "format": FORMAT,
            "seed": 5,
            "count": n,
            "resolutions": [16],
            "factors": {k: list(v) for k, v in vocab.items()},
            "sha256": {"avatars.npz": sha256_file(path / "avatars.npz")},
        },
    )
    return path


def test_train_run_resumes_and_exports(tmp_path: Path) -> None:
    data = _tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    config = TrainConfig(**{**TINY, "kimg": 0.008, "checkpoint_kimg": 0.004})
    summary = train(data, run, config, device="cpu", progress=False)
    assert summary["nimg"] == 8 and not summary["stopped_early"]
    assert (run / CHECKPOINT_FILE).is_file()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["000000kimg.png"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]
    assert all(np.isfinite(row["loss_G"]) for row in log)
    longer = TrainConfig(**{**TINY, "kimg": 0.012, "checkpoint_kimg": 0.004})
    again = train(data, run, longer, device="cpu", progress=False)
    assert again["resumed_from"] == 8 and again["nimg"] == 12
    done = train(data, run, longer, device="cpu", progress=False)  # already complete: nothing to do
    assert done["nimg"] == 12 and done["resumed_from"] == 12
    with pytest.raises(TrainingError, match="other settings"):
        train(data, run, TrainConfig(**{**TINY, "w_dim": 8, "kimg": 0.016}), device="cpu", progress=False)

    weights, meta = export_generator(run, tmp_path / "weights")
    assert weights.name == GENERATOR_FILE and weights.stat().st_size < 20 * 2**20
    assert meta["dataset"]["seed"] == 5 and meta["training"]["nimg"] == 12
    side = json.loads(weights.with_suffix(".json").read_text())
    assert side["init_kwargs"] == config.init_kwargs() and side["sha256"] == meta["sha256"]
    net = build_stylegan2(side["init_kwargs"], load_file(str(weights)))
    G = load_exported_generator(weights)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    img = G.synthesis(G.mapping(z))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    torch.testing.assert_close(net(z), img)
    state = load_checkpoint(run / CHECKPOINT_FILE)
    ema = new_generator(config)
    ema.load_state_dict(state["G_ema"])
    torch.testing.assert_close(ema(z), img)
    from sfvq.generators.registry import load_generator

    by_path = load_generator(str(weights))  # an export loads by its path like any generator file
    torch.testing.assert_close(by_path.synthesis(by_path.mapping(z)), img)
    side["format"] = "something-else"
    weights.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(GeneratorError, match="format"):
        load_generator(str(weights))


def test_builtin_loader_reports_the_training_command(tmp_path: Path, monkeypatch) -> None:
    import sfvq.avatars as avatars

    monkeypatch.setattr(avatars, "WEIGHTS_DIR", tmp_path / "none")
    with pytest.raises(GeneratorError, match="sfvq avatars train"):
        load_avatars_sg2()
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / GENERATOR_FILE).write_bytes(b"x")
    with pytest.raises(GeneratorError, match="sidecar"):
        load_avatars_sg2()


def test_cli_train_and_export(tmp_path: Path) -> None:
    data = _tiny_dataset(tmp_path / "data")
    run, out = tmp_path / "run", tmp_path / "weights"
    args = ["avatars", "train", "--data", data, "--outdir", run, "--kimg", "0.008", "--resolution", "16"]
    args += ["--z-dim", "16", "--w-dim", "16", "--mapping-layers", "2", "--channel-base", "128"]
    args += ["--channel-max", "16", "--batch", "4", "--quiet", "--device", "cpu"]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert "done: 8 / 8 images" in res.output
    options = json.loads((run / "options.json").read_text())
    assert options["command"] == "avatars train" and options["options"]["w_dim"] == 16
    res = CliRunner().invoke(main, ["avatars", "export", "--run", str(run), "--outdir", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / GENERATOR_FILE).is_file() and (out / "options.json").is_file()
    assert "quality" not in json.loads((out / GENERATOR_FILE).with_suffix(".json").read_text())
    clf = tmp_path / "clf"
    args = ["avatars", "train-classifier", "--data", data, "--outdir", clf, "--resolution", "16"]
    res = CliRunner().invoke(main, [str(a) for a in [*args, "--max-steps", "2", "--batch", "4", "--quiet"]])
    assert res.exit_code == 0, res.output
    clf_file = clf / "avatars-classifier.safetensors"
    args = ["avatars", "export", "--run", run, "--outdir", out, "--classifier", clf_file, "--samples", "8"]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert "share TV" in res.output
    assert (out / "avatars-classifier.safetensors").read_bytes() == clf_file.read_bytes()
    assert (out / "avatars-classifier.json").is_file()
    quality = json.loads((out / GENERATOR_FILE).with_suffix(".json").read_text())["quality"]
    assert quality["samples"] == 8 and set(quality["factors"]) >= {"smile", "background"}
    for row in quality["factors"].values():
        assert 0 < row["generated_confidence"] <= 1 and 0 <= row["share_tv_distance"] <= 1
    bad_args = ["avatars", "train", "--data", str(tmp_path / "nope"), "--outdir", str(run)]
    bad = CliRunner().invoke(main, bad_args)
    assert bad.exit_code == 2 and "--data" in bad.output
