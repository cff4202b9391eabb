"""The allow-listed unpickler: malicious, TensorFlow-era, truncated and foreign files; format variants."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import pickletools
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from pkl_writer import (
    DECOY_MODULE_SRC,
    Reduce,
    dumps,
    global_marker,
    legacy_storage_blob,
    write_stylegan_pkl,
    write_tf_era_pickle,
)
from safetensors.torch import load_file

from sfvq.generators.base import GeneratorError
from sfvq.generators.safe_pickle import (
    PersistentObject,
    SafeUnpickler,
    TensorFlowPickleError,
    UnsafePickleError,
    load_pickle_file,
    parse_legacy_storage,
    safe_loads,
)
from sfvq.generators.stylegan_pkl import load_stylegan_pkl

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "stylegan"
_MAGIC = 0x1950A86A20F9469CFC6C


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A path that malicious payloads and decoy sources would create; the cwd is a temp dir too."""
    path = tmp_path / "pwned-marker"
    monkeypatch.setenv("SFVQ_PWNED_MARKER", str(path))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return path


def _no_marker(marker: Path) -> None:
    assert not marker.exists()
    assert not (marker.parent / "cwd" / "sfvq-pwned-marker").exists()


# -- malicious files ------------------------------------------------------------------------------


def test_evil_pkl_is_refused_and_its_command_never_runs(marker: Path) -> None:
    with pytest.raises(UnsafePickleError, match=r"posix\.system") as info:
        load_stylegan_pkl(FIXTURES / "evil.pkl")
    assert info.value.global_name == "posix.system"
    assert isinstance(info.value, GeneratorError)
    with pytest.raises(UnsafePickleError, match=r"posix\.system"):
        load_pickle_file(FIXTURES / "evil.pkl")
    _no_marker(marker)


@pytest.mark.parametrize("protocol", [2, 3, 4])
@pytest.mark.parametrize(
    ("module", "name"),
    [("os", "system"), ("nt", "system"), ("builtins", "eval"), ("subprocess", "Popen"), ("torch", "load")],
)
def test_other_forbidden_globals_are_named(
    marker: Path, tmp_path: Path, protocol: int, module: str, name: str
) -> None:
    payload = {"G_ema": Reduce(global_marker(module, name), (f"touch {marker}",))}
    path = tmp_path / "bad.pkl"
    path.write_bytes(dumps(payload, protocol))
    with pytest.raises(UnsafePickleError, match=rf"'{module}\.{name}'"):
        load_stylegan_pkl(path)
    _no_marker(marker)


def test_forbidden_global_inside_a_storage_blob(marker: Path) -> None:
    evil = Reduce(global_marker("posix", "system"), (f"touch {marker}",))
    blob = b"".join(dumps(x, 2) for x in (_MAGIC, 1001, evil))
    tensor = Reduce(global_marker("torch.storage", "_load_from_bytes"), (blob,))
    with pytest.raises(UnsafePickleError, match=r"posix\.system.*embedded tensor storage"):
        safe_loads(dumps({"t": tensor}, 3))
    _no_marker(marker)


def test_module_src_is_never_executed(marker: Path, tmp_path: Path) -> None:
    path = write_stylegan_pkl(FIXTURES / "sg2ada_cond", tmp_path / "g.pkl")
    data = load_pickle_file(path)
    g = data["G_ema"]
    assert isinstance(g, PersistentObject) and g.class_name == "Generator"
    assert g.module_src_sha256 == hashlib.sha256(DECOY_MODULE_SRC.encode()).hexdigest()
    assert not any(isinstance(v, str) and "SFVQ_PWNED_MARKER" in v for v in vars(g).values())
    _no_marker(marker)


def test_build_on_allowed_names_is_refused() -> None:
    # GLOBAL + EMPTY_DICT + BUILD would mutate our stand-ins if they accepted it.
    for module, name in [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("dnnlib.util", "EasyDict"),
        ("numpy", "dtype"),
    ]:
        data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"}b."
        with pytest.raises((pickle.UnpicklingError, TypeError)):
            safe_loads(data)


def test_top_level_persistent_id_is_refused() -> None:
    with pytest.raises(pickle.UnpicklingError, match="persistent id"):
        safe_loads(b"\x80\x02X\x03\x00\x00\x00abcQ.")


