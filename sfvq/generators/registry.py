"""Names and files -> generators: ``list_generators()`` and ``load_generator(name_or_path)``.

Built-in generators are named ``builtin:<name>`` (their own table, ``_BUILTINS``). Anything else must be a
local path, loaded by the first entry of the format table whose sniffer recognises it; the sniffers look
at the content (and only then the name):

* a pickle (``\\x80`` + protocol byte): a StyleGAN2-ADA / StyleGAN3 network pickle;
* a torch checkpoint (zip archive, or the legacy torch pickle with its magic number): a rosinality
  checkpoint with ``g_ema``;
* a directory with ``config.json`` and ``pytorch_model.bin``: BigGAN (pytorch-pretrained-biggan layout);
* a ``.safetensors`` file with a ``.json`` sidecar: a generator exported by ``sfvq avatars export``.

A new format is one adapter module plus one entry, added with :func:`register_format`. Adapters are
imported only when their format is loaded, so one adapter's absence never breaks another. Nothing
downloads: URLs and model-hub ids are refused.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sfvq.generators import limits
from sfvq.generators.base import Generator, GeneratorError

BUILTIN_PREFIX = "builtin:"
BIGGAN_FILES = ("config.json", "pytorch_model.bin")

_ZIP_MAGIC = b"PK\x03\x04"
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # legacy torch.save: pickled magic number
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_MODEL_SUFFIXES = (".pkl", ".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar", ".zip", ".npz")


def _load_faces_dcgan(device: str | torch.device | None) -> Generator:
    from sfvq.generators.dcgan import load_faces_dcgan

    return load_faces_dcgan(device=device)


def _faces_dcgan_weights() -> Path:
    from sfvq.generators.dcgan import faces_dcgan_weights_path

    return faces_dcgan_weights_path()


def _load_avatars_sg2(device: str | torch.device | None) -> Generator:
    from sfvq.avatars import load_avatars_sg2

    return load_avatars_sg2(device=device)


def _avatars_sg2_weights() -> Path:
    from sfvq.avatars import avatars_sg2_weights_path

    return avatars_sg2_weights_path()


# name -> (factory(device), path of its weights file)
_BUILTINS: dict[str, tuple[Callable[[str | torch.device | None], Generator], Callable[[], Path]]] = {
    "builtin:faces-dcgan": (_load_faces_dcgan, _faces_dcgan_weights),
    "builtin:avatars-sg2": (_load_avatars_sg2, _avatars_sg2_weights),
}


def list_generators() -> list[str]:
    """Names of the built-in generators (each loadable with :func:`load_generator`)."""
    return sorted(_BUILTINS)


# --------------------------------------------------------------------------------------------------
# The format table
# --------------------------------------------------------------------------------------------------

Loader = Callable[[Path, str | torch.device | None], Generator]


@dataclass(frozen=True)
class GeneratorFormat:
    """One generator format on disk: how to recognise it and how to load it.

    Attributes:
        name: short unique name, e.g. ``"biggan"``.
        sniff: ``sniff(path) -> bool`` for an existing path (a file or a directory): is it this format?
            Cheap and silent: it looks, the loader checks.
        load: ``load(path, device) -> Generator``; raises GeneratorError for a bad file.
        label: what was found, for messages ("found a <label>, but ...").
        description: the format as a user would name it, listed when nothing matches.
        explain: for a directory format, ``explain(directory) -> str`` saying what a directory lacks to be
            one (shown when a directory matches no format).
        files: for a directory format, ``files(directory)`` -> the files whose sha256 identify its weights
            (default: every regular file in it).
    """

    name: str
    sniff: Callable[[Path], bool]
    load: Loader
    label: str
    description: str
    explain: Callable[[Path], str] | None = None
    files: Callable[[Path], Sequence[Path]] | None = None


class _AdapterMissing(Exception):
    """The adapter module itself (not one of its dependencies) cannot be imported."""

    def __init__(self, module: str) -> None:
        super().__init__(module)
        self.module = module


def _adapter(module: str, func: str) -> Loader:
    """A loader that imports ``sfvq.generators.<module>`` only when called and calls ``<func>(path,
    device=device)`` there, so one adapter's absence never breaks another."""
    full = f"sfvq.generators.{module}"

    def load(path: Path, device: str | torch.device | None) -> Generator:
        try:
            mod = importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name == full:
                raise _AdapterMissing(module) from e
            raise
        return getattr(mod, func)(path, device=device)

    return load


def _is_pickle(path: Path) -> bool:
    return path.is_file() and sniff_file(path) == "pickle"


def _is_torch(path: Path) -> bool:
    return path.is_file() and sniff_file(path) == "torch"


def _is_biggan_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in BIGGAN_FILES)


def _explain_biggan_dir(path: Path) -> str:
    missing = [name for name in BIGGAN_FILES if not (path / name).is_file()]
    return f"a BigGAN directory needs {' and '.join(BIGGAN_FILES)} (missing {', '.join(missing)})"


