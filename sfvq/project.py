"""Your own images in a generator's latent space: read a photo safely, find the latent that draws it.

Reading (:func:`read_image`): Pillow decodes the bytes only after the header says the format is one of
:data:`IMAGE_FORMATS` and the size is within a stated pixel limit (:data:`DEFAULT_MAX_PIXELS`); the file is
verified, the first frame decoded, turned upright (EXIF), laid over white where it is transparent and
converted to RGB. Anything else is an :class:`ImageInputError` saying what is wrong. :func:`prepare_target`
aligns a face photo for a face generator (:mod:`sfvq.align`), cuts the largest centred square and resizes
it to the generator's resolution.

Projection (:class:`Projector`): the latent of a :class:`~sfvq.spaces.LatentSpace` whose image matches the
target, by gradient descent through the generator:

* what is optimised: ``w`` in W (or one w per style layer in W+), ``z`` in Z, the PCA coordinates in a
  feature space, so that the result renders exactly through the space (``space.render_full``);
* the loss: ``pixel_weight`` x the mean squared error + ``edge_weight`` x the mean squared difference
  between horizontally and vertically adjacent errors (a gradient term, meant for thin lines such as the
  frames of glasses, which a plain pixel loss lets blur; measured in docs/real-images.md) +
  ``ssim_weight`` x (1 - multi-scale SSIM) between render and target (computed at most at
  ``loss_resolution`` px; SSIM with an 11-px Gaussian window at each halving of the image that still holds
  one, the scales weighted as Wang et al.'s MS-SSIM weights them) + ``prior_weight`` x the squared
  distance from the sampled latents' mean in their per-coordinate standard deviations (keeps a
  feature-space or z latent among the ones the generator was made for);
* StyleGAN2 noise inputs, when the space's noise mode is ``const``: the per-pixel noise maps are optimised
  with the latent, starting from the generator's constant noise, under the usual regulariser (the squared
  correlation of every map with itself shifted by one pixel across and down, at every halving down to
  8 px) and renormalised to zero mean and unit variance after every step; the map and the edits render the
  latent with the constant noise, so both renders are reported;
* the schedule: Adam; the start is the best (by the loss) of the sampled latents' mean and the first
  ``starts`` sampled latents; the learning rate (in units of the latents' per-coordinate spread) ramps up
  linearly over the first ``lr_rampup`` of the steps and down along a half cosine over the last
  ``lr_rampdown``; Gaussian noise of ``latent_noise`` x the latents' spread is added to the latent, fading
  quadratically to nothing at ``noise_ramp`` of the steps (it keeps the early steps from settling).

Several targets are projected together as a batch (each with its own latent; Adam's per-coordinate steps
make that the same as projecting them one by one). The differentiable forward pass of a generator comes
from the generator protocol (``has_gradient_path`` and the ``differentiable_*`` methods: sfvq's
StyleGAN2/StyleGAN3 networks, DCGANs), through :func:`differentiable_render`.

NVIDIA's latent files: :func:`save_projected_w` / :func:`load_projected_w` read and write
``projected_w.npz`` (key ``w``, shape (N, num_ws, w_dim) float32), so W latents travel between sfvq,
NVIDIA's ``generate.py --projected-w`` and other tools.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from sfvq.generators.base import GeneratorError, downsample, to_uint8
from sfvq.spaces import LatentSpace

DEFAULT_MAX_PIXELS = 40_000_000  # pixels of a photo read for projection (about 7,300 x 5,500)
MAX_FILE_BYTES = 200 * 2**20  # bytes of an image file read for projection
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"})
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli, Bovik 2003, fine to coarse
SPACES = ("w", "w+", "z", "features")
ALIGN_MODES = ("auto", "yes", "no")
# Words in a generator's name or training-data path that mark a generator of face photos (align by default).
FACE_WORDS = ("ffhq", "celeba", "faces", "face")
SMALL_RESOLUTION = 128  # px: generators up to this size are projected on one CPU thread by default


class ImageInputError(ValueError):
    """An image that cannot be used: not an image, a format not read here, or too large."""


class LatentFileError(ValueError):
    """A latent file that cannot be used: unreadable, or not of the shape the space needs."""


# ---------------------------------------------------------------------------------------------- images
def read_image(
    source: str | Path | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    name: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> Image.Image:
    """Decode an image file or its bytes safely -> an RGB PIL image (see the module docstring).

    Raises :class:`ImageInputError` for a file that is not an image, a format outside
    :data:`IMAGE_FORMATS`, more than ``max_pixels`` pixels or ``max_bytes`` bytes, or a truncated or
    corrupt file; FileNotFoundError for a missing file. ``name`` is how messages name the image.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        label = name or "the image"
    else:
        path = Path(source)
        label = name or str(path)
        if not path.exists():
            raise FileNotFoundError(f"no such image file: {path}")
        if not path.is_file():
            raise ImageInputError(f"{label} is not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageInputError(f"{label} is {size:,} bytes, over the limit of {max_bytes:,} bytes")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise ImageInputError(f"{label} is {len(data):,} bytes, over the limit of {max_bytes:,} bytes")
    if not data:
        raise ImageInputError(f"{label} is empty, not an image")

    def opened() -> Image.Image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked
                return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageInputError(f"{label} is too large: {e}") from e
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise ImageInputError(
                f"{label} is not an image that can be read (formats: {', '.join(sorted(IMAGE_FORMATS))})"
            ) from e

    im = opened()
    if im.format not in IMAGE_FORMATS:
        raise ImageInputError(
            f"{label} is a {im.format} image; images are read as {', '.join(sorted(IMAGE_FORMATS))}"
        )
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageInputError(f"{label} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageInputError(
            f"{label} is too large: {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} pixels"
        )
    try:
        im.verify()  # structure and checksums, without decoding the pixels
        im = opened()  # verify() leaves the image unusable
        im.seek(0)  # the first frame of an animation
        im.load()
    except ImageInputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageInputError(f"{label} is a damaged or truncated {im.format} file ({e})") from e
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return im.convert("RGB")


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of an image, resized to ``size`` x ``size`` px (Lanczos)."""
    if size < 1:
        raise ValueError(f"size must be >= 1 px, got {size}")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square if side == size else square.resize((size, size), Image.Resampling.LANCZOS)


def image_tensor(image: Image.Image, channels: int = 3) -> torch.Tensor:
    """A PIL image -> (1, channels, H, W) float32 in [-1, 1] (grey for a 1-channel generator)."""
    arr = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0  # (1, C, H, W)


def is_face_generator(G: Any) -> bool:
    """Whether ``G`` draws face photos (so photos are aligned by default): its name or its training data's
    path names faces (:data:`FACE_WORDS`: FFHQ, CelebA, ...)."""
    texts = [str(getattr(G, "name", ""))]
    training = getattr(G, "training_set_kwargs", None)
    if isinstance(training, dict) and isinstance(training.get("path"), str):
        texts.append(training["path"])
    return any(word in t.lower() for t in texts for word in FACE_WORDS)


@dataclass
class Target:
    """A photo made ready for projection: ``tensor`` (1, C, R, R) in [-1, 1] at the generator's
    resolution, ``image`` the same as a PIL image, ``alignment`` (an :class:`~sfvq.align.AlignedFace`)
    when the photo was aligned, and ``source_size`` (width, height) of the photo."""

    tensor: torch.Tensor
    image: Image.Image
    alignment: Any
    source_size: tuple[int, int]

    def describe(self) -> dict[str, Any]:
        return {
            "source_size": list(self.source_size),
            "aligned": self.alignment is not None,
            "alignment": None if self.alignment is None else self.alignment.describe(),
        }


def prepare_target(image: Image.Image, G: Any, align: str = "auto") -> Target:
    """Cut a photo to what generator ``G`` draws: aligned (``align`` ``yes``, or ``auto`` for a face
    generator, :func:`is_face_generator`) with the FFHQ recipe in the generator's framing, else the
    largest centred square; resized to the generator's resolution. NoFaceError when alignment finds no
    face."""
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
    size = int(G.img_resolution)
    alignment = None
    if align == "yes" or (align == "auto" and is_face_generator(G)):
        from sfvq.align import NoFaceError, align_face, framing_for

        try:
            alignment = align_face(image, size, framing_for(str(G.name)))
        except NoFaceError as e:
            hint = (
                ""
                if align == "yes"
                else f" ({G.name} draws faces, so photos are aligned; --align no skips it)"
            )
            raise NoFaceError(f"{e}{hint}") from e
        cut = alignment.image
    else:
        cut = fit_square(image, size)
    channels = int(getattr(G, "img_channels", 3))
    return Target(image_tensor(cut, channels), cut, alignment, image.size)


# ---------------------------------------------------------------------------------------------- losses
def _gaussian_kernel(window: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(window, dtype=like.dtype, device=like.device) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, window, window).contiguous()  # (C, 1, k, k)


def ssim_map_mean(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Differentiable SSIM of images x, y (N, C, H, W) in [0, 1], Gaussian window over the valid region,
    C1 = 0.01^2, C2 = 0.03^2 -> (N,) (the mean of the SSIM map)."""
    C = x.shape[1]
    k = _gaussian_kernel(window, sigma, C, x)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, groups=C)  # (N, C, H-k+1, W-k+1)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3))


