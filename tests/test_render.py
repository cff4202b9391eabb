"""Grids, strips, walks (GIF/MP4) and edit renders."""

import numpy as np
import pytest
import torch
from PIL import Image

from sfvq.images import labelled_grid
from sfvq.render import (
    FLAG_COLOUR,
    GifWriter,
    Mp4Writer,
    edit_grid,
    edit_images,
    iter_renders,
    panoptic_map,
    render_vectors,
    strip,
    walk_points,
    write_gif,
    write_mp4,
)
from sfvq.spaces import LatentSpace


@pytest.fixture(scope="module")
def sg2_space(shared_dir):
    from sfvq.generators.stylegan_pkl import stylegan_from_fixture_dir

    G = stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan/sg2ada_uncond")
    return LatentSpace(G, "w", truncation_psi=0.7)


def _tiles(n, h=8, w=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 200, (n, h, w, 3), dtype=np.uint8)  # no pure red in the tiles


def _red_pixels(img: Image.Image) -> int:
    a = np.asarray(img)
    return int((np.abs(a.astype(int) - np.array(FLAG_COLOUR)).sum(2) == 0).sum())


def test_panoptic_map_and_strip_layout_and_flags():
    tiles = _tiles(10)
    plain = panoptic_map(tiles)
    assert _red_pixels(plain) == 0
    flagged = panoptic_map(tiles, flagged=[3, 7])
    assert flagged.size == plain.size
    assert _red_pixels(flagged) > 2 * (4 * 8)  # two frames around 8x8 tiles, plus red labels
    one = panoptic_map(tiles, flagged=[3])
    assert 0 < _red_pixels(one) < _red_pixels(flagged)
    # Grid: ceil(sqrt(10)) = 4 columns, 3 rows; strip: one row of 10.
    s = strip(tiles)
    assert s.size[0] > 2 * plain.size[0] and s.size[1] < plain.size[1]


def test_corner_grid_rejects_bad_input():
    tiles = _tiles(3)
    with pytest.raises(ValueError, match="labels"):
        labelled_grid(tiles, ["a"])
    with pytest.raises(ValueError, match="outside 0..2"):
        labelled_grid(tiles, ["a", "b", "c"], flagged=[3])
    with pytest.raises(ValueError, match="uint8"):
        labelled_grid(tiles.astype(np.float32), ["a", "b", "c"])


def test_walk_points_are_evenly_spaced_along_the_curve():
    C = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    P = walk_points(C, 7)  # t = 0, 1/3, ..., 2
    torch.testing.assert_close(P[0], C[0])
    torch.testing.assert_close(P[-1], C[-1])
    torch.testing.assert_close(P[3], C[1])
    torch.testing.assert_close(P[1], torch.tensor([1 / 3, 0.0]))
    with pytest.raises(ValueError, match="at least 2"):
        walk_points(C, 1)


