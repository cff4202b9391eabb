"""Fit checkpoints: an interrupted fit resumed from its checkpoint equals an uninterrupted one, bit for
bit; a checkpoint of another fit is refused; `sfvq fit --resume` after kill -9 of a real process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sfvq import SFVQ
from sfvq.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
KW = dict(epochs=3, batch_size=256, verbose=False, random_state=0)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(data):
    return SFVQ(5, **KW).fit(data)


class _Stop(Exception):
    """Stands for a crash at a chosen event of the fit."""


def _same_fit(a: SFVQ, b: SFVQ) -> None:
    assert sorted(a.codebooks_) == sorted(b.codebooks_)
    for bits in a.codebooks_:
        assert torch.equal(a.codebooks_[bits], b.codebooks_[bits]), bits
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history_]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history_]
    assert np.array_equal(a.usage_, b.usage_) and a.perplexity_ == b.perplexity_
    assert a.total_variance_ == b.total_variance_ and a.n_samples_fit_ == b.n_samples_fit_


@pytest.mark.parametrize(
    ("event", "bits", "step", "every"),
    [
        ("step", 3, 17, 5),  # mid-epoch, between checkpoints
        ("step", 4, 24, 4),  # right after an epoch's last batch (12 batches an epoch)
        ("stage_end", 4, None, 0),  # between stages, stage checkpoints only
        ("epoch_end", 2, None, 7),  # in the first stage
    ],
)
def test_an_interrupted_fit_resumes_to_the_same_curve(data, reference, tmp_path, event, bits, step, every):
    ckpt = tmp_path / "checkpoint.safetensors"

    def crash(e, info):
        if e == event and info["bits"] == bits and step in (None, info.get("step")):
            raise _Stop

    with pytest.raises(_Stop):
        SFVQ(5, **KW).fit(data, callback=crash, checkpoint=ckpt, checkpoint_every=every)
    assert ckpt.is_file()
    seen = []
    resumed = SFVQ(5, **KW).fit(
        data, checkpoint=ckpt, checkpoint_every=every, resume=True, callback=lambda e, i: seen.append(e)
    )
    _same_fit(resumed, reference)
    assert seen.count("step") < 4 * 36  # it continued: 4 stages of 36 steps, some already done
    assert not list(tmp_path.glob(".*"))  # no temporary files


def test_resume_without_a_checkpoint_starts_afresh(data, reference, tmp_path):
    m = SFVQ(5, **KW).fit(data, checkpoint=tmp_path / "c.safetensors", resume=True)
    _same_fit(m, reference)
    _, meta = load_checkpoint(tmp_path / "c.safetensors")  # the last one: after the final stage
    assert meta["next_bits"] == 6 and meta["stage"] is None


def test_a_checkpoint_of_another_fit_is_refused(data, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    SFVQ(3, **KW).fit(data, checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="belongs to another fit: its params"):
        SFVQ(4, **KW).fit(data, checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="its n_samples is 3000, this fit's is 2999"):
        SFVQ(3, **KW).fit(data[:-1], checkpoint=ckpt, resume=True)
    other = data.copy()
    other[0] += 10
    with pytest.raises(CheckpointError, match="its total_variance"):
        SFVQ(3, **KW).fit(other, checkpoint=ckpt, resume=True)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not an sfvq fit checkpoint file"):
        SFVQ(3, **KW).fit(data, checkpoint=tmp_path / "junk.safetensors", resume=True)
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 0"):
        SFVQ(3, **KW).fit(data, checkpoint=ckpt, checkpoint_every=-1)


def test_checkpoint_files_round_trip_and_name_their_format(tmp_path):
    p = save_checkpoint(tmp_path / "c.safetensors", {"a": torch.arange(3)}, {"next_bits": 3})
    tensors, meta = load_checkpoint(p)
    assert torch.equal(tensors["a"], torch.arange(3)) and meta["next_bits"] == 3
    assert meta["format"] == "sfvq.fit-checkpoint"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.safetensors")


# ---------------------------------------------------------------------- kill -9 of a real process
def _fit_cmd(latents: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "sfvq", "fit", "--latents", str(latents), "--outdir", str(out), "--bits", "6",
        "--epochs", "3", "--batch-size", "32", "--seed", "1", "--checkpoint-every", "20", "--quiet", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_fit(tmp_path):
    """`sfvq fit` killed with SIGKILL at random moments (after its first checkpoint), twice, then
    `--resume` to the end: the model equals an uninterrupted fit's, and at most 20 steps were lost."""
    X = np.random.default_rng(2).standard_normal((20_000, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "fit"
    ckpt = out / "checkpoint.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seed = time.time_ns()
    rng = random.Random(seed)
    seed_note = f"kill delays drawn by random.Random({seed})"
    kills = 0
    for attempt in range(2):
        before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        extra = ("--resume",) if attempt else ()
        p = subprocess.Popen(_fit_cmd(tmp_path / "x.npy", out, *extra), env=env, cwd=ROOT)
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:  # wait for a (new) checkpoint
            if ckpt.exists() and ckpt.stat().st_mtime_ns != before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(timeout=60)
        if p.returncode == 0:
            break  # it finished before the kill: nothing left to resume
        assert p.returncode == -signal.SIGKILL, seed_note
        _, meta = load_checkpoint(ckpt)  # whole after any kill (written atomically)
        assert meta["stage"] is None or meta["stage"]["step"] % 20 == 0
    assert kills >= 1, "the fit finished before it could be killed: make it longer"
    res = subprocess.run(
        _fit_cmd(tmp_path / "x.npy", out, "--resume"), env=env, cwd=ROOT, capture_output=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert not ckpt.exists()  # complete: nothing left to resume
    resumed = SFVQ.load(out / "model.safetensors")
    whole = SFVQ(6, epochs=3, batch_size=32, random_state=1, verbose=False).fit(X)
    for b in whole.codebooks_:
        assert torch.equal(resumed.codebooks_[b], whole.codebooks_[b]), (b, seed_note)
    assert [h["loss"] for h in resumed.history_] == [h["loss"] for h in whole.history_]
