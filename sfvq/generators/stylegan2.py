"""Clean-room StyleGAN2(-ADA) generator (mapping + skip-architecture synthesis) in plain torch ops.

Written from the maths in ``shared/docs/stylegan-pkl-format.md`` (sections 5 and 6); no NVIDIA code
is imported, copied or required. Module and parameter names reproduce the official ``state_dict()``
keys (``mapping.fc0.weight``, ``synthesis.b8.conv0.noise_const``, ...) so that weights load by name.
Inference only. Float32, except that the blocks a pickle marks for fp16 (its ``num_fp16_res`` highest
resolutions, at least 8 px) can run in a reduced-precision dtype given to :meth:`SynthesisNetwork.forward`
(the adapter passes float16 on CUDA, as the original code does there). ``forward`` can also stop after the
block of a lower resolution and return that block's skip image (a preview).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sfvq.generators import limits
from sfvq.generators.base import GeneratorError
from sfvq.generators.fir import upfirdn2d
from sfvq.generators.limits import brief, brief_text

__all__ = [
    "FullyConnectedLayer",
    "MappingNetwork",
    "StyleGAN2Generator",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "build_stylegan2",
    "fir_filter2d",
    "load_official_state_dict",
    "modulated_conv2d",
    "normalize_2nd_moment",
    "upsample2d",
]

_LRELU_SLOPE = 0.2
_ACT_GAIN = {"linear": 1.0, "relu": math.sqrt(2.0), "lrelu": math.sqrt(2.0)}
NOISE_MODES = ("const", "random", "none")
# CPU activations with at least this many pixels are convolved channels-last (faster in oneDNN there).
_CHANNELS_LAST_MIN_PIXELS = 64 * 64
SHARED_WEIGHT_BATCHES = True
"""Run a batch's modulated 3x3 convs in the shared-weight form (see :func:`modulated_conv2d`): twice as fast
for batches of small images; at full size about as fast as the per-sample form. Set False for renders that
are bit for bit independent of the batch (the shared form's results differ from a single image's render
by float rounding, about 1e-6 relative)."""

# ----------------------------------------------------------------------------------------------
# Functional maths
# ----------------------------------------------------------------------------------------------


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Divide each row by the root of its mean square: x (N, F) -> (N, F)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Apply the named activation times its standard gain (linear: 1; relu, lrelu: sqrt 2)."""
    if activation == "linear":
        return x
    if activation == "lrelu":
        return F.leaky_relu(x, _LRELU_SLOPE) * _ACT_GAIN["lrelu"]
    if activation == "relu":
        return F.relu(x) * _ACT_GAIN["relu"]
    raise GeneratorError(f"unsupported activation {activation!r} (supported: linear, relu, lrelu)")


