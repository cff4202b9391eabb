"""The export of a trained ``G_ema``: safetensors weights and a JSON sidecar (``init_kwargs``, the training
settings and progress, the data set's description and, with a factor classifier, how well the factors
read on generated faces), checked by reloading it through the registry's loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfvq.atomic import atomic_path
from sfvq.avatars.networks import new_generator
from sfvq.avatars.train import CHECKPOINT_FILE, TrainConfig, TrainingError, load_checkpoint
from sfvq.generators.stylegan2 import StyleGAN2Generator

__all__ = ["MAX_EXPORT_BYTES", "export_generator"]

MAX_EXPORT_BYTES = 20 * 1024 * 1024


def export_generator(
    checkpoint: str | Path,
    outdir: str | Path,
    name: str = "avatars-sg2",
    classifier: str | Path | None = None,
    quality_samples: int = 1000,
) -> tuple[Path, dict[str, Any]]:
    """Write ``outdir/<name>.safetensors`` (G_ema, float32) and ``outdir/<name>.json`` from a checkpoint.

    The JSON holds ``init_kwargs`` (for ``build_stylegan2``), the training settings and progress and the
    data set's seed; with a factor ``classifier`` file, also ``quality``: how confidently each factor
    reads on ``quality_samples`` generated faces next to the classifier's held-out renders. The export
    is reloaded through ``build_stylegan2`` and must render what the checkpoint's G_ema renders, else
    nothing is left under the final names.
    """
    from safetensors.torch import save_file

    from sfvq.avatars import EXPORT_FORMAT, load_exported_generator
    from sfvq.io import sha256_file, write_json

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT_FILE
    state = load_checkpoint(checkpoint)
    config = TrainConfig(**state["config"])
    G_ema = new_generator(config)
    G_ema.load_state_dict(state["G_ema"])
    G_ema.eval().requires_grad_(False)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in G_ema.state_dict().items()}
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    weights, sidecar = outdir / f"{name}.safetensors", outdir / f"{name}.json"
    extra = state["extra"]
    meta = {
        "format": EXPORT_FORMAT,
        "name": name,
        "family": "stylegan2",
        "init_kwargs": config.init_kwargs(),
        "training": {
            "config": config.to_dict(),
            "nimg": int(state["nimg"]),
            "kimg": int(state["nimg"]) / 1000,
            "steps": int(state["step"]),
            "train_seconds": round(float(state["seconds"]), 1),
            "device": extra.get("device"),
            "torch": torch.__version__,
            "last": extra.get("last"),
            "history": json.loads(state.get("history") or "[]"),
        },
        "dataset": extra.get("data", {}),
    }
    if classifier is not None:
        meta["quality"] = _quality(G_ema, classifier, quality_samples)
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": EXPORT_FORMAT})
        size = tmp.stat().st_size
        if size > MAX_EXPORT_BYTES:
            raise TrainingError(f"the export is {size / 2**20:.1f} MiB, over the 20 MiB limit")
    meta["sha256"] = sha256_file(weights)
    meta["bytes"] = weights.stat().st_size
    write_json(sidecar, meta)
    G = load_exported_generator(weights, name=name)
    z = torch.randn((4, config.z_dim), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = G_ema(z, noise_mode="const")
        got = G.synthesis(G.mapping(z), noise_mode="const")
    if not torch.allclose(want, got, atol=1e-5, rtol=0):
        weights.unlink()
        sidecar.unlink()
        raise TrainingError("the exported generator does not render as the checkpoint's G_ema")
    return weights, meta


def _quality(G_ema: StyleGAN2Generator, classifier: str | Path, n: int) -> dict[str, Any]:
    """Per factor: the classifier's mean confidence on ``n`` G_ema samples next to its held-out accuracy
    and confidence on renders, and the total-variation distance between the predicted value shares on
    the samples and the value frequencies of the renders (0: the generator's mix matches the data)."""
    from sfvq.avatars.classifier import factor_confidence, factor_shares, load_classifier
    from sfvq.io import read_json, sidecar_path

    clf = load_classifier(classifier)
    side = read_json(sidecar_path(classifier))  # checked by load_classifier
    z = torch.randn((n, G_ema.z_dim), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = torch.cat([G_ema(z[i : i + 250], noise_mode="const") for i in range(0, n, 250)])
    generated = factor_confidence(clf, images)
    shares = factor_shares(clf, images)
    held = side.get("report", {}).get("heldout", {})
    freqs = side.get("report", {}).get("frequencies", {})

    def tv(k: str) -> float | None:
        if k not in freqs or len(freqs[k]) != len(shares[k]):
            return None
        return round(0.5 * float(np.abs(np.asarray(shares[k]) - np.asarray(freqs[k])).sum()), 4)

    return {
        "classifier": str(classifier),
        "samples": n,
        "factors": {
            k: {
                "generated_confidence": round(v, 4),
                "real_confidence": held.get(k, {}).get("confidence"),
                "real_accuracy": held.get(k, {}).get("accuracy"),
                "share_tv_distance": tv(k),
            }
            for k, v in generated.items()
        },
    }
