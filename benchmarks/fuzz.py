"""Fuzz campaign for the generator loaders (issue 13): hostile and mutated files, never anything but a
``GeneratorError`` or a successful load.

    python -m benchmarks.fuzz --n 5000                  # the long campaign, a table at the end
    python -m benchmarks.fuzz --n 300 --jobs 2 --json out.json --keep-failures failures/

Seeds: the four fixture networks of ``shared/fixtures/stylegan`` written as NVIDIA-layout pickles by
``tests/generators/pkl_writer.py`` (protocol 3 and 4, plus frame-free copies of the protocol-4 ones so that
length-changing mutations stay parseable), the malicious ``evil.pkl``, and a small rosinality checkpoint
(a torch zip). Each mutation is drawn from ``random.Random(f"{seed}:{index}")``, so a campaign is
deterministic and any one file can be rebuilt from its index.

Mutations of a pickle: bit flips, bytes set to edge values, truncation, span deletion/duplication, an
opcode byte replaced, an opcode dropped, duplicated or swapped, a hostile opcode inserted, an integer
replaced by an edge value (0, -1, 2**17, 2**31, 2**63, ...: tensor sizes and strides, kwargs), and
semantic mutations of G_ema's init kwargs and module attributes (a value replaced by an edge value of
another type, a key dropped or added) written through ``pkl_writer``. Of the checkpoint: bit flips of the
archive, pickle mutations of its ``data.pkl`` (re-zipped), and entries recompressed into a zip bomb.

Each file is loaded by ``sfvq.generators.load_generator`` in a child forked from a worker process (the
worker imports torch once), under ``RLIMIT_AS`` = the worker's size + ``--mem-mib`` and a wall-clock
timeout; a loaded generator also renders one image (``--no-forward`` skips that). Outcome kinds:

* ``loaded`` / ``generator_error``: the two acceptable outcomes;
* ``out_of_memory``: a GeneratorError converted from a MemoryError (the budget should have refused first);
* ``escape``: any other exception left ``load_generator`` (the site is recorded);
* ``forward_error``: it loaded, but rendering one image raised;
* ``timeout`` / ``crash``: the child ran out of time, or died without a report (signal, abort).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickletools
import random
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "stylegan"
TEST_HELPERS = ROOT / "tests" / "generators"
SEED_FIXTURES = ("sg2ada_uncond", "sg2ada_cond", "sg3_t", "sg3_r")
OK_KINDS = ("loaded", "generator_error")
KINDS = ("loaded", "generator_error", "out_of_memory", "escape", "forward_error", "timeout", "crash")

EDGE_INTS = (0, 1, -1, 2, 3, 7, 255, 256, 4096, 65535, 2**16, 2**17, 2**20, 2**31 - 1, 2**31, 2**32, 2**62,
             2**63, -(2**31), 10**9)  # fmt: skip
EDGE_VALUES: tuple[Any, ...] = (
    0, -1, 1, 2**17, 2**31, 2**40, 1e308, float("inf"), float("nan"), 0.5, -0.5, "x", "", None, [], {}, True,
    False, [1, 3, 3, 1] * 64, "lrelu", "skip", [[[[[]]]]], {"a": {"b": {"c": 1}}},
)  # fmt: skip
HOSTILE_SNIPPETS = (
    b"b", b"R", b"0", b"2", b")", b"}", b"]", b"(", b"t", b"s", b"u", b"a", b"e", b"\x81", b"\x92",
    b"N", b"\x88", b"\x89", b"(t", b"}b", b")R", b"]b", b"h\x00", b"h\x01b", b"\x94", b"\x93", b"\x85b",
)  # fmt: skip


@dataclass
class Outcome:
    """One mutated file and what loading it did."""

    index: int
    seed: str
    mutation: str
    kind: str
    error: str = ""  # exception class
    message: str = ""  # its first 600 characters
    where: str = ""  # file:line of the innermost sfvq frame, for escapes and forward errors
    seconds: float = 0.0
    max_rss_mib: float = 0.0
    size: int = 0
    path: str = ""


# --------------------------------------------------------------------------------------------------
# Seeds and mutations
# --------------------------------------------------------------------------------------------------


def _helpers() -> None:
    if str(TEST_HELPERS) not in sys.path:
        sys.path.insert(0, str(TEST_HELPERS))


def strip_frames(data: bytes) -> bytes:
    """A protocol-4+ pickle without its FRAME opcodes (equivalent; frames only group reads)."""
    cuts = [pos for op, _, pos in pickletools.genops(data) if op.name == "FRAME"]
    out = bytearray(data)
    for pos in reversed(cuts):
        del out[pos : pos + 9]
    return bytes(out)


def _rosinality_checkpoint(path: Path) -> None:
    _helpers()
    import torch
    from test_rosinality import make_g_ema  # the tested layout helper of the rosinality tests

    sd = make_g_ema({4: 16, 8: 16, 16: 8}, style_dim=16, n_mlp=2, seed=3)
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(16)}, path)


@dataclass
class Seed:
    """One seed file: its bytes, opcode positions (pickles) and what can be done to it."""

    name: str
    path: Path
    kind: str  # "pickle", "frames" (a pickle with frames: byte-level mutations only), "zip"
    data: bytes = b""
    ops: list[tuple[str, int, int]] = field(default_factory=list)  # (opcode name, start, end)
    fixture: str | None = None  # the fixture it was written from (for kwargs mutations)
    fixture_data: tuple[str, Any] | None = None  # its config.json text and weights (read once)


def _opcodes(data: bytes) -> list[tuple[str, int, int]]:
    ops = list(pickletools.genops(data))
    return [
        (op.name, pos, ops[i + 1][2] if i + 1 < len(ops) else len(data)) for i, (op, _, pos) in enumerate(ops)
    ]


def make_seeds(directory: Path) -> list[Seed]:
    """Write the seed files into ``directory`` and return them (deterministic)."""
    _helpers()
    from pkl_writer import write_stylegan_pkl

    directory.mkdir(parents=True, exist_ok=True)
    seeds: list[Seed] = []
    for name in SEED_FIXTURES:
        path = write_stylegan_pkl(FIXTURES / name, directory / f"{name}.pkl")
        data = path.read_bytes()
        if data[1] >= 4:
            seeds.append(Seed(f"{name}-frames", path, "frames", data, fixture=name))
            plain = directory / f"{name}-noframes.pkl"
            plain.write_bytes(strip_frames(data))
            path, data = plain, plain.read_bytes()
        from safetensors.torch import load_file

        fixture_data = (
            (FIXTURES / name / "config.json").read_text(),
            load_file(FIXTURES / name / "weights.safetensors"),
        )
        seeds.append(
            Seed(name, path, "pickle", data, _opcodes(data), fixture=name, fixture_data=fixture_data)
        )
    evil = directory / "evil.pkl"
    shutil.copyfile(FIXTURES / "evil.pkl", evil)
    seeds.append(Seed("evil", evil, "pickle", evil.read_bytes(), _opcodes(evil.read_bytes())))
    ckpt = directory / "rosinality.pt"
    _rosinality_checkpoint(ckpt)
    seeds.append(Seed("rosinality", ckpt, "zip", ckpt.read_bytes()))
    return seeds


def _encode_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


_INT_OPS = ("BININT", "BININT1", "BININT2", "LONG1")
_OPCODE_BYTES = sorted({op.code.encode("latin-1")[0] for op in pickletools.opcodes})


def _byte_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    out = bytearray(data)
    op = rng.choice(("bitflip", "edge-bytes", "truncate", "delete-span", "duplicate-span"))
    if op == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    elif op == "edge-bytes":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)))
    elif op == "truncate":
        del out[rng.randrange(2, len(out)) :]
    else:
        i = rng.randrange(len(out))
        span = bytes(out[i : i + rng.randint(1, 64)])
        if op == "delete-span":
            del out[i : i + len(span)]
        else:
            out[i:i] = span
    return bytes(out), op


def _pickle_mutation(rng: random.Random, data: bytes, ops: list[tuple[str, int, int]]) -> tuple[bytes, str]:
    """One structural mutation of a (frame-free) pickle."""
    op = rng.choice(("int", "int", "int", "opcode", "drop-op", "dup-op", "swap-ops", "insert", "bytes"))
    if op == "bytes":
        return _byte_mutation(rng, data)
    body = ops[1:-1] or ops  # keep PROTO and STOP most of the time
    if op == "int":
        ints = [o for o in body if o[0] in _INT_OPS]
        _, start, end = rng.choice(ints or body)
        return data[:start] + _encode_int(rng.choice(EDGE_INTS)) + data[end:], op
    if op == "swap-ops" and len(ops) >= 4:
        i = rng.randrange(1, len(ops) - 2)
        (_, s1, e1), (_, s2, e2) = ops[i], ops[i + 1]
        return data[:s1] + data[s2:e2] + data[s1:e1] + data[e2:], op
    _, start, end = rng.choice(body)
    if op == "opcode":
        return data[:start] + bytes([rng.choice(_OPCODE_BYTES)]) + data[start + 1 :], op
    if op == "drop-op":
        return data[:start] + data[end:], op
    if op == "dup-op":
        return data[:end] + data[start:end] + data[end:], op
    return data[:start] + rng.choice(HOSTILE_SNIPPETS) + data[start:], op


def _kwargs_paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _kwargs_paths(v, (*prefix, k))


def _kwargs_mutation(rng: random.Random, seed: Seed) -> tuple[bytes, str]:
    """Mutate G_ema's init kwargs (or one module attribute) of the seed's fixture and write a pickle of
    G_ema alone (pkl_writer's layout, without G and D: the loaders read only G_ema)."""
    _helpers()
    import pkl_writer

    assert seed.fixture is not None and seed.fixture_data is not None
    cfg_text, state_dict = seed.fixture_data
    cfg = json.loads(cfg_text)
    modules = cfg["modules"]
    if rng.random() < 0.75:
        target, what = modules["G_ema"]["init_kwargs"], "kwargs"
    else:
        path = rng.choice(sorted(p for p, m in modules.items() if m.get("attributes")))
        target, what = modules[path]["attributes"], "attribute"
    paths = list(_kwargs_paths(target))
    op = rng.choice(("set", "set", "set", "drop", "add"))
    if op == "add" or not paths:
        key = rng.choice(("unknown_option", "channels_last", "num_fp16_res", "w_avg_beta"))
        target[key] = rng.choice(EDGE_VALUES)
    else:
        key_path = rng.choice(paths)
        parent = target
        for k in key_path[:-1]:
            parent = parent[k]
        if op == "drop":
            del parent[key_path[-1]]
        else:
            parent[key_path[-1]] = rng.choice(EDGE_VALUES)
    writer = pkl_writer._Writer("numpy.core", "plain", False, pkl_writer.DECOY_MODULE_SRC)
    top = {"G_ema": writer.network(cfg, state_dict), "training_set_kwargs": cfg.get("training_set_kwargs")}
    return pkl_writer.dumps(top, int(cfg.get("pickle_protocol", 3))), f"{what}-{op}"


_BOMBS: dict[tuple[str, int, str], bytes] = {}  # (seed, MiB, entry) -> archive: a bomb is slow to deflate


def _zip_mutation(rng: random.Random, seed: Seed) -> tuple[bytes, str]:
    op = rng.choice(("bytes", "pickle", "pickle", "bomb", "deflate"))
    if op == "bytes":
        data, sub = _byte_mutation(rng, seed.data)
        return data, f"zip-{sub}"
    if op == "bomb":
        mib, entry = rng.choice((64, 300)), rng.choice(("0", "pad"))
        key = (seed.name, mib, entry)
        if key not in _BOMBS:
            _BOMBS[key] = _zip_with_bomb(seed.data, mib, entry)
        return _BOMBS[key], f"zip-bomb-{mib}MiB"
    src = zipfile.ZipFile(io.BytesIO(seed.data))
    names = src.namelist()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for name in names:
            payload = src.read(name)
            compress = zipfile.ZIP_STORED
            if op == "pickle" and name.endswith("/data.pkl"):
                payload, sub = _pickle_mutation(rng, payload, _opcodes(payload))
                op = f"pickle-{sub}"
            if op == "deflate":
                compress = zipfile.ZIP_DEFLATED
            dst.writestr(_stamped(name), payload, compress_type=compress)
    return out.getvalue(), f"zip-{op}"


def _zip_with_bomb(data: bytes, mib: int, entry: str) -> bytes:
    """The archive ``data`` plus a deflated record ``<prefix>/data/<entry>`` of ``mib`` MiB of zeros."""
    src = zipfile.ZipFile(io.BytesIO(data))
    names = src.namelist()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compresslevel=1) as dst:
        for name in names:
            if name != f"{names[0].split('/')[0]}/data/{entry}":
                dst.writestr(_stamped(name), src.read(name))
        _write_bomb(dst, f"{names[0].split('/')[0]}/data/{entry}", mib)
    return out.getvalue()