def _is_exported(path: Path) -> bool:
    """A ``.safetensors`` file with a ``.json`` sidecar beside it (the loader checks the sidecar's format)."""
    return path.is_file() and path.suffix == ".safetensors" and path.with_suffix(".json").is_file()


# Tried in this order; the first whose sniffer says yes loads the path.
_BUILTIN_FORMATS: tuple[GeneratorFormat, ...] = (
    GeneratorFormat(
        "stylegan_pkl",
        _is_pickle,
        _adapter("stylegan_pkl", "load_stylegan_pkl"),
        label="StyleGAN network pickle",
        description="a StyleGAN2-ADA/StyleGAN3 .pkl",
    ),
    GeneratorFormat(
        "rosinality",
        _is_torch,
        _adapter("rosinality", "load_rosinality"),
        label="torch checkpoint (rosinality)",
        description="a rosinality .pt checkpoint",
    ),
    GeneratorFormat(
        "biggan",
        _is_biggan_dir,
        _adapter("biggan", "load_biggan"),
        label="BigGAN directory",
        description=f"a BigGAN directory ({' + '.join(BIGGAN_FILES)})",
        explain=_explain_biggan_dir,
        files=lambda path: [path / name for name in BIGGAN_FILES],
    ),
    GeneratorFormat(
        "exported",
        _is_exported,
        _adapter("exported", "load_exported_generator"),
        label="generator exported by sfvq",
        description="a .safetensors with the .json sidecar `sfvq avatars export` writes",
    ),
)
_FORMATS: list[GeneratorFormat] = list(_BUILTIN_FORMATS)


def generator_formats() -> tuple[GeneratorFormat, ...]:
    """The format table, in the order :func:`load_generator` tries it."""
    return tuple(_FORMATS)


def register_format(
    name: str,
    sniff: Callable[[Path], bool],
    load: Loader,
    *,
    label: str | None = None,
    description: str | None = None,
    explain: Callable[[Path], str] | None = None,
    files: Callable[[Path], Sequence[Path]] | None = None,
    position: int | None = None,
) -> GeneratorFormat:
    """Add a generator format to the table (at the end, or at index ``position``) and return its entry.

    A new format needs nothing else: an adapter meeting :class:`~sfvq.generators.base.Generator` (most
    simply a subclass of :class:`~sfvq.generators.base.GeneratorBase`) and this entry. ValueError for a
    name already in the table.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a format needs a non-empty name, got {name!r}")
    if any(f.name == name for f in _FORMATS):
        raise ValueError(f"a generator format named {name!r} is already registered")
    fmt = GeneratorFormat(
        name,
        sniff,
        load,
        label=label or f"{name} generator",
        description=description or f"a {name} generator",
        explain=explain,
        files=files,
    )
    _FORMATS.insert(len(_FORMATS) if position is None else position, fmt)
    return fmt


def unregister_format(name: str) -> GeneratorFormat:
    """Remove the format ``name`` from the table and return its entry (ValueError if there is none)."""
    for i, fmt in enumerate(_FORMATS):
        if fmt.name == name:
            return _FORMATS.pop(i)
    raise ValueError(f"no generator format named {name!r}; known: {', '.join(f.name for f in _FORMATS)}")


def _format_of(path: Path) -> GeneratorFormat | None:
    """The first format whose sniffer recognises ``path``."""
    return next((fmt for fmt in _FORMATS if fmt.sniff(path)), None)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def generator_sha256(name_or_path: str | Path) -> str | None:
    """sha256 of the weights behind a generator: the file, a directory format's files, a built-in's
    weights file. None for a name that is none of these (e.g. an unknown built-in)."""
    from sfvq.io import sha256_file

    text = str(name_or_path)
    if text in _BUILTINS:
        return sha256_file(_BUILTINS[text][1]())
    if text.startswith(BUILTIN_PREFIX):
        return None
    path = Path(text).expanduser()
    if path.is_file():
        return sha256_file(path)
    fmt = _format_of(path) if path.is_dir() else None
    if fmt is None:
        return None
    files = fmt.files(path) if fmt.files is not None else [p for p in path.iterdir() if p.is_file()]
    lines = "".join(f"{p.name} {sha256_file(p)}\n" for p in sorted(files, key=lambda p: p.name))
    return hashlib.sha256(lines.encode()).hexdigest()  # sha256 of "name sha\n" lines, sorted by name


def load_generator(
    name_or_path: str | Path, device: str | torch.device | None = None, *, max_bytes: int | None = None
) -> Generator:
    """Load a built-in generator by name, or a generator file / directory from disk.

    The path's format is the first in the table (:func:`generator_formats`) whose sniffer recognises it.
    Raises GeneratorError with a specific message for an unknown name, a URL or hub id, a missing path,
    an unrecognised format (saying what was found) or a missing adapter or optional dependency, and
    for any file the adapter cannot load: every failure of a malformed file is one GeneratorError that
    names the file (KeyboardInterrupt still interrupts).

    A file is loaded within a memory ceiling (:mod:`sfvq.generators.limits`): ``max_bytes``, else the
    environment variable ``SFVQ_MAX_LOAD_BYTES``, else ``max(4 x file size, 256 MiB)``. A file that would
    need more fails with a :class:`~sfvq.generators.limits.LoadLimitError` naming the limit and how to
    raise it; the built-in generators are not limited.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, str):
        if text.startswith(BUILTIN_PREFIX):
            if text not in _BUILTINS:
                raise GeneratorError(
                    f"unknown built-in generator {text!r}; known: {', '.join(list_generators())}"
                )
            return _BUILTINS[text][0](device)
        if _URL_RE.match(text):
            raise GeneratorError(
                f"{text!r} is a URL; sfvq never downloads. Download the file yourself and pass its local path"
            )
    path = Path(text).expanduser()
    if not path.exists():
        raise GeneratorError(_missing_message(text))
    if not path.is_dir() and not path.is_file():
        raise GeneratorError(f"{path} is not a regular file or a directory")
    fmt = _format_of(path)
    if fmt is not None:
        return _load_with(fmt, path, device, max_bytes)
    if path.is_dir():
        raise GeneratorError(_not_a_generator_directory(path))
    expected = ", ".join(f.description for f in _FORMATS)
    raise GeneratorError(
        f"{path}: unrecognised generator format: {sniff_file(path)}. Expected {expected}, "
        f"or a built-in name ({', '.join(list_generators())})"
    )


