"""Adapter for NVIDIA's PyTorch-format StyleGAN2-ADA and StyleGAN3 network pickles (``.pkl``).

The file is read with sfvq's allow-listed unpickler (:mod:`sfvq.generators.safe_pickle`): nothing the
file asks for is executed and its stored source code is never run. ``G_ema`` (never ``G``) is rebuilt
with sfvq's clean-room networks (:mod:`sfvq.generators.stylegan2`, :mod:`sfvq.generators.stylegan3`),
chosen by the structure of its synthesis network, and wrapped as a
:class:`~sfvq.generators.stylegan.StyleGANGenerator`, which meets the
:class:`~sfvq.generators.base.Generator` protocol.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sfvq.generators.base import GeneratorError
from sfvq.generators.limits import brief, brief_text, loading
from sfvq.generators.safe_pickle import PersistentObject, load_pickle_file, to_plain
from sfvq.generators.stylegan import (
    StyleGANGenerator,
    build_stylegan_network,
    stylegan_from_fixture_dir,
    stylegan_from_state_dict,
)

__all__ = [
    "StyleGANGenerator",
    "build_stylegan_network",
    "detect_family",
    "load_stylegan_pkl",
    "stylegan_from_fixture_dir",
    "stylegan_from_state_dict",
]

_GENERATOR_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")


def detect_family(g_ema: PersistentObject) -> str:
    """Tell StyleGAN2 from StyleGAN3 by the structure of ``G_ema.synthesis`` (class names, children)."""
    kids = g_ema.children
    synthesis = kids.get("synthesis")
    if synthesis is None or "mapping" not in kids:
        raise GeneratorError(
            f"G_ema ({g_ema.class_name}) has no 'mapping'/'synthesis' submodules (found: {sorted(kids)})"
        )
    syn_kids = synthesis.children
    if "layer_names" in synthesis.state or (
        "input" in syn_kids and syn_kids["input"].class_name == "SynthesisInput"
    ):
        return "stylegan3"
    if syn_kids and any(k.startswith("b") and v.class_name == "SynthesisBlock" for k, v in syn_kids.items()):
        return "stylegan2"
    found = brief_text(", ".join(f"{k}: {v.class_name}" for k, v in syn_kids.items()) or "nothing", 200)
    raise GeneratorError(
        f"unrecognised synthesis network (class {synthesis.class_name}, children {found}); "
        "expected StyleGAN2 blocks b4, b8, ... or a StyleGAN3 SynthesisInput"
    )


def _generator_kwargs(g_ema: PersistentObject) -> dict:
    """G_ema's constructor kwargs as plain data, with positional args named; every key (also of the
    nested ``mapping_kwargs``/``synthesis_kwargs``) must be a string."""
    kwargs = g_ema.init_kwargs
    names = _GENERATOR_POSITIONAL + ("synthesis_kwargs",)
    args = g_ema.init_args
    if len(args) > len(names):
        raise GeneratorError(f"G_ema has {len(args)} positional constructor args, expected at most 7")
    for name, value in zip(names, to_plain(args), strict=False):
        kwargs.setdefault(name, value)
    nested = [(name, kwargs.get(name)) for name in ("mapping_kwargs", "synthesis_kwargs")]
    for where, d in [("G_ema init kwargs", kwargs), *(item for item in nested if isinstance(item[1], dict))]:
        bad = [k for k in d if not isinstance(k, str)]
        if bad:
            raise GeneratorError(f"{where} have a key that is not a string: {brief(bad[0])}")
    return kwargs


def _resolve_sg2_kwargs(g_ema: PersistentObject, kwargs: dict) -> dict:
    """Fill in SG2 settings that the kwargs leave to a repo-dependent default from the resolved modules."""
    nested = "synthesis_kwargs" in kwargs
    if nested and not isinstance(kwargs["synthesis_kwargs"], dict | None):
        return kwargs  # build_stylegan2 names the problem
    syn = dict(kwargs.get("synthesis_kwargs") or {}) if nested else kwargs
    if "conv_clamp" not in syn:
        try:
            layer = g_ema.child("synthesis.b4.conv1")
        except GeneratorError:
            layer = None
        if layer is not None and "conv_clamp" in layer.state:
            syn["conv_clamp"] = layer.attribute("conv_clamp")
    if nested:
        kwargs = {**kwargs, "synthesis_kwargs": syn}
    return kwargs


def load_stylegan_pkl(path: str | Path, device: str | torch.device | None = None) -> StyleGANGenerator:
    """Load ``G_ema`` from a StyleGAN2-ADA or StyleGAN3 PyTorch network pickle, safely.

    Raises :class:`~sfvq.generators.base.GeneratorError` for a missing, truncated, corrupt, malicious
    or TensorFlow-era file, or one that holds no usable ``G_ema``.
    """
    with loading(path):  # one budget for the pickle and the network (reused inside load_generator)
        return _load(path, device)


def _load(path: str | Path, device: str | torch.device | None) -> StyleGANGenerator:
    data = load_pickle_file(path)
    if not isinstance(data, dict):
        raise GeneratorError(
            f"{path} is not a StyleGAN network pickle: its top-level object is a {type(data).__name__}, "
            "expected a dict with 'G_ema'"
        )
    if "G_ema" not in data:
        keys = ", ".join(brief(k, 40) for k in list(data)[:10]) or "none"
        raise GeneratorError(f"{path} has no 'G_ema' entry (found keys: {keys})")
    g_ema = data["G_ema"]
    if not isinstance(g_ema, PersistentObject):
        raise GeneratorError(f"{path}: 'G_ema' is a {type(g_ema).__name__}, not a network module")
    if g_ema.class_name != "Generator":
        raise GeneratorError(f"{path}: 'G_ema' is a {g_ema.class_name!r}, expected a 'Generator'")
    family = detect_family(g_ema)
    kwargs = _generator_kwargs(g_ema)
    if family == "stylegan2":
        kwargs = _resolve_sg2_kwargs(g_ema, kwargs)
    tsk = data.get("training_set_kwargs")
    return stylegan_from_state_dict(
        kwargs,
        g_ema.state_dict(),
        name=str(path),
        family=family,
        device=device,
        training_set_kwargs=to_plain(tsk) if isinstance(tsk, dict) else None,
    )
