"""BigGAN-deep generators stored as a local directory in the pytorch-pretrained-biggan layout.

The directory holds ``config.json`` (keys ``z_dim``, ``output_dim``, ``channel_width``, ``num_classes``,
``layers``, ``attention_layer_position``, ``eps``, ``n_stats``) and ``pytorch_model.bin`` (a torch-saved
state dict). The network is written here from that layout:

- ``embeddings.weight`` (z_dim, num_classes): class vector -> class embedding; the condition vector is
  ``cat(z, embed)`` of size 2 * z_dim, fed to the first linear layer and to every conditional BatchNorm.
- Spectral-normed layers store ``weight_orig``, ``weight_u`` and ``weight_v``; the weight used at
  inference is ``weight_orig / sigma`` with ``sigma = u . (W v)`` (W = weight_orig as a matrix), computed
  once at load time (no power iteration, as in eval mode).
- ``generator.gen_z``: linear layer to 4 x 4 x 16 * channel_width, stored channels-last.
- ``generator.layers.{i}``: one bottleneck residual block per entry ``(up_sample, in_mult, out_mult)`` of
  ``layers`` (channels are multiples of channel_width), with a self-attention layer inserted before block
  ``attention_layer_position``. Each block: 4 x (conditional BatchNorm, ReLU, conv 1x1 / 3x3 / 3x3 / 1x1),
  nearest-neighbour upsampling before the first 3x3 conv, skip path that keeps the first half of the
  channels when they shrink.
- Conditional BatchNorms hold ``running_means`` / ``running_vars`` of shape (n_stats, C): pre-computed
  statistics for n_stats truncation values evenly spaced in [0, 1]; the truncation selects (and
  interpolates) a row.
- ``generator.bn`` (plain BatchNorm with stats per truncation), ReLU, ``generator.conv_to_rgb``, first
  three channels, tanh.

Latents are truncated normal noise times the truncation psi (:func:`truncated_noise`) plus a class vector.
Loading never touches the network: a model name such as ``biggan-deep-256`` is refused with a message
asking for a local directory.
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sfvq.generators.base import GeneratorError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
REQUIRED_CONFIG_KEYS = (
    "z_dim",
    "output_dim",
    "channel_width",
    "num_classes",
    "layers",
    "attention_layer_position",
    "eps",
    "n_stats",
)
NOISE_MODES = ("const", "random", "none")

__all__ = [
    "BigGANConfig",
    "BigGANGenerator",
    "BigGANNetwork",
    "load_biggan",
    "parse_config",
    "expected_state_shapes",
    "truncated_noise",
]


# --------------------------------------------------------------------------------------------------
# Latent sampling
# --------------------------------------------------------------------------------------------------


def truncated_noise(n: int, z_dim: int = 128, psi: float = 1.0, seed: int | None = 0) -> torch.Tensor:
    """Standard normal noise truncated to [-2, 2], times ``psi``: (n, z_dim) float32.

    Values with ``|x| > 2`` are redrawn from the same ``np.random.RandomState(seed)`` until none is left,
    so the result is deterministic for a seed (and needs no scipy). ``psi`` must lie in (0, 1], the range
    for which BigGAN stores BatchNorm statistics.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if int(z_dim) != z_dim or z_dim < 1:
        raise ValueError(f"z_dim must be a positive integer, got {z_dim!r}")
    _check_truncation(psi)
    rng = np.random.RandomState(seed)
    x = rng.randn(int(n), int(z_dim))  # (n, z_dim) float64
    outside = np.abs(x) > 2.0
    while outside.any():
        x[outside] = rng.randn(int(outside.sum()))
        outside = np.abs(x) > 2.0
    return torch.from_numpy((psi * x).astype(np.float32))


def _check_truncation(psi: float) -> float:
    try:
        value = float(psi)
    except (TypeError, ValueError):
        raise ValueError(f"truncation must be a number in (0, 1], got {psi!r}") from None
    if not (0.0 < value <= 1.0):
        raise ValueError(
            f"BigGAN truncation must lie in (0, 1] (its BatchNorm stats cover only that), got {psi}"
        )
    return value


# --------------------------------------------------------------------------------------------------
# Config and expected layout
# --------------------------------------------------------------------------------------------------


