"""The main job behind ``sfvq run``: sample latents, fit the curve, render and measure it, write a report.

Steps (each timed in :attr:`RunResult.timings`, each long one with a progress bar):

1. ``sample``: space vectors of N latents (``latents.npy`` + sidecar, ``space.json``).
2. ``fit``: the SFVQ curve (``model.safetensors``, ``loss.png``, ``curve.png``, ``summary.json``).
3. ``maps``: every corner of every bitrate rendered; ``maps/map_{b}bit.png`` (labelled grid, corners in
   empty regions framed in red) and ``maps/strip_{b}bit.png``.
4. ``walk``: the finest curve walked at evenly spaced positions (``walks/walk.gif``, ``walks/walk.mp4``).
5. ``edits``: each segment of the edit bitrate applied to fixed seeds at several sigmas
   (``edits/{b}bit_seg{i:03d}.png``); sigma is counted in stds of the data along the direction.
6. ``smoothness``: the order score of corners against k-means centroids, on images and space vectors.
7. ``report``: ``usage.png``, ``report.html``, the full ``summary.json`` and ``options.json``.

The run directory follows the contract shared by the other commands: ``model.safetensors`` (metadata
``{"network", "space", "data"}``), ``space.json``, ``latents.npy``/``latents.json``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfvq.quantizer import DEFAULT_SCHEDULE

DEFAULT_N = 20_000
DEFAULT_SIGMAS = (-6.0, -3.0, 0.0, 3.0, 6.0)
DEFAULT_EDIT_SEEDS = (0, 1, 2, 3)
STEPS = ("sample", "fit", "maps", "walk", "edits", "smoothness", "report")

# Files from an earlier run in the same directory that this run rewrites: removed first, so that a run
# that stops half-way never leaves a directory that looks complete or mixes two runs' pictures.
_STALE = {
    ".": ("report.html", "options.json", "summary.json", "usage.png"),
    "maps": ("map_*bit.png", "strip_*bit.png"),
    "walks": ("walk.gif", "walk.mp4"),
    "edits": ("*bit_seg*.png",),
}


class ConfigError(ValueError):
    """A run setting that cannot work; ``option`` names the command-line option it came from."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass
class RunConfig:
    """Settings of one run (the options of ``sfvq run``)."""

    network: str
    outdir: Path
    bits: int = 6
    space: str | None = None  # None: sfvq.spaces.default_space(G)
    layer: str | None = None  # feature spaces only; None: the generator's first layer
    n: int = DEFAULT_N
    seed: int = 0
    truncation_psi: float = 1.0
    truncation_cutoff: int | None = None
    class_idx: int | None = None
    noise_mode: str = "const"
    epochs: int = DEFAULT_SCHEDULE["epochs"]
    batch_size: int = DEFAULT_SCHEDULE["batch_size"]
    lr: float = DEFAULT_SCHEDULE["lr"]
    edit_bits: int | None = None  # None: min(bits, 4)
    edit_seeds: tuple[int, ...] = DEFAULT_EDIT_SEEDS
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    walk_frames: int = 240
    fps: float = 24.0
    render_batch_size: int = 64
    device: str = "cpu"
    progress: bool = True

    def resolved_edit_bits(self) -> int:
        return min(self.bits, 4) if self.edit_bits is None else self.edit_bits

    def options(self) -> dict[str, Any]:
        """JSON-friendly settings (options.json)."""
        d = asdict(self)
        d["outdir"] = str(self.outdir)
        d["edit_bits"] = self.resolved_edit_bits()
        d["edit_seeds"] = list(self.edit_seeds)
        d["sigmas"] = list(self.sigmas)
        return d


