"""Projection: the differentiable renders, recovering latents the generator drew, NVIDIA's npz layout, and
the clear errors for bad images and latent files."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sfvq.generators.registry import load_generator
from sfvq.project import (
    DifferentiableRender,
    ImageInputError,
    LatentFileError,
    ProjectionSettings,
    Projector,
    fit_square,
    image_tensor,
    is_face_generator,
    load_projected_w,
    ms_ssim,
    noise_regulariser,
    prepare_target,
    psnr,
    read_image,
    read_latent,
    save_projected_w,
    write_projection,
)
from sfvq.spaces import LatentSpace

sys.path.insert(0, str(Path(__file__).resolve().parent / "generators"))

from pkl_writer import write_stylegan_pkl  # noqa: E402

AVATARS = "builtin:avatars-sg2"


@pytest.fixture(scope="module")
def avatars_w() -> LatentSpace:
    return LatentSpace(load_generator(AVATARS), "w")


@pytest.fixture(scope="module")
def sg2(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The sg2ada_uncond fixture (32x32, 8 style layers, 32-D W, constant noise inputs)."""
    pkl = write_stylegan_pkl(
        shared_dir / "fixtures/stylegan/sg2ada_uncond", tmp_path_factory.mktemp("p") / "g.pkl"
    )
    return load_generator(str(pkl))


@pytest.fixture(scope="module")
def dcgan_features() -> tuple[LatentSpace, np.ndarray]:
    space = LatentSpace(load_generator("builtin:faces-dcgan"), "features")
    X = space.sample(300, seed=0, progress=False, pca_max=16)  # (300, k): fits the PCA
    return space, X


# ---------------------------------------------------------------------------------------------- renders
def test_the_differentiable_render_matches_the_space(
    avatars_w, sg2, dcgan_features, shared_dir, tmp_path
) -> None:
    cases = [avatars_w, LatentSpace(sg2, "w"), LatentSpace(sg2, "z"), dcgan_features[0]]
    cases.append(LatentSpace(load_generator("builtin:faces-dcgan"), "z", truncation_psi=0.7))
    sg3 = write_stylegan_pkl(shared_dir / "fixtures/stylegan/sg3_t", tmp_path / "sg3.pkl")
    cases.append(LatentSpace(load_generator(str(sg3)), "w"))
    for space in cases:
        render = DifferentiableRender(space)
        full = space.encode_seeds([3, 4])  # (2, L, F)
        if space.kind == "features":
            full = space.to_full(space.reduce(full[:, 0]))  # a point the space can express
        want = space.render_full(full)
        got = render(full.requires_grad_(True))
        assert got.requires_grad, space.G.name
        assert torch.allclose(got, want, atol=1e-4), (space.G.name, space.kind)
    # StyleGAN2 noise inputs: the constant maps given explicitly render the constant-noise image
    render = DifferentiableRender(cases[1])
    assert render.noise_shapes and all(r == c for r, c in render.noise_shapes)
    full = cases[1].encode_seeds([5])
    explicit = render(full, render.constant_noise(1))
    assert torch.allclose(explicit, cases[1].render_full(full), atol=1e-4)
    zero = render(full, [torch.zeros_like(m) for m in render.constant_noise(1)])
    assert not torch.allclose(zero, explicit, atol=1e-4)  # the noise is really used
    with pytest.raises(ValueError, match="got 1 noise maps for"):
        render(full, render.constant_noise(1)[:1])
    assert not DifferentiableRender(cases[3]).noise_shapes  # a DCGAN has none


def test_generators_without_a_gradient_path_are_refused() -> None:
    from sfvq.generators.base import GeneratorBase, GeneratorError

    class Toy(GeneratorBase):  # the protocol's defaults: no gradient path
        name, spaces, layers = "toy", ("z",), ()
        z_dim, num_ws, c_dim = 4, 1, 0

    with pytest.raises(GeneratorError, match="projection needs the forward pass of toy .*no gradient path"):
        DifferentiableRender(LatentSpace(Toy(), "z"))  # type: ignore[arg-type]
    with pytest.raises(GeneratorError, match="projection needs the forward pass of toy"):
        Projector(LatentSpace(Toy(), "z"), reference=np.zeros((4, 4), np.float32))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- recovery
