"""Clean-room StyleGAN3 generator against the official-code fixtures (sg3_t, sg3_r)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sfvq.generators.base import GeneratorError
from sfvq.generators.stylegan3 import (
    StyleGAN3Generator,
    build_stylegan3,
    resolve_stylegan3_config,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "stylegan"
NETS = ("sg3_t", "sg3_r")
WS_TOL = 1e-5
IMG_TOL = 1e-4
IMG_REL_TOL = 1e-4  # max |err| / max |reference|; SG3 images are small (|x| < 0.5)


class _Net:
    """One fixture network: config, weights, cases, intermediates and the built generator."""

    def __init__(self, name: str):
        root = FIXTURES / name
        assert root.is_dir(), f"fixture directory {root} is missing"
        self.name = name
        self.config = json.loads((root / "config.json").read_text())
        self.init_kwargs = self.config["G_ema"]["init_kwargs"]
        self.weights = load_file(root / "weights.safetensors")
        self.cases = load_file(root / "cases.safetensors")
        self.inter = load_file(root / "intermediates.safetensors")
        self.G = build_stylegan3(self.init_kwargs, self.weights)
        n = self.cases["z"].shape[0]
        self.c = self.cases.get("c", torch.zeros(n, 0))


@pytest.fixture(scope="module", params=NETS)
def net(request: pytest.FixtureRequest) -> _Net:
    return _Net(request.param)


def _assert_close_img(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert ours.dtype == torch.float32
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert scale > 0.05, f"{what}: reference image is suspiciously flat"
    assert err < IMG_TOL, f"{what}: max abs error {err:.3g}"
    assert err / scale < IMG_REL_TOL, f"{what}: relative error {err / scale:.3g}"


# ------------------------------------------------------------------ schedule recomputed from kwargs


def _same(a: object, b: object) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize("name", NETS)
def test_schedule_recomputed_from_init_kwargs_matches_config(name: str) -> None:
    config = json.loads((FIXTURES / name / "config.json").read_text())
    cfg = resolve_stylegan3_config(config["G_ema"]["init_kwargs"])
    syn = config["synthesis"]
    assert cfg.num_ws == syn["num_ws"] == config["G_ema"]["num_ws"]
    assert cfg.output_scale == syn["output_scale"]
    assert cfg.mapping_layers == config["mapping"]["num_layers"]
    assert list(cfg.layer_names) == syn["layer_names"]
    ref_in = syn["input"]
    assert cfg.input.channels == ref_in["channels"]
    assert _same(cfg.input.size, ref_in["size"])
    assert _same(cfg.input.sampling_rate, ref_in["sampling_rate"])
    assert _same(cfg.input.bandwidth, ref_in["bandwidth"])
    training_only = {"use_fp16", "magnitude_ema_beta"}
    assert list(syn["layers"]) == list(cfg.layer_names)
    for spec in cfg.layers:
        ours = asdict(spec)
        ref_name = ours.pop("name")
        ref = syn["layers"][ref_name]
        assert set(ref) - training_only == set(ours), f"{ref_name}: compared keys differ"
        for key, value in ours.items():
            assert _same(value, ref[key]), f"{ref_name}.{key}: ours {value!r}, config {ref[key]!r}"


@pytest.mark.parametrize("name", NETS)
def test_state_dict_layout_matches_config(name: str) -> None:
    config = json.loads((FIXTURES / name / "config.json").read_text())
    model = StyleGAN3Generator(resolve_stylegan3_config(config["G_ema"]["init_kwargs"]))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == config["state_dict_shapes"]


def test_default_kwargs_schedule_is_consistent() -> None:
    """A full-size default config (1024 px, 14 layers): sizes chain and the padding formula closes."""
    cfg = resolve_stylegan3_config(
        {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024, "img_channels": 3}
    )
    assert cfg.num_ws == 16 and len(cfg.layers) == 15 and cfg.mapping_layers == 2
    assert cfg.input.size == cfg.layers[0].in_size
    for prev, spec in zip(cfg.layers, cfg.layers[1:], strict=False):
        assert spec.in_size == prev.out_size and spec.in_channels == prev.out_channels
    for spec in cfg.layers:
        lo, hi = spec.padding[:2]
        upsampled = (spec.in_size[0] + spec.conv_kernel - 1) * spec.up_factor + lo + hi - spec.up_taps + 1
        assert (upsampled - spec.down_taps) // spec.down_factor + 1 == spec.out_size[0], spec.name
    assert cfg.layers[-1].is_torgb and cfg.layers[-1].out_size == (1024, 1024)
    assert cfg.layers[-1].up_taps == cfg.layers[-1].down_taps == 1
    assert not any(spec.down_radial for spec in cfg.layers)  # use_radial_filters defaults to False


# ------------------------------------------------------------------ fixtures reproduced


def test_attributes(net: _Net) -> None:
    G = net.G
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_ws"):
        assert getattr(G, key) == net.config["G_ema"][key], key
    assert not G.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in G.parameters())


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [
        ("ws_psi1", {}),
        ("ws_psi0.5", {"truncation_psi": 0.5}),
        ("ws_psi0.5_cutoff2", {"truncation_psi": 0.5, "truncation_cutoff": 2}),
    ],
)
def test_mapping_matches_fixture(net: _Net, key: str, kwargs: dict) -> None:
    ws = net.G.mapping(net.cases["z"], net.c, **kwargs)
    ref = net.cases[key]
    assert ws.shape == ref.shape
    err = (ws - ref).abs().max().item()
    assert err < WS_TOL, f"{net.name} {key}: max abs error {err:.3g}"


def test_mapping_intermediates(net: _Net) -> None:
    """fc outputs before broadcasting/truncation equal the fixture's."""
    ws = net.G.mapping(net.cases["z"], net.c)
    last = f"mapping.fc{net.G.mapping.num_layers - 1}"
    assert (ws[:, 0] - net.inter[last]).abs().max().item() < WS_TOL


