"""Compact StyleGAN2 training for the avatars world, and the export of its ``G_ema``.

The generator *is* sfvq's clean-room :class:`~sfvq.generators.stylegan2.StyleGAN2Generator` (mapping
network, W space, skip synthesis with modulated convolutions), so the exported state dict loads with
``build_stylegan2(init_kwargs, state_dict)`` and the registry. Training runs the same parameters through
an equivalent non-fused forward (:func:`synthesis_forward`: modulate the activations, one shared conv,
demodulate the output; separable FIR filters), several times faster on a CPU than the per-sample
grouped convolution the inference modules use; a test holds the two forwards equal.

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
from sfvq.generators.stylegan2 import (
    FullyConnectedLayer,
    MappingNetwork,
    StyleGAN2Generator,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)
from sfvq.io import image_grid

__all__ = [
    "CHECKPOINT_FILE",
    "Discriminator",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "export_generator",
    "init_generator",
    "load_checkpoint",
    "new_generator",
    "synthesis_forward",
    "train",
]

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "sfvq-avatars-train-v1"
MAX_EXPORT_BYTES = 20 * 1024 * 1024
_FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # the [1, 3, 3, 1] resample filter, separable, sum 8 per axis
_SQRT2 = math.sqrt(2.0)
_LRELU = 0.2


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
# Generator: construction, initialisation, the fast training forward
# ----------------------------------------------------------------------------------------------


def _resample_filter() -> torch.Tensor:
    """The normalised 4x4 [1, 3, 3, 1] outer product the StyleGAN2 modules store as ``resample_filter``."""
    f = torch.tensor(_FIR_TAPS)
    f = torch.outer(f, f)  # (4, 4)
    return f / f.sum()


def new_generator(config: TrainConfig) -> StyleGAN2Generator:
    """An untrained :class:`StyleGAN2Generator` laid out by ``config.init_kwargs()`` (zeros)."""
    kw = config.init_kwargs()
    syn = {k: v for k, v in kw["synthesis_kwargs"].items() if k != "architecture"}
    return StyleGAN2Generator(
        kw["z_dim"],
        kw["c_dim"],
        kw["w_dim"],
        kw["img_resolution"],
        kw["img_channels"],
        mapping_kwargs=kw["mapping_kwargs"],
        synthesis_kwargs=syn,
    )


@torch.no_grad()
def init_generator(G: StyleGAN2Generator, generator: torch.Generator) -> StyleGAN2Generator:
    """StyleGAN2's initialisation: N(0, 1) / lr weights, affine biases 1, other biases and noise
    strengths 0, N(0, 1) constant input and constant noise, the [1, 3, 3, 1] resample filters."""

    def randn(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=generator)

    for module in G.modules():
        if isinstance(module, FullyConnectedLayer):
            module.weight.copy_(randn(module.weight) / module.bias_gain)
            module.bias.zero_()
        elif isinstance(module, SynthesisLayer | ToRGBLayer):
            module.weight.copy_(randn(module.weight))
            module.bias.zero_()
            module.affine.bias.fill_(1.0)
        if isinstance(module, SynthesisLayer):
            if module.use_noise:
                module.noise_const.copy_(randn(module.noise_const))
                module.noise_strength.zero_()
        if isinstance(module, SynthesisLayer | SynthesisBlock):
            module.resample_filter.copy_(_resample_filter())
        if isinstance(module, SynthesisBlock) and module.in_channels == 0:
            module.const.copy_(randn(module.const))
        if isinstance(module, MappingNetwork):
            module.w_avg.zero_()
    return G


def _fir(x: torch.Tensor, pad: tuple[int, int, int, int], gain: float) -> torch.Tensor:
    """Pad (left, right, top, bottom) and filter with the separable [1, 3, 3, 1] FIR times ``gain``.

    Equals ``fir_filter2d(x, f, pad, gain)`` with the normalised 4x4 filter, as shifted sums (cheap).
    """
    a = (gain**0.5) / 8.0
    p = F.pad(x, list(pad))  # (N, C, H', W')
    p = (p[..., :-3] + 3 * p[..., 1:-2] + 3 * p[..., 2:-1] + p[..., 3:]) * a  # along W
    return (p[..., :-3, :] + 3 * p[..., 1:-2, :] + 3 * p[..., 2:-1, :] + p[..., 3:, :]) * a  # along H


def _upsample(x: torch.Tensor) -> torch.Tensor:
    """x2 up-sampling of the skip image, as ``upsample2d``: (N, C, H, W) -> (N, C, 2H, 2W)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _fir(up, (2, 1, 2, 1), 4.0)