def ms_ssim(
    x: torch.Tensor, y: torch.Tensor, window: int = 11, max_scales: int = 5, sigma: float | None = None
) -> torch.Tensor:
    """Multi-scale SSIM of images (N, C, H, W) in [0, 1] -> (N,): the SSIM at the full size and at every
    halving (2x2 means) that still holds a window, weighted by :data:`MS_SSIM_WEIGHTS` (renormalised to
    the scales used). The Gaussian window's sigma is 1.5 px for 11 px, in proportion for others (None);
    images smaller than the window use a window as large as they allow (at least 3 px)."""
    side = min(x.shape[-2:])
    window = min(window, side if side % 2 else side - 1)
    if window < 3:
        raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} px are too small for SSIM")
    sigma = 1.5 * window / 11 if sigma is None else sigma
    values, weights = [], []
    for s in range(max_scales):
        values.append(ssim_map_mean(x, y, window, sigma))
        weights.append(MS_SSIM_WEIGHTS[s])
        if min(x.shape[-2:]) // 2 < window:
            break
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    w = torch.tensor(weights, dtype=x.dtype, device=x.device)
    return (torch.stack(values, 1) * (w / w.sum())).sum(1)  # (N,)


def noise_regulariser(noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over noise maps (N, 1, r, r) and their halvings down to 8 px of the squared correlation of the
    map with itself shifted by one pixel across and down -> (N,). White noise scores about 0."""
    total: torch.Tensor | int = 0
    for n in noise:
        while True:
            across = (n * torch.roll(n, shifts=1, dims=3)).mean(dim=(1, 2, 3))  # (N,)
            down = (n * torch.roll(n, shifts=1, dims=2)).mean(dim=(1, 2, 3))
            total = total + across.square() + down.square()
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    if isinstance(total, int):
        raise ValueError("no noise maps")
    return total


# ---------------------------------------------------------------------------------------------- rendering
class DifferentiableRender:
    """A space's full tensors (N, num_ws, full_dim) -> images (N, C, H, W), with gradients, computing what
    :meth:`~sfvq.spaces.LatentSpace.render_full` computes (at full resolution).

    The generator protocol renders under ``torch.no_grad``; projection needs the forward pass with
    gradients, which generators with ``has_gradient_path`` give through the protocol's
    ``differentiable_mapping`` / ``differentiable_synthesis`` / ``differentiable_render_features`` (sfvq's
    StyleGAN2 and StyleGAN3 networks, DCGANs); other generators raise GeneratorError.

    ``noise_shapes``: (r, r) of each noise input in forward order (the generator's ``noise_inputs``;
    empty without noise inputs).
    """

    def __init__(self, space: LatentSpace) -> None:
        G = space.G
        if not getattr(G, "has_gradient_path", False):
            raise GeneratorError(
                f"projection needs the forward pass of {G.name} with gradients, and {G.name} has no gradient "
                f"path (a {type(G).__name__}; sfvq has one for StyleGAN2/StyleGAN3 networks, from pickles or "
                "exports, and for DCGANs)"
            )
        if space.kind not in ("w", "z", "features"):
            raise ValueError(f"projection works in W, W+, Z and feature spaces, not in {space.name!r}")
        if space.kind == "features" and space.pca_components is None:
            raise ValueError("the feature space has no PCA yet: project into a run's space")
        self.space = space
        self.noise_maps: list[torch.Tensor] = list(G.noise_inputs())  # (r, r) each

    @property
    def noise_shapes(self) -> list[tuple[int, int]]:
        return [tuple(m.shape) for m in self.noise_maps]

    def constant_noise(self, n: int) -> list[torch.Tensor]:
        """The generator's constant noise maps, one (n, 1, r, r) copy per noise input."""
        return [m.detach().float()[None, None].expand(n, 1, -1, -1).clone() for m in self.noise_maps]

    def __call__(self, full: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Render full tensors (N, num_ws, full_dim) on the generator's device; ``noise`` one map
        (N or 1, 1, r, r) per noise input (None: the space's noise mode)."""
        from sfvq.latents import class_vectors

        space, G = self.space, self.space.G
        full = full.to(G.device, torch.float32)
        n = full.shape[0]
        if noise is not None and len(noise) != len(self.noise_maps):
            raise ValueError(f"got {len(noise)} noise maps for {len(self.noise_maps)} noise inputs")
        if space.kind == "w":
            return G.differentiable_synthesis(full, space.noise_mode, noise)
        c = class_vectors(G, space.class_idx, n)  # (N, c_dim) or None
        if space.kind == "z":
            ws = G.differentiable_mapping(full[:, 0], c, space.truncation_psi, space.truncation_cutoff)
            return G.differentiable_synthesis(ws, space.noise_mode, noise)
        f = full[:, 0].reshape(n, *space.feature_shape)  # the layer's activations (N, ...)
        return G.differentiable_render_features(
            space.layer, f, c, space.truncation_psi, space.noise_mode, noise
        )


def differentiable_render(space: LatentSpace) -> DifferentiableRender:
    """:class:`DifferentiableRender` of ``space`` (GeneratorError for a generator without one)."""
    return DifferentiableRender(space)


# ---------------------------------------------------------------------------------------------- projector
@dataclass
class ProjectionSettings:
    """How :class:`Projector` optimises (see the module docstring for what each term does).

    ``prior_weight`` None: 0 in W and W+ (the start and the latent noise keep w near the data), 0.01 in Z
    and feature spaces. ``optimise_noise`` only acts where the generator has noise inputs and the space's
    noise mode is ``const``. ``threads``: torch CPU threads while projecting (None: one for generators of
    at most :data:`SMALL_RESOLUTION` px on a CPU, whose small operations only lose time to a second thread
    on a busy machine, else unchanged). ``lr`` and ``latent_noise`` are in units of the sampled latents'
    spread (``lr``: per coordinate; ``latent_noise``: of the whole vector's distance from their mean). The
    defaults gave the highest mean PSNR on 50 fresh builtin:avatars-sg2 avatars, against a learning rate
    of 0.15, latent noise of 0.05 and no edge term, each by 0.2-0.5 dB; on the astronaut photo
    (builtin:faces-dcgan) the four settings lie within 0.25 dB, and the edge term did not make the
    classifier read glasses more often (docs/real-images.md, "Projection settings").
    ``ssim_window``: the SSIM window in px (odd; smaller images use the largest that fits).
    """

    steps: int = 300
    lr: float = 0.4
    pixel_weight: float = 1.0
    edge_weight: float = 1.0
    ssim_weight: float = 1.0
    prior_weight: float | None = None
    noise_weight: float = 1e5
    optimise_noise: bool = True
    latent_noise: float = 0.0
    noise_ramp: float = 0.75
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    starts: int = 64
    loss_resolution: int = 256
    reference_samples: int = 10_000
    seed: int = 0
    threads: int | None = None
    ssim_window: int = 11

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "lr": self.lr > 0,
            "pixel_weight": self.pixel_weight >= 0,
            "edge_weight": self.edge_weight >= 0,
            "ssim_weight": self.ssim_weight >= 0,
            "prior_weight": self.prior_weight is None or self.prior_weight >= 0,
            "noise_weight": self.noise_weight >= 0,
            "latent_noise": self.latent_noise >= 0,
            "noise_ramp": 0 < self.noise_ramp <= 1,
            "lr_rampup": 0 <= self.lr_rampup < 1,
            "lr_rampdown": 0 <= self.lr_rampdown < 1,
            "starts": self.starts >= 0,
            "loss_resolution": self.loss_resolution >= 8,
            "reference_samples": self.reference_samples >= 2,
            "threads": self.threads is None or self.threads >= 1,
            "ssim_window": self.ssim_window >= 3 and self.ssim_window % 2 == 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        for k, v in asdict(self).items():
            if isinstance(v, float) and not math.isfinite(v):
                bad.append(k)
        if bad:
            raise ValueError(
                f"invalid projection settings: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
            )
        if self.pixel_weight == 0 and self.edge_weight == 0 and self.ssim_weight == 0:
            raise ValueError("projection needs a pixel, edge or SSIM loss (all three weights are 0)")

    def prior_for(self, kind: str) -> float:
        if self.prior_weight is not None:
            return float(self.prior_weight)
        return 0.0 if kind == "w" else 0.01

    def lr_at(self, t: float) -> float:
        """The learning-rate factor at fraction ``t`` of the steps: linear ramp up, half-cosine down."""
        up = min(1.0, t / self.lr_rampup) if self.lr_rampup > 0 else 1.0
        down = min(1.0, (1.0 - t) / self.lr_rampdown) if self.lr_rampdown > 0 else 1.0
        return up * (0.5 - 0.5 * math.cos(math.pi * down))


@dataclass
class ProjectionResult:
    """What :meth:`Projector.project` found for N targets.

    Attributes: ``space`` (the :class:`~sfvq.spaces.LatentSpace`), ``plus`` (W+), ``targets`` (N, C, H,
    W), ``full`` (N, num_ws, full_dim) the projected latents as the space renders them, ``vectors``
    (N, dim) their space vectors (in W+ the mean over layers: the point placed on a curve), ``images``
    (N, C, H, W) the latents rendered through the space (what maps and edits show), ``images_noise`` the
    renders with the fitted noise maps (None when no noise was fitted), ``noise`` the fitted maps,
    ``history`` (per step: mean ``loss``, ``pixel``, ``edge``, ``ssim`` (1 - MS-SSIM), ``prior``,
    ``noise``), ``starts`` (per target: -1 for the mean, -2 for a given start, else the sampled latent
    started from), ``seconds`` and
    ``settings``.
    """

    space: LatentSpace
    plus: bool
    targets: torch.Tensor
    full: torch.Tensor
    vectors: torch.Tensor
    images: torch.Tensor
    images_noise: torch.Tensor | None
    noise: list[torch.Tensor]
    history: dict[str, list[float]]
    starts: list[int]
    seconds: float
    settings: ProjectionSettings

    @property
    def space_name(self) -> str:
        return "w+" if self.plus else self.space.name

    def psnr(self, with_noise: bool = False) -> np.ndarray:
        """PSNR (dB) of each render against its target, both as uint8 images -> (N,)."""
        images = self.images_noise if with_noise and self.images_noise is not None else self.images
        return psnr(images, self.targets)

    def ssim(self, with_noise: bool = False) -> np.ndarray:
        """SSIM (11-px Gaussian window, :func:`sfvq.scorers.image_ssim`) of each render -> (N,)."""
        from sfvq.scorers.ssim import image_ssim

        images = self.images_noise if with_noise and self.images_noise is not None else self.images
        return image_ssim(images, self.targets)

    def summary(self, i: int = 0) -> dict[str, Any]:
        """Figures of target ``i`` as JSON-friendly data."""
        out: dict[str, Any] = {
            "space": self.space_name,
            "psnr": round(float(self.psnr()[i]), 3),
            "ssim": round(float(self.ssim()[i]), 4),
            "start": {-1: "mean", -2: "given"}.get(self.starts[i], f"sampled latent {self.starts[i]}"),
            "final_loss": round(self.history["loss"][-1], 6) if self.history["loss"] else None,
            "seconds": round(self.seconds, 2),
            "steps": self.settings.steps,
        }
        if self.images_noise is not None:
            out["psnr_with_noise"] = round(float(self.psnr(True)[i]), 3)
            out["ssim_with_noise"] = round(float(self.ssim(True)[i]), 4)
        return out


def psnr(images: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """PSNR (dB) between paired images (N, C, H, W) in [-1, 1], compared as uint8 -> (N,)."""
    a = to_uint8(images).astype(np.float64)
    b = to_uint8(targets).astype(np.float64)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), np.inf)


class _Adam:
    """Adam (Kingma and Ba 2015, betas 0.9 and 0.999) on a list of tensors, with the learning rate given
    at each step (a few lines here: ``torch.optim`` pulls in the compiler stack, seconds of imports)."""

    def __init__(self, params: Sequence[torch.Tensor], betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.params = list(params)
        self.b1, self.b2 = betas
        self.m = [torch.zeros_like(q) for q in self.params]
        self.v = [torch.zeros_like(q) for q in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], lrs: Sequence[float], eps: float = 1e-8) -> None:
        """One step; ``lrs``: the learning rate of each tensor."""
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t  # bias corrections
        for q, g, m, v, lr in zip(self.params, grads, self.m, self.v, lrs, strict=True):
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            q.addcdiv_(m, (v / c2).sqrt_().add_(eps), value=-lr / c1)


class Projector:
    """Finds latents of ``space`` whose renders match target images (see the module docstring).

    Args:
        space: the space to project into (its generator, kind, truncation and noise mode).
        plus: W+ (one w per style layer; needs a W space).
        settings: :class:`ProjectionSettings`.
        reference: sampled space vectors (n, dim) (the first ``settings.reference_samples`` are read): their
            mean, spread and per-coordinate std scale the optimisation, and the first ``settings.starts``
            are candidate starts. None: drawn from the space (``settings.reference_samples``, seeded).
    """

    def __init__(
        self,
        space: LatentSpace,
        *,
        plus: bool = False,
        settings: ProjectionSettings | None = None,
        reference: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        self.settings = settings or ProjectionSettings()
        if plus and space.kind != "w":
            raise ValueError(f"W+ projection needs a W space, not {space.name!r}")
        self.space = space
        self.plus = plus
        self.render = differentiable_render(space)
        if reference is None:
            reference = space.sample(self.settings.reference_samples, seed=self.settings.seed, progress=False)
        # the first rows of sampled latents are a random draw already; a copy (a run's may be memory-mapped)
        R = torch.from_numpy(np.array(reference[: self.settings.reference_samples], dtype=np.float32))
        if R.ndim != 2 or R.shape[1] != space.dim or R.shape[0] < 2:
            raise ValueError(f"reference latents must be (n >= 2, {space.dim}), got {tuple(R.shape)}")
        R = R.double()
        self.mean = R.mean(0).float()  # (dim,)
        self.std = R.std(0).clamp_min(1e-8).float()  # (dim,)
        self.spread = float((R - R.mean(0)).square().sum(1).mean().sqrt())  # rms distance from the mean
        self.coord_spread = self.spread / math.sqrt(space.dim)
        self.candidates = torch.cat([self.mean[None], R[: self.settings.starts].float()])  # (S+1, dim)

    # ------------------------------------------------------------------ pieces
    def lift(self, p: torch.Tensor) -> torch.Tensor:
        """Optimised parameters -> full tensors (N, num_ws, full_dim): W+ as is, else the space's lift
        (space vectors (N, dim), differentiably)."""
        if p.ndim == 3:
            return p
        if self.space.kind == "features":
            comps = self.space.pca_components.to(p)  # (k, F)
            return (self.space.pca_mean.to(p) + p @ comps)[:, None, :]
        return p[:, None, :].expand(-1, self.space.num_ws, -1)

    def losses(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image loss of renders against targets at the loss resolution -> (weighted total (N,),
        {"pixel": MSE (N,), "edge": MSE of the error's gradients (N,), "ssim": 1 - MS-SSIM (N,)})."""
        s = self.settings
        x = downsample(images, s.loss_resolution)
        err = x - targets  # (N, C, h, w)
        pixel = err.square().mean(dim=(1, 2, 3))
        edge = (err[..., 1:, :] - err[..., :-1, :]).square().mean(dim=(1, 2, 3))  # vertical neighbours
        edge = edge + (err[..., 1:] - err[..., :-1]).square().mean(dim=(1, 2, 3))  # horizontal
        one_minus = (
            1 - ms_ssim((x + 1) / 2, (targets + 1) / 2, s.ssim_window)
            if s.ssim_weight > 0
            else torch.zeros_like(pixel)
        )
        total = s.pixel_weight * pixel + s.edge_weight * edge + s.ssim_weight * one_minus
        return total, {"pixel": pixel, "edge": edge, "ssim": one_minus}

    @torch.no_grad()
    def choose_starts(self, targets: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The best candidate start per target (by the image loss) -> (starts (N, dim), candidate index
        per target: -1 for the mean, k for reference row k)."""
        s = self.settings
        cand = self.candidates.to(self.space.G.device)
        scores = []
        for part in torch.split(cand, 16):
            imgs = downsample(self.render(self.lift(part)), s.loss_resolution)  # (m, C, h, w)
            for img in imgs:
                scores.append(self.losses(img[None].expand_as(targets), targets)[0])  # (N,)
        best = torch.stack(scores, 1).argmin(1)  # (N,)
        return cand[best].clone(), [int(b) - 1 for b in best]

    def _check_init(self, init: torch.Tensor, n: int) -> torch.Tensor:
        init = torch.as_tensor(init, dtype=torch.float32).detach()
        shapes = [(n, self.space.dim)] + ([(n, self.space.num_ws, self.space.dim)] if self.plus else [])
        if tuple(init.shape) not in shapes:
            raise ValueError(f"init must have shape {' or '.join(map(str, shapes))}, got {tuple(init.shape)}")
        if not bool(torch.isfinite(init).all()):
            raise ValueError("init contains NaN or inf")
        return init.clone()

    # ------------------------------------------------------------------ the optimisation
    def project(
        self,
        targets: torch.Tensor,
        *,
        progress: bool = False,
        callback: Callable[[int, float], None] | None = None,
        init: torch.Tensor | None = None,
    ) -> ProjectionResult:
        """Project targets (N, C, H, W) in [-1, 1] at the generator's resolution -> ProjectionResult.

        ``callback(step, mean loss)`` is called after every step (e.g. to report progress elsewhere).
        ``init``: the latents to start from instead of the best candidates, (N, dim) space vectors (in W+
        copied to every layer) or (N, num_ws, dim) W+ ws, e.g. a W projection refined in W+.
        """
        threads = self.settings.threads
        G = self.space.G
        if threads is None and G.device.type == "cpu" and G.img_resolution <= SMALL_RESOLUTION:
            threads = 1
        before = torch.get_num_threads()
        if threads is not None and threads != before:
            torch.set_num_threads(threads)
        try:
            return self._project(targets, progress, callback, init)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def _project(
        self,
        targets: torch.Tensor,
        progress: bool,
        callback: Callable[[int, float], None] | None,
        init: torch.Tensor | None,
    ) -> ProjectionResult:
        from sfvq.progress import track

        s = self.settings
        G = self.space.G
        targets = torch.as_tensor(targets, dtype=torch.float32)
        shape = (G.img_channels, G.img_resolution, G.img_resolution)
        if targets.ndim != 4 or tuple(targets.shape[1:]) != shape:
            raise ValueError(f"targets must be (N, {', '.join(map(str, shape))}), got {tuple(targets.shape)}")
        started = time.perf_counter()
        dev = G.device
        tgt = downsample(targets.to(dev), s.loss_resolution)  # (N, C, h, w)
        n = targets.shape[0]
        prior_weight = s.prior_for(self.space.kind)
        mean, std = self.mean.to(dev), self.std.to(dev)
        gen = torch.Generator().manual_seed(s.seed)
        with torch.enable_grad():
            if init is None:
                start, starts = self.choose_starts(tgt)
            else:
                start, starts = self._check_init(init, n).to(dev), [-2] * n
            if self.plus and start.ndim == 2:
                start = start[:, None, :].repeat(1, self.space.num_ws, 1)  # (N, L, dim)
            p = start.detach().clone().requires_grad_(True)
            fit_noise = bool(self.render.noise_maps) and s.optimise_noise and self.space.noise_mode == "const"
            noise = [m.to(dev) for m in self.render.constant_noise(n)] if fit_noise else []
            for m in noise:
                m.sub_(m.mean(dim=(2, 3), keepdim=True)).div_(
                    m.square().mean(dim=(2, 3), keepdim=True).sqrt()
                )
                m.requires_grad_(True)
            opt = _Adam([p, *noise])
            keys = ("loss", "pixel", "edge", "ssim", "prior", "noise")
            history: dict[str, list[float]] = {k: [] for k in keys}
            for step in track(range(s.steps), "projecting", total=s.steps, enabled=progress):
                t = step / s.steps
                ramp = s.lr_at(t)
                lrs = [s.lr * self.coord_spread * ramp] + [s.lr * ramp] * len(noise)  # maps: unit variance
                scale = self.spread * s.latent_noise * max(0.0, 1.0 - t / s.noise_ramp) ** 2
                jitter = torch.randn(p.shape, generator=gen).to(dev) * scale
                images = self.render(self.lift(p + jitter), noise if fit_noise else None)
                loss_i, parts = self.losses(images, tgt)  # (N,)
                prior = ((p - mean) / std).square().mean(dim=tuple(range(1, p.ndim)))  # (N,)
                if prior_weight > 0:
                    loss_i = loss_i + prior_weight * prior
                reg = noise_regulariser(noise) if fit_noise else torch.zeros_like(loss_i)
                if fit_noise and s.noise_weight > 0:
                    loss_i = loss_i + s.noise_weight * reg
                grads = torch.autograd.grad(loss_i.sum(), [p, *noise])
                opt.step(grads, lrs)
                with torch.no_grad():
                    for m in noise:  # back to zero mean and unit variance per map
                        m.sub_(m.mean(dim=(2, 3), keepdim=True))
                        m.div_(m.square().mean(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-8))
                history["loss"].append(float(loss_i.detach().mean()))
                for key, value in parts.items():
                    history[key].append(float(value.detach().mean()))
                history["prior"].append(float(prior.detach().mean()))
                history["noise"].append(float(reg.detach().mean()))
                if not math.isfinite(history["loss"][-1]):
                    raise FloatingPointError(
                        f"the projection loss became {history['loss'][-1]} at step {step}"
                    )
                if callback is not None:
                    callback(step, history["loss"][-1])
        with torch.no_grad():
            p = p.detach()
            full = self.lift(p).detach().cpu().contiguous()  # (N, num_ws, full_dim)
            vectors = (p.mean(1) if self.plus else p).cpu()  # (N, dim)
            images = self.space.render_full(full)  # through the space: what maps and edits render
            images_noise = None
            fitted = [m.detach() for m in noise]
            if fit_noise:
                images_noise = self.render(full, fitted).float().cpu()
        return ProjectionResult(
            space=self.space,
            plus=self.plus,
            targets=targets.cpu(),
            full=full,
            vectors=vectors,
            images=images.float().cpu(),
            images_noise=images_noise,
            noise=[m.cpu() for m in fitted],
            history=history,
            starts=starts,
            seconds=time.perf_counter() - started,
            settings=s,
        )


# ---------------------------------------------------------------------------------------------- latent files
def save_projected_w(path: str | Path, ws: np.ndarray | torch.Tensor) -> Path:
    """Write NVIDIA's ``projected_w.npz``: key ``w``, ws (N, num_ws, w_dim) as float32, atomically."""
    from sfvq.io import atomic_open

    arr = np.asarray(ws.detach().cpu() if isinstance(ws, torch.Tensor) else ws, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise LatentFileError(f"projected ws must be (N, num_ws, w_dim), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise LatentFileError("projected ws contain NaN or inf")
    with atomic_open(path, "wb") as f:
        np.savez(f, w=arr)
    return Path(path)


def load_projected_w(path: str | Path, num_ws: int | None = None, w_dim: int | None = None) -> np.ndarray:
    """Read NVIDIA's ``projected_w.npz`` -> ws (N, num_ws, w_dim) float32, checked against ``num_ws`` and
    ``w_dim`` when given; :class:`LatentFileError` names what does not fit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such latent file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "w" not in data.files:
                raise LatentFileError(
                    f"{path} has no array 'w' (holds {sorted(data.files)}); NVIDIA's "
                    "projected_w.npz keeps the ws under 'w'"
                )
            arr = np.asarray(data["w"])
    except LatentFileError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise LatentFileError(f"{path} is not a readable .npz file ({e})") from e
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise LatentFileError(f"{path}: 'w' must be (N, num_ws, w_dim), got shape {arr.shape}")
    if (num_ws is not None and arr.shape[1] != num_ws) or (w_dim is not None and arr.shape[2] != w_dim):
        raise LatentFileError(
            f"{path}: 'w' has shape {arr.shape}, this generator needs (N, {num_ws}, {w_dim})"
        )
    if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
        raise LatentFileError(f"{path}: 'w' must hold finite floats, got {arr.dtype}")
    return arr.astype(np.float32)


@dataclass
class Latent:
    """One latent in a space: ``full`` (1, num_ws, full_dim) as the space renders it, ``vector`` (1, dim)
    the point placed on a curve (in W+ the mean over layers), ``plus`` whether its layers differ."""

    full: torch.Tensor
    vector: torch.Tensor
    plus: bool = False
    source: dict[str, Any] = field(default_factory=dict)


def read_latent(path: str | Path, space: LatentSpace) -> Latent:
    """Read one latent of ``space`` from a file: NVIDIA's ``.npz`` (key ``w``, (1, num_ws, w_dim); a W
    space only) or an ``.npy`` holding a space vector (dim,) or (1, dim), or in a W space the ws of W+
    (num_ws, w_dim) or (1, num_ws, w_dim). :class:`LatentFileError` for a wrong shape or a foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such latent file: {path}")
    suffix = path.suffix.lower()
    L, D = space.num_ws, space.dim
    if suffix == ".npz":
        if space.kind != "w":
            raise LatentFileError(f"{path}: an NVIDIA .npz holds W latents, but this space is {space.name!r}")
        arr = load_projected_w(path, L, D)
        if arr.shape[0] != 1:
            raise LatentFileError(f"{path} holds {arr.shape[0]} latents; give a file with one")
        ws = torch.from_numpy(arr)
    elif suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise LatentFileError(f"{path} is not a readable .npy file ({e})") from e
        if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
            raise LatentFileError(f"{path} must hold finite floats, got {arr.dtype}")
        arr = np.asarray(arr, dtype=np.float32)
        shapes = [(D,), (1, D)] + ([(L, D), (1, L, D)] if space.kind == "w" else [])
        if arr.shape not in shapes:
            want = " or ".join(str(s) for s in shapes)
            raise LatentFileError(
                f"{path} holds an array of shape {arr.shape}; space {space.name!r} needs {want}"
            )
        if arr.size == D:
            v = torch.from_numpy(arr.reshape(1, D))
            return Latent(space.to_full(v), v, False, {"file": str(path)})
        ws = torch.from_numpy(arr.reshape(1, L, D))
    else:
        raise LatentFileError(f"{path}: latent files are .npy (a space vector) or NVIDIA's .npz (W)")
    plus = not bool(torch.allclose(ws, ws[:, :1].expand_as(ws)))
    vector = ws.mean(1) if plus else ws[:, 0]
    return Latent(ws.contiguous(), vector.contiguous(), plus, {"file": str(path)})


# ---------------------------------------------------------------------------------------------- outputs
def loss_figure(history: dict[str, list[float]], path: str | Path) -> Path:
    """The loss per step (total and its parts, log scale) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sfvq.io import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    steps = np.arange(1, len(history["loss"]) + 1)
    labels = {
        "loss": "total",
        "pixel": "pixel MSE",
        "edge": "edge (error gradients)",
        "ssim": "1 - MS-SSIM",
        "noise": "noise regulariser",
    }
    for key, label in labels.items():
        values = np.asarray(history.get(key, []), dtype=np.float64)
        if len(values) and np.any(values > 0):
            ax.plot(steps, np.maximum(values, 1e-12), label=label, lw=1.4 if key == "loss" else 1.0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean over targets)")
    ax.set_title("projection loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def comparison_image(result: ProjectionResult, i: int = 0, min_cell: int = 256) -> Image.Image:
    """Target and projection side by side (and the render with fitted noise, when there is one)."""
    from sfvq.images import labelled_grid

    tiles = [result.targets[i : i + 1], result.images[i : i + 1]]
    labels = ["target", f"projection ({result.psnr()[i]:.1f} dB)"]
    if result.images_noise is not None:
        tiles.append(result.images_noise[i : i + 1])
        labels.append(f"with fitted noise ({result.psnr(True)[i]:.1f} dB)")
    return labelled_grid(to_uint8(torch.cat(tiles)), labels, len(tiles), pad=4, min_cell=min_cell)


def write_projection(
    result: ProjectionResult,
    outdir: str | Path,
    *,
    index: int = 0,
    target: Target | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write target ``index`` of a projection into ``outdir``: ``target.png``, ``projection.png``,
    ``compare.png`` (side by side), ``loss.png``, ``projected.npy`` (+ ``projected.json``: the space
    vector, or the ws in W+), ``projected_w.npz`` (NVIDIA's layout, W and W+) and ``projection.json``
    (figures, settings, alignment, ``meta``). Returns the paths by name."""
    from sfvq.io import save_npy_with_sidecar, save_png, write_json

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    i = index
    paths: dict[str, Path] = {}
    space = result.space
    paths["target"] = save_png(outdir / "target.png", to_uint8(result.targets[i : i + 1])[0])
    paths["projection"] = save_png(outdir / "projection.png", to_uint8(result.images[i : i + 1])[0])
    if result.images_noise is not None:
        paths["projection_noise"] = save_png(
            outdir / "projection_noise.png", to_uint8(result.images_noise[i : i + 1])[0]
        )
    paths["compare"] = save_png(outdir / "compare.png", comparison_image(result, i))
    paths["loss"] = loss_figure(result.history, outdir / "loss.png")
    latent = result.full[i : i + 1] if result.plus else result.vectors[i : i + 1]  # (1, L, D) or (1, dim)
    info = {
        "what": "projected latent: "
        + ("W+ ws (1, num_ws, w_dim)" if result.plus else f"a vector of space {space.name}"),
        "space": space.describe(),
        "plus": result.plus,
        **(meta or {}),
    }
    paths["latent"] = save_npy_with_sidecar(outdir / "projected.npy", latent.numpy(), info)
    if space.kind == "w":
        paths["npz"] = save_projected_w(outdir / "projected_w.npz", result.full[i : i + 1])
    summary = {
        **result.summary(i),
        "settings": asdict(result.settings),
        "target": None if target is None else target.describe(),
        **(meta or {}),
    }
    paths["summary"] = write_json(outdir / "projection.json", summary)
    return paths


__all__ = [
    "ALIGN_MODES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "SMALL_RESOLUTION",
    "SPACES",
    "DifferentiableRender",
    "ImageInputError",
    "Latent",
    "LatentFileError",
    "ProjectionResult",
    "ProjectionSettings",
    "Projector",
    "Target",
    "comparison_image",
    "differentiable_render",
    "fit_square",
    "image_tensor",
    "is_face_generator",
    "load_projected_w",
    "loss_figure",
    "ms_ssim",
    "noise_regulariser",
    "prepare_target",
    "psnr",
    "read_image",
    "read_latent",
    "save_projected_w",
    "ssim_map_mean",
    "write_projection",
]
