"""Full-size rendering and thread use under contention (issue 12), against the previous code paths.

    python -m benchmarks.fullsize            # everything (about 10 minutes on 2 CPU cores)
    python -m benchmarks.fullsize --quick    # small networks and a short fit (about 2 minutes)

Rendering: generators built from the FFHQ configurations of shared/docs/stylegan-pkl-format.md with random
weights: StyleGAN2 (z = w = 512, 8 mapping layers, channel base 32768, max 512, conv_clamp 256, skip
architecture; fp16 settings do nothing in float32) and StyleGAN3-T (channel base 32768, max 512, 14
layers, 2 mapping layers). Each case runs in its own process (one at a time) so that its peak resident
memory (ru_maxrss) is its own: it builds the network, renders one untimed image (StyleGAN2 only), then
renders ``batch`` images ``--reps`` times (StyleGAN3: once) and reports the best time per image. "new"
renders in chunks of :func:`sfvq.membudget.auto_batch_size` (the default budget, at most ``batch``), as
LatentSpace.render_full does; "old" runs this file's copies of the previous kernels (single-channel FIR
convolution over (N*C, 1, H, W), zero-insertion up-sampling, grouped modulated conv, out-of-place bias
and activation) on the whole batch at once, as before. Each case's first image is compared with the old
path's.

Threads: the aniso512 fit (100,000 x 512, 6 bits, default schedule) and quantize (100,000 vectors onto
its 64-corner curve), each with 1 thread, torch's default threads as before (thread policy None), and the
new default (adaptive thread policy), on the quiet machine and beside one busy-loop process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------------------
# The previous kernels (sfvq before issue 12), kept here so that the benchmark can run the old path
# ------------------------------------------------------------------------------------------------------


def _old_fir_filter2d(
    x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], gain: float
) -> torch.Tensor:
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n * c, 1, h, w), list(pad))  # (N*C, 1, H', W')
    kernel = (f.flip([0, 1]) * gain).to(x.dtype)[None, None]  # (1, 1, fh, fw)
    y = F.conv2d(x, kernel)  # (N*C, 1, H'-fh+1, W'-fw+1)
    return y.reshape(n, c, y.shape[2], y.shape[3])


def _old_upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)  # (N, C, 2H, 2W)
    up[:, :, ::2, ::2] = x
    return _old_fir_filter2d(up, f, (2, 1, 2, 1), gain=4.0)


def _old_modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
) -> torch.Tensor:
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    wts = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)  # (N, O, I, kh, kw)
    if demodulate:
        wts = wts * (wts.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    xg = x.reshape(1, n * i, h, w)  # (1, N*I, H, W)
    if up == 1:
        y = F.conv2d(xg, wts.reshape(n * o, i, kh, kw), padding=padding, groups=n)  # (1, N*O, H, W)
    else:
        assert resample_filter is not None
        wt = wts.transpose(1, 2).reshape(n * i, o, kh, kw)  # (N*I, O, kh, kw)
        y = F.conv_transpose2d(xg, wt, stride=2, groups=n)  # (1, N*O, 2H+1, 2W+1)
        y = _old_fir_filter2d(y, resample_filter, (1, 1, 1, 1), gain=4.0)  # (1, N*O, 2H, 2W)
    return y.reshape(n, o, y.shape[2], y.shape[3])


def _old_bias_act(
    x: torch.Tensor,
    bias: torch.Tensor,
    activation: str,
    clamp: float | None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    from sfvq.generators.stylegan2 import _activate

    if noise is not None:
        x = x + noise
    x = _activate(x + bias.reshape(1, -1, 1, 1), activation)
    return x if clamp is None else x.clamp(-clamp, clamp)


def _old_upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])  # (N, C, H, up, W, up)
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, list(padding))
    if f is None:
        if gain != 1:
            x = x * gain
        return x[:, :, ::down, ::down] if down > 1 else x
    f = f.to(dtype=x.dtype).flip(list(range(f.ndim)))
    if f.ndim == 1:
        f = f * (gain**0.5)
        taps = f.numel()
        x = F.conv2d(x, f.view(1, 1, 1, taps).expand(c, 1, 1, taps), stride=(1, down), groups=c)
        return F.conv2d(x, f.view(1, 1, taps, 1).expand(c, 1, taps, 1), stride=(down, 1), groups=c)
    f = f * gain
    return F.conv2d(x, f[None, None].expand(c, 1, *f.shape), stride=down, groups=c)


def _old_sg3_modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, input_gain: torch.Tensor
) -> torch.Tensor:
    n, i_ch, h, w = x.shape
    o_ch, _, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    wts = weight.unsqueeze(0) * styles.reshape(n, 1, i_ch, 1, 1)  # (N, O, I, k, k)
    if demodulate:
        wts = wts * (wts.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    wts = wts * input_gain
    out = F.conv2d(
        x.reshape(1, n * i_ch, h, w), wts.reshape(n * o_ch, i_ch, kh, kw), padding=(kh - 1, kw - 1), groups=n
    )
    return out.reshape(n, o_ch, out.shape[2], out.shape[3])


def _old_filtered_lrelu(
    x: torch.Tensor,
    bias: torch.Tensor,
    up_filter: torch.Tensor | None,
    down_filter: torch.Tensor | None,
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    x = x + bias.reshape(1, -1, 1, 1)
    x = _old_upfirdn2d(x, up_filter, up=up, padding=padding, gain=float(up * up))
    if slope != 1:
        x = F.leaky_relu(x, negative_slope=slope)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return _old_upfirdn2d(x, down_filter, down=down)


def use_old_kernels() -> None:
    """Swap the generators' kernels for the previous ones (module globals, looked up at call time)."""
    import sfvq.generators.stylegan2 as sg2
    import sfvq.generators.stylegan3 as sg3

    sg2.fir_filter2d = _old_fir_filter2d
    sg2.upsample2d = _old_upsample2d
    sg2.modulated_conv2d = _old_modulated_conv2d
    sg2._bias_act = _old_bias_act
    sg3._upfirdn2d = _old_upfirdn2d
    sg3._modulated_conv2d = _old_sg3_modulated_conv2d
    sg3._filtered_lrelu = _old_filtered_lrelu