def _modconv(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, up: int, padding: int
) -> torch.Tensor:
    """Non-fused modulated conv, equal to ``modulated_conv2d``: x (N, I, H, W), weight (O, I, k, k),
    styles (N, I) -> (N, O, H*up, W*up)."""
    xs = x * styles.reshape(styles.shape[0], -1, 1, 1)  # (N, I, H, W)
    if up == 1:
        y = F.conv2d(xs, weight, padding=padding)  # (N, O, H, W)
    else:
        y = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=2)  # (N, O, 2H+1, 2W+1)
        y = _fir(y, (1, 1, 1, 1), 4.0)  # (N, O, 2H, 2W)
    if demodulate:
        d = (weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)).square()  # (N, O, I, k, k)
        y = y * (d.sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(y.shape[0], -1, 1, 1)
    return y


def _layer(
    layer: SynthesisLayer, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """One :class:`SynthesisLayer` through the non-fused path; ``noise`` (N, 1, R, R) or None for const."""
    x = _modconv(x, layer.weight, layer.affine(w), True, layer.up, layer.padding)  # (N, O, R, R)
    if layer.use_noise:
        x = x + (layer.noise_const if noise is None else noise) * layer.noise_strength
    x = F.leaky_relu(x + layer.bias.reshape(1, -1, 1, 1), _LRELU) * _SQRT2
    if layer.conv_clamp is not None:
        x = x.clamp(-layer.conv_clamp, layer.conv_clamp)
    return x


def _torgb(layer: ToRGBLayer, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    y = _modconv(x, layer.weight, layer.affine(w) * layer.weight_gain, False, 1, 0)  # (N, C, R, R)
    y = y + layer.bias.reshape(1, -1, 1, 1)
    if layer.conv_clamp is not None:
        y = y.clamp(-layer.conv_clamp, layer.conv_clamp)
    return y


def synthesis_forward(
    synthesis: SynthesisNetwork, ws: torch.Tensor, noise: Callable[[int, int], torch.Tensor] | None = None
) -> torch.Tensor:
    """ws (N, num_ws, W) -> images (N, 3, R, R): ``synthesis(ws)`` computed the fast (non-fused) way.

    ``noise(n, res)`` gives per-pixel noise (n, 1, res, res) for each layer; None uses the stored
    constant noise (then the result equals ``synthesis(ws, noise_mode="const")``).
    """
    x = img = None
    w_idx = 0
    for block in synthesis.blocks():
        bws = ws[:, w_idx : w_idx + block.num_conv + 1]  # (N, k, W)
        n, r = ws.shape[0], block.resolution
        if block.in_channels == 0:
            x = block.const.unsqueeze(0).expand(n, -1, -1, -1)  # (N, C, 4, 4)
            layers = [block.conv1]
        else:
            layers = [block.conv0, block.conv1]
        for i, layer in enumerate(layers):
            x = _layer(layer, x, bws[:, i], None if noise is None or not layer.use_noise else noise(n, r))
        y = _torgb(block.torgb, x, bws[:, block.num_conv])  # (N, 3, R, R)
        img = y if img is None else _upsample(img) + y
        w_idx += block.num_conv
    assert img is not None
    return img


# ----------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------


class EqualizedConv2d(nn.Module):
    """Conv with equalised learning rate, optional lrelu*sqrt2 and x2 down-sampling (FIR blur first)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, activation: bool = True, bias: bool = True, down: int = 1
    ) -> None:
        super().__init__()
        if kernel not in (1, 3) or down not in (1, 2):
            raise TrainingError(f"unsupported conv kernel {kernel} / down {down}")
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.kernel, self.activation, self.down = kernel, activation, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, I, H, W) -> (N, O, H/down, W/down)."""
        w = self.weight * self.gain
        if self.down == 2 and self.kernel == 3:
            x = F.conv2d(_fir(x, (2, 2, 2, 2), 1.0), w, stride=2)  # blur to H+1, valid 3x3 stride 2
        elif self.down == 2:
            x = F.conv2d(_fir(x, (1, 1, 1, 1), 1.0)[:, :, ::2, ::2], w)  # blur, keep every other pixel
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias.reshape(1, -1, 1, 1)
        return F.leaky_relu(x, _LRELU) * _SQRT2 if self.activation else x


class EqualizedLinear(nn.Module):
    """Linear layer with equalised learning rate and optional lrelu*sqrt2."""

    def __init__(self, in_f: int, out_f: int, activation: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_f, in_f))
        self.bias = nn.Parameter(torch.zeros(out_f))
        self.gain = 1.0 / math.sqrt(in_f)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in) -> (N, out)."""
        x = F.linear(x, self.weight * self.gain, self.bias)
        return F.leaky_relu(x, _LRELU) * _SQRT2 if self.activation else x


class DiscriminatorBlock(nn.Module):
    """Residual block: (conv3x3, conv3x3 down) + (down, conv1x1), summed and scaled by sqrt(1/2)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualizedConv2d(in_ch, out_ch, 3, down=2)
        self.skip = EqualizedConv2d(in_ch, out_ch, 1, activation=False, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, I, R, R) -> (N, O, R/2, R/2)."""
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def minibatch_std(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the mean over features of the per-group standard deviation: (N, C, H, W) -> (N, C+1, H, W).

    Sample i falls in group i mod N/g, g the largest divisor of N that is <= ``group``.
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group, n) + 1) if n % d == 0)
    y = x.reshape(g, n // g, c, h, w)  # (G, M, C, H, W): sample i is in group i % (N/G)
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # (M, C, H, W) variance over the group
    y = (y + 1e-8).sqrt().mean(dim=[1, 2, 3])  # (M,)
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # (N, 1, H, W)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2's residual discriminator: fromRGB, residual blocks down to 4x4, minibatch std, conv,
    two fully connected layers -> one logit per image."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        res = config.resolution
        self.mbstd_group = config.mbstd_group
        self.fromrgb = EqualizedConv2d(3, config.channels(res), 1)
        blocks = []
        while res > 4:
            blocks.append(DiscriminatorBlock(config.channels(res), config.channels(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = config.channels(4)
        self.conv = EqualizedConv2d(c4 + 1, c4, 3)
        self.fc = EqualizedLinear(c4 * 16, c4)
        self.out = EqualizedLinear(c4, 1, activation=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img (N, 3, R, R) in about [-1, 1] -> logits (N,)."""
        x = self.blocks(self.fromrgb(img))  # (N, C4, 4, 4)
        x = self.conv(minibatch_std(x, self.mbstd_group))  # (N, C4, 4, 4)
        return self.out(self.fc(x.flatten(1))).squeeze(1)

    @torch.no_grad()
    def initialise(self, generator: torch.Generator) -> Discriminator:
        """N(0, 1) weights (scaled at run time), zero biases."""
        for p in self.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) if p.ndim > 1 else torch.zeros_like(p))
        return self


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


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


