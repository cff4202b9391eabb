"""A safe, allow-listed, bounded unpickler for NVIDIA's PyTorch-format StyleGAN network pickles.

A plain ``pickle.load`` of a ``.pkl`` calls whatever global the file names (a malicious file can run
shell commands), and NVIDIA's own loader ``exec``s the source code stored in the file. This module
does neither. :class:`SafeUnpickler` maps every global it allows to a small function or class of
sfvq's own (its own ``_rebuild_tensor_v2``, its own parser for the embedded legacy storage byte
strings, its own numpy scalar/array readers) and refuses every other name with an
:class:`UnsafePickleError` naming it. Network modules (NVIDIA's "persistent objects") come back as
inert :class:`PersistentObject` records: class name, constructor kwargs, attributes, parameters,
buffers and children. The stored ``module_src`` text is hashed and dropped, never executed.

Beyond the allow-list, the unpickler is bounded, so that a small hostile file cannot make it spend
minutes or gigabytes (see ``docs/security.md``):

* it is the pure-Python unpickler with its own opcode table: reads never go past the end of the file,
  every opcode is charged to the load's :class:`~sfvq.generators.limits.LoadBudget`, nested tuples are
  weighed (a tuple's hash and repr cost its expanded size) and dict keys and set items are limited to
  strings, numbers and small tuples;
* ``REDUCE`` may only call the allowed stand-ins, ``NEWOBJ`` only make the dict stand-ins, and
  ``BUILD`` only reaches the ``__setstate__`` of sfvq's own stand-ins, never a tensor, a record or
  ``setattr``: tensors are made only by :func:`_rebuild_tensor_v2` (``INST``/``OBJ``/``EXT`` are refused);
* a tensor may not describe more bytes than its storage holds (a stride-0 view of one float is refused
  rather than materialised), and every storage, copy and array is charged before it is allocated;
* :func:`to_plain` is memoised, refuses cycles and counts the expanded size of shared structures, and
  error messages show values through :func:`~sfvq.generators.limits.brief`.

The same bounded machinery scans the pickles inside torch checkpoints before ``torch.load`` reads them
(:func:`scan_torch_pickle`).

The format is described in ``shared/docs/stylegan-pkl-format.md`` (sections 1-4).
"""

from __future__ import annotations

import hashlib
import io
import math
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

from sfvq.generators import limits
from sfvq.generators.base import GeneratorError
from sfvq.generators.limits import LoadBudget, brief, brief_text

