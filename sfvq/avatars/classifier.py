"""A small CNN that reads every avatar factor from an image: the ground truth's read-out on generated faces.

One shared convolutional trunk (conv + BatchNorm + ReLU, stride 2 down to 4x4, one hidden layer) and one
linear head per factor of :func:`sfvq.avatars.dataset.factor_vocabularies`; the loss is the sum of the
heads' cross-entropies. Trained on renders with a seeded held-out split; the held-out accuracy per factor
(next to the majority-class rate, the accuracy of always guessing the commonest value) is saved with the
weights. Images go in as the generators give them: NCHW float in [-1, 1].
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sfvq.atomic import atomic_path

__all__ = [
    "CLASSIFIER_FORMAT",
    "ClassifierError",
    "FactorClassifier",
    "evaluate",
    "factor_confidence",
    "factor_shares",
    "load_avatars_classifier",
    "load_classifier",
    "save_classifier",
    "train_classifier",
]

CLASSIFIER_FORMAT = "sfvq-avatars-classifier-v1"


class ClassifierError(ValueError):
    """A classifier file or setting that cannot be used; the message says why."""


class FactorClassifier(nn.Module):
    """images (N, 3, R, R) in [-1, 1] -> {factor: logits (N, K_factor)}.

    Args:
        vocab: factor -> its values (one head per factor, in this order).
        resolution: input side R (a power of two >= 8); other sizes are resized on :meth:`predict_proba`.
        width: channels of the first conv (doubled at each of the first two down-samplings).
        hidden: size of the shared hidden layer.
    """

    def __init__(
        self, vocab: Mapping[str, Sequence[str]], resolution: int = 32, width: int = 32, hidden: int = 256
    ) -> None:
        super().__init__()
        if resolution < 8 or 2 ** int(round(math.log2(resolution))) != resolution:
            raise ClassifierError(f"resolution must be a power of two >= 8, got {resolution}")
        if not vocab or any(len(v) < 1 for v in vocab.values()):
            raise ClassifierError("every factor needs at least one value")
        self.vocab = {k: tuple(v) for k, v in vocab.items()}
        self.resolution, self.width, self.hidden = resolution, width, hidden
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        ch, res, i = width, resolution, 0
        while res > 4:
            out = min(width * 2 ** (i + 1), width * 4)
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            ch, res, i = out, res // 2, i + 1
        self.trunk = nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch * 16, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, len(v)) for k, v in self.vocab.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (N, 3, R, R) -> {factor: logits (N, K)}."""
        h = self.trunk(x)  # (N, hidden)
        return {k: head(h) for k, head in self.heads.items()}

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain data."""
        return {
            "vocab": {k: list(v) for k, v in self.vocab.items()},
            "resolution": self.resolution,
            "width": self.width,
            "hidden": self.hidden,
        }

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
        """Factor probabilities for images (N, 3, H, W) float in [-1, 1] (any square size; area-resized
        to the classifier's resolution): {factor: (N, K)} on the CPU."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ClassifierError(f"expected square RGB images (N, 3, R, R), got {tuple(images.shape)}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out: dict[str, list[torch.Tensor]] = {k: [] for k in self.vocab}
        for start in range(0, len(images), batch):
            x = images[start : start + batch].to(device, torch.float32).clamp(-1, 1)
            if x.shape[2] != self.resolution:
                x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
            for k, logits in self(x).items():
                out[k].append(logits.softmax(dim=1).cpu())
        self.train(was_training)
        return {k: torch.cat(v) if v else torch.zeros(0, len(self.vocab[k])) for k, v in out.items()}


def uint8_to_input(images: np.ndarray) -> torch.Tensor:
    """(N, R, R, 3) uint8 -> (N, 3, R, R) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def evaluate(
    model: FactorClassifier, images: np.ndarray, codes: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per factor: accuracy, majority-class rate and mean confidence (max probability) on these images."""
    probs = model.predict_proba(uint8_to_input(images))
    out = {}
    for k, p in probs.items():
        truth = torch.from_numpy(np.asarray(codes[k]))
        counts = np.bincount(np.asarray(codes[k]), minlength=len(model.vocab[k]))
        out[k] = {
            "accuracy": float((p.argmax(dim=1) == truth).float().mean()),
            "majority": float(counts.max() / max(1, counts.sum())),
            "confidence": float(p.max(dim=1).values.mean()),
        }
    return out


def factor_confidence(model: FactorClassifier, images: torch.Tensor) -> dict[str, float]:
    """Mean max-probability per factor on images (N, 3, R, R) in [-1, 1]: how clearly each factor reads."""
    return {k: float(p.max(dim=1).values.mean()) for k, p in model.predict_proba(images).items()}


def factor_shares(model: FactorClassifier, images: torch.Tensor) -> dict[str, list[float]]:
    """Mean predicted probability of each value per factor: the share of each value in these images."""
    return {k: p.mean(dim=0).tolist() for k, p in model.predict_proba(images).items()}


def split_indices(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) index split; the held-out part is round(n * holdout), at least 1."""
    if not 0 < holdout < 1:
        raise ClassifierError(f"holdout must be in (0, 1), got {holdout}")
    if n < 2:
        raise ClassifierError(f"need at least 2 images to hold some out, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, int(round(n * holdout))))
    return np.sort(perm[k:]), np.sort(perm[:k])


def train_classifier(
    images: np.ndarray,
    codes: Mapping[str, np.ndarray],
    vocab: Mapping[str, Sequence[str]],
    epochs: int = 10,
    batch: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    holdout: float = 0.1,
    width: int = 32,
    device: str | torch.device = "cpu",
    max_steps: int | None = None,
    progress: bool = False,
) -> tuple[FactorClassifier, dict[str, Any]]:
    """Train a :class:`FactorClassifier` on renders (N, R, R, 3) uint8 with factor ``codes``.

    Adam with a cosine-decayed learning rate over ``epochs`` (or ``max_steps``), seeded shuffles.
    Returns the model (eval mode) and a report: per-factor held-out accuracy, majority rate and
    confidence, the split sizes and the settings.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ClassifierError(f"images must be (N, R, R, 3) uint8, got {images.shape} {images.dtype}")
    for k in vocab:
        if k not in codes or len(codes[k]) != len(images):
            raise ClassifierError(f"factor {k!r} needs one code per image")
        c = np.asarray(codes[k])
        if c.min(initial=0) < 0 or c.max(initial=0) >= len(vocab[k]):
            raise ClassifierError(f"factor {k!r} has codes outside 0..{len(vocab[k]) - 1}")
    if epochs < 1 or batch < 2:
        raise ClassifierError(f"need epochs >= 1 and batch >= 2, got {epochs} and {batch}")
    torch.manual_seed(seed)
    train_idx, test_idx = split_indices(len(images), holdout, seed)
    dev = torch.device(device)
    model = FactorClassifier(vocab, resolution=images.shape[1], width=width).to(dev)
    x_all = uint8_to_input(images[train_idx]).to(dev)  # (M, 3, R, R)
    y_all = {k: torch.from_numpy(np.asarray(codes[k])[train_idx]).to(dev) for k in vocab}
    steps_per_epoch = max(1, len(train_idx) // batch)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    rng = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    losses: list[float] = []
    step = 0
    from sfvq.progress import track

    model.train()
    for _ in track(range(total), "training the factor classifier", total=total, enabled=progress):
        if step % steps_per_epoch == 0:
            perm = torch.randperm(len(train_idx), generator=rng).to(dev)
        sel = perm[(step % steps_per_epoch) * batch : (step % steps_per_epoch + 1) * batch]
        logits = model(x_all[sel])
        loss = sum(F.cross_entropy(logits[k], y_all[k][sel]) for k in vocab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise ClassifierError(f"non-finite classifier loss at step {step}")
        step += 1
    model.eval()
    held = evaluate(model, images[test_idx], {k: np.asarray(codes[k])[test_idx] for k in vocab})
    report = {
        "heldout": held,
        "frequencies": {
            k: (np.bincount(np.asarray(codes[k]), minlength=len(vocab[k])) / len(images)).round(5).tolist()
            for k in vocab
        },
        "mean_heldout_accuracy": float(np.mean([v["accuracy"] for v in held.values()])),
        "train_images": int(len(train_idx)),
        "heldout_images": int(len(test_idx)),
        "steps": step,
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-min(20, len(losses)) :])),
        "seconds": round(time.perf_counter() - t0, 1),
        "settings": {
            "epochs": epochs,
            "batch": batch,
            "lr": lr,
            "seed": seed,
            "holdout": holdout,
            "width": width,
            "max_steps": max_steps,
        },
    }
    return model.cpu(), report


