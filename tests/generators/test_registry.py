"""The generator registry: built-in names, format sniffing by content, and its error messages."""

from __future__ import annotations

import hashlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from sfvq.generators import GeneratorError, list_generators, load_generator
from sfvq.generators.dcgan import faces_dcgan_weights_path
from sfvq.generators.registry import (
    generator_formats,
    generator_sha256,
    register_format,
    sniff_file,
    unregister_format,
)


class _Recorded:
    def __init__(self, kind: str, path: Path, device) -> None:
        self.kind, self.path, self.device = kind, path, device


def _fake_adapter(monkeypatch: pytest.MonkeyPatch, module: str, func: str, calls: list) -> None:
    """Stand in for another helper's adapter module, recording how the registry calls it."""
    mod = types.ModuleType(f"sfvq.generators.{module}")

    def loader(path, device=None):
        calls.append(_Recorded(module, Path(path), device))
        return calls[-1]

    setattr(mod, func, loader)
    monkeypatch.setitem(sys.modules, f"sfvq.generators.{module}", mod)


@pytest.fixture
def adapters(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    _fake_adapter(monkeypatch, "stylegan_pkl", "load_stylegan_pkl", calls)
    _fake_adapter(monkeypatch, "rosinality", "load_rosinality", calls)
    _fake_adapter(monkeypatch, "biggan", "load_biggan", calls)
    _fake_adapter(monkeypatch, "exported", "load_exported_generator", calls)
    return calls


def test_list_and_load_builtin() -> None:
    assert "builtin:faces-dcgan" in list_generators()
    G = load_generator("builtin:faces-dcgan")
    assert G.name == "builtin:faces-dcgan"
    assert G.z_dim == 100 and G.spaces == ("z",)


def test_pickle_goes_to_stylegan_even_with_other_extension(tmp_path: Path, adapters: list) -> None:
    for name in ("net.pkl", "net.pt"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"G_ema": None}, protocol=3))
        load_generator(path, device="cpu")
    assert [c.kind for c in adapters] == ["stylegan_pkl", "stylegan_pkl"]
    assert adapters[0].path == tmp_path / "net.pkl" and adapters[0].device == "cpu"
    path = tmp_path / "p4.pkl"
    path.write_bytes(pickle.dumps({"G_ema": None}, protocol=4))
    assert load_generator(str(path)).kind == "stylegan_pkl"


def test_torch_files_go_to_rosinality(tmp_path: Path, adapters: list) -> None:
    zipped = tmp_path / "ckpt.pt"
    torch.save({"g_ema": {"w": torch.zeros(2)}}, zipped)
    legacy = tmp_path / "old.pth"
    torch.save({"g_ema": {"w": torch.zeros(2)}}, legacy, _use_new_zipfile_serialization=False)
    odd_name = tmp_path / "ckpt.pkl"  # content wins over the extension
    torch.save({"g_ema": {}}, odd_name)
    for p in (zipped, legacy, odd_name):
        assert sniff_file(p) == "torch"
        assert load_generator(p).kind == "rosinality"


def test_biggan_directory(tmp_path: Path, adapters: list) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    rec = load_generator(tmp_path)
    assert rec.kind == "biggan" and rec.path == tmp_path


def test_directory_that_is_not_a_generator(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(GeneratorError, match=r"missing pytorch_model.bin\); found: config.json, notes.txt"):
        load_generator(tmp_path)


def test_unknown_builtin_lists_known() -> None:
    with pytest.raises(
        GeneratorError,
        match="unknown built-in generator 'builtin:ffhq'; known: builtin:avatars-sg2, builtin:faces-dcgan",
    ):
        load_generator("builtin:ffhq")


def test_unknown_bare_name_lists_builtins() -> None:
    with pytest.raises(GeneratorError, match=r"unknown generator 'ffhq-1024'.*builtin:faces-dcgan"):
        load_generator("ffhq-1024")


@pytest.mark.parametrize("url", ["https://example.com/ffhq.pkl", "hf://org/model", "s3://bucket/g.pkl"])
def test_urls_are_refused(url: str) -> None:
    with pytest.raises(GeneratorError, match="never downloads"):
        load_generator(url)


def test_hub_id_is_refused() -> None:
    with pytest.raises(GeneratorError, match="model-hub id; sfvq never downloads"):
        load_generator("huggingface/biggan-deep-256")


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "network.pkl"
    with pytest.raises(GeneratorError, match="no such file or directory: .*network.pkl"):
        load_generator(missing)
    with pytest.raises(GeneratorError, match="no such file or directory"):
        load_generator(str(missing))


def test_unknown_formats_say_what_was_found(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(GeneratorError, match=r"unrecognised generator format: an empty file \(0 bytes\)"):
        load_generator(empty)

    text = tmp_path / "readme.pt"
    text.write_text("hello generator\n")
    with pytest.raises(GeneratorError, match="a text file starting with 'hello generator"):
        load_generator(text)

    arr = tmp_path / "z.npy"
    np.save(arr, np.zeros(3))
    with pytest.raises(GeneratorError, match="a numpy .npy array"):
        load_generator(arr)

    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes([0, 1, 2, 250, 251, 252, 7, 8]))
    with pytest.raises(GeneratorError, match="unknown binary data starting with bytes 00 01 02 fa"):
        load_generator(blob)

    from safetensors.torch import save_file

    st = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, st)
    with pytest.raises(GeneratorError, match="a safetensors file"):
        load_generator(st)