class BigGANConfig:
    """The architecture facts read from ``config.json``."""

    def __init__(
        self,
        *,
        z_dim: int,
        output_dim: int,
        channel_width: int,
        num_classes: int,
        layers: Sequence[tuple[bool, int, int]],
        attention_layer_position: int,
        eps: float,
        n_stats: int,
    ) -> None:
        self.z_dim = z_dim
        self.output_dim = output_dim
        self.channel_width = channel_width
        self.num_classes = num_classes
        self.layers = [tuple(layer) for layer in layers]
        self.attention_layer_position = attention_layer_position
        self.eps = eps
        self.n_stats = n_stats

    @property
    def cond_dim(self) -> int:
        """Size of the condition vector cat(z, class embedding)."""
        return 2 * self.z_dim

    @property
    def has_attention(self) -> bool:
        return 0 <= self.attention_layer_position < len(self.layers)

    def module_index(self, block: int) -> int:
        """Index in ``generator.layers`` of block ``block`` (the attention layer shifts later blocks)."""
        return block + 1 if self.has_attention and block >= self.attention_layer_position else block

    def block_channels(self, block: int) -> tuple[int, int, int]:
        """(in, middle, out) channels of block ``block``."""
        _, cin, cout = self.layers[block]
        cin, cout = cin * self.channel_width, cout * self.channel_width
        return cin, cin // 4, cout

    def block_resolution(self, block: int) -> int:
        """Spatial size after block ``block``."""
        return 4 * 2 ** sum(1 for up, _, _ in self.layers[: block + 1] if up)


def parse_config(raw: Any, source: str = CONFIG_NAME) -> BigGANConfig:
    """Validate a decoded ``config.json`` and return a :class:`BigGANConfig` (GeneratorError if bad)."""
    if not isinstance(raw, dict):
        raise GeneratorError(f"{source}: expected a JSON object, found {type(raw).__name__}")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in raw]
    if missing:
        raise GeneratorError(
            f"{source}: missing BigGAN config key(s) {missing}; is this a pytorch-pretrained-biggan config?"
        )

    def pos_int(key: str) -> int:
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise GeneratorError(f"{source}: '{key}' must be a positive integer, found {v!r}")
        return v

    z_dim, output_dim, ch = pos_int("z_dim"), pos_int("output_dim"), pos_int("channel_width")
    num_classes, n_stats = pos_int("num_classes"), pos_int("n_stats")
    if n_stats < 2:
        raise GeneratorError(f"{source}: 'n_stats' must be at least 2, found {n_stats}")
    attn = raw["attention_layer_position"]
    if isinstance(attn, bool) or not isinstance(attn, int):
        raise GeneratorError(f"{source}: 'attention_layer_position' must be an integer, found {attn!r}")
    eps = raw["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
        raise GeneratorError(f"{source}: 'eps' must be a small positive number, found {eps!r}")

    layers_raw = raw["layers"]
    if not isinstance(layers_raw, list) or not layers_raw:
        raise GeneratorError(f"{source}: 'layers' must be a non-empty list, found {layers_raw!r}")
    layers: list[tuple[bool, int, int]] = []
    for i, entry in enumerate(layers_raw):
        ok = (
            isinstance(entry, (list, tuple))
            and len(entry) == 3
            and isinstance(entry[0], bool)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in entry[1:])
        )
        if not ok:
            raise GeneratorError(
                f"{source}: layers[{i}] must be [up_sample: bool, in_mult: int, out_mult: int], "
                f"found {entry!r}"
            )
        layers.append((entry[0], entry[1], entry[2]))

    cfg = BigGANConfig(
        z_dim=z_dim,
        output_dim=output_dim,
        channel_width=ch,
        num_classes=num_classes,
        layers=layers,
        attention_layer_position=attn,
        eps=float(eps),
        n_stats=n_stats,
    )
    # Channel chain: gen_z gives 16 * ch channels, each block consumes the previous output, the skip path
    # halves the channels when they change, and the last block must give ch channels for the final conv.
    prev = 16
    for i, (_, cin, cout) in enumerate(layers):
        if cin != prev:
            raise GeneratorError(
                f"{source}: layers[{i}] takes {cin} x channel_width channels but gets {prev}"
            )
        if cout != cin and 2 * cout != cin:
            raise GeneratorError(
                f"{source}: layers[{i}] may keep or halve its channels, found {cin} -> {cout}"
            )
        if (cin * ch) % 4:
            raise GeneratorError(f"{source}: layers[{i}] has {cin * ch} channels, not divisible by 4")
        prev = cout
    if prev != 1:
        raise GeneratorError(f"{source}: the last block must output 1 x channel_width channels, found {prev}")
    if ch < 3:
        raise GeneratorError(f"{source}: channel_width {ch} is below the 3 RGB channels it must produce")
    if cfg.has_attention:
        c_attn = layers[attn][1] * ch
        if c_attn % 8:
            raise GeneratorError(f"{source}: attention over {c_attn} channels needs a multiple of 8")
    resolution = cfg.block_resolution(len(layers) - 1)
    if resolution != output_dim:
        raise GeneratorError(
            f"{source}: 'layers' upsample to {resolution}x{resolution} but output_dim is {output_dim}"
        )
    return cfg


