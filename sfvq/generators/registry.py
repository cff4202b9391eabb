"""Names and files -> generators: ``list_generators()`` and ``load_generator(name_or_path)``.

Built-in generators are named ``builtin:<name>``. Anything else must be a local path; its format is
sniffed from its content (and only then its name):

* a directory with ``config.json`` and ``pytorch_model.bin``: BigGAN (pytorch-pretrained-biggan layout);
* a pickle (``\\x80`` + protocol byte): a StyleGAN2-ADA / StyleGAN3 network pickle;
* a torch checkpoint (zip archive, or the legacy torch pickle with its magic number): a rosinality
  checkpoint with ``g_ema``.

Adapters are imported inside functions, so one adapter's absence never breaks another. Nothing
downloads: URLs and model-hub ids are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

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


def generator_sha256(name_or_path: str | Path) -> str | None:
    """sha256 of the weights behind a generator: the file, a BigGAN directory's two files, a built-in's
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
    if path.is_dir() and all((path / name).is_file() for name in BIGGAN_FILES):
        import hashlib

        lines = "".join(f"{name} {sha256_file(path / name)}\n" for name in BIGGAN_FILES)
        return hashlib.sha256(lines.encode()).hexdigest()  # sha256 of "name sha\n" lines, sorted by name
    return None


def load_generator(name_or_path: str | Path, device: str | torch.device | None = None) -> Generator:
    """Load a built-in generator by name, or a generator file / directory from disk.

    Raises GeneratorError with a specific message for an unknown name, a URL or hub id, a missing path,
    an unrecognised format (saying what was found) or a missing adapter or optional dependency.
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
    if path.is_dir():
        return _load_directory(path, device)
    if not path.is_file():
        raise GeneratorError(f"{path} is not a regular file or a directory")
    kind = sniff_file(path)
    if kind == "pickle":
        return _call_adapter("stylegan_pkl", "load_stylegan_pkl", path, device, "StyleGAN network pickle")
    if kind == "torch":
        return _call_adapter("rosinality", "load_rosinality", path, device, "torch checkpoint (rosinality)")
    if path.suffix == ".safetensors" and path.with_suffix(".json").is_file():
        # a generator written by ``sfvq avatars export`` (its JSON sidecar says so; checked on load)
        from sfvq.avatars import load_exported_generator

        return load_exported_generator(path, device=device)
    raise GeneratorError(
        f"{path}: unrecognised generator format: {kind}. Expected a StyleGAN2-ADA/StyleGAN3 .pkl, "
        f"a rosinality .pt checkpoint, a BigGAN directory ({' + '.join(BIGGAN_FILES)}), "
        f"a .safetensors with the .json sidecar `sfvq avatars export` writes, "
        f"or a built-in name ({', '.join(list_generators())})"
    )


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


def _load_directory(path: Path, device: str | torch.device | None) -> Generator:
    present = [name for name in BIGGAN_FILES if (path / name).is_file()]
    if len(present) == len(BIGGAN_FILES):
        return _call_adapter("biggan", "load_biggan", path, device, "BigGAN directory")
    entries = sorted(p.name for p in path.iterdir())
    shown = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "") if entries else "nothing"
    missing = [name for name in BIGGAN_FILES if name not in present]
    raise GeneratorError(
        f"{path} is a directory but not a generator directory: a BigGAN directory needs "
        f"{' and '.join(BIGGAN_FILES)} (missing {', '.join(missing)}); found: {shown}"
    )


def _call_adapter(
    module: str, func: str, path: Path, device: str | torch.device | None, what: str
) -> Generator:
    """Import ``sfvq.generators.<module>`` lazily and call ``<func>(path, device=device)``."""
    import importlib

    full = f"sfvq.generators.{module}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            raise GeneratorError(f"{path}: found a {what}, but this sfvq has no {module} adapter") from e
        raise _missing_dependency(path, what, e) from e
    try:
        return getattr(mod, func)(path, device=device)
    except ModuleNotFoundError as e:  # an optional dependency imported inside the adapter
        raise _missing_dependency(path, what, e) from e


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
