"""Bounds around ``torch.load(weights_only=True)`` for the loaders of torch checkpoints (rosinality, BigGAN).

``weights_only=True`` stops a checkpoint from running code, but not from costing memory or time:

* a zip entry may inflate a thousandfold (a 522 KB file to 778 MiB), and torch inflates every entry;
* the checkpoint's pickle is read by torch's own unpickler, which hashes dict keys as it goes (a few
  hundred bytes of nested tuples make that exponential);
* a legacy (non-zip) checkpoint declares each storage's size in its pickle, and torch allocates that
  size before reading the data;
* a tensor may be a stride-0 view whose first copy materialises gigabytes from one stored float.

:func:`check_torch_file` runs before ``torch.load``: it charges the uncompressed sizes from the zip
directory to the load budget, walks the pickle with sfvq's bounded unpickler (calling nothing), and for a
legacy file compares the declared storage bytes with the bytes that follow. :func:`check_loaded_tensors`
runs after it: no tensor may hold more bytes than its storage, and every tensor is charged at float32
(what the adapters copy it to).
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from sfvq.generators.base import GeneratorError
from sfvq.generators.limits import LoadBudget, brief_text, format_bytes

__all__ = ["check_loaded_tensors", "check_torch_file"]

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # legacy torch.save: the pickled magic number
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP_ENTRY_BYTES = 1024  # memory charged per zip directory entry (Python's ZipInfo and its name)
_MAX_WALK = 1_000_000  # containers and tensors walked in a loaded checkpoint


def _unreadable(path: Path, why: str) -> GeneratorError:
    return GeneratorError(f"{path}: not a readable PyTorch checkpoint ({why})")


def check_torch_file(path: str | Path, budget: LoadBudget) -> None:
    """Check a torch checkpoint before ``torch.load`` reads it (see the module docstring).

    Raises GeneratorError for a file that is neither a zip nor a legacy torch file, a broken archive or
    pickle, declared sizes the file cannot hold, or a load that would pass the budget.
    """
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if not head:
        raise _unreadable(p, "an empty file")
    if head.startswith(_ZIP_MAGIC):
        _check_zip(p, budget)
    elif head == _LEGACY_MAGIC:
        _check_legacy(p, budget)
    else:
        raise _unreadable(
            p, f"neither a zip archive nor a legacy torch.save file; it starts with {head[:8]!r}"
        )


def _zip_entry_count(f: Any, size: int) -> int:
    """The number of entries the zip's end-of-central-directory record declares (zip64 aware)."""
    tail_len = min(size, 65536 + 22)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        raise ValueError("no end-of-central-directory record (truncated?)")
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    if entries == 0xFFFF and at >= 20 and tail[at - 20 : at - 16] == _ZIP64_LOCATOR:
        (offset,) = struct.unpack("<Q", tail[at - 12 : at - 4])
        if offset + 40 > size:
            raise ValueError("zip64 directory record past the end of the file")
        f.seek(offset)
        rec = f.read(40)
        if rec[:4] != b"PK\x06\x06":
            raise ValueError("bad zip64 directory record")
        (entries,) = struct.unpack("<Q", rec[32:40])
    return entries


def _check_zip(path: Path, budget: LoadBudget) -> None:
    from sfvq.generators.safe_pickle import scan_torch_pickle

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            entries = _zip_entry_count(f, size)
    except (ValueError, OSError, struct.error) as e:
        raise _unreadable(path, f"broken zip archive: {e}") from e
    budget.charge(entries * _ZIP_ENTRY_BYTES, f"the directory of a zip archive with {entries:,} entries")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(info.file_size for info in infos)
            packed = sum(info.compress_size for info in infos)
            budget.charge(
                total,
                f"the zip archive's {len(infos)} entries, uncompressed ({format_bytes(packed)} compressed)",
            )
            pickles = [i for i in infos if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")]
            if not pickles:
                raise _unreadable(path, "a zip archive without data.pkl, so not a torch.save file")
            data = zf.read(pickles[0])
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        NotImplementedError,
        ValueError,
    ) as e:
        if isinstance(e, GeneratorError):
            raise
        raise _unreadable(path, f"broken zip archive: {brief_text(str(e), 120)}") from e
    try:
        scan_torch_pickle(io.BytesIO(data), budget)
    except GeneratorError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # a corrupt pickle: name it here rather than inside torch
        raise _unreadable(path, f"corrupt data.pkl: {type(e).__name__}: {brief_text(str(e), 120)}") from e


def _check_legacy(path: Path, budget: LoadBudget) -> None:
    """A legacy torch.save file: five pickles (magic, protocol, system info, the object, the storage keys)
    and then the storages' bytes; the storages the object declares must fit in those bytes."""
    from sfvq.generators.safe_pickle import scan_torch_pickle

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            records = []
            for _ in range(5):
                records.extend(scan_torch_pickle(f, budget))
            after = size - f.tell()
    except GeneratorError:
        raise
    except MemoryError:
        raise
    except Exception as e:
        raise _unreadable(
            path, f"corrupt legacy torch file: {type(e).__name__}: {brief_text(str(e), 120)}"
        ) from e
    declared = sum(r.nbytes for r in {r.key: r for r in records}.values())
    if declared > after:
        raise _unreadable(
            path,
            f"its pickle declares {format_bytes(declared)} of tensor storage, but only {format_bytes(after)} "
            "follow it (truncated or forged)",
        )
    budget.charge(declared, "the legacy checkpoint's tensor storages")


def check_loaded_tensors(obj: Any, path: str | Path, budget: LoadBudget) -> None:
    """Every tensor in a loaded checkpoint: no more bytes than its storage holds, charged at float32.

    A stride-0 view (a huge shape over one stored value) would be materialised by the first copy; it
    is refused here, before any adapter touches it. Sparse, quantised and other non-strided tensors are
    refused too (no generator stores them).
    """
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", obj)]
    walked = 0
    while stack:
        name, x = stack.pop()
        walked += 1
        if walked > _MAX_WALK:
            raise GeneratorError(f"{path}: the checkpoint holds more than {_MAX_WALK:,} objects")
        if isinstance(x, torch.Tensor):
            _check_tensor(x, name or "<top level>", path, budget)
            continue
        if not isinstance(x, dict | list | tuple) or id(x) in seen:
            continue
        seen.add(id(x))
        items = x.items() if isinstance(x, dict) else enumerate(x)
        for k, v in items:
            stack.append((f"{name}.{k}" if name else str(k), v))


def _check_tensor(t: torch.Tensor, name: str, path: str | Path, budget: LoadBudget) -> None:
    where = brief_text(name, 80)
    if t.layout != torch.strided or t.is_quantized:
        raise GeneratorError(
            f"{path}: tensor '{where}' has a {t.layout} layout; generators store dense tensors"
        )
    nbytes = t.numel() * t.element_size()
    held = t.untyped_storage().nbytes()
    if nbytes > held:
        raise GeneratorError(
            f"{path}: tensor '{where}' of shape {tuple(t.shape)} would hold {format_bytes(nbytes)}, but its "
            f"storage holds only {format_bytes(held)} (a stride-0 or overlapping view; a saved network never "
            "has one)"
        )
    budget.charge(4 * t.numel(), f"tensor '{where}' as float32")