def save_classifier(model: FactorClassifier, path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write the weights (safetensors) and ``<path>.json`` (config + ``meta``), the JSON last."""
    from safetensors.torch import save_file

    from sfvq.io import sha256_file, write_json

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": CLASSIFIER_FORMAT})
    write_json(
        path.with_suffix(".json"),
        {"format": CLASSIFIER_FORMAT, **model.config(), **dict(meta), "sha256": sha256_file(path)},
    )
    return path


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> FactorClassifier:
    """Load a classifier written by :func:`save_classifier` (eval mode)."""
    from sfvq.io import read_safetensors_with_meta

    path = Path(path)
    side = path.with_suffix(".json")
    try:
        state_dict, meta = read_safetensors_with_meta(path, kind="classifier", error=ClassifierError)
    except FileNotFoundError as e:
        raise ClassifierError(f"{e}; a classifier needs {path.name} and {side.name}") from e
    if meta.get("format") != CLASSIFIER_FORMAT:
        raise ClassifierError(f"{side}: format {meta.get('format')!r}, expected {CLASSIFIER_FORMAT!r}")
    model = FactorClassifier(meta["vocab"], meta["resolution"], meta["width"], meta["hidden"])
    try:
        model.load_state_dict(state_dict)
    except Exception as e:  # missing keys, wrong shapes
        raise ClassifierError(f"{path} does not hold this classifier's weights ({e})") from e
    return model.to(device).eval()


def load_avatars_classifier(device: str | torch.device = "cpu") -> FactorClassifier:
    """The classifier shipped beside ``builtin:avatars-sg2`` (``sfvq/avatars/weights/``)."""
    from sfvq.avatars import CLASSIFIER_FILE, WEIGHTS_DIR

    path = WEIGHTS_DIR / CLASSIFIER_FILE
    if not path.is_file():
        raise ClassifierError(
            f"no factor classifier at {path}; train and ship it with: sfvq avatars train-classifier && "
            "sfvq avatars export --classifier runs/avatars-classifier/avatars-classifier.safetensors"
        )
    return load_classifier(path, device)
