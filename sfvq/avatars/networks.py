"""The networks the avatars trainer optimises: the generator (sfvq's own
:class:`~sfvq.generators.stylegan2.StyleGAN2Generator`, built and initialised as StyleGAN2 does), the fast
differentiable synthesis forward used in training, and the residual discriminator.

:func:`synthesis_forward` computes ``synthesis(ws)`` with the same parameters through an equivalent
non-fused path (modulate the activations, one shared conv, demodulate the output; separable FIR filters),
several times faster on a CPU than the per-sample grouped convolution the inference modules use; a test
holds the two forwards equal. The layers follow the StyleGAN2 papers' descriptions (equalised learning
rates, lrelu times sqrt 2, [1, 3, 3, 1] resampling, minibatch standard deviation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from sfvq.generators.stylegan2 import (
    FullyConnectedLayer,
    MappingNetwork,
    StyleGAN2Generator,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)

if TYPE_CHECKING:
    from sfvq.avatars.train import TrainConfig

__all__ = [
    "Discriminator",
    "DiscriminatorBlock",
    "EqualizedConv2d",
    "EqualizedLinear",
    "init_generator",
    "minibatch_std",
    "new_generator",
    "synthesis_forward",
]

_FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # the [1, 3, 3, 1] resample filter, separable, sum 8 per axis
_SQRT2 = math.sqrt(2.0)
_LRELU = 0.2


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
            raise ValueError(f"unsupported conv kernel {kernel} / down {down}")
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
