"""The main job behind ``sfvq run``: sample latents, fit the curve, render and measure it, write a report.

Steps (each timed in :attr:`RunResult.timings`, each long one with a progress bar):

1. ``sample``: space vectors of N latents (``latents.npy`` + sidecar, ``space.json``).
2. ``fit``: the SFVQ curve (``model.safetensors``, ``loss.png``, ``curve.png``, ``summary.json``).
3. ``plan``: how many images one generator call may render (a memory estimate,
   :func:`sfvq.membudget.render_batch_size`), one call timed (the 2-bit corners), and what the rendering
   steps render so that the run fits its time budget (:func:`plan_renders`), printed and recorded.
4. ``maps``: every corner of every planned bitrate rendered; ``maps/map_{b}bit.png`` (labelled grid,
   corners in empty regions framed in red) and ``maps/strip_{b}bit.png``; corners asked for at full size
   as ``maps/corner_{b}bit_{k:03d}.png``.
5. ``walk``: the finest curve walked at evenly spaced positions (``walks/walk.mp4``, ``walks/walk.gif``),
   each batch of frames streamed to the files as it is rendered.
6. ``edits``: each planned segment of the edit bitrate applied to fixed seeds at several sigmas
   (``edits/{b}bit_seg{i:03d}.png``); sigma is counted in stds of the data along the direction, and by
   default chosen from the data (:func:`sfvq.directions.data_sigmas`, resolved in ``plan``); the
   unedited column (sigma 0) is rendered once for all segments.
7. ``smoothness``: the order score of corners against k-means centroids, on images (the map renders
   reused; centroids rendered the same way for the planned bitrates) and space vectors.
8. ``report``: ``usage.png``, ``report.html`` (and ``report.json`` + ``maps/tiles_{b}bit.png``, what
   ``sfvq report`` redraws it from once ``sfvq annotate``/``sfvq quality`` added their files), the full
   ``summary.json`` and ``options.json``.

With ``annotate`` (``sfvq run --annotate``; off by default, as it takes longer than the rest of the main
job), an ``annotate`` step before the report writes ``annotations.json`` and ``annotations/``
(:mod:`sfvq.annotate`).

Maps, walk and edits are rendered at a preview resolution (``--preview-res``, 256 px by default, or the
generator's own when smaller; ``--full-res`` for full size): a StyleGAN2 stops at that block, which costs a
fraction of a full render; other generators render at full size and downsample. A time budget
(``--time-budget``, 600 s by default for the whole run) cuts the walk's frames, the edited segments, the
k-means baseline and the map bitrates where rendering everything would take longer, and says what it left
out; the plan is revised from the maps' real speed, and the edits and the baseline stop early where the
measured speed says they would pass the deadline. A generator small enough renders everything, as before.

The run directory follows the contract shared by the other commands: ``model.safetensors`` (metadata
``{"network", "space", "data", "run_id"}``), ``space.json``, ``latents.npy``/``latents.json``. Every step
writes into a staging folder beside the run directory, which replaces it only when the last step is done
(:func:`sfvq.runs.staged_run`): a job that fails or is killed leaves the previous run as it was, and the
files of a run carry its id (``run_id``) so that :meth:`sfvq.runs.Run.open` refuses a folder mixing two.

Under torchrun (``torchrun --nproc-per-node N -m sfvq -- run ...``) rank 0 samples and fits
(:data:`MAIN_WRITES_STEPS`; the others read its files), the processes share the renders (maps, walk, edit
grids, k-means centroids, full-size corners: :func:`sfvq.render.render_shared`) and rank 0 alone writes
the report and publishes the run; the pictures equal one process's for a given ``--render-batch-size``
(docs/scale.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sfvq.schedule import DEFAULT_SCHEDULE

if TYPE_CHECKING:  # imported where used, so that `sfvq run --help` starts without torch
    import numpy as np
    import torch

DEFAULT_N = 20_000
DEFAULT_EDIT_SEEDS = (0, 1, 2, 3)
DEFAULT_PREVIEW_RES = 256  # px of maps, walk and edits (or the generator's own, when smaller)
DEFAULT_TIME_BUDGET = 600.0  # seconds for the whole run; 0: no limit
DEFAULT_RENDER_BATCH = 64  # most images per generator call (fewer where memory says so)
MIN_PREVIEW_RES = 8
STEPS = ("sample", "fit", "plan", "maps", "walk", "edits", "smoothness", "report")
# Under torchrun these run on rank 0 alone; the others render their shares in the steps before.
MAIN_ONLY_STEPS = frozenset({"report", "annotate"})
# Under torchrun these run on rank 0, which writes their files; the others then read those files, so that
# every process renders from the same vectors and curve, bit for bit, as one process would.
MAIN_WRITES_STEPS = frozenset({"sample", "fit"})
# Shares of the rendering time a cut plan gives, in this order: maps (of all that is left), the k-means
# baseline (of what the maps leave), edits (of what the baseline leaves); the walk gets the rest.
PLAN_SHARES = {"maps": 0.6, "baseline": 0.25, "edits": 0.5}
PLAN_RESERVE = 0.1  # of the time left, kept for the work besides rendering (k-means, grids, the report)
BATCH_SECONDS = 10.0  # automatic batches stay under about this long, so that progress shows

# Files from an earlier run in the same directory that this run rewrites: removed first, so that a run
# that stops half-way never leaves a directory that looks complete or mixes two runs' pictures.
_STALE = {
    ".": ("report.html", "report.json", "options.json", "summary.json", "usage.png"),
    "maps": ("map_*bit.png", "strip_*bit.png", "corner_*bit_*.png", "tiles_*bit.png"),
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
    sigmas: tuple[float, ...] | None = None  # None: chosen from the data (sfvq.directions.data_sigmas)
    walk_frames: int = 240  # at most; a time budget may render fewer
    fps: float = 24.0
    render_batch_size: int | None = None  # None: as many as fit in memory, at most DEFAULT_RENDER_BATCH
    device: str = "cpu"
    progress: bool = True
    preview_res: int = DEFAULT_PREVIEW_RES  # px of maps, walk and edits (capped at the generator's)
    full_res: bool = False  # render maps, walk and edits at the generator's full resolution
    full_res_corners: tuple[int, ...] = ()  # corners of the final bitrate also written at full size
    time_budget: float = DEFAULT_TIME_BUDGET  # seconds for the whole run (0: no limit)
    fitter: str = "sfvq"  # "sfvq", or "sfdiveq" (SF-DiVeQ from the optional diveq package)
    annotate: bool = False  # the optional annotate step (sfvq.annotate) before the report

    def render_resolution(self) -> int | None:
        """The resolution asked of the generator for maps, walk and edits (None: full size)."""
        return None if self.full_res else self.preview_res

    def resolved_edit_bits(self) -> int:
        return min(self.bits, 4) if self.edit_bits is None else self.edit_bits

    def options(self) -> dict[str, Any]:
        """JSON-friendly settings (options.json)."""
        d = asdict(self)
        d["outdir"] = str(self.outdir)
        d["edit_bits"] = self.resolved_edit_bits()
        d["edit_seeds"] = list(self.edit_seeds)
        d["sigmas"] = None if self.sigmas is None else list(self.sigmas)
        d["full_res_corners"] = list(self.full_res_corners)
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
    plan: RenderPlan | None = None


@dataclass
class RenderPlan:
    """What the rendering steps render (chosen by :func:`plan_renders`), and the time it should take.

    ``map_bits``: bitrates whose corners are rendered (maps, image smoothness); ``baseline_bits``: bitrates
    whose k-means centroids are rendered for the image smoothness baseline; ``edit_segments``: segments of
    the edit bitrate with an edit grid, in index order; ``walk_frames``: frames of the walk (0: none).
    ``images``/``seconds``: what the plan renders and how long that should take; ``full_images``/
    ``full_seconds``: the same for everything; ``left_out``: one line per thing the budget cut.
    """

    seconds_per_image: float
    available: float | None  # seconds the budget left for rendering (None: no limit)
    map_bits: list[int]
    baseline_bits: list[int]
    edit_segments: list[int]
    walk_frames: int
    images: int
    seconds: float
    full_images: int
    full_seconds: float
    left_out: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (summary.json)."""
        return asdict(self)


