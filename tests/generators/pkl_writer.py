"""Test helper: write StyleGAN network pickles in NVIDIA's documented format from fixture directories.

Uses only the standard ``pickle`` machinery (the pure-Python pickler, with stand-in "marker" classes
whose globals are written under the documented names) and the fixture's ``config.json`` +
``weights.safetensors``. No NVIDIA code is used or needed; the ``module_src`` strings stored in the
pickles are decoys that create a marker file if anything ever executes them.

Layout written (``shared/docs/stylegan-pkl-format.md`` sections 1-4): a top-level dict with ``G``,
``D``, ``G_ema``, ``augment_pipe`` and ``training_set_kwargs``; every network module as
``REDUCE(torch_utils.persistence._reconstruct_persistent_obj, (meta,))``; parameters and tensors via
``torch._utils._rebuild_parameter`` / ``_rebuild_tensor_v2``; storages via
``torch.storage._load_from_bytes`` of legacy ``torch.save`` byte strings; numpy float64/int64
scalars and int64 arrays via ``numpy.core.multiarray.scalar`` / ``_reconstruct``.
"""

from __future__ import annotations

import copyreg
import io
import json
import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

__all__ = [
    "DECOY_MODULE_SRC",
    "Reduce",
    "dumps",
    "global_marker",
    "legacy_storage_blob",
    "write_stylegan_pkl",
    "write_tf_era_pickle",
]

# Source text stored as ``module_src``: it would create the marker file if a loader ever exec'd it.
DECOY_MODULE_SRC = (
    "import os\n"
    "open(os.environ.get('SFVQ_PWNED_MARKER', 'sfvq-pwned-marker'), 'w').write('module_src was executed')\n"
    "class Generator:  # decoy: a safe loader never runs this text\n"
    "    pass\n"
)
DECOY_AUGMENT_SRC = DECOY_MODULE_SRC + "class AugmentPipe:\n    pass\n"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_MARKERS: dict[tuple[str, str], type] = {}


def global_marker(module: str, name: str) -> type:
    """A class that pickles as the global ``module.name`` (it is never called)."""
    key = (module, name)
    if key not in _MARKERS:
        _MARKERS[key] = type(name, (), {"_pkl_module": module, "_pkl_name": name})
    return _MARKERS[key]


class Reduce:
    """An object that pickles as ``REDUCE(func, args)`` (plus ``BUILD(state)`` when state is given)."""

    def __init__(self, func: type, args: tuple, state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


class _EasyDictOut(dict):
    """Pickles as ``dnnlib.util.EasyDict`` (NEWOBJ + SETITEMS), like the real class."""

    _pkl_module = "dnnlib.util"
    _pkl_name = "EasyDict"

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (copyreg.__newobj__, (type(self),), None, None, iter(self.items()))


class _TFNetworkOut:
    """Pickles as a TensorFlow-era ``dnnlib.tflib.network.Network`` (NEWOBJ + BUILD)."""

    _pkl_module = "dnnlib.tflib.network"
    _pkl_name = "Network"

    def __init__(self, state: dict) -> None:
        self.state = state

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (copyreg.__newobj__, (type(self),), self.state)


class _MarkerPickler(pickle._Pickler):
    """Pure-Python pickler that writes marker classes under their documented global names."""

    def __init__(self, file: io.BytesIO, protocol: int, persistent: dict[int, tuple] | None = None) -> None:
        super().__init__(file, protocol=protocol)
        self._persistent = persistent or {}

    def persistent_id(self, obj: Any) -> Any:
        return self._persistent.get(id(obj))

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "_pkl_module", None)
        if module is None:
            return super().save_global(obj, name)
        qualname = obj._pkl_name
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)


def dumps(obj: Any, protocol: int) -> bytes:
    """Pickle ``obj`` with the marker-aware pickler."""
    buf = io.BytesIO()
    _MarkerPickler(buf, protocol).dump(obj)
    return buf.getvalue()


def legacy_storage_blob(flat: torch.Tensor, key: str = "0", storage_class: str = "FloatStorage") -> bytes:
    """One storage in the legacy ``torch.save`` format: 5 protocol-2 pickles, count, raw data."""
    flat = flat.detach().reshape(-1).contiguous()
    buf = io.BytesIO()
    sentinel = object()
    pid = ("storage", global_marker("torch", storage_class), key, "cpu", flat.numel(), None)
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    for item in (_LEGACY_MAGIC, 1001, sys_info, sentinel, [key]):
        _MarkerPickler(buf, 2, persistent={id(sentinel): pid}).dump(item)
    buf.write(struct.pack("<q", flat.numel()))
    buf.write(flat.numpy().tobytes())  # little-endian host
    return buf.getvalue()


