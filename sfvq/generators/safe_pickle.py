"""A safe, allow-listed unpickler for NVIDIA's PyTorch-format StyleGAN network pickles.

A plain ``pickle.load`` of a ``.pkl`` calls whatever global the file names (a malicious file can run
shell commands), and NVIDIA's own loader ``exec``s the source code stored in the file. This module
does neither. :class:`SafeUnpickler` maps every global it allows to a small function or class of
sfvq's own (its own ``_rebuild_tensor_v2``, its own parser for the embedded legacy storage byte
strings, its own numpy scalar/array readers) and refuses every other name with an
:class:`UnsafePickleError` naming it. Network modules (NVIDIA's "persistent objects") come back as
inert :class:`PersistentObject` records: class name, constructor kwargs, attributes, parameters,
buffers and children. The stored ``module_src`` text is hashed and dropped, never executed.

The format is described in ``shared/docs/stylegan-pkl-format.md`` (sections 1-4).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from sfvq.generators.base import GeneratorError

__all__ = [
    "EasyDict",
    "PersistentObject",
    "SafeUnpickler",
    "TensorFlowPickleError",
    "UnsafePickleError",
    "load_pickle_file",
    "parse_legacy_storage",
    "safe_load",
    "safe_loads",
    "to_plain",
]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # magic number that opens a legacy (non-zip) torch.save stream
_LEGACY_PROTOCOL = 1001

# torch legacy storage class name -> dtype
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# numpy dtype strings we accept for scalars and small arrays (no object or structured dtypes)
_NUMPY_DTYPE_RE = re.compile(r"^(b1|\?|[iu][1248]|f[248]|c(8|16))$")


class UnsafePickleError(GeneratorError):
    """The pickle references a global that is not on the allow-list; nothing it asked for was run."""

    def __init__(self, global_name: str, where: str = "") -> None:
        self.global_name = global_name
        place = f" in {where}" if where else ""
        super().__init__(
            f"refusing to unpickle global '{global_name}'{place}: it is not on sfvq's allow-list for "
            "StyleGAN network pickles, so the file was not loaded (it may be malicious, or not a "
            "StyleGAN2-ADA/StyleGAN3 PyTorch snapshot)"
        )


class TensorFlowPickleError(GeneratorError):
    """A TensorFlow-era StyleGAN/StyleGAN2 pickle (``dnnlib.tflib.network.Network``)."""


# ----------------------------------------------------------------------------------------------
# Inert stand-ins for the allowed names
# ----------------------------------------------------------------------------------------------


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict with attribute read access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:
        # A dict subclass may get its (empty) instance __dict__ via BUILD; it carries nothing we need.
        if state is not None and not isinstance(state, dict | tuple):
            raise pickle.UnpicklingError(f"unexpected EasyDict state of type {type(state).__name__}")


class _OrderedDictStandIn(dict):
    """Stand-in for ``collections.OrderedDict`` (plain dicts keep insertion order)."""

    def __setstate__(self, state: Any) -> None:
        if state is not None and not isinstance(state, dict | tuple):
            raise pickle.UnpicklingError(f"unexpected OrderedDict state of type {type(state).__name__}")


class _TypeMarker:
    """Stand-in for a class that is only ever passed as an argument (``numpy.ndarray``, ``torch.Tensor``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise pickle.UnpicklingError(f"{type(self).__name__} cannot be instantiated")

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"{type(self).__name__} takes no state")


class _NumpyNDArrayType(_TypeMarker):
    """Marker for ``numpy.ndarray`` (first argument of ``_reconstruct``)."""


class _TorchTensorType(_TypeMarker):
    """Marker for ``torch.Tensor`` / ``torch.nn.Parameter`` (argument of ``_rebuild_from_type_v2``)."""


