"""Adapter for rosinality ``stylegan2-pytorch`` checkpoints (``.pt`` files with ``g_ema`` and ``latent_avg``).

The network is re-implemented here in plain torch ops from the published StyleGAN2 maths and the
checkpoint's state-dict layout; nothing from the original project is imported or required. The
hyper-parameters (output size, style dim, mapping depth, channel widths and multiplier, kernel sizes) are
inferred from tensor shapes. Only ``g_ema`` and ``latent_avg`` are used; other entries (``g``, ``d``,
optimiser states, ``args``) are read by the safe loader and ignored.

Layout facts used (state-dict key -> role):

* ``style.{i}.weight`` (D, D), ``style.{i}.bias`` (D,), i = 1..n_mlp: mapping layers after a PixelNorm
  (``style.0``), equalised lr with multiplier ``lr_mlp`` (0.01), leaky ReLU(0.2) times sqrt(2).
* ``input.input`` (1, C, 4, 4): the learned constant.
* ``conv1`` / ``convs.{j}``: ``conv.weight`` (1, out, in, k, k), ``conv.modulation.{weight,bias}``
  (in, D)/(in,), ``noise.weight`` (1,), ``activate.bias`` (out,); even ``convs`` upsample by 2 with a
  stride-2 transposed conv then ``conv.blur.kernel``.
* ``to_rgb1`` / ``to_rgbs.{b}``: 1x1 modulated conv without demodulation plus ``bias`` (1, 3, 1, 1);
  the skip image is upsampled with ``upsample.kernel``.
* ``noises.noise_{j}`` (1, 1, R, R): the fixed per-layer noise used for ``noise_mode="const"``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sfvq.generators import limits
from sfvq.generators.base import GeneratorBase, GeneratorError, downsample
from sfvq.generators.fir import upfirdn2d
from sfvq.generators.limits import brief_text
from sfvq.generators.torch_checkpoint import check_loaded_tensors, check_torch_file

__all__ = ["RosinalityConfig", "RosinalityGenerator", "infer_rosinality_config", "load_rosinality"]

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)
_EPS = 1e-8
# Rosinality's channel table: width at each resolution as a function of the channel multiplier.
_TABLE_BASE = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
_LATENT_AVG_SAMPLES = 4096  # samples used to estimate latent_avg when a checkpoint lacks it (as generate.py)
# style-affine weights, by name: conv1 reads ws[0], to_rgb1 ws[1], convs.{j} ws[j + 1], to_rgbs.{b} ws[2b + 3]
_AFFINE_RE = re.compile(r"^(conv1|to_rgb1|convs\.(\d+)|to_rgbs\.(\d+))\.conv\.modulation\.weight$")


@dataclass(frozen=True)
class RosinalityConfig:
    """Hyper-parameters of a rosinality generator, as inferred from its state dict.

    ``channels`` maps each resolution (4, 8, ..., size) to its feature width. ``channel_multiplier`` is the
    integer multiplier when the widths follow rosinality's table and the size is at least 64; ``None``
    when it cannot be determined (size <= 32) or the widths are non-standard (``standard_channels`` False).
    """

    size: int
    style_dim: int
    n_mlp: int
    channels: dict[int, int]
    channel_multiplier: int | None
    standard_channels: bool
    img_channels: int
    conv_kernel: int
    num_ws: int
    num_noise_layers: int


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _need(sd: Mapping[str, torch.Tensor], key: str, ndim: int) -> torch.Tensor:
    if key not in sd:
        raise GeneratorError(f"rosinality checkpoint: g_ema is missing key {key!r}")
    t = sd[key]
    if t.ndim != ndim:
        raise GeneratorError(
            f"rosinality checkpoint: g_ema[{key!r}] has shape {_shape(t)}, expected a {ndim}-D tensor"
        )
    return t


def _count_indexed(sd: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd for m in [rx.fullmatch(k)] if m})


def _check_contiguous(indices: list[int], start: int, what: str) -> None:
    if indices != list(range(start, start + len(indices))):
        raise GeneratorError(
            f"rosinality checkpoint: {what} indices are not contiguous from {start}: {indices}"
        )


def _expected_shapes(
    cfg: RosinalityConfig,
    start_res: int,
    blur_shape: tuple[int, ...],
    up_shape: tuple[int, ...],
    bias_4d: set[str],
) -> dict[str, tuple]:
    """Every key of a consistent g_ema state dict with its expected shape."""
    D, k, rgb = cfg.style_dim, cfg.conv_kernel, cfg.img_channels
    exp: dict[str, tuple] = {}
    for i in range(1, cfg.n_mlp + 1):
        exp[f"style.{i}.weight"] = (D, D)
        exp[f"style.{i}.bias"] = (D,)
    c0 = cfg.channels[start_res]
    exp["input.input"] = (1, c0, start_res, start_res)

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        exp[f"{prefix}.conv.weight"] = (1, cout, cin, k, k)
        exp[f"{prefix}.conv.modulation.weight"] = (cin, D)
        exp[f"{prefix}.conv.modulation.bias"] = (cin,)
        exp[f"{prefix}.noise.weight"] = (1,)
        # FusedLeakyReLU stores (C,); some forks store (1, C, 1, 1): accept either layout.
        four_d = f"{prefix}.activate.bias" in bias_4d
        exp[f"{prefix}.activate.bias"] = (1, cout, 1, 1) if four_d else (cout,)
        if up:
            exp[f"{prefix}.conv.blur.kernel"] = blur_shape

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        exp[f"{prefix}.conv.weight"] = (1, rgb, cin, 1, 1)
        exp[f"{prefix}.conv.modulation.weight"] = (cin, D)
        exp[f"{prefix}.conv.modulation.bias"] = (cin,)
        exp[f"{prefix}.bias"] = (1, rgb, 1, 1)
        if up:
            exp[f"{prefix}.upsample.kernel"] = up_shape

    styled("conv1", c0, c0, up=False)
    to_rgb("to_rgb1", c0, up=False)
    res, cin = start_res, c0
    for b in range(len(cfg.channels) - 1):
        res *= 2
        cout = cfg.channels[res]
        styled(f"convs.{2 * b}", cin, cout, up=True)
        styled(f"convs.{2 * b + 1}", cout, cout, up=False)
        to_rgb(f"to_rgbs.{b}", cout, up=True)
        cin = cout
    for j in range(cfg.num_noise_layers):
        r = start_res * 2 ** ((j + 1) // 2)
        exp[f"noises.noise_{j}"] = (1, 1, r, r)
    return exp


def infer_rosinality_config(state_dict: Mapping[str, torch.Tensor]) -> RosinalityConfig:
    """Infer size, style dim, mapping depth and channel widths from a ``g_ema`` state dict's shapes.

    Raises GeneratorError naming the first missing, unexpected or misshapen key. Only shapes are read.
    """
    sd = state_dict
    style_idx = _count_indexed(sd, r"style\.(\d+)\.weight")
    if not style_idx:
        raise GeneratorError(
            "rosinality checkpoint: g_ema has no mapping layers (no 'style.{i}.weight' keys)"
        )
    _check_contiguous(style_idx, 1, "mapping layer 'style.{i}.weight'")
    n_mlp = len(style_idx)
    w1 = _need(sd, "style.1.weight", 2)
    style_dim = int(w1.shape[1])

    const = _need(sd, "input.input", 4)
    start_res = int(const.shape[-1])
    if const.shape[0] != 1 or const.shape[-2] != start_res or start_res < 1 or start_res & (start_res - 1):
        raise GeneratorError(
            f"rosinality checkpoint: g_ema['input.input'] has shape {_shape(const)}, "
            "expected (1, C, R, R) with R a power of two"
        )

    rgb_idx = _count_indexed(sd, r"to_rgbs\.(\d+)\.conv\.weight")
    _check_contiguous(rgb_idx, 0, "'to_rgbs.{b}'")
    n_blocks = len(rgb_idx)
    conv_idx = _count_indexed(sd, r"convs\.(\d+)\.conv\.weight")
    _check_contiguous(conv_idx, 0, "'convs.{j}'")
    if len(conv_idx) != 2 * n_blocks:
        raise GeneratorError(
            f"rosinality checkpoint: found {len(conv_idx)} 'convs.{{j}}' layers and {n_blocks} "
            "'to_rgbs.{b}' layers; a generator has exactly two convs per to_rgb"
        )

    channels = {start_res: int(const.shape[1])}
    res = start_res
    for b in range(n_blocks):
        res *= 2
        channels[res] = int(_need(sd, f"convs.{2 * b}.conv.weight", 5).shape[1])
    size = res
    conv_kernel = int(_need(sd, "conv1.conv.weight", 5).shape[-1])
    img_channels = int(_need(sd, "to_rgb1.conv.weight", 5).shape[1])

    # Channel multiplier from the table; None where undetermined (size <= 32) or the widths are custom.
    standard = True
    cm: int | None = None
    for r, width in channels.items():
        if r <= 32:
            standard &= width == 512
        elif r in _TABLE_BASE:
            q, rem = divmod(width, _TABLE_BASE[r])
            if rem or q < 1 or (cm is not None and q != cm):
                standard = False
            cm = q if cm is None else cm
        else:  # beyond rosinality's table (> 1024)
            standard = False
    if not standard:
        cm = None

    cfg = RosinalityConfig(
        size=size,
        style_dim=style_dim,
        n_mlp=n_mlp,
        channels=channels,
        channel_multiplier=cm,
        standard_channels=standard,
        img_channels=img_channels,
        conv_kernel=conv_kernel,
        num_ws=2 * n_blocks + 2,
        num_noise_layers=2 * n_blocks + 1,
    )

    # Full consistency check against the layout implied by the inferred hyper-parameters.
    blur_shape = _shape(sd["convs.0.conv.blur.kernel"]) if "convs.0.conv.blur.kernel" in sd else (4, 4)
    up_shape = _shape(sd["to_rgbs.0.upsample.kernel"]) if "to_rgbs.0.upsample.kernel" in sd else (4, 4)
    for name, kshape in (("convs.0.conv.blur.kernel", blur_shape), ("to_rgbs.0.upsample.kernel", up_shape)):
        if len(kshape) != 2 or kshape[0] != kshape[1]:
            raise GeneratorError(
                f"rosinality checkpoint: g_ema[{name!r}] has shape {kshape}, expected (K, K)"
            )
    bias_4d = {key for key, t in sd.items() if key.endswith(".activate.bias") and t.ndim == 4}
    expected = _expected_shapes(cfg, start_res, blur_shape, up_shape, bias_4d)
    has_noise = any(k.startswith("noises.") for k in sd)
    if not has_noise:  # very old checkpoints carry no noise buffers; the adapter makes fixed ones
        expected = {k: v for k, v in expected.items() if not k.startswith("noises.")}
    missing = [k for k in expected if k not in sd]
    if missing:
        raise GeneratorError(
            f"rosinality checkpoint: g_ema is missing {len(missing)} key(s) for a {size}x{size} generator "
            f"with n_mlp={n_mlp}: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
        )
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        raise GeneratorError(
            f"rosinality checkpoint: g_ema has {len(unexpected)} unexpected key(s) for a {size}x{size} "
            f"generator: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
        )
    for key, shape in expected.items():
        if _shape(sd[key]) != tuple(shape):
            raise GeneratorError(
                f"rosinality checkpoint: g_ema[{key!r}] has shape {_shape(sd[key])}, expected {tuple(shape)} "
                f"(inconsistent with the other layers of a {size}x{size}, style dim {style_dim} generator)"
            )
    return cfg


# ----------------------------------------------------------------------------------------------- maths


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU(0.2) with gain sqrt(2) (the 'fused leaky relu' activation, bias already added)."""
    return F.leaky_relu(x, _LRELU_SLOPE) * _LRELU_GAIN