class _Writer:
    """Builds the marker object graph for one pickle."""

    def __init__(self, numpy_module: str, layout: str, plain_dicts: bool, module_src: str) -> None:
        self.np_mod = numpy_module
        self.layout = layout
        self.mk = dict if plain_dicts else OrderedDict
        self.module_src = module_src
        self.augment_src = module_src + "\n# augment.py\n"
        self._dtypes: dict[str, Reduce] = {}
        self._key = 0

    # -- tensors -------------------------------------------------------------------------------
    def _storage(self, flat: torch.Tensor) -> Reduce:
        self._key += 1
        return Reduce(
            global_marker("torch.storage", "_load_from_bytes"), (legacy_storage_blob(flat, str(self._key)),)
        )

    def tensor(self, t: torch.Tensor) -> Reduce:
        t = t.detach().to(torch.float32)
        offset = 0
        if self.layout == "strided" and t.ndim >= 2:
            u = t.transpose(-1, -2).contiguous()  # stored transposed
            flat, stride = u.reshape(-1), tuple(u.transpose(-1, -2).stride())
        elif self.layout == "strided":
            offset = 3  # stored inside a larger storage, after 3 junk values
            flat = torch.cat([torch.full((3,), 7.0), t.reshape(-1), torch.full((2,), -7.0)])
            stride = tuple(t.stride())
        else:
            flat, stride = t.reshape(-1), tuple(t.contiguous().stride())
        args = (self._storage(flat), offset, tuple(t.shape), stride, False, OrderedDict())
        return Reduce(global_marker("torch._utils", "_rebuild_tensor_v2"), args)

    def parameter(self, t: torch.Tensor) -> Reduce:
        return Reduce(
            global_marker("torch._utils", "_rebuild_parameter"), (self.tensor(t), False, OrderedDict())
        )

    # -- numpy ---------------------------------------------------------------------------------
    def _dtype(self, spec: str) -> Reduce:
        if spec not in self._dtypes:
            state = (3, "<", None, None, None, -1, -1, 0)
            self._dtypes[spec] = Reduce(global_marker("numpy", "dtype"), (spec, False, True), state)
        return self._dtypes[spec]

    def np_scalar(self, value: float | int, spec: str) -> Reduce:
        raw = np.array(value, dtype=np.dtype(spec).newbyteorder("<")).tobytes()
        return Reduce(global_marker(f"{self.np_mod}.multiarray", "scalar"), (self._dtype(spec), raw))

    def np_array(self, values: list, spec: str) -> Reduce:
        arr = np.asarray(values, dtype=np.dtype(spec).newbyteorder("<"))
        args = (global_marker("numpy", "ndarray"), (0,), b"b")
        state = (1, arr.shape, self._dtype(spec), False, arr.tobytes())
        return Reduce(global_marker(f"{self.np_mod}.multiarray", "_reconstruct"), args, state)

    def attribute(self, key: str, value: Any) -> Any:
        """Store some attributes as numpy values, as the official code leaves them."""
        if key in ("size", "in_size", "out_size") and isinstance(value, list):
            return self.np_array(value, "i8")
        if key == "padding" and isinstance(value, list):
            return [self.np_scalar(v, "i8") for v in value]
        float_keys = ("weight_gain", "act_gain", "in_cutoff", "out_cutoff", "in_half_width", "out_half_width")
        if key in float_keys and isinstance(value, int | float) and not isinstance(value, bool):
            return self.np_scalar(float(value), "f8")
        return value

    # -- modules -------------------------------------------------------------------------------
    def kwargs(self, value: Any, top: bool = True) -> Any:
        if isinstance(value, dict):
            inner = {k: self.kwargs(v, False) for k, v in value.items()}
            return inner if top else _EasyDictOut(inner)
        if isinstance(value, list):
            return [self.kwargs(v, False) for v in value]
        return value

    def persistent(
        self,
        class_name: str,
        params: dict,
        buffers: dict,
        children: dict,
        attributes: dict,
        init_args: list,
        init_kwargs: dict,
        src: str,
    ) -> Reduce:
        state: dict[str, Any] = {
            "training": False,
            "_parameters": self.mk(params),
            "_buffers": self.mk(buffers),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_forward_hooks": OrderedDict(),
            "_forward_pre_hooks": OrderedDict(),
            "_state_dict_hooks": OrderedDict(),
            "_load_state_dict_pre_hooks": OrderedDict(),
            "_modules": self.mk(children),
        }
        for k, v in attributes.items():
            state[k] = self.attribute(k, v)
        state["_init_args"] = tuple(init_args)
        state["_init_kwargs"] = self.kwargs(init_kwargs)
        meta = {"type": "class", "version": 6, "module_src": src, "class_name": class_name, "state": state}
        return Reduce(global_marker("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,))

    def network(self, cfg: dict, sd: dict[str, torch.Tensor]) -> Reduce:
        """The G_ema-shaped module tree described by ``cfg['modules']`` with tensors from ``sd``."""
        modules: dict[str, dict] = cfg["modules"]
        param_names = list(cfg["parameter_names"])
        buffer_names = list(cfg["buffer_names"])
        missing = [k for k in sd if k not in param_names and k not in buffer_names]
        assert not missing, f"weights not listed in config: {missing}"

        def rel(path: str) -> str:
            return path.partition(".")[2]  # strip the leading 'G_ema'

        def owner(key: str) -> str:
            return key.rpartition(".")[0]

        built: dict[str, Reduce] = {}
        for path in sorted(modules, key=lambda p: -p.count(".")):  # children before parents
            info = modules[path]
            r = rel(path)
            params = {k.rpartition(".")[2]: self.parameter(sd[k]) for k in param_names if owner(k) == r}
            buffers: dict[str, Any] = {
                k.rpartition(".")[2]: self.tensor(sd[k]) for k in buffer_names if owner(k) == r
            }
            attrs = info.get("attributes", {})
            if "up_taps" in attrs:  # SG3 layer: one-tap (identity) filters are stored as None
                for name in ("up_filter", "down_filter"):
                    buffers.setdefault(name, None)
            children = {
                p.rpartition(".")[2]: built[p] for p in modules if p.rpartition(".")[0] == path and p in built
            }
            built[path] = self.persistent(
                info["class_name"],
                params,
                buffers,
                children,
                attrs,
                info.get("init_args", []),
                info.get("init_kwargs", {}),
                self.module_src,
            )
        return built["G_ema"]

    def discriminator(self, cfg: dict) -> Reduce:
        g = cfg["G_ema"]
        epilogue = self.persistent(
            "DiscriminatorEpilogue",
            {"weight": torch.linspace(-1, 1, 2 * g["img_channels"]).reshape(2, -1)},
            {},
            {},
            {"resolution": 4},
            [],
            {"resolution": 4},
            self.module_src,
        )
        kw = {"c_dim": g["c_dim"], "img_resolution": g["img_resolution"], "img_channels": g["img_channels"]}
        return self.persistent("Discriminator", {}, {}, {"b4": epilogue}, kw, [], kw, self.module_src)

    def augment_pipe(self) -> Reduce:
        kw = {"xflip": 1, "rotate90": 1, "xint": 1, "scale": 1, "rotate": 1, "aniso": 1}
        buffers = {"p": torch.tensor(0.25), "Hz_geom": torch.linspace(-0.1, 0.1, 12)}
        return self.persistent("AugmentPipe", {}, buffers, {}, dict(kw), [], kw, self.augment_src)


def write_stylegan_pkl(
    fixture_dir: str | Path,
    out_path: str | Path,
    *,
    protocol: int | None = None,
    numpy_module: str = "numpy.core",
    layout: str = "plain",
    plain_dicts: bool = False,
    module_src: str = DECOY_MODULE_SRC,
    include_g_ema: bool = True,
    g_noise: float = 0.05,
) -> Path:
    """Write a StyleGAN network pickle for a fixture directory (``config.json`` + ``weights.safetensors``).

    Args:
        protocol: pickle protocol (default: the fixture's ``pickle_protocol``, 3 for SG2-ADA, 4 for SG3).
        numpy_module: ``"numpy.core"`` (numpy 1) or ``"numpy._core"`` (numpy 2) global names.
        layout: ``"plain"`` (contiguous storages) or ``"strided"`` (transposed storages, offsets).
        plain_dicts: store ``_parameters``/``_buffers``/``_modules`` as dicts (torch >= 2 writers)
            instead of OrderedDicts.
        include_g_ema: leave ``G_ema`` out when False (to test the error).
        g_noise: G gets G_ema's weights plus this much seeded noise, so G and G_ema differ.
    """
    fixture_dir = Path(fixture_dir)
    cfg = json.loads((fixture_dir / "config.json").read_text())
    sd = load_file(str(fixture_dir / "weights.safetensors"))
    protocol = int(cfg.get("pickle_protocol", 3)) if protocol is None else protocol
    w = _Writer(numpy_module, layout, plain_dicts, module_src)
    gen = torch.Generator().manual_seed(1234)
    sd_g = {k: v + g_noise * torch.randn(v.shape, generator=gen) for k, v in sd.items()}
    entries: dict[str, Any] = {
        "G": w.network(cfg, sd_g),
        "D": w.discriminator(cfg),
        "G_ema": w.network(cfg, sd),
        "augment_pipe": w.augment_pipe() if cfg.get("augment_pipe") else None,
    }
    if not include_g_ema:
        del entries["G_ema"]
    tsk = cfg.get("training_set_kwargs")
    top = {"training_set_kwargs": tsk, **entries} if protocol < 4 else {**entries, "training_set_kwargs": tsk}
    out_path = Path(out_path)
    out_path.write_bytes(dumps(top, protocol))
    return out_path


def write_tf_era_pickle(out_path: str | Path, protocol: int = 3) -> Path:
    """Write a small pickle shaped like a TensorFlow-era snapshot: a 3-tuple of ``Network`` objects."""
    nets = []
    for name in ("G", "D", "Gs"):
        state = {
            "version": 4,
            "name": name,
            "static_kwargs": {"resolution": 32},
            "components": {},
            "build_module_src": DECOY_MODULE_SRC,
            "build_func_name": f"{name}_main",
            "variables": [(f"{name}/dense/weight", [0.5, -0.25])],
        }
        nets.append(_TFNetworkOut(state))
    out_path = Path(out_path)
    out_path.write_bytes(dumps(tuple(nets), protocol))
    return out_path
