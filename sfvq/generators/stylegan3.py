"""Clean-room StyleGAN3 generator (configs T and R) in plain torch.

Written from ``shared/docs/stylegan-pkl-format.md`` (§5, §6.1, §6.2, §6.4); no NVIDIA code is used,
copied or imported. The network is rebuilt from G_ema's constructor kwargs (``init_kwargs``, flattened
synthesis kwargs as the StyleGAN3 repo stores them) and filled from a state dict with the official key
names (``mapping.fc0.weight``, ``synthesis.L3_36_512.up_filter``, ...). Filters are read from the state
dict's buffers, not redesigned. Only the reference maths is implemented: filtered leaky ReLU is
zero-insertion upsampling + FIR via depthwise ``conv2d``, no custom kernels. Float32, except that the
layers a pickle marks for fp16 (those whose output sampling rate is among its ``num_fp16_res`` highest) can
run in a reduced-precision dtype given to :meth:`StyleGAN3Synthesis.forward` (the adapter passes float16 on
CUDA, as the original code does there): their modulated convolution computes in that dtype (styles,
demodulation and input gain in float32), their filtered leaky ReLU reads and writes it but computes in
float32, and conv_clamp applies as in float32.

Entry point: :func:`build_stylegan3`. The returned :class:`StyleGAN3Generator` has submodules
``mapping`` and ``synthesis`` that are callable as ``G.mapping(z, c, truncation_psi, truncation_cutoff)``
and ``G.synthesis(ws, noise_mode)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sfvq.generators import fir as _fir
from sfvq.generators import limits
from sfvq.generators.base import GeneratorError
from sfvq.generators.fir import fir1d, rows_needed, separable_taps, upfirdn2d
from sfvq.generators.limits import brief, brief_text
from sfvq.threads import ThreadPicker

__all__ = [
    "NOISE_MODES",
    "StyleGAN3Config",
    "StyleGAN3Generator",
    "StyleGAN3InputSpec",
    "StyleGAN3LayerSpec",
    "StyleGAN3Mapping",
    "StyleGAN3Synthesis",
    "build_stylegan3",
    "expected_state_shapes",
    "resolve_stylegan3_config",
]

NOISE_MODES = ("const", "random", "none")
"""Accepted ``noise_mode`` values; StyleGAN3 has no noise inputs, so all three give the same image."""

_REQUIRED_KWARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")

# Synthesis-network and synthesis-layer kwargs (flattened into the Generator's kwargs) and defaults.
_SYNTHESIS_DEFAULTS: dict[str, Any] = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_layers": 14,
    "num_critical": 2,
    "first_cutoff": 2.0,
    "first_stopband": 2**2.1,
    "last_stopband_rel": 2**0.3,
    "margin_size": 10,
    "output_scale": 0.25,
    "conv_kernel": 3,
    "filter_size": 6,
    "lrelu_upsampling": 2,
    "use_radial_filters": False,
    "conv_clamp": 256,
}
# Accepted but irrelevant for inference (a training statistic; the per-layer fp16 switch, which
# num_fp16_res decides, see StyleGAN3Config.use_fp16).
_IGNORED_SYNTHESIS_KWARGS = ("magnitude_ema_beta", "use_fp16")
# num_fp16_res (absent: 0, float32 everywhere, the reference results, as for StyleGAN2 here) is capped at
# this in StyleGAN3Config.use_fp16: 2**64 times any sampling rate exceeds any resolution (every layer).
_MAX_FP16_RES = 64

_MAPPING_DEFAULTS: dict[str, Any] = {"num_layers": 2, "lr_multiplier": 0.01, "w_avg_beta": 0.998}
# Keys the Generator passes to the mapping network itself; harmless if repeated in mapping_kwargs.
_MAPPING_PASSED_KEYS = ("z_dim", "c_dim", "w_dim", "num_ws")

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)
# CPU activations with at least this many pixels are convolved channels-last (faster in oneDNN there).
_CHANNELS_LAST_MIN_PIXELS = 64 * 64
SHARED_WEIGHT_BATCHES = True
"""Run a batch's modulated convs in the shared-weight form (see ``_modulated_conv2d``); set False for the
per-sample form (a batch then costs its images one at a time)."""


# ---------------------------------------------------------------------------------------------------
# Configuration: init_kwargs -> resolved per-layer schedule
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleGAN3InputSpec:
    """Fourier-feature input layer: channels, size (width, height), sampling rate, bandwidth."""

    channels: int
    size: tuple[int, int]
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class StyleGAN3LayerSpec:
    """Every resolved value of one synthesis layer (same names as the official layer attributes)."""

    name: str
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    in_sampling_rate: float
    out_sampling_rate: float
    tmp_sampling_rate: float
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    conv_clamp: float | None
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # (x_lo, x_hi, y_lo, y_hi)


@dataclass(frozen=True)
class StyleGAN3Config:
    """The whole generator, resolved from ``init_kwargs``."""

    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    num_ws: int
    mapping_layers: int
    lr_multiplier: float
    w_avg_beta: float
    output_scale: float
    input: StyleGAN3InputSpec
    layers: tuple[StyleGAN3LayerSpec, ...]
    num_fp16_res: int = 0

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Synthesis layer names in execution order, e.g. ``("L0_36_512", ..., "L14_1024_3")``."""
        return tuple(spec.name for spec in self.layers)

    def use_fp16(self, spec: StyleGAN3LayerSpec) -> bool:
        """Whether the pickle marks layer ``spec`` for fp16: its output sampling rate is one of the
        ``num_fp16_res`` highest, i.e. ``out_sampling_rate * 2**num_fp16_res > img_resolution``."""
        return spec.out_sampling_rate * 2 ** min(self.num_fp16_res, _MAX_FP16_RES) > self.img_resolution