def fir_filter2d(
    x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], gain: float
) -> torch.Tensor:
    """Pad x (N, C, H, W) by ``(left, right, top, bottom)``, then convolve "valid" with the FIR f (fh, fw).

    A separable f (such as [1,3,3,1] x [1,3,3,1]) runs as two 1-D passes of shifted slices: memory is the
    padded input plus the output, never a many-fold expansion (see :mod:`sfvq.generators.fir`).
    """
    return upfirdn2d(x, f, padding=pad, gain=gain)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x2 up-sampling: zero-insert, pad 2 before / 1 after, 4x4 FIR x4: (N, C, H, W) -> (N, C, 2H, 2W).

    Polyphase: the zero-inserted image is never built.
    """
    if tuple(f.shape) != (4, 4):
        raise GeneratorError(f"upsample2d expects a 4x4 resample filter, got {tuple(f.shape)}")
    return upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4.0)


def _conv_up(x: torch.Tensor, weight: torch.Tensor, up: int, padding: int) -> torch.Tensor:
    """Plain conv (up 1, ``padding``) or stride-2 transposed conv (up 2): weight (O, I, k, k)."""
    if up == 1:
        return F.conv2d(x, weight, padding=padding)  # (N, O, H, W)
    return F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # (N, O, 2H+k-1, 2W+k-1)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample modulated (and optionally demodulated) convolution.

    x (N, I, H, W), weight (O, I, k, k), styles (N, I). With ``up=2`` a stride-2 transposed conv
    (2H+k-2 pixels) is followed by padding 1 and the 4x4 resample filter x4, giving (N, O, 2H, 2W).

    Two exact forms of the same maths. Per sample (one image, 1x1 kernels, or
    :data:`SHARED_WEIGHT_BATCHES` off): each sample's styles scale the weight, then one ordinary conv per
    sample. Shared weight (batches): the styles scale the input activations, ONE conv with the shared
    weight runs for all samples, and the demodulation coefficients ``rsqrt(sum_i s_i^2 sum_k w_oik^2 +
    1e-8)`` scale its output. Both are far faster on the CPU than a grouped conv with N groups. Large CPU
    activations are convolved in channels-last layout (oneDNN's native one); the result keeps it.
    """
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    if up == 2:
        if resample_filter is None or tuple(resample_filter.shape) != (4, 4) or kh != 3 or kw != 3:
            raise GeneratorError("up-sampling modulated conv needs a 3x3 kernel and a 4x4 resample filter")
    elif up != 1:
        raise GeneratorError(f"unsupported up-sampling factor {up}")
    if kh > 1 and h * w >= _CHANNELS_LAST_MIN_PIXELS and x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    if SHARED_WEIGHT_BATCHES and n > 1 and kh > 1:
        y = _conv_up(x * styles.reshape(n, i, 1, 1), weight, up, padding)  # (N, O, H', W')
        if demodulate:
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # (N, O)
            y = y.mul_(dcoefs.reshape(n, o, 1, 1))  # a fresh conv output: in place is safe for autograd
    else:
        outs = []
        for k in range(n):
            wts = weight * styles[k].reshape(1, i, 1, 1)  # (O, I, kh, kw)
            if demodulate:
                wts = wts * (wts.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
            outs.append(_conv_up(x[k : k + 1], wts, up, padding))  # (1, O, H', W')
        y = outs[0] if n == 1 else torch.cat(outs)  # (N, O, H', W')
    if up == 2:
        y = upfirdn2d(y, resample_filter, padding=(1, 1, 1, 1), gain=4.0)  # (N, O, 2H, 2W)
    return y


def _bias_act(
    x: torch.Tensor,
    bias: torch.Tensor,
    activation: str,
    clamp: float | None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``clamp(act((x + noise) + bias) * gain)`` for x (N, C, H, W), bias (C,), noise broadcastable to x.

    In place on x (a fresh conv output that the caller hands over) unless x needs a gradient: on the
    CPU every fresh full-resolution tensor costs its page faults, several times the arithmetic.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        if noise is not None:
            x = x + noise
        x = _activate(x + bias.reshape(1, -1, 1, 1), activation)
        return x if clamp is None else x.clamp(-clamp, clamp)
    if noise is not None:
        x.add_(noise)
    x.add_(bias.reshape(1, -1, 1, 1))
    if activation == "lrelu":
        F.leaky_relu_(x, _LRELU_SLOPE).mul_(_ACT_GAIN["lrelu"])
    elif activation == "relu":
        x.relu_().mul_(_ACT_GAIN["relu"])
    elif activation != "linear":
        raise GeneratorError(f"unsupported activation {activation!r} (supported: linear, relu, lrelu)")
    return x if clamp is None else x.clamp_(-clamp, clamp)


# ----------------------------------------------------------------------------------------------
# Modules (names follow the official state-dict layout)
# ----------------------------------------------------------------------------------------------


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: y = act(x (w g_w)^T + b g_b), g_w = lr/sqrt(in), g_b = lr."""

    def __init__(
        self, in_features: int, out_features: int, activation: str = "linear", lr_multiplier: float = 1.0
    ) -> None:
        super().__init__()
        if activation not in _ACT_GAIN:
            raise GeneratorError(f"unsupported activation {activation!r} (supported: linear, relu, lrelu)")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features) if in_features > 0 else 1.0
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in) -> (N, out)."""
        y = x.matmul((self.weight * self.weight_gain).t()) + self.bias * self.bias_gain  # (N, out)
        return _activate(y, self.activation)


class MappingNetwork(nn.Module):
    """z (N, Z) [+ c (N, C)] -> ws (N, num_ws, W), with truncation towards the stored ``w_avg``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws, self.num_layers = num_ws, num_layers
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        if z_dim + embed_features == 0:
            raise GeneratorError("mapping network has neither a z input nor a class embedding")
        if num_layers < 1:
            raise GeneratorError(f"mapping network needs at least one layer, got num_layers={num_layers}")
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                widths[idx], widths[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, Z), c (N, C) -> ws (N, num_ws, W)."""
        x = normalize_2nd_moment(z.to(torch.float32)) if self.z_dim > 0 else None  # (N, Z)
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this mapping network is conditional: pass c of shape (N, {self.c_dim})")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))  # (N, E)
            x = torch.cat([x, y], dim=1) if x is not None else y  # (N, Z+E)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # (N, W) after the last layer
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (N, num_ws, W)
        if truncation_psi != 1:
            avg = self.w_avg.to(ws.dtype)  # (W,)
            if truncation_cutoff is None:
                ws = avg.lerp(ws, truncation_psi)  # avg + psi (ws - avg)
            else:
                ws = ws.clone()
                ws[:, :truncation_cutoff] = avg.lerp(ws[:, :truncation_cutoff], truncation_psi)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally x2 up-sampling) + noise + bias + lrelu*sqrt2 + clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if kernel_size != 3:
            raise GeneratorError(f"unsupported StyleGAN2 conv kernel_size {kernel_size} (only 3)")
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = _ACT_GAIN[activation] if activation in _ACT_GAIN else None
        if self.act_gain is None:
            raise GeneratorError(f"unsupported activation {activation!r} (supported: linear, relu, lrelu)")
        self.affine = FullyConnectedLayer(w_dim, in_channels)
        self.register_buffer("resample_filter", torch.zeros(4, 4))
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.zeros(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """x (N, I, H, W), w (N, W) -> (N, O, H*up, W*up) in x's dtype (float32, or a reduced precision)."""
        return self.forward_styles(x, self.affine(w), noise_mode)

    def forward_styles(
        self, x: torch.Tensor, styles: torch.Tensor, noise_mode: str = "const"
    ) -> torch.Tensor:
        """:meth:`forward` from the layer's style code (StyleSpace) ``styles = affine(w)`` (N, I) float32."""
        if x.dtype == torch.float32:
            x = modulated_conv2d(
                x,
                self.weight,
                styles,
                demodulate=True,
                up=self.up,
                padding=self.padding,
                resample_filter=self.resample_filter,
            )  # (N, O, R, R)
        else:
            x = self._reduced_precision_conv(x, styles)
        noise = None
        if self.use_noise and noise_mode == "const":
            noise = (self.noise_const * self.noise_strength).to(x.dtype)  # (R, R) broadcast over N, O
        elif self.use_noise and noise_mode == "random":
            n, _, h, w_ = x.shape
            noise = torch.randn(n, 1, h, w_, device=x.device, dtype=torch.float32) * self.noise_strength
            noise = noise.to(x.dtype)
        return _bias_act(x, self.bias.to(x.dtype), self.activation, self.conv_clamp, noise)  # (N, O, R, R)

    def _reduced_precision_conv(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        """The modulated conv of x (N, I, H, W) in its half dtype without overflow: weight and styles are
        first scaled to a largest magnitude of 1/sqrt(I k k) and 1 (demodulation cancels both scales),
        convolved unmodulated in x's dtype, and the output scaled by the demodulation coefficients,
        computed in float32 -> (N, O, R, R)."""
        n, i = styles.shape
        o, _, kh, kw = self.weight.shape
        peak = self.weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)  # (O, 1, 1, 1)
        wt = self.weight * (1 / math.sqrt(i * kh * kw) / peak)  # (O, I, kh, kw)
        st = styles / styles.norm(float("inf"), dim=1, keepdim=True)  # (N, I), largest |s| = 1
        mod = wt.unsqueeze(0) * st.reshape(n, 1, i, 1, 1)  # (N, O, I, kh, kw) float32
        dcoefs = (mod.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (N, O)
        y = modulated_conv2d(
            x,
            wt.to(x.dtype),
            st.to(x.dtype),
            demodulate=False,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
        )  # (N, O, R, R) in x's dtype
        return y * dcoefs.to(x.dtype).reshape(n, o, 1, 1)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation + bias + clamp: (N, I, H, W) -> (N, img_channels, H, W)."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (N, I, H, W), w (N, W) -> (N, C, H, W) in x's dtype."""
        return self.forward_styles(x, self.affine(w))

    def forward_styles(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from the layer's style code ``affine(w)`` (N, I) (before the 1/sqrt(I) gain)."""
        styles = styles * self.weight_gain  # (N, I)
        x = modulated_conv2d(x, self.weight.to(x.dtype), styles.to(x.dtype), demodulate=False)  # (N, C, H, W)
        return _bias_act(x, self.bias.to(x.dtype), "linear", self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip architecture: [const | conv0 (x2)] -> conv1 -> torgb, img skip-upsampled."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        conv_clamp: float | None = None,
        use_noise: bool = True,
        activation: str = "lrelu",
        use_fp16: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.is_last = resolution, is_last
        self.use_fp16 = use_fp16  # the pickle's flag: may run in reduced precision (see SynthesisNetwork)
        self.register_buffer("resample_filter", torch.zeros(4, 4))
        layer_kw: dict[str, Any] = dict(use_noise=use_noise, activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.const = nn.Parameter(torch.zeros(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **layer_kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **layer_kw)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, I, R/2, R/2) | None, img (N, C, R/2, R/2) | None, ws (N, num_conv+1, W) -> x, img at R.

        The convolutions run in ``dtype`` (x comes back in it); the skip image stays float32.
        """
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)  # (N, O, 4, 4)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            assert x is not None
            x = self.conv0(x.to(dtype), ws[:, 0], noise_mode)  # (N, O, R, R)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv]).to(torch.float32)  # (N, C, R, R)
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img

    def style_layers(self) -> list[SynthesisLayer | ToRGBLayer]:
        """The layers that read a style, in execution order: [conv0,] conv1, torgb; layer i reads ws[:, i]."""
        convs = [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]
        return [*convs, self.torgb]

    def forward_styles(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        styles: list[torch.Tensor],
        noise_mode: str = "const",
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from the style codes (StyleSpace) of :meth:`style_layers`, one (N, I) each: the
        same steps, each layer run from its code (``forward_styles``) instead of from its w."""
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(styles[0].shape[0], 1, 1, 1)  # (N, O, 4, 4)
            x = self.conv1.forward_styles(x, styles[0], noise_mode)
        else:
            assert x is not None
            x = self.conv0.forward_styles(x.to(dtype), styles[0], noise_mode)  # (N, O, R, R)
            x = self.conv1.forward_styles(x, styles[1], noise_mode)
        y = self.torgb.forward_styles(x, styles[self.num_conv]).to(torch.float32)  # (N, C, R, R)
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, W) -> images (N, C, R, R), one :class:`SynthesisBlock` ``b{r}`` per resolution."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        use_noise: bool = True,
        activation: str = "lrelu",
        num_fp16_res: int = 0,
    ) -> None:
        super().__init__()
        log2 = int(round(math.log2(img_resolution))) if img_resolution > 0 else 0
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise GeneratorError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        self.channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        channels = self.channels
        # The original marks its num_fp16_res highest resolutions for fp16, never below 8 px.
        self.fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(
                channels[r // 2] if r > 4 else 0,
                channels[r],
                w_dim,
                r,
                img_channels,
                is_last=r == img_resolution,
                conv_clamp=conv_clamp,
                use_noise=use_noise,
                activation=activation,
                use_fp16=r >= self.fp16_resolution,
            )
            setattr(self, f"b{r}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's torgb

    def blocks(self) -> list[SynthesisBlock]:
        """The blocks in execution order."""
        return [getattr(self, f"b{r}") for r in self.block_resolutions]

    def stop_resolution(self, resolution: int | None) -> int:
        """The block :meth:`forward` stops after for a preview at ``resolution`` px: the first block at or
        above it (the last block for None or anything larger)."""
        if resolution is None:
            return self.img_resolution
        if resolution < 1:
            raise ValueError(f"a preview resolution must be >= 1 px, got {resolution}")
        return next((r for r in self.block_resolutions if r >= resolution), self.img_resolution)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        max_resolution: int | None = None,
        fp16_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """ws (N, num_ws, W) -> img (N, C, R, R), float32, not clamped.

        ``max_resolution``: stop after the block :meth:`stop_resolution` picks and return its skip image,
        exactly the intermediate image of the full pass (R = that block's resolution). ``fp16_dtype``: the
        dtype of the blocks flagged ``use_fp16`` (None: float32 everywhere).
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        stop = self.stop_resolution(max_resolution)
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_ws = ws[:, w_idx : w_idx + block.num_conv + block.num_torgb]  # (N, k, W)
            dtype = fp16_dtype if block.use_fp16 and fp16_dtype is not None else torch.float32
            x, img = block(x, img, block_ws, noise_mode, dtype)
            w_idx += block.num_conv
            if block.resolution == stop:
                break
        assert img is not None
        return img

    def style_layers(self) -> list[tuple[str, int, int]]:
        """StyleSpace layout: ``(name, ws_index, channels)`` of every layer that reads a style, in
        execution order (``b4.conv1``, ``b4.torgb``, ``b8.conv0``, ...); a block's torgb reads the same
        ws entry as the next block's conv0. The style codes of all of them, concatenated, are S."""
        out = []
        w_idx = 0
        for block in self.blocks():
            names = ["conv1"] if block.in_channels == 0 else ["conv0", "conv1"]
            for i, (name, layer) in enumerate(zip([*names, "torgb"], block.style_layers(), strict=True)):
                out.append((f"b{block.resolution}.{name}", w_idx + i, layer.affine.out_features))
            w_idx += block.num_conv
        return out

    def styles(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (N, num_ws, W) -> the style codes S (N, sum of channels): each style layer's affine applied
        to its ws entry (:meth:`style_layers` order), concatenated."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        parts = []
        w_idx = 0
        for block in self.blocks():
            for i, layer in enumerate(block.style_layers()):
                parts.append(layer.affine(ws[:, w_idx + i]))  # (N, I)
            w_idx += block.num_conv
        return torch.cat(parts, dim=1)  # (N, S)

    def forward_styles(
        self,
        styles: torch.Tensor,
        noise_mode: str = "const",
        max_resolution: int | None = None,
        fp16_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` from style codes S (N, sum of channels) as :meth:`styles` lays them out: exactly
        the image of ws where ``styles = self.styles(ws)`` (the same layer maths after each affine)."""
        dims = [ch for _, _, ch in self.style_layers()]
        if styles.ndim != 2 or styles.shape[1] != sum(dims):
            raise ValueError(f"style codes must have shape (N, {sum(dims)}), got {tuple(styles.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        stop = self.stop_resolution(max_resolution)
        chunks = iter(styles.to(torch.float32).split(dims, dim=1))  # (N, I) per style layer
        x = img = None
        for block in self.blocks():
            block_styles = [next(chunks) for _ in block.style_layers()]
            dtype = fp16_dtype if block.use_fp16 and fp16_dtype is not None else torch.float32
            x, img = block.forward_styles(x, img, block_styles, noise_mode, dtype)
            if block.resolution == stop:
                break
        assert img is not None
        return img


class StyleGAN2Generator(nn.Module):
    """The full generator: ``mapping(z, c, psi, cutoff) -> ws`` and ``synthesis(ws, noise_mode) -> img``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: Mapping[str, Any],
        synthesis_kwargs: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **mapping_kwargs)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """z (N, Z), c (N, C) -> img (N, C_img, R, R)."""
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), noise_mode)


# ----------------------------------------------------------------------------------------------
# Construction from the pickle's init kwargs and an official state dict
# ----------------------------------------------------------------------------------------------

_TOP_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_MAX_INT = 2**31 - 1  # largest dimension or channel count an init kwarg may give
_MAX_FLOAT = 3.0e38  # a float kwarg is used as a float32 scalar (gains, clamps)
_MAPPING_KEYS = {
    "num_layers",
    "embed_features",
    "layer_features",
    "activation",
    "lr_multiplier",
    "w_avg_beta",
}
# Synthesis kwargs that change nothing for inference (memory layouts, the per-block flag num_fp16_res sets).
_SYNTHESIS_IGNORED = {
    "fp16_channels_last",
    "channels_last",
    "fused_modconv_default",
    "use_fp16",
}


def _as_int(kwargs: Mapping[str, Any], key: str) -> int:
    if key not in kwargs:
        raise GeneratorError(f"StyleGAN2 init kwargs lack '{key}'")
    val = kwargs[key]
    if (
        isinstance(val, bool)
        or not isinstance(val, int | float)
        or not math.isfinite(val)
        or int(val) != val
        or not 0 <= val <= _MAX_INT
    ):
        raise GeneratorError(
            f"StyleGAN2 init kwarg '{key}' must be an int in 0..{_MAX_INT}, got {brief(val)}"
        )
    return int(val)


def _synthesis_settings(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve synthesis kwargs, nested (stylegan2-ada-pytorch) or flattened (stylegan3 repo)."""
    if "synthesis_kwargs" in init_kwargs:
        raw = _dict_kwarg(init_kwargs, "synthesis_kwargs")
        default_clamp = None  # stylegan2-ada-pytorch default
    else:
        raw = {k: v for k, v in init_kwargs.items() if k not in (*_TOP_KEYS, "mapping_kwargs")}
        default_clamp = 256  # the SG2 class of the stylegan3 repo
    out: dict[str, Any] = {
        "channel_base": raw.pop("channel_base", 32768),
        "channel_max": raw.pop("channel_max", 512),
        "conv_clamp": raw.pop("conv_clamp", default_clamp),
    }
    arch = raw.pop("architecture", "skip")
    if arch != "skip":
        raise GeneratorError(f"unsupported StyleGAN2 synthesis architecture {brief(arch)} (only 'skip')")
    rf = raw.pop("resample_filter", [1, 3, 3, 1])
    if not isinstance(rf, list | tuple) or list(rf) != [1, 3, 3, 1]:
        raise GeneratorError(f"unsupported StyleGAN2 resample_filter {brief(rf)} (only [1, 3, 3, 1])")
    if raw.pop("kernel_size", 3) != 3:
        raise GeneratorError("unsupported StyleGAN2 kernel_size (only 3)")
    fp16 = raw.pop("num_fp16_res", 0)  # 0 when absent: float32 everywhere, the reference results
    if isinstance(fp16, bool) or not isinstance(fp16, int) or fp16 < 0:
        raise GeneratorError(f"StyleGAN2 num_fp16_res must be a non-negative int, got {brief(fp16)}")
    out["num_fp16_res"] = fp16
    if "use_noise" in raw:
        out["use_noise"] = bool(raw.pop("use_noise"))
    if "activation" in raw:
        out["activation"] = raw.pop("activation")
    unknown = sorted(str(k) for k in raw if k not in _SYNTHESIS_IGNORED)
    if unknown:
        raise GeneratorError(f"unsupported StyleGAN2 synthesis option(s): {brief_text(', '.join(unknown))}")
    for key in ("channel_base", "channel_max"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or not 0 < out[key] <= _MAX_INT:
            raise GeneratorError(f"StyleGAN2 {key} must be a positive int, got {brief(out[key])}")
    return out


def _mapping_settings(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    raw = _dict_kwarg(init_kwargs, "mapping_kwargs")
    unknown = sorted(str(k) for k in raw if k not in _MAPPING_KEYS)
    if unknown:
        raise GeneratorError(f"unsupported StyleGAN2 mapping option(s): {brief_text(', '.join(unknown))}")
    raw.pop("w_avg_beta", None)  # training only
    return raw


def _dict_kwarg(init_kwargs: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A nested kwargs dict (``mapping_kwargs``, ``synthesis_kwargs``); None or absent: empty."""
    value = init_kwargs.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GeneratorError(f"StyleGAN2 {key} must be a dict, got {brief(value)}")
    return dict(value)


def _check_settings(
    dims: dict[str, int], mapping: dict[str, Any], synthesis: dict[str, Any], n_tensors: int
) -> None:
    """Types and ranges of the resolved settings, and layer counts no larger than the state dict can
    fill, so that a malformed file fails here rather than deep inside a constructor or a forward pass."""
    res = dims["img_resolution"]
    if res >= 4 and min(synthesis["channel_base"] // res, synthesis["channel_max"]) < 1:
        raise GeneratorError(
            f"StyleGAN2 channel_base {synthesis['channel_base']} leaves no channels at the {res} px block "
            "(channel_base // resolution must be at least 1)"
        )
    num_layers = mapping.get("num_layers", 8)
    most = max(64, n_tensors)  # a layer holds tensors: more layers than tensors cannot fit the file
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= most:
        raise GeneratorError(
            f"StyleGAN2 mapping num_layers must be an int in 1..{most} (the file holds {n_tensors} "
            f"tensors), got {brief(num_layers)}"
        )
    for key in ("embed_features", "layer_features"):
        val = mapping.get(key)
        bad = isinstance(val, bool) or not isinstance(val, int) or not 0 <= val <= _MAX_INT
        if val is not None and bad:
            raise GeneratorError(f"StyleGAN2 mapping {key} must be None or an int >= 0, got {brief(val)}")
    lr = mapping.get("lr_multiplier", 0.01)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not abs(lr) <= _MAX_FLOAT:
        raise GeneratorError(
            f"StyleGAN2 mapping lr_multiplier must be a finite number of float32 range, got {brief(lr)}"
        )
    for where, settings in (("mapping", mapping), ("synthesis", synthesis)):
        act = settings.get("activation", "lrelu")
        if not isinstance(act, str) or act not in _ACT_GAIN:
            raise GeneratorError(
                f"unsupported StyleGAN2 {where} activation {brief(act)} (supported: {', '.join(_ACT_GAIN)})"
            )
    clamp = synthesis.get("conv_clamp")
    if clamp is not None and (
        isinstance(clamp, bool)
        or not isinstance(clamp, int | float)
        or not 0 < clamp <= _MAX_FLOAT
    ):
        raise GeneratorError(
            f"StyleGAN2 conv_clamp must be None or a positive number of float32 range, got {brief(clamp)}"
        )
    fp16 = synthesis.get("num_fp16_res", 0)
    if isinstance(fp16, int) and fp16 > 64:
        raise GeneratorError(f"StyleGAN2 num_fp16_res must be at most 64, got {brief(fp16)}")


def _state_dict_problems(expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, Any]) -> list[str]:
    """Missing, unexpected and misshapen keys of ``state_dict`` against the expected shapes."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [brief_text(str(k), 80) for k in state_dict if k not in expected]
    not_tensors = [k for k in expected if k in state_dict and not isinstance(state_dict[k], torch.Tensor)]
    misshapen = [
        f"{k} (expected {list(expected[k])}, got {list(state_dict[k].shape)})"
        for k in expected
        if k in state_dict and k not in not_tensors and tuple(state_dict[k].shape) != tuple(expected[k])
    ]
    problems = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("non-tensor", not_tensors),
        ("misshapen", misshapen),
    ):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label} key(s): {shown}")
    return problems


def load_official_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy an official-named state dict into ``module``; missing/unexpected/misshapen keys raise."""
    expected = module.state_dict()
    problems = _state_dict_problems({k: tuple(v.shape) for k, v in expected.items()}, state_dict)
    if problems:
        raise GeneratorError(f"state dict does not fit the {type(module).__name__}: " + "; ".join(problems))
    with torch.no_grad():
        for k, t in expected.items():
            src = state_dict[k]
            if not isinstance(src, torch.Tensor):
                raise GeneratorError(f"state dict entry '{k}' is a {type(src).__name__}, not a tensor")
            if not torch.is_floating_point(src):
                raise GeneratorError(f"state dict entry '{k}' has dtype {src.dtype}, expected a float tensor")
            t.copy_(src.to(torch.float32))


def check_network_fits(family: str, probe: nn.Module, state_dict: Mapping[str, Any]) -> int:
    """Compare the network the init kwargs describe (``probe``, built on the meta device) with the file's
    tensors, then charge its float32 weights to the active load budget; returns its size in bytes.

    Raises GeneratorError naming the missing, unexpected and misshapen tensors and both parameter
    counts, before any memory is allocated for the network.
    """
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    n_expected = sum(math.prod(shape) for shape in expected.values())
    problems = _state_dict_problems(expected, state_dict)
    if problems:
        n_file = sum(t.numel() for t in state_dict.values() if isinstance(t, torch.Tensor))
        raise GeneratorError(
            f"the {family} init kwargs describe a network of {n_expected:,} weights in {len(expected)} "
            f"tensors ({limits.format_bytes(4 * n_expected)} as float32), the file holds {n_file:,} in "
            f"{len(state_dict)}; " + "; ".join(problems)
        )
    nbytes = 4 * n_expected
    budget = limits.current_budget()
    if budget is not None:
        budget.charge(nbytes, f"the {family} network (float32)")
    return nbytes


def build_stylegan2(init_kwargs: dict, state_dict: Mapping[str, torch.Tensor]) -> StyleGAN2Generator:
    """Build the StyleGAN2 generator described by ``G_ema.init_kwargs`` and load its weights.

    ``init_kwargs`` may nest ``synthesis_kwargs`` (stylegan2-ada-pytorch) or flatten them into the top
    level (the SG2 class of the stylegan3 repo). ``state_dict`` uses the official key names. Returns an
    eval-mode float32 module without gradients.
    """
    if not isinstance(init_kwargs, Mapping):
        raise GeneratorError(f"StyleGAN2 init kwargs must be a dict, got {type(init_kwargs).__name__}")
    if not isinstance(state_dict, Mapping):
        raise GeneratorError(f"StyleGAN2 state dict must be a mapping, got {type(state_dict).__name__}")
    dims = {k: _as_int(init_kwargs, k) for k in _TOP_KEYS}
    mapping_kwargs = _mapping_settings(init_kwargs)
    synthesis_kwargs = _synthesis_settings(init_kwargs)
    _check_settings(dims, mapping_kwargs, synthesis_kwargs, len(state_dict))
    # The network the kwargs describe, on the meta device: its shapes, no memory. It must match the
    # file's tensors before anything is allocated (w_dim=2**17 would otherwise build 64 GiB of zeros).
    with torch.device("meta"):
        probe = StyleGAN2Generator(**dims, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)
    check_network_fits("StyleGAN2", probe, state_dict)
    net = StyleGAN2Generator(**dims, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)
    load_official_state_dict(net, state_dict)
    net.eval().requires_grad_(False)
    return net
