"""Several processes through torch.distributed: the helpers in one process, and real gloo process groups
on 127.0.0.1 (torchrun) whose results must equal one process: fit, sharded sample (two simulated nodes)
and augment."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sfvq import SFVQ, dist

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- one process
def test_split_range_covers_everything_once():
    for n in (0, 1, 5, 17, 100):
        for parts in (1, 2, 3, 7):
            ranges = [dist.split_range(n, parts, i) for i in range(parts)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1


def test_helpers_answer_for_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init() is False and not dist.is_distributed()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    t = torch.arange(3.0)
    assert dist.all_reduce_sum_(t) is t and torch.equal(t, torch.arange(3.0))
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    assert [torch.equal(x, t) for x in dist.all_gather(t)] == [True]
    assert dist.my_range(10) == (0, 10) and dist.my_items([4, 5, 6]) == [4, 5, 6]
    assert dist.device_for_rank("cuda") == "cuda"
    assert dist.all_gather_object({"r": 0}) == [{"r": 0}]
    dist.raise_together(None)
    with pytest.raises(KeyError, match="boom"):
        dist.raise_together(KeyError("boom"))
    with dist.local():
        assert not dist.is_distributed() and dist.world_size() == 1
    assert dist._alone is False


def test_a_process_whose_peers_never_come_fails_within_the_join_timeout(monkeypatch):
    """Rank 0 of 2 alone: init gives up after the (short) join timeout with a message naming the address,
    instead of waiting DEFAULT_TIMEOUT_S for a peer that died before joining."""
    import time

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv(dist.INIT_TIMEOUT_ENV, "1")
    start = time.monotonic()
    with pytest.raises(
        RuntimeError, match=r"process 0 of 2 could not join the others at 127\.0\.0\.1:\d+ within 1 s"
    ):
        dist.init()
    assert time.monotonic() - start < 30
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv(dist.INIT_TIMEOUT_ENV, "soon")
    with pytest.raises(RuntimeError, match="SFVQ_INIT_TIMEOUT_S must be a number of seconds"):
        dist.init()


def test_init_names_what_torchrun_would_have_set(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="RANK is not set: start several processes with torchrun"):
        dist.init()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(RuntimeError, match="WORLD_SIZE must be an integer"):
        dist.init()


# ---------------------------------------------------------------------- several processes
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    """One thread a process, and gloo on the loopback device only."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _torchrun(args: list, *, nproc: int = 2, nnodes: int = 1, node_rank: int = 0, port: int) -> list[str]:
    # "--" before sfvq's arguments: torchrun would take sfvq's --n for an abbreviation of its own options
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(nproc), "--nnodes", str(nnodes), "--node-rank", str(node_rank),
        "--master-addr", "127.0.0.1", "--master-port", str(port),
        "-m", "sfvq", "--", *(str(a) for a in args),
    ]  # fmt: skip


def _communicate_all(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    """The output of every process; when one hangs past ``timeout`` (a peer died and it waits for it),
    all are killed and the test fails with what each printed, instead of hanging the suite."""
    import time

    end = time.monotonic() + timeout
    outs = []
    try:
        for p in procs:
            outs.append("".join(p.communicate(timeout=max(1.0, end - time.monotonic()))))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        texts = ["".join(x or "" for x in p.communicate()) for p in procs]
        pytest.fail("a node hung; what each printed:\n" + "\n---\n".join(t[-3000:] for t in texts))
    return outs


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_two_processes_fit_as_one(tmp_path):
    """torchrun --nproc-per-node 2 -m sfvq fit: the batches are shared and the gradients summed, so the
    curve equals a one-process fit up to the order of float additions (stated tolerance: 1e-5 on
    corners of size ~1); rank 0 alone writes, and the checkpoint is gone once the run is written."""
    X = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32) * np.linspace(0.5, 2, 8)
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    args = ["fit", "--latents", tmp_path / "x.npy", "--bits", 4, "--epochs", 2, "--batch-size", 256,
            "--seed", 3, "--checkpoint-every", 5, "--quiet", "--outdir", tmp_path / "fit"]  # fmt: skip
    _run(_torchrun(args, port=_free_port()))
    two = SFVQ.load(tmp_path / "fit" / "model.safetensors")
    one = SFVQ(4, epochs=2, batch_size=256, random_state=3, verbose=False).fit(X.astype(np.float32))
    for b in (2, 3, 4):
        torch.testing.assert_close(two.codebooks_[b], one.codebooks_[b], atol=1e-5, rtol=0)
    for h2, h1 in zip(two.history_, one.history_, strict=True):
        assert h2["mse"] == pytest.approx(h1["mse"], rel=1e-5)
        assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-5)
    assert two.total_variance_ == pytest.approx(one.total_variance_, rel=1e-8)
    names = sorted(p.name for p in (tmp_path / "fit").iterdir())
    assert "checkpoint.safetensors" not in names and not [n for n in names if n.startswith(".")]
    assert {"model.safetensors", "summary.json", "options.json"} <= set(names)