def test_object_numpy_dtype_is_refused() -> None:
    scalar = Reduce(
        global_marker("numpy.core.multiarray", "scalar"),
        (Reduce(global_marker("numpy", "dtype"), ("O8", False, True)), b"\x00" * 8),
    )
    with pytest.raises(pickle.UnpicklingError, match="unsupported numpy dtype 'O8'"):
        safe_loads(dumps({"x": scalar}, 3))


# -- TensorFlow-era files -------------------------------------------------------------------------


def test_tensorflow_era_pickle_is_recognised(marker: Path, tmp_path: Path) -> None:
    path = write_tf_era_pickle(tmp_path / "tf.pkl")
    with pytest.raises(TensorFlowPickleError, match=r"TensorFlow-era.*dnnlib\.tflib\.network\.Network"):
        load_stylegan_pkl(path)
    with pytest.raises(GeneratorError, match="PyTorch format"):
        load_pickle_file(path)
    _no_marker(marker)


# -- files that are not (whole) pickles ----------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="not found"):
        load_stylegan_pkl(tmp_path / "nope.pkl")
    with pytest.raises(GeneratorError, match="not a file"):
        load_stylegan_pkl(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"hello, I am a text file\n", "not a StyleGAN network pickle.*hello"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "not a StyleGAN network pickle"),
        (b"PK\x03\x04" + b"\x00" * 64, "zip archive"),
        (b"(dp0\nS'a'\np1\nI1\ns.", "not a StyleGAN network pickle"),  # protocol-0 text pickle
    ],
)
def test_not_a_pickle(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(content)
    with pytest.raises(GeneratorError, match=message):
        load_stylegan_pkl(path)


@pytest.fixture(scope="module")
def sg2_pickle_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_stylegan_pkl(FIXTURES / "sg2ada_uncond", tmp_path_factory.mktemp("p") / "g.pkl").read_bytes()


@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.2, 0.5, 0.9, 0.999])
def test_truncated_pickle(tmp_path: Path, sg2_pickle_bytes: bytes, fraction: float) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(sg2_pickle_bytes[: max(2, int(len(sg2_pickle_bytes) * fraction))])
    with pytest.raises(GeneratorError, match="truncated or corrupt"):
        load_stylegan_pkl(path)