def _load_with(
    fmt: GeneratorFormat, path: Path, device: str | torch.device | None, max_bytes: int | None = None
) -> Generator:
    """``fmt.load(path, device)`` within the load budget, every failure one GeneratorError naming ``path``.

    A missing adapter or optional dependency says so; a GeneratorError gets the path in front if its
    message lacks it; a MemoryError names the ceiling; any other exception (a malformed file reaching
    code that did not expect it) becomes ``GeneratorError("<path>: cannot load this <format>: ...")``.
    KeyboardInterrupt and SystemExit are not touched.
    """
    files = list(fmt.files(path)) if path.is_dir() and fmt.files is not None else None
    with limits.loading(path, max_bytes, files=files) as budget:
        try:
            return fmt.load(path, device)
        except _AdapterMissing as e:
            raise GeneratorError(
                f"{path}: found a {fmt.label}, but this sfvq has no {e.module} adapter"
            ) from e
        except ModuleNotFoundError as e:  # an optional dependency imported by the adapter
            raise _missing_dependency(path, fmt.label, e) from e
        except GeneratorError as e:
            text = str(e)
            if str(path) not in text or "\n" in text:
                e.args = (limits.brief_text(text if str(path) in text else f"{path}: {text}", 2000),)
            raise
        except MemoryError:
            raise budget.out_of_memory() from None
        except Exception as e:
            raise GeneratorError(
                f"{path}: cannot load this {fmt.label}: the file is malformed "
                f"({type(e).__name__}: {limits.brief_text(str(e), 200)})"
            ) from e


def _missing_message(text: str) -> str:
    """Why a name that is not a file failed: unknown name, hub id or missing path."""
    known = ", ".join(list_generators())
    if _HUB_ID_RE.match(text) and not text.lower().endswith(_MODEL_SUFFIXES):
        return (
            f"{text!r} is not a local file or directory. It looks like a model-hub id; sfvq never downloads: "
            f"download the files yourself and pass the local path (built-in: {known})"
        )
    if "/" in text or "\\" in text or text.startswith((".", "~")) or text.lower().endswith(_MODEL_SUFFIXES):
        return f"no such file or directory: {text}"
    return (
        f"unknown generator {text!r}: not a built-in name and no such file or directory (built-in: {known})"
    )


def _not_a_generator_directory(path: Path) -> str:
    """What a directory that no format recognises lacks, and what it holds."""
    entries = sorted(p.name for p in path.iterdir())
    shown = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "") if entries else "nothing"
    lacks = "; ".join(fmt.explain(path) for fmt in _FORMATS if fmt.explain is not None)
    why = f": {lacks}" if lacks else ""
    return f"{path} is a directory but not a generator directory{why}; found: {shown}"


def _missing_dependency(path: Path, what: str, e: ModuleNotFoundError) -> GeneratorError:
    return GeneratorError(
        f"{path}: found a {what}; loading it needs the optional package {e.name!r}, which is not "
        f"installed (install it with pip, e.g. pip install {(e.name or '').split('.')[0].replace('_', '-')})"
    )


def sniff_file(path: str | Path) -> str:
    """What a file looks like from its first bytes: ``"pickle"``, ``"torch"`` or a description of it."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return _describe(head)


def _describe(head: bytes) -> str:
    """A short human description of an unrecognised file from its first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras/TensorFlow weights?)"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy array"
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if len(head) >= 9 and int.from_bytes(head[:8], "little") > 0 and head[8:9] == b"{":
        return "a safetensors file (sfvq reads StyleGAN/rosinality/BigGAN originals, not bare safetensors)"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "a JSON/text file"
    if head[257:262] == b"ustar":
        return "a tar archive"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(ch.isprintable() or ch.isspace() for ch in text):
        return f"a text file starting with {text[:40]!r}"
    return f"unknown binary data starting with bytes {head[:16].hex(' ')}"
