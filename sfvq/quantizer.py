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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfvq import curve, dist
from sfvq.atomic import atomic_path
from sfvq.schedule import DEFAULT_SCHEDULE  # the defaults of the fit settings (plain data)
from sfvq.shards import Rows, as_rows
from sfvq.threads import ThreadPicker

FORMAT_NAME = "sfvq.curve"
FORMAT_VERSION = 1
MIN_BITS, MAX_BITS = 2, 16

ArrayLike = np.ndarray | torch.Tensor


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


def _like(out: torch.Tensor, X: ArrayLike | Rows) -> ArrayLike:
    """Return ``out`` as numpy when the caller passed numpy (or rows read from files)."""
    return out.cpu().numpy() if isinstance(X, (np.ndarray, Rows)) else out


FitCallback = Callable[[str, dict[str, Any]], None]


def _merge_moments(
    a: tuple[int, torch.Tensor, float], b: tuple[int, torch.Tensor, float]
) -> tuple[int, torch.Tensor, float]:
    """Chan et al.'s merge of (count, mean (D,), summed squared deviations) of two disjoint row sets."""
    na, ma, sa = a
    nb, mb, sb = b
    if na == 0:
        return b
    if nb == 0:
        return a
    n = na + nb
    delta = mb - ma  # (D,) float64
    return n, ma + delta * (nb / n), sa + sb + float(delta @ delta) * (na * nb / n)


def _scan(rows: Rows, name: str = "X", shard: bool = False) -> float:
    """One pass over the rows, chunk by chunk: the total variance, after checking every value is finite.

    Moments are accumulated in float64 per chunk and merged (no float64 copy of the data). With
    ``shard`` each process reads its share of the rows and the shares are merged in rank order, so every
    process gets the same value. Raises ValueError counting the rows with NaN or inf.
    """
    N, D = rows.shape
    start, stop = dist.my_range(N) if shard else (0, N)
    acc: tuple[int, torch.Tensor, float] = (0, torch.zeros(D, dtype=torch.float64), 0.0)
    bad, first_bad = 0, N
    for a, xs in rows.chunks(start, stop):  # (n, D) float32 (or float64 data as it is)
        # A finite float64 sum proves every entry finite; only then is the row-by-row mask needed.
        if not math.isfinite(float(xs.sum(dtype=torch.float64))):
            finite = torch.isfinite(xs).all(dim=1)  # (n,)
            if not bool(finite.all()):
                where = (~finite).nonzero().flatten()
                bad += where.numel()
                first_bad = min(first_bad, a + int(where[0]))
                continue
        n = xs.shape[0]
        mean = xs.mean(0, dtype=torch.float64)  # (D,)
        m = mean.to(xs.dtype)  # (D,) the centre the deviations are taken from, in the data's dtype
        ss = float((xs - m).square_().sum(dtype=torch.float64))
        ss -= n * float((mean - m.double()).square().sum())  # moved from m to the exact mean
        acc = _merge_moments(acc, (n, mean.cpu(), max(ss, 0.0)))
    rows.release()
    if shard and dist.is_distributed():
        packed = torch.cat([torch.tensor([acc[0], acc[2], bad, first_bad], dtype=torch.float64), acc[1]])
        parts = dist.all_gather(packed.to(rows.device))  # one (D + 4,) per process, in rank order
        acc, bad, first_bad = (0, torch.zeros(D, dtype=torch.float64), 0.0), 0, N
        for p in parts:
            p = p.cpu()
            acc = _merge_moments(acc, (int(p[0]), p[4:], float(p[1])))
            bad += int(p[2])
            first_bad = min(first_bad, int(p[3]))
    if bad:
        raise ValueError(
            f"{name} contains NaN or inf in {bad} of {N} rows (first bad row: {first_bad}); "
            "remove or repair them before fitting"
        )
    return acc[2] / N


def total_variance(x: torch.Tensor | Rows) -> float:
    """Mean squared distance of the rows of x (N, D) to their mean: the error of a one-point codebook.

    Read chunk by chunk with float64 accumulators, so x may be larger than memory (a :class:`Rows`).
    """
    return _scan(x if isinstance(x, Rows) else as_rows(x))


