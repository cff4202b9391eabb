"""The BigGAN-deep generator network, built from a state dict in the pytorch-pretrained-biggan layout.

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

The state dict must already have been checked against the config
(:func:`sfvq.generators.biggan_config.check_state_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sfvq.generators.base import GeneratorError
from sfvq.generators.biggan_config import WEIGHTS_NAME, BigGANConfig

__all__ = ["BigGANNetwork"]


def _spectral_normalized(sd: Mapping[str, torch.Tensor], prefix: str, source: str) -> torch.Tensor:
    """weight_orig / sigma with sigma = u . (W v), the stored power-iteration estimate (eval mode)."""
    w = sd[f"{prefix}.weight_orig"].float()
    u, v = sd[f"{prefix}.weight_u"].float(), sd[f"{prefix}.weight_v"].float()
    sigma = torch.dot(u, w.reshape(w.shape[0], -1) @ v)  # scalar
    if not torch.isfinite(sigma) or sigma.abs() < 1e-12:
        raise GeneratorError(f"{source}: spectral norm of {prefix} is degenerate (sigma = {sigma.item():g})")
    return w / sigma


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