def test_gif_and_mp4_hold_every_frame(tmp_path):
    import imageio_ffmpeg

    frames = np.stack([np.full((21, 30, 3), 10 * i, np.uint8) for i in range(12)])  # an odd height
    gif = write_gif(tmp_path / "w.gif", frames, fps=10)
    with Image.open(gif) as im:
        assert im.n_frames == 12 and im.info["duration"] == 100 and im.info["loop"] == 0
        im.seek(5)
        assert np.asarray(im.convert("RGB"))[0, 0, 0] == 50
    mp4 = write_mp4(tmp_path / "w.mp4", frames, fps=10, min_size=64)
    reader = imageio_ffmpeg.read_frames(str(mp4))
    meta = next(reader)
    assert meta["size"] == (90, 64)  # enlarged 3x to 63 x 90, height padded to even for yuv420p
    got = [np.frombuffer(f, np.uint8).reshape(64, 90, 3) for f in reader]
    assert len(got) == 12
    assert abs(int(got[5].mean()) - 50) <= 3  # lossy, but the frame order and content survive
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_edit_images_sigma_zero_is_the_unedited_render(sg2_space):
    sp = sg2_space
    full = sp.encode_seeds([0, 5])  # (2, 8, 32)
    d = torch.randn(32, generator=torch.Generator().manual_seed(0))
    d = d / d.norm()
    tiles = edit_images(sp, full, d, [-2.0, 0.0, 2.0])
    assert tiles.shape == (6, 32, 32, 3)
    from sfvq.generators.base import to_uint8

    ref = to_uint8(sp.render_full(full))  # (2, 32, 32, 3)
    np.testing.assert_array_equal(tiles[1], ref[0])  # seed 0, sigma 0
    np.testing.assert_array_equal(tiles[4], ref[1])  # seed 5, sigma 0
    assert np.abs(tiles[0].astype(int) - ref[0]).max() > 0
    grid = edit_grid(tiles, [0, 5], [-2.0, 0.0, 2.0])
    assert grid.size[0] > grid.size[1]  # 3 columns, 2 rows
    with pytest.raises(ValueError, match="6 images|seeds"):
        edit_grid(tiles[:5], [0, 5], [-2.0, 0.0, 2.0])


def test_render_vectors_matches_the_space(sg2_space):
    sp = sg2_space
    V = sp.sample(5, seed=1, progress=False)
    images, tiles = render_vectors(sp, V, batch_size=2, progress=False)
    torch.testing.assert_close(images, sp.render(V))
    assert tiles.shape == (5, 32, 32, 3) and tiles.dtype == np.uint8


# ---------------------------------------------------------------------------------------------- render_edits
def _unit(seed: int, dim: int = 32) -> torch.Tensor:
    d = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
    return d / d.norm()


def test_render_edits_axes_and_per_direction_settings(sg2_space):
    sp = sg2_space
    full = sp.encode_seeds([0, 5, 9])  # (3, 8, 32)
    dirs = torch.stack([_unit(0), _unit(1)])  # (2, 32)
    sigmas = [[-2.0, 0.0, 3.0], [1.0, 0.0, -1.5]]  # one row per direction
    layers = [(2, 5), None]
    images = sp.render_edits(full, dirs, sigmas, layers, batch_size=2)
    assert images.shape == (3, 2, 3, 3, 32, 32)  # (seeds, directions, sigmas, C, H, W)
    for m in range(2):
        for t in range(3):
            ref = sp.render_full(sp.edit(full, dirs[m], sigmas[m][t], layers[m]))  # (3, C, H, W)
            torch.testing.assert_close(images[:, m, t], ref)
    plain = sp.render_full(full)
    torch.testing.assert_close(images[:, 0, 1], plain)  # sigma 0 renders the unedited seeds
    assert (images[:, 0, 0] - plain).abs().max() > 0.01
    # one shared sigma list and one shared layer range apply to every direction
    shared = sp.render_edits(full, [dirs[0], dirs[1]], [0.0, 2.0], (0, 4))
    assert shared.shape == (3, 2, 2, 3, 32, 32)
    torch.testing.assert_close(shared[:, 1, 1], sp.render_full(sp.edit(full, dirs[1], 2.0, (0, 4))))