def export_generator(
    checkpoint: str | Path,
    outdir: str | Path,
    name: str = "avatars-sg2",
    classifier: str | Path | None = None,
    quality_samples: int = 1000,
) -> tuple[Path, dict[str, Any]]:
    """Write ``outdir/<name>.safetensors`` (G_ema, float32) and ``outdir/<name>.json`` from a checkpoint.

    The JSON holds ``init_kwargs`` (for ``build_stylegan2``), the training settings and progress and the
    data set's seed; with a factor ``classifier`` file, also ``quality``: how confidently each factor
    reads on ``quality_samples`` generated faces next to the classifier's held-out renders. The export
    is reloaded through ``build_stylegan2`` and must render what the checkpoint's G_ema renders, else
    nothing is left under the final names.
    """
    from safetensors.torch import save_file

    from sfvq.avatars import EXPORT_FORMAT, load_exported_generator
    from sfvq.io import sha256_file, write_json

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT_FILE
    state = load_checkpoint(checkpoint)
    config = TrainConfig(**state["config"])
    G_ema = new_generator(config)
    G_ema.load_state_dict(state["G_ema"])
    G_ema.eval().requires_grad_(False)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in G_ema.state_dict().items()}
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    weights, sidecar = outdir / f"{name}.safetensors", outdir / f"{name}.json"
    extra = state["extra"]
    meta = {
        "format": EXPORT_FORMAT,
        "name": name,
        "family": "stylegan2",
        "init_kwargs": config.init_kwargs(),
        "training": {
            "config": config.to_dict(),
            "nimg": int(state["nimg"]),
            "kimg": int(state["nimg"]) / 1000,
            "steps": int(state["step"]),
            "train_seconds": round(float(state["seconds"]), 1),
            "device": extra.get("device"),
            "torch": torch.__version__,
            "last": extra.get("last"),
            "history": json.loads(state.get("history") or "[]"),
        },
        "dataset": extra.get("data", {}),
    }
    if classifier is not None:
        meta["quality"] = _quality(G_ema, classifier, quality_samples)
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": EXPORT_FORMAT})
        size = tmp.stat().st_size
        if size > MAX_EXPORT_BYTES:
            raise TrainingError(f"the export is {size / 2**20:.1f} MiB, over the 20 MiB limit")
    meta["sha256"] = sha256_file(weights)
    meta["bytes"] = weights.stat().st_size
    write_json(sidecar, meta)
    G = load_exported_generator(weights, name=name)
    z = torch.randn((4, config.z_dim), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = G_ema(z, noise_mode="const")
        got = G.synthesis(G.mapping(z), noise_mode="const")
    if not torch.allclose(want, got, atol=1e-5, rtol=0):
        weights.unlink()
        sidecar.unlink()
        raise TrainingError("the exported generator does not render as the checkpoint's G_ema")
    return weights, meta


def _quality(G_ema: StyleGAN2Generator, classifier: str | Path, n: int) -> dict[str, Any]:
    """Per factor: the classifier's mean confidence on ``n`` G_ema samples next to its held-out accuracy
    and confidence on renders, and the total-variation distance between the predicted value shares on
    the samples and the value frequencies of the renders (0: the generator's mix matches the data)."""
    from sfvq.avatars.classifier import factor_confidence, factor_shares, load_classifier

    clf = load_classifier(classifier)
    side = json.loads(Path(classifier).with_suffix(".json").read_text(encoding="utf-8"))
    z = torch.randn((n, G_ema.z_dim), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = torch.cat([G_ema(z[i : i + 250], noise_mode="const") for i in range(0, n, 250)])
    generated = factor_confidence(clf, images)
    shares = factor_shares(clf, images)
    held = side.get("report", {}).get("heldout", {})
    freqs = side.get("report", {}).get("frequencies", {})

    def tv(k: str) -> float | None:
        if k not in freqs or len(freqs[k]) != len(shares[k]):
            return None
        return round(0.5 * float(np.abs(np.asarray(shares[k]) - np.asarray(freqs[k])).sum()), 4)

    return {
        "classifier": str(classifier),
        "samples": n,
        "factors": {
            k: {
                "generated_confidence": round(v, 4),
                "real_confidence": held.get(k, {}).get("confidence"),
                "real_accuracy": held.get(k, {}).get("accuracy"),
                "share_tv_distance": tv(k),
            }
            for k, v in generated.items()
        },
    }
