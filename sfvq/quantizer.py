"""The SFVQ estimator: fit an ordered codebook (a piece-wise linear curve) to latent vectors.

scikit-learn conventions: ``__init__`` only stores settings, ``fit`` returns ``self``, learned state ends
in ``_``, methods used before ``fit`` raise :class:`NotFittedError`, randomness goes through
``random_state``. Inputs may be numpy arrays or torch tensors (float32 or float64); outputs come back in
the same kind, and torch work runs on the input's device.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfvq import curve
from sfvq.atomic import atomic_path
from sfvq.threads import ThreadPicker

FORMAT_NAME = "sfvq.curve"
FORMAT_VERSION = 1
MIN_BITS, MAX_BITS = 2, 16

ArrayLike = np.ndarray | torch.Tensor

# The default schedule, chosen by benchmarks/run.py (workload aniso512): 2 passes a stage with batches
# of 2048 reach a lower error than the authors' 5 passes with batches of 64, in a fraction of the time.
DEFAULT_SCHEDULE: dict[str, Any] = {"epochs": 2, "batch_size": 2048, "lr": 2e-2}


class NotFittedError(RuntimeError):
    """A method that needs a fitted curve was called before ``fit``."""


class ModelFileError(ValueError):
    """A file that is not a readable sfvq model."""


def check_bits(bits: Any, name: str = "bits") -> int:
    """Return ``bits`` as an int in [2, 16] or raise a ValueError saying why not."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"{name} must lie in [{MIN_BITS}, {MAX_BITS}] (4 to 65,536 corners), got {bits}")
    return int(bits)


def as_matrix(X: ArrayLike, name: str = "X", device: torch.device | str | None = None) -> torch.Tensor:
    """Validate a 2-D float matrix and return it as a torch tensor (no copy when possible).

    Errors name the problem: wrong type, wrong ndim, empty, non-float dtype, NaN or inf (with the
    number of affected rows).
    """
    if isinstance(X, np.ndarray):
        if X.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold numbers, got numpy dtype {X.dtype}")
        # Read-only arrays (memory maps) are copied: torch tensors must be writable.
        t = torch.from_numpy(np.ascontiguousarray(X) if X.flags.writeable else np.array(X))
    elif isinstance(X, torch.Tensor):
        t = X.detach()
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(X).__name__}")
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features), got {t.ndim}-D with shape {tuple(t.shape)}"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    if device is not None:
        t = t.to(device)
    # A finite sum proves every entry finite, without allocating an (N, D) mask; only an inf/NaN sum
    # (or an overflowing one) pays for the row-by-row check.
    if not bool(torch.isfinite(t.sum())):
        finite = torch.isfinite(t).all(dim=1)  # (N,)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten()
            raise ValueError(
                f"{name} contains NaN or inf in {bad.numel()} of {t.shape[0]} rows "
                f"(first bad row: {int(bad[0])}); remove or repair them before fitting"
            )
    return t


def _like(out: torch.Tensor, X: ArrayLike) -> ArrayLike:
    """Return ``out`` as numpy when the caller passed numpy."""
    return out.cpu().numpy() if isinstance(X, np.ndarray) else out


FitCallback = Callable[[str, dict[str, Any]], None]


