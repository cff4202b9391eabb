"""The one interface every generator adapter meets, and the defaults an adapter inherits.

Images are NCHW float tensors in roughly [-1, 1]; everything runs batched under ``torch.no_grad``;
the device follows the generator's parameters (fp32 on CPU).

:class:`Generator` is the protocol the rest of sfvq programs against. Besides the forward pass
(``mapping``, ``synthesis``, ``features``, ``synthesis_from``) it declares what differs between formats,
so that no caller ever asks which adapter it holds:

* how z is drawn (``z_stream``, ``z_for_seeds``, ``z_rng_description``, ``truncation_in_z``);
* how a feature space reads and renders activations (``features_of_z``, ``render_features``,
  ``nonnegative_layers``) and which ``noise_modes`` synthesis takes;
* what the direction baselines read: ``style_weights`` / ``first_layer_map`` for SeFa,
  ``differentiable_layers`` / ``feature_fn`` for LatentCLR.

* how an image is rendered below the full resolution (``synthesis_at``, ``render_features_at``), so that
  a job can preview a large generator;
* the forward pass with gradients that projection optimises through (``has_gradient_path``,
  ``differentiable_mapping``, ``differentiable_synthesis``, ``differentiable_render_features``,
  ``noise_inputs``).

:class:`GeneratorBase` implements all of these with the common behaviour (NVIDIA's seeding, truncation in
the mapping, no baseline support, previews rendered at full size and downsampled, no gradient path); an
adapter inherits it
and overrides only its own quirks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

NOISE_MODES = ("const", "random", "none")


class GeneratorError(ValueError):
    """A generator file or name that cannot be loaded; the message says what was found."""


@runtime_checkable
class Generator(Protocol):
    """A pretrained generator seen through sfvq's eyes.

    Attributes:
        name: registry name or path it was loaded from.
        z_dim, w_dim (None without a mapping network), num_ws (1 without style layers), c_dim,
        img_resolution, img_channels.
        spaces: latent spaces this generator offers, e.g. ``("z", "w", "w+")``.
        layers: names of intermediate layers usable with :meth:`features` / :meth:`synthesis_from`.
        noise_modes: the ``noise_mode`` values synthesis accepts.
        nonnegative_layers: layers whose activations are never negative (they end in a ReLU).
        truncation_in_z: True where the sampled z already carries the truncation (BigGAN's truncated
            noise times psi), so stored z latents are truncated; False where it acts in ``mapping``.
        differentiable_layers: layers :meth:`feature_fn` can read (empty: no LatentCLR support).
        has_gradient_path: whether the ``differentiable_*`` methods work (projection needs them).
    """

    name: str
    z_dim: int
    w_dim: int | None
    num_ws: int
    c_dim: int
    img_resolution: int
    img_channels: int
    spaces: tuple[str, ...]
    layers: tuple[str, ...]
    noise_modes: tuple[str, ...]
    nonnegative_layers: tuple[str, ...]
    truncation_in_z: bool
    has_gradient_path: bool

    @property
    def device(self) -> torch.device: ...

    @property
    def differentiable_layers(self) -> tuple[str, ...]: ...

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim) -> ws (N, num_ws, w_dim). Generators without a mapping return z as (N, 1, z_dim).

        ``synthesis(mapping(z, c, psi, cutoff))`` is the plain forward pass.
        """
        ...

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> images (N, C, H, W) in about [-1, 1]."""
        ...

    def features(self, z: torch.Tensor, c: torch.Tensor | None, layer: str) -> torch.Tensor:
        """Activations at ``layer`` for latents z: (N, ...)."""
        ...

    def synthesis_from(self, layer: str, features: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """The exact rest of the forward pass from ``layer``'s activations to images."""
        ...

    def z_stream(
        self, n: int, seed: int, truncation_psi: float = 1.0, batch_size: int = 1024
    ) -> Iterator[np.ndarray]:
        """The z of one seeded stream of ``n`` latents, batch by batch: (b, z_dim) float32 each."""
        ...

    def z_for_seeds(self, seeds: Sequence[int], truncation_psi: float = 1.0) -> np.ndarray:
        """One z per seed: (N, z_dim) float32."""
        ...

    def z_rng_description(self, per_seed: bool) -> str:
        """How z is drawn, for a latents sidecar: per seed (``z_for_seeds``) or one stream (``z_stream``)."""
        ...

    def features_of_z(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        layer: str,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Activations at ``layer`` (N, ...) for z as drawn by ``z_stream``, truncated as in a plain pass."""
        ...

    def render_features(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """Images (N, C, H, W) from activations at ``layer`` that no single z produced (a curve point)."""
        ...

    def style_weights(self, include_torgb: bool = False) -> list[tuple[int, str, torch.Tensor]]:
        """Every style-affine weight as ``(ws_index, name, weight (out, w_dim))`` in W+ order (SeFa)."""
        ...

    def first_layer_map(self, fold_batchnorm: bool = True) -> tuple[tuple[str, ...], torch.Tensor]:
        """The first layer as a matrix A (M, z_dim) from z to its pre-activation output, and the names of
        the weights it is made of (SeFa in z)."""
        ...

    def feature_fn(self, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """A differentiable map from latents (N, D) of the direction space (W, else z) to the flattened
        activations at ``layer`` (N, F) (LatentCLR)."""
        ...

    def synthesis_at(
        self, ws: torch.Tensor, resolution: int | None = None, noise_mode: str = "const"
    ) -> torch.Tensor:
        """:meth:`synthesis` at ``resolution`` px (the longer side; None or >= the generator's: full size)
        -> (N, C, h, w). An architecture that makes a lower-resolution image on the way stops there."""
        ...

    def render_features_at(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        resolution: int | None = None,
    ) -> torch.Tensor:
        """:meth:`render_features` at ``resolution`` px, as :meth:`synthesis_at`."""
        ...

    def differentiable_mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """:meth:`mapping` with gradients (no ``torch.no_grad``): z (N, z_dim) -> ws (N, num_ws, w_dim)."""
        ...

    def differentiable_synthesis(
        self, ws: torch.Tensor, noise_mode: str = "const", noise: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """:meth:`synthesis` with gradients, at full size: ws (N, num_ws, w_dim) -> images (N, C, H, W).

        ``noise``: one map (N or 1, 1, r, r) per entry of :meth:`noise_inputs`, used instead of the
        noise of ``noise_mode`` (projection fits them); None: ``noise_mode`` as in :meth:`synthesis`.
        """
        ...

    def differentiable_render_features(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """:meth:`render_features` with gradients (``noise`` as in :meth:`differentiable_synthesis`)."""
        ...

    def noise_inputs(self) -> list[torch.Tensor]:
        """The constant noise map (r, r) of every per-pixel noise input, in the order
        :meth:`differentiable_synthesis` takes ``noise``; empty for a generator without noise inputs."""
        ...


def preview_size(height: int, width: int, resolution: int | None) -> tuple[int, int]:
    """The (h, w) of an image (height, width) shown at ``resolution`` px on its longer side: never larger
    than the image, the aspect ratio kept (rounded), None keeps the image's own size."""
    if resolution is None or resolution >= max(height, width):
        return height, width
    if resolution < 1:
        raise ValueError(f"a preview resolution must be >= 1 px, got {resolution}")
    scale = resolution / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def downsample(images: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Images (N, C, H, W) at ``resolution`` px on the longer side (:func:`preview_size`), never upsampled.

    An integer factor averages each block of factor x factor pixels (area interpolation, exact); any
    other factor uses antialiased bilinear interpolation. Returns float32 (fp16 inputs are widened first).
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    H, W = images.shape[2:]
    h, w = preview_size(H, W, resolution)
    if (h, w) == (H, W):
        return images
    x = images.float()
    if H % h == 0 and W % w == 0 and H // h == W // w:
        return F.avg_pool2d(x, H // h)  # (N, C, h, w): the mean of each factor x factor block
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def normal_z_for_seeds(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """One z per seed, as NVIDIA's tools draw it: row i = ``RandomState(seeds[i]).randn(1, z_dim)``.

    Returns (N, z_dim) float32.
    """
    if z_dim < 1:
        raise ValueError(f"z_dim must be >= 1, got {z_dim}")
    rows = [np.random.RandomState(int(s)).randn(1, z_dim) for s in seeds]  # N x (1, z_dim) float64
    if not rows:
        return np.zeros((0, z_dim), dtype=np.float32)
    return np.concatenate(rows, axis=0).astype(np.float32)  # (N, z_dim)


class GeneratorBase:
    """Defaults of the :class:`Generator` protocol beyond the forward pass; adapters inherit this.

    z is standard normal noise drawn as NVIDIA's tools draw it (``np.random.RandomState``), truncation
    acts in ``mapping``, every noise mode is accepted, no layer is known to be non-negative, and the
    direction baselines are not supported (their methods raise :class:`GeneratorError` naming the
    generator). The forward pass itself (``mapping``, ``synthesis``, ``features``, ``synthesis_from``)
    and the attributes of the protocol come from the adapter.
    """

    name: str
    z_dim: int
    spaces: tuple[str, ...]
    noise_modes: tuple[str, ...] = NOISE_MODES
    nonnegative_layers: tuple[str, ...] = ()
    truncation_in_z: bool = False
    has_gradient_path: bool = False

    # ---- z ----------------------------------------------------------------------------------------
    def z_stream(
        self, n: int, seed: int, truncation_psi: float = 1.0, batch_size: int = 1024
    ) -> Iterator[np.ndarray]:
        """``RandomState(seed).randn(n, z_dim)`` batch by batch; the legacy generator keeps its state
        between draws, so the rows do not depend on ``batch_size``. ``truncation_psi`` acts in mapping."""
        rs = np.random.RandomState(seed)
        for start in range(0, n, batch_size):
            yield rs.randn(min(batch_size, n - start), self.z_dim).astype(np.float32)  # (b, z_dim)

    def z_for_seeds(self, seeds: Sequence[int], truncation_psi: float = 1.0) -> np.ndarray:
        """NVIDIA's ``RandomState(seed).randn(1, z_dim)`` per seed: (N, z_dim) float32."""
        return normal_z_for_seeds(seeds, self.z_dim)

    def z_rng_description(self, per_seed: bool) -> str:
        """The sidecar's ``rng`` text for :meth:`z_for_seeds` (``per_seed``) or :meth:`z_stream`."""
        if per_seed:
            return "numpy.random.RandomState(seed).randn(1, z_dim) per seed"
        return "numpy.random.RandomState(seed).randn(n, z_dim), one stream"

    # ---- feature spaces ---------------------------------------------------------------------------
    def features_of_z(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        layer: str,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Activations at ``layer`` for z (N, z_dim) as drawn: a generator without a W space truncates in
        its ``mapping`` (e.g. scales z), so z goes through that first; with a W space the layer reads the
        untruncated mapping (the psi is only recorded)."""
        if "w" not in self.spaces:
            z = self.mapping(z, c, truncation_psi, truncation_cutoff)[:, 0]  # (N, z_dim)
        return self.features(z, c, layer)

    def clamp_features(self, layer: str, features: torch.Tensor) -> torch.Tensor:
        """Clamp activations of a layer that ends in a ReLU at 0: a curve point or an edit may step below
        zero, where the next layer has never seen an input; real activations are unchanged."""
        return features.clamp_min(0) if layer in self.nonnegative_layers else features

    def render_features(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """``synthesis_from`` of the (clamped) activations (N, C, H, W) -> images; c and psi are not
        needed where the layers after ``layer`` read nothing but the activations."""
        return self.synthesis_from(layer, self.clamp_features(layer, features), noise_mode)

    def check_noise_mode(self, noise_mode: str) -> None:
        """ValueError unless ``noise_mode`` is one of :attr:`noise_modes`."""
        if noise_mode not in self.noise_modes:
            raise ValueError(f"noise_mode must be one of {', '.join(self.noise_modes)}, got {noise_mode!r}")

    # ---- previews ---------------------------------------------------------------------------------
    def synthesis_at(
        self, ws: torch.Tensor, resolution: int | None = None, noise_mode: str = "const"
    ) -> torch.Tensor:
        """:meth:`synthesis` at ``resolution`` px: rendered at full size, then downsampled
        (:func:`downsample`); an adapter whose architecture makes the smaller image on the way overrides
        this to stop early."""
        return downsample(self.synthesis(ws, noise_mode=noise_mode), resolution)

    def render_features_at(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        resolution: int | None = None,
    ) -> torch.Tensor:
        """:meth:`render_features` at ``resolution`` px: rendered at full size, then downsampled."""
        return downsample(self.render_features(layer, features, c, truncation_psi, noise_mode), resolution)

    # ---- the gradient path (projection) -----------------------------------------------------------
    def _no_gradient_path(self) -> GeneratorError:
        return GeneratorError(
            f"{self.name} has no gradient path: sfvq runs its forward pass only without gradients, and "
            "projecting an image needs them (sfvq's StyleGAN2/StyleGAN3 networks and DCGANs have one)"
        )

    def differentiable_mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Not supported here (``has_gradient_path`` is False): raises :class:`GeneratorError`."""
        raise self._no_gradient_path()

    def differentiable_synthesis(
        self, ws: torch.Tensor, noise_mode: str = "const", noise: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Not supported here (``has_gradient_path`` is False): raises :class:`GeneratorError`."""
        raise self._no_gradient_path()

    def differentiable_render_features(
        self,
        layer: str,
        features: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Not supported here (``has_gradient_path`` is False): raises :class:`GeneratorError`."""
        raise self._no_gradient_path()

    def noise_inputs(self) -> list[torch.Tensor]:
        """No per-pixel noise inputs by default."""
        return []

    @staticmethod
    def check_no_noise(noise: Sequence[torch.Tensor] | None) -> None:
        """ValueError for noise maps given to a generator without noise inputs."""
        if noise:
            raise ValueError(f"got {len(noise)} noise maps for a generator without noise inputs")

    # ---- direction baselines ----------------------------------------------------------------------
    @property
    def differentiable_layers(self) -> tuple[str, ...]:
        """Layers :meth:`feature_fn` can read; none by default."""
        return ()

    def style_weights(self, include_torgb: bool = False) -> list[tuple[int, str, torch.Tensor]]:
        """Not supported here: this generator has no style layers."""
        raise GeneratorError(f"{self.name} has no style-affine layers (SeFa in W needs a StyleGAN)")

    def first_layer_map(self, fold_batchnorm: bool = True) -> tuple[tuple[str, ...], torch.Tensor]:
        """Not supported here: this generator does not expose a first layer that reads z linearly."""
        raise GeneratorError(f"{self.name} exposes no linear first layer that reads z (SeFa in z)")

    def feature_fn(self, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Not supported here: this generator exposes no differentiable intermediate layer."""
        raise GeneratorError(f"{self.name} exposes no differentiable intermediate layer (LatentCLR)")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW float images in [-1, 1] -> NHWC uint8 numpy array (clamped, rounded)."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5  # (N, C, H, W) in [0, 255]
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
