"""Compact StyleGAN2 training for the avatars world: the settings, the :class:`Trainer` step and the
resumable training run.

The generator *is* sfvq's clean-room :class:`~sfvq.generators.stylegan2.StyleGAN2Generator` (mapping
network, W space, skip synthesis with modulated convolutions), so the exported state dict loads with
``build_stylegan2(init_kwargs, state_dict)`` and the registry. The networks and the fast training forward
are in :mod:`sfvq.avatars.networks`; the export of ``G_ema`` is in :mod:`sfvq.avatars.export`.

Recipe (StyleGAN2 / StyleGAN2-ADA, written from the papers' descriptions): equalised learning rates,
mapping lr x0.01, Adam (0, 0.99) at 0.0025, non-saturating logistic loss, lazy R1 (gamma 1) every 16 D steps,
style mixing 0.9, a residual discriminator with minibatch standard deviation, and an EMA of G with a
half-life of ``ema_kimg`` thousand images (ramped up over the first 5% of images seen). Per-pixel
noise inputs are off by default (``use_noise``): the renders are flat colours with no stochastic detail,
and with noise on, a smoke run's samples carried salt-and-pepper speckle from the 32x32 layer.

Everything random comes from one seeded ``torch.Generator`` whose state is checkpointed, so a resumed
run takes exactly the steps an uninterrupted one would (on the same device and thread count).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sfvq.atomic import atomic_path
from sfvq.avatars.networks import Discriminator, init_generator, new_generator, synthesis_forward
from sfvq.images import image_grid

__all__ = [
    "CHECKPOINT_FILE",
    "StepStats",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "load_checkpoint",
    "train",
]

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "sfvq-avatars-train-v1"


class TrainingError(RuntimeError):
    """Training cannot go on: a checkpoint that does not match, non-finite losses, bad settings."""


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in checkpoints and in the export).

    Length settings (``kimg``, ``checkpoint_kimg``) and the R1 weight (``r1_gamma``) may change on
    resume (a change of ``r1_gamma`` is recorded in the checkpoint's history); every other field must
    match the checkpoint.
    """

    resolution: int = 32
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 1024
    channel_max: int = 64
    batch: int = 32
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 1.0  # 0.01 (the 32x32 heuristic) let D run away here; see docs/avatars.md
    r1_interval: int = 16
    style_mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    w_avg_beta: float = 0.995
    mbstd_group: int = 4
    use_noise: bool = False
    seed: int = 0
    kimg: float = 300.0
    checkpoint_kimg: float = 10.0

    LENGTH_FIELDS = ("kimg", "checkpoint_kimg")
    RESUME_FIELDS = ("kimg", "checkpoint_kimg", "r1_gamma")  # may differ from the checkpoint's

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 8 or 2 ** int(round(math.log2(r))) != r:
            raise TrainingError(f"resolution must be a power of two >= 8, got {r}")
        for name in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "batch"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.r1_interval < 1:
            raise TrainingError(f"r1_interval must be >= 1, got {self.r1_interval}")
        if not 0 <= self.style_mixing <= 1:
            raise TrainingError(f"style_mixing must be in [0, 1], got {self.style_mixing}")
        for name in ("g_lr", "d_lr", "ema_kimg", "kimg", "checkpoint_kimg"):
            if not float(getattr(self, name)) > 0:
                raise TrainingError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.r1_gamma < 0:
            raise TrainingError(f"r1_gamma must be >= 0, got {self.r1_gamma}")

    def init_kwargs(self) -> dict[str, Any]:
        """``G_ema`` constructor kwargs in the stylegan2-ada-pytorch layout (read by ``build_stylegan2``)."""
        return {
            "z_dim": self.z_dim,
            "c_dim": 0,
            "w_dim": self.w_dim,
            "img_resolution": self.resolution,
            "img_channels": 3,
            "mapping_kwargs": {
                "num_layers": self.mapping_layers,
                "lr_multiplier": self.mapping_lr_multiplier,
            },
            "synthesis_kwargs": {
                "channel_base": self.channel_base,
                "channel_max": self.channel_max,
                "conv_clamp": None,
                "architecture": "skip",
                "use_noise": self.use_noise,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy of every field."""
        return dataclasses.asdict(self)

    def channels(self, res: int) -> int:
        """Feature maps at resolution ``res`` (the generator's rule, shared by the discriminator)."""
        return min(self.channel_base // res, self.channel_max)


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


def _images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, R, R, 3) uint8 -> (N, 3, R, R) uint8 on ``device`` (converted to float per batch)."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8 or arr.shape[1] != arr.shape[2]:
        raise TrainingError(f"training images must be (N, R, R, 3) uint8, got {arr.shape} {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous().to(device)


@dataclass
class StepStats:
    """Losses of one training step (floats; ``r1`` is None on steps without the R1 penalty)."""

    loss_G: float
    loss_D: float
    D_real: float
    D_fake: float
    r1: float | None = None


class Trainer:
    """G, D, G_ema, their optimisers and one random stream; :meth:`step` trains on one batch.

    Args:
        images: the training images (N, R, R, 3) uint8, R = ``config.resolution``.
        config: the settings.
        device: where to train.
    """

    def __init__(self, images: np.ndarray, config: TrainConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.images = _images_to_tensor(images, self.device)  # (N, 3, R, R) uint8
        if self.images.shape[2] != config.resolution:
            raise TrainingError(
                f"images are {self.images.shape[2]}x{self.images.shape[3]}, config.resolution is "
                f"{config.resolution}"
            )
        if len(self.images) < 1:
            raise TrainingError("no training images")
        init = torch.Generator().manual_seed(config.seed)
        self.G = init_generator(new_generator(config), init).to(self.device).train().requires_grad_(True)
        self.D = Discriminator(config).initialise(init).to(self.device).train().requires_grad_(True)
        self.G_ema = init_generator(new_generator(config), init).to(self.device).eval().requires_grad_(False)
        self.G_ema.load_state_dict(self.G.state_dict())
        self.rng = torch.Generator().manual_seed(config.seed + 1)  # every draw of the training loop
        betas = (config.beta1, config.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.g_lr, betas=betas, eps=1e-8)
        ratio = config.r1_interval / (config.r1_interval + 1)  # lazy regularisation keeps D's pace
        self.opt_D = torch.optim.Adam(
            self.D.parameters(),
            lr=config.d_lr * ratio,
            betas=(betas[0] ** ratio, betas[1] ** ratio),
            eps=1e-8,
        )
        self.nimg = 0
        self.step_count = 0
        self.seconds = 0.0
        self.history: list[dict[str, Any]] = []  # settings changed on resume: {nimg, field: [old, new]}

    # -- random draws (all from self.rng, on the CPU, then moved) ----------------------------
    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.rng).to(self.device)

    def _noise(self, n: int, res: int) -> torch.Tensor:
        return self._randn(n, 1, res, res)

    def _real_batch(self) -> torch.Tensor:
        idx = torch.randint(len(self.images), (self.config.batch,), generator=self.rng)
        return self.images[idx.to(self.device)].to(torch.float32) / 127.5 - 1.0  # (B, 3, R, R)

    def run_G(self, n: int, update_w_avg: bool = False) -> torch.Tensor:
        """n fake images from G (style mixing, random noise): (n, 3, R, R)."""
        cfg = self.config
        ws = self.G.mapping(self._randn(n, cfg.z_dim))  # (n, num_ws, W)
        if update_w_avg:
            with torch.no_grad():
                avg = self.G.mapping.w_avg
                avg.copy_(ws[:, 0].detach().mean(dim=0).lerp(avg, cfg.w_avg_beta))
        num_ws = ws.shape[1]
        cutoff = int(torch.randint(1, num_ws, (), generator=self.rng))
        if float(torch.rand((), generator=self.rng)) >= cfg.style_mixing:
            cutoff = num_ws
        ws2 = self.G.mapping(self._randn(n, cfg.z_dim))  # (n, num_ws, W)
        ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return synthesis_forward(self.G.synthesis, ws, self._noise)

    def ema_beta(self, nimg: int) -> float:
        """EMA decay per step when ``nimg`` images have been shown."""
        cfg = self.config
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, nimg * cfg.ema_rampup)
        return 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))

    @staticmethod
    def _sanitize(module: nn.Module) -> None:
        for p in module.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)

    def step(self) -> StepStats:
        """One iteration: G step, D step, R1 step (every ``r1_interval``), EMA update."""
        t0 = time.perf_counter()
        cfg, B = self.config, self.config.batch
        # G: non-saturating logistic loss softplus(-D(G(z)))
        self.D.requires_grad_(False)
        loss_G = F.softplus(-self.D(self.run_G(B))).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self._sanitize(self.G)
        self.opt_G.step()
        # D: softplus(D(G(z))) + softplus(-D(x))
        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = self.run_G(B, update_w_avg=True)
        real = self._real_batch()
        logits_fake, logits_real = self.D(fake), self.D(real)
        loss_D = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self._sanitize(self.D)
        self.opt_D.step()
        r1_value = None
        if cfg.r1_gamma > 0 and self.step_count % cfg.r1_interval == 0:  # lazy R1 on real images
            real = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(real).sum(), real, create_graph=True)
            penalty = grad.square().sum(dim=[1, 2, 3])  # (B,)
            loss_r1 = penalty.mean() * (cfg.r1_gamma / 2) * cfg.r1_interval
            self.opt_D.zero_grad(set_to_none=True)
            loss_r1.backward()
            self._sanitize(self.D)
            self.opt_D.step()
            r1_value = float(penalty.detach().mean())
        # EMA of G (parameters averaged, buffers copied)
        beta = self.ema_beta(self.nimg)
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                b_ema.copy_(b)
        self.nimg += B
        self.step_count += 1
        self.seconds += time.perf_counter() - t0
        stats = StepStats(
            loss_G=float(loss_G.detach()),
            loss_D=float(loss_D.detach()),
            D_real=float(logits_real.detach().mean()),
            D_fake=float(logits_fake.detach().mean()),
            r1=r1_value,
        )
        values = [stats.loss_G, stats.loss_D] + ([r1_value] if r1_value is not None else [])
        if not all(math.isfinite(v) for v in values):
            raise TrainingError(f"non-finite loss at step {self.step_count}: {stats}")
        return stats

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, optimisers, random state, counters."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "rng": self.rng.get_state(),
            "nimg": self.nimg,
            "step": self.step_count,
            "seconds": self.seconds,
            "history": json.dumps(self.history),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (checked against this trainer's config, length fields aside)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"not an avatars training checkpoint (format {state.get('format')!r})")
        mine = self.config.to_dict()
        theirs = dict(state["config"])
        diff = [
            f"{k}: checkpoint {theirs.get(k)!r}, now {v!r}"
            for k, v in mine.items()
            if k not in TrainConfig.RESUME_FIELDS and theirs.get(k) != v
        ]
        if diff:
            raise TrainingError("the checkpoint was trained with other settings: " + "; ".join(diff))
        history = json.loads(state.get("history") or "[]")
        changed = {
            k: [theirs.get(k), v]
            for k, v in mine.items()
            if k in TrainConfig.RESUME_FIELDS and k not in TrainConfig.LENGTH_FIELDS and theirs.get(k) != v
        }
        if changed:
            history.append({"nimg": int(state["nimg"]), **changed})
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.rng.set_state(state["rng"])
        self.nimg = int(state["nimg"])
        self.step_count = int(state["step"])
        self.seconds = float(state["seconds"])
        self.history = history

    def save_checkpoint(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write :meth:`state_dict` (+ ``extra``) to ``path`` atomically."""
        state = self.state_dict()
        state["extra"] = json.dumps(dict(extra or {}))
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return Path(path)

    @torch.no_grad()
    def samples(self, n: int = 64, seed: int = 0) -> np.ndarray:
        """G_ema images for a fixed set of z (const noise, the exported forward): (n, R, R, 3) uint8."""
        from sfvq.generators.base import to_uint8

        z = torch.randn((n, self.config.z_dim), generator=torch.Generator().manual_seed(seed))
        return to_uint8(self.G_ema(z.to(self.device), noise_mode="const"))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise TrainingError(f"{path} is not a readable training checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not an avatars training checkpoint")
    state["extra"] = json.loads(state.get("extra") or "{}")
    return state


# ----------------------------------------------------------------------------------------------
# The training run
# ----------------------------------------------------------------------------------------------


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def train(
    data: str | Path,
    outdir: str | Path,
    config: TrainConfig,
    device: str | None = None,
    minutes: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run in ``outdir`` on the data set ``data`` until ``config.kimg`` thousand images.

    Writes ``outdir/checkpoint.pt`` every ``config.checkpoint_kimg`` thousand images and at the end,
    ``outdir/samples/<kimg>.png`` (64 G_ema samples, fixed z) with each checkpoint, and one JSON line per
    checkpoint to ``outdir/log.jsonl``. ``minutes`` stops earlier (with a checkpoint) after that much
    wall-clock time in this call. Returns a summary dict (images, seconds, images per minute, losses).
    """
    from sfvq.avatars.dataset import load_dataset
    from sfvq.io import save_png, write_json

    ds = load_dataset(data, config.resolution)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    dev = device or _default_device()
    trainer = Trainer(ds.images, config, dev)
    data_info = {
        "path": str(Path(data).resolve()),
        "seed": ds.meta["seed"],
        "count": ds.meta["count"],
        "resolution": config.resolution,
        "sha256": ds.meta.get("sha256", {}),
        "versions": ds.meta.get("versions", {}),
    }
    ckpt = outdir / CHECKPOINT_FILE
    resumed_from = 0
    if ckpt.is_file():
        state = load_checkpoint(ckpt)
        old = state["extra"].get("data", {})
        if old.get("sha256") != data_info["sha256"]:
            raise TrainingError(
                f"{ckpt} was trained on another data set ({old.get('path')}); use a new --outdir"
            )
        trainer.load_state_dict(state)
        resumed_from = trainer.nimg
    total = int(round(config.kimg * 1000))
    every = max(1, int(round(config.checkpoint_kimg * 1000)))
    next_ckpt = (trainer.nimg // every + 1) * every
    say = log or (lambda s: None)
    say(
        f"{'resuming at ' + str(trainer.nimg) + ' images' if resumed_from else 'starting'}: "
        f"{len(ds)} faces {config.resolution}px, target {total} images, device {dev}, "
        f"G {sum(p.numel() for p in trainer.G.parameters()):,} params, "
        f"D {sum(p.numel() for p in trainer.D.parameters()):,} params"
    )
    write_json(outdir / "config.json", {"config": config.to_dict(), "data": data_info, "device": dev})
    t_start = time.perf_counter()
    window: list[StepStats] = []
    nimg_start = trainer.nimg
    stopped_early = False

    def checkpoint() -> dict[str, Any]:
        elapsed = time.perf_counter() - t_start
        mean = {
            k: float(np.mean([getattr(s, k) for s in window if getattr(s, k) is not None] or [math.nan]))
            for k in ("loss_G", "loss_D", "D_real", "D_fake", "r1")
        }
        row = {
            "kimg": trainer.nimg / 1000,
            "step": trainer.step_count,
            "train_seconds": round(trainer.seconds, 1),
            "images_per_minute": round(60 * (trainer.nimg - nimg_start) / max(elapsed, 1e-9), 1),
            **{k: (round(v, 5) if math.isfinite(v) else None) for k, v in mean.items()},
        }
        trainer.save_checkpoint(ckpt, extra={"data": data_info, "device": dev, "last": row})
        save_png(outdir / "samples" / f"{trainer.nimg // 1000:06d}kimg.png", image_grid(trainer.samples()))
        with open(outdir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        say(
            f"kimg {row['kimg']:.1f}  G {row['loss_G']}  D {row['loss_D']}  r1 {row['r1']}  "
            f"{row['images_per_minute']:.0f} img/min"
        )
        window.clear()
        return row

    bar = _Bar(total, trainer.nimg, progress)
    last_row: dict[str, Any] | None = None
    try:
        while trainer.nimg < total:
            window.append(trainer.step())
            bar.update(trainer.nimg, window[-1])
            if trainer.nimg >= next_ckpt and trainer.nimg < total:
                last_row = checkpoint()
                next_ckpt += every
            if minutes is not None and time.perf_counter() - t_start >= minutes * 60:
                stopped_early = trainer.nimg < total
                break
    finally:
        bar.close()
    if window:  # steps since the last checkpoint (none when the run was already complete)
        last_row = checkpoint()
    elif last_row is None and ckpt.is_file():
        last_row = load_checkpoint(ckpt)["extra"].get("last")
    elapsed = time.perf_counter() - t_start
    return {
        "outdir": str(outdir),
        "device": dev,
        "nimg": trainer.nimg,
        "target_nimg": total,
        "resumed_from": resumed_from,
        "stopped_early": stopped_early,
        "seconds": round(elapsed, 1),
        "images_per_minute": round(60 * (trainer.nimg - nimg_start) / max(elapsed, 1e-9), 1),
        "last": last_row,
    }


class _Bar:
    """A rich progress bar over images shown (silent when disabled)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.progress.start()
        self.task = self.progress.add_task("training", total=total, completed=done, status="")
        self._last = 0.0

    def update(self, done: int, stats: StepStats) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self._last >= 0.5:
            self._last = now
            self.progress.update(
                self.task, completed=done, status=f"G {stats.loss_G:.3f} D {stats.loss_D:.3f}"
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
