"""sfvq's StyleGAN2 / StyleGAN3 networks behind the :class:`~sfvq.generators.base.Generator` protocol.

:class:`StyleGANGenerator` wraps a clean-room network (:mod:`sfvq.generators.stylegan2`,
:mod:`sfvq.generators.stylegan3`) built from ``G_ema``'s constructor kwargs and an official-named state
dict (:func:`stylegan_from_state_dict`), whatever file they came from: a network pickle
(:mod:`sfvq.generators.stylegan_pkl`), an sfvq export (:mod:`sfvq.generators.exported`) or a fixture
directory (:func:`stylegan_from_fixture_dir`).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sfvq.generators.base import GeneratorBase, GeneratorError

__all__ = [
    "FAMILIES",
    "StyleGANGenerator",
    "build_stylegan_network",
    "stylegan_from_fixture_dir",
    "stylegan_from_state_dict",
]

FAMILIES = ("stylegan2", "stylegan3")
# Style-affine weights by name: StyleGAN2 b{res}.{conv0,conv1,torgb}, StyleGAN3 input / L{i}_*.
_SG2_AFFINE_RE = re.compile(r"^synthesis\.b(\d+)\.(conv0|conv1|torgb)\.affine\.weight$")
_SG3_AFFINE_RE = re.compile(r"^synthesis\.(input|L(\d+)_\w+)\.affine\.weight$")


def _check_cutoff(truncation_cutoff: Any) -> None:
    """The truncation cutoffs ``mapping`` and ``differentiable_mapping`` accept: None or an int >= 0."""
    if truncation_cutoff is not None and (
        isinstance(truncation_cutoff, bool) or not isinstance(truncation_cutoff, int) or truncation_cutoff < 0
    ):
        raise ValueError(f"truncation_cutoff must be None or a non-negative int, got {truncation_cutoff!r}")


class StyleGANGenerator(GeneratorBase):
    """A StyleGAN2/StyleGAN3 generator behind sfvq's :class:`~sfvq.generators.base.Generator` protocol.

    Spaces ``z`` (N, z_dim), ``w`` and ``w+`` (both as ws (N, num_ws, w_dim)); the one feature layer is
    ``"w"``: :meth:`features` returns ``mapping(z, c)`` and :meth:`synthesis_from` equals
    :meth:`synthesis`. Every call is batched, runs under ``torch.no_grad`` in float32 on the network's
    device, and returns raw (unclamped) images (N, C, H, W).

    Conditional models take ``c`` as a one-hot/soft label tensor (N, c_dim), or class indices: an int
    (same class for the whole batch), a sequence of N ints, or an integer tensor (N,).

    SeFa reads the style affines (:meth:`style_weights`); LatentCLR reads the activations after a
    StyleGAN2 block or a StyleGAN3 layer, differentiably in one w (:meth:`feature_fn`).

    Previews (:meth:`synthesis_at`): a StyleGAN2 stops after the block of the asked resolution and returns
    its skip image, exact and at a fraction of the cost; a StyleGAN3 (no skip images) renders at full size
    and downsamples. Precision: the StyleGAN2 blocks and StyleGAN3 layers the pickle marks for fp16 run in
    ``fp16_dtype``; None (the default) means float16 on CUDA, as the original code runs them, and float32
    elsewhere; set it to a dtype to override (e.g. ``torch.bfloat16`` on the CPU, ``torch.float32`` on
    CUDA). Gradient paths (:meth:`differentiable_synthesis`, :meth:`feature_fn`) stay float32.
    """

    spaces: tuple[str, ...] = ("z", "w", "w+", "s")
    layers: tuple[str, ...] = ("w",)

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        family: str,
        training_set_kwargs: Mapping[str, Any] | None = None,
        max_batch: int = 32,
    ) -> None:
        if family not in FAMILIES:
            raise GeneratorError(f"unknown StyleGAN family {family!r} (expected one of {FAMILIES})")
        self.network = network.eval().requires_grad_(False)
        self.name = name
        self.family = family
        self.training_set_kwargs = dict(training_set_kwargs) if training_set_kwargs else None
        self.max_batch = max(1, int(max_batch))
        self.fp16_dtype: torch.dtype | None = None  # None: float16 on CUDA, float32 elsewhere
        dims = {}
        for attr in ("z_dim", "c_dim", "w_dim", "num_ws", "img_resolution", "img_channels"):
            val = getattr(network, attr, None)
            if not isinstance(val, int):
                raise GeneratorError(f"{family} network lacks an integer '{attr}' attribute")
            dims[attr] = val
        self.z_dim: int = dims["z_dim"]
        self.c_dim: int = dims["c_dim"]
        self.w_dim: int = dims["w_dim"]
        self.num_ws: int = dims["num_ws"]
        self.img_resolution: int = dims["img_resolution"]
        self.img_channels: int = dims["img_channels"]

    def __repr__(self) -> str:
        return (
            f"StyleGANGenerator({self.family}, name={self.name!r}, z_dim={self.z_dim}, c_dim={self.c_dim}, "
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, {self.img_resolution}px)"
        )

    @property
    def device(self) -> torch.device:
        """Device of the network's weights."""
        for t in self.network.parameters():
            return t.device
        for t in self.network.buffers():
            return t.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> StyleGANGenerator:
        """Move the network to ``device`` (in place) and return self."""
        self.network.to(torch.device(device))
        return self

    # -- input checking ------------------------------------------------------------------------
    def _as_tensor(self, x: Any, what: str) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{what} must be a tensor, got {type(x).__name__}")
        return x.to(self.device)

    def _prepare_z(self, z: Any) -> torch.Tensor:
        z = self._as_tensor(z, "z")
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        return z.to(torch.float32)

    def _one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        bad = labels[(labels < 0) | (labels >= self.c_dim)]
        if bad.numel():
            raise ValueError(
                f"class index {int(bad[0])} is out of range for this conditional model "
                f"(c_dim={self.c_dim}: valid classes 0..{self.c_dim - 1})"
            )
        return torch.nn.functional.one_hot(labels.long(), self.c_dim).to(torch.float32)  # (N, c_dim)

    def make_c(self, c: Any, n: int) -> torch.Tensor:
        """Normalise a label argument to a float tensor (n, c_dim) on the generator's device."""
        if self.c_dim == 0:
            if c is None or (isinstance(c, torch.Tensor | np.ndarray) and int(np.prod(c.shape)) == 0):
                return torch.zeros(n, 0, device=self.device)  # (N, 0)
            raise ValueError(
                f"this model is unconditional (c_dim=0) and takes no class/label, got {_describe(c)}"
            )
        if c is None:
            raise ValueError(
                f"this model is conditional (c_dim={self.c_dim}): pass a class index in 0..{self.c_dim - 1} "
                f"or one-hot labels c of shape (N, {self.c_dim})"
            )
        if isinstance(c, bool):
            raise ValueError(f"class must be an int in 0..{self.c_dim - 1}, got {c!r}")
        if isinstance(c, int | np.integer):
            labels = torch.full((n,), int(c), dtype=torch.long)
            return self._one_hot(labels).to(self.device)
        if isinstance(c, Sequence) and not isinstance(c, str):
            if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in c):
                raise ValueError("a class list must hold ints")
            c = torch.tensor([int(v) for v in c], dtype=torch.long)
        t = self._as_tensor(c, "c")
        if not torch.is_floating_point(t):
            if t.ndim == 0:
                t = t.expand(n)
            if t.ndim != 1 or t.shape[0] != n:
                raise ValueError(f"class indices must have shape ({n},), got {tuple(t.shape)}")
            return self._one_hot(t)
        if t.ndim == 1 and t.shape[0] == self.c_dim:
            t = t.unsqueeze(0).expand(n, -1)
        if t.ndim != 2 or t.shape != (n, self.c_dim):
            raise ValueError(f"c must have shape ({n}, {self.c_dim}), got {tuple(t.shape)}")
        return t.to(torch.float32)

    def _prepare_ws(self, ws: Any) -> torch.Tensor:
        ws = self._as_tensor(ws, "ws").to(torch.float32)
        if ws.ndim == 2 and ws.shape[1] == self.w_dim:
            ws = ws.unsqueeze(1)  # (N, 1, W)
        if ws.ndim == 3 and ws.shape[1] == 1 and ws.shape[2] == self.w_dim:
            ws = ws.expand(-1, self.num_ws, -1)  # (N, num_ws, W)
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(
                f"ws must have shape (N, {self.num_ws}, {self.w_dim}) (or (N, {self.w_dim}) for one w), "
                f"got {tuple(ws.shape)}"
            )
        return ws

    # -- the Generator protocol ----------------------------------------------------------------
    @torch.no_grad()
    def mapping(
        self,
        z: torch.Tensor,
        c: Any = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim) [+ labels] -> ws (N, num_ws, w_dim), truncated towards the mean w if psi != 1."""
        z = self._prepare_z(z)
        c_t = self.make_c(c, z.shape[0])
        _check_cutoff(truncation_cutoff)
        psi = float(truncation_psi)
        out = [
            self.network.mapping(z[i : i + 4096], c_t[i : i + 4096], psi, truncation_cutoff)
            for i in range(0, z.shape[0], 4096)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.num_ws, self.w_dim, device=self.device)

    @torch.no_grad()
    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> images (N, C, H, W), raw output in about [-1, 1]."""
        return self.synthesis_at(ws, None, noise_mode)

    def half_dtype(self) -> torch.dtype | None:
        """The dtype the fp16-flagged StyleGAN2 blocks / StyleGAN3 layers run in now (None: float32; see
        the class)."""
        if self.fp16_dtype is not None:
            return None if self.fp16_dtype == torch.float32 else self.fp16_dtype
        return torch.float16 if self.device.type == "cuda" else None

    @torch.no_grad()
    def synthesis_at(
        self, ws: torch.Tensor, resolution: int | None = None, noise_mode: str = "const"
    ) -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> images (N, C, r, r) at ``resolution`` px (None: full size).

        A StyleGAN2 stops after the first block at or above ``resolution`` and returns its skip image
        (area-downsampled further when the resolution lies between two blocks); a StyleGAN3 renders at
        full size and downsamples (:func:`~sfvq.generators.base.downsample`).
        """
        from sfvq.generators.base import downsample, preview_size

        self.check_noise_mode(noise_mode)
        ws = self._prepare_ws(ws)
        kw: dict[str, Any] = {"fp16_dtype": self.half_dtype()}
        side = self.img_resolution
        if self.family == "stylegan2":
            side = self.network.synthesis.stop_resolution(resolution)
            kw["max_resolution"] = side
        out = [
            downsample(
                self.network.synthesis(ws[i : i + self.max_batch], noise_mode=noise_mode, **kw), resolution
            )
            for i in range(0, ws.shape[0], self.max_batch)
        ]
        if not out:
            h, w = preview_size(side, side, resolution)
            return torch.zeros(0, self.img_channels, h, w, device=self.device)
        return torch.cat(out).to(torch.float32)

    # -- StyleSpace (S) --------------------------------------------------------------------------
    @property
    def style_layers(self) -> tuple[tuple[str, int, int], ...]:
        """StyleSpace layout: ``(name, ws_index, channels)`` of every style affine in execution order
        (StyleGAN2: each block's [conv0,] conv1, torgb; StyleGAN3: ``input`` (4) and every layer)."""
        return tuple(self.network.synthesis.style_layers())

    @property
    def style_dim(self) -> int:
        """Entries of a full style code S: the channels of all :attr:`style_layers`."""
        return sum(ch for _, _, ch in self.style_layers)

    @torch.no_grad()
    def styles(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> style codes S (N, style_dim): each style layer's affine applied to its
        ws entry, concatenated in :attr:`style_layers` order (float32, on the generator's device)."""
        ws = self._prepare_ws(ws)
        out = [self.network.synthesis.styles(ws[i : i + 4096]) for i in range(0, ws.shape[0], 4096)]
        return torch.cat(out) if out else torch.zeros(0, self.style_dim, device=self.device)

    def mean_w(self) -> torch.Tensor:
        """The mapping's stored mean w (the truncation centre): (w_dim,) float32 on the device."""
        return self.network.mapping.w_avg.to(torch.float32)

    @torch.no_grad()
    def synthesis_from_styles_at(
        self, styles: torch.Tensor, resolution: int | None = None, noise_mode: str = "const"
    ) -> torch.Tensor:
        """Style codes S (N, style_dim) -> images (N, C, r, r), as :meth:`synthesis_at` renders ws (a
        StyleGAN2 stops early; the fp16-flagged blocks or layers run in :meth:`half_dtype`);
        ``synthesis_at(ws)`` equals ``synthesis_from_styles_at(styles(ws))`` up to float rounding."""
        from sfvq.generators.base import downsample, preview_size

        self.check_noise_mode(noise_mode)
        styles = self._as_tensor(styles, "styles").to(torch.float32)
        if styles.ndim != 2 or styles.shape[1] != self.style_dim:
            raise ValueError(f"style codes must have shape (N, {self.style_dim}), got {tuple(styles.shape)}")
        kw: dict[str, Any] = {"fp16_dtype": self.half_dtype()}
        side = self.img_resolution
        if self.family == "stylegan2":
            side = self.network.synthesis.stop_resolution(resolution)
            kw["max_resolution"] = side
        syn = self.network.synthesis
        out = [
            downsample(
                syn.forward_styles(styles[i : i + self.max_batch], noise_mode=noise_mode, **kw), resolution
            )
            for i in range(0, styles.shape[0], self.max_batch)
        ]
        if not out:
            h, w = preview_size(side, side, resolution)
            return torch.zeros(0, self.img_channels, h, w, device=self.device)
        return torch.cat(out).to(torch.float32)

    def render_features_at(
        self,
        layer: str,
        features: torch.Tensor,
        c: Any = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        resolution: int | None = None,
    ) -> torch.Tensor:
        """The one feature layer ``"w"`` renders as :meth:`synthesis_at` (the ws are its activations)."""
        self._check_layer(layer)
        return self.synthesis_at(features, resolution, noise_mode)

    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r} for {self.family}; available layers: {self.layers}")

    def features(self, z: torch.Tensor, c: Any, layer: str) -> torch.Tensor:
        """Activations at ``layer``; for ``"w"`` these are the ws (N, num_ws, w_dim) of ``mapping(z, c)``."""
        self._check_layer(layer)
        return self.mapping(z, c)

    def synthesis_from(self, layer: str, features: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """The rest of the forward pass from ``layer``; for ``"w"`` this is :meth:`synthesis`."""
        self._check_layer(layer)
        return self.synthesis(features, noise_mode=noise_mode)

    # -- direction baselines -------------------------------------------------------------------
    def style_weights(self, include_torgb: bool = False) -> list[tuple[int, str, torch.Tensor]]:
        """Every style-affine weight as ``(ws_index, state-dict name, weight (out, w_dim))``, in W+ order.

        ``ws_index`` is the W+ entry that layer reads: StyleGAN2's conv layers read one entry each and a
        block's toRGB shares the entry after its convolutions (included only with ``include_torgb``);
        StyleGAN3's ``input`` reads ws[0] and layer ``L{i}`` ws[i + 1].
        """
        sd = self.network.state_dict()
        found: list[tuple[int, str, torch.Tensor]] = []
        if self.family == "stylegan2":
            sg2 = sorted(
                ((int(m.group(1)), m.group(2), k) for k in sd if (m := _SG2_AFFINE_RE.match(k))),
                key=lambda t: (t[0], ("conv0", "conv1", "torgb").index(t[1])),
            )
            w_idx = 0
            for res in sorted({r for r, _, _ in sg2}):
                layers = {kind: key for r, kind, key in sg2 if r == res}
                convs = [kind for kind in ("conv0", "conv1") if kind in layers]
                for i, kind in enumerate(convs):
                    found.append((w_idx + i, layers[kind], sd[layers[kind]]))
                if include_torgb and "torgb" in layers:
                    found.append((w_idx + len(convs), layers["torgb"], sd[layers["torgb"]]))
                w_idx += len(convs)
        else:
            for k in sd:
                m = _SG3_AFFINE_RE.match(k)
                if m:
                    idx = 0 if m.group(1) == "input" else int(m.group(2)) + 1
                    found.append((idx, k, sd[k]))
        if not found:
            raise GeneratorError(f"{self.name}: found no style-affine weights in its state dict")
        return sorted(found, key=lambda t: (t[0], t[1]))

    @property
    def differentiable_layers(self) -> tuple[str, ...]:
        """StyleGAN2: ``b4``, ``b8``, ... (each block's output); StyleGAN3: ``input`` and its layer names."""
        syn = self.network.synthesis
        if self.family == "stylegan2":
            return tuple(f"b{r}" for r in syn.block_resolutions)
        return ("input", *syn.layer_names)

    def feature_fn(self, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """w (N, w_dim) -> the flattened activations after ``layer`` (N, F), every layer reading that one
        w, differentiably (no ``torch.no_grad``); noise is the constant noise."""
        names = self.differentiable_layers
        if layer not in names:
            raise ValueError(f"unknown layer {layer!r} for {self.name}; layers: {', '.join(names)}")
        syn = self.network.synthesis
        stop = names.index(layer)
        if self.family == "stylegan2":
            num_ws = self.num_ws

            def sg2(w: torch.Tensor) -> torch.Tensor:
                ws = w[:, None, :].expand(-1, num_ws, -1)  # (N, num_ws, W)
                x = img = None
                w_idx = 0
                for block in syn.blocks()[: stop + 1]:
                    x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + block.num_torgb], "const")
                    w_idx += block.num_conv
                return x.flatten(1)  # (N, C*R*R)

            return sg2

        def sg3(w: torch.Tensor) -> torch.Tensor:  # stop 0 = input, i = layer_names[i - 1]
            x = syn.input(w)  # every layer reads the same w here (a single W vector)
            for name in syn.layer_names[:stop]:
                x = getattr(syn, name)(x, w)
            return x.flatten(1)  # (N, C*H*W)

        return sg3

    # -- the gradient path (projection) --------------------------------------------------------
    has_gradient_path = True

    def _noise_layers(self) -> list[nn.Module]:
        """StyleGAN2's layers with a per-pixel noise input, in forward order (StyleGAN3 has none)."""
        if self.family != "stylegan2":
            return []
        found = []
        for block in self.network.synthesis.blocks():
            for layer in [block.conv1] if block.in_channels == 0 else [block.conv0, block.conv1]:
                if layer.use_noise:
                    found.append(layer)
        return found

    def noise_inputs(self) -> list[torch.Tensor]:
        """StyleGAN2: the constant noise map (r, r) of every layer with a noise input, in forward order."""
        return [layer.noise_const.detach().float() for layer in self._noise_layers()]

    def differentiable_mapping(
        self,
        z: torch.Tensor,
        c: Any = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """:meth:`mapping` with gradients: z (N, z_dim) [+ labels] -> ws (N, num_ws, w_dim)."""
        _check_cutoff(truncation_cutoff)
        z = self._prepare_z(z)
        return self.network.mapping(z, self.make_c(c, z.shape[0]), float(truncation_psi), truncation_cutoff)

    def differentiable_synthesis(
        self, ws: torch.Tensor, noise_mode: str = "const", noise: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """:meth:`synthesis` with gradients, at full size and in float32: ws (N, num_ws, w_dim) -> images.

        A StyleGAN2 runs the non-fused forward pass (:func:`sfvq.avatars.networks.synthesis_forward`),
        which takes explicit noise maps: ``noise`` one (N or 1, 1, r, r) per :meth:`noise_inputs` entry;
        a StyleGAN3 has no noise inputs.
        """
        self.check_noise_mode(noise_mode)
        ws = self._prepare_ws(ws)
        if self.family == "stylegan3":
            self.check_no_noise(noise)
            return self.network.synthesis(ws, noise_mode=noise_mode)
        from sfvq.avatars.networks import synthesis_forward

        syn = self.network.synthesis
        if noise is not None:
            count = len(self._noise_layers())
            if len(noise) != count:
                raise ValueError(f"got {len(noise)} noise maps for {count} noise inputs")
            maps = iter(noise)
            return synthesis_forward(syn, ws, lambda n_, r_: next(maps))
        if noise_mode == "const":
            return synthesis_forward(syn, ws)
        if noise_mode == "none":
            return synthesis_forward(syn, ws, lambda n_, r_: ws.new_zeros(n_, 1, r_, r_))
        return synthesis_forward(syn, ws, lambda n_, r_: torch.randn(n_, 1, r_, r_, device=ws.device))

    def differentiable_render_features(
        self,
        layer: str,
        features: torch.Tensor,
        c: Any = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The one feature layer ``"w"`` (its activations are the ws) renders as
        :meth:`differentiable_synthesis`."""
        self._check_layer(layer)
        return self.differentiable_synthesis(features, noise_mode, noise)

    def generate(
        self,
        z: torch.Tensor,
        c: Any = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """End-to-end ``synthesis(mapping(z, c, psi, cutoff), noise_mode)``: (N, C, H, W)."""
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), noise_mode=noise_mode)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor | np.ndarray):
        return f"{type(x).__name__} of shape {tuple(x.shape)}"
    return repr(x)


# ----------------------------------------------------------------------------------------------
# Building networks
# ----------------------------------------------------------------------------------------------


def build_stylegan_network(
    family: str, init_kwargs: dict, state_dict: Mapping[str, torch.Tensor]
) -> nn.Module:
    """Build the clean-room network of ``family`` ("stylegan2" or "stylegan3") and load its weights."""
    if family == "stylegan2":
        from sfvq.generators.stylegan2 import build_stylegan2

        return build_stylegan2(init_kwargs, state_dict)
    if family == "stylegan3":
        try:
            mod = importlib.import_module("sfvq.generators.stylegan3")
        except ModuleNotFoundError as e:
            if e.name != "sfvq.generators.stylegan3":
                raise
            raise GeneratorError(
                "this is a StyleGAN3 network, but sfvq's StyleGAN3 implementation "
                "(sfvq.generators.stylegan3) is not available in this installation"
            ) from e
        return mod.build_stylegan3(init_kwargs, state_dict)
    raise GeneratorError(f"unknown StyleGAN family {family!r} (expected one of {FAMILIES})")


def stylegan_from_state_dict(
    init_kwargs: dict,
    state_dict: Mapping[str, torch.Tensor],
    *,
    name: str,
    family: str | None = None,
    device: str | torch.device | None = None,
    training_set_kwargs: Mapping[str, Any] | None = None,
) -> StyleGANGenerator:
    """Wrap a network built from ``G_ema`` init kwargs and an official-named state dict.

    ``family`` defaults to "stylegan3" when the state dict has ``synthesis.input.*`` keys, else "stylegan2".
    """
    if not isinstance(init_kwargs, Mapping) or not isinstance(state_dict, Mapping):
        raise GeneratorError(
            f"{name}: StyleGAN init kwargs and state dict must be dicts, got a {type(init_kwargs).__name__} "
            f"and a {type(state_dict).__name__}"
        )
    if family is None:
        sg3 = any(str(k).startswith("synthesis.input.") for k in state_dict)
        family = "stylegan3" if sg3 else "stylegan2"
    net = build_stylegan_network(family, dict(init_kwargs), state_dict)
    gen = StyleGANGenerator(net, name=name, family=family, training_set_kwargs=training_set_kwargs)
    return gen.to(device) if device is not None else gen


def stylegan_from_fixture_dir(
    dirpath: str | Path, device: str | torch.device | None = None
) -> StyleGANGenerator:
    """Build a generator from a fixture directory holding ``config.json`` and ``weights.safetensors``."""
    from safetensors.torch import load_file

    d = Path(dirpath)
    cfg_path, w_path = d / "config.json", d / "weights.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise GeneratorError(f"fixture directory {d} lacks {p.name}")
    try:
        cfg = json.loads(cfg_path.read_text())
        init_kwargs = cfg["G_ema"]["init_kwargs"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise GeneratorError(f"{cfg_path} has no readable G_ema.init_kwargs ({e})") from e
    state_dict = load_file(str(w_path))
    module = str(cfg.get("module_of_G_classes_when_pickled", ""))
    family = "stylegan3" if module.endswith("networks_stylegan3") else None
    return stylegan_from_state_dict(
        init_kwargs,
        state_dict,
        name=str(d),
        family=family,
        device=device,
        training_set_kwargs=cfg.get("training_set_kwargs"),
    )