class _NumpyDType:
    """Stand-in for ``numpy.dtype``: ``REDUCE(numpy.dtype, (spec, align, copy))`` then ``BUILD(state)``."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(spec, str) or not _NUMPY_DTYPE_RE.match(spec):
            raise pickle.UnpicklingError(f"unsupported numpy dtype {spec!r} (only plain numeric dtypes)")
        self.spec = spec
        self.byteorder = "<" if spec not in ("b1", "?", "i1", "u1") else "|"

    def __setstate__(self, state: Any) -> None:
        # state = (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"unexpected numpy dtype state {state!r}")
        if len(state) > 4 and (state[2] is not None or state[3] is not None or state[4] is not None):
            raise pickle.UnpicklingError("structured or sub-array numpy dtypes are not supported")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        dt = np.dtype(self.spec)
        if self.byteorder in ("<", ">"):
            dt = dt.newbyteorder(self.byteorder)
        return dt


class _NumpyArrayStandIn:
    """Result of ``numpy.core.multiarray._reconstruct``; ``BUILD`` fills in :attr:`array`."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # state = (version, shape, dtype, is_fortran, rawdata)
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("unexpected numpy array state")
        _version, shape, dtype, is_fortran, raw = state
        if not isinstance(dtype, _NumpyDType):
            raise pickle.UnpicklingError("numpy array state without a supported dtype")
        if not isinstance(raw, bytes | bytearray):
            raise pickle.UnpicklingError("numpy array data is not a byte string (object arrays are refused)")
        shape = _int_tuple(shape, "numpy array shape")
        dt = dtype.to_numpy()
        count = int(np.prod(shape)) if shape else 1
        if len(raw) != count * dt.itemsize:
            raise pickle.UnpicklingError(
                f"numpy array data holds {len(raw)} bytes, shape {shape} needs {count * dt.itemsize}"
            )
        arr = np.frombuffer(bytes(raw), dtype=dt).reshape(shape, order="F" if is_fortran else "C")
        self.array = arr.astype(dt.newbyteorder("="), copy=True)


@dataclass(eq=False)
class _LegacyStorage:
    """A storage rebuilt from an embedded legacy ``torch.save`` byte string: a flat 1-D tensor."""

    data: torch.Tensor  # (numel,)


@dataclass(eq=False)
class _StoragePlaceholder:
    """Persistent id of a storage inside a legacy stream, before its bytes have been read."""

    key: str
    dtype: torch.dtype
    numel: int
    data: torch.Tensor | None = None


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only carries the dtype."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name = name
        self.dtype = dtype

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(f"torch.{self.name} may only appear inside a storage persistent id")

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"torch.{self.name} takes no state")


class _SafeCallable:
    """Wraps one of our own functions so that a ``BUILD`` opcode cannot modify it."""

    __slots__ = ("_fn", "name")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self._fn = fn
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"BUILD applied to the allowed global '{self.name}'")

    def __repr__(self) -> str:
        return f"<sfvq safe stand-in for {self.name}>"