def test_render_edits_keeps_each_seeds_noise_and_the_global_rng(sg2_space):
    """noise_mode random: every column is drawn from the same state, so sigma 0 gives the same image in
    every column; the caller's random stream is neither used nor moved."""
    sp = LatentSpace(sg2_space.G, "w", noise_mode="random")
    full = sp.encode_seeds([1, 2])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    images = sp.render_edits(full, [_unit(2), _unit(3)], [0.0, 0.0], batch_size=1)  # (2, 2, 2, C, H, W)
    assert torch.equal(torch.get_rng_state(), state)
    for m in range(2):
        for t in range(2):
            assert torch.equal(images[:, m, t], images[:, 0, 0])
    assert not torch.equal(images[0, 0, 0], images[1, 0, 0])  # seeds differ
    again = sp.render_edits(full, [_unit(2)], [0.0], batch_size=1)
    assert torch.equal(again[:, 0, 0], images[:, 0, 0])  # the same grid on every call
    unseeded = sp.render_full(full)  # random noise from the global stream: not what the grid shows
    assert not torch.equal(unseeded, images[:, 0, 0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"directions": []}, "no directions"),
        ({"sigmas": [[0.0, 1.0]]}, r"sigmas must be \(T,\) or \(2, T\)"),
        ({"sigmas": []}, "T >= 1"),
        ({"layers": [(0, 2)]}, "1 layer ranges for 2 directions"),
        ({"layers": (3, 12)}, "outside this space's layers 0-7"),
    ],
)
def test_render_edits_refuses_bad_requests(sg2_space, kwargs, message):
    args = {"directions": [_unit(0), _unit(1)], "sigmas": [0.0, 1.0], "layers": None, **kwargs}
    full = sg2_space.encode_seeds([0])
    with pytest.raises(ValueError, match=message):
        sg2_space.render_edits(full, args["directions"], args["sigmas"], args["layers"])
    with pytest.raises(ValueError, match="full tensors"):
        sg2_space.render_edits(full[0], [_unit(0)], [0.0])


# ---------------------------------------------------------------------------------------------- previews
def test_render_vectors_and_edit_images_at_a_preview_resolution(sg2_space):
    sp = sg2_space
    V = torch.randn(3, sp.dim, generator=torch.Generator().manual_seed(1))
    images, tiles = render_vectors(sp, V, batch_size=2, progress=False, resolution=16)
    assert images.shape == (3, 3, 16, 16) and tiles.shape == (3, 16, 16, 3)
    torch.testing.assert_close(images, sp.G.synthesis_at(sp.to_full(V), 16))
    full = sp.encode_seeds([0])
    edits = edit_images(sp, full, torch.ones(sp.dim), [-1.0, 0.0], resolution=8)
    assert edits.shape == (2, 8, 8, 3)


# ---------------------------------------------------------------------------------------------- streaming
def test_iter_renders_renders_one_batch_at_a_time(sg2_space, monkeypatch):
    sp = sg2_space
    calls = []
    real = LatentSpace.render_full

    def counting(self, full, batch_size=32, resolution=None):
        calls.append(full.shape[0])
        return real(self, full, batch_size, resolution)

    monkeypatch.setattr(LatentSpace, "render_full", counting)
    V = torch.randn(5, sp.dim, generator=torch.Generator().manual_seed(2))
    batches = iter_renders(sp, V, batch_size=2, progress=False, resolution=16)
    assert calls == []  # nothing rendered before the first batch is asked for
    first = next(batches)
    assert first.shape == (2, 16, 16, 3) and calls == [2]
    rest = list(batches)
    assert [b.shape[0] for b in rest] == [2, 1] and calls == [2, 2, 1]
    _, whole = render_vectors(sp, V, batch_size=5, progress=False, resolution=16)
    np.testing.assert_array_equal(np.concatenate([first, *rest]), whole)


def test_gif_writer_keeps_only_small_frames(tmp_path):
    frames = np.stack([np.full((64, 48, 3), 4 * i, np.uint8) for i in range(40)])
    with GifWriter(tmp_path / "w.gif", fps=20, total=40, max_size=16, max_pixels=16 * 12 * 20) as gif:
        for start in range(0, 40, 7):
            gif.add(frames[start : start + 7])
            assert all(im.size == (12, 16) and im.mode == "P" for im in gif.frames)  # shrunk as they come
        assert gif.step == 2 and len(gif.frames) == 20  # over max_pixels: every 2nd frame
    with Image.open(tmp_path / "w.gif") as im:
        assert im.n_frames == 20 and im.size == (12, 16) and im.info["duration"] == 100
        im.seek(3)
        assert abs(int(np.asarray(im.convert("RGB")).mean()) - 4 * 6) <= 2  # frame 6 of the input
    with pytest.raises(ValueError, match="no frames"), GifWriter(tmp_path / "empty.gif"):
        pass
    assert not (tmp_path / "empty.gif").exists()


