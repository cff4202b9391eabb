"""BigGAN-deep generators stored as a local directory in the pytorch-pretrained-biggan layout.

Three modules: :mod:`~sfvq.generators.biggan_config` reads and checks the directory (``config.json`` and
``pytorch_model.bin``), :mod:`~sfvq.generators.biggan_network` is the network, and this module is the
adapter behind sfvq's :class:`~sfvq.generators.base.Generator` protocol with BigGAN's own z prior.

Latents are truncated normal noise times the truncation psi (:func:`truncated_noise`) plus a class vector;
the truncation also selects the network's BatchNorm statistics. Loading never touches the network: a
model name such as ``biggan-deep-256`` is refused with a message asking for a local directory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfvq.generators.base import NOISE_MODES, GeneratorBase
from sfvq.generators.biggan_config import (
    CONFIG_NAME,
    REQUIRED_CONFIG_KEYS,
    WEIGHTS_NAME,
    BigGANConfig,
    expected_state_shapes,
    parse_config,
    read_biggan_dir,
)
from sfvq.generators.biggan_network import BigGANNetwork

__all__ = [
    "CONFIG_NAME",
    "NOISE_MODES",
    "REQUIRED_CONFIG_KEYS",
    "WEIGHTS_NAME",
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
# Generator protocol
# --------------------------------------------------------------------------------------------------


class BigGANGenerator(GeneratorBase):
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

    Behind the protocol: z is drawn as :func:`truncated_noise` (``truncation_in_z``), a feature space
    conditions the blocks after its layer on the prior's mean z (zeros), the class and the truncation.
    """

    w_dim = None
    num_ws = 1
    img_channels = 3
    spaces = ("z",)
    truncation_in_z = True

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
        self.check_noise_mode(noise_mode)
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
        self.check_noise_mode(noise_mode)
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

    # ---- BigGAN's own z prior and feature-space context --------------------------------------------

    def z_stream(
        self, n: int, seed: int, truncation_psi: float = 1.0, batch_size: int = 1024
    ) -> Iterator[np.ndarray]:
        """``truncated_noise(n, z_dim, psi, seed)``, drawn at once (redrawing the values outside [-2, 2]
        runs over the whole array, and a bad psi is refused now), handed out ``batch_size`` rows at a
        time: (b, z_dim) float32."""
        z = truncated_noise(n, self.z_dim, truncation_psi, seed).numpy()  # (n, z_dim), noise * psi
        return (z[start : start + batch_size] for start in range(0, n, batch_size))

    def z_for_seeds(self, seeds: Sequence[int], truncation_psi: float = 1.0) -> np.ndarray:
        """``truncated_noise(1, z_dim, psi, seed)`` per seed: (N, z_dim) float32."""
        if not len(seeds):
            return np.zeros((0, self.z_dim), dtype=np.float32)
        rows = [truncated_noise(1, self.z_dim, truncation_psi, s).numpy() for s in seeds]  # N x (1, z_dim)
        return np.concatenate(rows, axis=0).astype(np.float32)  # (N, z_dim)

    def z_rng_description(self, per_seed: bool) -> str:
        """The sidecar's ``rng`` text: truncated noise per seed or as one stream."""
        if per_seed:
            return "sfvq.generators.biggan.truncated_noise(1, z_dim, psi, seed) per seed"
        return "sfvq.generators.biggan.truncated_noise(n, z_dim, psi, seed), one stream"

    def features_of_z(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        layer: str,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Activations at ``layer`` for z as drawn (already noise times psi); psi picks the BatchNorm
        statistics. ``truncation_cutoff`` has no meaning for BigGAN and must be None."""
        if truncation_cutoff is not None:
            raise ValueError("BigGAN has no style layers: truncation_cutoff must be None")
        return self.features(z, c, layer, truncation_psi=truncation_psi)

    def render_features(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """Images from activations at ``layer`` (N, C, H, W) that no single z produced: the later blocks
        also read z, and such a point has none, so they get z's mean under the prior (zeros)."""
        x = self.clamp_features(layer, torch.as_tensor(features))
        zero = torch.zeros(x.shape[0], self.z_dim, device=self.device)  # (N, z_dim)
        return self.synthesis_from(layer, x, noise_mode, z=zero, c=c, truncation=truncation_psi)

    def __repr__(self) -> str:
        return (
            f"BigGANGenerator(name={self.name!r}, resolution={self.img_resolution}, "
            f"classes={self.c_dim}, blocks={len(self.cfg.layers)}, device={self.device})"
        )


def load_biggan(path_to_dir: str | Path, device: torch.device | str | None = None) -> BigGANGenerator:
    """Load a BigGAN from a local directory with config.json and pytorch_model.bin (fp32, eval).

    Raises GeneratorError naming the problem for a missing directory or file, a model name instead of a
    directory (nothing is ever downloaded), an invalid config, a corrupt weights file or a state dict that
    does not match the config's layout.
    """
    cfg, sd, weights_path = read_biggan_dir(path_to_dir)
    network = BigGANNetwork(cfg, sd, str(weights_path))
    gen = BigGANGenerator(network, name=str(path_to_dir))
    return gen.to(torch.device(device) if device is not None else torch.device("cpu"))
