"""SF-DiVeQ (space-filling differentiable vector quantization, the SFVQ authors' newer method, MIT
``diveq`` package) as an optional fitter: ``sfvq fit --fitter sfdiveq`` / ``sfvq run --fitter sfdiveq``.

The package's :class:`diveq.SFDIVEQ` is a layer for end-to-end training: its forward pass returns a
quantized copy of its input whose gradient reaches the codebook through the distances to the two corners
of a dithered point on the curve. Fitted on its own here, the loss is the squared error between each
sample and its quantized copy, minimised with Adam. The curve is grown as sfvq's own fitter grows it
(four corners by the norm-sorting rule, then doubled after each bitrate, :func:`sfvq.curve.double`), so
every bitrate's map continues the one below and the result is a plain :class:`~sfvq.SFVQ` (built with
:meth:`~sfvq.SFVQ.from_codebooks`) that every command reads as usual. The data are read into memory.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from sfvq import curve

FITTERS = ("sfvq", "sfdiveq")
NOISE_VAR = 1e-3  # the package's default variance of the directional noise (it recommends < 1e-2)
LR_MILESTONES = (0.6, 0.8)  # the rate halves at these fractions of each stage, as sfvq's fitter does
INSTALL_HINT = "pip install diveq (or pip install 'sfvq[sfdiveq]')"


def require_diveq() -> Any:
    """The ``diveq`` module; ImportError naming the install command when it is missing or broken."""
    try:
        import diveq
    except ImportError as e:
        raise ImportError(f"the sfdiveq fitter needs the diveq package: {INSTALL_HINT} ({e})") from e
    if not hasattr(diveq, "SFDIVEQ"):
        raise ImportError(f"this diveq ({getattr(diveq, '__file__', '?')}) has no SFDIVEQ; {INSTALL_HINT}")
    return diveq


def fit_sfdiveq(
    X: Any,
    bits: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: str = "cpu",
    verbose: bool = False,
    noise_var: float = NOISE_VAR,
    eps: float = 0.01,
) -> Any:
    """An :class:`~sfvq.SFVQ` whose codebooks (every bitrate 2..``bits``) were fitted by SF-DiVeQ on X (N, D).

    Each stage runs ``epochs`` passes of ``batch_size`` samples in a seeded order with Adam at ``lr``
    (halved at 60% and 80% of the stage); the package's dithers and noise draw from torch's global
    generator, seeded with ``seed`` inside a forked state (the caller's random state is left as it was).
    History records each stage's epoch losses and seconds beside the scores :meth:`SFVQ.from_codebooks`
    computes (MSE to the curve, perplexity, used segments).
    """
    from sfvq.quantizer import SFVQ, check_bits
    from sfvq.shards import as_rows

    diveq = require_diveq()
    check_bits(bits)
    rows = as_rows(X, device=device)
    N, D = rows.shape
    if N < 2**bits:
        raise ValueError(f"too few samples: {N} rows for a {bits}-bit curve ({2**bits} corners)")
    x = rows.read(0, N, torch.float32).to(device)  # (N, D)
    rows.release()
    progress = None
    if verbose:
        from sfvq.progress import FitProgress

        progress = FitProgress(bits, epochs)
    emit = progress or (lambda event, info: None)
    codebooks: dict[int, torch.Tensor] = {}
    records: dict[int, dict[str, Any]] = {}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            codebook = curve.init_by_norm(x, 4)  # (4, D)
            for b in range(2, bits + 1):
                if b > 2:
                    codebook = curve.double(codebook, eps)  # (2**b, D)
                start = time.perf_counter()
                codebook, losses = _train_stage(
                    diveq, x, codebook, b, epochs, batch_size, lr, noise_var, gen, emit
                )
                codebooks[b] = codebook
                records[b] = {"loss": losses, "seconds": time.perf_counter() - start}
                emit("stage_end", {"bits": b, "mse": losses[-1], "perplexity": float("nan"), "seconds": 0.0})
    finally:
        if progress is not None:
            progress.close()
    model = SFVQ.from_codebooks(
        {b: C.cpu() for b, C in codebooks.items()},
        X,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        eps=eps,
        random_state=seed,
        device=device,
    )
    for stage in model.history_:
        stage.update(records[stage["bits"]])
    return model


def _train_stage(
    diveq: Any,
    x: torch.Tensor,
    codebook: torch.Tensor,
    bits: int,
    epochs: int,
    batch_size: int,
    lr: float,
    noise_var: float,
    gen: torch.Generator,
    emit: Any,
) -> tuple[torch.Tensor, list[float]]:
    """One bitrate: the SF-DiVeQ layer started at ``codebook`` (2**bits, D), trained on x (N, D)."""
    N, D = x.shape
    K = codebook.shape[0]
    layer = diveq.SFDIVEQ(K, D, noise_var=noise_var, skip_iters=0, avg_iters=0, allow_warning=False)
    layer = layer.to(x.device)
    with torch.no_grad():
        layer.codebook.copy_(codebook)  # our start instead of the package's warm-up initialisation
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    steps_per_epoch = -(-N // batch_size)
    total = epochs * steps_per_epoch
    emit("stage_start", {"bits": bits, "epochs": epochs, "steps": total})
    losses: list[float] = []
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(N, generator=gen).to(x.device)
        running, seen = 0.0, 0
        for s in range(0, N, batch_size):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 ** sum(step >= int(m * total) for m in LR_MILESTONES)
            z = x[order[s : s + batch_size]]  # (B, D)
            z_q, _, _ = layer(z)  # (B, D): differentiable in the codebook
            loss = (z_q - z).pow(2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running += float(loss.detach()) * len(z)
            seen += len(z)
            emit("step", {"bits": bits, "epoch": epoch, "step": step, "loss": float(loss.detach())})
        losses.append(running / seen)
        emit("epoch_end", {"bits": bits, "epoch": epoch, "loss": losses[-1]})
    return layer.codebook.detach().clone(), losses


__all__ = ["FITTERS", "fit_sfdiveq", "require_diveq"]