def test_projection_recovers_an_image_the_generator_drew(avatars_w) -> None:
    target = avatars_w.render_full(avatars_w.encode_seeds([1234]))  # (1, 3, 32, 32)
    settings = ProjectionSettings(steps=150, lr=0.3, latent_noise=0.0, starts=32, reference_samples=2000)
    result = Projector(avatars_w, settings=settings).project(target)
    assert result.psnr()[0] > 28 and result.ssim()[0] > 0.95
    assert result.history["loss"][-1] < 0.25 * result.history["loss"][0]
    # the result renders exactly through the space (what maps and edits show)
    assert torch.allclose(avatars_w.render_full(result.full), result.images, atol=1e-5)
    assert result.full.shape == (1, 8, 128) and result.vectors.shape == (1, 128)
    assert torch.allclose(result.full[:, 3], result.vectors)  # W: every layer the same w
    # a start from the sampled latents was chosen by the loss (the mean is -1)
    assert -1 <= result.starts[0] < 32


def test_w_plus_and_a_batch_of_targets(avatars_w) -> None:
    targets = avatars_w.render_full(avatars_w.encode_seeds([7, 8]))
    settings = ProjectionSettings(steps=40, starts=4, reference_samples=500)
    result = Projector(avatars_w, plus=True, settings=settings).project(targets)
    assert result.full.shape == (2, 8, 128) and result.space_name == "w+"
    assert not torch.allclose(result.full[:, 0], result.full[:, 7])  # the layers move apart
    assert torch.allclose(result.vectors, result.full.mean(1))
    assert result.psnr().shape == (2,)
    with pytest.raises(ValueError, match="W\\+ projection needs a W space"):
        Projector(LatentSpace(avatars_w.G, "z"), plus=True, settings=settings)


def test_noise_maps_are_fitted_and_regularised(sg2) -> None:
    space = LatentSpace(sg2, "w")
    target = space.render_full(space.encode_seeds([11]))
    settings = ProjectionSettings(steps=30, starts=4, reference_samples=200)
    result = Projector(space, settings=settings).project(target)
    assert result.images_noise is not None and len(result.noise) == len(
        DifferentiableRender(space).noise_maps
    )
    for m in result.noise:  # renormalised after every step
        assert float(m.mean()) == pytest.approx(0.0, abs=1e-4) and float(m.std()) == pytest.approx(
            1.0, abs=0.05
        )
    assert "psnr_with_noise" in result.summary()
    const = Projector(
        space, settings=ProjectionSettings(steps=5, starts=0, optimise_noise=False, reference_samples=200)
    )
    assert const.project(target).images_noise is None


def test_feature_space_projection_stays_inside_the_space(dcgan_features) -> None:
    space, X = dcgan_features
    target = space.render(torch.from_numpy(X[5:6]))
    result = Projector(space, settings=ProjectionSettings(steps=60, starts=8), reference=X).project(target)
    assert result.vectors.shape == (1, space.dim)
    assert torch.allclose(space.render(result.vectors), result.images, atol=1e-5)
    assert result.psnr()[0] > 22


# ---------------------------------------------------------------------------------------------- losses
def test_ms_ssim_and_the_noise_regulariser() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    y = x.clone().requires_grad_(True)
    score = ms_ssim(x, (y + 0.1 * torch.rand(2, 3, 32, 32, generator=g)).clamp(0, 1))
    assert bool((score < 1).all())
    score.sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0
    white = torch.randn(1, 1, 32, 32, generator=g)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8, generator=g), size=32, mode="bilinear")
    assert float(noise_regulariser([white])) < 0.005 < 0.5 < float(noise_regulariser([smooth / smooth.std()]))


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="steps=0"):
        ProjectionSettings(steps=0)
    with pytest.raises(ValueError, match="lr=nan"):
        ProjectionSettings(lr=float("nan"))
    with pytest.raises(ValueError, match="all three weights are 0"):
        ProjectionSettings(pixel_weight=0, edge_weight=0, ssim_weight=0)
    s = ProjectionSettings(steps=100, lr_rampup=0.1, lr_rampdown=0.2)
    assert s.lr_at(0.0) == 0.0 and s.lr_at(0.5) == 1.0 and s.lr_at(1.0) == pytest.approx(0.0)
    assert s.prior_for("w") == 0.0 and s.prior_for("features") == 0.01