def _stamped(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date (a plain name gets the current time: the archive would vary)."""
    return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))


def _write_bomb(zf: zipfile.ZipFile, name: str, mib: int) -> None:
    """A deflated entry of ``mib`` MiB of zeros (a zip bomb: about 4.5 KiB per MiB at level 1)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED  # at the archive's compresslevel (1: fast, still 230-fold)
    with zf.open(info, "w", force_zip64=True) as f:
        block = bytes(2**20)
        for _ in range(mib):
            f.write(block)


def write_zip_bomb(path: Path, mib: int) -> Path:
    """A torch checkpoint of about 4.5 KiB per MiB whose one storage is ``mib`` MiB of deflated zeros:
    ``torch.save`` of a 7-float tensor, with the storage's element count in ``data.pkl`` raised to match
    and its record replaced by the bomb (``torch.load`` inflates it whole)."""
    import torch

    buf = io.BytesIO()
    torch.save({"g_ema": {"w": torch.zeros(7)}}, buf)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", compresslevel=1) as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                _write_bomb(dst, info.filename, mib)
                continue
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                at = data.index(b"K\x07")  # the storage's element count, in its persistent id
                data = data[:at] + b"J" + struct.pack("<i", mib * 2**20 // 4) + data[at + 2 :]
            dst.writestr(_stamped(info.filename), data)
    return path


def mutations(
    seeds: Sequence[Seed], n: int, seed: int, start: int = 0
) -> Iterator[tuple[int, str, str, bytes]]:
    """``(index, seed name, mutation, bytes)`` for indices ``start .. n-1``, each from its own RNG."""
    for i in range(start, n):
        rng = random.Random(f"{seed}:{i}")
        s = rng.choice(seeds)
        if s.kind == "zip":
            data, what = _zip_mutation(rng, s)
        elif s.kind == "frames":
            data, what = _byte_mutation(rng, s.data)
        elif s.fixture is not None and rng.random() < 0.3:
            data, what = _kwargs_mutation(rng, s)
        else:
            data, what = _pickle_mutation(rng, s.data, s.ops)
        yield i, s.name, what, data


# --------------------------------------------------------------------------------------------------
# Loading in a limited child
# --------------------------------------------------------------------------------------------------


def _vm_bytes() -> int:
    """This process's virtual size (the RLIMIT_AS baseline)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _innermost_site(exc: BaseException) -> str:
    sites = [
        f"{Path(fr.filename).name}:{fr.lineno} ({fr.name})" for fr in traceback.extract_tb(exc.__traceback__)
    ]
    own = [
        f"{Path(fr.filename).name}:{fr.lineno} ({fr.name})"
        for fr in traceback.extract_tb(exc.__traceback__)
        if "/sfvq/" in fr.filename
    ]
    return (own or sites or ["?"])[-1]


def _load_in_child(path: str, forward: bool) -> dict[str, Any]:
    from sfvq.generators import GeneratorError, load_generator

    try:
        gen = load_generator(path)
    except GeneratorError as e:
        text = str(e)
        kind = "out_of_memory" if "ran out of memory" in text else "generator_error"
        return {"kind": kind, "error": type(e).__name__, "message": text[:600]}
    except BaseException as e:  # noqa: BLE001 (what the campaign looks for)
        return {
            "kind": "escape",
            "error": type(e).__name__,
            "message": str(e)[:600],
            "where": _innermost_site(e),
        }
    if forward:
        try:
            import torch

            z = torch.from_numpy(gen.z_for_seeds([0]))
            c = 0 if getattr(gen, "c_dim", 0) else None
            gen.synthesis(gen.mapping(z, c))
        except BaseException as e:  # noqa: BLE001
            return {
                "kind": "forward_error",
                "error": type(e).__name__,
                "message": str(e)[:600],
                "where": _innermost_site(e),
            }
    return {"kind": "loaded"}


def load_limited(path: str, timeout: float, mem_bytes: int, forward: bool) -> dict[str, Any]:
    """Load ``path`` in a forked child under RLIMIT_AS (this process's size + ``mem_bytes``) and a
    wall-clock ``timeout``; returns the outcome as a dict (see :class:`Outcome`). POSIX only."""
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: limit itself, load, report, exit without cleanup
        os.close(read_fd)
        try:
            limit = _vm_bytes() + mem_bytes
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            t0 = time.perf_counter()
            result = _load_in_child(path, forward)
            result["seconds"] = time.perf_counter() - t0
            payload = json.dumps(result).encode()
        except BaseException as e:  # noqa: BLE001
            payload = json.dumps(
                {"kind": "crash", "error": type(e).__name__, "message": str(e)[:600]}
            ).encode()
        with contextlib.suppress(OSError):
            os.write(write_fd, payload)
        os._exit(0)
    os.close(write_fd)
    chunks: list[bytes] = []
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(read_fd, selectors.EVENT_READ)
        while True:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                timed_out = True
                break
            if not sel.select(left):
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os.close(read_fd)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    rss = usage.ru_maxrss / 1024  # KiB on Linux
    if timed_out:
        return {
            "kind": "timeout",
            "seconds": elapsed,
            "max_rss_mib": rss,
            "message": f"no result in {timeout} s",
        }
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return {"kind": "crash", "seconds": elapsed, "max_rss_mib": rss, "message": f"died (signal {sig})"}
    result.setdefault("seconds", elapsed)
    result["max_rss_mib"] = rss
    return result


def worker_main(timeout: float, mem_mib: int, forward: bool) -> None:
    """Read ``{"index", "path"}`` JSON lines on stdin, answer one outcome JSON line each (stdout)."""
    import torch

    torch.set_num_threads(1)
    import sfvq.generators.registry  # noqa: F401 (imported once here, not in every child)
    import sfvq.generators.rosinality  # noqa: F401
    import sfvq.generators.stylegan3  # noqa: F401
    import sfvq.generators.stylegan_pkl  # noqa: F401

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but results on the protocol stream
    for line in sys.stdin:
        task = json.loads(line)
        result = load_limited(task["path"], timeout, mem_mib * 2**20, forward)
        result["index"] = task["index"]
        out.write(json.dumps(result) + "\n")
        out.flush()


class _Worker:
    def __init__(self, timeout: float, mem_mib: int, forward: bool) -> None:
        cmd = [sys.executable, "-m", "benchmarks.fuzz", "--worker", "--timeout", str(timeout)]
        cmd += ["--mem-mib", str(mem_mib)] + ([] if forward else ["--no-forward"])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env
        )
        self.busy: tuple[int, str, str, str, int] | None = None

    def send(self, task: tuple[int, str, str, str, int]) -> None:
        self.busy = task
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"index": task[0], "path": task[3]}) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run_files(
    tasks: Iterator[tuple[int, str, str, str, int]] | Sequence[tuple[int, str, str, str, int]],
    *,
    jobs: int = 2,
    timeout: float = 30.0,
    mem_mib: int = 2048,
    forward: bool = True,
    on_result: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Load each task ``(index, seed name, mutation, path, size)`` in a limited child of one of ``jobs``
    worker processes; returns the outcomes in index order."""
    workers = [_Worker(timeout, mem_mib, forward) for _ in range(max(1, jobs))]
    outcomes: list[Outcome] = []
    pending = iter(tasks)
    sel = selectors.DefaultSelector()
    try:
        for w in workers:
            assert w.proc.stdout is not None
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            task = next(pending, None)
            if task is not None:
                w.send(task)
        while any(w.busy for w in workers):
            for key, _ in sel.select(timeout + 60):
                w = key.data
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    raise RuntimeError(f"fuzz worker exited (code {w.proc.poll()})")
                res = json.loads(line)
                idx, seed_name, what, path, size = w.busy
                o = Outcome(
                    index=idx,
                    seed=seed_name,
                    mutation=what,
                    kind=res["kind"],
                    error=res.get("error", ""),
                    message=res.get("message", ""),
                    where=res.get("where", ""),
                    seconds=float(res.get("seconds", 0.0)),
                    max_rss_mib=float(res.get("max_rss_mib", 0.0)),
                    size=size,
                    path=path,
                )
                outcomes.append(o)
                w.busy = None
                if on_result is not None:
                    on_result(o)
                task = next(pending, None)
                if task is not None:
                    w.send(task)
    finally:
        for w in workers:
            with contextlib.suppress(Exception):
                w.close()
        sel.close()
    return sorted(outcomes, key=lambda o: o.index)


def run_campaign(
    n: int,
    *,
    seed: int = 0,
    jobs: int = 2,
    timeout: float = 30.0,
    mem_mib: int = 2048,
    forward: bool = True,
    workdir: Path | None = None,
    keep_failures: Path | None = None,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Make ``n`` seeded mutations of the seeds and load each in a limited child (see the module docs).

    Mutated files are written one at a time into ``workdir`` and deleted once loaded; with
    ``keep_failures`` the files of unacceptable outcomes are copied there.
    """
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="sfvq-fuzz-")) if workdir is None else Path(workdir)
    try:
        seeds = make_seeds(work / "seeds")
        files = work / "files"
        files.mkdir(parents=True, exist_ok=True)

        def tasks() -> Iterator[tuple[int, str, str, str, int]]:
            for i, name, what, data in mutations(seeds, n, seed):
                path = files / f"m{i:06d}{'.pt' if name == 'rosinality' else '.pkl'}"
                path.write_bytes(data)
                yield i, name, what, str(path), len(data)

        def done(o: Outcome) -> None:
            if o.kind not in OK_KINDS and keep_failures is not None:
                keep_failures.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(o.path, keep_failures / Path(o.path).name)
            Path(o.path).unlink(missing_ok=True)
            if progress is not None:
                progress(o)

        return run_files(
            tasks(), jobs=jobs, timeout=timeout, mem_mib=mem_mib, forward=forward, on_result=done
        )
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Counts by kind, seed and mutation family; the slowest load and the largest peak RSS."""
    by_kind = Counter(o.kind for o in outcomes)
    slowest = max(outcomes, key=lambda o: o.seconds, default=None)
    largest = max(outcomes, key=lambda o: o.max_rss_mib, default=None)
    return {
        "n": len(outcomes),
        "by_kind": {k: by_kind.get(k, 0) for k in KINDS},
        "by_seed": {
            s: dict(Counter(o.kind for o in outcomes if o.seed == s))
            for s in sorted({o.seed for o in outcomes})
        },
        "by_mutation": dict(Counter(o.mutation.split("-")[0] for o in outcomes)),
        "errors": dict(Counter(o.error for o in outcomes if o.kind == "generator_error").most_common()),
        "max_seconds": slowest.seconds if slowest else 0.0,
        "slowest": f"#{slowest.index} {slowest.seed} {slowest.mutation} ({slowest.kind})" if slowest else "",
        "max_rss_mib": largest.max_rss_mib if largest else 0.0,
        "largest": f"#{largest.index} {largest.seed} {largest.mutation} ({largest.kind})" if largest else "",
        "bad": [asdict(o) for o in outcomes if o.kind not in OK_KINDS],
    }


def format_table(summary: dict[str, Any], seconds: float, note: str = "") -> str:
    """The campaign's figures as text."""
    n = max(1, summary["n"])
    lines = [
        f"{summary['n']} mutated files in {seconds:.0f} s{f' ({note})' if note else ''}",
        "",
        f"{'outcome':<18}{'files':>8}{'share':>9}",
    ]
    for kind, count in summary["by_kind"].items():
        lines.append(f"{kind:<18}{count:>8}{100 * count / n:>8.1f}%")
    lines += ["", "GeneratorError classes: " + ", ".join(f"{k} {v}" for k, v in summary["errors"].items())]
    lines.append("by seed: " + "; ".join(f"{s} {sum(c.values())}" for s, c in summary["by_seed"].items()))
    lines.append("by mutation: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["by_mutation"].items())))
    lines.append(f"slowest load: {summary['max_seconds']:.2f} s ({summary['slowest']})")
    lines.append(f"largest peak RSS of a child: {summary['max_rss_mib']:.0f} MiB ({summary['largest']})")
    for b in summary["bad"][:30]:
        head = f"  BAD #{b['index']} {b['seed']} {b['mutation']}: {b['kind']} {b['error']} at {b['where']}"
        lines.append(f"{head}: {b['message'][:160]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="number of mutated files (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per file (default 30)")
    parser.add_argument(
        "--mem-mib", type=int, default=2048, help="RLIMIT_AS headroom per child (default 2048)"
    )
    parser.add_argument("--no-forward", dest="forward", action="store_false", help="do not render an image")
    parser.add_argument("--json", type=Path, help="write the summary and every outcome here")
    parser.add_argument("--keep-failures", type=Path, help="copy the files of bad outcomes here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.timeout, args.mem_mib, args.forward)
        return 0
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    done = [0]

    def progress(o: Outcome) -> None:
        done[0] += 1
        if done[0] % 250 == 0 or o.kind not in OK_KINDS:
            note = "" if o.kind in OK_KINDS else f"  <- {o.kind} {o.error} {o.where}"
            print(
                f"[{done[0]}/{args.n}] {time.perf_counter() - start:.0f} s{note}", file=sys.stderr, flush=True
            )

    outcomes = run_campaign(
        args.n,
        seed=args.seed,
        jobs=args.jobs,
        timeout=args.timeout,
        mem_mib=args.mem_mib,
        forward=args.forward,
        keep_failures=args.keep_failures,
        progress=progress,
    )
    elapsed = time.perf_counter() - start
    summary = summarize(outcomes)
    note = f"{args.jobs} jobs, load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    print(format_table(summary, elapsed, note))
    if args.json:
        payload = {
            "summary": summary,
            "seconds": elapsed,
            "args": vars(args),
            "outcomes": [asdict(o) for o in outcomes],
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    return 0 if not summary["bad"] else 1


if __name__ == "__main__":
    sys.exit(main())
