"""Issue 13: hostile files fail fast with one GeneratorError; the memory ceiling; the loader never builds a
tensor except through its own constructor.

The attacks that used to cost minutes or gigabytes run in a forked child under a time limit and
``RLIMIT_AS`` (``benchmarks.fuzz.run_files``), so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from pkl_writer import DECOY_MODULE_SRC, Reduce, _Writer, dumps, global_marker, legacy_storage_blob
from safetensors.torch import load_file

from benchmarks.fuzz import Outcome, run_files, write_zip_bomb
from sfvq.generators import GeneratorError, load_generator
from sfvq.generators.limits import (
    DEFAULT_FLOOR,
    ENV_VAR,
    LoadBudget,
    LoadLimitError,
    brief,
    default_limit,
    loading,
    parse_byte_size,
    resolve_limit,
)
from sfvq.generators.registry import register_format, unregister_format
from sfvq.generators.safe_pickle import RefusedPickleError, safe_loads, to_plain
from sfvq.generators.stylegan3 import StyleGAN3Generator, expected_state_shapes, resolve_stylegan3_config

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "stylegan"
PERSIST = global_marker("torch_utils.persistence", "_reconstruct_persistent_obj")
REBUILD = global_marker("torch._utils", "_rebuild_tensor_v2")
FROM_BYTES = global_marker("torch.storage", "_load_from_bytes")
SECONDS = 10.0  # every attack must fail well within this (they used to take minutes)
GROWTH_MIB = 400  # and hold at most this much more memory than the worker it was forked from


# -- building hostile pickles -----------------------------------------------------------------------


def _module(class_name: str, children: dict | None = None, kwargs: object = None, **state: object) -> Reduce:
    """One persistent-object record in NVIDIA's layout (only the state entries that are given)."""
    full = {**({"_modules": children} if children else {}), **({"_init_kwargs": kwargs} if kwargs else {})}
    return Reduce(PERSIST, ({"class_name": class_name, "state": {**full, **state}},))


def tiny_sg2(kwargs: object, **top: object) -> bytes:
    """A few hundred bytes that look like a StyleGAN2 G_ema (mapping + synthesis with a block b4)."""
    synthesis = _module("SynthesisNetwork", {"b4": _module("SynthesisBlock")})
    g = _module("Generator", {"mapping": _module("MappingNetwork"), "synthesis": synthesis}, kwargs)
    return dumps({"G_ema": g, **top}, 3)


def shared_list(levels: int = 8, fan: int = 12) -> list:
    """A list whose expanded size is fan**levels (4e8), pickled in a few hundred bytes (levels are shared)."""
    x: list = [1]
    for _ in range(levels):
        x = [x] * fan
    return x


def self_list(fan: int = 50) -> list:
    x: list = []
    x.extend([x] * fan)
    return x


def hash_bomb(levels: int = 60) -> bytes:
    """``{t: 1}`` with t = (t', t'), 60 levels deep: hashing t visits 2**60 tuples. Written opcode by
    opcode (building it in Python would hash it here)."""
    out = b"\x80\x02}" + b")q\x000"  # a dict; () into memo 0
    out += b"h\x00h\x00\x86q\x000" * levels  # memo 0 = (memo 0, memo 0)
    return out + b"h\x00K\x01s."  # dict[memo 0] = 1


def storage(values: torch.Tensor) -> Reduce:
    return Reduce(FROM_BYTES, (legacy_storage_blob(values),))


def fixture_g_ema(name: str, edit_kwargs: dict | None = None, drop: tuple[str, ...] = ()) -> bytes:
    """A pickle of G_ema alone, from a fixture, with its init kwargs edited (tensors as they are)."""
    cfg = json.loads((FIXTURES / name / "config.json").read_text())
    kwargs = cfg["modules"]["G_ema"]["init_kwargs"]
    for k, v in (edit_kwargs or {}).items():
        where, _, key = k.rpartition(".")
        (kwargs[where] if where else kwargs)[key] = v
    for k in drop:
        kwargs.pop(k)
    sd = load_file(str(FIXTURES / name / "weights.safetensors"))
    writer = _Writer("numpy.core", "plain", False, DECOY_MODULE_SRC)
    return dumps({"G_ema": writer.network(cfg, sd)}, int(cfg.get("pickle_protocol", 3)))


