"""DCGAN generators, and ``builtin:faces-dcgan``: the pretrained 64x64 face DCGAN of ``gan-face-generate``.

The network is rebuilt here from the layout of its state dict (the usual DCGAN generator): a stack of
``ConvTranspose2d(k=4) -> BatchNorm2d -> ReLU`` blocks (the first from a 1x1 input with stride 1 and no
padding, the others with stride 2 and padding 1, each doubling the resolution) and a last
``ConvTranspose2d(k=4, stride 2, padding 1) -> tanh``. The weights file is found with
``importlib.util.find_spec`` without importing the package (its own imports may fail beside our torch)
and read with ``torch.load(..., weights_only=True)``.

There is no mapping network: the only latent space is ``z`` (``w_dim`` is None, ``num_ws`` is 1) and
:meth:`DCGANGenerator.mapping` returns z as (N, 1, z_dim). ``truncation_psi`` != 1 scales z by psi
(the usual "truncation" for plain-z generators: pulls samples towards the mode at 0). The layers usable
with :meth:`~DCGANGenerator.features` / :meth:`~DCGANGenerator.synthesis_from` are ``block1`` ...
``blockK``: the output of each ConvTranspose+BatchNorm+ReLU block.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from sfvq.generators.base import GeneratorBase, GeneratorError

FACES_DCGAN_NAME = "builtin:faces-dcgan"
FACES_DCGAN_PACKAGE = "gan_face_generate"
FACES_DCGAN_PIP = "pip install --no-deps gan-face-generate==1.1.1"
FACES_DCGAN_WEIGHTS = "weights.tar"
FACES_DCGAN_KEY = "netG_state_dict"

_KEY_RE = re.compile(r"^main\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class DCGANNet(nn.Module):
    """DCGAN generator network: z (N, z_dim, 1, 1) -> images (N, C, H, W) in [-1, 1].

    Args:
        z_dim: latent size (input channels of the first transposed convolution).
        channels: output channels of each ConvTranspose+BatchNorm+ReLU block, e.g. [512, 256, 128, 64].
        img_channels: channels of the image (3 for RGB).
    """

    def __init__(self, z_dim: int, channels: list[int], img_channels: int = 3) -> None:
        super().__init__()
        if not channels:
            raise ValueError("a DCGAN needs at least one ConvTranspose+BatchNorm+ReLU block")
        self.z_dim = z_dim
        self.channels = list(channels)
        self.img_channels = img_channels
        blocks = []
        in_ch = z_dim
        for i, ch in enumerate(channels):
            stride, padding = (1, 0) if i == 0 else (2, 1)  # 1x1 -> 4x4, then x2 per block
            blocks.append(
                nn.Sequential(
                    nn.ConvTranspose2d(in_ch, ch, 4, stride, padding, bias=False),
                    nn.BatchNorm2d(ch),
                    nn.ReLU(),
                )
            )
            in_ch = ch
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ConvTranspose2d(in_ch, img_channels, 4, 2, 1, bias=False)
        self.img_resolution = 4 * 2 ** len(channels)  # 4 after block1, x2 per later block and to_rgb

    def block_shape(self, index: int) -> tuple[int, int, int]:
        """(C, H, W) of the output of block ``index`` (0-based)."""
        res = 4 * 2**index
        return (self.channels[index], res, res)

    def features(self, z: torch.Tensor, upto: int) -> torch.Tensor:
        """z (N, z_dim) -> output of block ``upto`` (0-based): (N, C, H, W)."""
        x = z[:, :, None, None]  # (N, z_dim, 1, 1)
        for block in self.blocks[: upto + 1]:
            x = block(x)
        return x

    def forward_from(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Output of block ``index`` (N, C, H, W) -> images (N, img_channels, R, R)."""
        for block in self.blocks[index + 1 :]:
            x = block(x)
        return torch.tanh(self.to_rgb(x))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z_dim) -> images (N, img_channels, R, R)."""
        return self.forward_from(len(self.blocks) - 1, self.features(z, len(self.blocks) - 1))


def build_dcgan(state_dict: Mapping[str, torch.Tensor]) -> DCGANNet:
    """Build a :class:`DCGANNet` from a state dict in the common ``main.<i>.<param>`` layout.

    The layout expected: conv weights at ``main.0, main.3, ...`` (shape (in, out, 4, 4)), BatchNorm at
    ``main.1, main.4, ...``, ReLU (no parameters) at ``main.2, main.5, ...``, and a last conv weight at
    ``main.<3K>`` followed by tanh. Anything else raises GeneratorError naming the offending keys.
    """
    unexpected = sorted(k for k in state_dict if not _KEY_RE.match(k))
    if unexpected:
        raise GeneratorError(
            f"DCGAN state dict: unexpected keys {unexpected[:8]} (expected main.<i>.<param>)"
        )
    conv_idx = sorted(
        int(_KEY_RE.match(k).group(1)) for k, v in state_dict.items() if k.endswith(".weight") and v.ndim == 4
    )
    if len(conv_idx) < 2:
        raise GeneratorError(f"DCGAN state dict: expected at least 2 conv weights, found {len(conv_idx)}")
    n_blocks = len(conv_idx) - 1
    if conv_idx != [3 * i for i in range(n_blocks + 1)]:
        raise GeneratorError(
            f"DCGAN state dict: conv weights at main.{conv_idx}, expected main.0, main.3, ..."
        )

    expected = {f"main.{3 * i}.weight" for i in range(n_blocks + 1)}
    expected |= {f"main.{3 * i + 1}.{p}" for i in range(n_blocks) for p in _BN_PARAMS}
    missing = sorted(expected - set(state_dict), key=_natural_key)
    extra = sorted(set(state_dict) - expected, key=_natural_key)
    if missing or extra:
        raise GeneratorError(f"DCGAN state dict: missing keys {missing[:8]}, unexpected keys {extra[:8]}")

    shapes = [tuple(state_dict[f"main.{3 * i}.weight"].shape) for i in range(n_blocks + 1)]
    z_dim = shapes[0][0]
    channels = [s[1] for s in shapes[:-1]]
    img_channels = shapes[-1][1]
    net = DCGANNet(z_dim, channels, img_channels)
    renamed: dict[str, torch.Tensor] = {}
    for i in range(n_blocks):
        renamed[f"blocks.{i}.0.weight"] = state_dict[f"main.{3 * i}.weight"]
        for p in _BN_PARAMS:
            renamed[f"blocks.{i}.1.{p}"] = state_dict[f"main.{3 * i + 1}.{p}"]
    renamed["to_rgb.weight"] = state_dict[f"main.{3 * n_blocks}.weight"]
    own = net.state_dict()
    bad = [
        f"{k}: {tuple(v.shape)} (expected {tuple(own[k].shape)})"
        for k, v in renamed.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad:
        raise GeneratorError("DCGAN state dict: misshapen tensors: " + "; ".join(bad[:8]))
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in renamed.items()})
    return net.eval().requires_grad_(False)


def _natural_key(key: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in key.split("."))


class DCGANGenerator(GeneratorBase):
    """A DCGAN seen through the :class:`~sfvq.generators.base.Generator` protocol (z space only).

    Every block ends in a ReLU (``nonnegative_layers``), the first transposed convolution reads z linearly
    (:meth:`first_layer_map`, SeFa) and every block is differentiable (:meth:`feature_fn`, LatentCLR).
    """

    def __init__(self, net: DCGANNet, name: str) -> None:
        self.net = net.eval().requires_grad_(False)
        self.name = name
        self.z_dim = net.z_dim
        self.w_dim: int | None = None
        self.num_ws = 1
        self.c_dim = 0
        self.img_resolution = net.img_resolution
        self.img_channels = net.img_channels
        self.spaces: tuple[str, ...] = ("z",)
        self.layers: tuple[str, ...] = tuple(f"block{i + 1}" for i in range(len(net.blocks)))
        # Every block ends in a ReLU: activations there are never negative (spaces clamp edits to that).
        self.nonnegative_layers: tuple[str, ...] = self.layers

    def __repr__(self) -> str:
        return (
            f"DCGANGenerator(name={self.name!r}, z_dim={self.z_dim}, img_resolution={self.img_resolution}, "
            f"layers={self.layers})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _z(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"expected z of shape (N, {self.z_dim}), got {shape}")
        return z.to(self.device, torch.float32)

    def _check_c(self, c: torch.Tensor | None, n: int) -> None:
        if c is not None and c.numel() != 0:
            raise ValueError(
                f"{self.name} is unconditional (c_dim 0) but a class vector {tuple(c.shape)} was given"
            )

    def _layer_index(self, layer: str) -> int:
        if layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r} for {self.name}; layers: {', '.join(self.layers)}")
        return self.layers.index(layer)

    @torch.no_grad()
    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim) -> (N, 1, z_dim): z times ``truncation_psi`` (unless ``truncation_cutoff`` is 0)."""
        return self.differentiable_mapping(z, c, truncation_psi, truncation_cutoff)

    @torch.no_grad()
    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws (N, 1, z_dim) -> images (N, C, R, R) in [-1, 1]; ``noise_mode`` is checked (no noise here)."""
        return self.differentiable_synthesis(ws, noise_mode)

    # ---- the gradient path (projection): the same forward pass, without torch.no_grad ---------------
    has_gradient_path = True

    def differentiable_mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """:meth:`mapping` with gradients: z (N, z_dim) -> z times the truncation (N, 1, z_dim)."""
        z = self._z(z)  # (N, z_dim)
        self._check_c(c, z.shape[0])
        if not math.isfinite(truncation_psi):
            raise ValueError(f"truncation_psi must be finite, got {truncation_psi}")
        if truncation_cutoff is not None and truncation_cutoff < 0:
            raise ValueError(f"truncation_cutoff must be >= 0, got {truncation_cutoff}")
        psi = truncation_psi if truncation_cutoff is None or truncation_cutoff >= 1 else 1.0
        return (z * psi)[:, None, :]  # (N, 1, z_dim)

    def differentiable_synthesis(
        self, ws: torch.Tensor, noise_mode: str = "const", noise: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """:meth:`synthesis` with gradients: ws (N, 1, z_dim) -> images (N, C, R, R) (no noise inputs)."""
        self.check_noise_mode(noise_mode)
        self.check_no_noise(noise)
        if ws.ndim != 3 or ws.shape[1] != 1 or ws.shape[2] != self.z_dim:
            raise ValueError(f"expected ws of shape (N, 1, {self.z_dim}), got {tuple(ws.shape)}")
        return self.net(ws[:, 0].to(self.device, torch.float32))  # (N, C, R, R)

    @torch.no_grad()
    def features(self, z: torch.Tensor, c: torch.Tensor | None, layer: str) -> torch.Tensor:
        """z (N, z_dim) -> activations after ``layer`` (N, C, H, W)."""
        index = self._layer_index(layer)
        z = self._z(z)
        self._check_c(c, z.shape[0])
        return self.net.features(z, index)

    @torch.no_grad()
    def synthesis_from(self, layer: str, features: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Activations after ``layer`` (N, C, H, W) -> images (N, img_channels, R, R)."""
        return self._forward_from(layer, features, noise_mode)

    def differentiable_render_features(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """:meth:`render_features` with gradients: the (clamped) activations after ``layer`` -> images."""
        self.check_no_noise(noise)
        return self._forward_from(layer, self.clamp_features(layer, features), noise_mode)

    def _forward_from(self, layer: str, features: torch.Tensor, noise_mode: str) -> torch.Tensor:
        """Activations after ``layer`` (N, C, H, W) -> images, checked, with gradients where they flow."""
        self.check_noise_mode(noise_mode)
        index = self._layer_index(layer)
        shape = self.net.block_shape(index)
        if features.ndim != 4 or tuple(features.shape[1:]) != shape:
            raise ValueError(
                f"expected {layer} features of shape (N, {', '.join(map(str, shape))}), "
                f"got {tuple(features.shape)}"
            )
        return self.net.forward_from(index, features.to(self.device, torch.float32))

    # ---- direction baselines ------------------------------------------------------------------------

    @property
    def differentiable_layers(self) -> tuple[str, ...]:
        """Every block's output can be read with gradients (:meth:`feature_fn`)."""
        return self.layers

    def feature_fn(self, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """z (N, z_dim) -> the flattened output of block ``layer`` (N, C*H*W), differentiable in z."""
        index = self._layer_index(layer)
        net = self.net

        def dcgan_features(z: torch.Tensor) -> torch.Tensor:
            return net.features(z, index).flatten(1)  # (N, C*H*W)

        return dcgan_features

    def first_layer_map(self, fold_batchnorm: bool = True) -> tuple[tuple[str, ...], torch.Tensor]:
        """The first transposed convolution as a matrix A (C*16, z_dim): z -> its pre-activation output.

        Its weight (z_dim, C, 4, 4) is ``blocks.0.0.weight``; with ``fold_batchnorm`` each output channel
        is scaled by the eval-mode BatchNorm's ``gamma / sqrt(running_var + eps)`` (part of the same
        linear map up to an offset). Returns the weight names and A (float64).
        """
        sd = self.net.state_dict()
        W = sd["blocks.0.0.weight"].double()  # (z_dim, C, 4, 4)
        names: tuple[str, ...] = ("blocks.0.0.weight",)
        if fold_batchnorm:
            bn = self.net.blocks[0][1]
            scale = sd["blocks.0.1.weight"].double() / (sd["blocks.0.1.running_var"].double() + bn.eps).sqrt()
            W = W * scale[None, :, None, None]  # (z_dim, C, 4, 4)
            names += ("blocks.0.1.weight", "blocks.0.1.running_var")
        return names, W.reshape(self.z_dim, -1).T.contiguous()  # (C*16, z_dim)


def faces_dcgan_weights_path() -> Path:
    """Path of ``gan_face_generate/weights.tar``, found without importing the package."""
    try:
        spec = importlib.util.find_spec(FACES_DCGAN_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise GeneratorError(
            f"{FACES_DCGAN_NAME} needs the package gan-face-generate, which is not installed; "
            f"install it with: {FACES_DCGAN_PIP}"
        )
    for location in locations:
        path = Path(location) / FACES_DCGAN_WEIGHTS
        if path.is_file():
            return path
    raise GeneratorError(
        f"{FACES_DCGAN_NAME}: the package gan-face-generate at {locations[0]} has no {FACES_DCGAN_WEIGHTS}; "
        f"reinstall it with: {FACES_DCGAN_PIP}"
    )


def load_faces_dcgan(device: str | torch.device | None = None) -> DCGANGenerator:
    """Load ``builtin:faces-dcgan`` (64x64 RGB faces, z_dim 100) in eval mode on ``device`` (CPU default)."""
    path = faces_dcgan_weights_path()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated archive, or objects outside the weights-only allow-list
        raise GeneratorError(f"{FACES_DCGAN_NAME}: cannot read {path}: {type(e).__name__}: {e}") from e
    if not isinstance(checkpoint, Mapping) or FACES_DCGAN_KEY not in checkpoint:
        found = list(checkpoint)[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise GeneratorError(f"{FACES_DCGAN_NAME}: {path} has no {FACES_DCGAN_KEY!r} (found {found})")
    net = build_dcgan(checkpoint[FACES_DCGAN_KEY])
    if net.z_dim != 100 or net.img_resolution != 64:
        raise GeneratorError(
            f"{FACES_DCGAN_NAME}: expected z_dim 100 and 64x64 images, the weights give z_dim {net.z_dim} "
            f"and {net.img_resolution}x{net.img_resolution}"
        )
    net = net.to(torch.device(device) if device is not None else torch.device("cpu"))
    return DCGANGenerator(net, FACES_DCGAN_NAME)