# ------------------------------------------------------------------------------------------------------
# Full-size networks with random weights
# ------------------------------------------------------------------------------------------------------


def sg2_kwargs(resolution: int) -> dict[str, Any]:
    """G_ema init kwargs of the FFHQ StyleGAN2(-ADA) configuration at ``resolution`` (nested layout)."""
    return {
        "z_dim": 512,
        "c_dim": 0,
        "w_dim": 512,
        "img_resolution": resolution,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 8},
        "synthesis_kwargs": {
            "channel_base": 32768,
            "channel_max": 512,
            "num_fp16_res": 4,
            "conv_clamp": 256,
            "architecture": "skip",
        },
    }


def sg3t_kwargs(resolution: int) -> dict[str, Any]:
    """G_ema init kwargs of the StyleGAN3-T configuration at ``resolution`` (flattened synthesis kwargs)."""
    return {
        "z_dim": 512,
        "c_dim": 0,
        "w_dim": 512,
        "img_resolution": resolution,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "channel_base": 32768,
        "channel_max": 512,
        "magnitude_ema_beta": 0.999,
        "num_fp16_res": 4,
        "conv_clamp": 256,
    }


def _random_state(
    shapes: dict[str, torch.Size], gen: torch.Generator, taps_filter: bool
) -> dict[str, torch.Tensor]:
    """Random official-named tensors: N(0, 1) weights, small biases, proper [1,3,3,1] / Hann filters."""
    sd: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        name = key.rsplit(".", 1)[-1]
        if name == "resample_filter":
            k = torch.tensor([1.0, 3.0, 3.0, 1.0])
            t = torch.outer(k, k) / 64
        elif name in ("up_filter", "down_filter"):
            taps = shape[0]
            win = torch.hann_window(taps + 2, periodic=False)[1:-1]  # (T,) positive, symmetric
            t = win / win.sum() if len(shape) == 1 else torch.outer(win, win) / win.sum() ** 2
        elif name == "magnitude_ema":
            t = torch.ones(shape)
        elif name == "transform":
            t = torch.eye(3)
        elif name == "phases":
            t = torch.rand(shape, generator=gen)
        elif name == "freqs":
            t = torch.randn(shape, generator=gen) * 0.5
        elif name in ("bias", "noise_strength"):
            t = torch.randn(shape, generator=gen) * 0.1
        else:
            t = torch.randn(shape, generator=gen)
        sd[key] = t.reshape(shape).float()
    if taps_filter:
        sd["synthesis.input.affine.bias"] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    return sd