STRIDE0 = Reduce(REBUILD, (storage(torch.ones(1)), 0, (2**20, 1280), (0, 0), False, {}))  # 5 GiB of 1.0

ATTACKS: dict[str, bytes] = {
    # a shared list in a kwarg (reprs and conversions of it used to expand 12**8 = 4.3e8 items)
    "shared_list_in_kwargs": tiny_sg2({"z_dim": shared_list(), "w_dim": 32}),
    "shared_list_as_unknown_kwarg": tiny_sg2({"z_dim": 32, "bogus": shared_list()}),
    "shared_list_in_training_set_kwargs": tiny_sg2({"z_dim": 32}, training_set_kwargs={"x": shared_list()}),
    "self_referencing_list": tiny_sg2({"z_dim": self_list()}),
    # a stride-0 tensor: 646 bytes that used to become 5 GiB
    "stride0_tensor": dumps({"G_ema": _module("Generator", _parameters={"w": STRIDE0})}, 3),
    # a dict key whose hash is exponential in its pickled size (the C unpickler hashed it for hours)
    "hash_bomb_key": hash_bomb(),
    # init kwargs that ask for a huge network over the fixture's small tensors
    "w_dim_2_17": fixture_g_ema("sg2ada_uncond", {"w_dim": 2**17}),
    "img_resolution_2_14": fixture_g_ema(
        "sg2ada_uncond", {"img_resolution": 2**14, "synthesis_kwargs.channel_base": 2**30}
    ),
    "no_channels_at_2_20": fixture_g_ema("sg2ada_uncond", {"img_resolution": 2**20}),
    "mapping_layers_10_6": fixture_g_ema("sg2ada_uncond", {"mapping_kwargs.num_layers": 10**6}),
    "sg3_w_dim_2_17": fixture_g_ema("sg3_t", {"w_dim": 2**17}),
    "sg3_num_layers_10_6": fixture_g_ema("sg3_t", {"num_layers": 10**6}),
    "sg3_channel_max_2_20": fixture_g_ema("sg3_r", {"channel_max": 2**20, "channel_base": 2**30}),
}
EXPECTED: dict[str, tuple[str, str]] = {  # attack -> (GeneratorError class, message fragment)
    "shared_list_in_kwargs": ("GeneratorError", "expands to more than"),
    "shared_list_as_unknown_kwarg": ("GeneratorError", "expands to more than"),
    "shared_list_in_training_set_kwargs": ("GeneratorError", "expands to more than"),
    "self_referencing_list": ("GeneratorError", "contains itself"),
    "stride0_tensor": ("RefusedPickleError", "stride-0"),
    "hash_bomb_key": ("RefusedPickleError", "nested tuples"),
    "w_dim_2_17": ("GeneratorError", "init kwargs describe a network of"),
    "img_resolution_2_14": ("GeneratorError", "init kwargs describe a network of"),
    "no_channels_at_2_20": ("GeneratorError", "leaves no channels at the 1048576 px block"),
    "mapping_layers_10_6": ("GeneratorError", "mapping num_layers must be"),
    "sg3_w_dim_2_17": ("GeneratorError", "do not fit the config"),
    "sg3_num_layers_10_6": ("GeneratorError", "more than the"),
    "sg3_channel_max_2_20": ("GeneratorError", "do not fit the config"),
}