@dataclass(eq=False)
class PersistentObject:
    """Inert record of one network module from a StyleGAN pickle (never a live object).

    Attributes:
        class_name: bare class name, e.g. ``"Generator"``, ``"SynthesisLayer"``.
        state: the module's ``__dict__`` as stored (training flag, ``_parameters``, ``_buffers``,
            ``_modules``, ``_init_args``, ``_init_kwargs`` and plain attributes).
        version: persistence format version from the meta dict (6 in all known files).
        module_src_sha256: hash of the stored source text (the text itself is discarded, never run).
    """

    class_name: str
    state: dict = field(repr=False)
    version: int | None = None
    module_src_sha256: str | None = None

    @property
    def init_args(self) -> tuple:
        """Positional constructor arguments (``_init_args``)."""
        args = self.state.get("_init_args", ())
        return tuple(args) if isinstance(args, list | tuple) else ()

    @property
    def init_kwargs(self) -> dict:
        """Keyword constructor arguments (``_init_kwargs``) as plain Python data."""
        kwargs = self.state.get("_init_kwargs", {})
        return to_plain(kwargs) if isinstance(kwargs, dict) else {}

    def _section(self, key: str) -> dict:
        sec = self.state.get(key)
        if sec is None:
            return {}
        if not isinstance(sec, dict):
            raise GeneratorError(
                f"{self.class_name}: state entry '{key}' is a {type(sec).__name__}, not a dict"
            )
        return sec

    @property
    def parameters(self) -> dict[str, torch.Tensor]:
        """This module's own parameters (entries that are ``None`` are omitted)."""
        return {k: v for k, v in self._section("_parameters").items() if v is not None}

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        """This module's own buffers (entries that are ``None`` are omitted)."""
        return {k: v for k, v in self._section("_buffers").items() if v is not None}

    @property
    def children(self) -> dict[str, PersistentObject]:
        """Direct child modules (entries that are ``None`` are omitted)."""
        out: dict[str, PersistentObject] = {}
        for k, v in self._section("_modules").items():
            if v is None:
                continue
            if not isinstance(v, PersistentObject):
                raise GeneratorError(f"{self.class_name}: child '{k}' is a {type(v).__name__}, not a module")
            out[k] = v
        return out

    @property
    def attributes(self) -> dict[str, Any]:
        """Plain attributes set by the constructor (keys not starting with ``_``, except ``training``)."""
        return {k: to_plain(v) for k, v in self.state.items() if not k.startswith("_") and k != "training"}

    def child(self, path: str) -> PersistentObject:
        """The descendant at a dotted path such as ``"synthesis.b4.conv1"``."""
        obj = self
        for part in path.split("."):
            kids = obj.children
            if part not in kids:
                raise GeneratorError(f"{self.class_name} has no submodule '{path}' (missing '{part}')")
            obj = kids[part]
        return obj

    def walk(self, prefix: str = "") -> Iterator[tuple[str, PersistentObject]]:
        """Yield ``(dotted path, module)`` for this module and every descendant, parents first."""
        yield prefix, self
        for name, kid in self.children.items():
            yield from kid.walk(f"{prefix}.{name}" if prefix else name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers of the whole tree with ``state_dict()``-style dotted keys."""
        out: dict[str, torch.Tensor] = {}
        for path, mod in self.walk():
            for kind, tensors in (("parameter", mod.parameters), ("buffer", mod.buffers)):
                for name, t in tensors.items():
                    key = f"{path}.{name}" if path else name
                    if not isinstance(t, torch.Tensor):
                        raise GeneratorError(f"{kind} '{key}' is a {type(t).__name__}, not a tensor")
                    out[key] = t
        return out


# ----------------------------------------------------------------------------------------------
# Our own implementations of the allowed callables
# ----------------------------------------------------------------------------------------------


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
    ):
        raise pickle.UnpicklingError(f"{what} must be a tuple of ints, got {value!r}")
    return tuple(int(v) for v in value)


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Turn a persistent-object meta dict into an inert :class:`PersistentObject` (never executes)."""
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError(f"persistent object meta is a {type(meta).__name__}, not a dict")
    if meta.get("type", "class") != "class":
        raise pickle.UnpicklingError(f"unsupported persistent object type {meta.get('type')!r}")
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise pickle.UnpicklingError("persistent object meta lacks a class_name string or a state dict")
    src = meta.get("module_src")
    digest = None
    if isinstance(src, str):  # hashed for identification only; the text is dropped, never executed
        digest = hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest()
    version = meta.get("version")
    return PersistentObject(
        class_name=class_name,
        state=state,
        version=version if isinstance(version, int) else None,
        module_src_sha256=digest,
    )


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_tensor_v2``: a bounds-checked strided view, made contiguous."""
    if not isinstance(storage, _LegacyStorage):
        raise pickle.UnpicklingError(f"tensor storage is a {type(storage).__name__}, not an embedded storage")
    size_t = _int_tuple(size, "tensor size")
    stride_t = _int_tuple(stride, "tensor stride")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise pickle.UnpicklingError(f"bad storage offset {storage_offset!r}")
    if len(size_t) != len(stride_t) or any(s < 0 for s in size_t) or any(s < 0 for s in stride_t):
        raise pickle.UnpicklingError(f"bad tensor size/stride {size_t}/{stride_t}")
    numel = storage.data.numel()
    if all(s > 0 for s in size_t):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size_t, stride_t, strict=True))
        if last >= numel:
            raise pickle.UnpicklingError(
                f"tensor of size {size_t}, stride {stride_t}, offset {storage_offset} reads past the end "
                f"of its storage ({numel} elements)"
            )
    return storage.data.as_strided(size_t, stride_t, storage_offset).contiguous()


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_parameter``: parameters come back as plain tensors."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_parameter_with_state`` (extra state is ignored)."""
    return _rebuild_parameter(data)


def _make_set(items: Any = ()) -> set:
    """Our own ``builtins.set`` (module state's ``_non_persistent_buffers_set``)."""
    if not isinstance(items, list | tuple | set | frozenset):
        raise pickle.UnpicklingError(f"set() argument is a {type(items).__name__}")
    return set(items)


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | bool | complex:
    """Our own ``numpy.core.multiarray.scalar``: returns a plain Python number."""
    if not isinstance(dtype, _NumpyDType):
        raise pickle.UnpicklingError("numpy scalar without a supported dtype")
    if not isinstance(data, bytes | bytearray):
        raise pickle.UnpicklingError("numpy scalar data is not a byte string (object scalars are refused)")
    dt = dtype.to_numpy()
    if len(data) != dt.itemsize:
        raise pickle.UnpicklingError(f"numpy {dt} scalar needs {dt.itemsize} bytes, got {len(data)}")
    return np.frombuffer(bytes(data), dtype=dt)[0].item()


def _numpy_reconstruct(subtype: Any, shape: Any = (0,), typecode: Any = b"b") -> _NumpyArrayStandIn:
    """Our own ``numpy.core.multiarray._reconstruct``: an empty stand-in that ``BUILD`` fills."""
    if subtype is not _NumpyNDArrayType:
        raise pickle.UnpicklingError("numpy _reconstruct of something other than numpy.ndarray")
    return _NumpyArrayStandIn()


def _numpy_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    """Our own ``numpy.core.numeric._frombuffer`` (protocol-5 numpy arrays)."""
    if not isinstance(dtype, _NumpyDType) or not isinstance(buf, bytes | bytearray):
        raise pickle.UnpicklingError("numpy _frombuffer with unsupported dtype or data")
    shape_t = _int_tuple(shape, "numpy array shape")
    dt = dtype.to_numpy()
    arr = np.frombuffer(bytes(buf), dtype=dt)
    if arr.size != (int(np.prod(shape_t)) if shape_t else 1):
        raise pickle.UnpicklingError("numpy _frombuffer data does not match its shape")
    return arr.reshape(shape_t, order="F" if order == "F" else "C").astype(dt.newbyteorder("="), copy=True)


class _StorageUnpickler(pickle.Unpickler):
    """Reads the small protocol-2 pickles inside an embedded legacy storage byte string."""

    def __init__(self, file: IO[bytes], placeholders: dict[str, _StoragePlaceholder]) -> None:
        super().__init__(file)
        self._placeholders = placeholders

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise UnsafePickleError(f"{module}.{name}", "an embedded tensor storage")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id in tensor storage: {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("storage persistent id without a torch storage class")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"bad storage key/size in persistent id {pid!r}")
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views (old torch format) are not supported")
        if key not in self._placeholders:
            self._placeholders[key] = _StoragePlaceholder(key, storage_type.dtype, numel)
        return self._placeholders[key]


def parse_legacy_storage(blob: bytes) -> torch.Tensor:
    """Parse one storage serialised in the legacy (non-zip) ``torch.save`` format.

    The blob holds protocol-2 pickles (magic number, protocol version 1001, system info, the storage
    as a persistent id, the list of storage keys), then for each key an 8-byte little-endian element
    count and the raw little-endian data. Returns the storage's contents as a flat tensor (numel,).
    """
    if not isinstance(blob, bytes | bytearray):
        raise pickle.UnpicklingError(f"storage blob is a {type(blob).__name__}, not bytes")
    f = io.BytesIO(bytes(blob))
    placeholders: dict[str, _StoragePlaceholder] = {}

    def load() -> Any:
        return _StorageUnpickler(f, placeholders).load()

    magic = load()
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("embedded storage does not start with the legacy torch.save magic")
    proto = load()
    if proto != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"embedded storage has legacy protocol {proto!r}, expected 1001")
    sys_info = load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise pickle.UnpicklingError("embedded storage is not marked little-endian")
    obj = load()
    if not isinstance(obj, _StoragePlaceholder):
        raise pickle.UnpicklingError(f"embedded storage stream holds a {type(obj).__name__}, not a storage")
    keys = load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise pickle.UnpicklingError("embedded storage key list is malformed")
    if sys.byteorder != "little":
        raise pickle.UnpicklingError("reading tensor storages on a big-endian machine is not supported")
    for key in keys:
        ph = placeholders.get(key)
        if ph is None:
            raise pickle.UnpicklingError(f"embedded storage lists unknown key {key!r}")
        head = f.read(8)
        if len(head) != 8:
            raise pickle.UnpicklingError("embedded storage data is truncated (missing element count)")
        (count,) = struct.unpack("<q", head)
        if count != ph.numel:
            raise pickle.UnpicklingError(f"embedded storage holds {count} elements, its id says {ph.numel}")
        elsize = torch.empty((), dtype=ph.dtype).element_size()
        raw = f.read(count * elsize)
        if len(raw) != count * elsize:
            raise pickle.UnpicklingError(
                f"embedded storage data is truncated ({len(raw)} of {count * elsize} bytes)"
            )
        if count:
            ph.data = torch.frombuffer(bytearray(raw), dtype=ph.dtype)  # (count,)
        else:
            ph.data = torch.empty(0, dtype=ph.dtype)
    if obj.data is None:
        raise pickle.UnpicklingError("embedded storage has no data for its key")
    return obj.data


