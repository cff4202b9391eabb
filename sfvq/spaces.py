"""The latent space a curve lives in, and the exact way back from a vector there to an image.

Four kinds:

* ``w``: StyleGAN's W (``mapping(z)[:, 0]``, the paper's space). Edits may touch a range of the W+ layers.
* ``z``: the generator's input noise. Kept for comparison: a Gaussian z has no structure for a curve.
* ``features``: a layer's activations, flattened and reduced by PCA (the components holding a share of
  the variance, capped), as GANSpace does for generators without a mapping network. Vectors are mapped
  back through the PCA and the rest of the generator runs from that layer (``synthesis_from``).
* ``s``: StyleSpace (StyleGAN2/StyleGAN3): the style codes of every style layer (its affine applied to its
  w) concatenated into one vector of ``G.style_dim`` entries, rendered exactly from the codes
  (``G.synthesis_from_styles_at``). ``s:GROUP`` (``coarse``, ``middle``, ``fine`` or a W+ range ``4-7``,
  :func:`sfvq.parsing.style_group_range`) fits the curve in the codes of the layers reading those W+
  entries only: a curve point renders with the other layers' codes of the mean w (``G.mean_w()``), an
  edit leaves the edited latent's own codes outside the group untouched. The full tensor is the whole S
  vector (n, 1, style_dim); layer ranges do not apply (the group is chosen when the space is made).

Every space turns a *space vector* (N, dim), the thing the curve is fitted to, into a *full* tensor
(N, num_ws, full_dim) that the generator renders; edits add a lifted direction to a full tensor, so an
edit with sigma 0 renders exactly the unedited image (the PCA residual of a seed's features is kept).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfvq.generators.base import Generator
from sfvq.io import atomic_path, write_json
from sfvq.latents import class_vectors, sample_latents, z_for_seeds
from sfvq.membudget import render_batch_size
from sfvq.pca import pca

KINDS = ("w", "z", "features", "s")
SPACE_FILE = "space.json"
PCA_FILE = "space_pca.safetensors"


class LatentSpace:
    """A generator seen through one latent space (see the module docstring).

    Attributes: ``kind``, ``dim`` (space vectors), ``num_ws`` (layers an edit can address; 1 where layer
    ranges do not apply), ``full_dim``, and the sampling settings ``truncation_psi``,
    ``truncation_cutoff``, ``class_idx``, ``noise_mode``. StyleSpace also has ``group`` (None: all
    layers), ``style_range`` (its W+ layers [start, stop)) and ``style_columns`` (its entries [c0, c1) of
    the full S vector). ``kind`` may be given as ``"s:GROUP"`` instead of ``kind="s", group=GROUP``.
    """

    def __init__(
        self,
        G: Generator,
        kind: str,
        *,
        layer: str | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        class_idx: int | None = None,
        noise_mode: str = "const",
        pca_mean: torch.Tensor | None = None,
        pca_components: torch.Tensor | None = None,
        pca_explained: float | None = None,
        feature_shape: tuple[int, ...] | None = None,
        group: str | None = None,
    ) -> None:
        from sfvq.parsing import parse_style_group, split_space_name

        kind, named_group = split_space_name(kind)
        if named_group is not None and group is not None and named_group != parse_style_group(group):
            raise ValueError(f"space s:{named_group} was given a second group {group!r}")
        group = named_group if named_group is not None else group
        if group is not None and kind != "s":
            raise ValueError(f"only StyleSpace (s) takes a layer group, got group {group!r} for {kind!r}")
        if kind not in KINDS:
            raise ValueError(f"space must be one of {KINDS}, got {kind!r}")
        if kind == "w" and "w" not in G.spaces:
            raise ValueError(f"{G.name} has no mapping network, so no W space; use 'features' or 'z'")
        if kind == "features":
            layer = layer or G.layers[0]
            if layer not in G.layers:
                raise ValueError(f"unknown layer {layer!r} for {G.name}; layers: {', '.join(G.layers)}")
        self.G = G
        self.kind = kind
        self.layer = layer if kind == "features" else None
        self.truncation_psi = float(truncation_psi)
        self.truncation_cutoff = truncation_cutoff
        self.class_idx = class_idx
        self.noise_mode = noise_mode
        self.pca_mean = pca_mean  # (F,)
        self.pca_components = pca_components  # (k, F), orthonormal rows
        self.pca_explained = pca_explained
        self.feature_shape = feature_shape  # (C, H, W) of the layer
        self.group: str | None = None
        self.style_range: tuple[int, int] | None = None  # W+ layers [start, stop) of the group
        self.style_columns: tuple[int, int] | None = None  # its entries [c0, c1) of the full S vector
        self._mean_styles: torch.Tensor | None = None  # (style_dim,) S of the mean w, on the CPU
        if kind == "s":
            self._init_styles(group)
        elif kind == "w":
            self.num_ws, self.full_dim, self.dim = G.num_ws, int(G.w_dim), int(G.w_dim)
        elif kind == "z":
            self.num_ws, self.full_dim, self.dim = 1, G.z_dim, G.z_dim
        else:
            self.num_ws = 1
            self.full_dim = None if pca_components is None else int(pca_components.shape[1])
            self.dim = None if pca_components is None else int(pca_components.shape[0])

    def _init_styles(self, group: str | None) -> None:
        """StyleSpace: check that G has one, resolve the group to W+ layers and S columns."""
        from sfvq.latents import style_columns
        from sfvq.parsing import parse_style_group

        G = self.G
        if "s" not in G.spaces or not hasattr(G, "synthesis_from_styles_at"):
            raise ValueError(
                f"{G.name} has no StyleSpace (the style codes of a StyleGAN2/StyleGAN3 network); "
                "use w, z or features"
            )
        self.group = None if group is None else parse_style_group(group)
        self.style_range, self.style_columns = style_columns(G, self.group)
        c0, c1 = self.style_columns
        self.num_ws, self.full_dim, self.dim = 1, int(G.style_dim), c1 - c0

    def mean_styles(self) -> torch.Tensor:
        """StyleSpace: the full S vector of the mean w (style_dim,) on the CPU, which fills the layers
        outside the group when a space vector is lifted (:meth:`to_full`)."""
        if self._mean_styles is None:
            ws = self.G.mean_w()[None, None, :].expand(1, self.G.num_ws, -1)  # (1, num_ws, w_dim)
            self._mean_styles = self.G.styles(ws)[0].float().cpu()  # (style_dim,)
        return self._mean_styles

    def _styles_of_z(self, z: torch.Tensor) -> torch.Tensor:
        """StyleSpace: z (n, z_dim) -> full S vectors (n, style_dim) on the CPU, truncated as in a plain
        forward pass (mapping with the space's psi and cutoff)."""
        z = z.to(self.G.device)
        ws = self.G.mapping(z, self._c(z.shape[0]), self.truncation_psi, self.truncation_cutoff)
        return self.G.styles(ws).float().cpu()  # (n, style_dim)

    # ------------------------------------------------------------------ description
    @property
    def name(self) -> str:
        if self.kind == "s":
            return "s" if self.group is None else f"s:{self.group}"
        return f"features:{self.layer}" if self.kind == "features" else self.kind

    @property
    def fitted(self) -> bool:
        return self.kind != "features" or self.pca_components is not None

    def describe(self) -> dict[str, Any]:
        """JSON-friendly settings (what ``save`` writes to space.json)."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "layer": self.layer,
            "dim": self.dim,
            "num_ws": self.num_ws,
            "full_dim": self.full_dim,
            "truncation_psi": self.truncation_psi,
            "truncation_cutoff": self.truncation_cutoff,
            "class_idx": self.class_idx,
            "noise_mode": self.noise_mode,
            "generator": self.G.name,
        }
        if self.kind == "features":
            d.update(pca_explained=self.pca_explained, feature_shape=list(self.feature_shape or ()))
        if self.kind == "s":
            d.update(
                group=self.group,
                style_range=list(self.style_range or ()),
                style_columns=list(self.style_columns or ()),
            )
        return d

    # ------------------------------------------------------------------ sampling
    def _c(self, n: int) -> torch.Tensor | None:
        return class_vectors(self.G, self.class_idx, n)

    def _features_of_z(self, z: torch.Tensor) -> torch.Tensor:
        """Flattened activations at the layer for z (n, z_dim) as sampled -> (n, F).

        Truncation acts as it does in a plain forward pass, the generator's way (``G.features_of_z``:
        e.g. the DCGAN scales z in its mapping; BigGAN's z already is noise times psi, and psi picks its
        BatchNorm statistics).
        """
        z = z.to(self.G.device)
        c = self._c(z.shape[0])
        f = self.G.features_of_z(z, c, self.layer, self.truncation_psi, self.truncation_cutoff)
        if self.feature_shape is None:
            self.feature_shape = tuple(f.shape[1:])
        return f.reshape(f.shape[0], -1).float()

    def sample(
        self,
        n: int,
        seed: int = 0,
        *,
        batch_size: int = 256,
        progress: bool = True,
        pca_variance: float = 0.95,
        pca_max: int = 300,
        pca_samples: int = 10_000,
    ) -> np.ndarray:
        """Space vectors for ``n`` latents drawn from one seeded stream -> (n, dim) float32.

        For a feature space this also fits the PCA when it has none yet, on the first ``pca_samples`` of
        these samples (they are already a random draw; the fit's cost grows with the rows it sees).
        A StyleSpace maps the same seeded z stream as W does and keeps its group's columns.
        """
        if self.kind == "s":
            from sfvq.latents import check_truncation, class_vectors
            from sfvq.progress import track

            check_truncation(self.G, self.truncation_psi, self.truncation_cutoff)
            class_vectors(self.G, self.class_idx, 1)  # a bad class fails before any work
            c0, c1 = self.style_columns
            out = np.empty((n, self.dim), dtype=np.float32)
            stream = self.G.z_stream(n, seed, self.truncation_psi, batch_size)
            starts = range(0, n, batch_size)
            for start in track(starts, f"sampling {self.name}", total=len(starts), enabled=progress):
                z = torch.from_numpy(np.asarray(next(stream), dtype=np.float32))  # (b, z_dim)
                out[start : start + z.shape[0]] = self._styles_of_z(z)[:, c0:c1].numpy()  # (b, dim)
            return out
        if self.kind in ("w", "z"):
            return np.asarray(
                sample_latents(
                    self.G,
                    n,
                    self.kind,
                    seed,
                    self.truncation_psi,
                    self.truncation_cutoff,
                    self.class_idx,
                    batch_size,
                    progress=progress,
                )
            )
        z = sample_latents(
            self.G,
            n,
            "z",
            seed,
            self.truncation_psi,
            self.truncation_cutoff,
            self.class_idx,
            batch_size,
            progress=False,
        )
        from sfvq.progress import track

        chunks = range(0, n, batch_size)
        feats = torch.cat(
            [
                self._features_of_z(torch.from_numpy(np.asarray(z[i : i + batch_size])))
                for i in track(chunks, f"features at {self.layer}", total=len(chunks), enabled=progress)
            ]
        )  # (n, F)
        if self.pca_components is None:
            self.fit_pca(feats[:pca_samples], pca_variance, pca_max)
        return self.reduce(feats).cpu().numpy()

    def fit_pca(self, feats: torch.Tensor, variance: float = 0.95, max_components: int = 300) -> None:
        """PCA of flattened features (n, F): keep the fewest components holding ``variance`` of the
        total, at most ``max_components`` (randomised SVD; exact when F or n is small)."""
        if not 0 < variance <= 1:
            raise ValueError(f"pca variance share must lie in (0, 1], got {variance}")
        p = pca(feats, max_components, niter=2)
        share = p.explained.double().cumsum(0)  # (k,) variance held by the first j+1 components
        k = min(int((share < variance).sum()) + 1, share.numel())
        self.pca_components = p.components[:k]  # (k, F)
        self.pca_mean = p.mean
        self.pca_explained = float(share[k - 1].clamp(max=1.0))
        self.dim, self.full_dim = k, feats.shape[1]

    def reduce(self, feats: torch.Tensor) -> torch.Tensor:
        """Flattened features (n, F) -> PCA coordinates (n, k)."""
        return (feats - self.pca_mean.to(feats)) @ self.pca_components.to(feats).T

    # ------------------------------------------------------------------ to images
    def to_full(self, v: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Space vectors (n, dim) -> full tensors (n, num_ws, full_dim) the generator renders."""
        v = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v, dtype=torch.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"expected space vectors of shape (N, {self.dim}), got {tuple(v.shape)}")
        if self.kind == "features":
            v = self.pca_mean + v @ self.pca_components  # (n, F)
        elif self.kind == "s":
            c0, c1 = self.style_columns
            full = self.mean_styles().expand(v.shape[0], -1).clone()  # (n, style_dim): the mean w's codes
            full[:, c0:c1] = v  # the group's codes
            v = full
        return v[:, None, :].expand(-1, self.num_ws, -1).contiguous()

    def direction_to_full(self, d: torch.Tensor | np.ndarray) -> torch.Tensor:
        """A direction in the space (dim,) -> the same direction in the full space (full_dim,)."""
        d = torch.as_tensor(d, dtype=torch.float32).reshape(-1)
        if d.numel() != self.dim:
            raise ValueError(f"a direction in this space has {self.dim} entries, got {d.numel()}")
        if self.kind == "s":
            full = torch.zeros(self.full_dim)  # (style_dim,): no change outside the group
            full[self.style_columns[0] : self.style_columns[1]] = d
            return full
        return d @ self.pca_components if self.kind == "features" else d

    def encode_seeds(self, seeds: Sequence[int]) -> torch.Tensor:
        """Full tensors of the latents of NVIDIA-style seeds -> (n, num_ws, full_dim)."""
        z = torch.from_numpy(z_for_seeds(self.G, list(seeds), self.truncation_psi)).to(self.G.device)
        if self.kind == "features":
            return self._features_of_z(z)[:, None, :].cpu()
        if self.kind == "z":
            return z[:, None, :].float().cpu()
        if self.kind == "s":
            return self._styles_of_z(z)[:, None, :]  # (n, 1, style_dim)
        ws = self.G.mapping(z, self._c(len(seeds)), self.truncation_psi, self.truncation_cutoff)
        return ws.float().cpu()  # (n, num_ws, w_dim)

    @torch.no_grad()
    def render_full(
        self, full: torch.Tensor, batch_size: int | None = None, resolution: int | None = None
    ) -> torch.Tensor:
        """Full tensors (n, num_ws, full_dim) -> images (n, C, H, W) on the CPU.

        ``batch_size`` images at a time (None: as many as the memory budget allows), never more than
        :func:`sfvq.membudget.render_batch_size` allows for this generator.
        ``resolution``: images at that many pixels on the longer side (None: the generator's full size),
        rendered the generator's way (:meth:`~sfvq.generators.base.Generator.synthesis_at`: a StyleGAN2
        stops at that block, other generators render at full size and downsample).
        """
        out = []
        batch_size = render_batch_size(self.G, batch_size)
        for part in torch.split(torch.as_tensor(full, dtype=torch.float32), batch_size):
            part = part.to(self.G.device)
            n = part.shape[0]
            if self.kind == "w":
                img = self.G.synthesis_at(part, resolution, noise_mode=self.noise_mode)
            elif self.kind == "s":
                img = self.G.synthesis_from_styles_at(part[:, 0], resolution, noise_mode=self.noise_mode)
            elif self.kind == "z":
                # The plain forward pass: mapping applies (or, where z carries it, records) truncation.
                ws = self.G.mapping(part[:, 0], self._c(n), self.truncation_psi, self.truncation_cutoff)
                img = self.G.synthesis_at(ws, resolution, noise_mode=self.noise_mode)
            else:
                # A curve point or an edit was produced by no single z: the generator renders it its way
                # (clamping layers that end in a ReLU; BigGAN conditions later blocks on z's mean).
                f = part[:, 0].reshape(n, *self.feature_shape)
                img = self.G.render_features_at(
                    self.layer, f, self._c(n), self.truncation_psi, self.noise_mode, resolution
                )
            out.append(img.float().cpu())
        return torch.cat(out)

    def render(
        self, v: torch.Tensor | np.ndarray, batch_size: int | None = None, resolution: int | None = None
    ) -> torch.Tensor:
        """Space vectors (n, dim) -> images (n, C, H, W) (at ``resolution`` px, as :meth:`render_full`)."""
        return self.render_full(self.to_full(v), batch_size, resolution)

    def edit(
        self, full: torch.Tensor, direction: torch.Tensor, sigma: float, layers: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``full[:, start:stop] + sigma * direction`` (direction in the space, lifted); other layers kept."""
        start, stop = layers if layers is not None else (0, self.num_ws)
        if not 0 <= start < stop <= self.num_ws:
            raise ValueError(
                f"layer range {start}-{stop - 1} is outside this space's layers 0-{self.num_ws - 1}"
            )
        out = full.clone()
        out[:, start:stop] += sigma * self.direction_to_full(direction).to(out)
        return out

    @torch.no_grad()
    def render_edits(
        self,
        full: torch.Tensor,
        directions: torch.Tensor | Sequence[Any],
        sigmas: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor,
        layers: tuple[int, int] | None | Sequence[tuple[int, int] | None] = None,
        batch_size: int = 32,
        resolution: int | None = None,
    ) -> torch.Tensor:
        """Seeds edited along directions and rendered: the one edit-and-render of sfvq.

        ``full`` (S, num_ws, full_dim) are the seeds' full tensors (:meth:`encode_seeds`); ``directions``
        (M, dim) or M vectors (dim,) in the space; ``sigmas`` T raw step sizes shared by every direction, or
        (M, T) one row per direction (e.g. scaled by each direction's std); ``layers`` one range
        (start, stop), None for all layers, or M of those, one per direction. Returns images
        (S, M, T, C, H, W) on the CPU: ``[s, m, t]`` is seed s moved by ``sigmas[t]`` (or ``sigmas[m][t]``)
        along direction m (:meth:`edit`); sigma 0 renders the unedited image. ``resolution``: as in
        :meth:`render_full`.

        Noise: each (direction, sigma) column of seeds is rendered from the same random state (a forked
        RNG seeded 0), so with ``noise_mode`` random a seed keeps its noise across the whole grid (only the
        edit differs), results do not depend on the global RNG and leave it untouched.
        """
        full = torch.as_tensor(full, dtype=torch.float32)
        if full.ndim != 3:
            raise ValueError(f"expected full tensors (S, num_ws, full_dim), got shape {tuple(full.shape)}")
        vectors = list(directions.unbind(0) if isinstance(directions, torch.Tensor) else directions)
        M = len(vectors)
        if M == 0:
            raise ValueError("no directions to edit along")
        steps = torch.as_tensor(sigmas, dtype=torch.float64)  # (T,) or (M, T)
        if steps.ndim == 1:
            steps = steps.expand(M, -1)
        if steps.ndim != 2 or steps.shape[0] != M or steps.shape[1] == 0:
            raise ValueError(f"sigmas must be (T,) or ({M}, T) with T >= 1, got shape {tuple(steps.shape)}")
        shared = layers is None or (len(layers) == 2 and all(isinstance(i, int) for i in layers))
        ranges = [layers] * M if shared else list(layers)  # type: ignore[arg-type]
        if len(ranges) != M:
            raise ValueError(f"got {len(ranges)} layer ranges for {M} directions")
        columns = []
        for m in range(M):
            for t in range(steps.shape[1]):
                edited = self.edit(full, vectors[m], float(steps[m, t]), ranges[m])  # (S, L, F)
                with torch.random.fork_rng():
                    torch.manual_seed(0)  # the same noise in every column: only the edit differs
                    columns.append(self.render_full(edited, batch_size, resolution))  # (S, C, H, W)
        images = torch.stack(columns, 1)  # (S, M * T, C, H, W)
        return images.reshape(full.shape[0], M, steps.shape[1], *images.shape[2:])

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write space.json (and the PCA as safetensors for a feature space) into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        if self.kind == "features":
            with atomic_path(directory / PCA_FILE) as tmp:
                save_file(
                    {"mean": self.pca_mean.cpu().contiguous(), "components": self.pca_components.cpu()},
                    str(tmp),
                )
        return write_json(directory / SPACE_FILE, self.describe())

    @classmethod
    def load(cls, directory: str | Path, G: Generator) -> LatentSpace:
        """Read a space saved by :meth:`save` for generator ``G``; errors name what is wrong."""
        directory = Path(directory)
        path = directory / SPACE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory} has no {SPACE_FILE}: not an sfvq run directory")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        kw: dict[str, Any] = {}
        if d.get("kind") == "features":
            from safetensors.torch import load_file

            pca = load_file(str(directory / PCA_FILE))
            kw = {
                "pca_mean": pca["mean"],
                "pca_components": pca["components"],
                "pca_explained": d.get("pca_explained"),
                "feature_shape": tuple(d["feature_shape"]),
            }
        space = cls(
            G,
            d["kind"],
            layer=d.get("layer"),
            truncation_psi=d.get("truncation_psi", 1.0),
            truncation_cutoff=d.get("truncation_cutoff"),
            class_idx=d.get("class_idx"),
            noise_mode=d.get("noise_mode", "const"),
            group=d.get("group") if d.get("kind") == "s" else None,
            **kw,
        )
        if space.dim != d.get("dim") or (d.get("full_dim") is not None and space.full_dim != d["full_dim"]):
            raise ValueError(
                f"{path} describes a {d.get('dim')}-D space but {G.name} gives {space.dim}-D: "
                "wrong generator?"
            )
        return space


def default_space(G: Generator) -> str:
    """The paper's choice: W where there is a mapping network, else the first layer's features."""
    return "w" if "w" in G.spaces else "features"


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise if x holds NaN or inf (a generator that blew up must not produce a report that looks fine)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contains NaN or inf")


__all__ = ["KINDS", "LatentSpace", "check_finite", "default_space"]