def test_mp4_writer_streams_batches_and_leaves_nothing_on_error(tmp_path):
    import imageio_ffmpeg

    frames = np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(9)])
    with Mp4Writer(tmp_path / "w.mp4", fps=12, min_size=32) as mp4:
        for start in range(0, 9, 4):
            mp4.add(frames[start : start + 4])
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "w.mp4"))
    assert next(reader)["size"] == (32, 32)
    assert sum(1 for _ in reader) == 9
    with pytest.raises(RuntimeError, match="boom"), Mp4Writer(tmp_path / "bad.mp4") as mp4:
        mp4.add(frames[:2])
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="after frames of"), Mp4Writer(tmp_path / "mixed.mp4") as mp4:
        mp4.add(frames[:2])
        mp4.add(np.zeros((1, 16, 16, 3), np.uint8))
    assert not (tmp_path / "bad.mp4").exists() and not (tmp_path / "mixed.mp4").exists()
    assert not list(tmp_path.glob(".*tmp"))


# ---------------------------------------------------------------------------------------- several processes
def test_batch_ranges_are_those_of_one_process_unless_spread(monkeypatch):
    from sfvq import dist
    from sfvq.render import batch_ranges

    assert batch_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert batch_ranges(7, 3, spread=True) == [(0, 3), (3, 6), (6, 7)]  # one process: unchanged
    assert batch_ranges(0, 3) == []
    monkeypatch.setattr(dist, "world_size", lambda: 4)
    assert batch_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]  # a given batch size is kept
    assert batch_ranges(7, 64, spread=True) == [(0, 2), (2, 4), (4, 6), (6, 7)]  # every process gets one
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batch_ranges(3, 0)


def _as_rank(monkeypatch, rank: int, world: int) -> None:
    """Make sfvq.dist answer as process ``rank`` of ``world`` (no process group: the collectives that
    render_shared makes are a barrier and an error check, done here by the test's order)."""
    from sfvq import dist

    monkeypatch.setattr(dist, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "rank", lambda: rank)
    monkeypatch.setattr(dist, "world_size", lambda: world)

    def raise_together(error: BaseException | None) -> None:
        if error is not None:
            raise error

    monkeypatch.setattr(dist, "raise_together", raise_together)


def test_render_shared_splits_the_batches_and_rank_0_reads_them_back(sg2_space, tmp_path, monkeypatch):
    from sfvq.render import iter_shared_renders, render_shared

    sp = sg2_space
    V = torch.randn(7, sp.dim, generator=torch.Generator().manual_seed(3))
    want_images, want_tiles = render_vectors(sp, V, batch_size=3, progress=False, resolution=16)
    with monkeypatch.context() as m:  # process 1 of 2: batch 1 of (0-3, 3-6, 6-7), nothing returned
        _as_rank(m, 1, 2)
        assert render_shared(sp, V, tmp_path, "c", batch_size=3, progress=False, resolution=16) is None
        assert (
            list(iter_shared_renders(sp, V, tmp_path, "w", batch_size=3, progress=False, resolution=16)) == []
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c-part00001.npy", ".w-part00001.npy"]
    with monkeypatch.context() as m:  # process 0: batches 0 and 2, then every batch in order
        _as_rank(m, 0, 2)
        images, tiles = render_shared(sp, V, tmp_path, "c", batch_size=3, progress=False, resolution=16)
        walk = list(iter_shared_renders(sp, V, tmp_path, "w", batch_size=3, progress=False, resolution=16))
    assert torch.equal(images, want_images) and np.array_equal(tiles, want_tiles)
    assert [len(b) for b in walk] == [3, 3, 1] and np.array_equal(np.concatenate(walk), want_tiles)
    assert not list(tmp_path.iterdir())  # rank 0 removed the parts it read