def test_synthesis_matches_fixture(net: _Net) -> None:
    with torch.no_grad():
        img_const = net.G.synthesis(net.cases["ws_psi1"], noise_mode="const")
        img_none = net.G.synthesis(net.cases["ws_psi1"], noise_mode="none")
        img_half = net.G.synthesis(net.cases["ws_psi0.5"], noise_mode="const")
    _assert_close_img(img_const, net.cases["img_const_psi1"], f"{net.name} img_const_psi1")
    _assert_close_img(img_none, net.cases["img_none_psi1"], f"{net.name} img_none_psi1")
    _assert_close_img(img_half, net.cases["img_const_psi0.5"], f"{net.name} img_const_psi0.5")
    assert torch.equal(img_const, img_none)  # StyleGAN3 has no noise inputs


def test_full_forward_matches_fixture(net: _Net) -> None:
    with torch.no_grad():
        img = net.G(net.cases["z"], net.c, truncation_psi=0.5, noise_mode="const")
    _assert_close_img(img, net.cases["img_G_forward_psi0.5_const"], f"{net.name} G forward psi0.5")


def test_synthesis_intermediates(net: _Net) -> None:
    """Per-layer channel means (and full tensors where stored) for sample 0, to locate a divergence."""
    syn = net.G.synthesis
    outputs: dict[str, torch.Tensor] = {}
    modules = {"input": syn.input, **{name: getattr(syn, name) for name in syn.layer_names}}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
        for name, m in modules.items()
    ]
    try:
        with torch.no_grad():
            syn(net.cases["ws_psi1"][:1])
    finally:
        for h in hooks:
            h.remove()
    for name in modules:
        chanmean = outputs[name].mean(dim=(2, 3))
        ref = net.inter[f"synthesis.{name}.chanmean"]
        assert (chanmean - ref).abs().max().item() < 1e-5, f"{net.name} {name} chanmean"
        full = net.inter.get(f"synthesis.{name}")
        if full is not None:
            assert (outputs[name] - full).abs().max().item() < 1e-4, f"{net.name} {name}"


def test_float64_weights_are_loaded_as_float32() -> None:
    config = json.loads((FIXTURES / "sg3_t" / "config.json").read_text())
    weights = load_file(FIXTURES / "sg3_t" / "weights.safetensors")
    G = build_stylegan3(config["G_ema"]["init_kwargs"], {k: v.double() for k, v in weights.items()})
    for key, value in G.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, weights[key]), key


# ------------------------------------------------------------------ another config, random weights


def test_other_config_runs_end_to_end() -> None:
    """64 px, 6 layers, radial filters, 1x1 convs, conditional: shapes close and outputs are finite."""
    kwargs = {
        "z_dim": 8,
        "c_dim": 2,
        "w_dim": 16,
        "img_resolution": 64,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 3},
        "channel_base": 256,
        "channel_max": 16,
        "num_layers": 6,
        "conv_kernel": 1,
        "use_radial_filters": True,
        "num_fp16_res": 0,
    }
    cfg = resolve_stylegan3_config(kwargs)
    gen = torch.Generator().manual_seed(0)
    shapes = {k: v.shape for k, v in StyleGAN3Generator(cfg).state_dict().items()}
    state = {k: torch.randn(s, generator=gen) * 0.3 for k, s in shapes.items()}
    for key in state:
        if key.endswith("magnitude_ema"):
            state[key] = torch.tensor(1.0)
        if key.endswith("_filter"):
            state[key] = state[key].abs() / state[key].abs().sum()
    G = build_stylegan3(kwargs, state)
    assert G.num_ws == 8 and any(spec.down_radial for spec in cfg.layers)
    z = torch.randn(2, 8, generator=gen)
    c = torch.eye(2)
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=0.7)
        img = G.synthesis(ws)
    assert ws.shape == (2, 8, 16)
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()
    assert img[0].sub(img[1]).abs().max() > 0  # the two latents give different images


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def t_files() -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((FIXTURES / "sg3_t" / "config.json").read_text())
    return config["G_ema"]["init_kwargs"], load_file(FIXTURES / "sg3_t" / "weights.safetensors")


