"""BigGAN adapter: a small random BigGAN saved in the pytorch-pretrained-biggan layout, loaded back."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import socket
import sys
import types
from pathlib import Path

import pytest
import torch

from sfvq.generators.base import Generator, GeneratorError, to_uint8
from sfvq.generators.biggan import expected_state_shapes, load_biggan, parse_config, truncated_noise

# 32x32 output, attention before block 2 (32 channels at 16x16), channels shrink twice.
SMALL_CONFIG = {
    "output_dim": 32,
    "z_dim": 16,
    "class_embed_dim": 16,
    "channel_width": 4,
    "num_classes": 10,
    "layers": [[False, 16, 16], [True, 16, 8], [True, 8, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1]],
    "attention_layer_position": 2,
    "eps": 1e-4,
    "n_stats": 51,
}


def _power_iteration(w: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors u (rows,), v (cols,) close to w's top singular pair, as training would leave them."""
    mat = w.reshape(w.shape[0], -1)
    u = torch.nn.functional.normalize(torch.randn(mat.shape[0], generator=gen), dim=0)
    for _ in range(3):
        v = torch.nn.functional.normalize(mat.t() @ u, dim=0)
        u = torch.nn.functional.normalize(mat @ v, dim=0)
    return u, v


def make_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with every key of the layout (names and shapes written out here)."""
    gen = torch.Generator().manual_seed(seed)
    ch, z, ns = config["channel_width"], config["z_dim"], config["n_stats"]
    sd: dict[str, torch.Tensor] = {}

    def sn(prefix: str, shape: tuple[int, ...], scale: float = 1.0, bias: bool = False) -> None:
        w = torch.randn(shape, generator=gen) * scale
        u, v = _power_iteration(w, gen)
        sd[f"{prefix}.weight_orig"], sd[f"{prefix}.weight_u"], sd[f"{prefix}.weight_v"] = w, u, v
        if bias:
            sd[f"{prefix}.bias"] = torch.randn(shape[0], generator=gen) * 0.1

    def bn_stats(prefix: str, c: int) -> None:
        sd[f"{prefix}.running_means"] = torch.randn(ns, c, generator=gen) * 0.3
        sd[f"{prefix}.running_vars"] = torch.rand(ns, c, generator=gen) + 0.5

    sd["embeddings.weight"] = torch.randn(z, config["num_classes"], generator=gen) * 0.5
    sn("generator.gen_z", (4 * 4 * 16 * ch, 2 * z), bias=True)
    index = 0
    for b, (_, cin, cout) in enumerate(config["layers"]):
        if b == config["attention_layer_position"]:
            c = cin * ch
            p = f"generator.layers.{index}"
            sn(f"{p}.snconv1x1_theta", (c // 8, c, 1, 1))
            sn(f"{p}.snconv1x1_phi", (c // 8, c, 1, 1))
            sn(f"{p}.snconv1x1_g", (c // 2, c, 1, 1))
            sn(f"{p}.snconv1x1_o_conv", (c, c // 2, 1, 1))
            sd[f"{p}.gamma"] = torch.tensor([0.7])
            index += 1
        cin, cout = cin * ch, cout * ch
        mid = cin // 4
        p = f"generator.layers.{index}"
        for k, c in enumerate((cin, mid, mid, mid)):
            bn_stats(f"{p}.bn_{k}", c)
            sn(f"{p}.bn_{k}.scale", (c, 2 * z), scale=0.3)
            sn(f"{p}.bn_{k}.offset", (c, 2 * z), scale=0.3)
        for k, (co, ci, ks) in enumerate(((mid, cin, 1), (mid, mid, 3), (mid, mid, 3), (cout, mid, 1))):
            sn(f"{p}.conv_{k}", (co, ci, ks, ks), bias=True)
        index += 1
    bn_stats("generator.bn", ch)
    sd["generator.bn.weight"] = 1 + 0.1 * torch.randn(ch, generator=gen)
    sd["generator.bn.bias"] = 0.1 * torch.randn(ch, generator=gen)
    sn("generator.conv_to_rgb", (ch, ch, 3, 3), bias=True)
    return sd


def write_biggan(directory: Path, config: dict, sd: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.save(sd, directory / "pytorch_model.bin")
    return directory


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny convolutions on shared, busy cores run far faster on one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return make_state_dict(SMALL_CONFIG)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, state_dict: dict[str, torch.Tensor]) -> Path:
    return write_biggan(tmp_path_factory.mktemp("biggan") / "tiny-biggan", SMALL_CONFIG, state_dict)


@pytest.fixture()
def gen(model_dir: Path):
    return load_biggan(model_dir)


def _inputs(n: int = 4, psi: float = 0.6, seed: int = 1):
    z = truncated_noise(n, SMALL_CONFIG["z_dim"], psi, seed)
    classes = torch.arange(n) % SMALL_CONFIG["num_classes"]
    return z, classes, psi


# ---- protocol, shapes, determinism -----------------------------------------------------------------


def test_protocol_attributes(gen) -> None:
    assert isinstance(gen, Generator)
    assert (gen.z_dim, gen.w_dim, gen.num_ws, gen.c_dim) == (16, None, 1, 10)
    assert (gen.img_resolution, gen.img_channels, gen.spaces) == (32, 3, ("z",))
    assert gen.layers == ("linear", "block0", "block1", "block2", "block3", "block4", "block5")
    assert gen.device == torch.device("cpu")


def test_load_accepts_the_file_inside_the_directory(model_dir: Path) -> None:
    g = load_biggan(model_dir / "pytorch_model.bin")
    assert g.img_resolution == 32


def test_output_shape_range_and_class_dependence(gen) -> None:
    z, classes, psi = _inputs()
    ws = gen.mapping(z, gen.one_hot(classes), truncation_psi=psi)
    assert ws.shape == (4, 1, 16) and torch.equal(ws[:, 0], z)
    img = gen.synthesis(ws)
    assert img.shape == (4, 3, 32, 32) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.abs().max() <= 1.0
    assert img.std() > 0.05, "a random network should not give flat images"
    assert not torch.allclose(img[0], img[1])
    other = gen.synthesis(ws, c=gen.one_hot((classes + 1) % 10))
    assert (other - img).abs().max() > 1e-3, "the class must change the image"
    assert to_uint8(img).shape == (4, 32, 32, 3)


def test_integer_classes_equal_one_hot(gen) -> None:
    z, classes, psi = _inputs()
    a = gen.synthesis(gen.mapping(z, classes, psi))
    b = gen.synthesis(gen.mapping(z, gen.one_hot(classes), psi))
    assert torch.equal(a, b)


def test_single_class_vector_broadcasts(gen) -> None:
    z, _, psi = _inputs()
    a = gen.synthesis(gen.mapping(z, gen.one_hot([3]), psi))
    b = gen.synthesis(gen.mapping(z, gen.one_hot([3, 3, 3, 3]), psi))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_deterministic_across_calls_and_loads(model_dir: Path, gen) -> None:
    z, classes, psi = _inputs()
    a = gen.synthesis(gen.mapping(z, classes, psi))
    b = gen.synthesis(gen.mapping(z, classes, psi))
    again = load_biggan(model_dir)
    c = again.synthesis(again.mapping(z, classes, psi))
    assert torch.equal(a, b) and torch.equal(a, c)


def test_batch_independence(gen) -> None:
    z, classes, psi = _inputs(n=5)
    full = gen.synthesis(gen.mapping(z, classes, psi))
    one = gen.synthesis(gen.mapping(z[2:3], classes[2:3], psi))
    torch.testing.assert_close(full[2:3], one, rtol=0, atol=1e-5)


# ---- truncated noise and truncation ------------------------------------------------------------------


def test_truncated_noise_is_seeded_and_bounded() -> None:
    a, b, c = (
        truncated_noise(500, 128, 0.5, 7),
        truncated_noise(500, 128, 0.5, 7),
        truncated_noise(500, 128, 0.5, 8),
    )
    assert a.shape == (500, 128) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1.0  # |x| <= 2, times psi 0.5
    unit = truncated_noise(500, 128, 1.0, 7)
    torch.testing.assert_close(a, 0.5 * unit)
    # A standard normal truncated to [-2, 2] has mean 0 and std about 0.880.
    assert abs(unit.mean().item()) < 0.02
    assert abs(unit.std().item() - 0.8796) < 0.01
    assert unit.abs().max() > 1.9  # the tails up to 2 are used
    with pytest.raises(ValueError, match="truncation"):
        truncated_noise(4, 128, 1.5, 0)
    with pytest.raises(ValueError, match="truncation"):
        truncated_noise(4, 128, 0.0, 0)


def test_truncation_selects_batchnorm_statistics(model_dir: Path, state_dict, tmp_path: Path) -> None:
    z, classes, _ = _inputs()
    g = load_biggan(model_dir)
    a = g.synthesis(g.mapping(z, classes, 0.4))
    b = g.synthesis(g.mapping(z, classes, 0.9))
    assert (a - b).abs().max() > 1e-3, "different truncations must use different stats"
    # With every truncation row of the stats equal, the truncation has no other effect on the output.
    flat = {
        k: (v[:1].expand_as(v).clone() if k.endswith(("running_means", "running_vars")) else v)
        for k, v in state_dict.items()
    }
    g2 = load_biggan(write_biggan(tmp_path / "flat", SMALL_CONFIG, flat))
    a2 = g2.synthesis(g2.mapping(z, classes, 0.4))
    b2 = g2.synthesis(g2.mapping(z, classes, 0.9))
    c2 = g2.synthesis(g2.mapping(z, classes, 0.37))  # between two rows
    torch.testing.assert_close(a2, b2, rtol=0, atol=1e-6)
    torch.testing.assert_close(a2, c2, rtol=0, atol=1e-6)


def test_truncation_between_rows_mixes_neighbouring_stats(
    model_dir: Path, state_dict, tmp_path: Path
) -> None:
    # Rows 18 and 19 (truncations 0.36 and 0.38) hold stats A and B; at 0.37 the output must equal the one
    # from a model whose row 18 holds the 50/50 mix of A and B.
    z, classes, _ = _inputs()
    mixed = dict(state_dict)
    for k, v in state_dict.items():
        if k.endswith(("running_means", "running_vars")):
            m = v.clone()
            m[18] = 0.5 * (v[18] + v[19])
            mixed[k] = m
    g = load_biggan(model_dir)
    g_mix = load_biggan(write_biggan(tmp_path / "mixed", SMALL_CONFIG, mixed))
    between = g.synthesis(g.mapping(z, classes, 0.37))
    on_row = g_mix.synthesis(g_mix.mapping(z, classes, 0.36))
    torch.testing.assert_close(between, on_row, rtol=0, atol=1e-5)


def test_bad_truncation_and_cutoff(gen) -> None:
    z, classes, _ = _inputs()
    for psi in (0.0, -0.5, 1.2, float("nan")):
        with pytest.raises(ValueError, match="truncation"):
            gen.mapping(z, classes, psi)
    with pytest.raises(ValueError, match="truncation_cutoff"):
        gen.mapping(z, classes, 0.5, truncation_cutoff=4)
    with pytest.raises(ValueError, match="noise_mode"):
        gen.synthesis(gen.mapping(z, classes, 0.5), noise_mode="loud")


# ---- features and synthesis_from --------------------------------------------------------------------


def test_features_and_synthesis_from_compose_to_the_full_forward(gen) -> None:
    z, classes, psi = _inputs(n=3, psi=0.7)
    full = gen.synthesis(gen.mapping(z, classes, psi))
    shapes = {
        "linear": (64, 4, 4),
        "block0": (64, 4, 4),
        "block1": (32, 8, 8),
        "block2": (32, 16, 16),
        "block3": (16, 16, 16),
        "block4": (8, 32, 32),
        "block5": (4, 32, 32),
    }
    previous = None
    for layer in gen.layers:
        feats = gen.features(z, classes, layer, truncation_psi=psi)
        assert feats.shape == (3, *shapes[layer]) == (3, *gen.feature_shape(layer))
        if previous is not None and feats.shape == previous.shape:
            assert not torch.allclose(feats, previous), f"{layer} must differ from the layer before"
        previous = feats
        rest = gen.synthesis_from(layer, feats)
        torch.testing.assert_close(rest, full, rtol=0, atol=1e-6, msg=f"layer {layer}")
        # explicit condition keywords give the same result as the stored state
        torch.testing.assert_close(
            gen.synthesis_from(layer, feats, z=z, c=classes, truncation=psi), full, rtol=0, atol=1e-6
        )


def test_synthesis_from_needs_a_matching_z(gen) -> None:
    z, classes, psi = _inputs(n=3)
    feats = gen.features(z, classes, "linear", truncation_psi=psi)
    corners = feats[:2].mean(0, keepdim=True).expand(5, -1, -1, -1)  # 5 points no single z produced
    with pytest.raises(ValueError, match="pass z="):
        gen.synthesis_from("linear", corners)
    with pytest.raises(ValueError, match="class vector held from the last .* has batch 3 .* pass c="):
        gen.synthesis_from("linear", corners, z=torch.zeros(1, 16))
    img = gen.synthesis_from("linear", corners, z=torch.zeros(1, 16), c=gen.one_hot([2]))
    assert img.shape == (5, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown layer 'block9'"):
        gen.features(z, classes, "block9")
    with pytest.raises(ValueError, match=r"features at 'block1' must have shape \(N, 32, 8, 8\)"):
        gen.synthesis_from("block1", feats)


# ---- class handling errors --------------------------------------------------------------------------


def test_class_errors(model_dir: Path) -> None:
    g = load_biggan(model_dir)
    z, classes, psi = _inputs()
    with pytest.raises(ValueError, match="no class vector"):
        g.synthesis(z[:, None])
    with pytest.raises(ValueError, match=r"class-conditional: pass a class vector c of shape \(N, 10\)"):
        g.mapping(z, None, psi)
    with pytest.raises(ValueError, match=r"must have shape \(N, 10\), got \(4, 1000\)"):
        g.mapping(z, torch.zeros(4, 1000), psi)
    with pytest.raises(ValueError, match="class 10 is out of range.*0..9"):
        g.mapping(z, torch.tensor([1, 2, 10, 3]), psi)
    with pytest.raises(ValueError, match="class -1 is out of range"):
        g.one_hot(-1)
    with pytest.raises(ValueError, match="batch 3 but the latents have batch 4"):
        g.mapping(z, g.one_hot([1, 2, 3]), psi)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 16\)"):
        g.mapping(torch.zeros(4, 128), classes, psi)


# ---- loading errors --------------------------------------------------------------------------------


def test_model_name_is_refused_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("load_biggan tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(GeneratorError, match="'biggan-deep-256' is not a local directory.*never downloads"):
        load_biggan("biggan-deep-256")


def test_missing_directory_and_files(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(GeneratorError, match="BigGAN directory not found"):
        load_biggan(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GeneratorError, match="missing config.json and pytorch_model.bin"):
        load_biggan(empty)
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps(SMALL_CONFIG))
    with pytest.raises(GeneratorError, match="missing pytorch_model.bin"):
        load_biggan(only_config)
    other_file = tmp_path / "weights.pt"
    other_file.write_bytes(b"x")
    with pytest.raises(GeneratorError, match="is a file; a BigGAN is a directory"):
        load_biggan(other_file)


def _dir_with(tmp_path: Path, name: str, config, weights: bytes | None, state_dict) -> Path:
    d = tmp_path / name
    d.mkdir()
    text = config if isinstance(config, str) else json.dumps(config)
    (d / "config.json").write_text(text)
    if weights is not None:
        (d / "pytorch_model.bin").write_bytes(weights)
    else:
        torch.save(state_dict, d / "pytorch_model.bin")
    return d


def test_corrupt_and_truncated_weights(tmp_path: Path, model_dir: Path, state_dict) -> None:
    good = (model_dir / "pytorch_model.bin").read_bytes()
    cases = {
        "random": bytes(range(256)) * 40,
        "truncated": good[: len(good) // 2],
        "empty": b"",
    }
    for name, data in cases.items():
        d = _dir_with(tmp_path, name, SMALL_CONFIG, data, None)
        with pytest.raises(GeneratorError, match="pytorch_model.bin"):
            load_biggan(d)


def test_weights_only_refuses_foreign_objects(tmp_path: Path) -> None:
    d = tmp_path / "evil"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(SMALL_CONFIG))
    torch.save(
        {"embeddings.weight": torch.zeros(1), "extra": types.SimpleNamespace(a=1)}, d / "pytorch_model.bin"
    )
    with pytest.raises(GeneratorError, match="refused or unreadable pickle"):
        load_biggan(d)


def test_not_a_state_dict(tmp_path: Path) -> None:
    d = _dir_with(tmp_path, "tensor", SMALL_CONFIG, None, torch.zeros(3))
    with pytest.raises(GeneratorError, match="expected a state dict.*found Tensor"):
        load_biggan(d)


def test_wrong_layout(tmp_path: Path, state_dict) -> None:
    missing = {k: v for k, v in state_dict.items() if k != "generator.layers.3.conv_1.weight_v"}
    with pytest.raises(GeneratorError, match=r"missing key\(s\): generator.layers.3.conv_1.weight_v"):
        load_biggan(_dir_with(tmp_path, "missing", SMALL_CONFIG, None, missing))
    extra = dict(state_dict, **{"generator.layers.3.conv_1.weight": torch.zeros(1)})
    with pytest.raises(GeneratorError, match=r"unexpected key\(s\): generator.layers.3.conv_1.weight"):
        load_biggan(_dir_with(tmp_path, "extra", SMALL_CONFIG, None, extra))
    bad = dict(state_dict, **{"embeddings.weight": torch.zeros(16, 7)})
    with pytest.raises(
        GeneratorError, match=r"misshapen key\(s\): embeddings.weight \(16, 7\) \(expected \(16, 10\)\)"
    ):
        load_biggan(_dir_with(tmp_path, "bad", SMALL_CONFIG, None, bad))
    # A config that disagrees with the weights (more classes) is caught by the same check.
    more_classes = dict(SMALL_CONFIG, num_classes=1000)
    with pytest.raises(GeneratorError, match="embeddings.weight"):
        load_biggan(_dir_with(tmp_path, "classes", more_classes, None, state_dict))
    nan = dict(state_dict, **{"generator.bn.bias": torch.full((4,), float("nan"))})
    with pytest.raises(GeneratorError, match="non-finite values in generator.bn.bias"):
        load_biggan(_dir_with(tmp_path, "nan", SMALL_CONFIG, None, nan))
    degenerate = dict(state_dict, **{"generator.conv_to_rgb.weight_u": torch.zeros(4)})
    with pytest.raises(GeneratorError, match="spectral norm of generator.conv_to_rgb is degenerate"):
        load_biggan(_dir_with(tmp_path, "degenerate", SMALL_CONFIG, None, degenerate))


def test_bad_configs(tmp_path: Path, state_dict) -> None:
    with pytest.raises(GeneratorError, match="not valid JSON"):
        load_biggan(_dir_with(tmp_path, "json", "{not json", None, state_dict))
    no_layers = {k: v for k, v in SMALL_CONFIG.items() if k != "layers"}
    with pytest.raises(GeneratorError, match=r"missing BigGAN config key\(s\) \['layers'\]"):
        load_biggan(_dir_with(tmp_path, "nolayers", no_layers, None, state_dict))
    with pytest.raises(GeneratorError, match="upsample to 32x32 but output_dim is 64"):
        parse_config(dict(SMALL_CONFIG, output_dim=64))
    with pytest.raises(GeneratorError, match=r"layers\[1\] takes 8 x channel_width channels but gets 16"):
        parse_config(dict(SMALL_CONFIG, layers=[[False, 16, 16], [True, 8, 8]]))
    with pytest.raises(GeneratorError, match="'z_dim' must be a positive integer"):
        parse_config(dict(SMALL_CONFIG, z_dim="128"))
    with pytest.raises(GeneratorError, match="expected a JSON object"):
        parse_config([1, 2])


def test_expected_layout_of_the_published_configs() -> None:
    # The 128x128 BigGAN-deep config: 10 blocks, attention at 8, channel width 128.
    layers = [
        [False, 16, 16],
        [True, 16, 16],
        [False, 16, 16],
        [True, 16, 8],
        [False, 8, 8],
        [True, 8, 4],
        [False, 4, 4],
        [True, 4, 2],
        [False, 2, 2],
        [True, 2, 1],
    ]
    cfg = parse_config(
        dict(
            output_dim=128,
            z_dim=128,
            class_embed_dim=128,
            channel_width=128,
            num_classes=1000,
            layers=layers,
            attention_layer_position=8,
            eps=1e-4,
            n_stats=51,
        )
    )
    shapes = expected_state_shapes(cfg)
    assert shapes["embeddings.weight"] == (128, 1000)
    assert shapes["generator.gen_z.weight_orig"] == (32768, 256)
    assert shapes["generator.layers.8.snconv1x1_theta.weight_orig"] == (32, 256, 1, 1)
    assert shapes["generator.layers.10.conv_3.weight_orig"] == (128, 64, 1, 1)  # block 9 after attention
    assert shapes["generator.layers.0.bn_0.running_means"] == (51, 2048)
    n_params = sum(
        math.prod(s)
        for k, s in shapes.items()
        if not k.endswith(("_u", "_v", "running_means", "running_vars"))
    )
    assert 50e6 < n_params < 60e6  # BigGAN-deep-128 has about 50.4M generator parameters (+ embedding)


# ---- comparison with the reference package (optional) ------------------------------------------------


def _reference_model_module():
    """pytorch_pretrained_biggan.model, or None. Its package __init__ needs boto3, requests, tqdm and scipy
    (for downloads and utils we never call); without them, model.py and config.py are loaded under a
    private package name with a stub for the download helper."""
    if importlib.util.find_spec("pytorch_pretrained_biggan") is None:
        return None
    try:
        return importlib.import_module("pytorch_pretrained_biggan.model")
    except ImportError:
        pass
    spec = importlib.util.find_spec("pytorch_pretrained_biggan")
    alias = "_sfvq_reference_biggan"
    pkg = types.ModuleType(alias)
    pkg.__path__ = list(spec.submodule_search_locations)
    stub = types.ModuleType(f"{alias}.file_utils")

    def cached_path(*args, **kwargs):
        raise AssertionError("the reference must not download anything in tests")

    stub.cached_path = cached_path
    saved = {k: sys.modules.get(k) for k in (alias, f"{alias}.file_utils")}
    sys.modules[alias], sys.modules[f"{alias}.file_utils"] = pkg, stub
    try:
        return importlib.import_module(f"{alias}.model")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.modules.pop(f"{alias}.model", None)
        sys.modules.pop(f"{alias}.config", None)


def test_matches_reference_package(model_dir: Path, state_dict) -> None:
    ref_mod = _reference_model_module()
    if ref_mod is None:
        pytest.skip("pytorch-pretrained-biggan is not installed")
    config = ref_mod.BigGANConfig.from_dict({k: v for k, v in SMALL_CONFIG.items()})
    ref = ref_mod.BigGAN(config)
    ref.load_state_dict(state_dict, strict=True)  # our key layout is exactly the reference's
    ref.eval()
    g = load_biggan(model_dir)
    worst = 0.0
    for psi in (1.0, 0.5, 0.37, 0.05):
        z = truncated_noise(3, SMALL_CONFIG["z_dim"], psi, seed=3)
        c = g.one_hot([0, 4, 9])
        with torch.no_grad():
            want = ref(z, c, psi)
        got = g.synthesis(g.mapping(z, c, psi))
        worst = max(worst, (got - want).abs().max().item())
    assert worst < 1e-4, f"max abs difference to pytorch-pretrained-biggan: {worst:.2e}"
