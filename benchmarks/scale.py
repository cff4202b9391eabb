"""The cost of a fit against the data size N, the corners K and the dimension D, and of several processes.

    python -m benchmarks.scale                  # the CPU table (N 1e4..1e6, K 2^4..2^12, D 64..1024)
    python -m benchmarks.scale --quick          # a smaller table (about a minute)
    python -m benchmarks.scale --max-n 10000000 # N up to 1e7 as well (about 5 GB of data files)
    python -m benchmarks.scale --big            # only the 10,000,000 x 512 (20 GB) fit at 8 bits
    python -m benchmarks.scale --device cuda    # the same table on a GPU

Each cell writes an anisotropic Gaussian data set (float32 ``.npy``, ``x = g * s``, ``s_i = (i+1)^-0.5``)
and fits it in a fresh process from the memory-mapped file, as ``sfvq fit`` does: one epoch a stage,
batches of 2048, seed 0, one torch thread a process (``--threads``). Reported: the fit's wall time (data
statistics, every stage, every stage's exact projection), its peak resident memory (VmHWM, the whole
process) and the peak above the process's memory before the fit (imports, torch). The slopes are the
least-squares exponents of time against N, K and D (time ~ N^a). The speed-up row runs one cell with
one process and with two (torchrun, gloo on 127.0.0.1), each process one thread.

Data files go to ``--workdir`` (default: a temporary folder, removed at the end) and are reused between
cells of the same N and D.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the worker (one fit, one process)
def _status(key: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1]) * 1024


def worker(argv: list[str]) -> None:
    """Fit one memory-mapped file and print one JSON line (rank 0): seconds, peak memory, MSE."""
    p = argparse.ArgumentParser(prog="benchmarks.scale --worker")
    p.add_argument("--latents", required=True)
    p.add_argument("--bits", type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch

    from sfvq import dist
    from sfvq.fitting import read_latents
    from sfvq.quantizer import SFVQ

    torch.set_num_threads(a.threads)
    dist.init(device=a.device)
    device = dist.device_for_rank(a.device)
    X = read_latents(a.latents)
    base = _status("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak counts from here
    except OSError:
        pass
    dist.barrier()
    start = time.perf_counter()
    model = SFVQ(a.bits, epochs=1, batch_size=2048, random_state=0, device=device, verbose=False).fit(X)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    mine = {"peak": _status("VmHWM:"), "base": base}
    every = [None] * dist.world_size()
    if dist.is_distributed():
        torch.distributed.all_gather_object(every, mine)
    else:
        every = [mine]
    if dist.is_main():
        row = {
            "seconds": seconds,
            "peak_mib": max(m["peak"] for m in every) / 2**20,
            "added_mib": max(m["peak"] - m["base"] for m in every) / 2**20,
            "nmse": model.history_[-1]["mse"] / model.total_variance_,
            "world": dist.world_size(),
        }
        print(json.dumps(row), flush=True)
    dist.shutdown()


# ---------------------------------------------------------------------- the driver
def make_data(path: Path, n: int, d: int, seed: int = 0, chunk: int = 100_000) -> Path:
    """An (n, d) float32 anisotropic Gaussian ``.npy``, written chunk by chunk (reused when present)."""
    import numpy as np

    if path.is_file():
        return path
    tmp = path.with_name(path.name + ".part")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    scale = ((np.arange(d) + 1.0) ** -0.5).astype(np.float32)  # (d,)
    rng = np.random.default_rng(seed)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        mm[a:b] = rng.standard_normal((b - a, d), dtype=np.float32) * scale
    mm.flush()
    del mm
    os.replace(tmp, path)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cell(data: Path, bits: int, device: str, threads: int, nproc: int = 1, timeout: float = 3600) -> dict:
    """One fit in fresh process(es); the worker's JSON row, with the command's own wall time."""
    args = [
        "--worker",
        "--latents",
        str(data),
        "--bits",
        str(bits),
        "--device",
        device,
        "--threads",
        str(threads),
    ]
    if nproc == 1:
        cmd = [sys.executable, "-m", "benchmarks.scale", *args]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
            "-m", "benchmarks.scale", "--", *args,
        ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares exponent a of y ~ x^a."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def grid(quick: bool, max_n: int) -> dict[str, list[tuple[int, int, int]]]:
    """(N, D, bits) cells of each sweep, around the base cell N = 1e5, D = 128, 6 bits."""
    ns = [n for n in (10_000, 100_000, 1_000_000, 10_000_000) if n <= max_n]
    if quick:
        return {
            "N": [(n, 128, 6) for n in ns if n <= 100_000],
            "K": [(20_000, 128, b) for b in (4, 6, 8)],
            "D": [(20_000, d, 6) for d in (64, 256)],
        }
    return {
        "N": [(n, 128, 6) for n in ns],
        "K": [(100_000, 128, b) for b in (4, 6, 8, 10, 12)],
        "D": [(100_000, d, 6) for d in (64, 128, 256, 512, 1024)],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The measured cells as a markdown table."""
    out = [
        "| sweep | N | K | D | processes | fit s | peak MiB | added MiB | NMSE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['sweep']} | {r['n']:,} | {2 ** r['bits']:,} | {r['d']} | {r['world']} "
            f"| {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['added_mib']:.0f} | {r['nmse']:.4f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--"]:  # torchrun passes on the separator
        argv = argv[1:]
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return {}
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="A smaller table (about a minute).")
    p.add_argument("--max-n", type=int, default=1_000_000, help="Largest N of the N sweep (default 1e6).")
    p.add_argument("--big", action="store_true", help="Only the 10,000,000 x 512 fit at 8 bits (20 GB).")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="Torch threads a process (default 1).")
    p.add_argument(
        "--sweeps",
        default="N,K,D,processes",
        help="Which sweeps to run, comma-separated from N, K, D, processes (default: all).",
    )
    p.add_argument("--workdir", type=Path, default=None, help="Where the data files go (kept).")
    p.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    a = p.parse_args(argv)

    tmp = None
    if a.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sfvq-scale-")
        work = Path(tmp.name)
    else:
        work = a.workdir
        work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"# sfvq scale benchmark: {os.cpu_count()} CPUs, device {a.device}, load average {load:.2f}")
    rows: list[dict[str, Any]] = []
    try:
        if a.big:
            cells = {"big": [(10_000_000, 512, 8)]}
        else:
            cells = {k: v for k, v in grid(a.quick, a.max_n).items() if k in a.sweeps.split(",")}
        for sweep, items in cells.items():
            for n, d, bits in items:
                data = make_data(work / f"x_{n}_{d}.npy", n, d)
                row = {
                    "sweep": sweep,
                    "n": n,
                    "d": d,
                    "bits": bits,
                    **run_cell(data, bits, a.device, a.threads),
                }
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
        if not a.big and "processes" in a.sweeps.split(","):
            n, d, bits = (100_000, 128, 6) if a.quick else (1_000_000, 128, 8)
            data = make_data(work / f"x_{n}_{d}.npy", n, d)
            for nproc in (1, 2):
                row = {"sweep": "processes", "n": n, "d": d, "bits": bits}
                row.update(run_cell(data, bits, a.device, a.threads, nproc=nproc))
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print()
    print(table(rows))
    slopes = {}
    for sweep, key in (("N", lambda r: r["n"]), ("K", lambda r: 2 ** r["bits"]), ("D", lambda r: r["d"])):
        pts = [(key(r), r["seconds"]) for r in rows if r["sweep"] == sweep]
        if len(pts) >= 2:
            slopes[sweep] = slope(pts)
    if slopes:
        print("\nslopes (time ~ x^a): " + ", ".join(f"{k}: {v:.2f}" for k, v in slopes.items()))
    speed = [r for r in rows if r["sweep"] == "processes"]
    if len(speed) == 2:
        print(f"speed-up of 2 processes over 1: {speed[0]['seconds'] / speed[1]['seconds']:.2f}x")
    result = {"load_average": load, "device": a.device, "rows": rows, "slopes": slopes}
    if a.json is not None:
        a.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