@dataclass
class RunResult:
    """What a run produced: the fitted model and space, measurements, timings (s) and output paths."""

    model: Any
    space: Any
    latents: np.ndarray
    smoothness: list[dict[str, Any]]
    empty: dict[int, dict[int, str]]
    segments: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def validate(config: RunConfig, G: Any) -> str:
    """Check the settings against the generator before anything is written; returns the space kind.

    Raises :class:`ConfigError` naming the option at fault.
    """
    from sfvq.quantizer import check_bits
    from sfvq.spaces import KINDS, default_space

    try:
        check_bits(config.bits)
    except ValueError as e:
        raise ConfigError("--bits", str(e)) from e
    kind = config.space or default_space(G)
    if kind not in KINDS:
        raise ConfigError("--space", f"space must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "w" and "w" not in G.spaces:
        raise ConfigError("--space", f"{G.name} has no mapping network, so no W space; use features or z")
    if config.layer is not None and kind != "features":
        raise ConfigError(
            "--layer", f"--layer picks a feature layer; it needs --space features (space is {kind})"
        )
    if kind == "features":
        layers = tuple(getattr(G, "layers", ()))
        if not layers or not hasattr(G, "synthesis_from"):
            raise ConfigError("--space", f"{G.name} offers no feature layers to fit a curve in")
        if config.layer is not None and config.layer not in layers:
            raise ConfigError(
                "--layer", f"unknown layer {config.layer!r} for {G.name}; layers: {', '.join(layers)}"
            )
    K = 2**config.bits
    if config.n < K:
        raise ConfigError(
            "--n", f"{config.n} samples are too few for a {config.bits}-bit curve ({K} corners)"
        )
    eb = config.resolved_edit_bits()
    if not 2 <= eb <= config.bits:
        raise ConfigError(
            "--edit-bits", f"edit bitrate must lie in [2, {config.bits}] (the curve's bits), got {eb}"
        )
    if not config.edit_seeds:
        raise ConfigError("--edit-seeds", "give at least one seed to edit")
    if not config.sigmas:
        raise ConfigError("--sigmas", "give at least one sigma")
    if config.walk_frames < 2:
        raise ConfigError("--walk-frames", f"a walk needs at least 2 frames, got {config.walk_frames}")
    if not config.fps > 0:
        raise ConfigError("--fps", f"frames per second must be positive, got {config.fps}")
    if config.render_batch_size < 1:
        raise ConfigError("--render-batch-size", f"must be >= 1, got {config.render_batch_size}")
    return kind


def clear_stale(outdir: Path) -> list[Path]:
    """Remove the files an earlier run of this pipeline wrote into ``outdir`` (only those names)."""
    removed = []
    for sub, patterns in _STALE.items():
        folder = outdir / sub
        if not folder.is_dir():
            continue
        for pattern in patterns:
            for p in folder.glob(pattern):
                if p.is_file():
                    p.unlink()
                    removed.append(p)
    return removed


@contextmanager
def _timed(timings: dict[str, float], step: str, log: Any) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - start
    log(f"{step}: {timings[step]:.1f}s")


def run_pipeline(config: RunConfig, G: Any | None = None, console: Any | None = None) -> RunResult:
    """Run every step into ``config.outdir`` (see the module docstring); ``G`` is loaded when not given.

    Raises :class:`ConfigError` for settings that cannot work (before anything is written).
    """
    from rich.console import Console

    from sfvq import SFVQ, curve
    from sfvq.cli.fit import summary_rows
    from sfvq.evaluate import (
        DIST_FACTOR,
        MIN_SHARE,
        empty_corners,
        image_smoothness,
        kmeans,
        segment_stats,
        smoothness,
    )
    from sfvq.io import save_npy_with_sidecar, save_png, write_json, write_options
    from sfvq.plots import curve_plot, loss_plot
    from sfvq.progress import track
    from sfvq.render import (
        edit_grid,
        edit_images,
        panoptic_map,
        render_vectors,
        strip,
        walk_points,
        write_gif,
        write_mp4,
    )
    from sfvq.report import ReportData, usage_plot, write_report
    from sfvq.spaces import LatentSpace

    console = console or Console(stderr=True, quiet=not config.progress)
    log = (lambda text: console.print(f"[dim]{text}[/dim]")) if config.progress else (lambda text: None)
    if G is None:
        from sfvq.generators.registry import load_generator

        G = load_generator(config.network, device=config.device)
    kind = validate(config, G)
    out = Path(config.outdir)
    out.mkdir(parents=True, exist_ok=True)
    clear_stale(out)
    timings: dict[str, float] = {}
    files: dict[str, Path] = {}
    progress = config.progress
    rb = config.render_batch_size

    # 1. Sample the space.
    with _timed(timings, "sample", log):
        space = LatentSpace(
            G,
            kind,
            layer=config.layer,
            truncation_psi=config.truncation_psi,
            truncation_cutoff=config.truncation_cutoff,
            class_idx=config.class_idx,
            noise_mode=config.noise_mode,
        )
        V = np.ascontiguousarray(space.sample(config.n, config.seed, progress=progress), dtype=np.float32)
        sha = _generator_sha(config.network)
        data_meta = {
            "network": config.network,
            "generator": G.name,
            "generator_sha256": sha,
            "space": space.describe(),
            "n": config.n,
            "seed": config.seed,
        }
        files["latents"] = save_npy_with_sidecar(out / "latents.npy", V, data_meta)
        files["space"] = space.save(out)

    # 2. Fit the curve.
    with _timed(timings, "fit", log):
        model = SFVQ(
            config.bits,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            random_state=config.seed,
            device=config.device,
            verbose=progress,
        ).fit(V)
        model.metadata_ = {
            "network": config.network,
            "space": space.describe(),
            "data": {"file": "latents.npy", "n": config.n, "seed": config.seed, "generator_sha256": sha},
        }
        files["model"] = model.save(out / "model.safetensors")
        stages = summary_rows(model)
        write_json(out / "summary.json", {"total_variance": model.total_variance_, "stages": stages})
        files["loss plot"] = loss_plot(model.history_, out / "loss.png")
        codebooks = {b: C.detach().cpu().float() for b, C in sorted(model.codebooks_.items())}  # b -> (K, D)
        files["curve plot"] = curve_plot(V, {b: C.numpy() for b, C in codebooks.items()}, out / "curve.png")

    # 3. Panoptic maps (and the empty-corner rule).
    corner_images: dict[int, torch.Tensor] = {}
    empty: dict[int, dict[int, str]] = {}
    with _timed(timings, "maps", log):
        for b, C in codebooks.items():
            images, tiles = render_vectors(
                space, C, batch_size=rb, description=f"{b}-bit corners", progress=progress
            )
            corner_images[b] = images
            found = empty_corners(V, C)
            empty[b] = {k: found.reasons[k] for k in found.flagged}
            files[f"map {b} bits"] = save_png(
                out / "maps" / f"map_{b}bit.png", panoptic_map(tiles, found.flagged)
            )
            files[f"strip {b} bits"] = save_png(
                out / "maps" / f"strip_{b}bit.png", strip(tiles, found.flagged)
            )

    # 4. Walk along the finest curve.
    with _timed(timings, "walk", log):
        points = walk_points(codebooks[config.bits], config.walk_frames)  # (T, D)
        _, frames = render_vectors(space, points, batch_size=rb, description="walk", progress=progress)
        files["walk (GIF)"] = write_gif(out / "walks" / "walk.gif", frames, config.fps)
        files["walk (MP4)"] = write_mp4(out / "walks" / "walk.mp4", frames, config.fps)

    # 5. Edits along every segment of the edit bitrate, all layers.
    eb = config.resolved_edit_bits()
    with _timed(timings, "edits", log):
        C = codebooks[eb]
        stats = segment_stats(V, C)
        seeds_full = space.encode_seeds(list(config.edit_seeds))  # (S, num_ws, full_dim)
        units = model.directions(eb).detach().cpu().float()  # (K-1, D) unit, zero stays zero
        segments = []
        for row in track(stats, f"edits at {eb} bits", len(stats), progress):
            i = row["segment"]
            sig = [s * row["std"] for s in config.sigmas]
            tiles = edit_images(space, seeds_full, units[i], sig, batch_size=rb)
            path = save_png(
                out / "edits" / f"{eb}bit_seg{i:03d}.png", edit_grid(tiles, config.edit_seeds, config.sigmas)
            )
            segments.append({"bits": eb, **row, "edit": path})
        files["edits"] = out / "edits"

    # 6. Smoothness of the order: SFVQ corners against k-means centroids.
    smooth: list[dict[str, Any]] = []
    with _timed(timings, "smoothness", log):
        for b, C in track(list(codebooks.items()), "k-means baseline", len(codebooks), progress):
            centroids = kmeans(V, 2**b, seed=config.seed)  # (K, D)
            km_images, _ = render_vectors(space, centroids, batch_size=rb, progress=False)
            smooth.append(
                {
                    "bits": b,
                    "sfvq_image": image_smoothness(corner_images[b]),
                    "kmeans_image": image_smoothness(km_images),
                    "sfvq_latent": smoothness(C),
                    "kmeans_latent": smoothness(centroids),
                }
            )

    # 7. Report, summary, options.
    with _timed(timings, "report", log):
        usage = {
            b: curve.segment_usage(curve.project(torch.from_numpy(V), codebooks[b]).segment, 2**b - 1).numpy()
            for b in sorted({eb, config.bits})
        }
        files["usage plot"] = usage_plot(usage, out / "usage.png")
        rel = {k: _rel(p, out) for k, p in files.items()}
        settings = {
            "network": config.network,
            "generator": G.name,
            "space": space.name,
            "samples (N)": config.n,
            "seed": config.seed,
            "bits": config.bits,
            "truncation psi": config.truncation_psi,
            "truncation cutoff": config.truncation_cutoff,
            "class": config.class_idx,
            "noise mode": config.noise_mode,
            "fit schedule": f"{config.epochs} epochs x batch {config.batch_size}, lr {config.lr:g}",
            "edit bits": eb,
            "edit seeds": list(config.edit_seeds),
            "sigmas (std units)": list(config.sigmas),
            "walk": f"{config.walk_frames} frames at {config.fps:g} fps",
            "device": config.device,
            "empty-corner rule": (
                f"half-segment cell under {MIN_SHARE:g}/K of the samples, or nearest sample over "
                f"{DIST_FACTOR:g} x the median sample-to-curve distance"
            ),
        }
        data = ReportData(
            title=f"sfvq run: {G.name}, space {space.name}, {config.bits} bits",
            settings=settings,
            space=space.describe(),
            stages=stages,
            smoothness=smooth,
            maps={b: out / "maps" / f"map_{b}bit.png" for b in codebooks},
            empty=empty,
            segments=segments,
            edit_settings={
                "bits": eb,
                "seeds": list(config.edit_seeds),
                "sigmas": list(config.sigmas),
                "layers": f"all ({_layer_text(space.num_ws)})",
            },
            curve_plot=out / "curve.png",
            loss_plot=out / "loss.png",
            usage_plot=out / "usage.png",
            walk_gif=out / "walks" / "walk.gif",
            files=rel,
        )
        files["report"] = out / "report.html"
        rel["report"] = "report.html"
        write_report(out / "report.html", data)
        summary = {
            "network": config.network,
            "generator": G.name,
            "space": space.describe(),
            "n": config.n,
            "dim": int(V.shape[1]),
            "total_variance": model.total_variance_,
            "stages": stages,
            "smoothness": smooth,
            "empty_corners": {str(b): sorted(e) for b, e in empty.items()},
            "empty_corner_reasons": {str(b): {str(k): v for k, v in e.items()} for b, e in empty.items()},
            "empty_corner_rule": {"min_share": MIN_SHARE, "dist_factor": DIST_FACTOR},
            "segments": [{**s, "edit": _rel(s["edit"], out)} for s in segments],
            "timings": timings,
            "files": rel,
        }
        files["summary"] = write_json(out / "summary.json", summary)
        files["options"] = write_options(out, "run", config.options())
    return RunResult(model, space, V, smooth, empty, segments, timings, files)


def _generator_sha(network: str) -> str | None:
    from sfvq.generators.registry import generator_sha256

    try:
        return generator_sha256(network)
    except Exception:  # noqa: BLE001 (a hash is informative only; never fail a run over it)
        return None


def _rel(p: Path, root: Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return str(p)


def _layer_text(num_ws: int) -> str:
    return "the space has one layer" if num_ws == 1 else f"layers 0-{num_ws - 1}"


def print_run_summary(result: RunResult, outdir: Path, console: Any | None = None) -> None:
    """Rich tables: smoothness per bitrate, empty corners, step timings and the main output paths."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title="smoothness (1.0 = the order means nothing; lower is smoother)")
    for col in ("bits", "SFVQ images", "k-means images", "SFVQ space", "k-means space", "empty corners"):
        t.add_column(col, justify="right")
    for r in result.smoothness:
        flagged = sorted(result.empty.get(r["bits"], {}))
        t.add_row(
            str(r["bits"]),
            f"{r['sfvq_image']:.3f}",
            f"{r['kmeans_image']:.3f}",
            f"{r['sfvq_latent']:.3f}",
            f"{r['kmeans_latent']:.3f}",
            ", ".join(map(str, flagged)) if flagged else "none",
        )
    console.print(t)
    t = Table(title="steps")
    t.add_column("step")
    t.add_column("seconds", justify="right")
    for k, v in result.timings.items():
        t.add_row(k, f"{v:.1f}")
    t.add_row("total", f"{sum(result.timings.values()):.1f}")
    console.print(t)
    t = Table(title=f"outputs in {outdir}")
    t.add_column("output")
    t.add_column("path")
    for k in (
        "report",
        "model",
        "latents",
        "space",
        "summary",
        "options",
        "walk (GIF)",
        "walk (MP4)",
        "edits",
    ):
        if k in result.files:
            t.add_row(k, str(result.files[k]))
    t.add_row("maps", str(Path(outdir) / "maps"))
    console.print(t)


__all__ = [
    "DEFAULT_N",
    "STEPS",
    "ConfigError",
    "RunConfig",
    "RunResult",
    "clear_stale",
    "print_run_summary",
    "run_pipeline",
    "validate",
]