def _load_from_bytes(blob: Any) -> _LegacyStorage:
    """Our own ``torch.storage._load_from_bytes`` (never ``torch.load``)."""
    return _LegacyStorage(parse_legacy_storage(blob))


# ----------------------------------------------------------------------------------------------
# The unpickler
# ----------------------------------------------------------------------------------------------

_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("builtins", "set"): _make_set,
    ("__builtin__", "set"): _make_set,
}
for _np_mod in ("numpy.core", "numpy._core"):
    _FUNCTIONS[(f"{_np_mod}.multiarray", "scalar")] = _numpy_scalar
    _FUNCTIONS[(f"{_np_mod}.multiarray", "_reconstruct")] = _numpy_reconstruct
    _FUNCTIONS[(f"{_np_mod}.numeric", "_frombuffer")] = _numpy_frombuffer

_CLASSES: dict[tuple[str, str], type] = {
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): _OrderedDictStandIn,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy", "ndarray"): _NumpyNDArrayType,
    ("torch", "Tensor"): _TorchTensorType,
    ("torch._tensor", "Tensor"): _TorchTensorType,
    ("torch.nn.parameter", "Parameter"): _TorchTensorType,
    ("torch.nn", "Parameter"): _TorchTensorType,
}

_TF_HINT = (
    "this is a TensorFlow-era StyleGAN/StyleGAN2 pickle (it contains '{name}'); sfvq only loads the "
    "PyTorch-format pickles of stylegan2-ada-pytorch and stylegan3. Convert the file to the PyTorch "
    "format first (stylegan2-ada-pytorch ships a converter for TensorFlow snapshots)."
)


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only hands out sfvq's own stand-ins.

    Every allowed global is mapped to a small function or class defined in this module; no real torch
    or numpy callable is ever returned, and no source text from the file is ever executed. Any other
    global raises :class:`UnsafePickleError` naming it (e.g. ``posix.system``); TensorFlow-era network
    classes raise :class:`TensorFlowPickleError`.
    """

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self._callables: dict[tuple[str, str], _SafeCallable] = {}
        self._own_callables: set[int] = set()

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _FUNCTIONS:
            if key not in self._callables:
                wrapper = _SafeCallable(_FUNCTIONS[key], f"{module}.{name}")
                self._callables[key] = wrapper
                self._own_callables.add(id(wrapper))
            return self._callables[key]
        if key == ("torch._tensor", "_rebuild_from_type_v2"):
            if key not in self._callables:
                self._callables[key] = _SafeCallable(self._rebuild_from_type_v2, f"{module}.{name}")
            return self._callables[key]
        if key in _CLASSES:
            return _CLASSES[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"torch.{name} outside an embedded storage")
        if module.startswith("dnnlib.tflib") or module.split(".")[0] == "tensorflow":
            raise TensorFlowPickleError(_TF_HINT.format(name=f"{module}.{name}"))
        raise UnsafePickleError(f"{module}.{name}")

    def _rebuild_from_type_v2(self, func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
        """Our own ``torch._tensor._rebuild_from_type_v2``: only re-applies one of our own functions."""
        if id(func) not in self._own_callables or not isinstance(args, tuple):
            raise pickle.UnpicklingError("_rebuild_from_type_v2 with a function that is not an allowed one")
        if new_type is not _TorchTensorType:
            raise pickle.UnpicklingError("_rebuild_from_type_v2 with an unsupported tensor type")
        return func(*args)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(
            f"unexpected persistent id {str(pid)[:80]!r} at the top level (a StyleGAN pickle has none)"
        )


def _finalize(obj: Any, memo: dict[int, Any]) -> Any:
    """Replace numpy array stand-ins by real (data-only) arrays throughout the loaded structure."""
    oid = id(obj)
    if oid in memo:
        return memo[oid]
    if isinstance(obj, _NumpyArrayStandIn):
        if obj.array is None:
            raise pickle.UnpicklingError("numpy array was reconstructed but never given its data")
        memo[oid] = obj.array
        return obj.array
    if isinstance(obj, dict):
        memo[oid] = obj
        for k in list(obj.keys()):
            obj[k] = _finalize(obj[k], memo)
        return obj
    if isinstance(obj, list):
        memo[oid] = obj
        for i, v in enumerate(obj):
            obj[i] = _finalize(v, memo)
        return obj
    if isinstance(obj, tuple):
        memo[oid] = obj
        out = tuple(_finalize(v, memo) for v in obj)
        memo[oid] = out
        return out
    if isinstance(obj, PersistentObject):
        memo[oid] = obj
        _finalize(obj.state, memo)
        return obj
    if isinstance(obj, _LegacyStorage | _StorageType | _SafeCallable | _NumpyDType | type):
        raise pickle.UnpicklingError(f"loaded data holds an internal {type(obj).__name__} object")
    return obj


def to_plain(obj: Any) -> Any:
    """Convert loaded config data to plain Python: EasyDict/OrderedDict -> dict, arrays -> lists."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def safe_load(file: IO[bytes]) -> Any:
    """Unpickle from a binary file object with :class:`SafeUnpickler` (nothing is executed)."""
    obj = SafeUnpickler(file).load()
    return _finalize(obj, {})