def _sn_shapes(prefix: str, weight: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    rows, cols = weight[0], math.prod(weight[1:])
    return {f"{prefix}.weight_orig": weight, f"{prefix}.weight_u": (rows,), f"{prefix}.weight_v": (cols,)}


def expected_state_shapes(cfg: BigGANConfig) -> dict[str, tuple[int, ...]]:
    """Every key of a pytorch-pretrained-biggan state dict for ``cfg`` and its shape."""
    ch, cond, ns = cfg.channel_width, cfg.cond_dim, cfg.n_stats
    shapes: dict[str, tuple[int, ...]] = {"embeddings.weight": (cfg.z_dim, cfg.num_classes)}
    shapes.update(_sn_shapes("generator.gen_z", (4 * 4 * 16 * ch, cond)))
    shapes["generator.gen_z.bias"] = (4 * 4 * 16 * ch,)
    for b in range(len(cfg.layers)):
        cin, mid, cout = cfg.block_channels(b)
        p = f"generator.layers.{cfg.module_index(b)}"
        for k, c in enumerate((cin, mid, mid, mid)):
            shapes[f"{p}.bn_{k}.running_means"] = (ns, c)
            shapes[f"{p}.bn_{k}.running_vars"] = (ns, c)
            shapes.update(_sn_shapes(f"{p}.bn_{k}.scale", (c, cond)))
            shapes.update(_sn_shapes(f"{p}.bn_{k}.offset", (c, cond)))
        for k, (co, ci, ks) in enumerate(((mid, cin, 1), (mid, mid, 3), (mid, mid, 3), (cout, mid, 1))):
            shapes.update(_sn_shapes(f"{p}.conv_{k}", (co, ci, ks, ks)))
            shapes[f"{p}.conv_{k}.bias"] = (co,)
    if cfg.has_attention:
        c = cfg.block_channels(cfg.attention_layer_position)[0]
        p = f"generator.layers.{cfg.attention_layer_position}"
        shapes.update(_sn_shapes(f"{p}.snconv1x1_theta", (c // 8, c, 1, 1)))
        shapes.update(_sn_shapes(f"{p}.snconv1x1_phi", (c // 8, c, 1, 1)))
        shapes.update(_sn_shapes(f"{p}.snconv1x1_g", (c // 2, c, 1, 1)))
        shapes.update(_sn_shapes(f"{p}.snconv1x1_o_conv", (c, c // 2, 1, 1)))
        shapes[f"{p}.gamma"] = (1,)
    for name in ("running_means", "running_vars"):
        shapes[f"generator.bn.{name}"] = (ns, ch)
    shapes["generator.bn.weight"] = (ch,)
    shapes["generator.bn.bias"] = (ch,)
    shapes.update(_sn_shapes("generator.conv_to_rgb", (ch, ch, 3, 3)))
    shapes["generator.conv_to_rgb.bias"] = (ch,)
    return shapes


def _check_state_dict(sd: Mapping[str, torch.Tensor], cfg: BigGANConfig, source: str) -> None:
    expected = expected_state_shapes(cfg)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshapen = [
        f"{k} {tuple(sd[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != expected[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label} key(s): {shown}")
    if problems:
        raise GeneratorError(
            f"{source} does not match the BigGAN layout of its config.json: " + "; ".join(problems)
        )
    bad = [k for k in expected if not torch.isfinite(sd[k]).all()]
    if bad:
        raise GeneratorError(f"{source}: non-finite values in {', '.join(bad[:8])}")


def _spectral_normalized(sd: Mapping[str, torch.Tensor], prefix: str, source: str) -> torch.Tensor:
    """weight_orig / sigma with sigma = u . (W v), the stored power-iteration estimate (eval mode)."""
    w = sd[f"{prefix}.weight_orig"].float()
    u, v = sd[f"{prefix}.weight_u"].float(), sd[f"{prefix}.weight_v"].float()
    sigma = torch.dot(u, w.reshape(w.shape[0], -1) @ v)  # scalar
    if not torch.isfinite(sigma) or sigma.abs() < 1e-12:
        raise GeneratorError(f"{source}: spectral norm of {prefix} is degenerate (sigma = {sigma.item():g})")
    return w / sigma


# --------------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------------


def _stats_at(
    means: torch.Tensor, variances: torch.Tensor, truncation: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the BatchNorm stats (C,) stored for ``truncation`` from (n_stats, C) tables.

    Row i belongs to truncation i / (n_stats - 1). Between rows the stats are mixed with the weights of
    pytorch-pretrained-biggan 0.1.1 (fractional part f of truncation * (n_stats - 1): f on the lower row,
    1 - f on the upper one), so images match the ones its users get.
    """
    step = 1.0 / (means.shape[0] - 1)
    frac, start = math.modf(truncation / step)
    i = int(start)
    if frac == 0.0:
        return means[i], variances[i]
    return means[i] * frac + means[i + 1] * (1 - frac), variances[i] * frac + variances[i + 1] * (1 - frac)


class _CondBatchNorm(nn.Module):
    """BatchNorm with truncation-indexed stats and gain/bias from the condition vector."""

    def __init__(self, sd: Mapping[str, torch.Tensor], prefix: str, eps: float, source: str) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("means", sd[f"{prefix}.running_means"].float().clone())  # (n_stats, C)
        self.register_buffer("vars", sd[f"{prefix}.running_vars"].float().clone())  # (n_stats, C)
        self.register_buffer("scale", _spectral_normalized(sd, f"{prefix}.scale", source))  # (C, cond)
        self.register_buffer("offset", _spectral_normalized(sd, f"{prefix}.offset", source))  # (C, cond)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        mean, var = _stats_at(self.means, self.vars, truncation)  # (C,)
        gain = 1 + F.linear(cond, self.scale)[:, :, None, None]  # (N, C, 1, 1)
        bias = F.linear(cond, self.offset)[:, :, None, None]  # (N, C, 1, 1)
        return (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps) * gain + bias


class _Block(nn.Module):
    """Bottleneck residual block: 4 x (cond BN, ReLU, conv), optional 2x nearest upsampling."""

    def __init__(
        self, sd: Mapping[str, torch.Tensor], prefix: str, up: bool, eps: float, source: str
    ) -> None:
        super().__init__()
        self.up = up
        self.bns = nn.ModuleList(_CondBatchNorm(sd, f"{prefix}.bn_{k}", eps, source) for k in range(4))
        for k in range(4):
            self.register_buffer(f"w{k}", _spectral_normalized(sd, f"{prefix}.conv_{k}", source))
            self.register_buffer(f"b{k}", sd[f"{prefix}.conv_{k}.bias"].float().clone())

    def forward(self, x: torch.Tensor, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        skip = x  # (N, Cin, H, W)
        for k, bn in enumerate(self.bns):
            x = F.relu(bn(x, cond, truncation))
            if k == 1 and self.up:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            w = getattr(self, f"w{k}")
            x = F.conv2d(x, w, getattr(self, f"b{k}"), padding=w.shape[-1] // 2)
        if x.shape[1] != skip.shape[1]:
            skip = skip[:, : skip.shape[1] // 2]  # keep the first half of the channels
        if self.up:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return x + skip  # (N, Cout, H', W')


class _SelfAttention(nn.Module):
    """Non-local attention with 2x2 max-pooled keys and values, added back with a learned gain."""

    def __init__(self, sd: Mapping[str, torch.Tensor], prefix: str, source: str) -> None:
        super().__init__()
        for name in ("theta", "phi", "g", "o_conv"):
            self.register_buffer(name, _spectral_normalized(sd, f"{prefix}.snconv1x1_{name}", source))
        self.register_buffer("gamma", sd[f"{prefix}.gamma"].float().clone())  # (1,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        theta = F.conv2d(x, self.theta).reshape(N, C // 8, H * W)  # (N, C/8, HW)
        phi = F.max_pool2d(F.conv2d(x, self.phi), 2).reshape(N, C // 8, -1)  # (N, C/8, HW/4)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, HW, HW/4)
        g = F.max_pool2d(F.conv2d(x, self.g), 2).reshape(N, C // 2, -1)  # (N, C/2, HW/4)
        out = (g @ attn.transpose(1, 2)).reshape(N, C // 2, H, W)  # (N, C/2, H, W)
        return x + self.gamma * F.conv2d(out, self.o_conv)  # (N, C, H, W)


class BigGANNetwork(nn.Module):
    """The BigGAN-deep generator network, built from a validated state dict (fp32 buffers, no grads).

    Stages: ``stem`` (class embedding + linear layer), ``blocks`` (the attention layer runs before block
    ``attention_layer_position``), ``head`` (BatchNorm, ReLU, conv, tanh).
    """

    def __init__(self, cfg: BigGANConfig, sd: Mapping[str, torch.Tensor], source: str = WEIGHTS_NAME) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("embed", sd["embeddings.weight"].float().clone())  # (z_dim, num_classes)
        self.register_buffer(
            "gen_z_w", _spectral_normalized(sd, "generator.gen_z", source)
        )  # (16*16ch, cond)
        self.register_buffer("gen_z_b", sd["generator.gen_z.bias"].float().clone())
        self.blocks = nn.ModuleList(
            _Block(sd, f"generator.layers.{cfg.module_index(b)}", cfg.layers[b][0], cfg.eps, source)
            for b in range(len(cfg.layers))
        )
        self.attention = (
            _SelfAttention(sd, f"generator.layers.{cfg.attention_layer_position}", source)
            if cfg.has_attention
            else None
        )
        for name in ("running_means", "running_vars", "weight", "bias"):
            self.register_buffer(f"bn_{name}", sd[f"generator.bn.{name}"].float().clone())
        self.register_buffer("rgb_w", _spectral_normalized(sd, "generator.conv_to_rgb", source))
        self.register_buffer("rgb_b", sd["generator.conv_to_rgb.bias"].float().clone())

    def condition(self, z: torch.Tensor, class_vector: torch.Tensor) -> torch.Tensor:
        """(N, z_dim), (N, num_classes) -> condition vector (N, 2 * z_dim)."""
        return torch.cat([z, F.linear(class_vector, self.embed)], dim=1)

    def stem(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition vector (N, 2 z_dim) -> first linear layer's output (N, 16 ch, 4, 4)."""
        x = F.linear(cond, self.gen_z_w, self.gen_z_b)  # (N, 4*4*16ch), stored channels-last
        return x.reshape(cond.shape[0], 4, 4, -1).permute(0, 3, 1, 2).contiguous()  # (N, 16ch, 4, 4)

    def run_blocks(self, x: torch.Tensor, cond: torch.Tensor, truncation: float, start: int) -> torch.Tensor:
        """Apply blocks ``start``.. (and the attention layer where it falls among them)."""
        for b in range(start, len(self.blocks)):
            if self.attention is not None and b == self.cfg.attention_layer_position:
                x = self.attention(x)
            x = self.blocks[b](x, cond, truncation)
        return x

    def head(self, x: torch.Tensor, truncation: float) -> torch.Tensor:
        """(N, ch, R, R) -> RGB (N, 3, R, R) in [-1, 1]."""
        mean, var = _stats_at(self.bn_running_means, self.bn_running_vars, truncation)
        x = F.batch_norm(x, mean, var, self.bn_weight, self.bn_bias, training=False, eps=self.cfg.eps)
        x = F.conv2d(F.relu(x), self.rgb_w, self.rgb_b, padding=1)  # (N, ch, R, R)
        return torch.tanh(x[:, :3])

    def forward(self, z: torch.Tensor, class_vector: torch.Tensor, truncation: float) -> torch.Tensor:
        """(N, z_dim), (N, num_classes), truncation -> images (N, 3, R, R)."""
        cond = self.condition(z, class_vector)
        return self.head(self.run_blocks(self.stem(cond), cond, truncation, 0), truncation)


# --------------------------------------------------------------------------------------------------
# Generator protocol
# --------------------------------------------------------------------------------------------------


class BigGANGenerator:
    """A BigGAN behind sfvq's Generator protocol.

    Only a z space: ``mapping`` returns z as (N, 1, z_dim). BigGAN needs two more inputs than z, a class
    vector and the truncation (it picks the BatchNorm statistics); they are held as *condition state*:

    - ``mapping(z, c, truncation_psi)`` and ``features(z, c, layer)`` set ``class_vector`` (N or 1,
      num_classes), ``truncation`` and the conditioning z, and ``synthesis`` / ``synthesis_from`` use it;
    - each of ``synthesis`` / ``synthesis_from`` also takes keyword overrides ``c=`` and ``truncation=``
      (and ``synthesis_from`` a ``z=``), which do not change the state.

    z is not scaled here: sample it with :func:`truncated_noise` (noise times psi) and pass the same psi.
    Class vectors are (N, num_classes) floats (one-hot; mixtures of classes are allowed) or (N,) integer
    class indices; see :meth:`one_hot`. BigGAN has no noise inputs, so ``noise_mode`` has no effect.

    ``synthesis_from(layer, x)`` continues the forward pass from ``layer``; every later block is
    conditioned on cat(z, class embedding), so it needs the z that produced ``x`` (kept from the last
    ``features`` call) or, for features that no single z produced (e.g. points on a curve), an explicit
    ``z=`` (batch N or 1; the mean of the truncated prior, zeros, is a natural choice).
    """

    w_dim = None
    num_ws = 1
    img_channels = 3
    spaces = ("z",)

    def __init__(self, network: BigGANNetwork, name: str = "biggan") -> None:
        cfg = network.cfg
        self.network = network.eval()
        self.cfg = cfg
        self.name = name
        self.z_dim = cfg.z_dim
        self.c_dim = cfg.num_classes
        self.img_resolution = cfg.output_dim
        self.layers = ("linear",) + tuple(f"block{b}" for b in range(len(cfg.layers)))
        self.class_vector: torch.Tensor | None = None
        self._truncation = 1.0
        self._cond_z: torch.Tensor | None = None

    # ---- state -------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.network.embed.device

    @property
    def truncation(self) -> float:
        """Truncation psi in (0, 1] that selects the BatchNorm statistics (default 1.0)."""
        return self._truncation

    @truncation.setter
    def truncation(self, psi: float) -> None:
        self._truncation = _check_truncation(psi)

    def to(self, device: torch.device | str) -> BigGANGenerator:
        """Move the network (and the condition state) to ``device``; returns self."""
        self.network.to(device)
        if self.class_vector is not None:
            self.class_vector = self.class_vector.to(device)
        if self._cond_z is not None:
            self._cond_z = self._cond_z.to(device)
        return self

    def one_hot(self, classes: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Class indices -> one-hot class vectors (N, num_classes) on the generator's device."""
        idx = torch.as_tensor(classes).reshape(-1)
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"class indices must be integers, got dtype {idx.dtype}")
        bad = idx[(idx < 0) | (idx >= self.c_dim)]
        if bad.numel():
            raise ValueError(
                f"class {int(bad[0])} is out of range: this BigGAN has classes 0..{self.c_dim - 1}"
            )
        return F.one_hot(idx.long(), self.c_dim).float().to(self.device)  # (N, num_classes)

    def _class_vector(self, c: torch.Tensor | None, n: int | None) -> torch.Tensor:
        if c is None:
            raise ValueError(
                f"BigGAN is class-conditional: pass a class vector c of shape (N, {self.c_dim}) "
                "(one-hot, see one_hot()) or (N,) integer class indices"
            )
        c = torch.as_tensor(c)
        if not c.is_floating_point():
            c = self.one_hot(c)
        if c.ndim != 2 or c.shape[1] != self.c_dim:
            raise ValueError(f"class vector must have shape (N, {self.c_dim}), got {tuple(c.shape)}")
        if n is not None and c.shape[0] not in (n, 1):
            raise ValueError(f"class vector has batch {c.shape[0]} but the latents have batch {n}")
        if not torch.isfinite(c).all():
            raise ValueError("class vector contains non-finite values")
        return c.to(self.device, torch.float32)

    def _latents(self, z: torch.Tensor, what: str = "z") -> torch.Tensor:
        z = torch.as_tensor(z)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"{what} must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        return z.to(self.device, torch.float32)

    def _resolve(
        self, n: int, c: torch.Tensor | None, truncation: float | None, z: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """Condition vector (N, 2 z_dim) and truncation for a batch of n: z (n or 1, z_dim), c and
        truncation from the arguments, or from the held state where they are None."""
        if c is None and self.class_vector is None:
            raise ValueError(
                "no class vector: call mapping(z, c, truncation_psi) or features(z, c, layer) first, "
                "or pass c="
            )
        if c is None and self.class_vector.shape[0] not in (n, 1):
            raise ValueError(
                f"the class vector held from the last mapping()/features() call has batch "
                f"{self.class_vector.shape[0]} but the input has batch {n}; pass c= (batch {n} or 1)"
            )
        cv = self._class_vector(c if c is not None else self.class_vector, n)
        psi = self._truncation if truncation is None else _check_truncation(truncation)
        if z.shape[0] not in (n, 1):
            raise ValueError(f"conditioning z has batch {z.shape[0]} but the input has batch {n}")
        cond = self.network.condition(z.expand(n, -1), cv.expand(n, -1))  # (N, 2 z_dim)
        return cond, psi

    def _set_state(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float | None) -> None:
        if truncation_psi is not None:
            self.truncation = truncation_psi
        self.class_vector = c
        self._cond_z = z

    # ---- protocol ----------------------------------------------------------------------------------

    @torch.no_grad()
    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim) -> (N, 1, z_dim); stores c and truncation_psi for the synthesis that follows.

        z is returned unscaled (sample it as ``truncated_noise(n, z_dim, psi, seed)``); ``truncation_psi``
        selects the BatchNorm statistics. ``truncation_cutoff`` has no meaning for BigGAN and must be None.
        """
        if truncation_cutoff is not None:
            raise ValueError("BigGAN has no style layers: truncation_cutoff must be None")
        z = self._latents(z)
        cv = self._class_vector(c, z.shape[0])
        self._set_state(z, cv, truncation_psi)
        return z[:, None, :]  # (N, 1, z_dim)

    @torch.no_grad()
    def synthesis(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        *,
        c: torch.Tensor | None = None,
        truncation: float | None = None,
    ) -> torch.Tensor:
        """ws (N, 1, z_dim) (or (N, z_dim)) -> images (N, 3, R, R) in [-1, 1].

        Uses the class vector and truncation stored by the last ``mapping``/``features`` call unless
        ``c`` / ``truncation`` are given.
        """
        _check_noise_mode(noise_mode)
        ws = torch.as_tensor(ws)
        if ws.ndim == 3:
            if ws.shape[1] != 1:
                raise ValueError(f"BigGAN ws must have shape (N, 1, {self.z_dim}), got {tuple(ws.shape)}")
            ws = ws[:, 0]
        z = self._latents(ws, "ws")  # (N, z_dim)
        cond, psi = self._resolve(z.shape[0], c, truncation, z)
        net = self.network
        return net.head(net.run_blocks(net.stem(cond), cond, psi, 0), psi)

    @torch.no_grad()
    def features(
        self, z: torch.Tensor, c: torch.Tensor | None, layer: str, *, truncation_psi: float | None = None
    ) -> torch.Tensor:
        """Activations at ``layer`` ("linear" (N, 16 ch, 4, 4) or "blockK" (N, C_K, R_K, R_K)).

        Stores z, c (and truncation_psi if given; otherwise the current ``truncation`` is used) as the
        condition state, so ``synthesis_from(layer, features(z, c, layer))`` equals the full forward pass.
        """
        stop = self._layer_index(layer)
        z = self._latents(z)
        cv = self._class_vector(c, z.shape[0])
        self._set_state(z, cv, truncation_psi)
        cond, psi = self._resolve(z.shape[0], None, None, z)
        net = self.network
        x = net.stem(cond)  # (N, 16ch, 4, 4)
        for b in range(stop):
            if net.attention is not None and b == self.cfg.attention_layer_position:
                x = net.attention(x)
            x = net.blocks[b](x, cond, psi)
        return x

    @torch.no_grad()
    def synthesis_from(
        self,
        layer: str,
        features: torch.Tensor,
        noise_mode: str = "const",
        *,
        z: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        truncation: float | None = None,
    ) -> torch.Tensor:
        """The rest of the forward pass from ``layer``'s activations (N, C, H, W) to images (N, 3, R, R).

        Later blocks are conditioned on cat(z, class embedding): ``z`` (N or 1, z_dim), ``c`` and
        ``truncation`` default to the state of the last ``features``/``mapping`` call.
        """
        _check_noise_mode(noise_mode)
        start = self._layer_index(layer)
        x = torch.as_tensor(features).to(self.device, torch.float32)
        want = self.feature_shape(layer)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"features at '{layer}' must have shape (N, {', '.join(map(str, want))}), "
                f"got {tuple(x.shape)}"
            )
        n = x.shape[0]
        if z is not None:
            zc = self._latents(z)
        elif self._cond_z is not None and self._cond_z.shape[0] in (n, 1):
            zc = self._cond_z
        else:
            held = "none" if self._cond_z is None else f"batch {self._cond_z.shape[0]}"
            raise ValueError(
                f"synthesis_from needs the z that conditions the later blocks: the last features() call "
                f"left {held}, the features have batch {n}; pass z= (batch {n} or 1)"
            )
        cond, psi = self._resolve(n, c, truncation, zc)
        net = self.network
        return net.head(net.run_blocks(x, cond, psi, start), psi)

    def feature_shape(self, layer: str) -> tuple[int, int, int]:
        """(C, H, W) of the activations at ``layer``."""
        i = self._layer_index(layer)
        if i == 0:
            return (16 * self.cfg.channel_width, 4, 4)
        r = self.cfg.block_resolution(i - 1)
        return (self.cfg.block_channels(i - 1)[2], r, r)

    def _layer_index(self, layer: str) -> int:
        """ "linear" -> 0, "blockK" -> K + 1 (number of blocks run to reach the layer)."""
        if layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r}; BigGAN layers are {', '.join(self.layers)}")
        return self.layers.index(layer)

    def __repr__(self) -> str:
        return (
            f"BigGANGenerator(name={self.name!r}, resolution={self.img_resolution}, "
            f"classes={self.c_dim}, blocks={len(self.cfg.layers)}, device={self.device})"
        )


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _resolve_dir(path_to_dir: str | Path) -> Path:
    path = Path(path_to_dir).expanduser()
    if not path.exists():
        text = str(path_to_dir)
        if "/" not in text and "\\" not in text:
            raise GeneratorError(
                f"'{text}' is not a local directory. sfvq never downloads weights: fetch the BigGAN files "
                f"yourself and pass the local directory that holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        raise GeneratorError(f"BigGAN directory not found: {path}")
    if path.is_file():
        if path.name in (CONFIG_NAME, WEIGHTS_NAME):
            return path.parent
        raise GeneratorError(
            f"{path} is a file; a BigGAN is a directory holding {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    return path


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GeneratorError(f"{path}: refused or unreadable pickle content ({first})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GeneratorError(f"{path}: corrupt or truncated torch file ({first})") from exc
    if not isinstance(obj, Mapping):
        raise GeneratorError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise GeneratorError(f"{path}: state dict entries that are not named tensors: {', '.join(bad[:8])}")
    return dict(obj)


def load_biggan(path_to_dir: str | Path, device: torch.device | str | None = None) -> BigGANGenerator:
    """Load a BigGAN from a local directory with config.json and pytorch_model.bin (fp32, eval).

    Raises GeneratorError naming the problem for a missing directory or file, a model name instead of a
    directory (nothing is ever downloaded), an invalid config, a corrupt weights file or a state dict that
    does not match the config's layout.
    """
    directory = _resolve_dir(path_to_dir)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
    if missing:
        raise GeneratorError(f"{directory} is not a BigGAN directory: missing {' and '.join(missing)}")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeneratorError(f"{config_path}: not valid JSON ({exc})") from exc
    cfg = parse_config(raw, str(config_path))
    sd = _load_state_dict(weights_path)
    _check_state_dict(sd, cfg, str(weights_path))
    network = BigGANNetwork(cfg, sd, str(weights_path))
    gen = BigGANGenerator(network, name=str(path_to_dir))
    return gen.to(torch.device(device) if device is not None else torch.device("cpu"))