def _bits_text(bits: Sequence[int]) -> str:
    """2, 3, 4, 6 -> "2-4, 6"."""
    runs: list[list[int]] = []
    for b in sorted(bits):
        if runs and b == runs[-1][-1] + 1:
            runs[-1].append(b)
        else:
            runs.append([b])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def left_out_text(
    bits: int,
    map_bits: Sequence[int],
    baseline_bits: Sequence[int],
    n_edit: int,
    n_segments: int,
    frames: int,
    walk_frames: int,
) -> list[str]:
    """One line per part of the rendering a plan leaves out (empty when it renders everything)."""
    all_bits = list(range(2, bits + 1))
    out = []
    if len(set(map_bits)) < len(all_bits):
        out.append(f"maps at {_bits_text([b for b in all_bits if b not in map_bits])} bits")
    if len(set(baseline_bits)) < len(all_bits):
        missing = [b for b in all_bits if b not in baseline_bits]
        out.append(f"the k-means baseline of the image smoothness at {_bits_text(missing)} bits")
    if n_edit == 0 < n_segments:
        out.append(f"the edit grids (all {n_segments} segments)")
    elif n_edit < n_segments:
        out.append(f"edit grids of {n_segments - n_edit} of {n_segments} segments (the least used)")
    if frames < walk_frames:
        out.append(f"{walk_frames - frames} of {walk_frames} walk frames" if frames else "the walk")
    return out