def safe_loads(data: bytes) -> Any:
    """Unpickle bytes with :class:`SafeUnpickler`."""
    return safe_load(io.BytesIO(data))


_CORRUPT_ERRORS = (
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
    OverflowError,
    RecursionError,
    UnicodeDecodeError,
    RuntimeError,
    MemoryError,
)


def load_pickle_file(path: str | Path) -> Any:
    """Safely load a StyleGAN network pickle from disk.

    Raises :class:`GeneratorError` (or a subclass) for a missing file, a file that is not a binary
    pickle, a truncated or corrupt pickle, a forbidden global (:class:`UnsafePickleError`) and a
    TensorFlow-era pickle (:class:`TensorFlowPickleError`).
    """
    p = Path(path)
    if not p.exists():
        raise GeneratorError(f"generator file not found: {p}")
    if not p.is_file():
        raise GeneratorError(f"not a file: {p}")
    with open(p, "rb") as f:
        head = f.read(8)
        if not head:
            raise GeneratorError(f"{p} is empty (0 bytes), not a StyleGAN network pickle")
        if head[:4] == b"PK\x03\x04":
            raise GeneratorError(
                f"{p} is a zip archive (e.g. a torch.save checkpoint), not a StyleGAN network pickle"
            )
        if head[0] != 0x80 or head[1] < 2:
            raise GeneratorError(
                f"{p} is not a StyleGAN network pickle: it starts with {head!r}, expected a binary pickle "
                "header (0x80, protocol 2 or later)"
            )
        f.seek(0)
        try:
            return safe_load(f)
        except GeneratorError:
            raise
        except _CORRUPT_ERRORS as e:
            raise GeneratorError(f"{p}: truncated or corrupt pickle ({type(e).__name__}: {e})") from e