class _Adam:
    """Adam (Kingma & Ba) on one tensor, updated in place with a gradient we computed ourselves.

    The same update as ``torch.optim.Adam`` with its defaults (tested against it); written out because
    torch's optimizers import ``torch._dynamo`` on their first step, over a second of start-up for every
    fit in a fresh process.
    """

    def __init__(self, param: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param = param
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = torch.zeros_like(param)  # first moment
        self.v = torch.zeros_like(param)  # second moment
        self.t = 0

    def step(self, grad: torch.Tensor, lr: float) -> None:
        self.t += 1
        self.m.lerp_(grad, 1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        bias1 = 1 - self.b1**self.t
        bias2 = 1 - self.b2**self.t
        denom = self.v.sqrt().div_(math.sqrt(bias2)).add_(self.eps)  # torch's order of operations
        self.param.addcdiv_(self.m, denom, value=-lr / bias1)


class SFVQ:
    """Space-filling vector quantizer: a curve of ``2**bits`` ordered corners grown by doubling.

    Parameters:
        bits: final bitrate, 2..16 (4..65,536 corners). Every bitrate from 2 up is kept.
        epochs: passes over the data per stage (bitrate).
        batch_size: samples per optimisation step.
        lr: Adam learning rate at the start of each stage.
        lr_milestones, lr_gamma: the rate is multiplied by ``lr_gamma`` at each fraction of the stage.
        init: "data" (norm-sorted chunks of the data) or "gaussian" (the same rule on N(0, I) samples,
            as in the authors' script).
        eps: distance along the curve of each new twin corner when the curve doubles.
        assign: "dithered" (one random point per segment, redrawn every step; the published method) or
            "exact" (each sample pulls on its exact projection).
        init_samples: at most this many rows (a random subset) feed the initialisation.
        random_state: seed for the initialisation subset, dithers and shuffling.
        device: where to fit; None follows the data.
        verbose: show a progress bar during ``fit``.
    """

    def __init__(
        self,
        bits: int = 6,
        *,
        epochs: int = DEFAULT_SCHEDULE["epochs"],
        batch_size: int = DEFAULT_SCHEDULE["batch_size"],
        lr: float = DEFAULT_SCHEDULE["lr"],
        lr_milestones: tuple[float, ...] = (0.6, 0.8),
        lr_gamma: float = 0.5,
        init: str = "data",
        eps: float = 0.01,
        assign: str = "dithered",
        init_samples: int = 100_000,
        random_state: int | None = None,
        device: str | torch.device | None = None,
        verbose: bool = True,
    ) -> None:
        self.bits = bits
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_milestones = lr_milestones
        self.lr_gamma = lr_gamma
        self.init = init
        self.eps = eps
        self.assign = assign
        self.init_samples = init_samples
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ settings
    def get_params(self) -> dict[str, Any]:
        """The constructor settings, JSON-friendly."""
        p = {k: getattr(self, k) for k in _PARAM_NAMES}
        p["lr_milestones"] = list(p["lr_milestones"])
        p["device"] = None if p["device"] is None else str(p["device"])
        return p

    def _check_params(self) -> None:
        check_bits(self.bits)
        for name in ("epochs", "batch_size", "init_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.init not in ("data", "gaussian"):
            raise ValueError(f"init must be 'data' or 'gaussian', got {self.init!r}")
        if self.assign not in ("dithered", "exact"):
            raise ValueError(f"assign must be 'dithered' or 'exact', got {self.assign!r}")
        if not 0 < self.eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {self.eps!r}")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones must be fractions in (0, 1), got {self.lr_milestones!r}")

    # ------------------------------------------------------------------ fitting
    def fit(self, X: ArrayLike, y: Any = None, *, callback: FitCallback | None = None) -> SFVQ:
        """Grow the curve from 4 corners to ``2**bits`` by doubling, training after each doubling.

        ``callback(event, info)`` receives "stage_start", "step", "epoch_end" and "stage_end" events;
        with ``verbose=True`` and no callback a progress bar is shown.
        """
        self._check_params()
        x = as_matrix(X, device=self.device)
        N, D = x.shape
        K_final = 2**self.bits
        if N < K_final:
            raise ValueError(
                f"too few samples: {N} rows for a {self.bits}-bit curve ({K_final} corners); "
                f"need at least {K_final}"
            )
        x = x.to(torch.float32)
        gen = torch.Generator(device=x.device)
        gen.manual_seed(self.random_state if self.random_state is not None else int(torch.seed() % 2**63))

        progress = None
        if callback is None and self.verbose:
            from sfvq.progress import FitProgress

            progress = FitProgress(self.bits, self.epochs)
            callback = progress
        emit = callback or (lambda event, info: None)

        self.n_features_in_ = D
        self.n_samples_fit_ = N
        self.total_variance_ = float((x - x.mean(0)).square_().sum(dtype=torch.float64)) / N
        self.codebooks_: dict[int, torch.Tensor] = {}
        self.history_: list[dict[str, Any]] = []
        try:
            codebook = self._initial_codebook(x, gen)
            for b in range(2, self.bits + 1):
                if b > 2:
                    codebook = curve.double(codebook, self.eps)
                start = time.perf_counter()
                codebook, losses = self._train_stage(x, codebook, gen, b, emit)
                seconds = time.perf_counter() - start
                self.codebooks_[b] = codebook.detach().clone()
                proj = curve.project(x, codebook)
                usage = curve.segment_usage(proj.segment, codebook.shape[0] - 1)
                stage = {
                    "bits": b,
                    "loss": losses,
                    "seconds": seconds,
                    "mse": float(proj.sqdist.double().mean()),
                    "perplexity": curve.perplexity(usage),
                    "used_segments": int((usage > 0).sum()),
                }
                self.history_.append(stage)
                emit("stage_end", dict(stage))
        finally:
            if progress is not None:
                progress.close()
        self.usage_ = usage.cpu().numpy()
        self.perplexity_ = self.history_[-1]["perplexity"]
        return self

    def _initial_codebook(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Four corners by the norm-sorting rule, on a random subset of the data (or on N(0, I))."""
        N, D = x.shape
        n = min(N, self.init_samples)
        if self.init == "gaussian":
            sample = torch.randn(n, D, generator=gen, device=x.device)
        else:
            sample = x if n == N else x[torch.randperm(N, generator=gen, device=x.device)[:n]]
        return curve.init_by_norm(sample, 4)

    def _lr_at(self, step: int, total: int) -> float:
        passed = sum(step >= int(m * total) for m in self.lr_milestones)
        return self.lr * self.lr_gamma**passed

    def _train_stage(
        self, x: torch.Tensor, codebook: torch.Tensor, gen: torch.Generator, bits: int, emit: FitCallback
    ) -> tuple[torch.Tensor, list[float]]:
        """One stage: a fresh Adam over ``epochs`` passes, rate stepped down at the milestones."""
        N = x.shape[0]
        B = min(self.batch_size, N)
        steps_per_epoch = math.ceil(N / B)
        total = self.epochs * steps_per_epoch
        C = codebook.detach().clone()  # (K, D)
        opt = _Adam(C)
        xx = torch.linalg.vecdot(x, x)  # (N,) squared norms, for the reported loss
        emit("stage_start", {"bits": bits, "epochs": self.epochs, "steps": total})
        losses: list[float] = []
        step = 0
        with ThreadPicker("sfvq.fit") as picker:  # many small ops a step: see sfvq.threads
            for epoch in range(self.epochs):
                perm = torch.randperm(N, generator=gen, device=x.device)
                total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
                for idx in torch.split(perm, B):
                    with picker.step():
                        loss, grad = self._batch_loss_and_grad(x[idx], C, gen, xx[idx])
                        opt.step(grad, self._lr_at(step, total))
                        total_loss += loss.double() * idx.numel()
                    step += 1
                    emit("step", {"bits": bits, "epoch": epoch, "step": step, "loss": loss})
                losses.append(float(total_loss) / N)
                emit("epoch_end", {"bits": bits, "epoch": epoch, "loss": losses[-1]})
        return C, losses

    def _batch_loss_and_grad(
        self, xb: torch.Tensor, C: torch.Tensor, gen: torch.Generator, xx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss ``mean ||x - xhat||^2`` of a batch (B, D) and its gradient with respect to C (K, D).

        ``xhat = (1 - lam) c_k + lam c_{k+1}`` is linear in the codebook, so the gradient has a closed
        form: each assigned point is pulled towards the mean of its samples, and the pull is shared by
        the segment's two corners with weights ``1 - lam`` and ``lam``. Written out rather than left to
        autograd, it costs one scatter-add of the batch beside the distance product (tested against
        autograd).
        """
        B = xb.shape[0]
        S = C.shape[0] - 1
        if self.assign == "dithered":
            lam = torch.rand(S, generator=gen, device=C.device)  # (S,) one dither a segment, per step
            P = curve.dithered_points(C, lam)  # (S, D)
            scores = torch.addmm((P * P).sum(1), xb, P.T, alpha=-2)  # (B, S): ||x - p||^2 - ||x||^2
            best, j = scores.min(1)  # (B,)
            xx = torch.linalg.vecdot(xb, xb) if xx is None else xx  # (B,)
            loss = (best + xx).mean()
            counts = torch.bincount(j, minlength=S).to(C.dtype)  # (S,)
            sums = torch.zeros_like(P).index_add_(0, j, xb)  # (S, D) sum of samples per point
            gP = (counts.unsqueeze(1) * P - sums) * (2 / B)  # (S, D) dL/dP
            g_start, g_end = (1 - lam).unsqueeze(1) * gP, lam.unsqueeze(1) * gP  # shares of c_k, c_{k+1}
        else:
            proj = curve.project(xb, C)
            seg, lam = proj.segment, proj.lam.unsqueeze(1)  # (B,), (B, 1)
            loss = proj.sqdist.mean()
            r = (proj.points - xb) * (2 / B)  # (B, D) dL/dxhat
            g_start = torch.zeros(S, C.shape[1], dtype=C.dtype, device=C.device).index_add_(
                0, seg, r * (1 - lam)
            )
            g_end = torch.zeros_like(g_start).index_add_(0, seg, r * lam)
        grad = torch.zeros_like(C)
        grad[:-1] += g_start
        grad[1:] += g_end
        return loss, grad

    # ------------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not getattr(self, "codebooks_", None):
            raise NotFittedError("this SFVQ is not fitted yet: call fit(X) or SFVQ.load(path) first")

    def _codebook(self, bits: int | None) -> torch.Tensor:
        self._check_fitted()
        if bits is None:
            return self.codebook_
        if bits not in self.codebooks_:
            raise ValueError(f"no codebook at {bits} bits; this model has bits {sorted(self.codebooks_)}")
        return self.codebooks_[bits]

    @property
    def codebook_(self) -> torch.Tensor:
        """The final codebook, (2**bits, D)."""
        self._check_fitted()
        return self.codebooks_[max(self.codebooks_)]

    def _input(self, X: ArrayLike) -> torch.Tensor:
        self._check_fitted()
        x = as_matrix(X)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, but this SFVQ was fitted on {self.n_features_in_}"
            )
        return x

    def project(self, X: ArrayLike, method: str = "exact", bits: int | None = None) -> curve.Projection:
        """Full projection result (torch tensors on X's device): points, segment, lam, sqdist, t."""
        x = self._input(X)
        return curve.project(x, self._codebook(bits), method=method)

    def quantize(self, X: ArrayLike, method: str = "exact", bits: int | None = None) -> ArrayLike:
        """Nearest point on the curve for each row of X -> (N, D)."""
        return _like(self.project(X, method, bits).points, X)

    def transform(self, X: ArrayLike, method: str = "exact", bits: int | None = None) -> ArrayLike:
        """Fractional curve index t in [0, K-1] of each row's nearest point -> (N,)."""
        return _like(self.project(X, method, bits).t, X)

    def inverse_transform(self, t: ArrayLike, bits: int | None = None) -> ArrayLike:
        """Points of the curve at fractional indices t (N,) -> (N, D)."""
        C = self._codebook(bits)
        tt = torch.as_tensor(t)
        if tt.ndim != 1:
            raise ValueError(f"t must be 1-D (n_samples,), got shape {tuple(tt.shape)}")
        tt = tt.to(torch.float64 if tt.dtype == torch.float64 else torch.float32)
        if not bool(torch.isfinite(tt).all()):
            raise ValueError("t contains NaN or inf")
        K = C.shape[0]
        if tt.numel() and (float(tt.min()) < 0 or float(tt.max()) > K - 1):
            raise ValueError(
                f"t must lie in [0, {K - 1}] for a {K}-corner curve, got [{float(tt.min())}, "
                f"{float(tt.max())}]"
            )
        return _like(curve.decode(C.to(device=tt.device, dtype=tt.dtype), tt), t)

    def predict(self, X: ArrayLike, bits: int | None = None) -> ArrayLike:
        """Index of the nearest corner for each row of X -> (N,) int64."""
        x = self._input(X)
        return _like(curve.nearest_corner(x, self._codebook(bits)), X)

    def directions(self, bits: int | None = None, normalize: bool = True) -> torch.Tensor:
        """Segment vectors ``c_{k+1} - c_k`` -> (K-1, D); unit length when ``normalize`` (zero stays zero)."""
        C = self._codebook(bits)
        d = C[1:] - C[:-1]  # (S, D)
        if normalize:
            n = d.norm(dim=1, keepdim=True)
            d = torch.where(n > 0, d / n.clamp_min(torch.finfo(d.dtype).tiny), torch.zeros_like(d))
        return d

    def score(self, X: ArrayLike, bits: int | None = None) -> float:
        """Mean squared distance per vector from X to the curve (exact projection); lower is better."""
        return float(self.project(X, bits=bits).sqdist.double().mean())

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write every bitrate's codebook to a safetensors file, settings and history in its metadata.

        Written to a temporary name and renamed, so an interrupted save never leaves a file that looks whole.
        """
        from safetensors.torch import save_file

        from sfvq import __version__

        self._check_fitted()
        path = Path(path)
        tensors = {f"codebook_{b}bit": C.detach().cpu().contiguous() for b, C in self.codebooks_.items()}
        tensors["usage"] = torch.as_tensor(self.usage_).cpu()
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "sfvq_version": __version__,
            "params": self.get_params(),
            "bits_fitted": sorted(self.codebooks_),
            "n_features_in": self.n_features_in_,
            "n_samples_fit": self.n_samples_fit_,
            "total_variance": self.total_variance_,
            "perplexity": self.perplexity_,
            "history": self.history_,
            "extra": getattr(self, "metadata_", {}),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"sfvq": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> SFVQ:
        """Read a model written by :meth:`save`; errors say why a file is not one."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such model file: {path}")
        if path.is_dir():
            raise ModelFileError(f"{path} is a directory, not an sfvq model file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelFileError(f"{path} is not an sfvq model (not a readable safetensors file: {e})") from e
        if "sfvq" not in header:
            raise ModelFileError(f"{path} is a safetensors file but not an sfvq model (no 'sfvq' metadata)")
        try:
            meta = json.loads(header["sfvq"])
        except json.JSONDecodeError as e:
            raise ModelFileError(f"{path}: the sfvq metadata is not valid JSON ({e})") from e
        if meta.get("format") != FORMAT_NAME:
            raise ModelFileError(f"{path}: unknown format {meta.get('format')!r}, expected {FORMAT_NAME!r}")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelFileError(
                f"{path} was written by a newer sfvq (format {meta['format_version']}); "
                "upgrade sfvq to read it"
            )
        params = dict(meta["params"])
        params["lr_milestones"] = tuple(params["lr_milestones"])
        model = cls(**params)
        codebooks = {}
        for b in meta["bits_fitted"]:
            key = f"codebook_{b}bit"
            if key not in tensors:
                raise ModelFileError(
                    f"{path}: the metadata lists {b} bits but the file has no tensor {key!r}"
                )
            C = tensors[key]
            if C.ndim != 2 or C.shape != (2**b, meta["n_features_in"]):
                raise ModelFileError(
                    f"{path}: tensor {key!r} has shape {tuple(C.shape)}, "
                    f"expected ({2**b}, {meta['n_features_in']})"
                )
            codebooks[b] = C.to(device) if device is not None else C
        model.codebooks_ = codebooks
        model.n_features_in_ = meta["n_features_in"]
        model.n_samples_fit_ = meta["n_samples_fit"]
        model.total_variance_ = meta["total_variance"]
        model.perplexity_ = meta["perplexity"]
        model.history_ = meta["history"]
        model.usage_ = tensors["usage"].numpy() if "usage" in tensors else None
        model.metadata_ = meta.get("extra", {})
        return model

    def __repr__(self) -> str:
        fitted = (
            f", fitted on {self.n_samples_fit_}x{self.n_features_in_}" if hasattr(self, "codebooks_") else ""
        )
        settings = f"bits={self.bits}, epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}"
        return f"SFVQ({settings}{fitted})"


_PARAM_NAMES = (
    "bits",
    "epochs",
    "batch_size",
    "lr",
    "lr_milestones",
    "lr_gamma",
    "init",
    "eps",
    "assign",
    "init_samples",
    "random_state",
    "device",
    "verbose",
)