@pytest.fixture(scope="module")
def attack_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every attack file loaded by load_generator in a limited child (one worker for all of them)."""
    d = tmp_path_factory.mktemp("attacks")
    tasks = []
    for i, (name, data) in enumerate(ATTACKS.items()):
        path = d / f"{name}.pkl"
        path.write_bytes(data)
        tasks.append((i, name, "attack", str(path), len(data)))
    bomb = write_zip_bomb(d / "bomb.pt", 300)  # a 1.4 MB torch-style zip with a 300 MiB entry
    tasks.append((len(tasks), "zip_bomb", "attack", str(bomb), bomb.stat().st_size))
    outcomes = run_files(tasks, jobs=1, timeout=60.0, mem_mib=2048, forward=False)
    return {o.seed: o for o in outcomes}


def test_attack_files_are_small() -> None:
    assert len(ATTACKS["shared_list_in_kwargs"]) < 600
    assert len(ATTACKS["stride0_tensor"]) < 700
    assert len(ATTACKS["hash_bomb_key"]) < 600


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_attack_fails_fast_with_a_generator_error(attack_outcomes: dict[str, Outcome], name: str) -> None:
    o = attack_outcomes[name]
    error, fragment = EXPECTED[name]
    assert o.kind == "generator_error", f"{name}: {o.kind} {o.error} {o.message} {o.where}"
    assert o.error == error and fragment in o.message, o.message
    assert o.message.count("\n") == 0 and name in o.message  # one line, naming the file
    assert o.seconds < SECONDS, f"{name} took {o.seconds:.1f} s"


def test_attacks_hold_little_memory(attack_outcomes: dict[str, Outcome]) -> None:
    baseline = min(o.max_rss_mib for o in attack_outcomes.values())
    for name, o in attack_outcomes.items():
        assert o.max_rss_mib - baseline < GROWTH_MIB, f"{name}: peak RSS {o.max_rss_mib:.0f} MiB"


def test_zip_bomb_is_refused_from_the_zip_directory(attack_outcomes: dict[str, Outcome]) -> None:
    o = attack_outcomes["zip_bomb"]
    assert o.kind == "generator_error" and o.error == "LoadLimitError", o.message
    assert "uncompressed" in o.message and ENV_VAR in o.message and "max_bytes" in o.message
    assert "256 MiB" in o.message  # the default ceiling for a small file
    assert o.seconds < SECONDS


# -- the zip bomb on a real checkpoint; the ceiling's knobs -----------------------------------------


@pytest.fixture(scope="module")
def padded_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid rosinality checkpoint with a 32 MiB zero tensor, re-zipped with deflate (about 100 KB)."""
    from test_rosinality import SMALL, make_g_ema

    d = tmp_path_factory.mktemp("ros")
    plain = d / "plain.pt"
    torch.save(
        {"g_ema": make_g_ema(SMALL, 64, 2, seed=1), "latent_avg": torch.zeros(64), "pad": torch.zeros(2**23)},
        plain,
    )
    packed = d / "packed.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert packed.stat().st_size < 2**20
    return packed


def test_checkpoint_within_the_default_ceiling_loads(padded_checkpoint: Path) -> None:
    assert load_generator(padded_checkpoint).img_resolution == 32