def _statistics(
    rows: Rows, codebook: torch.Tensor, shard: bool = False
) -> tuple[dict[str, Any], torch.Tensor]:
    """:func:`stage_statistics` chunk by chunk; with ``shard`` each process projects its share of the
    rows and the sums are added over processes."""
    N = rows.shape[0]
    start, stop = dist.my_range(N) if shard else (0, N)
    C = codebook.to(rows.device)
    usage = torch.zeros(C.shape[0] - 1, dtype=torch.int64, device=rows.device)  # (K-1,)
    sq = torch.zeros((), dtype=torch.float64, device=rows.device)
    for _, xs in rows.chunks(start, stop, dtype=torch.float32):
        proj = curve.project(xs, C)
        usage += curve.segment_usage(proj.segment, C.shape[0] - 1)
        sq += proj.sqdist.double().sum()
    rows.release()
    if shard:
        dist.all_reduce_sum_(usage)
        dist.all_reduce_sum_(sq)
    stats = {
        "mse": float(sq) / N,
        "perplexity": curve.perplexity(usage),
        "used_segments": int((usage > 0).sum()),
    }
    return stats, usage


def stage_statistics(x: torch.Tensor | Rows, codebook: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
    """How one codebook (K, D) fits the data x (N, D), as ``history_`` records it for every bitrate.

    Returns ``{"mse", "perplexity", "used_segments"}`` (exact projection) and the segment usage counts
    (K-1,). Shared by :meth:`SFVQ.fit` and :meth:`SFVQ.from_codebooks`, so a fitted and an imported
    curve are scored the same way. x is read chunk by chunk (it may be a :class:`Rows`).
    """
    return _statistics(x if isinstance(x, Rows) else as_rows(x), codebook)


def _checked_chunks(rows: Rows, name: str = "X") -> Iterator[torch.Tensor]:
    """Consecutive blocks of ``rows`` for inference; a block with NaN or inf raises the error of
    :func:`as_matrix` (counted over the whole input)."""
    for _, xs in rows.chunks():
        if not bool(torch.isfinite(xs).all()):
            _scan(rows, name)  # counts every bad row and raises
        yield xs
    rows.release()


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


def _same_data_everywhere(rows: Rows) -> None:
    """Under torch.distributed, every process must fit the same (N, D) data: ValueError if the shapes
    differ, or the sums of the first rows (a cheap fingerprint) do."""
    if not dist.is_distributed():
        return
    N, D = rows.shape
    t = dist.all_reduce_min_(torch.tensor([N, D, -N, -D], dtype=torch.int64, device=rows.device))
    lo_n, lo_d, hi_n, hi_d = int(t[0]), int(t[1]), -int(t[2]), -int(t[3])
    if (lo_n, lo_d) != (hi_n, hi_d):
        raise ValueError(
            f"the processes were given different data: N from {lo_n} to {hi_n}, D from {lo_d} to {hi_d}; "
            "every process of a distributed fit reads the same rows"
        )
    head = rows.read(0, min(N, 1024), torch.float64).sum().reshape(1)  # (1,)
    sums = torch.cat(dist.all_gather(head.to(rows.device)))  # (world,)
    if bool(torch.isfinite(sums).all()) and bool((sums != sums[0]).any()):  # NaN: left to the scan
        raise ValueError(
            "the processes were given different data (their first rows differ); every process of a "
            "distributed fit reads the same rows"
        )


def _checkpoint_identity(model: SFVQ, N: int, D: int, tv: float) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed by ``model`` on this data."""
    params = {k: v for k, v in model.get_params().items() if k != "verbose"}
    return {"params": params, "n_samples": N, "n_features": D, "total_variance": tv}


class _Checkpointer:
    """Writes the fit's state to ``path`` (rank 0 only; every process holds the same state)."""

    def __init__(self, path: Path, every: int, model: SFVQ) -> None:
        self.path = path
        self.every = every
        self.model = model

    def save(
        self,
        gen: torch.Generator,
        next_bits: int,
        usage: torch.Tensor | None = None,
        stage: dict[str, Any] | None = None,
    ) -> None:
        """Checkpoint before stage ``next_bits`` or, with ``stage``, inside it (C, Adam, epoch state)."""
        if not dist.is_main():
            return
        from sfvq.checkpoint import save_checkpoint

        m = self.model
        tensors = {f"codebook_{b}bit": C for b, C in m.codebooks_.items()}
        tensors["gen_state"] = gen.get_state()
        if usage is not None:
            tensors["usage"] = usage
        meta = {
            **_checkpoint_identity(m, m.n_samples_fit_, m.n_features_in_, m.total_variance_),
            "next_bits": next_bits,
            "history": m.history_,
            "stage": None,
        }
        if stage is not None:
            tensors.update({k: stage[k] for k in ("C", "adam_m", "adam_v", "epoch_gen_state")})
            meta["stage"] = {
                k: stage[k] for k in ("adam_t", "epoch", "step", "epoch_loss", "losses", "seconds")
            }
        save_checkpoint(self.path, tensors, meta)


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
    def fit(
        self,
        X: ArrayLike | Rows,
        y: Any = None,
        *,
        callback: FitCallback | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 0,
        resume: bool = False,
    ) -> SFVQ:
        """Grow the curve from 4 corners to ``2**bits`` by doubling, training after each doubling.

        ``callback(event, info)`` receives "stage_start", "step", "epoch_end" and "stage_end" events;
        with ``verbose=True`` and no callback a progress bar is shown.

        X may be larger than memory: a memory-mapped ``.npy`` or the shards of a manifest
        (:func:`sfvq.shards.open_manifest`) are read chunk by chunk and batch by batch, never copied whole.

        With ``checkpoint`` (a path) the state of the fit (codebooks, Adam's moments, the random
        generator, losses) is written there atomically after every stage and every ``checkpoint_every``
        steps (0: after stages only); ``resume=True`` continues from that file when it exists and gives
        the same curve as an uninterrupted fit.

        Under ``torch.distributed`` (initialised by :func:`sfvq.dist.init`, more than one process), every
        process passes the same data: each step's batch is drawn identically everywhere, each process
        computes the gradient of its slice and the gradients are summed, so the fit equals a one-process
        fit up to the order of float additions; only rank 0 writes the checkpoint.
        """
        self._check_params()
        every = checkpoint_every
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
        rows = as_rows(X, device=self.device)
        N, D = rows.shape
        _same_data_everywhere(rows)
        tv = _scan(rows, shard=True)  # refuses NaN/inf before any work
        K_final = 2**self.bits
        if N < K_final:
            raise ValueError(
                f"too few samples: {N} rows for a {self.bits}-bit curve ({K_final} corners); "
                f"need at least {K_final}"
            )
        seed = self.random_state
        if seed is None:  # one fresh seed, the same on every process
            seed = int(dist.broadcast_object(int(torch.seed() % 2**63)))
        gen = torch.Generator(device=rows.device)
        gen.manual_seed(seed)
        state = None
        if resume and checkpoint is not None:
            state = self._read_checkpoint(Path(checkpoint), N, D, tv)

        progress = None
        if callback is None and self.verbose and dist.is_main():
            from sfvq.progress import FitProgress

            progress = FitProgress(self.bits, self.epochs)
            callback = progress
        emit = callback or (lambda event, info: None)

        self.n_features_in_ = D
        self.n_samples_fit_ = N
        self.total_variance_ = tv
        self.codebooks_: dict[int, torch.Tensor] = {}
        self.history_: list[dict[str, Any]] = []
        saver = None if checkpoint is None else _Checkpointer(Path(checkpoint), int(every), self)
        try:
            usage = self._run_stages(rows, gen, emit, saver, state)
        finally:
            if progress is not None:
                progress.close()
        self.usage_ = usage.cpu().numpy()
        self.perplexity_ = self.history_[-1]["perplexity"]
        return self

    def _run_stages(
        self,
        rows: Rows,
        gen: torch.Generator,
        emit: FitCallback,
        saver: _Checkpointer | None,
        state: dict[str, Any] | None,
    ) -> torch.Tensor:
        """Every stage from the first (or from where ``state`` stopped); returns the final usage (K-1,)."""
        first, resumed, usage = 2, None, None
        if state is None:
            codebook = dist.broadcast_(self._initial_codebook(rows, gen).contiguous())
        else:
            first, resumed, usage = self._restore(state, gen, rows.device)
            codebook = self.codebooks_.get(first - 1)
        for b in range(first, self.bits + 1):
            if resumed is None and b > 2:
                codebook = dist.broadcast_(curve.double(codebook, self.eps).contiguous())
            codebook, losses, seconds = self._train_stage(rows, codebook, gen, b, emit, saver, resumed)
            resumed = None
            self.codebooks_[b] = codebook.detach().clone()
            stats, usage = _statistics(rows, codebook, shard=True)
            stage = {"bits": b, "loss": losses, "seconds": seconds, **stats}
            self.history_.append(stage)
            emit("stage_end", dict(stage))
            if saver is not None:
                saver.save(gen, b + 1, usage)
        return usage

    def _initial_codebook(self, rows: Rows, gen: torch.Generator) -> torch.Tensor:
        """Four corners by the norm-sorting rule, on a random subset of the data (or on N(0, I))."""
        N, D = rows.shape
        n = min(N, self.init_samples)
        if self.init == "gaussian":
            sample = torch.randn(n, D, generator=gen, device=rows.device)
        elif n == N:
            sample = rows.read(0, N, torch.float32)
        else:
            sample = rows.take(torch.randperm(N, generator=gen, device=rows.device)[:n], torch.float32)
        rows.release()
        return curve.init_by_norm(sample, 4)

    def _lr_at(self, step: int, total: int) -> float:
        passed = sum(step >= int(m * total) for m in self.lr_milestones)
        return self.lr * self.lr_gamma**passed

    def _train_stage(
        self,
        rows: Rows,
        codebook: torch.Tensor | None,
        gen: torch.Generator,
        bits: int,
        emit: FitCallback,
        saver: _Checkpointer | None = None,
        resumed: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, list[float], float]:
        """One stage: a fresh Adam over ``epochs`` passes, rate stepped down at the milestones.

        Each step's batch (B rows of a seeded permutation) is the same on every process; each process
        reads and differentiates its contiguous slice, scaled by the whole batch, and the gradients are
        summed. ``resumed`` (from a checkpoint) restarts the stage mid-way. Returns the codebook (K, D),
        the loss of each epoch and the seconds spent.
        """
        start_time = time.perf_counter()
        N = rows.shape[0]
        B = min(self.batch_size, N)
        steps_per_epoch = math.ceil(N / B)
        total = self.epochs * steps_per_epoch
        world, rank = dist.world_size(), dist.rank()
        if resumed is None:
            C = codebook.detach().clone()  # (K, D)
            opt = _Adam(C)
            first_epoch, step, losses, seconds_before = 0, 0, [], 0.0
        else:
            C = resumed["C"].to(device=rows.device, dtype=torch.float32).clone()
            opt = _Adam(C)
            opt.m.copy_(resumed["adam_m"])
            opt.v.copy_(resumed["adam_v"])
            opt.t = int(resumed["adam_t"])
            first_epoch, step = int(resumed["epoch"]), int(resumed["step"])
            losses, seconds_before = list(resumed["losses"]), float(resumed["seconds"])
        emit("stage_start", {"bits": bits, "epochs": self.epochs, "steps": total})
        with ThreadPicker("sfvq.fit") as picker:
            for epoch in range(first_epoch, self.epochs):
                if resumed is not None and epoch == first_epoch:
                    now = gen.get_state()
                    epoch_state = resumed["epoch_gen_state"]
                    gen.set_state(epoch_state)
                    perm = torch.randperm(N, generator=gen, device=rows.device)  # this epoch's order again
                    gen.set_state(now)
                    total_loss = torch.tensor(
                        resumed["epoch_loss"], dtype=torch.float64, device=rows.device
                    )
                    done = step - epoch * steps_per_epoch  # batches of this epoch already taken
                else:
                    epoch_state = gen.get_state()
                    perm = torch.randperm(N, generator=gen, device=rows.device)
                    total_loss = torch.zeros((), dtype=torch.float64, device=rows.device)
                    done = 0
                for idx in torch.split(perm, B)[done:]:
                    lo, hi = dist.split_range(idx.numel(), world, rank)
                    with picker.step():  # many small ops a step: see sfvq.threads
                        xb = rows.take(idx[lo:hi], torch.float32)  # (b, D) this process's slice of the batch
                        loss, grad = self._batch_loss_and_grad(xb, C, gen, batch_total=idx.numel())
                        if world > 1:
                            packed = dist.all_reduce_sum_(torch.cat([grad.flatten(), loss.reshape(1)]))
                            grad, loss = packed[:-1].view_as(C), packed[-1]
                        opt.step(grad, self._lr_at(step, total))
                        total_loss += loss.double() * idx.numel()
                    step += 1
                    emit("step", {"bits": bits, "epoch": epoch, "step": step, "loss": loss})
                    if saver is not None and saver.every and step % saver.every == 0 and step < total:
                        saver.save(
                            gen,
                            bits,
                            stage={
                                "C": C,
                                "adam_m": opt.m,
                                "adam_v": opt.v,
                                "adam_t": opt.t,
                                "epoch": epoch,
                                "step": step,
                                "epoch_loss": float(total_loss),
                                "epoch_gen_state": epoch_state,
                                "losses": losses,
                                "seconds": seconds_before + time.perf_counter() - start_time,
                            },
                        )
                rows.release()
                losses.append(float(total_loss) / N)
                emit("epoch_end", {"bits": bits, "epoch": epoch, "loss": losses[-1]})
        return C, losses, seconds_before + time.perf_counter() - start_time

    def _batch_loss_and_grad(
        self,
        xb: torch.Tensor,
        C: torch.Tensor,
        gen: torch.Generator,
        xx: torch.Tensor | None = None,
        *,
        batch_total: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss ``mean ||x - xhat||^2`` of a batch (B, D) and its gradient with respect to C (K, D).

        ``xhat = (1 - lam) c_k + lam c_{k+1}`` is linear in the codebook, so the gradient has a closed
        form: each assigned point is pulled towards the mean of its samples, and the pull is shared by
        the segment's two corners with weights ``1 - lam`` and ``lam``. Written out rather than left to
        autograd, it costs one scatter-add of the batch beside the distance product (tested against
        autograd). With ``batch_total`` the batch is one slice of a larger batch of that many rows: loss
        and gradient are divided by ``batch_total``, so the slices' results add up to the whole batch's.
        """
        B = batch_total or xb.shape[0]
        S = C.shape[0] - 1
        if self.assign == "dithered":
            lam = torch.rand(S, generator=gen, device=C.device)  # (S,) one dither a segment, per step
            P = curve.dithered_points(C, lam)  # (S, D)
            scores = torch.addmm((P * P).sum(1), xb, P.T, alpha=-2)  # (b, S): ||x - p||^2 - ||x||^2
            best, j = scores.min(1)  # (b,)
            xx = torch.linalg.vecdot(xb, xb) if xx is None else xx  # (b,)
            loss = (best + xx).sum() / B
            counts = torch.bincount(j, minlength=S).to(C.dtype)  # (S,)
            sums = torch.zeros_like(P).index_add_(0, j, xb)  # (S, D) sum of samples per point
            gP = (counts.unsqueeze(1) * P - sums) * (2 / B)  # (S, D) dL/dP
            g_start, g_end = (1 - lam).unsqueeze(1) * gP, lam.unsqueeze(1) * gP  # shares of c_k, c_{k+1}
        else:
            proj = curve.project(xb, C)
            seg, lam = proj.segment, proj.lam.unsqueeze(1)  # (b,), (b, 1)
            loss = proj.sqdist.sum() / B
            r = (proj.points - xb) * (2 / B)  # (b, D) dL/dxhat
            g_start = torch.zeros(S, C.shape[1], dtype=C.dtype, device=C.device).index_add_(
                0, seg, r * (1 - lam)
            )
            g_end = torch.zeros_like(g_start).index_add_(0, seg, r * lam)
        grad = torch.zeros_like(C)
        grad[:-1] += g_start
        grad[1:] += g_end
        return loss, grad

    # ------------------------------------------------------------------ checkpoints
    def _read_checkpoint(self, path: Path, N: int, D: int, tv: float) -> dict[str, Any] | None:
        """Rank 0 reads and checks the checkpoint at ``path`` and hands it to every process; None when
        there is none yet (the fit starts afresh). CheckpointError when it belongs to another fit."""
        from sfvq.checkpoint import CheckpointError, load_checkpoint

        state, error = None, None
        if dist.is_main():
            try:
                tensors, meta = load_checkpoint(path)
                expected = _checkpoint_identity(self, N, D, tv)
                for key, want in expected.items():
                    got = meta.get(key)
                    same = (
                        math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12)
                        if key == "total_variance" and isinstance(got, float)
                        else got == want
                    )
                    if not same:
                        raise CheckpointError(
                            f"{path} belongs to another fit: its {key} is {got!r}, this fit's is {want!r}; "
                            "delete it or fit without resuming"
                        )
                state = {"tensors": tensors, "meta": meta}
            except FileNotFoundError:
                state = None
            except CheckpointError as e:
                error = e
        dist.raise_together(error)
        return dist.broadcast_object(state)

    def _restore(
        self, state: dict[str, Any], gen: torch.Generator, device: torch.device
    ) -> tuple[int, dict[str, Any] | None, torch.Tensor | None]:
        """Fitted state from a checkpoint: the next stage's bits, the stage in progress, the last usage."""
        tensors, meta = state["tensors"], state["meta"]
        for key, t in tensors.items():
            if key.startswith("codebook_") and key.endswith("bit"):
                self.codebooks_[int(key[len("codebook_") : -len("bit")])] = t.to(device)
        self.codebooks_ = dict(sorted(self.codebooks_.items()))
        self.history_ = list(meta["history"])
        gen.set_state(tensors["gen_state"])
        usage = tensors["usage"].to(device) if "usage" in tensors else None
        stage = meta.get("stage")
        resumed = None
        if stage is not None:
            resumed = {
                **stage,
                **{k: tensors[k].to(device) for k in ("C", "adam_m", "adam_v")},
                "epoch_gen_state": tensors["epoch_gen_state"],
            }
        return int(meta["next_bits"]), resumed, usage

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

    def _input(self, X: ArrayLike | Rows) -> torch.Tensor | Rows:
        """X as a tensor, or as :class:`Rows` read chunk by chunk when it is a read-only array (a
        memory map: never copied whole) or already rows."""
        self._check_fitted()
        if isinstance(X, Rows) or (isinstance(X, np.ndarray) and not X.flags.writeable):
            x = as_rows(X)
        else:
            x = as_matrix(X)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, but this SFVQ was fitted on {self.n_features_in_}"
            )
        return x

    def project(
        self, X: ArrayLike | Rows, method: str = "exact", bits: int | None = None
    ) -> curve.Projection:
        """Full projection result (torch tensors on X's device): points, segment, lam, sqdist, t."""
        x = self._input(X)
        C = self._codebook(bits)
        if isinstance(x, torch.Tensor):
            return curve.project(x, C, method=method)
        N = x.shape[0]
        out = curve.Projection(
            C.to(device=x.device, dtype=x.dtype),
            torch.empty(N, dtype=torch.long, device=x.device),  # filled chunk by chunk
            torch.empty(N, dtype=x.dtype, device=x.device),
            torch.empty(N, dtype=x.dtype, device=x.device),
        )
        start = 0
        for xs in _checked_chunks(x):
            p = curve.project(xs, C, method=method)
            stop = start + xs.shape[0]
            out.segment[start:stop], out.lam[start:stop], out.sqdist[start:stop] = p.segment, p.lam, p.sqdist
            start = stop
        return out

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
        C = self._codebook(bits)
        if isinstance(x, torch.Tensor):
            return _like(curve.nearest_corner(x, C), X)
        out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        start = 0
        for xs in _checked_chunks(x):
            out[start : start + xs.shape[0]] = curve.nearest_corner(xs, C)
            start += xs.shape[0]
        return _like(out, X)

    def directions(self, bits: int | None = None, normalize: bool = True) -> torch.Tensor:
        """Segment vectors ``c_{k+1} - c_k`` -> (K-1, D); unit length when ``normalize`` (zero stays zero)."""
        C = self._codebook(bits)
        d = C[1:] - C[:-1]  # (S, D)
        if normalize:
            n = d.norm(dim=1, keepdim=True)
            d = torch.where(n > 0, d / n.clamp_min(torch.finfo(d.dtype).tiny), torch.zeros_like(d))
        return d

    def score(self, X: ArrayLike, bits: int | None = None) -> float:
        """Negative mean squared distance per vector from X to the curve (exact projection).

        scikit-learn's convention: greater is better (0 is a perfect fit), so model selection tools can
        maximise it; ``-model.score(X)`` is the MSE.
        """
        return -float(self.project(X, bits=bits).sqdist.double().mean())

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write every bitrate's codebook to a safetensors file, settings and history in its metadata.

        Written to a temporary name and renamed, so an interrupted save never leaves a file that looks whole.
        """
        from safetensors.torch import save_file

        from sfvq._version import __version__

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
    def from_codebooks(
        cls,
        codebooks: Mapping[int, ArrayLike],
        X: ArrayLike | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> SFVQ:
        """A fitted model from curves fitted elsewhere: ``codebooks`` maps bits to a (2**bits, D) codebook.

        With the data X (N, D), every bitrate is scored on it (MSE, usage, perplexity) as :meth:`fit`
        scores its stages (no losses, zero seconds). Without data the fitted state says "unknown":
        ``n_samples_fit_ = 0``, NaN total variance and perplexity, an empty ``history_``, zero usage.
        ``params`` are constructor settings (``bits`` defaults to the largest bitrate and must equal it,
        ``verbose`` to False); ``metadata`` becomes ``metadata_`` (saved with the model).
        """
        if not codebooks:
            raise ValueError("no codebooks given")
        books: dict[int, torch.Tensor] = {}
        D = None
        for b in sorted(codebooks):
            check_bits(b, "codebook bits")
            C = as_matrix(codebooks[b], name=f"the {b}-bit codebook")
            if C.shape[0] != 2**b:
                raise ValueError(f"the {b}-bit codebook must have {2**b} rows, got shape {tuple(C.shape)}")
            if D is not None and C.shape[1] != D:
                raise ValueError(f"the codebooks disagree on the dimension ({C.shape[1]} vs {D})")
            D = C.shape[1]
            books[int(b)] = C.to(torch.float32, copy=True)  # (2**b, D), owned by the model
        top = max(books)
        params.setdefault("bits", top)
        params.setdefault("verbose", False)
        if params["bits"] != top:
            raise ValueError(f"bits={params['bits']!r}, but the largest codebook has {top} bits")
        model = cls(**params)
        model._check_params()
        model.codebooks_ = books
        model.n_features_in_ = int(D)
        model.history_ = []
        if X is None:
            model.n_samples_fit_ = 0
            model.total_variance_ = math.nan
            model.usage_ = np.zeros(2**top - 1, dtype=np.int64)
            model.perplexity_ = math.nan
        else:
            x = as_rows(X)  # (N, D), read chunk by chunk
            if x.shape[1] != D:
                raise ValueError(f"X has {x.shape[1]} features, but the codebooks are {D}-D")
            model.n_samples_fit_ = int(x.shape[0])
            model.total_variance_ = total_variance(x)
            for b, C in books.items():
                stats, usage = stage_statistics(x, C)
                model.history_.append({"bits": b, "loss": [], "seconds": 0.0, **stats})
            model.usage_ = usage.cpu().numpy()
            model.perplexity_ = model.history_[-1]["perplexity"]
        model.metadata_ = dict(metadata or {})
        return model

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> SFVQ:
        """Read a model written by :meth:`save`; errors say why a file is not one."""
        from sfvq.io import read_safetensors_with_meta

        path = Path(path)
        tensors, meta = read_safetensors_with_meta(path, kind="model", meta_key="sfvq", error=ModelFileError)
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