def build_network(family: str, resolution: int, seed: int = 0) -> torch.nn.Module:
    """A full-size generator of ``family`` ("sg2" or "sg3t") with seeded random weights, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    if family == "sg2":
        from sfvq.generators.stylegan2 import StyleGAN2Generator, build_stylegan2

        kw = sg2_kwargs(resolution)
        shell = StyleGAN2Generator(
            512,
            0,
            512,
            resolution,
            3,
            kw["mapping_kwargs"],
            {
                k: v
                for k, v in kw["synthesis_kwargs"].items()
                if k in ("channel_base", "channel_max", "conv_clamp")
            },
        )
        shapes = {k: v.shape for k, v in shell.state_dict().items()}
        del shell
        return build_stylegan2(kw, _random_state(shapes, gen, taps_filter=False))
    if family == "sg3t":
        from sfvq.generators.stylegan3 import StyleGAN3Generator, build_stylegan3, resolve_stylegan3_config

        kw = sg3t_kwargs(resolution)
        shell = StyleGAN3Generator(resolve_stylegan3_config(kw))
        shapes = {k: v.shape for k, v in shell.state_dict().items()}
        del shell
        return build_stylegan3(kw, _random_state(shapes, gen, taps_filter=True))
    raise ValueError(f"unknown family {family!r} (sg2, sg3t)")


# ------------------------------------------------------------------------------------------------------
# Child processes
# ------------------------------------------------------------------------------------------------------


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child_render(
    family: str, resolution: int, path: str, batch: int, reps: int, image_out: str
) -> dict[str, Any]:
    """One rendering case (see the module docstring); run in a fresh process."""
    from sfvq import membudget

    if path == "old":
        use_old_kernels()
    G = build_network(family, resolution)
    weights_mib = sum(t.numel() * t.element_size() for t in G.state_dict().values()) / 2**20
    with torch.no_grad():
        ws = G.mapping(
            torch.randn(batch, 512, generator=torch.Generator().manual_seed(1))
        )  # (B, num_ws, 512)
        chunk = batch if path == "old" else membudget.auto_batch_size(G, limit=batch)
        before = _peak_mib()
        if family == "sg2":  # untimed: one-off costs (oneDNN primitives); small beside a StyleGAN3 image
            G.synthesis(ws[:1])
        times, first = [], None
        for _ in range(reps):
            start = time.perf_counter()
            out = [G.synthesis(part) for part in ws.split(chunk)]
            times.append((time.perf_counter() - start) / batch)
            first = out[0][:1].clone()
            del out
    assert first is not None
    torch.save(first, image_out)
    return {
        "family": family,
        "resolution": resolution,
        "path": path,
        "batch": batch,
        "chunk": chunk,
        "seconds_per_image": min(times),
        "median_seconds_per_image": statistics.median(times),
        "peak_mib": _peak_mib(),
        "peak_before_render_mib": before,
        "weights_mib": weights_mib,
        "estimate_mib": membudget.image_bytes(G) * chunk / 2**20,
        "threads": torch.get_num_threads(),
    }


def child_threads(task: str, mode: str, n: int, bits: int, reps: int) -> dict[str, Any]:
    """Fit or quantize aniso data with a thread mode: "1" (one thread), "default" (torch's threads, the
    previous behaviour: thread policy None) or "new" (torch's threads, the adaptive thread policy)."""
    from sfvq import SFVQ, threads
    from sfvq.datasets import make_aniso

    X = torch.from_numpy(make_aniso(n, 512, seed=0))
    if task == "quantize":
        with threads.policy(1):
            model = SFVQ(bits, random_state=0, verbose=False).fit(X)  # not timed
    if mode == "1":
        torch.set_num_threads(1)
        threads.set_policy(None)
    elif mode == "default":
        threads.set_policy(None)
    elif mode != "new":
        raise ValueError(f"unknown thread mode {mode!r}")
    times = []
    for rep in range(reps):
        start = time.perf_counter()
        if task == "fit":
            SFVQ(bits, random_state=rep, verbose=False).fit(X)
        else:
            model.quantize(X)
        times.append(time.perf_counter() - start)
    return {
        "task": task,
        "mode": mode,
        "seconds": statistics.median(times),
        "threads": torch.get_num_threads(),
    }


def _run_child(args: list[str], busy: bool = False, timeout: float = 900) -> dict[str, Any]:
    """Run ``python -m benchmarks.fullsize --child ...`` (beside a busy-loop process if ``busy``)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if hog is not None:
            time.sleep(0.5)
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.fullsize", "--child", json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=Path(__file__).resolve().parents[1],
        )
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------
# Parent: cases, tables
# ------------------------------------------------------------------------------------------------------

# (family, resolution, path, batch). The old path is run only where it fits the ~6 GiB a process may use
# here (the issue measured 10.8 GiB for a batch of 4 at 1024 px, 6.2 GiB for one StyleGAN3-T image at 1024).
FULL_CASES = [
    ("sg2", 1024, "old", 1),
    ("sg2", 1024, "new", 1),
    ("sg2", 1024, "new", 4),
    ("sg2", 1024, "new", 8),
    ("sg2", 512, "old", 1),
    ("sg2", 512, "old", 4),
    ("sg2", 512, "new", 1),
    ("sg2", 512, "new", 4),
    ("sg2", 512, "new", 8),
    ("sg3t", 512, "old", 1),
    ("sg3t", 512, "new", 1),
    ("sg3t", 512, "new", 4),
    ("sg3t", 1024, "new", 1),
]
QUICK_CASES = [
    ("sg2", 256, "old", 1),
    ("sg2", 256, "old", 4),
    ("sg2", 256, "new", 1),
    ("sg2", 256, "new", 4),
    ("sg3t", 256, "old", 1),
    ("sg3t", 256, "new", 1),
]
NAMES = {"sg2": "StyleGAN2 (FFHQ configuration)", "sg3t": "StyleGAN3-T (FFHQ configuration)"}


def run_render(cases: list[tuple[str, int, str, int]], reps: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, res, path, batch in cases:
            img = str(Path(tmp) / f"{family}_{res}_{path}_{batch}.pt")
            # StyleGAN3 images take tens of seconds: one timed render of them
            r = _run_child(
                ["render", family, res, path, batch, reps if family == "sg2" else 1, img], timeout=3600
            )
            r["image"] = torch.load(img)
            results.append(r)
            print(
                f"  {family} {res}px {path} batch {batch}: {r['seconds_per_image']:.2f} s/img, "
                f"peak {r['peak_mib']:.0f} MiB",
                file=sys.stderr,
            )
    return results


def render_tables(results: list[dict[str, Any]]) -> str:
    lines = []
    for family, res in dict.fromkeys((r["family"], r["resolution"]) for r in results):
        rows = [r for r in results if r["family"] == family and r["resolution"] == res]
        old1 = next((r for r in rows if r["path"] == "old" and r["batch"] == 1), None)
        lines += [
            f"#### {NAMES[family]}, {res} px\n",
            "| path | batch | images a pass | s / image | old batch 1 / this | peak RSS MiB | estimate MiB "
            "| max abs diff to old |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            ratio = f"{old1['seconds_per_image'] / r['seconds_per_image']:.2f}x" if old1 else "n/a"
            diff = f"{float((r['image'] - old1['image']).abs().max()):.1e}" if old1 else "n/a"
            est = f"{r['estimate_mib'] + r['peak_before_render_mib']:.0f}" if r["path"] == "new" else ""
            lines.append(
                f"| {r['path']} | {r['batch']} | {r['chunk']} | {r['seconds_per_image']:.2f} | {ratio} | "
                f"{r['peak_mib']:.0f} | {est} | {diff} |"
            )
        lines.append(
            f"\nweights {rows[0]['weights_mib']:.0f} MiB; torch threads {rows[0]['threads']}; 'estimate': "
            "the process before rendering plus sfvq.membudget.image_bytes times the images a pass\n"
        )
    return "\n".join(lines)


def run_threads(quick: bool, reps: int) -> list[dict[str, Any]]:
    n, bits = (20_000, 5) if quick else (100_000, 6)
    results = []
    for busy in (False, True):
        for task in ("fit", "quantize"):
            for mode in ("1", "default", "new"):
                r = _run_child(["threads", task, mode, n, bits, reps], busy=busy)
                r["busy"] = busy
                r["n"], r["bits"] = n, bits
                results.append(r)
                cond = "busy" if busy else "quiet"
                print(f"  {task} {mode} {cond}: {r['seconds']:.2f} s", file=sys.stderr)
    return results


def threads_table(results: list[dict[str, Any]]) -> str:
    n, bits = results[0]["n"], results[0]["bits"]
    lines = [
        f"#### aniso data ({n:,} x 512), {bits} bits: fit and quantize, seconds (median of runs)\n",
        "| task | condition | 1 thread | torch default (before) | new default | new / 1 thread | "
        "new / before |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for task in ("fit", "quantize"):
        for busy in (False, True):
            t = {r["mode"]: r["seconds"] for r in results if r["task"] == task and r["busy"] == busy}
            cond = "one busy-loop process beside" if busy else "quiet"
            lines.append(
                f"| {task} | {cond} | {t['1']:.2f} | {t['default']:.2f} | {t['new']:.2f} | "
                f"{t['new'] / t['1']:.2f}x | {t['new'] / t['default']:.2f}x |"
            )
    threads = next(r["threads"] for r in results if r["mode"] == "default")
    lines.append(f"\ntorch default threads: {threads}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small networks and a short fit")
    ap.add_argument("--only", choices=("render", "threads"), default=None, help="run one part")
    ap.add_argument("--reps", type=int, default=2, help="timed renders per case (best is reported)")
    ap.add_argument("--family", choices=sorted(NAMES), default=None, help="only this network's render cases")
    ap.add_argument("--resolution", type=int, default=None, help="only the render cases at this resolution")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        kind, *rest = json.loads(args.child)
        out = child_render(*rest) if kind == "render" else child_threads(*rest)
        print(json.dumps(out))
        return

    load0 = os.getloadavg()
    start = time.perf_counter()
    parts = []
    if args.only in (None, "render"):
        cases = [
            c
            for c in (QUICK_CASES if args.quick else FULL_CASES)
            if args.family in (None, c[0]) and args.resolution in (None, c[1])
        ]
        if not cases:
            ap.error(f"no render case of family {args.family} at {args.resolution} px")
        parts.append(render_tables(run_render(cases, args.reps)))
    if args.only in (None, "threads"):
        parts.append(threads_table(run_threads(args.quick, 3 if args.quick else 2)))
    load1 = os.getloadavg()
    print(
        f"### Full-size rendering and threads (issue 12){' --quick' if args.quick else ''}\n\n"
        f"{os.cpu_count()} CPUs; load average {load0[0]:.2f} at start, {load1[0]:.2f} at the end; "
        f"{math.ceil(time.perf_counter() - start)} s in all\n"
    )
    print("\n".join(parts))


if __name__ == "__main__":
    main()