def test_max_bytes_refuses_before_torch_inflates(
    padded_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_torch_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not run once the zip directory is over the limit")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with pytest.raises(LoadLimitError, match=r"uncompressed.*16 MiB \(max_bytes\)") as info:
        load_generator(padded_checkpoint, max_bytes=16 * 2**20)
    assert str(padded_checkpoint) in str(info.value) and ENV_VAR in str(info.value)


def test_environment_variable_sets_the_ceiling(
    padded_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "16MiB")
    with pytest.raises(LoadLimitError, match=rf"16 MiB \({ENV_VAR}\)"):
        load_generator(padded_checkpoint)
    monkeypatch.setenv(ENV_VAR, "1GiB")
    assert load_generator(padded_checkpoint).img_resolution == 32
    assert load_generator(padded_checkpoint, max_bytes=2**30).img_resolution == 32  # the argument wins
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(GeneratorError, match=rf"{ENV_VAR}: not a byte size"):
        load_generator(padded_checkpoint)


def test_fixture_pickles_load_within_the_default_ceiling(tmp_path: Path) -> None:
    from pkl_writer import write_stylegan_pkl

    for name in ("sg2ada_cond", "sg3_r"):
        path = write_stylegan_pkl(FIXTURES / name, tmp_path / f"{name}.pkl")
        with loading(path) as budget:
            load_generator(path)
        assert 0 < budget.used < default_limit(path.stat().st_size)
        # and a ceiling too small for the file's tensors stops it, naming the ceiling
        with pytest.raises(LoadLimitError, match=r"load limit is 1 MiB \(max_bytes\)"):
            load_generator(path, max_bytes=2**20)


def test_limit_resolution_and_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_limit(10) == DEFAULT_FLOOR
    assert default_limit(100 * 2**20) == 400 * 2**20
    assert resolve_limit(None, 2**30) == (4 * 2**30, "default: max(4 x file size, 256 MiB)")
    assert resolve_limit(5, 2**30) == (5, "max_bytes")
    monkeypatch.setenv(ENV_VAR, "8G")
    assert resolve_limit(None, 1) == (8 * 2**30, ENV_VAR)
    for text, value in [("1000", 1000), ("512MiB", 512 * 2**20), ("1.5 GiB", 3 * 2**29), ("2k", 2048)]:
        assert parse_byte_size(text) == value
    for bad in ("", "-1", "0", "1e9", "eight"):
        with pytest.raises(ValueError):
            parse_byte_size(bad)
    for bad_max in (0, -5, 1.5, True, "1G"):
        with pytest.raises(GeneratorError, match="max_bytes must be a positive int"):
            resolve_limit(bad_max, 1)  # type: ignore[arg-type]


def test_budget_charges_and_refuses() -> None:
    b = LoadBudget(100, "max_bytes", "x.pkl")
    b.charge(60, "a")
    with pytest.raises(LoadLimitError, match=r"x\.pkl: b would need 41 bytes on top of the 60 bytes") as info:
        b.charge(41, "b")
    assert "load_generator(..., max_bytes=N)" in str(info.value) and ENV_VAR in str(info.value)
    assert b.used == 60  # nothing was counted for the refused charge
    assert "100 bytes (max_bytes)" in str(b.out_of_memory())


# -- every loader failure is one GeneratorError ----------------------------------------------------


@pytest.fixture
def raising_format(tmp_path: Path):
    """A registered format whose loader raises whatever the test puts in ``box``."""
    box: dict[str, BaseException] = {}
    path = tmp_path / "thing.raise"
    path.write_bytes(b"x")

    def load(p: Path, device: object) -> object:
        raise box["exc"]

    register_format("raiser", lambda p: p.suffix == ".raise", load, label="raising format", position=0)
    yield path, box
    unregister_format("raiser")


@pytest.mark.parametrize(
    "exc",
    [
        RecursionError("maximum recursion depth exceeded"),
        ZeroDivisionError("division by zero"),
        AttributeError("'list' object has no attribute 'startswith'"),
        TypeError("unhashable type: 'list'"),
        ValueError("x"),
        RuntimeError("Overflow when unpacking long"),
        SystemError("error return without exception set"),
        OverflowError("int too large"),
        KeyError("w_avg"),
        IndexError("tuple index out of range"),
    ],
)
def test_other_exceptions_become_one_generator_error(raising_format, exc: BaseException) -> None:
    path, box = raising_format
    box["exc"] = exc
    with pytest.raises(GeneratorError) as info:
        load_generator(path)
    text = str(info.value)
    assert text.startswith(f"{path}: cannot load this raising format") and type(exc).__name__ in text
    assert "\n" not in text and info.value.__cause__ is exc


def test_generator_errors_get_the_path_and_one_line(raising_format) -> None:
    path, box = raising_format
    box["exc"] = GeneratorError("something is off\nsecond line")
    with pytest.raises(GeneratorError) as info:
        load_generator(path)
    assert str(info.value) == f"{path}: something is off second line"
    box["exc"] = GeneratorError(f"{path} is fine as it is")
    with pytest.raises(GeneratorError, match=r"^[^:]+ is fine as it is$"):
        load_generator(path)


def test_memory_error_names_the_ceiling_and_interrupts_propagate(raising_format) -> None:
    path, box = raising_format
    box["exc"] = MemoryError()
    with pytest.raises(
        LoadLimitError, match=r"ran out of memory.*load limit is 256 MiB.*SFVQ_MAX_LOAD_BYTES"
    ):
        load_generator(path)
    box["exc"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        load_generator(path)


# -- the unpickler builds tensors only through its own constructors (defence in depth) -------------


@pytest.fixture
def torch_setstate_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the unpickler reached torch.Tensor.__setstate__/set_")

    monkeypatch.setattr(torch.Tensor, "__setstate__", forbidden)
    monkeypatch.setattr(torch.Tensor, "set_", forbidden)


def _tensor(values: torch.Tensor, state: object = None) -> Reduce:
    return Reduce(REBUILD, (storage(values), 0, tuple(values.shape), (1,), False, {}), state)


@pytest.mark.parametrize(
    "state",
    [
        (storage(torch.zeros(1)), 0, (2**20, 1280), (0, 0)),  # Tensor.__setstate__ -> set_(...)
        {"requires_grad": True},
        (None, {"__class__": global_marker("numpy", "dtype")}),
    ],
)
def test_build_on_a_tensor_is_refused(torch_setstate_forbidden: None, state: object) -> None:
    with pytest.raises(RefusedPickleError, match="BUILD on a Tensor"):
        safe_loads(dumps({"t": _tensor(torch.ones(2), state)}, 3))


def test_class_swaps_are_refused(torch_setstate_forbidden: None) -> None:
    swap = (None, {"__class__": global_marker("dnnlib.util", "EasyDict")})
    record = Reduce(PERSIST, ({"class_name": "Generator", "state": {}},), swap)
    with pytest.raises(RefusedPickleError, match="BUILD on a PersistentObject"):
        safe_loads(dumps({"G_ema": record}, 3))
    # replacing a storage's data after its dtype and size were checked
    swapped = Reduce(FROM_BYTES, (legacy_storage_blob(torch.zeros(1)),), {"data": _tensor(torch.ones(4))})
    t = Reduce(REBUILD, (swapped, 0, (4,), (1,), False, {}))
    with pytest.raises(RefusedPickleError, match="BUILD on a _LegacyStorage"):
        safe_loads(dumps({"t": t}, 3))
    # a numpy dtype made without its constructor (which checks the dtype) is never made
    raw = b"\x80\x02cnumpy\ndtype\n)\x81."  # NEWOBJ(numpy.dtype, ())
    with pytest.raises(RefusedPickleError, match="NEWOBJ of _NumpyDType"):
        safe_loads(raw)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x80\x02]K\x01\x85R.", "REDUCE calls a list"),  # calling a non-allowed object
        (b"\x80\x02ccollections\nOrderedDict\n(K\x01t\x81.", "NEWOBJ of _OrderedDictStandIn"),
        (b"\x80\x02(K\x01K\x02i__main__\nX\n.", "INST/OBJ/EXT"),
        (b"\x80\x02\x82\x01.", "INST/OBJ/EXT"),
        (b"\x80\x02\x8b\xff\x00\x00\x00" + b"\x01" * 255 + b".", "an integer of 255 bytes"),
        (b"\x80\x02K\x01K\x02K\x03s.", "SETITEM applied to a int"),
    ],
)
def test_other_refused_constructs(data: bytes, fragment: str) -> None:
    with pytest.raises((RefusedPickleError, pickle.UnpicklingError), match=fragment):
        safe_loads(data)