__all__ = [
    "EasyDict",
    "PersistentObject",
    "RefusedPickleError",
    "SafeUnpickler",
    "TensorFlowPickleError",
    "TorchStorageRecord",
    "UnsafePickleError",
    "load_pickle_file",
    "parse_legacy_storage",
    "safe_load",
    "safe_loads",
    "scan_torch_pickle",
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
# bytes per element of the storage classes a torch checkpoint may name (for the pre-load scan)
_STORAGE_ITEMSIZE: dict[str, int] = {
    **{name: torch.empty((), dtype=dt).element_size() for name, dt in _STORAGE_DTYPES.items()},
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
    "UntypedStorage": 1,
}

# numpy dtype strings we accept for scalars and small arrays (no object or structured dtypes)
_NUMPY_DTYPE_RE = re.compile(r"^(b1|\?|[iu][1248]|f[248]|c(8|16))$")

# Bounds on what one pickle may ask of the unpickler. Real StyleGAN pickles stay far below each.
_OP_BYTES = 128  # memory charged per opcode: one new object, its stack or memo slot
_OP_CHARGE_EVERY = 1024  # opcodes are charged to the budget in batches of this many
_MAX_TUPLE_WEIGHT = 4096  # expanded size of a tuple (its items plus those of nested tuples)
_MAX_KEY_WEIGHT = 64  # expanded size of a tuple used as a dict key or set item (it is hashed)
_MAX_ODD_KEYS = 1000  # dict keys / set items that are not str or bytes (their hashes are predictable)
_MAX_INT_BYTES = 64  # LONG1/LONG4 integers: at most 512 bits
_MAX_DIMS = 32  # tensor/array rank
_MAX_DIM = 2**62  # one tensor/array dimension, stride or offset
_MAX_PLAIN_ITEMS = 100_000  # expanded size of config data converted by to_plain
_MAX_PLAIN_DEPTH = 64  # nesting of config data converted by to_plain


class UnsafePickleError(GeneratorError):
    """The pickle references a global that is not on the allow-list; nothing it asked for was run."""

    def __init__(self, global_name: str, where: str = "") -> None:
        self.global_name = brief_text(global_name, 200)
        place = f" in {where}" if where else ""
        super().__init__(
            f"refusing to unpickle global '{self.global_name}'{place}: it is not on sfvq's allow-list for "
            "StyleGAN network pickles, so the file was not loaded (it may be malicious, or not a "
            "StyleGAN2-ADA/StyleGAN3 PyTorch snapshot)"
        )


class TensorFlowPickleError(GeneratorError):
    """A TensorFlow-era StyleGAN/StyleGAN2 pickle (``dnnlib.tflib.network.Network``)."""


class RefusedPickleError(GeneratorError, pickle.UnpicklingError):
    """The pickle asks for something the bounded unpickler never does (BUILD on a tensor, a call of a
    non-allowed object, a heavy hashed tuple, ...): the file was not loaded."""

    def __init__(self, why: str) -> None:
        super().__init__(f"refusing to load: {why}")


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


_DICT_TYPES = (dict, EasyDict, _OrderedDictStandIn)


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
            raise pickle.UnpicklingError(f"unsupported numpy dtype {brief(spec)} (only plain numeric dtypes)")
        self.spec = spec
        self.byteorder = "<" if spec not in ("b1", "?", "i1", "u1") else "|"

    def __setstate__(self, state: Any) -> None:
        # state = (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"unexpected numpy dtype state {brief(state)}")
        if len(state) > 4 and (state[2] is not None or state[3] is not None or state[4] is not None):
            raise pickle.UnpicklingError("structured or sub-array numpy dtypes are not supported")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        dt = np.dtype(self.spec)
        if self.byteorder in ("<", ">"):
            dt = dt.newbyteorder(self.byteorder)
        return dt


class _NumpyArrayStandIn:
    """Result of ``numpy.core.multiarray._reconstruct``; ``BUILD`` fills in :attr:`array` (once)."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # state = (version, shape, dtype, is_fortran, rawdata)
        if self.array is not None:
            raise pickle.UnpicklingError("numpy array given its data twice")
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("unexpected numpy array state")
        _version, shape, dtype, is_fortran, raw = state
        if not isinstance(dtype, _NumpyDType):
            raise pickle.UnpicklingError("numpy array state without a supported dtype")
        if not isinstance(raw, bytes | bytearray):
            raise pickle.UnpicklingError("numpy array data is not a byte string (object arrays are refused)")
        shape = _int_tuple(shape, "numpy array shape")
        dt = dtype.to_numpy()
        count = math.prod(shape)
        if len(raw) != count * dt.itemsize:
            raise pickle.UnpicklingError(
                f"numpy array data holds {len(raw)} bytes, shape {shape} needs {count * dt.itemsize}"
            )
        _charge(len(raw), f"a numpy array of shape {shape}")
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
        """Positional constructor arguments (``_init_args``), as stored."""
        args = self.state.get("_init_args", ())
        return tuple(args) if isinstance(args, list | tuple) else ()

    @property
    def init_kwargs(self) -> dict:
        """Keyword constructor arguments (``_init_kwargs``) as plain Python data."""
        kwargs = self.state.get("_init_kwargs", {})
        return to_plain(kwargs) if isinstance(kwargs, dict) else {}

    def attribute(self, name: str, default: Any = None) -> Any:
        """One plain attribute as plain Python data (``default`` if absent)."""
        return to_plain(self.state[name]) if name in self.state else default

    def _section(self, key: str) -> dict:
        sec = self.state.get(key)
        if sec is None:
            return {}
        if not isinstance(sec, dict):
            raise GeneratorError(
                f"{self.class_name}: state entry '{key}' is a {type(sec).__name__}, not a dict"
            )
        bad = [k for k in sec if not isinstance(k, str)]
        if bad:
            raise GeneratorError(
                f"{self.class_name}: state entry '{key}' has a non-string name {brief(bad[0])}"
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
        return {
            k: to_plain(v)
            for k, v in self.state.items()
            if isinstance(k, str) and not k.startswith("_") and k != "training"
        }

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
        """Yield ``(dotted path, module)`` for this module and every descendant, parents first.

        A module may appear only once in the tree: a module that contains itself, or one shared by two
        parents, is refused (a network pickle is a tree).
        """
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            path, mod = stack.pop()
            if id(mod) in seen:
                raise GeneratorError(f"module '{path}' ({mod.class_name}) appears twice in the network tree")
            seen.add(id(mod))
            yield path, mod
            kids = list(mod.children.items())
            for name, kid in reversed(kids):
                stack.append((f"{path}.{name}" if path else name, kid))

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


def _charge(nbytes: int, what: str) -> None:
    """Charge the active load's budget (a default one if none is active)."""
    budget = limits.current_budget()
    if budget is None:
        budget = limits.budget_for(None)
    budget.charge(nbytes, what)


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if (
        not isinstance(value, tuple | list)
        or len(value) > _MAX_DIMS
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
    ):
        raise pickle.UnpicklingError(
            f"{what} must be a tuple of at most {_MAX_DIMS} ints, got {brief(value)}"
        )
    out = tuple(int(v) for v in value)
    if any(v < 0 or v > _MAX_DIM for v in out):
        raise pickle.UnpicklingError(f"{what} {brief(out)} has a negative or absurdly large entry")
    return out


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Turn a persistent-object meta dict into an inert :class:`PersistentObject` (never executes)."""
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError(f"persistent object meta is a {type(meta).__name__}, not a dict")
    if meta.get("type", "class") != "class":
        raise pickle.UnpicklingError(f"unsupported persistent object type {brief(meta.get('type'))}")
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
        class_name=brief_text(class_name, 200),
        state=dict(state),  # a copy: later opcodes on the stored dict cannot change the record
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
    """Our own ``torch._utils._rebuild_tensor_v2``: a bounds-checked strided view, made contiguous.

    The tensor may not hold more bytes than its storage (a stride-0 or overlapping view would be
    materialised at its full size); a copy, where the view is not already contiguous, is charged first.
    """
    if not isinstance(storage, _LegacyStorage):
        raise pickle.UnpicklingError(f"tensor storage is a {type(storage).__name__}, not an embedded storage")
    size_t = _int_tuple(size, "tensor size")
    stride_t = _int_tuple(stride, "tensor stride")
    if (
        isinstance(storage_offset, bool)
        or not isinstance(storage_offset, int)
        or not 0 <= storage_offset <= _MAX_DIM
    ):
        raise pickle.UnpicklingError(f"bad storage offset {brief(storage_offset)}")
    if len(size_t) != len(stride_t):
        raise pickle.UnpicklingError(f"bad tensor size/stride {size_t}/{stride_t}")
    data = storage.data
    numel = data.numel()
    elsize = data.element_size()
    count = math.prod(size_t)
    if count > numel:
        raise RefusedPickleError(
            f"a tensor of size {size_t} and stride {stride_t} would hold "
            f"{limits.format_bytes(count * elsize)}, but its storage holds only "
            f"{limits.format_bytes(numel * elsize)} (a stride-0 or overlapping view; a saved network never "
            "has one)"
        )
    if count > 0:
        last = storage_offset + sum((s - 1) * st for s, st in zip(size_t, stride_t, strict=True))
        if last >= numel:
            raise pickle.UnpicklingError(
                f"tensor of size {size_t}, stride {stride_t}, offset {storage_offset} reads past the end "
                f"of its storage ({numel} elements)"
            )
    view = data.as_strided(size_t, stride_t, storage_offset)
    if not view.is_contiguous():
        _charge(count * elsize, f"a copy of a tensor of size {size_t}")
    return view.contiguous()


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_parameter``: parameters come back as plain tensors."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_parameter_with_state`` (extra state is ignored, never applied)."""
    return _rebuild_parameter(data)


def _make_set(items: Any = ()) -> set:
    """Our own ``builtins.set`` (module state's ``_non_persistent_buffers_set``): strings only."""
    if not isinstance(items, list | tuple | set | frozenset):
        raise pickle.UnpicklingError(f"set() argument is a {type(items).__name__}")
    if not all(isinstance(v, str) for v in items):
        raise RefusedPickleError("a set() of something other than strings")
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
    if len(buf) % dt.itemsize or len(buf) // dt.itemsize != math.prod(shape_t):
        raise pickle.UnpicklingError("numpy _frombuffer data does not match its shape")
    _charge(len(buf), f"a numpy array of shape {shape_t}")
    arr = np.frombuffer(bytes(buf), dtype=dt)
    return arr.reshape(shape_t, order="F" if order == "F" else "C").astype(dt.newbyteorder("="), copy=True)


# ----------------------------------------------------------------------------------------------
# The bounded unpickler
# ----------------------------------------------------------------------------------------------


class _BoundedReader:
    """A binary file seen by the unpickler: a read never asks for more than is left (no allocation sized
    by a length field) and a short read is an error. With ``charge``, the bytes left in the file are
    charged to the budget at the start (the pickle's data is held while it loads)."""

    def __init__(self, file: IO[bytes], budget: LoadBudget, charge: bool) -> None:
        self._read = file.read
        self._readline = file.readline
        self.left: int | None
        try:
            pos = file.tell()
            end = file.seek(0, io.SEEK_END)
            file.seek(pos)
            self.left = end - pos
        except (AttributeError, OSError, ValueError):
            self.left = None
        if charge and self.left is not None:
            budget.charge(self.left, "the pickle data")

    def read(self, n: int = -1) -> bytes:
        left = self.left
        if n < 0:
            data = self._read()
        else:
            if left is not None and n > left:
                raise pickle.UnpicklingError(
                    f"pickle data was truncated: an item needs {n} bytes, only {left} are left"
                )
            data = self._read(n)
            if len(data) != n:
                raise pickle.UnpicklingError("pickle data was truncated")
        if left is not None:
            self.left = left - len(data)
        return data

    def readline(self) -> bytes:
        line = self._readline()
        if self.left is not None:
            self.left -= len(line)
        return line


class _OpcodeTable(dict):
    """The unpickler's opcode table; an unknown opcode is a clear error rather than a KeyError."""

    def __missing__(self, code: int) -> Callable[..., None]:
        raise pickle.UnpicklingError(f"invalid pickle opcode {code:#04x}")


class _BoundedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with reads, objects, hashing and object-changing opcodes bounded.

    Subclasses decide what ``REDUCE`` may call (:meth:`_call`), what ``NEWOBJ`` may make (:meth:`_new`)
    and what ``BUILD`` may change (:meth:`_build`); everything else here is common.
    """

    dispatch: dict[int, Callable[..., None]]  # set below the class

    charge_data = False  # whether the bytes of the stream are charged (the top-level pickle only)

    def __init__(self, file: IO[bytes], budget: LoadBudget | None = None) -> None:
        self._budget = budget if budget is not None else limits.budget_for(None)
        self._reader = _BoundedReader(file, self._budget, self.charge_data)
        super().__init__(self._reader)
        self._ops = 0
        self._odd_keys = 0
        self._tuple_weights: dict[int, tuple[tuple, int]] = {}  # id -> (tuple kept alive, weight)

    # -- accounting --------------------------------------------------------------------------------
    def _charge_ops(self) -> None:
        self._ops = 0
        self._budget.charge(_OP_CHARGE_EVERY * _OP_BYTES, "the objects the pickle creates")

    def _weight(self, t: tuple) -> int:
        entry = self._tuple_weights.get(id(t))
        return entry[1] if entry is not None else len(t)

    def _make_tuple(self, items: list | tuple) -> tuple:
        t = tuple(items)
        weight = len(t) + sum(self._weight(x) for x in t if type(x) is tuple)
        if weight > _MAX_TUPLE_WEIGHT:
            raise RefusedPickleError(
                f"nested tuples of expanded size {weight} (more than {_MAX_TUPLE_WEIGHT}; hashing or "
                "printing them would take exponential time)"
            )
        if weight > len(t):  # flat tuples weigh their length, which _weight assumes
            self._tuple_weights[id(t)] = (t, weight)
        return t

    def _check_key(self, key: Any) -> None:
        """A dict key or set item: str and bytes (randomised hashes) freely, other scalars and small
        tuples counted (their hashes are predictable), anything else refused."""
        kind = type(key)
        if kind is str or kind is bytes:
            return
        if key is None or kind in (int, float, bool, complex, tuple):
            self._odd_keys += 1
            if self._odd_keys > _MAX_ODD_KEYS:
                raise RefusedPickleError(
                    f"more than {_MAX_ODD_KEYS} dict keys or set items that are not strings"
                )
            if kind is tuple and self._weight(key) > _MAX_KEY_WEIGHT:
                raise RefusedPickleError(
                    f"a dict key or set item that is a tuple of expanded size > {_MAX_KEY_WEIGHT}"
                )
            return
        raise RefusedPickleError(f"a dict key or set item of type {kind.__name__}")

    # -- opcodes with checks -----------------------------------------------------------------------
    def _op_tuple(self) -> None:
        items = self.pop_mark()  # before self.append is looked up: pop_mark rebinds it
        self.append(self._make_tuple(items))

    def _op_tuple1(self) -> None:
        self.stack[-1] = self._make_tuple(self.stack[-1:])

    def _op_tuple2(self) -> None:
        self.stack[-2:] = [self._make_tuple(self.stack[-2:])]

    def _op_tuple3(self) -> None:
        self.stack[-3:] = [self._make_tuple(self.stack[-3:])]

    def _op_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise pickle.UnpicklingError("DICT with an odd number of items")
        for k in items[::2]:
            self._check_key(k)
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})

    def _target(self, kinds: tuple[type, ...], op: str) -> Any:
        target = self.stack[-1]
        if type(target) not in kinds and not self._accepts_items(target):
            raise RefusedPickleError(f"{op} applied to a {type(target).__name__}")
        return target

    def _accepts_items(self, target: Any) -> bool:
        """Whether container opcodes may touch ``target`` beyond plain containers (scan mode: inert)."""
        return False

    def _op_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        target = self._target(_DICT_TYPES, "SETITEM")
        self._check_key(key)
        if isinstance(target, dict):
            target[key] = value

    def _op_setitems(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise pickle.UnpicklingError("SETITEMS with an odd number of items")
        target = self._target(_DICT_TYPES, "SETITEMS")
        for k in items[::2]:
            self._check_key(k)
        if isinstance(target, dict):
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]

    def _op_append(self) -> None:
        value = self.stack.pop()
        target = self._target((list,), "APPEND")
        if isinstance(target, list):
            target.append(value)

    def _op_appends(self) -> None:
        items = self.pop_mark()
        target = self._target((list,), "APPENDS")
        if isinstance(target, list):
            target.extend(items)

    def _op_additems(self) -> None:
        items = self.pop_mark()
        target = self._target((set,), "ADDITEMS")
        for item in items:
            self._check_key(item)
        if isinstance(target, set):
            target.update(items)

    def _op_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            self._check_key(item)
        self.append(frozenset(items))

    def _op_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if type(args) is not tuple:
            raise pickle.UnpicklingError(f"REDUCE arguments are a {type(args).__name__}, not a tuple")
        self.stack[-1] = self._call(func, args)

    def _op_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if type(args) is not tuple:
            raise pickle.UnpicklingError("NEWOBJ arguments are not a tuple")
        self.append(self._new(cls, args, {}))

    def _op_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if type(args) is not tuple or type(kwargs) is not dict:
            raise pickle.UnpicklingError("NEWOBJ_EX arguments are not a tuple and a dict")
        self.append(self._new(cls, args, kwargs))

    def _op_build(self) -> None:
        state = self.stack.pop()
        self._build(self.stack[-1], state)

    def _op_long1(self) -> None:
        n = self.read(1)[0]
        self._long(n)

    def _op_long4(self) -> None:
        (n,) = struct.unpack("<i", self.read(4))
        if n < 0:
            raise pickle.UnpicklingError("LONG4 with a negative byte count")
        self._long(n)

    def _long(self, n: int) -> None:
        if n > _MAX_INT_BYTES:
            raise RefusedPickleError(f"an integer of {n} bytes (at most {_MAX_INT_BYTES})")
        self.append(int.from_bytes(self.read(n), "little", signed=True))

    def _op_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        if self._reader.left is not None and n > self._reader.left:
            raise pickle.UnpicklingError(f"pickle data was truncated: a bytearray of {n} bytes")
        self.append(bytearray(self.read(n)))

    def _refused_opcode(self) -> None:
        raise RefusedPickleError("an INST/OBJ/EXT/out-of-band-buffer opcode (never used by a network pickle)")

    # -- hooks --------------------------------------------------------------------------------------
    def _call(self, func: Any, args: tuple) -> Any:
        raise RefusedPickleError(f"REDUCE calls a {type(func).__name__}")

    def _new(self, cls: Any, args: tuple, kwargs: dict) -> Any:
        raise RefusedPickleError(f"NEWOBJ of a {type(cls).__name__}")

    def _build(self, inst: Any, state: Any) -> None:
        raise RefusedPickleError(f"BUILD on a {type(inst).__name__}")


def _counted(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    def op(self: _BoundedUnpickler) -> None:
        self._ops += 1
        if self._ops >= _OP_CHARGE_EVERY:
            self._charge_ops()
        fn(self)

    op.__name__ = getattr(fn, "__name__", "op")
    return op


_CHECKED_OPCODES: dict[bytes, Callable[[Any], None]] = {
    pickle.TUPLE: _BoundedUnpickler._op_tuple,
    pickle.TUPLE1: _BoundedUnpickler._op_tuple1,
    pickle.TUPLE2: _BoundedUnpickler._op_tuple2,
    pickle.TUPLE3: _BoundedUnpickler._op_tuple3,
    pickle.DICT: _BoundedUnpickler._op_dict,
    pickle.SETITEM: _BoundedUnpickler._op_setitem,
    pickle.SETITEMS: _BoundedUnpickler._op_setitems,
    pickle.APPEND: _BoundedUnpickler._op_append,
    pickle.APPENDS: _BoundedUnpickler._op_appends,
    pickle.ADDITEMS: _BoundedUnpickler._op_additems,
    pickle.FROZENSET: _BoundedUnpickler._op_frozenset,
    pickle.REDUCE: _BoundedUnpickler._op_reduce,
    pickle.NEWOBJ: _BoundedUnpickler._op_newobj,
    pickle.NEWOBJ_EX: _BoundedUnpickler._op_newobj_ex,
    pickle.BUILD: _BoundedUnpickler._op_build,
    pickle.LONG1: _BoundedUnpickler._op_long1,
    pickle.LONG4: _BoundedUnpickler._op_long4,
    pickle.BYTEARRAY8: _BoundedUnpickler._op_bytearray8,
    **{
        op: _BoundedUnpickler._refused_opcode
        for op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4)
    },
    pickle.NEXT_BUFFER: _BoundedUnpickler._refused_opcode,
    pickle.READONLY_BUFFER: _BoundedUnpickler._refused_opcode,
}
_BoundedUnpickler.dispatch = _OpcodeTable(
    {
        code: _counted(_CHECKED_OPCODES.get(bytes([code]), fn))
        for code, fn in pickle._Unpickler.dispatch.items()  # type: ignore[attr-defined]
    }
)


class _StorageUnpickler(_BoundedUnpickler):
    """Reads the small protocol-2 pickles inside an embedded legacy storage byte string."""

    def __init__(
        self, file: IO[bytes], placeholders: dict[str, _StoragePlaceholder], budget: LoadBudget | None = None
    ) -> None:
        super().__init__(file, budget)
        self._placeholders = placeholders

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise UnsafePickleError(f"{module}.{name}", "an embedded tensor storage")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id in tensor storage: {brief(pid)}")
        _, storage_type, key, _location, numel = pid[:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("storage persistent id without a torch storage class")
        if not isinstance(key, str) or isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"bad storage key/size in persistent id {brief(pid)}")
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views (old torch format) are not supported")
        if key not in self._placeholders:
            self._placeholders[key] = _StoragePlaceholder(key, storage_type.dtype, numel)
        return self._placeholders[key]


def parse_legacy_storage(blob: bytes) -> torch.Tensor:
    """Parse one storage serialised in the legacy (non-zip) ``torch.save`` format.

    The blob holds protocol-2 pickles (magic number, protocol version 1001, system info, the storage
    as a persistent id, the list of storage keys), then for each key an 8-byte little-endian element
    count and the raw little-endian data. Returns the storage's contents as a flat tensor (numel,),
    charged to the active load budget before it is allocated.
    """
    if not isinstance(blob, bytes | bytearray):
        raise pickle.UnpicklingError(f"storage blob is a {type(blob).__name__}, not bytes")
    f = io.BytesIO(blob)
    placeholders: dict[str, _StoragePlaceholder] = {}
    budget = limits.current_budget() or limits.budget_for(None)

    def load() -> Any:
        return _StorageUnpickler(f, placeholders, budget).load()

    magic = load()
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("embedded storage does not start with the legacy torch.save magic")
    proto = load()
    if proto != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"embedded storage has legacy protocol {brief(proto)}, expected 1001")
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
    view = memoryview(blob)
    for key in keys:
        ph = placeholders.get(key)
        if ph is None:
            raise pickle.UnpicklingError(f"embedded storage lists unknown key {brief(key)}")
        head = f.read(8)
        if len(head) != 8:
            raise pickle.UnpicklingError("embedded storage data is truncated (missing element count)")
        (count,) = struct.unpack("<q", head)
        if count != ph.numel:
            raise pickle.UnpicklingError(f"embedded storage holds {count} elements, its id says {ph.numel}")
        elsize = torch.empty((), dtype=ph.dtype).element_size()
        start = f.tell()
        if count * elsize > len(blob) - start:
            raise pickle.UnpicklingError(
                f"embedded storage data is truncated ({len(blob) - start} of {count * elsize} bytes)"
            )
        budget.charge(count * elsize, f"a tensor storage of {count} elements")
        if count:
            ph.data = torch.frombuffer(
                bytearray(view[start : start + count * elsize]), dtype=ph.dtype
            )  # (count,)
        else:
            ph.data = torch.empty(0, dtype=ph.dtype)
        f.seek(start + count * elsize)
    if obj.data is None:
        raise pickle.UnpicklingError("embedded storage has no data for its key")
    return obj.data


def _load_from_bytes(blob: Any) -> _LegacyStorage:
    """Our own ``torch.storage._load_from_bytes`` (never ``torch.load``)."""
    return _LegacyStorage(parse_legacy_storage(blob))


# ----------------------------------------------------------------------------------------------
# The StyleGAN pickle unpickler
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
# What BUILD may reach: only these stand-ins' own __setstate__ (never setattr, never a tensor).
_BUILDABLE = (EasyDict, _OrderedDictStandIn, _NumpyDType, _NumpyArrayStandIn)

_TF_HINT = (
    "this is a TensorFlow-era StyleGAN/StyleGAN2 pickle (it contains '{name}'); sfvq only loads the "
    "PyTorch-format pickles of stylegan2-ada-pytorch and stylegan3. Convert the file to the PyTorch "
    "format first (stylegan2-ada-pytorch ships a converter for TensorFlow snapshots)."
)


def _dict_arg_keys(args: tuple) -> list[Any]:
    """The keys a dict constructor would hash for ``args`` (a mapping or an iterable of pairs)."""
    if not args:
        return []
    if len(args) != 1:
        raise pickle.UnpicklingError(f"a dict constructor with {len(args)} arguments")
    arg = args[0]
    if isinstance(arg, dict):
        return list(arg)
    if not isinstance(arg, list | tuple) or not all(type(p) in (list, tuple) and len(p) == 2 for p in arg):
        raise pickle.UnpicklingError("a dict constructor whose argument is not a list of pairs")
    return [p[0] for p in arg]


class SafeUnpickler(_BoundedUnpickler):
    """The bounded unpickler whose ``find_class`` only hands out sfvq's own stand-ins.

    Every allowed global is mapped to a small function or class defined in this module; no real torch
    or numpy callable is ever returned, and no source text from the file is ever executed. Any other
    global raises :class:`UnsafePickleError` naming it (e.g. ``posix.system``); TensorFlow-era network
    classes raise :class:`TensorFlowPickleError`. ``REDUCE``, ``NEWOBJ`` and ``BUILD`` reach only these
    stand-ins (see the module docstring).
    """

    charge_data = True

    def __init__(self, file: IO[bytes], budget: LoadBudget | None = None) -> None:
        super().__init__(file, budget)
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
            raise TensorFlowPickleError(_TF_HINT.format(name=brief_text(f"{module}.{name}", 200)))
        raise UnsafePickleError(f"{module}.{name}")

    def _rebuild_from_type_v2(self, func: Any, new_type: Any, args: Any, state: Any = None) -> Any:
        """Our own ``torch._tensor._rebuild_from_type_v2``: only re-applies one of our own functions
        (the tensor ``state`` is never applied)."""
        if id(func) not in self._own_callables or not isinstance(args, tuple):
            raise pickle.UnpicklingError("_rebuild_from_type_v2 with a function that is not an allowed one")
        if new_type is not _TorchTensorType:
            raise pickle.UnpicklingError("_rebuild_from_type_v2 with an unsupported tensor type")
        return func(*args)

    def _call(self, func: Any, args: tuple) -> Any:
        if isinstance(func, _SafeCallable):
            return func(*args)
        if func is EasyDict or func is _OrderedDictStandIn:
            for k in _dict_arg_keys(args):
                self._check_key(k)
            return func(*args)
        if func is _NumpyDType:
            return func(*args)
        if isinstance(func, type) and issubclass(func, _TypeMarker):
            raise pickle.UnpicklingError(f"{func.__name__} cannot be instantiated")
        raise RefusedPickleError(f"REDUCE calls a {type(func).__name__}, which is not an allowed function")

    def _new(self, cls: Any, args: tuple, kwargs: dict) -> Any:
        if (cls is EasyDict or cls is _OrderedDictStandIn) and not args and not kwargs:
            return cls()
        what = cls.__name__ if isinstance(cls, type) else type(cls).__name__
        raise RefusedPickleError(f"NEWOBJ of {what} (only dicts are made that way)")

    def _build(self, inst: Any, state: Any) -> None:
        if type(inst) not in _BUILDABLE:
            what = inst.__name__ if isinstance(inst, type) else type(inst).__name__
            raise RefusedPickleError(
                f"BUILD on a {what} (tensors and records are made only by sfvq's own constructors)"
            )
        inst.__setstate__(state)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(
            f"unexpected persistent id {brief(pid, 80)} at the top level (a StyleGAN pickle has none)"
        )


# ----------------------------------------------------------------------------------------------
# Scanning the pickle of a torch checkpoint before torch.load reads it
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchStorageRecord:
    """One storage a torch checkpoint's pickle names: its class name, key and element count."""

    storage_type: str
    key: str
    numel: int

    @property
    def nbytes(self) -> int:
        """Bytes the storage declares (element count times the class's element size; 1 if unknown)."""
        return self.numel * _STORAGE_ITEMSIZE.get(self.storage_type, 1)


class _InertGlobal:
    """A global named by a torch checkpoint, during the scan: calling it makes an inert object."""

    def __init__(self, name: str) -> None:
        self.name = name


class _InertObject:
    """Whatever a torch checkpoint's pickle builds, during the scan: it accepts state and items."""


class _TorchScanUnpickler(_BoundedUnpickler):
    """Walks a torch checkpoint's pickle with every bound of :class:`_BoundedUnpickler`, calling nothing.

    Globals become :class:`_InertGlobal`, calls and builds make or accept :class:`_InertObject`, and the
    storages named by persistent ids are recorded. ``torch.load(weights_only=True)`` judges the globals
    afterwards; this pass only makes sure that reading the pickle is cheap and sizes nothing from it.
    """

    def __init__(self, file: IO[bytes], budget: LoadBudget | None = None) -> None:
        super().__init__(file, budget)
        self.storages: dict[str, TorchStorageRecord] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _OrderedDictStandIn
        return _InertGlobal(f"{module}.{name}")

    def _accepts_items(self, target: Any) -> bool:
        return isinstance(target, _InertObject)

    def _call(self, func: Any, args: tuple) -> Any:
        if func is _OrderedDictStandIn:
            for k in _dict_arg_keys(args):
                self._check_key(k)
            return _OrderedDictStandIn(*args)
        if isinstance(func, _InertGlobal):
            return _InertObject()
        raise RefusedPickleError(f"REDUCE calls a {type(func).__name__}")

    def _new(self, cls: Any, args: tuple, kwargs: dict) -> Any:
        if isinstance(cls, _InertGlobal) or cls is _OrderedDictStandIn:
            return _InertObject()
        raise RefusedPickleError(f"NEWOBJ of a {type(cls).__name__}")

    def _build(self, inst: Any, state: Any) -> None:
        if not isinstance(inst, _InertObject | _OrderedDictStandIn):
            raise RefusedPickleError(f"BUILD on a {type(inst).__name__}")

    def persistent_load(self, pid: Any) -> Any:
        if (
            isinstance(pid, tuple)
            and len(pid) >= 5
            and pid[0] == "storage"
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
            and not isinstance(pid[4], bool)
        ):
            if pid[4] < 0:
                raise pickle.UnpicklingError(f"storage {brief(pid[2])} has a negative size")
            kind = pid[1].name.rpartition(".")[2] if isinstance(pid[1], _InertGlobal) else "UntypedStorage"
            self.storages.setdefault(pid[2], TorchStorageRecord(kind, pid[2], pid[4]))
        return _InertObject()


def scan_torch_pickle(file: IO[bytes], budget: LoadBudget | None = None) -> list[TorchStorageRecord]:
    """Read one pickle of a torch checkpoint with the bounded unpickler, calling nothing it names.

    Returns the storages its persistent ids declare. Raises pickle.UnpicklingError (or another error
    of a corrupt pickle) or :class:`RefusedPickleError` for a pickle that the bounds refuse.
    """
    scanner = _TorchScanUnpickler(file, budget)
    scanner.load()
    return list(scanner.storages.values())


# ----------------------------------------------------------------------------------------------
# After unpickling
# ----------------------------------------------------------------------------------------------


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


def to_plain(obj: Any, max_items: int = _MAX_PLAIN_ITEMS) -> Any:
    """Convert loaded config data to plain Python: EasyDict/OrderedDict -> dict, arrays -> lists.

    Memoised: a structure shared many times is converted once (and stays shared). Its *expanded* size
    (what printing it or writing it as JSON would produce) is still counted, and more than ``max_items``
    entries, a nesting deeper than 64, or a structure that contains itself raise GeneratorError.
    """
    memo: dict[int, tuple[Any, int]] = {}  # id -> (converted, expanded size)
    active: set[int] = set()
    total = 0

    def count(n: int) -> None:
        nonlocal total
        total += n
        if total > max_items:
            raise GeneratorError(
                f"configuration data in the file expands to more than {max_items:,} entries "
                "(a structure shared many times over); refusing to use it"
            )

    def conv(x: Any, depth: int) -> tuple[Any, int]:
        if isinstance(x, dict | list | tuple):
            oid = id(x)
            if oid in memo:
                converted, size = memo[oid]
                count(size)
                return converted, size
            if oid in active:
                raise GeneratorError(
                    "configuration data in the file contains itself (a cycle); refusing to use it"
                )
            if depth > _MAX_PLAIN_DEPTH:
                raise GeneratorError(
                    f"configuration data in the file is nested deeper than {_MAX_PLAIN_DEPTH} levels"
                )
            active.add(oid)
            count(1)
            before = total
            if isinstance(x, dict):
                converted: Any = {k: conv(v, depth + 1)[0] for k, v in x.items()}
            elif isinstance(x, list):
                converted = [conv(v, depth + 1)[0] for v in x]
            else:
                converted = tuple(conv(v, depth + 1)[0] for v in x)
            active.discard(oid)
            size = 1 + total - before
            memo[oid] = (converted, size)
            return converted, size
        if isinstance(x, np.ndarray):
            count(max(1, x.size))
            return x.tolist(), max(1, x.size)
        if isinstance(x, np.generic):
            count(1)
            return x.item(), 1
        count(1)
        return x, 1

    return conv(obj, 0)[0]


def safe_load(file: IO[bytes], budget: LoadBudget | None = None) -> Any:
    """Unpickle from a binary file object with :class:`SafeUnpickler` (nothing is executed).

    Everything is charged to ``budget``, else to the active load's budget, else to a default one.
    """
    with limits.loading(None, size=_remaining(file)) if budget is None else limits.activate(budget) as b:
        obj = SafeUnpickler(file, b).load()
        return _finalize(obj, {})


def _remaining(file: IO[bytes]) -> int:
    try:
        pos = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return 0


def safe_loads(data: bytes, budget: LoadBudget | None = None) -> Any:
    """Unpickle bytes with :class:`SafeUnpickler`."""
    return safe_load(io.BytesIO(data), budget)


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
    ZeroDivisionError,
    SystemError,
)


