"""A killed job never leaves a folder that mixes two runs (issue 13, item 3).

Unit tests of the publishing protocol (:func:`sfvq.atomic.staged_dir`, :func:`~sfvq.atomic.recover_dir`,
:func:`~sfvq.atomic.clean_stale`), then real ``sfvq fit`` / ``sfvq run`` processes killed with SIGKILL at
several moments, and ffmpeg, which must die with the process that started it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sfvq import atomic
from sfvq.atomic import atomic_path, clean_stale, recover_dir, side_folders, staged_dir
from sfvq.runs import Run, RunError, run_entry, run_ids, staged_run

LINUX = sys.platform.startswith("linux")


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` -> its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


OLD_RUN = {
    "model.safetensors": "old model", "options.json": "{}", "summary.json": "{}", "curve.png": "old",
    "report.html": "old", "latents.npy": "old", "maps/map_5bit.png": "old", "maps/strip_2bit.png": "old",
    "edits/4bit_seg012.png": "old", "walks/walk.mp4": "old", ".latents.npy.123.abcdefgh.tmp": "junk",
}  # fmt: skip
THEIRS = {
    "notes.txt": "mine", "maps/my_favourite.png": "mine", "edits/sketch.png": "mine",
    "directions.safetensors": "saved", "augment/batch/labels.csv": "batch", "compare/index.html": "mine",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- protocol
def test_a_new_run_replaces_the_old_one_whole_and_keeps_what_is_not_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    write(out, {**OLD_RUN, **THEIRS})
    with staged_run(out) as st:
        assert st.path.parent == tmp_path and st.path.name.startswith(".run.sfvq-staging.")
        write(st.path, {"model.safetensors": "new model", "options.json": "{}", "maps/map_2bit.png": "new"})
        assert (out / "model.safetensors").read_text() == "old model"  # nothing visible before the end
    assert tree(out) == {
        "model.safetensors": b"new model", "options.json": b"{}", "maps/map_2bit.png": b"new",
        **{k: v.encode() for k, v in THEIRS.items()},
    }  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging or old folder left beside it
    assert st.final(st.path / "maps" / "map_2bit.png") == out / "maps" / "map_2bit.png"


def test_a_failed_job_leaves_the_old_run_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    write(out, OLD_RUN)
    before = tree(out)
    with pytest.raises(KeyboardInterrupt), staged_run(out) as st:
        write(st.path, {"model.safetensors": "half"})
        raise KeyboardInterrupt
    assert tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["run"]
    with pytest.raises(NotADirectoryError), staged_dir(tmp_path / "run" / "curve.png", "t1", run_entry):
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError), staged_dir(tmp_path / "file", "t1", run_entry):
        pass


def test_run_entry_sorts_what_a_new_run_supersedes() -> None:
    assert run_entry("model.safetensors") == "drop" and run_entry("latents.json") == "drop"
    assert run_entry("maps") == "merge" and run_entry("maps/map_3bit.png") == "drop"
    assert run_entry("maps/corner_6bit_012.png") == "drop" and run_entry("maps/mine.png") == "keep"
    assert run_entry("directions.safetensors") == "keep" and run_entry("augment") == "keep"
    assert run_entry(".summary.json.99.abcdefgh.tmp") == "drop" and run_entry("a/b/c.png") == "keep"


def test_recovery_finishes_or_undoes_a_killed_publish(tmp_path: Path) -> None:
    pid = dead_pid()
    out = tmp_path / "run"
    side = lambda kind, tag="t1": tmp_path / f".run.sfvq-{kind}.{pid}.{tag}"  # noqa: E731
    # killed between its two renames: the run moved aside, the complete new one ready
    write(side("old"), {**OLD_RUN, **THEIRS})
    write(side("ready"), {"model.safetensors": "new"})
    now = time.time() + 1  # as a process started after the killed job would see them
    done = recover_dir(out, run_entry, before=now)
    assert len(done) == 2 and tree(out) == {
        "model.safetensors": b"new",
        **{k: v.encode() for k, v in THEIRS.items()},
    }
    assert side_folders(out) == []
    # killed after moving the old run aside, before the new one was ready: the old one comes back
    write(side("old", "t2"), {"model.safetensors": "older"})
    write(side("staging", "t3"), {"model.safetensors": "half"})
    out2 = tmp_path / "run2"
    side("old", "t2").rename(tmp_path / f".run2.sfvq-old.{pid}.t2")
    side("staging", "t3").rename(tmp_path / f".run2.sfvq-staging.{pid}.t3")
    recover_dir(out2, run_entry, before=now)
    assert tree(out2) == {"model.safetensors": b"older"} and side_folders(out2) == []
    # killed before replacing anything: the ready folder loses to the run in place
    write(side("ready", "t4"), {"model.safetensors": "never published"})
    assert recover_dir(out, run_entry) == []  # changed since this process started: maybe a live job's
    recover_dir(out, run_entry, before=time.time() + 1)
    assert (out / "model.safetensors").read_text() == "new" and side_folders(out) == []
    # a live job's staging folder is left alone
    mine = tmp_path / f".run.sfvq-staging.{os.getpid()}.t5"
    mine.mkdir()
    assert recover_dir(out, run_entry, before=time.time() + 1) == [] and mine.is_dir()


def test_clean_stale_removes_only_dead_processes_temp_files(tmp_path: Path) -> None:
    pid = dead_pid()
    dead = tmp_path / f".model.safetensors.{pid}.abcdefgh.tmp"
    dead_dir = tmp_path / "augment" / f".batch.{pid}.abcdefgh.tmp"
    alive = tmp_path / f".model.safetensors.{os.getpid()}.abcdefgh.tmp"
    other = tmp_path / ".notes.tmp"
    for p in (dead, alive, other):
        p.write_text("x")
    (dead_dir / "images").mkdir(parents=True)
    assert clean_stale(tmp_path) == []  # made after this process started: maybe a live job's
    assert sorted(clean_stale(tmp_path, before=time.time() + 1)) == sorted([dead, dead_dir])
    assert alive.exists() and other.exists() and not dead.exists() and not dead_dir.exists()
    fresh = tmp_path / f".x.{pid}.abcdefgh.tmp"
    fresh.write_text("x")
    assert clean_stale(tmp_path, before=time.time() - 3600) == [] and fresh.exists()  # newer than the job
    with atomic_path(tmp_path / "y.bin") as tmp:
        assert tmp.name.startswith(f".y.bin.{os.getpid()}.")  # the owner is in the name


def test_run_open_refuses_a_folder_mixing_two_runs(tmp_path: Path) -> None:
    from sfvq.fitting import fit_curve, write_fit
    from sfvq.io import save_npy_with_sidecar, write_options

    X = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    with staged_run(tmp_path / "run") as st:
        write_fit(fit_curve(X, 2, epochs=1, batch_size=64), X, st.path, run_id=st.run_id)
        save_npy_with_sidecar(st.path / "latents.npy", X, {"run_id": st.run_id})
        write_options(st.path, "fit", {}, run_id=st.run_id)
    out = tmp_path / "run"
    ids = run_ids(out)
    assert set(ids) == {"model.safetensors", "summary.json", "options.json", "latents.json"}
    assert set(ids.values()) == {st.run_id}
    assert Run.open(out).latents.shape == (64, 3)
    # new latents beside the old model, as a killed `sfvq run` used to leave them
    save_npy_with_sidecar(out / "latents.npy", X[:32], {"run_id": "20990101T000000Zdeadbeef"})
    with pytest.raises(RunError, match="mixes files of different runs") as e:
        Run.open(out)
    assert e.value.param == "path" and "latents.json from run 20990101T000000Zdeadbeef" in str(e.value)


# ---------------------------------------------------------------------------------------------- kills
def sfvq(*args: object) -> list[str]:
    return [sys.executable, "-c", "from sfvq.cli import main; main()", *map(str, args)]


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 120) -> bool:
    """Start ``cmd``, SIGKILL it as soon as ``ready()``; False when it finished first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            assert time.monotonic() < deadline, f"{cmd} ran over {timeout} s"
            time.sleep(0.003)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def staged(parent: Path, name: str, entry: str) -> Callable[[], bool]:
    """Whether a staging folder of ``parent/name`` holds ``entry`` ("" : whether one exists)."""
    return lambda: any((p / entry).exists() for p in parent.glob(f".{name}.sfvq-staging.*"))


