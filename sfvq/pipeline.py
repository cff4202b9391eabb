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
from typing import TYPE_CHECKING, Any

from sfvq.schedule import DEFAULT_SCHEDULE

if TYPE_CHECKING:  # imported where used, so that `sfvq run --help` starts without torch
    import numpy as np
    import torch

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

    console = console or Console(stderr=True, quiet=not config.progress)
    log = (lambda text: console.print(f"[dim]{text}[/dim]")) if config.progress else (lambda text: None)
    if G is None:
        from sfvq.generators.registry import load_generator

        G = load_generator(config.network, device=config.device)
    kind = validate(config, G)
    out = Path(config.outdir)
    out.mkdir(parents=True, exist_ok=True)
    clear_stale(out)
    job = _Job(config, G, kind, out)
    for step in STEPS:
        with _timed(job.timings, step, log):
            getattr(job, step)()
    return RunResult(job.model, job.space, job.V, job.smooth, job.empty, job.segments, job.timings, job.files)


class _Job:
    """One run of the pipeline: the steps of :data:`STEPS` as methods, run in that order, each reading what
    the earlier ones left on ``self`` (space and latents, model and codebooks, corner images, ...)."""

    def __init__(self, config: RunConfig, G: Any, kind: str, out: Path) -> None:
        self.config = config
        self.G = G
        self.kind = kind
        self.out = out
        self.progress = config.progress
        self.rb = config.render_batch_size
        self.eb = config.resolved_edit_bits()
        self.timings: dict[str, float] = {}
        self.files: dict[str, Path] = {}
        self.corner_images: dict[int, torch.Tensor] = {}  # bits -> (K, C, H, W)
        self.empty: dict[int, dict[int, str]] = {}
        self.segments: list[dict[str, Any]] = []
        self.smooth: list[dict[str, Any]] = []
        # Set by the steps: sample -> space, V (N, D), sha; fit -> model, stages, codebooks (b -> (K, D)).
        self.space: Any = None
        self.V: np.ndarray | None = None
        self.sha: str | None = None
        self.model: Any = None
        self.stages: list[dict[str, Any]] = []
        self.codebooks: dict[int, torch.Tensor] = {}

    def sample(self) -> None:
        """Space vectors of N latents: ``latents.npy`` (+ sidecar) and ``space.json``."""
        import numpy as np

        from sfvq.io import save_npy_with_sidecar
        from sfvq.spaces import LatentSpace

        c = self.config
        self.space = LatentSpace(
            self.G,
            self.kind,
            layer=c.layer,
            truncation_psi=c.truncation_psi,
            truncation_cutoff=c.truncation_cutoff,
            class_idx=c.class_idx,
            noise_mode=c.noise_mode,
        )
        self.V = np.ascontiguousarray(
            self.space.sample(c.n, c.seed, progress=self.progress), dtype=np.float32
        )
        self.sha = _generator_sha(c.network)
        data_meta = {
            "network": c.network,
            "generator": self.G.name,
            "generator_sha256": self.sha,
            "space": self.space.describe(),
            "n": c.n,
            "seed": c.seed,
        }
        self.files["latents"] = save_npy_with_sidecar(self.out / "latents.npy", self.V, data_meta)
        self.files["space"] = self.space.save(self.out)

    def fit(self) -> None:
        """The curve: ``model.safetensors``, ``summary.json`` (stages), ``loss.png``, ``curve.png``."""
        from sfvq.fitting import fit_curve, write_fit

        c = self.config
        data = {"file": "latents.npy", "n": c.n, "seed": c.seed, "generator_sha256": self.sha}
        self.model = fit_curve(
            self.V,
            c.bits,
            epochs=c.epochs,
            batch_size=c.batch_size,
            lr=c.lr,
            seed=c.seed,
            device=c.device,
            verbose=self.progress,
            metadata={"network": c.network, "space": self.space.describe(), "data": data},
        )
        self.stages, written = write_fit(self.model, self.V, self.out)
        for key in ("model", "loss plot", "curve plot"):
            self.files[key] = written[key]
        self.codebooks = {b: C.detach().cpu().float() for b, C in sorted(self.model.codebooks_.items())}

    def maps(self) -> None:
        """Every corner of every bitrate rendered: ``maps/map_{b}bit.png`` (corners in empty regions framed
        in red) and ``maps/strip_{b}bit.png``."""
        from sfvq.io import save_png
        from sfvq.metrics import empty_corners
        from sfvq.render import panoptic_map, render_vectors, strip

        for b, C in self.codebooks.items():
            images, tiles = render_vectors(
                self.space, C, batch_size=self.rb, description=f"{b}-bit corners", progress=self.progress
            )
            self.corner_images[b] = images
            found = empty_corners(self.V, C)
            self.empty[b] = {k: found.reasons[k] for k in found.flagged}
            maps = self.out / "maps"
            self.files[f"map {b} bits"] = save_png(
                maps / f"map_{b}bit.png", panoptic_map(tiles, found.flagged)
            )
            self.files[f"strip {b} bits"] = save_png(maps / f"strip_{b}bit.png", strip(tiles, found.flagged))

    def walk(self) -> None:
        """The finest curve walked at evenly spaced positions: ``walks/walk.gif`` and ``walks/walk.mp4``."""
        from sfvq.render import render_vectors, walk_points, write_gif, write_mp4

        c = self.config
        points = walk_points(self.codebooks[c.bits], c.walk_frames)  # (T, D)
        _, frames = render_vectors(
            self.space, points, batch_size=self.rb, description="walk", progress=self.progress
        )
        self.files["walk (GIF)"] = write_gif(self.out / "walks" / "walk.gif", frames, c.fps)
        self.files["walk (MP4)"] = write_mp4(self.out / "walks" / "walk.mp4", frames, c.fps)

    def edits(self) -> None:
        """Each segment of the edit bitrate applied to the edit seeds at every sigma (in stds of the data
        along it), all layers: ``edits/{b}bit_seg{i:03d}.png``."""
        from sfvq.io import save_png
        from sfvq.metrics import segment_stats
        from sfvq.progress import track
        from sfvq.render import edit_grid, edit_images

        c, eb = self.config, self.eb
        stats = segment_stats(self.V, self.codebooks[eb])
        seeds_full = self.space.encode_seeds(list(c.edit_seeds))  # (S, num_ws, full_dim)
        units = self.model.directions(eb).detach().cpu().float()  # (K-1, D) unit, zero stays zero
        for row in track(stats, f"edits at {eb} bits", len(stats), self.progress):
            i = row["segment"]
            sig = [s * row["std"] for s in c.sigmas]
            tiles = edit_images(self.space, seeds_full, units[i], sig, batch_size=self.rb)
            grid = edit_grid(tiles, c.edit_seeds, c.sigmas)
            path = save_png(self.out / "edits" / f"{eb}bit_seg{i:03d}.png", grid)
            self.segments.append({"bits": eb, **row, "edit": path})
        self.files["edits"] = self.out / "edits"

    def smoothness(self) -> None:
        """The order score of SFVQ corners against k-means centroids, on images and on space vectors."""
        from sfvq.metrics import image_smoothness, kmeans, smoothness
        from sfvq.progress import track
        from sfvq.render import render_vectors

        items = list(self.codebooks.items())
        for b, C in track(items, "k-means baseline", len(items), self.progress):
            centroids = kmeans(self.V, 2**b, seed=self.config.seed)  # (K, D)
            km_images, _ = render_vectors(self.space, centroids, batch_size=self.rb, progress=False)
            self.smooth.append(
                {
                    "bits": b,
                    "sfvq_image": image_smoothness(self.corner_images[b]),
                    "kmeans_image": image_smoothness(km_images),
                    "sfvq_latent": smoothness(C),
                    "kmeans_latent": smoothness(centroids),
                }
            )

    def report(self) -> None:
        """``usage.png``, ``report.html``, the full ``summary.json`` and ``options.json``."""
        import torch

        from sfvq import curve
        from sfvq.io import write_json, write_options
        from sfvq.metrics import DIST_FACTOR, MIN_SHARE
        from sfvq.report import usage_plot, write_report

        c, out, V = self.config, self.out, self.V
        usage = {
            b: curve.segment_usage(
                curve.project(torch.from_numpy(V), self.codebooks[b]).segment, 2**b - 1
            ).numpy()
            for b in sorted({self.eb, c.bits})
        }
        self.files["usage plot"] = usage_plot(usage, out / "usage.png")
        rel = {k: _rel(p, out) for k, p in self.files.items()}
        self.files["report"] = out / "report.html"
        rel["report"] = "report.html"
        write_report(out / "report.html", self._report_data(rel))
        summary = {
            "network": c.network,
            "generator": self.G.name,
            "space": self.space.describe(),
            "n": c.n,
            "dim": int(V.shape[1]),
            "total_variance": self.model.total_variance_,
            "stages": self.stages,
            "smoothness": self.smooth,
            "empty_corners": {str(b): sorted(e) for b, e in self.empty.items()},
            "empty_corner_reasons": {
                str(b): {str(k): v for k, v in e.items()} for b, e in self.empty.items()
            },
            "empty_corner_rule": {"min_share": MIN_SHARE, "dist_factor": DIST_FACTOR},
            "segments": [{**s, "edit": _rel(s["edit"], out)} for s in self.segments],
            "timings": self.timings,
            "files": rel,
        }
        self.files["summary"] = write_json(out / "summary.json", summary)
        self.files["options"] = write_options(out, "run", c.options())

    def _report_data(self, rel: dict[str, str]) -> Any:
        """What report.html shows (the files written so far, ``rel``, as paths relative to the run)."""
        from sfvq.metrics import DIST_FACTOR, MIN_SHARE
        from sfvq.report import ReportData

        c, out, space = self.config, self.out, self.space
        settings = {
            "network": c.network,
            "generator": self.G.name,
            "space": space.name,
            "samples (N)": c.n,
            "seed": c.seed,
            "bits": c.bits,
            "truncation psi": c.truncation_psi,
            "truncation cutoff": c.truncation_cutoff,
            "class": c.class_idx,
            "noise mode": c.noise_mode,
            "fit schedule": f"{c.epochs} epochs x batch {c.batch_size}, lr {c.lr:g}",
            "edit bits": self.eb,
            "edit seeds": list(c.edit_seeds),
            "sigmas (std units)": list(c.sigmas),
            "walk": f"{c.walk_frames} frames at {c.fps:g} fps",
            "device": c.device,
            "empty-corner rule": (
                f"half-segment cell under {MIN_SHARE:g}/K of the samples, or nearest sample over "
                f"{DIST_FACTOR:g} x the median sample-to-curve distance"
            ),
        }
        return ReportData(
            title=f"sfvq run: {self.G.name}, space {space.name}, {c.bits} bits",
            settings=settings,
            space=space.describe(),
            stages=self.stages,
            smoothness=self.smooth,
            maps={b: out / "maps" / f"map_{b}bit.png" for b in self.codebooks},
            empty=self.empty,
            segments=self.segments,
            edit_settings={
                "bits": self.eb,
                "seeds": list(c.edit_seeds),
                "sigmas": list(c.sigmas),
                "layers": f"all ({_layer_text(space.num_ws)})",
            },
            curve_plot=out / "curve.png",
            loss_plot=out / "loss.png",
            usage_plot=out / "usage.png",
            walk_gif=out / "walks" / "walk.gif",
            files=rel,
        )


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