def load_pickle_file(path: str | Path) -> Any:
    """Safely load a StyleGAN network pickle from disk, within the active load budget.

    Raises :class:`GeneratorError` (or a subclass) for a missing file, a file that is not a binary
    pickle, a truncated or corrupt pickle, a forbidden global (:class:`UnsafePickleError`), a construct
    the bounded unpickler refuses (:class:`RefusedPickleError`), a load past the memory ceiling
    (:class:`~sfvq.generators.limits.LoadLimitError`) and a TensorFlow-era pickle
    (:class:`TensorFlowPickleError`).
    """
    p = Path(path)
    if not p.exists():
        raise GeneratorError(f"generator file not found: {p}")
    if not p.is_file():
        raise GeneratorError(f"not a file: {p}")
    with open(p, "rb") as f, limits.loading(p) as budget:
        head = f.read(8)
        if not head:
            raise GeneratorError(f"{p} is empty (0 bytes), not a StyleGAN network pickle")
        if head[:4] == b"PK\x03\x04":
            raise GeneratorError(
                f"{p} is a zip archive (e.g. a torch.save checkpoint), not a StyleGAN network pickle"
            )
        if head[0] != 0x80 or len(head) < 2 or head[1] < 2:
            raise GeneratorError(
                f"{p} is not a StyleGAN network pickle: it starts with {head!r}, expected a binary pickle "
                "header (0x80, protocol 2 or later)"
            )
        f.seek(0)
        try:
            return safe_load(f, budget)
        except GeneratorError as e:
            if str(p) not in str(e):
                e.args = (f"{p}: {e}",)
            raise
        except MemoryError:
            raise budget.out_of_memory() from None
        except _CORRUPT_ERRORS as e:
            raise GeneratorError(
                f"{p}: truncated or corrupt pickle ({type(e).__name__}: {brief_text(str(e), 200)})"
            ) from e