_MAX_INT = 2**31 - 1  # largest dimension, channel count or size an init kwarg may give
_MAX_FLOAT = 3.0e38  # a float kwarg is used as a float32 scalar (gains, clamps, scales)


def _as_int(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GeneratorError(f"StyleGAN3 kwarg {name!r} must be an integer, got {brief(value)}")
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        raise GeneratorError(f"StyleGAN3 kwarg {name!r} must be an integer, got {brief(value)}")
    if int(value) != value or not minimum <= int(value) <= _MAX_INT:
        raise GeneratorError(
            f"StyleGAN3 kwarg {name!r} must be an integer in {minimum}..{_MAX_INT}, got {brief(value)}"
        )
    return int(value)


def _as_float(name: str, value: Any, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GeneratorError(f"StyleGAN3 kwarg {name!r} must be a number, got {brief(value)}")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out) or abs(out) > _MAX_FLOAT or (positive and out <= 0):
        sign = "positive " if positive else ""
        raise GeneratorError(
            f"StyleGAN3 kwarg {name!r} must be a finite {sign}number of float32 range, got {brief(value)}"
        )
    return out


def _integral_ratio(name: str, num: float, den: float) -> int:
    ratio = num / den
    if abs(ratio - round(ratio)) > 1e-9:
        raise GeneratorError(
            f"StyleGAN3 schedule gives a non-integer {name} ({num} / {den}); unsupported config"
        )
    return int(round(ratio))


def resolve_stylegan3_config(
    init_kwargs: Mapping[str, Any], max_layers: int | None = None
) -> StyleGAN3Config:
    """Resolve G_ema's ``init_kwargs`` into the full StyleGAN3 schedule (format doc §6.4).

    Absent kwargs take the StyleGAN3 repo's defaults. Unknown kwargs raise :class:`GeneratorError`
    rather than being silently ignored, since they may change the maths. ``max_layers`` bounds the
    synthesis and mapping layer counts (a loader passes the number of tensors in the file, which every
    layer needs some of) before the schedule loops over them.
    """
    if not isinstance(init_kwargs, Mapping):
        raise GeneratorError(f"StyleGAN3 init_kwargs must be a dict, got {type(init_kwargs).__name__}")
    kwargs = dict(init_kwargs)
    missing = [k for k in _REQUIRED_KWARGS if k not in kwargs]
    if missing:
        raise GeneratorError(f"StyleGAN3 init_kwargs lack required keys: {', '.join(missing)}")
    # Tolerate a nested synthesis_kwargs dict (SG2 style) by flattening it.
    nested = kwargs.pop("synthesis_kwargs", None) or {}
    if not isinstance(nested, Mapping):
        raise GeneratorError(f"StyleGAN3 synthesis_kwargs must be a dict, got {brief(nested)}")
    clash = sorted(str(k) for k in set(nested) & set(kwargs))
    if clash:
        raise GeneratorError(
            f"StyleGAN3 kwargs given both flat and in synthesis_kwargs: {brief_text(', '.join(clash))}"
        )
    kwargs.update(nested)
    mapping_kwargs = kwargs.pop("mapping_kwargs", None) or {}
    if not isinstance(mapping_kwargs, Mapping):
        raise GeneratorError(f"StyleGAN3 mapping_kwargs must be a dict, got {brief(mapping_kwargs)}")

    known = {*_REQUIRED_KWARGS, *_SYNTHESIS_DEFAULTS, *_IGNORED_SYNTHESIS_KWARGS, "num_fp16_res"}
    unknown = sorted(str(k) for k in kwargs if k not in known)
    if unknown:
        raise GeneratorError(f"unsupported StyleGAN3 init kwargs: {brief_text(', '.join(unknown))}")
    unknown_m = sorted(
        str(k) for k in mapping_kwargs if k not in _MAPPING_DEFAULTS and k not in _MAPPING_PASSED_KEYS
    )
    if unknown_m:
        raise GeneratorError(f"unsupported StyleGAN3 mapping_kwargs: {brief_text(', '.join(unknown_m))}")

    z_dim = _as_int("z_dim", kwargs["z_dim"])
    c_dim = _as_int("c_dim", kwargs["c_dim"])
    w_dim = _as_int("w_dim", kwargs["w_dim"], minimum=1)
    res = _as_int("img_resolution", kwargs["img_resolution"], minimum=4)
    img_channels = _as_int("img_channels", kwargs["img_channels"], minimum=1)
    if z_dim == 0 and c_dim == 0:
        raise GeneratorError("StyleGAN3 config has z_dim == 0 and c_dim == 0: nothing to map")

    syn = {**_SYNTHESIS_DEFAULTS, **{k: v for k, v in kwargs.items() if k in _SYNTHESIS_DEFAULTS}}
    channel_base = _as_float("channel_base", syn["channel_base"])
    channel_max = _as_float("channel_max", syn["channel_max"])
    num_layers = _as_int("num_layers", syn["num_layers"], minimum=1)
    num_critical = _as_int("num_critical", syn["num_critical"])
    if num_critical >= num_layers:
        raise GeneratorError(f"StyleGAN3 needs num_critical < num_layers, got {num_critical} >= {num_layers}")
    first_cutoff = _as_float("first_cutoff", syn["first_cutoff"])
    first_stopband = _as_float("first_stopband", syn["first_stopband"])
    last_stopband_rel = _as_float("last_stopband_rel", syn["last_stopband_rel"])
    margin_size = _as_int("margin_size", syn["margin_size"])
    output_scale = _as_float("output_scale", syn["output_scale"], positive=False)
    conv_kernel = _as_int("conv_kernel", syn["conv_kernel"], minimum=1)
    filter_size = _as_int("filter_size", syn["filter_size"], minimum=1)
    lrelu_upsampling = _as_int("lrelu_upsampling", syn["lrelu_upsampling"], minimum=1)
    use_radial = bool(syn["use_radial_filters"])
    conv_clamp = None if syn["conv_clamp"] is None else _as_float("conv_clamp", syn["conv_clamp"])
    num_fp16_res = _as_int("num_fp16_res", kwargs.get("num_fp16_res", 0))

    mk = {**_MAPPING_DEFAULTS, **{k: v for k, v in mapping_kwargs.items() if k in _MAPPING_DEFAULTS}}
    mapping_layers = _as_int("mapping_kwargs.num_layers", mk["num_layers"], minimum=1)
    lr_multiplier = _as_float("mapping_kwargs.lr_multiplier", mk["lr_multiplier"])
    w_avg_beta = _as_float("mapping_kwargs.w_avg_beta", mk["w_avg_beta"], positive=False)
    if max_layers is not None:
        most = max(64, max_layers)  # every layer holds tensors: more layers than tensors cannot fit
        for what, count in (("num_layers", num_layers), ("mapping_kwargs.num_layers", mapping_layers)):
            if count > most:
                raise GeneratorError(
                    f"StyleGAN3 kwarg {what!r} asks for {count} layers, more than the {max_layers} tensors "
                    "of the file can fill"
                )
    try:
        cfg = _resolve_schedule(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            res=res,
            img_channels=img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            num_layers=num_layers,
            num_critical=num_critical,
            first_cutoff=first_cutoff,
            first_stopband=first_stopband,
            last_stopband_rel=last_stopband_rel,
            margin_size=margin_size,
            output_scale=output_scale,
            conv_kernel=conv_kernel,
            filter_size=filter_size,
            lrelu_upsampling=lrelu_upsampling,
            use_radial=use_radial,
            conv_clamp=conv_clamp,
            mapping_layers=mapping_layers,
            lr_multiplier=lr_multiplier,
            w_avg_beta=w_avg_beta,
        )
    except (OverflowError, ValueError, ZeroDivisionError) as e:
        raise GeneratorError(
            f"StyleGAN3 kwargs give an impossible layer schedule ({brief_text(str(e), 120)})"
        ) from e
    return dataclasses.replace(cfg, num_fp16_res=num_fp16_res)


def _resolve_schedule(
    *,
    z_dim: int,
    c_dim: int,
    w_dim: int,
    res: int,
    img_channels: int,
    channel_base: float,
    channel_max: float,
    num_layers: int,
    num_critical: int,
    first_cutoff: float,
    first_stopband: float,
    last_stopband_rel: float,
    margin_size: int,
    output_scale: float,
    conv_kernel: int,
    filter_size: int,
    lrelu_upsampling: int,
    use_radial: bool,
    conv_clamp: float | None,
    mapping_layers: int,
    lr_multiplier: float,
    w_avg_beta: float,
) -> StyleGAN3Config:
    """The per-layer schedule of checked settings (format doc §6.4)."""
    # Per-index schedule i = 0..L (index L is ToRGB).
    L = num_layers
    cutoffs, stopbands, rates, half_widths, sizes, channels = [], [], [], [], [], []
    for i in range(L + 1):
        e = min(i / (L - num_critical), 1.0)
        cutoff = first_cutoff * (res / 2 / first_cutoff) ** e
        stopband = first_stopband * (res / 2 * last_stopband_rel / first_stopband) ** e
        rate = 2.0 ** math.ceil(math.log2(min(stopband * 2, res)))
        cutoffs.append(cutoff)
        stopbands.append(stopband)
        rates.append(rate)
        half_widths.append(max(stopband, rate / 2) - cutoff)
        sizes.append(int(rate + margin_size * 2))
        channels.append(int(np.rint(min(channel_base / 2 / cutoff, channel_max))))
    sizes[-2] = sizes[-1] = res
    channels[-1] = img_channels

    input_spec = StyleGAN3InputSpec(
        channels=channels[0], size=(sizes[0], sizes[0]), sampling_rate=rates[0], bandwidth=cutoffs[0]
    )
    layers = []
    for i in range(L + 1):
        prev = max(i - 1, 0)
        is_torgb = i == L
        is_crit = i >= L - num_critical
        in_sr, out_sr = rates[prev], rates[i]
        tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else lrelu_upsampling)
        up = _integral_ratio("up_factor", tmp_sr, in_sr)
        down = _integral_ratio("down_factor", tmp_sr, out_sr)
        up_taps = filter_size * up if up > 1 and not is_torgb else 1
        down_taps = filter_size * down if down > 1 and not is_torgb else 1
        kernel = 1 if is_torgb else conv_kernel
        in_size, out_size = sizes[prev], sizes[i]
        # Padding so that the output has exactly out_size pixels (same along x and y).
        total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        hi = total - lo
        layers.append(
            StyleGAN3LayerSpec(
                name=f"L{i}_{out_size}_{channels[i]}",
                is_torgb=is_torgb,
                is_critically_sampled=is_crit,
                in_channels=channels[prev],
                out_channels=channels[i],
                in_size=(in_size, in_size),
                out_size=(out_size, out_size),
                in_sampling_rate=in_sr,
                out_sampling_rate=out_sr,
                tmp_sampling_rate=tmp_sr,
                in_cutoff=cutoffs[prev],
                out_cutoff=cutoffs[i],
                in_half_width=half_widths[prev],
                out_half_width=half_widths[i],
                conv_kernel=kernel,
                conv_clamp=conv_clamp,
                up_factor=up,
                down_factor=down,
                up_taps=up_taps,
                down_taps=down_taps,
                down_radial=use_radial and not is_crit,
                padding=(lo, hi, lo, hi),
            )
        )
    return StyleGAN3Config(
        z_dim=z_dim,
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=res,
        img_channels=img_channels,
        num_ws=L + 2,
        mapping_layers=mapping_layers,
        lr_multiplier=lr_multiplier,
        w_avg_beta=w_avg_beta,
        output_scale=output_scale,
        input=input_spec,
        layers=tuple(layers),
    )