def test_missing_adapter_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sfvq.generators.stylegan_pkl", None)  # import now fails
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps({}, protocol=3))
    with pytest.raises(
        GeneratorError, match="found a StyleGAN network pickle, but this sfvq has no stylegan_pkl"
    ):
        load_generator(path)


def test_missing_optional_dependency_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("sfvq.generators.biggan")

    def load_biggan(path, device=None):
        raise ModuleNotFoundError(
            "No module named 'pytorch_pretrained_biggan'", name="pytorch_pretrained_biggan"
        )

    mod.load_biggan = load_biggan
    monkeypatch.setitem(sys.modules, "sfvq.generators.biggan", mod)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(GeneratorError, match="pip install pytorch-pretrained-biggan"):
        load_generator(tmp_path)


def test_adapter_errors_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("sfvq.generators.rosinality")

    def load_rosinality(path, device=None):
        raise GeneratorError(f"{path}: no g_ema")

    mod.load_rosinality = load_rosinality
    monkeypatch.setitem(sys.modules, "sfvq.generators.rosinality", mod)
    path = tmp_path / "c.pt"
    torch.save({"generator": {}}, path)
    with pytest.raises(GeneratorError, match="no g_ema"):
        load_generator(path)


def test_generator_sha256(tmp_path: Path) -> None:
    f = tmp_path / "net.pkl"
    f.write_bytes(b"abc" * 1000)
    assert generator_sha256(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    weights = faces_dcgan_weights_path().read_bytes()
    assert generator_sha256("builtin:faces-dcgan") == hashlib.sha256(weights).hexdigest()
    assert generator_sha256("builtin:nope") is None
    assert generator_sha256(tmp_path / "missing.pkl") is None
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"w")
    a = generator_sha256(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"v")
    assert a is not None and len(a) == 64 and generator_sha256(tmp_path) != a


def test_the_format_table_in_order() -> None:
    assert [f.name for f in generator_formats()] == ["stylegan_pkl", "rosinality", "biggan", "exported"]


def test_exported_safetensors_with_sidecar(tmp_path: Path, adapters: list) -> None:
    from safetensors.torch import save_file

    st = tmp_path / "g.safetensors"
    save_file({"a": torch.zeros(2)}, st)
    st.with_suffix(".json").write_text("{}")
    rec = load_generator(st)
    assert rec.kind == "exported" and rec.path == st


def test_a_registered_directory_format(tmp_path: Path) -> None:
    """A directory format says what a directory lacks, and which files identify its weights."""
    calls: list = []

    def sniff(path: Path) -> bool:
        return path.is_dir() and (path / "toy.weights").is_file()

    def load(path: Path, device=None):
        calls.append((path, device))
        return "loaded"

    register_format(
        "toydir",
        sniff,
        load,
        description="a toy directory",
        explain=lambda path: "a toy directory needs toy.weights",
        files=lambda path: [path / "toy.weights"],
        position=0,
    )
    try:
        assert generator_formats()[0].name == "toydir"
        d = tmp_path / "model"
        d.mkdir()
        (d / "notes.txt").write_text("hi")
        with pytest.raises(
            GeneratorError,
            match=r"directory: a toy directory needs toy.weights; a BigGAN directory .*\); found: notes.txt",
        ):
            load_generator(d)
        assert generator_sha256(d) is None
        (d / "toy.weights").write_bytes(b"w")
        assert load_generator(d, device="cpu") == "loaded" and calls == [(d, "cpu")]
        line = f"toy.weights {hashlib.sha256(b'w').hexdigest()}\n"
        assert generator_sha256(d) == hashlib.sha256(line.encode()).hexdigest()  # notes.txt is not hashed
    finally:
        unregister_format("toydir")
    assert "toydir" not in [f.name for f in generator_formats()]


def test_a_format_whose_loader_needs_a_missing_package(tmp_path: Path) -> None:
    def load(path: Path, device=None):
        raise ModuleNotFoundError("No module named 'toy_dep'", name="toy_dep")

    register_format("needs-dep", lambda p: p.suffix == ".needs", load, label="needs-dep file")
    try:
        path = tmp_path / "m.needs"
        path.write_bytes(b"x")
        with pytest.raises(GeneratorError, match="found a needs-dep file; .* pip install toy-dep"):
            load_generator(path)
    finally:
        unregister_format("needs-dep")