def test_missing_key_is_named(t_files: tuple) -> None:
    kwargs, weights = t_files
    broken = {k: v for k, v in weights.items() if k != "synthesis.L3_36_32.down_filter"}
    with pytest.raises(GeneratorError, match=r"missing keys: synthesis\.L3_36_32\.down_filter"):
        build_stylegan3(kwargs, broken)


def test_unexpected_key_is_named(t_files: tuple) -> None:
    kwargs, weights = t_files
    broken = {**weights, "synthesis.L14_32_3.up_filter": torch.ones(12)}
    with pytest.raises(GeneratorError, match=r"unexpected keys: synthesis\.L14_32_3\.up_filter"):
        build_stylegan3(kwargs, broken)


def test_misshapen_key_is_named(t_files: tuple) -> None:
    kwargs, weights = t_files
    broken = {**weights, "mapping.fc1.weight": torch.zeros(32, 31)}
    with pytest.raises(
        GeneratorError, match=r"misshapen.*mapping\.fc1\.weight \(expected \[32, 32\], got \[32, 31\]\)"
    ):
        build_stylegan3(kwargs, broken)


def test_weights_of_another_net_are_refused(t_files: tuple) -> None:
    _, weights = t_files
    config_r = json.loads((FIXTURES / "sg3_r" / "config.json").read_text())
    with pytest.raises(GeneratorError, match=r"missing keys: .*mapping\.embed\.bias"):
        build_stylegan3(config_r["G_ema"]["init_kwargs"], weights)


def test_bad_tensor_values_are_refused(t_files: tuple) -> None:
    kwargs, weights = t_files
    with pytest.raises(GeneratorError, match=r"NaN/inf.*synthesis\.input\.phases"):
        build_stylegan3(kwargs, {**weights, "synthesis.input.phases": torch.full((32,), math.nan)})
    with pytest.raises(GeneratorError, match=r"magnitude_ema must be positive.*L2_36_32"):
        build_stylegan3(kwargs, {**weights, "synthesis.L2_36_32.magnitude_ema": torch.tensor(0.0)})
    with pytest.raises(GeneratorError, match=r"not tensors: mapping\.w_avg"):
        build_stylegan3(kwargs, {**weights, "mapping.w_avg": [0.0] * 32})
    with pytest.raises(GeneratorError, match=r"non-float.*mapping\.w_avg"):
        build_stylegan3(kwargs, {**weights, "mapping.w_avg": torch.zeros(32, dtype=torch.int64)})


def test_bad_kwargs_are_refused(t_files: tuple) -> None:
    kwargs, weights = t_files
    with pytest.raises(GeneratorError, match=r"unsupported StyleGAN3 init kwargs: fancy_option"):
        build_stylegan3({**kwargs, "fancy_option": 1}, weights)
    with pytest.raises(GeneratorError, match=r"unsupported StyleGAN3 mapping_kwargs: embed_features"):
        build_stylegan3({**kwargs, "mapping_kwargs": {"embed_features": 4}}, weights)
    with pytest.raises(GeneratorError, match=r"lack required keys: img_resolution"):
        build_stylegan3({k: v for k, v in kwargs.items() if k != "img_resolution"}, weights)
    with pytest.raises(GeneratorError, match=r"'conv_kernel' must be an integer"):
        build_stylegan3({**kwargs, "conv_kernel": "3"}, weights)
    # A kwarg that changes the layer schedule no longer fits the weights.
    with pytest.raises(GeneratorError, match=r"do not fit the config"):
        build_stylegan3({**kwargs, "conv_kernel": 1}, weights)


def test_bad_call_arguments(net: _Net) -> None:
    G = net.G
    with pytest.raises(ValueError, match=r"expected z of shape"):
        G.mapping(torch.zeros(2, G.z_dim + 1), net.c[:2])
    with pytest.raises(ValueError, match=r"expected ws of shape"):
        G.synthesis(torch.zeros(1, G.num_ws - 1, G.w_dim))
    with pytest.raises(ValueError, match=r"noise_mode must be one of"):
        G.synthesis(torch.zeros(1, G.num_ws, G.w_dim), noise_mode="fixed")
    with pytest.raises(ValueError, match=r"truncation_cutoff"):
        G.mapping(net.cases["z"], net.c, truncation_psi=0.5, truncation_cutoff=-1)
    if G.c_dim > 0:
        with pytest.raises(ValueError, match=r"conditional"):
            G.mapping(net.cases["z"], None)
        with pytest.raises(ValueError, match=r"expected c of shape"):
            G.mapping(net.cases["z"], torch.zeros(4, G.c_dim + 1))
    else:
        with pytest.raises(ValueError, match=r"unconditional"):
            G.mapping(net.cases["z"], torch.zeros(4, 3))