def plan_renders(
    *,
    bits: int,
    segment_usage: Sequence[float],
    n_seeds: int,
    sigmas: Sequence[float],
    walk_frames: int,
    seconds_per_image: float,
    available: float | None,
    rendered_bits: Sequence[int] = (2,),
    more_maps: bool = True,
) -> RenderPlan:
    """Choose what the rendering steps render so that it takes at most ``available`` seconds.

    Costs are counted in images of ``seconds_per_image`` each: a map at b bits renders 2**b corners (those
    of ``rendered_bits`` are already rendered and always kept; with ``more_maps`` False no other map is
    added, as when planning again after the maps), its k-means baseline as many centroids; an edit grid
    ``n_seeds`` images per non-zero sigma (the unedited column, sigma 0, is rendered once for all
    segments); the walk one image per frame. When everything fits (or ``available`` is None), everything
    is rendered. Otherwise, in order and deterministically:

    1. maps: the bitrates from the finest down, each while it fits in :data:`PLAN_SHARES` ["maps"] of the
       time (a bitrate that does not fit is skipped, a coarser one may still fit);
    2. the k-means baseline: the mapped bitrates from the coarsest up, within its share of what is left;
    3. edits: the most used segments (ties: the lower index) within their share of what is left;
    4. the walk: as many frames as the rest allows (at most ``walk_frames``; none below 2).
    """
    if seconds_per_image < 0 or not math.isfinite(seconds_per_image):
        raise ValueError(f"seconds_per_image must be finite and >= 0, got {seconds_per_image}")
    t = seconds_per_image
    done = set(rendered_bits)
    all_bits = list(range(2, bits + 1))
    can_map = [b for b in all_bits if b not in done] if more_maps else []
    has_zero = any(s == 0 for s in sigmas)
    per_segment = n_seeds * sum(1 for s in sigmas if s != 0)
    n_segments = len(segment_usage)

    def edit_cost(n: int) -> int:
        return 0 if n == 0 else n * per_segment + (n_seeds if has_zero else 0)

    full_images = 2 * sum(2**b for b in can_map) + sum(2**b for b in done)  # maps and baselines
    full_images += edit_cost(n_segments) + walk_frames
    full_seconds = full_images * t
    if available is None or full_seconds <= max(0.0, available):
        map_bits, baseline_bits = sorted(done | set(can_map)), sorted(done | set(can_map))
        edit_segments, frames = list(range(n_segments)), walk_frames
    else:
        room = max(0.0, available) / t  # images the budget allows (t > 0 here)
        # 1. maps, finest first.
        maps_room = PLAN_SHARES["maps"] * room
        chosen = set(done)
        for b in reversed(can_map):
            if 2**b <= maps_room:
                chosen.add(b)
                maps_room -= 2**b
        map_bits = sorted(chosen)
        room -= sum(2**b for b in chosen - done)
        # 2. the k-means baseline, coarsest first.
        base_room = PLAN_SHARES["baseline"] * room
        baseline_bits = []
        for b in map_bits:
            if 2**b > base_room:
                break
            baseline_bits.append(b)
            base_room -= 2**b
        room -= sum(2**b for b in baseline_bits)
        # 3. edits of the most used segments.
        edit_room = PLAN_SHARES["edits"] * room
        n_edit = 0
        while n_edit < n_segments and edit_cost(n_edit + 1) <= edit_room:
            n_edit += 1
        by_use = sorted(range(n_segments), key=lambda i: (-segment_usage[i], i))
        edit_segments = sorted(by_use[:n_edit])
        room -= edit_cost(n_edit)
        # 4. the walk.
        frames = min(walk_frames, int(room)) if room >= 2 else 0
    images = sum(2**b for b in map_bits if b not in done) + sum(2**b for b in baseline_bits)
    images += edit_cost(len(edit_segments)) + frames
    left_out = left_out_text(
        bits, map_bits, baseline_bits, len(edit_segments), n_segments, frames, walk_frames
    )
    return RenderPlan(
        seconds_per_image=t,
        available=available,
        map_bits=map_bits,
        baseline_bits=baseline_bits,
        edit_segments=edit_segments,
        walk_frames=frames,
        images=images,
        seconds=images * t,
        full_images=full_images,
        full_seconds=full_seconds,
        left_out=left_out,
    )


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
    if kind.partition(":")[0] not in KINDS:
        raise ConfigError("--space", f"space must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind.partition(":")[0] == "s":
        from sfvq.spaces import LatentSpace

        try:
            LatentSpace(G, kind)  # the generator has a StyleSpace and the group fits it
        except ValueError as e:
            raise ConfigError("--space", str(e)) from e
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
    if config.sigmas is not None and not config.sigmas:
        raise ConfigError("--sigmas", "give at least one sigma")
    if config.walk_frames < 2:
        raise ConfigError("--walk-frames", f"a walk needs at least 2 frames, got {config.walk_frames}")
    if not config.fps > 0:
        raise ConfigError("--fps", f"frames per second must be positive, got {config.fps}")
    if config.render_batch_size is not None and config.render_batch_size < 1:
        raise ConfigError("--render-batch-size", f"must be >= 1, got {config.render_batch_size}")
    if config.preview_res < MIN_PREVIEW_RES:
        raise ConfigError("--preview-res", f"must be >= {MIN_PREVIEW_RES} px, got {config.preview_res}")
    if not (math.isfinite(config.time_budget) and config.time_budget >= 0):
        raise ConfigError("--time-budget", f"must be a number of seconds >= 0, got {config.time_budget}")
    bad = [k for k in config.full_res_corners if not 0 <= k < K]
    if bad:
        raise ConfigError(
            "--full-res-corners", f"corner {bad[0]} does not exist: a {config.bits}-bit curve has 0-{K - 1}"
        )
    _render_batch(config, G)  # one image must fit in memory: said now, before anything is written
    _check_memory(config, G, kind)
    return kind


# Copies of the (N, D) latents the job holds at its peak (the sampled array, the fit's float32 rows,
# projections and k-means distances), for the memory estimate of --n.
LATENT_COPIES = 4


def sample_bytes(config: RunConfig, G: Any, kind: str) -> int:
    """Bytes of memory one latent costs the job: its z, and :data:`LATENT_COPIES` float32 copies of its
    space vector; a feature space also holds every sample's activations at the layer until its PCA is fitted
    (their size is read off one sample) and at most 300 PCA coordinates."""
    if kind == "w":
        dim = int(G.w_dim)
    elif kind == "z":
        dim = int(G.z_dim)
    elif kind.partition(":")[0] == "s":
        from sfvq.spaces import LatentSpace

        dim = int(LatentSpace(G, kind).dim)
    else:
        import torch

        from sfvq.latents import class_vectors, z_for_seeds

        z = torch.from_numpy(z_for_seeds(G, [0], config.truncation_psi)).to(G.device)  # (1, z_dim)
        layer = config.layer or G.layers[0]
        c = class_vectors(G, config.class_idx, 1)
        with torch.no_grad():
            f = G.features_of_z(z, c, layer, config.truncation_psi, config.truncation_cutoff)  # (1, ...)
        dim = int(f[0].numel()) + 300
    return 4 * (int(G.z_dim) + LATENT_COPIES * dim)


def _check_memory(config: RunConfig, G: Any, kind: str) -> None:
    """A :class:`ConfigError` on ``--n`` when the job's latents alone would not fit in the memory that is
    available now (where that can be read)."""
    from sfvq.membudget import available_memory

    available = available_memory("cpu")
    if available is None:
        return
    try:
        need = config.n * sample_bytes(config, G, kind)
    except (ValueError, RuntimeError):  # settings the generator refuses: other checks say so
        return
    if need > available:
        raise ConfigError(
            "--n",
            f"{config.n:,} samples need about {need / 2**30:.1f} GiB of memory in space {kind} of "
            f"{G.name}; {available / 2**30:.1f} GiB is available: use a smaller --n",
        )


def _render_batch(config: RunConfig, G: Any, option: str = "--device") -> int:
    """Images per generator call (:func:`sfvq.membudget.render_batch_size`, capped by
    ``--render-batch-size``); a :class:`ConfigError` naming ``option`` (the device, whose memory it is)
    where one image is predicted not to fit."""
    from sfvq.membudget import RenderMemoryError, render_batch_size

    try:
        return render_batch_size(G, config.render_batch_size or DEFAULT_RENDER_BATCH, check=True)
    except RenderMemoryError as e:
        raise ConfigError(option, str(e)) from e


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
def _shared_staging(outdir: Path) -> Iterator[Any]:
    """:func:`sfvq.runs.staged_run`, shared by the processes of a ``torch.distributed`` run: rank 0 makes
    the staging folder (and publishes it when its block ends), the others get its path and write their
    shares of the renders into it (``outdir`` must then lie on a file system every process sees). A
    failure to make it is raised on every process."""
    from sfvq import dist
    from sfvq.runs import staged_run

    if not dist.is_distributed():
        with staged_run(outdir) as staging:
            yield staging
        return
    with ExitStack() as stack:
        staging, error = None, None
        if dist.is_main():
            try:
                staging = stack.enter_context(staged_run(outdir))
            except Exception as e:  # noqa: BLE001 (raised below, on every process)
                error = e
        dist.raise_together(error)
        yield dist.broadcast_object(staging)


@contextmanager
def _timed(timings: dict[str, float], step: str, log: Any) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - start
    log(f"{step}: {timings[step]:.1f}s")


def steps_for(config: RunConfig) -> tuple[str, ...]:
    """The steps a run takes: :data:`STEPS`, with ``annotate`` before ``report`` when ``config.annotate``."""
    if not config.annotate:
        return STEPS
    i = STEPS.index("report")
    return (*STEPS[:i], "annotate", *STEPS[i:])


def run_pipeline(
    config: RunConfig,
    G: Any | None = None,
    console: Any | None = None,
    *,
    seconds_per_image: float | None = None,
) -> RunResult:
    """Run every step into ``config.outdir`` (see the module docstring); ``G`` is loaded when not given.

    ``seconds_per_image``: the time one image takes to render at the run's resolution, used by the plan
    instead of the timed render (a figure known from an earlier run; tests). Raises :class:`ConfigError`
    for settings that cannot work (before anything is written).
    """
    started = time.perf_counter()
    from rich.console import Console

    console = console or Console(stderr=True, quiet=not config.progress)
    log = (lambda text: console.print(f"[dim]{text}[/dim]")) if config.progress else (lambda text: None)
    if G is None:
        from sfvq.generators.registry import load_generator

        G = load_generator(config.network, device=config.device)
    kind = validate(config, G)
    from sfvq import dist

    # Every step writes into the staging folder; it replaces config.outdir once the last one is done.
    with _shared_staging(config.outdir) as staging:
        out = staging.path
        job = _Job(config, G, kind, out, started=started, log=log, seconds_per_image=seconds_per_image)
        job.run_id = staging.run_id
        for step in steps_for(config):
            if step in MAIN_ONLY_STEPS and not dist.is_main():
                continue
            with _timed(job.timings, step, log):
                if step in MAIN_WRITES_STEPS and dist.is_distributed():
                    job.on_main(step)
                else:
                    getattr(job, step)()
    return RunResult(
        job.model,
        job.space,
        job.V,
        job.smooth,
        job.empty,
        [{**s, "edit": s["edit"] and staging.final(s["edit"])} for s in job.segments],  # None: no grid
        job.timings,
        {k: staging.final(p) for k, p in job.files.items()},
        job.render_plan,
    )


class _Job:
    """One run of the pipeline: the steps of :data:`STEPS` as methods, run in that order, each reading what
    the earlier ones left on ``self`` (space and latents, model and codebooks, corner images, ...)."""

    def __init__(
        self,
        config: RunConfig,
        G: Any,
        kind: str,
        out: Path,
        *,
        started: float | None = None,
        log: Callable[[str], None] = lambda text: None,
        seconds_per_image: float | None = None,
    ) -> None:
        self.config = config
        self.G = G
        self.kind = kind
        self.out = out
        self.run_id: str | None = None  # stamped into the run's files (set by run_pipeline)
        self.progress = config.progress
        self.started = time.perf_counter() if started is None else started
        self.log = log
        self.given_seconds_per_image = seconds_per_image
        self.res = config.render_resolution()  # asked of the generator (None: full size)
        self.side: int | None = None  # px of the rendered images (longer side), known after the probe
        self.rb = config.render_batch_size or DEFAULT_RENDER_BATCH  # set by plan() from memory
        self.render_plan: RenderPlan | None = None  # set by plan(), revised after the maps
        self.rate: float | None = None  # seconds per image, last measured (plan, maps, walk, edits)
        self.deadline: float | None = None  # perf_counter time rendering must end by (None: no budget)
        self.first_plan: RenderPlan | None = None
        self.eb = config.resolved_edit_bits()
        # Edit strengths (std units): the user's, or chosen from the data in plan() (sigma_choice).
        self.sigmas: tuple[float, ...] = tuple(config.sigmas) if config.sigmas is not None else ()
        self.sigma_choice: Any = None
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

    def on_main(self, step: str) -> None:
        """Run ``step`` (of :data:`MAIN_WRITES_STEPS`) on rank 0 alone; the other processes wait, then read
        what it wrote (``_read_{step}``). An error on rank 0 is raised on every process."""
        from sfvq import dist

        error = None
        if dist.is_main():
            try:
                with dist.local():  # rank 0 works as one process would (a fit of its own, no collectives)
                    getattr(self, step)()
            except Exception as e:  # noqa: BLE001 (raised below, on every process)
                error = e
        dist.raise_together(error)
        if not dist.is_main():
            getattr(self, f"_read_{step}")()

    def _read_sample(self) -> None:
        """The space and latents rank 0 sampled (``space.json``, ``latents.npy``)."""
        import numpy as np

        from sfvq.spaces import LatentSpace

        self.space = LatentSpace.load(self.out, self.G)
        self.V = np.ascontiguousarray(np.load(self.out / "latents.npy"), dtype=np.float32)

    def _read_fit(self) -> None:
        """The curve rank 0 fitted (``model.safetensors``)."""
        from sfvq.quantizer import SFVQ

        self.model = SFVQ.load(self.out / "model.safetensors", device="cpu")
        self.codebooks = {b: C.detach().cpu().float() for b, C in sorted(self.model.codebooks_.items())}

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
        data_meta["run_id"] = self.run_id
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
            fitter=c.fitter,
        )
        self.stages, written = write_fit(self.model, self.V, self.out, run_id=self.run_id)
        for key in ("model", "loss plot", "curve plot"):
            self.files[key] = written[key]
        self.codebooks = {b: C.detach().cpu().float() for b, C in sorted(self.model.codebooks_.items())}

    def plan(self) -> None:
        """Images per generator call from a memory estimate, one call timed (the 2-bit corners, kept for
        their map), and the render plan that fits the time budget (:func:`plan_renders`), printed."""
        import numpy as np
        import torch

        from sfvq import dist
        from sfvq.metrics import segment_stats
        from sfvq.render import render_vectors

        c, G = self.config, self.G
        self.rb = _render_batch(c, G)
        # Timed: corners 1-3 after corner 0 alone, whose call also pays the first call's set-up costs.
        C2 = self.codebooks[2]  # (4, D)
        first = render_vectors(self.space, C2[:1], batch_size=self.rb, progress=False, resolution=self.res)
        start = time.perf_counter()
        rest = render_vectors(self.space, C2[1:], batch_size=self.rb, progress=False, resolution=self.res)
        measured = (time.perf_counter() - start) / (len(C2) - 1)
        self.corner_images[2] = torch.cat([first[0], rest[0]])  # (4, C, H, W)
        self._tiles2 = np.concatenate([first[1], rest[1]])  # (4, H, W, C)
        t = measured if self.given_seconds_per_image is None else self.given_seconds_per_image
        if c.render_batch_size is None and t > 0:  # no call much longer than BATCH_SECONDS
            self.rb = max(1, min(self.rb, int(BATCH_SECONDS / t)))
        self.side = max(self.corner_images[2].shape[2:])
        self.edit_stats = segment_stats(self.V, self.codebooks[self.eb])
        self._choose_sigmas()
        spent = time.perf_counter() - self.started
        available = None if c.time_budget == 0 else (1 - PLAN_RESERVE) * (c.time_budget - spent)
        # Under torchrun every process takes rank 0's figures (one batch size, one plan), and an image of
        # the job costs t / world, as the processes share the images (self.rate counts so throughout).
        shared = (self.rb, t, spent, available, self.edit_stats, self.sigmas)
        self.rb, t, spent, available, self.edit_stats, self.sigmas = dist.broadcast_object(shared)
        if available is not None:
            self.deadline = time.perf_counter() + max(0.0, available)
        self.rate = t / dist.world_size()
        self.first_plan = self.render_plan = plan = plan_renders(
            bits=c.bits,
            segment_usage=[row["usage"] for row in self.edit_stats],
            n_seeds=len(c.edit_seeds),
            sigmas=self.sigmas,
            walk_frames=c.walk_frames,
            seconds_per_image=self.rate,
            available=available,
        )
        full = G.img_resolution
        where = f"{self.side} px" + (
            "" if self.side >= full else f" (a preview; the generator makes {full} px)"
        )
        self.log(f"rendering at {where}, {self.rb} per call: {t:.3g} s per image")
        if c.time_budget == 0:
            budget = "no time budget"
        else:
            budget = f"time budget {c.time_budget:g} s, {spent:.0f} s spent"
        self.log(
            f"rendering everything ({plan.full_images} images) would take about "
            f"{_duration(plan.full_seconds)}; {budget}; planned: {plan.images} images, about "
            f"{_duration(plan.seconds)}"
        )
        if plan.left_out:
            self.log(
                "left out to fit the time budget (raise --time-budget, 0 for no limit): "
                + "; ".join(plan.left_out)
            )

    def _choose_sigmas(self) -> None:
        """The edit strengths: the user's ``--sigmas``, else chosen from the data along the edit bitrate's
        segments (:func:`sfvq.directions.data_sigmas`), so that default edits stay on the data."""
        from sfvq.directions import data_sigmas

        if self.config.sigmas is not None:
            return
        C = self.codebooks[self.eb]  # (K, D)
        self.sigma_choice = data_sigmas(self.V, C[1:] - C[:-1])
        self.sigmas = self.sigma_choice.sigmas
        steps = ", ".join(f"{s:g}" for s in self.sigmas)
        self.log(f"edit sigmas {steps} std: {self.sigma_choice.describe()}")

    def _sigma_record(self) -> dict[str, Any]:
        """How the edit sigmas were chosen, JSON-friendly (options.json, summary.json)."""
        if self.sigma_choice is None:
            return {"rule": "given", "sigmas": list(self.sigmas)}
        return dict(self.sigma_choice.as_dict())

    def _sigma_text(self) -> str:
        """How the edit sigmas were chosen, one sentence."""
        if self.sigma_choice is None:
            return "given (--sigmas)"
        return str(self.sigma_choice.describe())

    def maps(self) -> None:
        """Every corner of every planned bitrate rendered: ``maps/map_{b}bit.png`` (corners in empty regions
        framed in red) and ``maps/strip_{b}bit.png``; corners asked for at full size as
        ``maps/corner_{b}bit_{k:03d}.png``. Empty corners are found at every bitrate."""
        from sfvq import dist
        from sfvq.generators.base import to_uint8
        from sfvq.io import save_png
        from sfvq.membudget import render_batch_size
        from sfvq.metrics import empty_corners
        from sfvq.render import batch_ranges, panoptic_map, render_shared, strip

        assert self.render_plan is not None
        c, maps = self.config, self.out / "maps"
        spread = c.render_batch_size is None  # under torchrun automatic batches shrink to reach every process
        rendered, seconds = 0, 0.0  # images and seconds of the renders below (to revise the plan)
        for b, C in self.codebooks.items():
            found = empty_corners(self.V, C)
            self.empty[b] = {k: found.reasons[k] for k in found.flagged}
            if b not in self.render_plan.map_bits:
                continue
            if b in self.corner_images:  # rendered by the plan's timing
                tiles = self._tiles2
            else:
                start = time.perf_counter()
                shared = render_shared(  # each process renders its batches; rank 0 gets them all
                    self.space,
                    C,
                    self.out,
                    f"map{b}",
                    batch_size=self.rb,
                    spread=spread,
                    description=f"{b}-bit corners",
                    progress=self.progress,
                    resolution=self.res,
                )
                rendered, seconds = rendered + len(C), seconds + time.perf_counter() - start
                if shared is not None:
                    self.corner_images[b], tiles = shared
            if not dist.is_main():  # rank 0 draws the maps
                continue
            self.files[f"map {b} bits"] = save_png(
                maps / f"map_{b}bit.png", panoptic_map(tiles, found.flagged)
            )
            self.files[f"strip {b} bits"] = save_png(maps / f"strip_{b}bit.png", strip(tiles, found.flagged))
        self._revise_plan(rendered, seconds)
        if c.full_res_corners:
            ks = list(c.full_res_corners)
            rb = render_batch_size(self.G, c.render_batch_size or DEFAULT_RENDER_BATCH)
            self.log(f"rendering {len(ks)} corner(s) at full size ({self.G.img_resolution} px)")
            error = None
            try:  # under torchrun each process renders and writes its batches of corners
                for start, stop in dist.my_items(batch_ranges(len(ks), rb, spread=spread)):
                    part = ks[start:stop]
                    images = self.space.render(self.codebooks[c.bits][part], rb)  # (k, C, H, W) full size
                    for k, tile in zip(part, to_uint8(images), strict=True):
                        save_png(maps / f"corner_{c.bits}bit_{k:03d}.png", tile)
            except Exception as e:  # noqa: BLE001 (raised below, on every process)
                error = e
            dist.raise_together(error)
            self.files["full-size corners"] = maps

    def _revise_plan(self, images: int, seconds: float) -> None:
        """Plan the rest (baseline, edits, walk) again from the time the maps' ``images`` really took, so
        that a first estimate that was off does not overrun the budget (nothing to do without a budget,
        with a given time per image, or when the maps rendered fewer than 4 images)."""
        from sfvq import dist

        c, plan = self.config, self.render_plan
        # Rank 0's figures on every process (its wall time covers the whole job's images), one plan.
        images, seconds, spent = dist.broadcast_object((images, seconds, time.perf_counter() - self.started))
        if c.time_budget == 0 or self.given_seconds_per_image is not None or images < 4 or plan is None:
            return
        self.rate = seconds / images
        self.render_plan = revised = plan_renders(
            bits=c.bits,
            segment_usage=[row["usage"] for row in self.edit_stats],
            n_seeds=len(c.edit_seeds),
            sigmas=self.sigmas,
            walk_frames=c.walk_frames,
            seconds_per_image=seconds / images,
            available=(1 - PLAN_RESERVE) * (c.time_budget - spent),
            rendered_bits=plan.map_bits,
            more_maps=False,
        )
        if (revised.baseline_bits, revised.edit_segments, revised.walk_frames) != (
            plan.baseline_bits,
            plan.edit_segments,
            plan.walk_frames,
        ):
            self.log(
                f"plan revised after the maps ({revised.seconds_per_image:.3g} s per image): "
                f"{revised.images} more images, about {_duration(revised.seconds)}"
                + ("; left out: " + "; ".join(revised.left_out) if revised.left_out else "")
            )

    def _measured(self, images: int, seconds: float) -> None:
        """Record the time per image of a render (unless the time per image was given)."""
        if self.given_seconds_per_image is None and images > 0:
            self.rate = seconds / images

    def _fits(self, images: int) -> bool:
        """Whether ``images`` more renders (of the whole job, all processes together) end before the
        deadline, at the last measured rate."""
        if self.deadline is None or self.rate is None:
            return True
        return time.perf_counter() + images * self.rate <= self.deadline

    def _cut(self, **changes: Any) -> None:
        """Shrink the plan where a step stopped at the deadline (``edit_segments``, ``baseline_bits``)."""
        from dataclasses import replace

        c, plan = self.config, self.render_plan
        assert plan is not None
        plan = replace(plan, **changes)
        plan.left_out = left_out_text(
            c.bits,
            plan.map_bits,
            plan.baseline_bits,
            len(plan.edit_segments),
            len(self.edit_stats),
            plan.walk_frames,
            c.walk_frames,
        )
        self.render_plan = plan

    def walk(self) -> None:
        """The finest curve walked at evenly spaced positions (as many frames as planned):
        ``walks/walk.mp4`` and ``walks/walk.gif`` (smaller frames), each batch of frames streamed to both as
        it is rendered, never the whole walk in memory."""
        from sfvq import dist
        from sfvq.render import GifWriter, Mp4Writer, iter_shared_renders, walk_points

        assert self.render_plan is not None
        c, frames = self.config, self.render_plan.walk_frames
        if frames < 2:
            return
        points = walk_points(self.codebooks[c.bits], frames)  # (T, D)
        walks = self.out / "walks"
        start = time.perf_counter()
        batches = iter_shared_renders(  # under torchrun: every process renders its batches, rank 0 gets all
            self.space,
            points,
            self.out,
            "walk",
            batch_size=self.rb,
            spread=c.render_batch_size is None,
            description="walk",
            progress=self.progress,
            resolution=self.res,
        )  # (b, H, W, C) uint8 each
        if not dist.is_main():
            for _ in batches:  # renders this process's share; rank 0 writes the files
                pass
            self._measured(frames, time.perf_counter() - start)
            return
        with Mp4Writer(walks / "walk.mp4", c.fps) as mp4, GifWriter(walks / "walk.gif", c.fps, frames) as gif:
            for batch in batches:
                mp4.add(batch)
                gif.add(batch)
        self._measured(frames, time.perf_counter() - start)
        self.files["walk (MP4)"] = walks / "walk.mp4"
        self.files["walk (GIF)"] = walks / "walk.gif"

    def edits(self) -> None:
        """Each segment of the edit bitrate applied to the edit seeds at every sigma (in stds of the data
        along it), all layers: ``edits/{b}bit_seg{i:03d}.png``."""
        import numpy as np
        import torch

        from sfvq import dist
        from sfvq.generators.base import to_uint8
        from sfvq.io import save_png
        from sfvq.progress import track
        from sfvq.render import edit_grid, edit_images

        assert self.render_plan is not None
        c, eb = self.config, self.eb
        world = dist.world_size()  # under torchrun each process renders and writes its share of the grids
        chosen = set(self.render_plan.edit_segments)
        seeds_full = self.space.encode_seeds(list(c.edit_seeds))  # (S, num_ws, full_dim)
        units = self.model.directions(eb).detach().cpu().float()  # (K-1, D) unit, zero stays zero
        S, T = len(c.edit_seeds), len(self.sigmas)
        moved = [j for j, s in enumerate(self.sigmas) if s != 0]  # columns that differ between segments
        base = None
        if chosen and len(moved) < T:
            # The unedited column, rendered once: the same forked RNG as each column of render_edits.
            with torch.random.fork_rng():
                torch.manual_seed(0)
                plain = self.space.render_full(seeds_full, self.rb, self.res)  # (S, C, H, W)
            base = to_uint8(plain)  # (S, H, W, C)
        # Most used first, so that the deadline (a first estimate that was off) cuts the least used.
        rows = sorted(
            (row for row in self.edit_stats if row["segment"] in chosen),
            key=lambda row: (-row["usage"], row["segment"]),
        )
        edited: dict[int, Path] = {}
        mine = dist.my_items(rows)  # round-robin: every process gets some of the most used
        for row in track(mine, f"edits at {eb} bits", len(mine), self.progress):
            i = row["segment"]
            if edited and not self._fits(S * len(moved) * world):  # the processes render in parallel
                self.log(f"edits stopped at the time budget after {len(edited)} of {len(rows)} segments")
                break
            start = time.perf_counter()
            columns: list[Any] = [base] * T  # per sigma: (S, H, W, C) uint8
            if moved:
                sig = [self.sigmas[j] * row["std"] for j in moved]
                rendered = edit_images(
                    self.space, seeds_full, units[i], sig, batch_size=self.rb, resolution=self.res
                )  # (S * M, H, W, C), seed-major
                rendered = rendered.reshape(S, len(moved), *rendered.shape[1:])  # (S, M, H, W, C)
                for m, j in enumerate(moved):
                    columns[j] = rendered[:, m]
                self._measured(S * len(moved) * world, time.perf_counter() - start)
            tiles = np.stack(columns, 1)  # (S, T, H, W, C)
            grid = edit_grid(tiles.reshape(S * T, *tiles.shape[2:]), c.edit_seeds, self.sigmas)
            edited[i] = save_png(self.out / "edits" / f"{eb}bit_seg{i:03d}.png", grid)
        edited = {i: path for part in dist.all_gather_object(edited) for i, path in part.items()}
        if len(edited) < len(rows):
            self._cut(edit_segments=sorted(edited))
        for row in self.edit_stats:
            self.segments.append({"bits": eb, **row, "edit": edited.get(row["segment"])})
        if edited:
            self.files["edits"] = self.out / "edits"

    def smoothness(self) -> None:
        """The order score of SFVQ corners against k-means centroids, on images and on space vectors."""
        from sfvq import dist
        from sfvq.metrics import image_smoothness, kmeans, smoothness
        from sfvq.progress import track
        from sfvq.render import render_shared

        assert self.render_plan is not None
        items = list(self.codebooks.items())
        baseline = set(self.render_plan.baseline_bits)
        rendered: list[int] = []
        for b, C in track(items, "k-means baseline", len(items), self.progress):
            # Under torchrun rank 0's centroids and decisions hold everywhere; the processes share renders.
            centroids = dist.broadcast_object(
                kmeans(self.V, 2**b, seed=self.config.seed) if dist.is_main() else None
            )  # (K, D)
            km_image = None
            if b in baseline and dist.broadcast_object(self._fits(2**b)):  # rendered as the corners were
                start = time.perf_counter()
                shared = render_shared(
                    self.space,
                    centroids,
                    self.out,
                    f"kmeans{b}",
                    batch_size=self.rb,
                    spread=self.config.render_batch_size is None,
                    progress=False,
                    resolution=self.res,
                )
                self._measured(2**b, time.perf_counter() - start)
                km_image = None if shared is None else image_smoothness(shared[0])
                rendered.append(b)
            corners = self.corner_images.get(b)
            self.smooth.append(
                {
                    "bits": b,
                    "sfvq_image": None if corners is None else image_smoothness(corners),
                    "kmeans_image": km_image,
                    "sfvq_latent": smoothness(C),
                    "kmeans_latent": smoothness(centroids),
                }
            )
        if len(rendered) < len(baseline):
            done = _bits_text(rendered) or "no"
            self.log(f"k-means baseline stopped at the time budget: rendered at {done} bits")
            self._cut(baseline_bits=rendered)

    def annotate(self) -> None:
        """Optional (``--annotate``): every segment of the finest and the edit bitrate annotated on the edit
        seeds (:func:`sfvq.annotate.annotate_run`, the scorer fitting the generator):
        ``annotations.json`` and ``annotations/b{b}_s{i:03d}.png``."""
        from types import SimpleNamespace

        from sfvq.annotate import annotate_run
        from sfvq.scorers.interface import make_scorer

        c = self.config
        scorer, line = make_scorer("auto", c.network, self.G)
        self.log(line)
        run = SimpleNamespace(path=self.out, model=self.model, space=self.space, latents=self.V)
        try:
            self.files["annotations"] = annotate_run(
                run, sorted({self.eb, c.bits}), seeds=c.edit_seeds, scorer=scorer, resolution=self.res,
                batch_size=self.rb, progress=self.progress,
                sigma=max((abs(x) for x in self.sigmas), default=None) or None,  # the grids' largest
            )  # fmt: skip
        finally:
            if callable(getattr(scorer, "close", None)):
                scorer.close()

    def report(self) -> None:
        """``usage.png``, ``report.html``, the full ``summary.json`` and ``options.json``."""
        import torch

        from sfvq import curve
        from sfvq.io import write_json, write_options
        from sfvq.metrics import DIST_FACTOR, MIN_SHARE
        from sfvq.report import REPORT_INPUTS, usage_plot, write_report, write_report_inputs

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
        self.files["report inputs"] = out / REPORT_INPUTS
        rel["report"], rel["report inputs"] = "report.html", REPORT_INPUTS
        data = self._report_data(rel)
        write_report(out / "report.html", data)
        write_report_inputs(out, data)  # what `sfvq report` redraws the page from
        summary = {
            "run_id": self.run_id,
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
            "segments": [
                {**s, "edit": None if s["edit"] is None else _rel(s["edit"], out)} for s in self.segments
            ],
            "render": self._render_summary(),
            "sigmas": list(self.sigmas),
            "sigma_choice": self._sigma_record(),
            "timings": self.timings,
            "files": rel,
        }
        self.files["summary"] = write_json(out / "summary.json", summary)
        options = {**c.options(), "sigmas": list(self.sigmas), "sigma_choice": self._sigma_record()}
        self.files["options"] = write_options(out, "run", options, run_id=self.run_id)

    def _render_summary(self) -> dict[str, Any]:
        """How the pictures were rendered (summary.json ``render``): resolution, batch, plan."""
        plan = self.render_plan
        return {
            "resolution": self.side,
            "full_resolution": self.G.img_resolution,
            "preview": self.side is not None and self.side < self.G.img_resolution,
            "batch_size": self.rb,
            "time_budget": self.config.time_budget,
            "plan": None if plan is None else plan.as_dict(),
            "first_plan": None if self.first_plan is None else self.first_plan.as_dict(),
        }

    def _full_size_hint(self) -> str | None:
        """How to get full-size pictures of this run (None when they already are)."""
        if self.side is None or self.side >= self.G.img_resolution:
            return None
        return (
            f"Full size ({self.G.img_resolution} px): sfvq edit --model {self.config.outdir} --direction "
            f"{self.eb}:SEGMENT for an edit grid; sfvq run ... --full-res-corners 0-3 for chosen corners "
            "or --full-res for everything."
        )

    def _report_data(self, rel: dict[str, str]) -> Any:
        """What report.html shows (the files written so far, ``rel``, as paths relative to the run)."""
        from sfvq.generators.base import to_uint8
        from sfvq.mapquality import u_profile
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
            "sigmas (std units)": list(self.sigmas),
            "sigmas chosen": self._sigma_text(),
            "walk": f"{self.render_plan.walk_frames if self.render_plan else c.walk_frames} frames "
            f"at {c.fps:g} fps",
            "render resolution": (
                f"{self.side} px (generator: {self.G.img_resolution} px)" if self.side else "-"
            ),
            "render batch": self.rb,
            "time budget": f"{c.time_budget:g} s" if c.time_budget else "no limit",
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
            maps={b: self.files[f"map {b} bits"] for b in self.codebooks if f"map {b} bits" in self.files},
            empty=self.empty,
            segments=self.segments,
            edit_settings={
                "bits": self.eb,
                "seeds": list(c.edit_seeds),
                "sigmas": list(self.sigmas),
                "sigma_rule": self._sigma_text(),
                "layers": f"all ({_layer_text(space.num_ws)})",
            },
            curve_plot=out / "curve.png",
            loss_plot=out / "loss.png",
            usage_plot=out / "usage.png",
            walk_gif=self.files.get("walk (GIF)"),
            walk_mp4=self.files.get("walk (MP4)"),
            files=rel,
            image_resolution=self.side,
            full_resolution=self.G.img_resolution,
            left_out=list(self.render_plan.left_out) if self.render_plan else [],
            full_size_hint=self._full_size_hint(),
            tiles={b: to_uint8(images) for b, images in sorted(self.corner_images.items())},
            u_profiles={b: u_profile(C).numpy() for b, C in self.codebooks.items()},
            run_dir=out,
            run_label=str(c.outdir),
        )


def _duration(seconds: float) -> str:
    """12.3 -> "12 s", 754 -> "12.6 min", 25_000 -> "6.9 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for r in result.smoothness:
        flagged = sorted(result.empty.get(r["bits"], {}))
        t.add_row(
            str(r["bits"]),
            num(r["sfvq_image"]),
            num(r["kmeans_image"]),
            num(r["sfvq_latent"]),
            num(r["kmeans_latent"]),
            ", ".join(map(str, flagged)) if flagged else "none",
        )
    console.print(t)
    if result.plan is not None and result.plan.left_out:
        console.print("left out to fit the time budget: " + "; ".join(result.plan.left_out))
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
    "RenderPlan",
    "RunConfig",
    "RunResult",
    "clear_stale",
    "plan_renders",
    "print_run_summary",
    "run_pipeline",
    "validate",
]