def test_corrupt_pickle(tmp_path: Path, sg2_pickle_bytes: bytes) -> None:
    positions = [pos for _, _, pos in pickletools.genops(sg2_pickle_bytes)]
    picks = [positions[i] for i in range(1, len(positions) - 1, max(1, len(positions) // 8))]
    gen = torch.Generator().manual_seed(0)
    for k, pos in enumerate(picks):
        data = bytearray(sg2_pickle_bytes)
        data[pos] = 0xFF  # not a pickle opcode
        path = tmp_path / f"bad_opcode{k}.pkl"
        path.write_bytes(bytes(data))
        with pytest.raises(GeneratorError, match="truncated or corrupt"):
            load_stylegan_pkl(path)
        # random garbage over the pickle structure: it must fail cleanly (or, by luck, still parse)
        data[pos : pos + 48] = bytes(torch.randint(0, 256, (48,), generator=gen).tolist())
        path.write_bytes(bytes(data))
        try:
            load_stylegan_pkl(path)
        except GeneratorError:
            pass


def test_storage_blob_problems() -> None:
    blob = legacy_storage_blob(torch.arange(6, dtype=torch.float32))
    assert torch.equal(parse_legacy_storage(blob), torch.arange(6, dtype=torch.float32))
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        parse_legacy_storage(blob[:-5])
    with pytest.raises(pickle.UnpicklingError, match="magic"):
        parse_legacy_storage(dumps(12345, 2) + blob)
    big_endian = blob.replace(pickle.dumps(True, 2)[2:-1], pickle.dumps(False, 2)[2:-1], 1)
    with pytest.raises(pickle.UnpicklingError, match="little-endian"):
        parse_legacy_storage(big_endian)


def test_tensor_reading_past_its_storage_is_refused() -> None:
    storage = Reduce(
        global_marker("torch.storage", "_load_from_bytes"), (legacy_storage_blob(torch.zeros(6)),)
    )
    t = Reduce(global_marker("torch._utils", "_rebuild_tensor_v2"), (storage, 2, (2, 3), (3, 1), False, {}))
    with pytest.raises(pickle.UnpicklingError, match="past the end"):
        safe_loads(dumps({"t": t}, 3))


# -- format variants -----------------------------------------------------------------------------


def test_allowed_names_map_to_own_functions() -> None:
    up = SafeUnpickler(io.BytesIO(b""))
    rebuild = up.find_class("torch._utils", "_rebuild_tensor_v2")
    assert rebuild is not torch._utils._rebuild_tensor_v2
    assert "sfvq" in repr(rebuild)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        assert "sfvq" in repr(up.find_class(module, "scalar"))
    with pytest.raises(UnsafePickleError, match=r"'torch\.load'"):
        up.find_class("torch", "load")
    with pytest.raises(pickle.UnpicklingError, match="FloatStorage"):
        up.find_class("torch", "FloatStorage")  # only valid inside an embedded storage


@pytest.mark.parametrize(
    ("name", "protocol", "numpy_module", "layout", "plain_dicts"),
    [
        ("sg2ada_cond", 3, "numpy.core", "plain", False),
        ("sg2ada_cond", 4, "numpy._core", "strided", True),
        ("sg3_t", 4, "numpy.core", "plain", False),
        ("sg3_r", 3, "numpy._core", "strided", True),
    ],
)
def test_variants_give_exact_g_ema_tensors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    protocol: int,
    numpy_module: str,
    layout: str,
    plain_dicts: bool,
) -> None:
    def no_torch_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not be used on pickle contents")

    monkeypatch.setattr(torch, "load", no_torch_load)
    path = write_stylegan_pkl(
        FIXTURES / name,
        tmp_path / "g.pkl",
        protocol=protocol,
        numpy_module=numpy_module,
        layout=layout,
        plain_dicts=plain_dicts,
    )
    raw = path.read_bytes()
    assert raw[1] == protocol and numpy_module.encode() + b".multiarray" in raw
    data = load_pickle_file(path)
    cfg = json.loads((FIXTURES / name / "config.json").read_text())
    expected = load_file(str(FIXTURES / name / "weights.safetensors"))
    g_ema = data["G_ema"]
    got = g_ema.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k
    assert any(not torch.equal(data["G"].state_dict()[k], v) for k, v in expected.items())
    assert g_ema.init_kwargs == cfg["G_ema"]["init_kwargs"]
    for path_, mod in g_ema.walk():
        info = cfg["modules"]["G_ema" + ("." + path_ if path_ else "")]
        assert mod.class_name == info["class_name"]
        assert list(mod.init_args) == info["init_args"]
        assert mod.attributes == info["attributes"], path_
    assert data["D"].class_name == "Discriminator"
    assert (data["augment_pipe"] is None) == (not cfg["augment_pipe"])
    assert data["training_set_kwargs"] == cfg["training_set_kwargs"]


def test_rebuild_from_type_v2_and_metadata_argument() -> None:
    storage = Reduce(
        global_marker("torch.storage", "_load_from_bytes"), (legacy_storage_blob(torch.arange(4.0)),)
    )
    t = Reduce(
        global_marker("torch._utils", "_rebuild_tensor_v2"), (storage, 0, (2, 2), (1, 2), False, {}, {})
    )
    wrapped = Reduce(
        global_marker("torch._tensor", "_rebuild_from_type_v2"),
        (
            global_marker("torch._utils", "_rebuild_parameter"),
            global_marker("torch.nn.parameter", "Parameter"),
            (t, False, OrderedDict()),
            {},
        ),
    )
    out = safe_loads(dumps({"p": wrapped}, 4))["p"]
    assert torch.equal(out, torch.tensor([[0.0, 2.0], [1.0, 3.0]]))
    sneaky = Reduce(
        global_marker("torch._tensor", "_rebuild_from_type_v2"),
        (global_marker("dnnlib.util", "EasyDict"), global_marker("torch", "Tensor"), ((),), {}),
    )
    with pytest.raises(pickle.UnpicklingError, match="not an allowed one"):
        safe_loads(dumps(sneaky, 4))