def test_length_fields_never_allocate_past_the_data() -> None:
    # BYTEARRAY8 / BINBYTES8 claiming 2**40 bytes in a 20-byte file: refused before any allocation
    for op in (b"\x96", b"\x8e"):
        with pytest.raises(pickle.UnpicklingError, match="truncated"):
            safe_loads(b"\x80\x05" + op + (2**40).to_bytes(8, "little") + b"abc.")


def test_odd_dict_keys_are_counted() -> None:
    many = {i * (2**61 - 1): 0 for i in range(1, 1500)}  # all hash to 0: a quadratic dict
    with pytest.raises(RefusedPickleError, match="not strings"):
        safe_loads(dumps({"x": many}, 3))
    assert safe_loads(dumps({"x": {1: 2, 3.5: 4, None: 5, (1, 2): 6}}, 3)) == {
        "x": {1: 2, 3.5: 4, None: 5, (1, 2): 6}
    }
    with pytest.raises(RefusedPickleError, match="key or set item of type"):
        safe_loads(dumps({"x": {frozenset([1]): 1}}, 4))


def test_legacy_torch_file_with_forged_sizes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A legacy torch.save file declares each storage's size in its pickle; torch allocates that before
    reading. A declared size the file cannot hold is refused before torch.load runs."""
    path = tmp_path / "legacy.pt"
    torch.save({"g_ema": {"w": torch.zeros(7)}}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    at = data.index(b"K\x07")  # the first 7 is the storage's element count in its persistent id
    forged = data[:at] + b"J\x00\x00\x00\x40" + data[at + 2 :]  # 7 -> 2**30 elements (4 GiB of floats)
    path.write_bytes(forged)

    def no_torch_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not run")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with pytest.raises(GeneratorError, match=r"declares 4 GiB of tensor storage, but only"):
        load_generator(path)


def test_stride0_tensor_in_a_torch_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(1).expand(2**16, 2**16)}}, path)
    with pytest.raises(GeneratorError, match=r"style\.1\.weight.*16 GiB.*storage holds only 4 bytes"):
        load_generator(path)


# -- bounded helpers -------------------------------------------------------------------------------


def test_to_plain_is_memoised_and_bounded() -> None:
    inner = {"a": [1, 2]}
    out = to_plain({"x": inner, "y": inner})
    assert out == {"x": {"a": [1, 2]}, "y": {"a": [1, 2]}} and out["x"] is out["y"]  # converted once
    with pytest.raises(GeneratorError, match="expands to more than 100,000 entries"):
        to_plain(shared_list())
    with pytest.raises(GeneratorError, match="contains itself"):
        to_plain(self_list())
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(GeneratorError, match="nested deeper than 64"):
        to_plain(deep)


def test_brief_is_bounded_whatever_the_value() -> None:
    assert len(brief(shared_list(12, 50))) <= 120  # 50**12 items, never expanded
    assert len(brief(self_list())) <= 120
    assert brief("x" * 10_000).endswith("'...")
    assert brief(2**5000) == "<int of 5001 bits>"
    assert brief(torch.zeros(3, 4)) == "<Tensor of shape (3, 4)>"
    assert brief(object()) == "<object>"
    assert brief({"a": 1}) == "{'a': 1}"


@pytest.mark.parametrize("name", ["sg3_t", "sg3_r"])
def test_sg3_expected_shapes_match_the_network(name: str) -> None:
    """The shapes the loader checks before building are the shapes the network has."""
    kwargs = json.loads((FIXTURES / name / "config.json").read_text())["G_ema"]["init_kwargs"]
    for variant in (kwargs, {**kwargs, "c_dim": 0, "num_layers": 6, "num_critical": 1}):
        cfg = resolve_stylegan3_config(variant)
        actual = {k: tuple(v.shape) for k, v in StyleGAN3Generator(cfg).state_dict().items()}
        assert expected_state_shapes(cfg) == actual


def test_hostile_kwargs_values_are_named_briefly(tmp_path: Path) -> None:
    path = tmp_path / "g.pkl"
    path.write_bytes(fixture_g_ema("sg2ada_uncond", {"w_dim": float("inf")}))
    with pytest.raises(GeneratorError, match=r"'w_dim' must be an int in 0\.\.2147483647, got inf"):
        load_generator(path)
    path.write_bytes(fixture_g_ema("sg2ada_uncond", {"synthesis_kwargs.conv_clamp": "x"}))
    with pytest.raises(
        GeneratorError, match="conv_clamp must be None or a positive number of float32 range, got 'x'"
    ):
        load_generator(path)
    path.write_bytes(fixture_g_ema("sg2ada_uncond", {"mapping_kwargs": [1, 2]}))
    with pytest.raises(GeneratorError, match=r"mapping_kwargs must be a dict, got \[1, 2\]"):
        load_generator(path)
    path.write_bytes(fixture_g_ema("sg3_t", {"first_cutoff": 1e-300}))
    with pytest.raises(GeneratorError, match="sg3|StyleGAN3"):
        load_generator(path)


def test_zip_directory_is_read_safely(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/other.txt", b"x")
    path.write_bytes(buf.getvalue())
    with pytest.raises(GeneratorError, match="without data.pkl"):
        load_generator(path)
    path.write_bytes(buf.getvalue()[:-10])  # end-of-directory record cut
    with pytest.raises(GeneratorError, match="not a readable PyTorch checkpoint"):
        load_generator(path)