def _fir(x: torch.Tensor, kernel: torch.Tensor, pad0: int, pad1: int) -> torch.Tensor:
    """Pad each spatial side (before=pad0, after=pad1), then a per-channel true convolution with ``kernel``.

    A separable kernel (rosinality's ``make_kernel`` of a 1-D one) runs as two 1-D passes of shifted
    slices (:mod:`sfvq.generators.fir`): no padded copy and no many-fold expansion.
    """
    return upfirdn2d(x, kernel, padding=(pad0, pad1, pad0, pad1))


def _upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-insertion 2x upsampling, then the FIR ``kernel`` (scaled by 4): (N, C, H, W) -> (N, C, 2H, 2W).

    Polyphase: the zero-inserted image is never built.
    """
    p = kernel.shape[0] - 2
    pad0, pad1 = (p + 1) // 2 + 1, p // 2
    return upfirdn2d(x, kernel, up=2, padding=(pad0, pad1, pad0, pad1))


class RosinalityGenerator(GeneratorBase):
    """A rosinality StyleGAN2 generator meeting sfvq's Generator protocol (fp32, batched, no_grad).

    Spaces ``z``, ``w``, ``w+``; layer ``"w"`` (features = ws, synthesis_from = synthesis). The modulation
    weights are the style affines SeFa reads (:meth:`style_weights`); the network is written in plain
    ops on a flat dict of tensors, so it offers no differentiable layer for LatentCLR. Previews
    (:meth:`synthesis_at`) stop after the block of the asked resolution and return its skip image, as
    the StyleGAN2 adapter does: exact, and at a fraction of the full render's cost.
    """

    spaces: tuple[str, ...] = ("z", "w", "w+")
    layers: tuple[str, ...] = ("w",)

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor],
        latent_avg: torch.Tensor | None,
        name: str = "rosinality",
        device: torch.device | str | None = None,
        lr_mlp: float = 0.01,
    ) -> None:
        cfg = infer_rosinality_config(state_dict)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.name = name
        self.config = cfg
        self.lr_mlp = float(lr_mlp)
        self.z_dim = cfg.style_dim
        self.w_dim: int | None = cfg.style_dim
        self.num_ws = cfg.num_ws
        self.c_dim = 0
        self.img_resolution = cfg.size
        self.img_channels = cfg.img_channels
        self._p = {
            k: v.detach().to(device=dev, dtype=torch.float32).contiguous() for k, v in state_dict.items()
        }
        self.noise_buffers_stored = any(k.startswith("noises.") for k in self._p)
        if not self.noise_buffers_stored:
            # No stored noise: make fixed, seeded buffers so that 'const' stays deterministic.
            gen = torch.Generator().manual_seed(0)
            start = int(self._p["input.input"].shape[-1])
            sides = [start * 2 ** ((j + 1) // 2) for j in range(cfg.num_noise_layers)]
            budget = limits.current_budget()
            if budget is not None:  # sized by the layer count, not by stored bytes: charge first
                budget.charge(sum(4 * r * r for r in sides), "the generated noise buffers")
            for j in range(cfg.num_noise_layers):
                r = start * 2 ** ((j + 1) // 2)
                self._p[f"noises.noise_{j}"] = torch.randn(1, 1, r, r, generator=gen).to(dev)
        for key, t in self._p.items():
            if key.endswith(".activate.bias"):
                self._p[key] = t.reshape(-1)  # (C,)
        self.latent_avg_estimated = latent_avg is None
        self._latent_avg: torch.Tensor | None = None
        if latent_avg is not None:
            la = latent_avg.detach().to(device=dev, dtype=torch.float32)
            if la.numel() != cfg.style_dim or (la.ndim == 2 and la.shape[0] != 1) or la.ndim > 2:
                raise GeneratorError(
                    f"rosinality checkpoint: latent_avg has shape {_shape(latent_avg)}, "
                    f"expected ({cfg.style_dim},) to match the style dim"
                )
            self._latent_avg = la.reshape(cfg.style_dim)

    # ------------------------------------------------------------------ protocol

    @property
    def device(self) -> torch.device:
        """Device holding the weights."""
        return self._p["input.input"].device

    @property
    def latent_avg(self) -> torch.Tensor:
        """Mean w (w_dim,): from the checkpoint, else estimated from 4096 seeded z (as generate.py does)."""
        if self._latent_avg is None:
            gen = torch.Generator().manual_seed(0)
            z = torch.randn(_LATENT_AVG_SAMPLES, self.z_dim, generator=gen).to(self.device)
            self._latent_avg = self._map(z).mean(0)  # (w_dim,)
        return self._latent_avg

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        """PixelNorm then n_mlp equalised-lr linear layers with fused leaky ReLU: (N, D) -> (N, D)."""
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + _EPS)  # (N, D)
        scale = self.lr_mlp / math.sqrt(self.z_dim)
        for i in range(1, self.config.n_mlp + 1):
            w, b = self._p[f"style.{i}.weight"], self._p[f"style.{i}.bias"]
            x = _lrelu(F.linear(x, w * scale) + b * self.lr_mlp)  # (N, D)
        return x

    def _check_c(self, c: torch.Tensor | None) -> None:
        if c is not None and c.numel() != 0:
            raise ValueError(
                f"this rosinality generator is unconditional (c_dim 0); got c of shape {_shape(c)}"
            )

    @torch.no_grad()
    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim) -> ws (N, num_ws, w_dim); the first ``truncation_cutoff`` ws go towards latent_avg."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape (N, {self.z_dim}), got {_shape(z)}")
        self._check_c(c)
        w = self._map(z.to(device=self.device, dtype=torch.float32))  # (N, D)
        ws = w[:, None, :].repeat(1, self.num_ws, 1)  # (N, num_ws, D)
        if truncation_psi != 1:
            cutoff = (
                self.num_ws if truncation_cutoff is None else max(0, min(int(truncation_cutoff), self.num_ws))
            )
            avg = self.latent_avg  # (D,)
            ws[:, :cutoff] = avg + truncation_psi * (ws[:, :cutoff] - avg)
        return ws

    def _modconv(
        self, x: torch.Tensor, prefix: str, style: torch.Tensor, demodulate: bool, up: bool = False
    ) -> torch.Tensor:
        """Modulated conv (styles scale input channels, optional demodulation), shared-weight form.

        x (N, Cin, H, W), style (N, D) -> (N, Cout, H', W') with H' = 2H when ``up``.
        """
        weight = self._p[f"{prefix}.conv.weight"][0]  # (Cout, Cin, k, k)
        cout, cin, k, _ = weight.shape
        weight = weight / math.sqrt(cin * k * k)  # equalised lr
        s = F.linear(
            style,
            self._p[f"{prefix}.conv.modulation.weight"] / math.sqrt(style.shape[1]),
            self._p[f"{prefix}.conv.modulation.bias"],
        )  # (N, Cin)
        x = x * s[:, :, None, None]  # (N, Cin, H, W)
        if up:
            y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # (N, Cout, 2H + k - 2, 2W + k - 2)
            kernel = self._p[f"{prefix}.conv.blur.kernel"]
            p = (kernel.shape[0] - 2) - (k - 1)
            y = _fir(y, kernel, (p + 1) // 2 + 1, p // 2 + 1)  # (N, Cout, 2H, 2W)
        else:
            y = F.conv2d(x, weight, padding=k // 2)  # (N, Cout, H, W)
        if demodulate:
            d = torch.rsqrt((weight[None] * s[:, None, :, None, None]).square().sum(dim=(2, 3, 4)) + _EPS)
            y = y * d[:, :, None, None]  # d: (N, Cout)
        return y

    def _styled(
        self, x: torch.Tensor, prefix: str, style: torch.Tensor, noise: torch.Tensor | None, up: bool = False
    ) -> torch.Tensor:
        """Modulated conv + scaled noise + bias + fused leaky ReLU: (N, Cin, H, W) -> (N, Cout, H', W')."""
        y = self._modconv(x, prefix, style, demodulate=True, up=up)
        if noise is not None:
            y = y + self._p[f"{prefix}.noise.weight"] * noise  # noise (N or 1, 1, H', W')
        return _lrelu(y + self._p[f"{prefix}.activate.bias"][None, :, None, None])

    def _to_rgb(
        self, x: torch.Tensor, prefix: str, style: torch.Tensor, skip: torch.Tensor | None
    ) -> torch.Tensor:
        """1x1 modulated conv without demodulation + bias (+ upsampled skip): -> (N, img_channels, H, W)."""
        y = self._modconv(x, prefix, style, demodulate=False) + self._p[f"{prefix}.bias"]
        if skip is not None:
            y = y + _upsample2x(skip, self._p[f"{prefix}.upsample.kernel"])
        return y

    def _noise(self, j: int, mode: str, n: int) -> torch.Tensor | None:
        """Noise for layer j: (1, 1, R, R) stored buffer, (N, 1, R, R) fresh Gaussian, or None."""
        if mode == "none":
            return None
        buf = self._p[f"noises.noise_{j}"]  # (1, 1, R, R)
        if mode == "const":
            return buf
        return torch.randn(n, 1, *buf.shape[2:], device=buf.device)  # (N, 1, R, R)

    @torch.no_grad()
    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> raw images (N, img_channels, size, size), about [-1, 1] (not clamped).

        noise_mode: 'const' uses the checkpoint's ``noises.noise_j`` buffers, 'random' fresh Gaussian
        noise per sample, 'none' no noise.
        """
        return self._synthesis(ws, noise_mode, self.config.size)

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        """The resolution of the skip image after each block, in execution order (4, 8, ..., size)."""
        return tuple(sorted(self.config.channels))

    def stop_resolution(self, resolution: int | None) -> int:
        """The block a preview at ``resolution`` px stops after: the first at or above it (the last block
        for None or anything larger)."""
        if resolution is None:
            return self.config.size
        if resolution < 1:
            raise ValueError(f"a preview resolution must be >= 1 px, got {resolution}")
        return next((r for r in self.block_resolutions if r >= resolution), self.config.size)

    @torch.no_grad()
    def synthesis_at(
        self, ws: torch.Tensor, resolution: int | None = None, noise_mode: str = "const"
    ) -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> images (N, img_channels, r, r) at ``resolution`` px (None: full size).

        Stops after the first block at or above ``resolution`` (:meth:`stop_resolution`) and returns its
        skip image (the upsampled and summed toRGB outputs so far), exactly the intermediate image of the
        full pass; area-downsampled further (:func:`~sfvq.generators.base.downsample`) when the resolution
        lies between two blocks. The layers after that block never run.
        """
        img = self._synthesis(ws, noise_mode, self.stop_resolution(resolution))  # (N, C, R, R)
        return downsample(img, resolution)  # (N, C, r, r); the block's own image where r = R

    def render_features_at(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        resolution: int | None = None,
    ) -> torch.Tensor:
        """The one feature layer ``"w"`` renders as :meth:`synthesis_at` (the ws are its activations)."""
        self._check_layer(layer)
        self._check_c(c)
        return self.synthesis_at(features, resolution, noise_mode)

    def _synthesis(self, ws: torch.Tensor, noise_mode: str, stop: int) -> torch.Tensor:
        """The forward pass up to and including the block of resolution ``stop``: its skip image
        (N, img_channels, stop, stop). ``stop`` = size is the full pass."""
        self.check_noise_mode(noise_mode)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape (N, {self.num_ws}, {self.w_dim}), got {_shape(ws)}")
        ws = ws.to(device=self.device, dtype=torch.float32)
        n = ws.shape[0]
        x = self._p["input.input"].expand(n, -1, -1, -1)  # (N, C, 4, 4)

        def noise(j: int) -> torch.Tensor | None:
            return self._noise(j, noise_mode, n)

        x = self._styled(x, "conv1", ws[:, 0], noise(0))
        img = self._to_rgb(x, "to_rgb1", ws[:, 1], None)  # (N, 3, 4, 4)
        for b, res in enumerate(self.block_resolutions[1:]):
            if res > stop:
                break
            i = 2 * b + 1
            x = self._styled(x, f"convs.{2 * b}", ws[:, i], noise(i), up=True)  # (N, C, 2H, 2W)
            x = self._styled(x, f"convs.{2 * b + 1}", ws[:, i + 1], noise(i + 1))
            img = self._to_rgb(x, f"to_rgbs.{b}", ws[:, i + 2], img)  # (N, 3, 2H, 2W)
        return img

    @torch.no_grad()
    def features(self, z: torch.Tensor, c: torch.Tensor | None, layer: str) -> torch.Tensor:
        """Activations at ``layer``; only ``"w"``: the ws (N, num_ws, w_dim) of :meth:`mapping` (psi = 1)."""
        self._check_layer(layer)
        return self.mapping(z, c)

    @torch.no_grad()
    def synthesis_from(self, layer: str, features: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """The rest of the forward pass from ``layer`` (only ``"w"``): equals :meth:`synthesis`."""
        self._check_layer(layer)
        return self.synthesis(features, noise_mode=noise_mode)

    def style_weights(self, include_torgb: bool = False) -> list[tuple[int, str, torch.Tensor]]:
        """Every modulation (style-affine) weight ``(ws_index, key, weight (in_channels, w_dim))``, in W+
        order: ``conv1`` reads ws[0], ``convs.{j}`` ws[j + 1]; the toRGB layers (``to_rgb1`` ws[1],
        ``to_rgbs.{b}`` ws[2b + 3]) only with ``include_torgb``."""
        found: list[tuple[int, str, torch.Tensor]] = []
        for key, weight in self._p.items():
            m = _AFFINE_RE.match(key)
            if not m:
                continue
            if m.group(1) == "conv1":
                found.append((0, key, weight))
            elif m.group(2) is not None:
                found.append((int(m.group(2)) + 1, key, weight))
            elif include_torgb:
                idx = 1 if m.group(1) == "to_rgb1" else 2 * int(m.group(3)) + 3
                found.append((idx, key, weight))
        if not found:
            raise GeneratorError(f"{self.name}: found no modulation weights in its state dict")
        return sorted(found, key=lambda t: (t[0], t[1]))

    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r}; this generator offers {self.layers}")

    def __repr__(self) -> str:
        c = self.config
        return (
            f"RosinalityGenerator(name={self.name!r}, size={c.size}, style_dim={c.style_dim}, "
            f"n_mlp={c.n_mlp}, channel_multiplier={c.channel_multiplier}, device={self.device})"
        )


# --------------------------------------------------------------------------------------------- loading


def _torch_load_safely(path: Path) -> object:
    """torch.load with weights_only=True (argparse.Namespace allowed for the ``args`` entry), inside the
    load budget: the archive and its pickle are checked before, every tensor after
    (:mod:`sfvq.generators.torch_checkpoint`)."""
    budget = limits.budget_for(path)
    check_torch_file(path, budget)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise budget.out_of_memory() from None
    except Exception as exc:  # every failure becomes one clear GeneratorError
        text = str(exc)
        if "Weights only load failed" in text:
            m = re.search(r"GLOBAL ([\w.]+)", text)
            what = f"the global {m.group(1)!r}" if m else "objects that are not plain tensors/containers"
            raise GeneratorError(
                f"{path}: refusing to load: the checkpoint contains {what}, which needs "
                "torch.load(weights_only=False) (arbitrary code execution); sfvq only loads weights-only "
                "checkpoints. Re-save it as {'g_ema': state_dict, 'latent_avg': tensor}."
            ) from exc
        raise GeneratorError(
            f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another format): "
            f"{type(exc).__name__}: {brief_text(text.splitlines()[0] if text else '', 200)}"
        ) from exc
    check_loaded_tensors(ckpt, path, budget)
    return ckpt


def load_rosinality(
    path: str | Path, device: torch.device | str | None = None, *, lr_mlp: float = 0.01
) -> RosinalityGenerator:
    """Load a rosinality ``stylegan2-pytorch`` checkpoint (``.pt``) as an sfvq Generator.

    Uses ``ckpt['g_ema']`` and ``ckpt['latent_avg']`` (estimated from 4096 seeded samples when absent).
    ``lr_mlp`` is the mapping network's learning-rate multiplier (0.01 in every rosinality model; it is not
    recorded in the weights). Raises GeneratorError for anything unloadable.
    """
    p = Path(path)
    if not p.is_file():
        raise GeneratorError(f"{p}: no such file")
    with limits.loading(p):  # one budget for the checkpoint and the generator (reused by load_generator)
        return _load(p, device, lr_mlp, name=str(path))


def _load(p: Path, device: torch.device | str | None, lr_mlp: float, name: str) -> RosinalityGenerator:
    ckpt = _torch_load_safely(p)
    if not isinstance(ckpt, Mapping):
        raise GeneratorError(f"{p}: expected a dict checkpoint with 'g_ema', found a {type(ckpt).__name__}")
    if "g_ema" not in ckpt:
        raise GeneratorError(
            f"{p}: not a rosinality stylegan2-pytorch checkpoint: no 'g_ema' entry "
            f"(found keys: {brief_text(', '.join(map(str, list(ckpt)[:10])), 200) or 'none'})"
        )
    sd = ckpt["g_ema"]
    if not isinstance(sd, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        raise GeneratorError(f"{p}: 'g_ema' is not a state dict of tensors (found {type(sd).__name__})")
    keys = list(sd)
    if keys and all(str(k).startswith("module.") for k in keys):  # saved from a DataParallel wrapper
        sd = {str(k)[len("module.") :]: v for k, v in sd.items()}
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise GeneratorError(f"{p}: 'latent_avg' is a {type(latent_avg).__name__}, expected a tensor")
    return RosinalityGenerator(sd, latent_avg, name=name, device=device, lr_mlp=lr_mlp)