# ---------------------------------------------------------------------------------------------------
# Maths
# ---------------------------------------------------------------------------------------------------


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x (N, F) divided by the root mean square over features."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def _upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (zero insertion), pad (negative crops), FIR-filter ("valid"), downsample.

    x: (N, C, H, W). f: None (identity), (T,) separable or (T, T) 2-D filter. padding is
    (x_lo, x_hi, y_lo, y_hi). The gain is spread over the two 1-D passes of a separable filter, which
    run polyphase (no zero-inserted image) and strided (no discarded outputs): :mod:`sfvq.generators.fir`.
    """
    return upfirdn2d(x, f, up=up, down=down, padding=padding, gain=gain)


def _normalised_inputs(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The start both modulated-conv forms share: with ``demodulate``, weight (O, I, k, k) and styles (N, I)
    scaled to unit mean square (for the numerics of the demodulation that follows); large CPU activations
    x (N, I, H, W) put in channels-last layout."""
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()  # (O, I, k, k)
        styles = styles * styles.square().mean().rsqrt()  # (N, I)
    kh = weight.shape[2]
    if kh > 1 and x.shape[2] * x.shape[3] >= _CHANNELS_LAST_MIN_PIXELS and x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, weight, styles


def _modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    input_gain: torch.Tensor,
) -> torch.Tensor:
    """Per-sample modulated conv with padding k-1 (output grows by k-1).

    x: (N, I, H, W), weight: (O, I, k, k), styles: (N, I) -> (N, O, H+k-1, W+k-1).
    One sample (or :data:`SHARED_WEIGHT_BATCHES` off): styles and demodulation scale the weight, one
    ordinary conv per sample. A batch: styles scale the input, ONE conv with the shared weight, the
    demodulation coefficients scale the output (the same maths). Both are far faster than a grouped conv
    on the CPU; large CPU activations run channels-last.
    """
    n, i_ch, h, w = x.shape
    o_ch, _, kh, kw = weight.shape
    x, weight, styles = _normalised_inputs(x, weight, styles, demodulate)
    pad = (kh - 1, kw - 1)
    if SHARED_WEIGHT_BATCHES and n > 1:
        y = F.conv2d(x * styles.reshape(n, i_ch, 1, 1), weight * input_gain, padding=pad)  # (N, O, H', W')
        if demodulate:
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # (N, O)
            y = y.mul_(dcoefs.reshape(n, o_ch, 1, 1))  # a fresh conv output: in place is safe for autograd
        return y
    outs = []
    for k in range(n):
        wts = weight * styles[k].reshape(1, i_ch, 1, 1)  # (O, I, k, k)
        if demodulate:
            wts = wts * (wts.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        outs.append(F.conv2d(x[k : k + 1], wts * input_gain, padding=pad))  # (1, O, H+k-1, W+k-1)
    return outs[0] if n == 1 else torch.cat(outs)


def _modulated_conv2d_reduced(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    input_gain: torch.Tensor,
) -> torch.Tensor:
    """:func:`_modulated_conv2d` of x (N, I, H, W) in its reduced dtype (float16, bfloat16) without overflow.

    weight (O, I, k, k) and styles (N, I) are float32, and so is every coefficient (normalisation,
    demodulation, input gain); only the convolution runs in x's dtype -> (N, O, H+k-1, W+k-1) in it.
    One sample: the modulated, demodulated weight (rows of norm ``input_gain``) is cast and convolved, as
    the original's fp16 path does. A batch (shared-weight form): styles and weight are first scaled to a
    largest magnitude of 1 and 1/sqrt(I k k), so that the conv of inputs within conv_clamp stays far below
    the float16 maximum; the output is then scaled back by float32 per-(sample, channel) coefficients that
    undo those scales and hold the demodulation and input gain.
    """
    n, i_ch, h, w = x.shape
    o_ch, _, kh, kw = weight.shape
    dtype = x.dtype
    x, weight, styles = _normalised_inputs(x, weight, styles, demodulate)
    pad = (kh - 1, kw - 1)
    if SHARED_WEIGHT_BATCHES and n > 1:
        s_peak = styles.abs().amax(dim=1, keepdim=True)  # (N, 1)
        s_peak = torch.where(s_peak > 0, s_peak, torch.ones_like(s_peak))  # an all-zero row stays zero
        w_peak = weight.abs().amax(dim=[1, 2, 3])  # (O,)
        w_peak = torch.where(w_peak > 0, w_peak, torch.ones_like(w_peak))
        w_scale = 1 / math.sqrt(i_ch * kh * kw) / w_peak  # (O,)
        xs = x * (styles / s_peak).to(dtype).reshape(n, i_ch, 1, 1)  # (N, I, H, W), |styles| <= 1
        y = F.conv2d(xs, (weight * w_scale.reshape(o_ch, 1, 1, 1)).to(dtype), padding=pad)  # (N, O, H', W')
        coefs = s_peak / w_scale.reshape(1, o_ch) * input_gain  # (N, O): undoes both scales
        if demodulate:
            coefs = coefs * (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
        return y.mul_(coefs.to(dtype).reshape(n, o_ch, 1, 1))
    outs = []
    for k in range(n):
        wts = weight * styles[k].reshape(1, i_ch, 1, 1)  # (O, I, k, k) float32
        if demodulate:
            wts = wts * (wts.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        outs.append(F.conv2d(x[k : k + 1], (wts * input_gain).to(dtype), padding=pad))  # (1, O, H', W')
    return outs[0] if n == 1 else torch.cat(outs)


def _filtered_lrelu(
    x: torch.Tensor,
    bias: torch.Tensor,
    up_filter: torch.Tensor | None,
    down_filter: torch.Tensor | None,
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    """Bias, upsample x up (gain up²), leaky ReLU (slope, gain), clamp, downsample x down. x: (N, C, H, W).

    Without gradients the whole chain runs chunk by chunk of output rows: only the rows of the
    up-sampled image that a chunk needs exist at any time (never the whole up² times larger image).
    The maths is float32 for a reduced-precision x (float64 stays float64); the result comes back in x's
    dtype (a reduced-precision layer reads and writes float16 or bfloat16, as the original's fp16 kernel
    does).
    """
    out_dtype = x.dtype
    compute = torch.promote_types(x.dtype, torch.float32)  # float16, bfloat16 -> float32
    ones = torch.ones(1)
    up_taps = separable_taps(up_filter if up_filter is not None else ones)
    if (torch.is_grad_enabled() and x.requires_grad) or up_taps is None:
        x = x.to(compute) + bias.reshape(1, -1, 1, 1)
        x = _upfirdn2d(x, up_filter, up=up, padding=padding, gain=float(up * up))
        x = _lrelu_gain_clamp(x, slope, gain, clamp)
        return _upfirdn2d(x, down_filter, down=down).to(out_dtype)
    fd = down_filter if down_filter is not None else ones
    down_taps = separable_taps(fd)
    n, c, h, w = x.shape
    x_lo, x_hi, y_lo, y_hi = padding
    tu_h, tu_w = ([t * up for t in taps] for taps in up_taps)  # gain up per axis
    th_mid = h * up + y_lo + y_hi - len(tu_h) + 1  # rows of the up-sampled image
    tw_mid = w * up + x_lo + x_hi - len(tu_w) + 1
    td_h = fd.shape[0]
    h_out = (th_mid - td_h) // down + 1
    w_out = (tw_mid - (fd.shape[-1] if fd.ndim == 2 else td_h)) // down + 1
    x_in = x
    x = x.to(compute) + bias.reshape(1, -1, 1, 1)  # (N, C, H, W) float32 (or float64)
    # x's layout (channels-last for large images) and the output dtype
    out = _fir._empty(x if x.dtype == out_dtype else x_in, (n, c, h_out, w_out))
    # A chunk: one image's output rows behind about CHUNK_BYTES of up-sampled rows (cache-sized; measured
    # faster than fewer, larger chunks despite the rows recomputed at chunk edges), image by image.
    per_row = c * tw_mid * x.element_size() * down  # bytes of one image's up-sampled rows per output row
    rows = max(1, _fir.CHUNK_BYTES // max(1, per_row))
    chunks = [(k, a) for k in range(n) for a in range(0, h_out, rows)]
    with ThreadPicker("sfvq.fir") as picker:  # small ops a chunk: see sfvq.threads
        for k, a in chunks:
            b = min(a + rows, h_out)
            m0, m1, _ = rows_needed(a, b, th_mid, td_h, 1, down, (0, 0))  # up-sampled rows for out[a:b]
            i0, i1, pad_h = rows_needed(m0, m1, h, len(tu_h), up, 1, (y_lo, y_hi))  # input rows for those
            with picker.step():
                if i1 <= i0:
                    mid = x.new_zeros(1, c, m1 - m0, tw_mid)
                else:
                    mid = fir1d(x[k : k + 1, :, i0:i1], tu_w, -1, up=up, pad=(x_lo, x_hi))  # (1, C, rows, W')
                    mid = fir1d(mid, tu_h, -2, up=up, pad=pad_h)  # (1, C, m1 - m0, tw_mid)
                mid = _lrelu_gain_clamp(mid, slope, gain, clamp)
                if down_taps is None:  # a 2-D (radial) down filter: depthwise convolution of these rows
                    kernel = fd.flip([0, 1]).to(mid.dtype)[None, None].expand(c, 1, *fd.shape)  # (C, 1, T, T)
                    out[k : k + 1, :, a:b] = F.conv2d(mid, kernel, stride=down, groups=c)
                else:
                    mid = fir1d(mid, down_taps[1], -1, down=down)  # (1, C, m1 - m0, w_out)
                    if out.dtype == mid.dtype:
                        fir1d(mid, down_taps[0], -2, down=down, out=out[k : k + 1, :, a:b])
                    else:  # sums in float32, rounded once into the reduced-precision output
                        out[k : k + 1, :, a:b] = fir1d(mid, down_taps[0], -2, down=down)
    return out


def _lrelu_gain_clamp(x: torch.Tensor, slope: float, gain: float, clamp: float | None) -> torch.Tensor:
    """``clamp(lrelu_slope(x) * gain)``, in place unless x needs a gradient."""
    inplace = not (torch.is_grad_enabled() and x.requires_grad)
    if slope != 1:
        x = F.leaky_relu_(x, negative_slope=slope) if inplace else F.leaky_relu(x, negative_slope=slope)
    if gain != 1:
        x = x.mul_(gain) if inplace else x * gain
    if clamp is not None:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------------------------------
# Modules (parameter and buffer names follow the official state_dict keys)
# ---------------------------------------------------------------------------------------------------


class _FullyConnected(nn.Module):
    """Equalised-learning-rate linear layer: y = act(x · (W·g_w)ᵀ + b·g_b)."""

    def __init__(
        self, in_features: int, out_features: int, activation: str = "linear", lr_multiplier: float = 1.0
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features) if in_features else 0.0
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in_features) -> (N, out_features)."""
        w = self.weight * self.weight_gain  # (O, I)
        b = self.bias * self.bias_gain  # (O,)
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        y = x.matmul(w.t()) + b.unsqueeze(0)
        return F.leaky_relu(y, negative_slope=_LRELU_SLOPE) * _LRELU_GAIN


class StyleGAN3Mapping(nn.Module):
    """z (N, z_dim), c (N, c_dim) -> ws (N, num_ws, w_dim), with truncation towards ``w_avg``."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.num_ws
        self.num_layers = cfg.mapping_layers
        self.w_avg_beta = cfg.w_avg_beta  # training only
        if cfg.c_dim > 0:
            self.embed = _FullyConnected(cfg.c_dim, cfg.w_dim)
        in_features = cfg.z_dim + (cfg.w_dim if cfg.c_dim > 0 else 0)
        for idx in range(cfg.mapping_layers):
            fc = _FullyConnected(in_features, cfg.w_dim, activation="lrelu", lr_multiplier=cfg.lr_multiplier)
            setattr(self, f"fc{idx}", fc)
            in_features = cfg.w_dim
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Map latents to ws; psi != 1 lerps the first ``truncation_cutoff`` ws (all if None) to w_avg."""
        device = self.w_avg.device
        z = torch.as_tensor(z, dtype=torch.float32, device=device)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape (N, {self.z_dim}), got {tuple(z.shape)}")
        n = z.shape[0]
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this generator is conditional: pass c of shape (N, {self.c_dim})")
            c = torch.as_tensor(c, dtype=torch.float32, device=device)
            if c.shape != (n, self.c_dim):
                raise ValueError(f"expected c of shape ({n}, {self.c_dim}), got {tuple(c.shape)}")
        elif c is not None and torch.as_tensor(c).numel() != 0:
            shape = tuple(torch.as_tensor(c).shape)
            raise ValueError(f"this generator is unconditional (c_dim=0), got c of shape {shape}")
        if truncation_cutoff is not None and (
            isinstance(truncation_cutoff, bool)
            or int(truncation_cutoff) != truncation_cutoff
            or truncation_cutoff < 0
        ):
            raise ValueError(f"truncation_cutoff must be None or an integer >= 0, got {truncation_cutoff!r}")

        parts = []
        if self.z_dim > 0:
            parts.append(_normalize_2nd_moment(z))  # (N, Z)
        if self.c_dim > 0:
            parts.append(_normalize_2nd_moment(self.embed(c)))  # (N, W)
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (N, Z + W?)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # (N, W)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (N, num_ws, W)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], float(truncation_psi))
        return ws


class _SynthesisInput(nn.Module):
    """Fourier features, rotated/translated by an affine of w0, then a linear channel mix."""

    def __init__(self, w_dim: int, spec: StyleGAN3InputSpec):
        super().__init__()
        self.w_dim = w_dim
        self.channels = spec.channels
        self.size = spec.size
        self.sampling_rate = spec.sampling_rate
        self.bandwidth = spec.bandwidth
        self.weight = nn.Parameter(torch.zeros(spec.channels, spec.channels))
        self.affine = _FullyConnected(w_dim, 4)
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", torch.zeros(spec.channels, 2))
        self.register_buffer("phases", torch.zeros(spec.channels))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w (N, W) -> features (N, C0, H, W)."""
        return self.forward_styles(self.affine(w))

    def forward_styles(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from the style code ``t = affine(w)`` (N, 4) (StyleSpace) -> (N, C0, H, W)."""
        dev = t.device
        n = t.shape[0]
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # (cos, sin, tx, ty)
        m_r = torch.eye(3, device=dev).repeat(n, 1, 1)  # (N, 3, 3) rotation
        m_r[:, 0, 0] = t[:, 0]
        m_r[:, 0, 1] = -t[:, 1]
        m_r[:, 1, 0] = t[:, 1]
        m_r[:, 1, 1] = t[:, 0]
        m_t = torch.eye(3, device=dev).repeat(n, 1, 1)  # (N, 3, 3) translation
        m_t[:, 0, 2] = -t[:, 2]
        m_t[:, 1, 2] = -t[:, 3]
        transform = m_r @ m_t @ self.transform.unsqueeze(0)  # (N, 3, 3)

        freqs = self.freqs.unsqueeze(0)  # (1, C, 2)
        phases = self.phases.unsqueeze(0) + (freqs @ transform[:, :2, 2:]).squeeze(2)  # (N, C)
        freqs = freqs @ transform[:, :2, :2]  # (N, C, 2)
        amp = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(
            0, 1
        )

        width, height = self.size
        xs = (
            torch.arange(width, device=dev, dtype=torch.float32) + 0.5 - width / 2
        ) / self.sampling_rate
        ys = (
            torch.arange(height, device=dev, dtype=torch.float32) + 0.5 - height / 2
        ) / self.sampling_rate
        arg = (
            xs.view(1, 1, width, 1) * freqs[:, None, None, :, 0]
            + ys.view(1, height, 1, 1) * freqs[:, None, None, :, 1]
        )  # (N, H, W, C)
        arg = arg + phases[:, None, None, :]
        feat = torch.sin(arg * (2 * math.pi)) * amp[:, None, None, :]  # (N, H, W, C)
        feat = feat @ (self.weight / math.sqrt(self.channels)).t()  # (N, H, W, C)
        return feat.permute(0, 3, 1, 2)  # (N, C, H, W)


class _SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU (or the final ToRGB layer)."""

    def __init__(self, w_dim: int, spec: StyleGAN3LayerSpec, use_fp16: bool = False):
        super().__init__()
        self.spec = spec
        self.use_fp16 = use_fp16  # the pickle's flag: may run in reduced precision (see the synthesis)
        self.affine = _FullyConnected(w_dim, spec.in_channels)
        k = spec.conv_kernel
        self.weight = nn.Parameter(torch.zeros(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", torch.zeros(spec.up_taps) if spec.up_taps > 1 else None)
        if spec.down_taps > 1:
            shape = (spec.down_taps, spec.down_taps) if spec.down_radial else (spec.down_taps,)
            self.register_buffer("down_filter", torch.zeros(shape))
        else:
            self.register_buffer("down_filter", None)

    def forward(self, x: torch.Tensor, w: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x (N, I, in_h, in_w), w (N, W) -> (N, O, out_h, out_w), computed and returned in ``dtype``
        (float32, or a reduced precision for the reduced-precision maths of :func:`_modulated_conv2d_reduced`
        and :func:`_filtered_lrelu`)."""
        return self.forward_styles(x, self.affine(w), dtype)

    def forward_styles(
        self, x: torch.Tensor, styles: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """:meth:`forward` from the layer's style code ``affine(w)`` (N, I) (StyleSpace), float32."""
        spec = self.spec
        if spec.is_torgb:
            styles = styles * (1 / math.sqrt(spec.in_channels * spec.conv_kernel**2))
        input_gain = self.magnitude_ema.rsqrt()
        conv = _modulated_conv2d
        if dtype != torch.float32:
            conv, x = _modulated_conv2d_reduced, x.to(dtype)
        elif x.dtype in (torch.float16, torch.bfloat16):  # a float32 layer after reduced-precision ones
            x = x.to(torch.float32)
        x = conv(x, self.weight, styles, demodulate=not spec.is_torgb, input_gain=input_gain)
        x = _filtered_lrelu(
            x,
            self.bias,
            self.up_filter,
            self.down_filter,
            up=spec.up_factor,
            down=spec.down_factor,
            padding=spec.padding,
            gain=1.0 if spec.is_torgb else _LRELU_GAIN,
            slope=1.0 if spec.is_torgb else _LRELU_SLOPE,
            clamp=spec.conv_clamp,
        )
        expected = (spec.out_size[1], spec.out_size[0])
        if tuple(x.shape[2:]) != expected:  # a schedule bug, never user input
            raise RuntimeError(f"layer {spec.name}: output size {tuple(x.shape[2:])}, expected {expected}")
        return x


class StyleGAN3Synthesis(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, img_channels, R, R), raw (not clamped)."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.w_dim, self.num_ws = cfg.w_dim, cfg.num_ws
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.output_scale = cfg.output_scale
        self.layer_names = list(cfg.layer_names)
        self.input = _SynthesisInput(cfg.w_dim, cfg.input)
        for spec in cfg.layers:
            setattr(self, spec.name, _SynthesisLayer(cfg.w_dim, spec, use_fp16=cfg.use_fp16(spec)))

    def layers(self) -> list[_SynthesisLayer]:
        """The synthesis layers in execution order (after the input)."""
        return [getattr(self, name) for name in self.layer_names]

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", fp16_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Run all layers; ``noise_mode`` is validated but has no effect (StyleGAN3 has no noise).

        ``fp16_dtype``: the dtype of the layers flagged ``use_fp16`` (None: float32 everywhere); the
        input layer and the output are float32 always.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = torch.as_tensor(ws, dtype=torch.float32, device=self.input.weight.device)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        w_list = ws.unbind(dim=1)  # num_ws x (N, W)
        x = self.input(w_list[0])  # (N, C0, H0, W0)
        for layer, w in zip(self.layers(), w_list[1:], strict=True):
            x = layer(x, w, self._dtype(layer, fp16_dtype))
        return x.to(torch.float32) * self.output_scale  # (N, img_channels, R, R)

    @staticmethod
    def _dtype(layer: _SynthesisLayer, fp16_dtype: torch.dtype | None) -> torch.dtype:
        return fp16_dtype if layer.use_fp16 and fp16_dtype is not None else torch.float32

    def style_layers(self) -> list[tuple[str, int, int]]:
        """StyleSpace layout: ``(name, ws_index, channels)`` of every affine, in execution order: ``input``
        (4: rotation and translation, before normalisation) reads ws[0], layer i reads ws[i + 1]."""
        return [("input", 0, 4)] + [
            (name, i + 1, getattr(self, name).affine.out_features) for i, name in enumerate(self.layer_names)
        ]

    def styles(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (N, num_ws, W) -> the style codes S (N, sum of channels): every affine of its ws entry."""
        ws = torch.as_tensor(ws, dtype=torch.float32, device=self.input.weight.device)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        modules = [self.input, *(getattr(self, name) for name in self.layer_names)]
        return torch.cat([m.affine(ws[:, i]) for i, m in enumerate(modules)], dim=1)  # (N, S)

    def forward_styles(
        self, styles: torch.Tensor, noise_mode: str = "const", fp16_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """:meth:`forward` from style codes S (N, sum of channels) laid out as :meth:`styles` gives them:
        exactly the image of ws where ``styles = self.styles(ws)`` (``fp16_dtype`` as there)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        dims = [ch for _, _, ch in self.style_layers()]
        styles = torch.as_tensor(styles, dtype=torch.float32, device=self.input.weight.device)
        if styles.ndim != 2 or styles.shape[1] != sum(dims):
            raise ValueError(f"style codes must have shape (N, {sum(dims)}), got {tuple(styles.shape)}")
        chunks = styles.split(dims, dim=1)  # (N, I) per style layer
        x = self.input.forward_styles(chunks[0])  # (N, C0, H0, W0)
        for layer, s in zip(self.layers(), chunks[1:], strict=True):
            x = layer.forward_styles(x, s, self._dtype(layer, fp16_dtype))
        return x.to(torch.float32) * self.output_scale  # (N, img_channels, R, R)


class StyleGAN3Generator(nn.Module):
    """StyleGAN3 generator: ``mapping(z, c, psi, cutoff)`` and ``synthesis(ws, noise_mode)``."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.config = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.num_ws = cfg.num_ws
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.mapping = StyleGAN3Mapping(cfg)
        self.synthesis = StyleGAN3Synthesis(cfg)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """z (N, z_dim) -> images (N, img_channels, R, R)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


# ---------------------------------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------------------------------


def _name_list(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def expected_state_shapes(cfg: StyleGAN3Config) -> dict[str, tuple[int, ...]]:
    """Every tensor of the state dict ``cfg`` describes, with its shape: what ``StyleGAN3Generator(cfg)``
    holds, computed from the config alone (nothing is built or allocated)."""
    w = cfg.w_dim
    shapes: dict[str, tuple[int, ...]] = {"mapping.w_avg": (w,)}
    if cfg.c_dim > 0:
        shapes.update({"mapping.embed.weight": (w, cfg.c_dim), "mapping.embed.bias": (w,)})
    fan_in = cfg.z_dim + (w if cfg.c_dim > 0 else 0)
    for i in range(cfg.mapping_layers):
        shapes.update({f"mapping.fc{i}.weight": (w, fan_in), f"mapping.fc{i}.bias": (w,)})
        fan_in = w
    c0 = cfg.input.channels
    shapes.update(
        {
            "synthesis.input.weight": (c0, c0),
            "synthesis.input.transform": (3, 3),
            "synthesis.input.freqs": (c0, 2),
            "synthesis.input.phases": (c0,),
            "synthesis.input.affine.weight": (4, w),
            "synthesis.input.affine.bias": (4,),
        }
    )
    for spec in cfg.layers:
        p, k = f"synthesis.{spec.name}", spec.conv_kernel
        shapes[f"{p}.weight"] = (spec.out_channels, spec.in_channels, k, k)
        shapes[f"{p}.bias"] = (spec.out_channels,)
        shapes[f"{p}.magnitude_ema"] = ()
        if spec.up_taps > 1:
            shapes[f"{p}.up_filter"] = (spec.up_taps,)
        if spec.down_taps > 1:
            shapes[f"{p}.down_filter"] = (spec.down_taps,) * (2 if spec.down_radial else 1)
        shapes[f"{p}.affine.weight"] = (spec.in_channels, w)
        shapes[f"{p}.affine.bias"] = (spec.in_channels,)
    return shapes


def _check_state_dict(
    cfg: StyleGAN3Config, expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, torch.Tensor]
) -> None:
    """Raise GeneratorError naming every missing, unexpected, misshapen or unusable tensor."""
    if not isinstance(state_dict, Mapping):
        raise GeneratorError(f"StyleGAN3 state_dict must be a mapping, got {type(state_dict).__name__}")
    bad_type = sorted(str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if bad_type:
        raise GeneratorError(f"StyleGAN3 state dict entries are not tensors: {_name_list(bad_type)}")
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(str(k) for k in state_dict if k not in expected)
    misshapen = sorted(
        f"{k} (expected {list(expected[k])}, got {list(v.shape)})"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_name_list(unexpected)}")
    if misshapen:
        problems.append(f"misshapen tensors: {_name_list(misshapen)}")
    if problems:
        n_expected = sum(math.prod(shape) for shape in expected.values())
        n_file = sum(v.numel() for v in state_dict.values())
        raise GeneratorError(
            "StyleGAN3 weights do not fit the config "
            f"(z_dim={cfg.z_dim}, c_dim={cfg.c_dim}, w_dim={cfg.w_dim}, img_resolution={cfg.img_resolution}, "
            f"layers {cfg.layer_names[0]}..{cfg.layer_names[-1]}: {n_expected:,} weights in {len(expected)} "
            f"tensors; the file holds {n_file:,} in {len(state_dict)}): "
            + brief_text("; ".join(problems), 2000)
        )
    not_float = sorted(k for k, v in state_dict.items() if not v.is_floating_point())
    if not_float:
        raise GeneratorError(f"StyleGAN3 state dict has non-float tensors: {_name_list(not_float)}")
    non_finite = sorted(k for k, v in state_dict.items() if not bool(torch.isfinite(v).all()))
    if non_finite:
        raise GeneratorError(f"StyleGAN3 state dict has NaN/inf values in: {_name_list(non_finite)}")
    bad_ema = sorted(k for k, v in state_dict.items() if k.endswith(".magnitude_ema") and float(v) <= 0)
    if bad_ema:
        raise GeneratorError(f"StyleGAN3 magnitude_ema must be positive: {_name_list(bad_ema)}")


def _charge_network(expected: Mapping[str, tuple[int, ...]]) -> None:
    """Charge the float32 size of the network (its ``expected`` shapes) to the active load budget."""
    budget = limits.current_budget()
    if budget is not None:
        numel = sum(math.prod(shape) for shape in expected.values())
        budget.charge(4 * numel, "the StyleGAN3 network (float32)")


def build_stylegan3(init_kwargs: dict, state_dict: Mapping[str, torch.Tensor]) -> StyleGAN3Generator:
    """Build a StyleGAN3 generator from G_ema's ``init_kwargs`` and fill it from ``state_dict``.

    The result is on the CPU, fp32, in eval mode with frozen parameters. Raises
    :class:`GeneratorError` for unsupported kwargs or a state dict that does not fit them.
    """
    if not isinstance(state_dict, Mapping):
        raise GeneratorError(f"StyleGAN3 state_dict must be a mapping, got {type(state_dict).__name__}")
    cfg = resolve_stylegan3_config(init_kwargs, max_layers=len(state_dict))
    # The shapes the kwargs describe, computed without building anything: the file's tensors must fit
    # them before the network is allocated, and its float32 size is charged to the load budget first.
    expected = expected_state_shapes(cfg)
    _check_state_dict(cfg, expected, state_dict)
    _charge_network(expected)
    model = StyleGAN3Generator(cfg)
    with torch.no_grad():
        model.load_state_dict(
            {k: v.detach().to("cpu", torch.float32) for k, v in state_dict.items()}, strict=True
        )
    return model.eval().requires_grad_(False)