@pytest.mark.slow
def test_killed_fit_leaves_the_previous_run_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    X = np.random.default_rng(0).standard_normal((5_000, 8)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "run"
    fit = sfvq("fit", "--latents", tmp_path / "X.npy", "--quiet", "--outdir", out)
    assert subprocess.run([*fit, "--bits", "2", "--epochs", "1"], capture_output=True).returncode == 0
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    old_id = json.loads((out / "options.json").read_text())["run_id"]
    for moment in ("", "model.safetensors", "loss.png"):
        # every moment lies in the writing, after the fit: a small fit will do
        assert kill_when([*fit, "--bits", "4", "--epochs", "1"], staged(tmp_path, "run", moment)), moment
        # not one file of the killed job, not one missing (a fit's checkpoint, kept for --resume, aside)
        assert {k: v for k, v in tree(out).items() if k != "checkpoint.safetensors"} == before, moment
        assert set(run_ids(out).values()) == {old_id}
        monkeypatch.setattr(atomic, "STARTED", time.time())  # as a command started now
        Run.open(out)  # opens, and clears what the killed job left beside the run
        assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy", "run"], moment
    assert subprocess.run([*fit, "--bits", "3", "--epochs", "1"], capture_output=True).returncode == 0
    ids = run_ids(out)
    assert len(set(ids.values())) == 1 and old_id not in ids.values() and len(ids) == 3
    assert (out / "notes.txt").read_text() == "mine" and sorted(Run.open(out).model.codebooks_) == [2, 3]
    assert not (out / "checkpoint.safetensors").exists()  # a published run has nothing left to resume


@pytest.mark.slow
def test_killed_run_leaves_the_previous_run_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    job = sfvq("run", "--network", "builtin:faces-dcgan", "--bits", 2, "--n", 64, "--walk-frames", 2,
               "--edit-seeds", 0, "--sigmas", 0, "--quiet", "--outdir", out)  # fmt: skip
    assert subprocess.run(job, capture_output=True).returncode == 0
    before = tree(out)
    old_id = json.loads((out / "summary.json").read_text())["run_id"]
    assert set(run_ids(out).values()) == {old_id} and len(run_ids(out)) == 4
    for moment in ("latents.npy", "maps"):
        assert kill_when([*job, "--seed", "1"], staged(tmp_path, "run", moment)), moment
        assert tree(out) == before, moment
        monkeypatch.setattr(atomic, "STARTED", time.time())  # as a command started now
        run = Run.open(out)  # what `sfvq explore` opens: the old run, whole
        assert run.latents.shape[0] == 64 and not list(tmp_path.glob(".run.*"))


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="the parent-death signal is Linux's")
def test_ffmpeg_dies_with_its_parent(tmp_path: Path) -> None:
    """A walk's MP4 is encoded by an ffmpeg child; SIGKILL to the job must end ffmpeg too (it used to
    encode on for half a minute, into a temporary file nobody would remove)."""
    script = (
        "import sys, time, numpy as np\n"
        "from sfvq.render import Mp4Writer\n"
        "w = Mp4Writer(sys.argv[1], 24.0).__enter__()\n"
        "rng = np.random.default_rng(0)\n"
        "for _ in range(8):\n"
        "    w.add(rng.integers(0, 255, (5, 512, 512, 3), dtype=np.uint8))  # noise: slow to encode\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "walk.mp4")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().startswith("ready")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1
        ffmpeg = int(children[0])
        assert "ffmpeg" in Path(f"/proc/{ffmpeg}/cmdline").read_bytes().decode(errors="replace")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    def running() -> bool:
        try:
            state = Path(f"/proc/{ffmpeg}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"  # a zombie has ended, waiting for its new parent to reap it

    deadline = time.monotonic() + 3
    while running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not running(), "ffmpeg outlived the process that started it"
    leftovers = list(tmp_path.glob(".walk.mp4.*.tmp"))
    assert len(leftovers) == 1  # the killed writer's temporary file ...
    assert clean_stale(tmp_path, before=time.time() + 1) == leftovers  # ... goes once its owner is dead
    assert not leftovers[0].exists()
