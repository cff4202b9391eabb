"""The on-disk layout of a BigGAN-deep directory (pytorch-pretrained-biggan): reading and checking it.

The directory holds ``config.json`` (keys ``z_dim``, ``output_dim``, ``channel_width``, ``num_classes``,
``layers``, ``attention_layer_position``, ``eps``, ``n_stats``) and ``pytorch_model.bin`` (a torch-saved
state dict). This module turns the config into a validated :class:`BigGANConfig`, lists every state-dict
key the config implies with its shape (:func:`expected_state_shapes`) and reads a directory into a
config and a checked state dict (:func:`read_biggan_dir`); nothing here builds the network
(:mod:`sfvq.generators.biggan_network`) and nothing is ever downloaded.
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sfvq.generators import limits
from sfvq.generators.base import GeneratorError
from sfvq.generators.limits import brief_text
from sfvq.generators.torch_checkpoint import check_loaded_tensors, check_torch_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
REQUIRED_CONFIG_KEYS = (
    "z_dim",
    "output_dim",
    "channel_width",
    "num_classes",
    "layers",
    "attention_layer_position",
    "eps",
    "n_stats",
)

__all__ = [
    "CONFIG_NAME",
    "REQUIRED_CONFIG_KEYS",
    "WEIGHTS_NAME",
    "BigGANConfig",
    "check_state_dict",
    "expected_state_shapes",
    "parse_config",
    "read_biggan_dir",
]


class BigGANConfig:
    """The architecture facts read from ``config.json``."""

    def __init__(
        self,
        *,
        z_dim: int,
        output_dim: int,
        channel_width: int,
        num_classes: int,
        layers: Sequence[tuple[bool, int, int]],
        attention_layer_position: int,
        eps: float,
        n_stats: int,
    ) -> None:
        self.z_dim = z_dim
        self.output_dim = output_dim
        self.channel_width = channel_width
        self.num_classes = num_classes
        self.layers = [tuple(layer) for layer in layers]
        self.attention_layer_position = attention_layer_position
        self.eps = eps
        self.n_stats = n_stats

    @property
    def cond_dim(self) -> int:
        """Size of the condition vector cat(z, class embedding)."""
        return 2 * self.z_dim

    @property
    def has_attention(self) -> bool:
        return 0 <= self.attention_layer_position < len(self.layers)

    def module_index(self, block: int) -> int:
        """Index in ``generator.layers`` of block ``block`` (the attention layer shifts later blocks)."""
        return block + 1 if self.has_attention and block >= self.attention_layer_position else block

    def block_channels(self, block: int) -> tuple[int, int, int]:
        """(in, middle, out) channels of block ``block``."""
        _, cin, cout = self.layers[block]
        cin, cout = cin * self.channel_width, cout * self.channel_width
        return cin, cin // 4, cout

    def block_resolution(self, block: int) -> int:
        """Spatial size after block ``block``."""
        return 4 * 2 ** sum(1 for up, _, _ in self.layers[: block + 1] if up)


def parse_config(raw: Any, source: str = CONFIG_NAME) -> BigGANConfig:
    """Validate a decoded ``config.json`` and return a :class:`BigGANConfig` (GeneratorError if bad)."""
    if not isinstance(raw, dict):
        raise GeneratorError(f"{source}: expected a JSON object, found {type(raw).__name__}")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in raw]
    if missing:
        raise GeneratorError(
            f"{source}: missing BigGAN config key(s) {missing}; is this a pytorch-pretrained-biggan config?"
        )

    def pos_int(key: str) -> int:
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise GeneratorError(f"{source}: '{key}' must be a positive integer, found {v!r}")
        return v

    z_dim, output_dim, ch = pos_int("z_dim"), pos_int("output_dim"), pos_int("channel_width")
    num_classes, n_stats = pos_int("num_classes"), pos_int("n_stats")
    if n_stats < 2:
        raise GeneratorError(f"{source}: 'n_stats' must be at least 2, found {n_stats}")
    attn = raw["attention_layer_position"]
    if isinstance(attn, bool) or not isinstance(attn, int):
        raise GeneratorError(f"{source}: 'attention_layer_position' must be an integer, found {attn!r}")
    eps = raw["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
        raise GeneratorError(f"{source}: 'eps' must be a small positive number, found {eps!r}")

    layers_raw = raw["layers"]
    if not isinstance(layers_raw, list) or not layers_raw:
        raise GeneratorError(f"{source}: 'layers' must be a non-empty list, found {layers_raw!r}")
    layers: list[tuple[bool, int, int]] = []
    for i, entry in enumerate(layers_raw):
        ok = (
            isinstance(entry, (list, tuple))
            and len(entry) == 3
            and isinstance(entry[0], bool)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in entry[1:])
        )
        if not ok:
            raise GeneratorError(
                f"{source}: layers[{i}] must be [up_sample: bool, in_mult: int, out_mult: int], "
                f"found {entry!r}"
            )
        layers.append((entry[0], entry[1], entry[2]))

    cfg = BigGANConfig(
        z_dim=z_dim,
        output_dim=output_dim,
        channel_width=ch,
        num_classes=num_classes,
        layers=layers,
        attention_layer_position=attn,
        eps=float(eps),
        n_stats=n_stats,
    )
    # Channel chain: gen_z gives 16 * ch channels, each block consumes the previous output, the skip path
    # halves the channels when they change, and the last block must give ch channels for the final conv.
    prev = 16
    for i, (_, cin, cout) in enumerate(layers):
        if cin != prev:
            raise GeneratorError(
                f"{source}: layers[{i}] takes {cin} x channel_width channels but gets {prev}"
            )
        if cout != cin and 2 * cout != cin:
            raise GeneratorError(
                f"{source}: layers[{i}] may keep or halve its channels, found {cin} -> {cout}"
            )
        if (cin * ch) % 4:
            raise GeneratorError(f"{source}: layers[{i}] has {cin * ch} channels, not divisible by 4")
        prev = cout
    if prev != 1:
        raise GeneratorError(f"{source}: the last block must output 1 x channel_width channels, found {prev}")
    if ch < 3:
        raise GeneratorError(f"{source}: channel_width {ch} is below the 3 RGB channels it must produce")
    if cfg.has_attention:
        c_attn = layers[attn][1] * ch
        if c_attn % 8:
            raise GeneratorError(f"{source}: attention over {c_attn} channels needs a multiple of 8")
    resolution = cfg.block_resolution(len(layers) - 1)
    if resolution != output_dim:
        raise GeneratorError(
            f"{source}: 'layers' upsample to {resolution}x{resolution} but output_dim is {output_dim}"
        )
    return cfg


def _sn_shapes(prefix: str, weight: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    rows, cols = weight[0], math.prod(weight[1:])
    return {f"{prefix}.weight_orig": weight, f"{prefix}.weight_u": (rows,), f"{prefix}.weight_v": (cols,)}


def expected_state_shapes(cfg: BigGANConfig) -> dict[str, tuple[int, ...]]:
    """Every key of a pytorch-pretrained-biggan state dict for ``cfg`` and its shape."""
    ch, cond, ns = cfg.channel_width, cfg.cond_dim, cfg.n_stats
    shapes: dict[str, tuple[int, ...]] = {"embeddings.weight": (cfg.z_dim, cfg.num_classes)}
    shapes.update(_sn_shapes("generator.gen_z", (4 * 4 * 16 * ch, cond)))
    shapes["generator.gen_z.bias"] = (4 * 4 * 16 * ch,)
    for b in range(len(cfg.layers)):
        cin, mid, cout = cfg.block_channels(b)
        p = f"generator.layers.{cfg.module_index(b)}"
        for k, c in enumerate((cin, mid, mid, mid)):
            shapes[f"{p}.bn_{k}.running_means"] = (ns, c)
            shapes[f"{p}.bn_{k}.running_vars"] = (ns, c)
            shapes.update(_sn_shapes(f"{p}.bn_{k}.scale", (c, cond)))
            shapes.update(_sn_shapes(f"{p}.bn_{k}.offset", (c, cond)))
        for k, (co, ci, ks) in enumerate(((mid, cin, 1), (mid, mid, 3), (mid, mid, 3), (cout, mid, 1))):
            shapes.update(_sn_shapes(f"{p}.conv_{k}", (co, ci, ks, ks)))
            shapes[f"{p}.conv_{k}.bias"] = (co,)
    if cfg.has_attention:
        c = cfg.block_channels(cfg.attention_layer_position)[0]
        p = f"generator.layers.{cfg.attention_layer_position}"
        shapes.update(_sn_shapes(f"{p}.snconv1x1_theta", (c // 8, c, 1, 1)))
        shapes.update(_sn_shapes(f"{p}.snconv1x1_phi", (c // 8, c, 1, 1)))
        shapes.update(_sn_shapes(f"{p}.snconv1x1_g", (c // 2, c, 1, 1)))
        shapes.update(_sn_shapes(f"{p}.snconv1x1_o_conv", (c, c // 2, 1, 1)))
        shapes[f"{p}.gamma"] = (1,)
    for name in ("running_means", "running_vars"):
        shapes[f"generator.bn.{name}"] = (ns, ch)
    shapes["generator.bn.weight"] = (ch,)
    shapes["generator.bn.bias"] = (ch,)
    shapes.update(_sn_shapes("generator.conv_to_rgb", (ch, ch, 3, 3)))
    shapes["generator.conv_to_rgb.bias"] = (ch,)
    return shapes


def check_state_dict(sd: Mapping[str, torch.Tensor], cfg: BigGANConfig, source: str) -> None:
    expected = expected_state_shapes(cfg)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshapen = [
        f"{k} {tuple(sd[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != expected[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label} key(s): {shown}")
    if problems:
        raise GeneratorError(
            f"{source} does not match the BigGAN layout of its config.json: " + "; ".join(problems)
        )
    bad = [k for k in expected if not torch.isfinite(sd[k]).all()]
    if bad:
        raise GeneratorError(f"{source}: non-finite values in {', '.join(bad[:8])}")


def _resolve_dir(path_to_dir: str | Path) -> Path:
    path = Path(path_to_dir).expanduser()
    if not path.exists():
        text = str(path_to_dir)
        if "/" not in text and "\\" not in text:
            raise GeneratorError(
                f"'{text}' is not a local directory. sfvq never downloads weights: fetch the BigGAN files "
                f"yourself and pass the local directory that holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        raise GeneratorError(f"BigGAN directory not found: {path}")
    if path.is_file():
        if path.name in (CONFIG_NAME, WEIGHTS_NAME):
            return path.parent
        raise GeneratorError(
            f"{path} is a file; a BigGAN is a directory holding {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    return path


_MAX_CONFIG_BYTES = 2**20  # a BigGAN config.json is a few hundred bytes


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` inside the load budget: the archive and its pickle are checked
    before, every tensor after (:mod:`sfvq.generators.torch_checkpoint`)."""
    budget = limits.budget_for(path)
    check_torch_file(path, budget)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise budget.out_of_memory() from None
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GeneratorError(f"{path}: refused or unreadable pickle content ({first})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GeneratorError(f"{path}: corrupt or truncated torch file ({first})") from exc
    if not isinstance(obj, Mapping):
        raise GeneratorError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = brief_text(", ".join(bad[:8]), 200)
        raise GeneratorError(f"{path}: state dict entries that are not named tensors: {shown}")
    check_loaded_tensors(obj, path, budget)
    return dict(obj)


def read_biggan_dir(path_to_dir: str | Path) -> tuple[BigGANConfig, dict[str, torch.Tensor], Path]:
    """A BigGAN directory (or a file inside it) -> its config, its checked state dict and the weights path.

    Raises GeneratorError naming the problem for a missing directory or file, a model name instead of a
    directory, an invalid config, a corrupt weights file or a state dict that does not match the config.
    """
    directory = _resolve_dir(path_to_dir)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
    if missing:
        raise GeneratorError(f"{directory} is not a BigGAN directory: missing {' and '.join(missing)}")
    if config_path.stat().st_size > _MAX_CONFIG_BYTES:
        raise GeneratorError(
            f"{config_path}: {limits.format_bytes(config_path.stat().st_size)} is far too large for a BigGAN "
            f"config (at most {limits.format_bytes(_MAX_CONFIG_BYTES)})"
        )
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeneratorError(f"{config_path}: not valid JSON ({exc})") from exc
    cfg = parse_config(raw, str(config_path))
    with limits.loading(directory, files=[config_path, weights_path]):  # reused inside load_generator
        sd = _load_state_dict(weights_path)
    check_state_dict(sd, cfg, str(weights_path))
    return cfg, sd, weights_path