# ---------------------------------------------------------------------------------------------- files
def test_projected_w_round_trip_in_nvidias_layout(tmp_path: Path) -> None:
    ws = np.random.default_rng(0).normal(size=(1, 8, 128)).astype(np.float32)
    path = save_projected_w(tmp_path / "projected_w.npz", torch.from_numpy(ws))
    with np.load(path) as data:  # what NVIDIA's tools read
        assert data.files == ["w"] and data["w"].shape == (1, 8, 128) and data["w"].dtype == np.float32
        assert np.array_equal(data["w"], ws)
    assert np.array_equal(load_projected_w(path, 8, 128), ws)
    with pytest.raises(LatentFileError, match=r"needs \(N, 14, 512\)"):
        load_projected_w(path, 14, 512)
    np.savez(tmp_path / "other.npz", latent=ws)
    with pytest.raises(LatentFileError, match="has no array 'w'"):
        load_projected_w(tmp_path / "other.npz")
    np.savez(tmp_path / "flat.npz", w=ws[0])
    with pytest.raises(LatentFileError, match=r"must be \(N, num_ws, w_dim\)"):
        load_projected_w(tmp_path / "flat.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(LatentFileError, match="not a readable .npz"):
        load_projected_w(tmp_path / "junk.npz")


def test_read_latent_takes_vectors_and_ws_of_the_right_shape(
    avatars_w, dcgan_features, tmp_path: Path
) -> None:
    w = np.random.default_rng(1).normal(size=128).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    lat = read_latent(tmp_path / "w.npy", avatars_w)
    assert lat.full.shape == (1, 8, 128) and not lat.plus and np.allclose(lat.vector[0].numpy(), w)
    ws = np.random.default_rng(2).normal(size=(1, 8, 128)).astype(np.float32)
    save_projected_w(tmp_path / "p.npz", ws)
    plus = read_latent(tmp_path / "p.npz", avatars_w)
    assert plus.plus and np.allclose(plus.full.numpy(), ws) and np.allclose(plus.vector.numpy(), ws.mean(1))
    same = np.repeat(w[None, None], 8, axis=1)
    save_projected_w(tmp_path / "same.npz", same)
    assert not read_latent(tmp_path / "same.npz", avatars_w).plus  # all layers equal: a W latent
    np.save(tmp_path / "bad.npy", np.zeros((3, 128), np.float32))
    with pytest.raises(LatentFileError, match=r"shape \(3, 128\); space 'w' needs"):
        read_latent(tmp_path / "bad.npy", avatars_w)
    np.save(tmp_path / "nan.npy", np.full(128, np.nan, np.float32))
    with pytest.raises(LatentFileError, match="finite floats"):
        read_latent(tmp_path / "nan.npy", avatars_w)
    space, _ = dcgan_features
    with pytest.raises(LatentFileError, match="an NVIDIA .npz holds W latents"):
        read_latent(tmp_path / "p.npz", space)
    np.save(tmp_path / "ws.npy", ws)
    with pytest.raises(LatentFileError, match="needs"):
        read_latent(tmp_path / "ws.npy", space)  # no layers in a feature space
    (tmp_path / "w.txt").write_text("1 2 3")
    with pytest.raises(LatentFileError, match="latent files are .npy"):
        read_latent(tmp_path / "w.txt", avatars_w)
    np.savez(tmp_path / "two.npz", w=np.zeros((2, 8, 128), np.float32))
    with pytest.raises(LatentFileError, match="holds 2 latents"):
        read_latent(tmp_path / "two.npz", avatars_w)


def test_write_projection_writes_every_file(avatars_w, tmp_path: Path) -> None:
    target = avatars_w.render_full(avatars_w.encode_seeds([3]))
    result = Projector(
        avatars_w, settings=ProjectionSettings(steps=5, starts=2, reference_samples=200)
    ).project(target)
    paths = write_projection(result, tmp_path, meta={"network": AVATARS})
    names = {p.name for p in paths.values()}
    assert {
        "target.png",
        "projection.png",
        "compare.png",
        "loss.png",
        "projected.npy",
        "projected_w.npz",
    } <= names
    assert np.allclose(np.load(tmp_path / "projected.npy"), result.vectors.numpy())
    assert np.allclose(load_projected_w(tmp_path / "projected_w.npz", 8, 128), result.full.numpy())
    assert Image.open(tmp_path / "compare.png").width >= 512  # two tiles of at least 256 px


# ---------------------------------------------------------------------------------------------- images
def _png(size: tuple[int, int], mode: str = "RGB", colour: object = (10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_read_image_decodes_safely(tmp_path: Path) -> None:
    im = read_image(_png((40, 30)))
    assert im.mode == "RGB" and im.size == (40, 30)
    clear = read_image(_png((8, 8), "RGBA", (255, 0, 0, 0)))  # transparent: laid over white
    assert np.asarray(clear)[0, 0].tolist() == [255, 255, 255]
    grey = read_image(_png((8, 8), "L", 77))
    assert grey.mode == "RGB" and np.asarray(grey)[0, 0].tolist() == [77, 77, 77]
    with pytest.raises(ImageInputError, match="not an image"):
        read_image(b"%PDF-1.4 definitely not a picture", name="upload.png")
    with pytest.raises(ImageInputError, match="empty"):
        read_image(b"")
    with pytest.raises(ImageInputError, match=r"too large: 40x30 = 1,200 pixels, over the limit of 1,000"):
        read_image(_png((40, 30)), max_pixels=1000)
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        read_image(_png((64, 64), colour=(1, 2, 3))[:-20])
    ico = io.BytesIO()
    Image.new("RGB", (16, 16)).save(ico, format="ICO")
    with pytest.raises(ImageInputError, match="is a ICO image"):
        read_image(ico.getvalue())
    (tmp_path / "a.png").write_bytes(_png((5, 5)))
    assert read_image(tmp_path / "a.png").size == (5, 5)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="over the limit of 10 bytes"):
        read_image(tmp_path / "a.png", max_bytes=10)


def test_targets_are_cut_to_the_generator(avatars_w) -> None:
    wide = Image.new("RGB", (300, 100), (0, 0, 0))
    wide.paste((255, 255, 255), (100, 0, 200, 100))  # a white centre square
    square = fit_square(wide, 32)
    assert square.size == (32, 32) and np.asarray(square).min() > 250
    target = prepare_target(wide, avatars_w.G, "auto")  # a cartoon generator: no alignment
    assert target.tensor.shape == (1, 3, 32, 32) and target.alignment is None
    assert target.describe()["source_size"] == [300, 100]
    assert image_tensor(square).max() == pytest.approx(1.0)
    assert not is_face_generator(avatars_w.G)
    assert is_face_generator(load_generator("builtin:faces-dcgan"))


def test_alignment_asked_for_without_a_face_is_refused(avatars_w) -> None:
    pytest.importorskip("dlib")
    from sfvq.align import NoFaceError

    with pytest.raises(NoFaceError, match="no face found"):
        prepare_target(Image.new("RGB", (120, 120), (90, 90, 90)), avatars_w.G, "yes")
    with pytest.raises(NoFaceError, match="--align no skips it"):
        prepare_target(
            Image.new("RGB", (120, 120), (90, 90, 90)), load_generator("builtin:faces-dcgan"), "auto"
        )


def test_psnr_of_equal_and_different_images() -> None:
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[1] += 10 / 127.5  # 10 grey levels of uint8 (0 -> 127.5 -> 128, 10/127.5 -> 137.5 -> 138)
    out = psnr(b, a)
    assert out[0] == np.inf and out[1] == pytest.approx(20 * np.log10(255 / 10))


def test_the_edge_term_sees_thin_lines_a_blur_loses(avatars_w) -> None:
    """The edge term is 0 for equal images and grows far more than the pixel term when a one-pixel line
    is blurred away (why it is in the loss)."""
    target = torch.zeros(1, 3, 32, 32)
    target[..., 16, :] = 1.0  # a thin horizontal line
    blurred = target.clone()
    blurred[..., 15:18, :] = 1 / 3
    proj = Projector(avatars_w, settings=ProjectionSettings(ssim_weight=0, reference_samples=200))
    total, parts = proj.losses(target, target)
    assert float(total) == 0.0 and float(parts["edge"]) == 0.0
    total, parts = proj.losses(blurred, target)
    assert float(parts["edge"]) > 2 * float(parts["pixel"]) > 0
    assert float(total) == pytest.approx(float(parts["pixel"] + parts["edge"]), rel=1e-6)