@pytest.mark.slow
def test_two_nodes_on_loopback_sample_the_files_of_one_process(tmp_path):
    """Two torchrun invocations (--nnodes 2, one process each) meet on 127.0.0.1 and write the shards
    of `sfvq sample --shard-rows`: byte for byte those of one process, and row i is row i of the one
    seeded stream (the plain latents.npy)."""
    from sfvq.generators.registry import generator_sha256, load_generator
    from sfvq.latents import sample_latent_shards, sample_latents
    from sfvq.shards import open_manifest

    net = "builtin:faces-dcgan"
    args = ["sample", "--network", net, "--space", "z", "--n", 700, "--seed", 5, "--batch-size", 64,
            "--shard-rows", 150, "--outdir", tmp_path / "two"]  # fmt: skip
    port = _free_port()
    cmds = [_torchrun(args, nproc=1, nnodes=2, node_rank=r, port=port) for r in (0, 1)]
    out = subprocess.PIPE
    procs = [subprocess.Popen(c, env=_env(), cwd=ROOT, stdout=out, stderr=out, text=True) for c in cmds]
    outs = _communicate_all(procs, timeout=240)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)

    G = load_generator(net)
    one = sample_latent_shards(
        G, tmp_path / "one", 700, "z", seed=5, batch_size=64, shard_rows=150, progress=False,
        generator_sha256=generator_sha256(net),
    )  # fmt: skip
    files = sorted(p.relative_to(one.parent).as_posix() for p in one.parent.rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * 5  # manifest + 5 shards with their sidecars
    for f in files:
        assert (tmp_path / "two" / f).read_bytes() == (one.parent / f).read_bytes(), f
    rows = open_manifest(tmp_path / "two" / "manifest.json").read(0, 700).numpy()
    assert np.array_equal(rows, sample_latents(G, 700, "z", seed=5, batch_size=64, progress=False))
    opts = json.loads((tmp_path / "two" / "options.json").read_text())
    assert opts["options"]["shard_rows"] == 150


@pytest.mark.slow
def test_two_processes_augment_as_one(tmp_path):
    """torchrun -m sfvq augment: each process renders its batches; every file equals one process's."""
    from click.testing import CliRunner

    from sfvq.cli import main
    from sfvq.generators.registry import load_generator
    from sfvq.io import save_npy_with_sidecar
    from sfvq.spaces import LatentSpace

    net = "builtin:faces-dcgan"
    space = LatentSpace(load_generator(net), "z")
    X = space.sample(200, seed=0, progress=False)  # (200, z_dim)
    model = SFVQ(3, epochs=1, batch_size=64, random_state=0, verbose=False).fit(X)
    model.metadata_ = {"network": net, "space": space.describe()}
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.safetensors")
    space.save(run)
    save_npy_with_sidecar(run / "latents.npy", X, {"space": space.describe()})
    args = ["augment", "--model", run, "--segment", "3:2", "--n", 11, "--batch-size", 3, "--jitter", 0.2,
            "--seed", 4, "--noise-mode", "random"]  # fmt: skip
    _run(_torchrun([*args, "--outdir", tmp_path / "two"], port=_free_port()))
    res = CliRunner().invoke(main, [str(a) for a in [*args, "--outdir", tmp_path / "one"]])
    assert res.exit_code == 0, res.output

    def files(d: Path) -> dict[str, bytes]:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    one.pop("options.json"), two.pop("options.json")  # names the output folder
    assert len([f for f in one if f.startswith("images/")]) == 11
    assert one == two


_MISMATCH_SCRIPT = r"""
import sys
from pathlib import Path

import numpy as np
from sfvq import SFVQ, dist

dist.init()
r = dist.rank()
X = np.random.default_rng(r).standard_normal((200, 4)).astype(np.float32)  # other rows on each rank
messages = []
for data in (X, X[: 100 + r]):
    try:
        SFVQ(2, epochs=1, verbose=False, random_state=0).fit(data)
    except ValueError as e:
        messages.append(str(e))
same = SFVQ(2, epochs=1, verbose=False, random_state=0).fit(np.arange(200, dtype=np.float32).reshape(50, 4))
line = " | ".join(messages) + f" | same data fits: {same.n_samples_fit_}"
Path(sys.argv[0]).with_name(f"rank{r}.txt").write_text(line)  # one file each: torchrun interleaves stdout
dist.shutdown()
"""


@pytest.mark.slow
def test_processes_given_different_data_are_told_so(tmp_path):
    script = tmp_path / "mismatch.py"
    script.write_text(_MISMATCH_SCRIPT)
    run = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd = [*run, "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script)]
    _run(cmd)
    for r in (0, 1):
        line = (tmp_path / f"rank{r}.txt").read_text()
        assert "different data (their first rows differ)" in line
        assert "different data: N from 100 to 101" in line
        assert line.endswith("same data fits: 50")


@pytest.mark.slow
def test_two_processes_run_the_main_job_as_one(tmp_path):
    """torchrun -m sfvq run: rank 0 samples and fits, the processes share the renders (corners, walk
    frames, edit grids, k-means centroids, full-size corners), rank 0 assembles and reports; every picture
    and the model equal one process's byte for byte (the same --render-batch-size); what differs is only
    the run id and the timings."""
    args = ["run", "--network", "builtin:avatars-sg2", "--bits", 3, "--n", 200, "--epochs", 1,
            "--walk-frames", 5, "--edit-seeds", "0-1", "--sigmas", "-3,0,3", "--render-batch-size", 3,
            "--time-budget", 0, "--full-res-corners", "0-4", "--quiet", "--device", "cpu"]  # fmt: skip
    cmds = [
        _torchrun([*args, "--outdir", tmp_path / "two"], port=_free_port()),
        [sys.executable, "-m", "sfvq", *(str(a) for a in args), "--outdir", str(tmp_path / "one")],
    ]
    out = subprocess.PIPE
    procs = [subprocess.Popen(c, env=_env(), cwd=ROOT, stdout=out, stderr=out, text=True) for c in cmds]
    outs = _communicate_all(procs, timeout=240)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)

    def files(d: Path) -> dict[str, bytes]:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert sorted(one) == sorted(two) and not [f for f in two if "/." in f or f.startswith(".")]
    stamped = {"model.safetensors", "latents.json", "options.json", "summary.json", "report.html"}
    stamped |= {"report.json"}  # the run id and the timings
    pictures = {f"maps/{kind}_{b}bit.png" for kind in ("map", "strip") for b in (2, 3)}
    pictures |= {f"maps/corner_3bit_{k:03d}.png" for k in range(5)} | {"walks/walk.gif", "walks/walk.mp4"}
    pictures |= {f"edits/3bit_seg{i:03d}.png" for i in range(7)}
    assert pictures <= set(one)
    assert {f: one[f] for f in one if f not in stamped} == {f: two[f] for f in two if f not in stamped}
    m1, m2 = (
        SFVQ.load(tmp_path / "one" / "model.safetensors"),
        SFVQ.load(tmp_path / "two" / "model.safetensors"),
    )
    for b in (2, 3):
        assert torch.equal(m1.codebooks_[b], m2.codebooks_[b])
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert s1["smoothness"] == s2["smoothness"] and s1["segments"] == s2["segments"]
    assert s1["render"]["plan"]["edit_segments"] == s2["render"]["plan"]["edit_segments"] == list(range(7))
    assert s1["run_id"] != s2["run_id"]


_EVALUATE_SCRIPT = r"""
import sys

import numpy as np

import sfvq.cli.compare as compare_cli
from sfvq.cli import main
from sfvq.evaluation import Scorers


class Attributes:
    # Image statistics in float64, image by image: the same scores however the images are batched.
    def score(self, images):
        x = images.double().numpy()  # (N, C, H, W)
        W = x.shape[-1]
        out = {name: [] for name in ("age", "gender", "smile", "yaw")}
        for im in x:
            out["age"].append(30 + 20 * im.mean())
            out["gender"].append((im[2] - im[0]).mean())
            out["smile"].append(im[:, :, W // 2 :].mean())
            out["yaw"].append(im[..., : W // 2].mean() - im[..., W // 2 :].mean())
        return {k: np.array(v) for k, v in out.items()}


class Identity:
    def embed(self, images):
        x = images.double().numpy()
        return np.stack([im[:, ::4, ::4].reshape(-1) for im in x])

    @staticmethod
    def distance(a, b):
        return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


def ssim(a, b):
    return np.array([1 - np.abs(x - y).mean() for x, y in zip(a.double().numpy(), b.double().numpy())])


compare_cli._scorers = lambda with_ssim: Scorers(Attributes(), Identity(), ssim if with_ssim else None)
main(sys.argv[1:], prog_name="sfvq")
"""


@pytest.mark.slow
def test_two_processes_evaluate_as_one(tmp_path):
    """torchrun ... evaluate: rank 0 builds the directions, the processes share the screening (by
    candidate) and the measurements (by render batches of seeds); results, table and figures equal one
    process's (injected per-image scorers, as the real ones score image by image)."""
    script = tmp_path / "evaluate.py"
    script.write_text(_EVALUATE_SCRIPT)
    args = ["evaluate", "--network", "builtin:faces-dcgan", "--methods", "sefa,ganspace-latent", "--k", 3,
            "--n", 6, "--screen-n", 3, "--steps", "1,2", "--bootstrap", 20, "--n-samples", 200,
            "--batch-size", 2]  # fmt: skip
    two = ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    cmds = [  # "--": torchrun would take --n for one of its own options
        [sys.executable, "-m", "torch.distributed.run", *two, str(script), "--", *map(str, args)],
        [sys.executable, str(script), *map(str, args)],
    ]
    cmds[0] += ["--outdir", str(tmp_path / "two")]
    cmds[1] += ["--outdir", str(tmp_path / "one")]
    out = subprocess.PIPE
    procs = [subprocess.Popen(c, env=_env(), cwd=ROOT, stdout=out, stderr=out, text=True) for c in cmds]
    outs = _communicate_all(procs, timeout=240)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)

    def files(d: Path) -> dict[str, bytes]:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert sorted(one) == sorted(two)
    r1, r2 = (json.loads(d.pop("results.json")) for d in (one, two))
    for r in (r1, r2):  # timings
        r.pop("seconds")
        for m in r["methods"].values():
            m.pop("seconds")
    assert r1 == r2 and len(r1["rows"]) == 2 * 4
    assert r1["methods"]["sefa"]["screen_gains"] != np.zeros((3, 2, 4)).tolist()
    one.pop("options.json"), two.pop("options.json")  # the output folder, the time taken
    assert one == two and "figures/sefa.png" in one and "table.md" in one
