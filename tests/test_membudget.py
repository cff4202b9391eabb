"""The rendering memory budget: per-image estimates, the default budget, the batch it allows."""

from __future__ import annotations

import pytest
import torch

from sfvq import membudget
from sfvq.generators.stylegan2 import StyleGAN2Generator
from sfvq.generators.stylegan3 import StyleGAN3Generator, resolve_stylegan3_config
from sfvq.spaces import LatentSpace


def test_available_memory_reads_meminfo(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24000000 kB\nMemFree:         100 kB\nMemAvailable:    3000000 kB\n")
    monkeypatch.setattr(membudget, "_MEMINFO", info)
    monkeypatch.setattr(membudget, "_CGROUP_MAX", tmp_path / "absent")
    assert membudget.available_memory() == 3000000 * 1024
    assert membudget.available_memory("cpu") == 3000000 * 1024
    monkeypatch.setattr(membudget, "available_memory", lambda device=None: 10 * 2**30)
    assert membudget.default_budget() == membudget.CPU_BUDGET_CAP  # half of 10 GiB, capped
    monkeypatch.setattr(membudget, "available_memory", lambda device=None: 2**30)
    assert membudget.default_budget() == 2**29
    monkeypatch.setattr(membudget, "available_memory", lambda device=None: None)  # nothing readable
    assert membudget.default_budget() == membudget.CPU_BUDGET_CAP // 2


def test_available_memory_counts_a_cgroup_limit(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemAvailable:    3000000 kB\n")
    (tmp_path / "memory.max").write_text(f"{2 * 2**30}\n")
    (tmp_path / "memory.current").write_text(f"{2**30 + 5}\n")
    monkeypatch.setattr(membudget, "_MEMINFO", info)
    monkeypatch.setattr(membudget, "_CGROUP_MAX", tmp_path / "memory.max")
    monkeypatch.setattr(membudget, "_CGROUP_CURRENT", tmp_path / "memory.current")
    assert membudget.available_memory("cpu") == 2**30 - 5  # the container's room, under MemAvailable
    (tmp_path / "memory.max").write_text("max\n")
    assert membudget.available_memory("cpu") == 3000000 * 1024
    assert membudget.available_memory() > 0 or membudget.available_memory() is None


class _Sized:
    """A stand-in generator for the memory checks (its size comes from a patched image_bytes)."""

    name = "sized"
    img_resolution = 64
    device = torch.device("cpu")


def test_render_batch_size_checks_that_one_image_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membudget, "image_bytes", lambda G: 100)
    monkeypatch.setattr(membudget, "available_memory", lambda device=None: 10_000)
    assert membudget.render_batch_size(_Sized(), 32, 1000, check=True) == 10
    assert membudget.render_batch_size(_Sized(), 4, 1000, check=True) == 4
    assert membudget.render_batch_size(_Sized(), 32, 150, check=True) == 1
    with pytest.raises(membudget.RenderMemoryError, match="over the 0.0 GiB allowed"):
        membudget.render_batch_size(_Sized(), 32, 99, check=True)
    assert membudget.render_batch_size(_Sized(), 32, 99) == 1  # unchecked: lowered, never refused
    # Without a budget: the default one; one image over 90 % of what is available is refused up front.
    monkeypatch.setattr(membudget, "default_budget", lambda device=None: 500)
    assert membudget.render_batch_size(_Sized(), 32, check=True) == 5
    monkeypatch.setattr(membudget, "image_bytes", lambda G: 9500)
    with pytest.raises(membudget.RenderMemoryError, match="only 0.0 GiB of memory is available"):
        membudget.render_batch_size(_Sized(), 32, check=True)
    monkeypatch.setattr(membudget, "available_memory", lambda device=None: None)  # unknown: not refused
    assert membudget.render_batch_size(_Sized(), 7, check=True) == 1


def test_widest_activation_of_stylegan2_and_stylegan3() -> None:
    # channels min(1024 // r, 64): 64 at 4..16, 32 at 32; widest: 32 channels at 32x32
    g2 = StyleGAN2Generator(32, 0, 32, 32, 3, {"num_layers": 2}, {"channel_base": 1024, "channel_max": 64})
    assert membudget.widest_activation(g2) == 32 * 32 * 32
    assert membudget.image_bytes(g2) == 4 * (membudget.LIVE_ACTIVATIONS * 32 * 32 * 32 + 3 * 32 * 32)
    cfg = resolve_stylegan3_config(
        {
            "z_dim": 32,
            "c_dim": 0,
            "w_dim": 32,
            "img_resolution": 32,
            "img_channels": 3,
            "channel_base": 512,
            "channel_max": 32,
        }
    )
    want = max(
        max(s.in_channels * s.in_size[0] ** 2, s.out_channels * (s.in_size[0] + s.conv_kernel - 1) ** 2)
        for s in cfg.layers
    )
    assert membudget.widest_activation(StyleGAN3Generator(cfg)) == want


def test_widest_activation_of_wrappers_and_unknown_generators() -> None:
    class Wrapper:  # a protocol adapter holding its network as an attribute
        img_resolution, img_channels = 32, 3

        def __init__(self) -> None:
            self.network = StyleGAN2Generator(
                32, 0, 32, 32, 3, {"num_layers": 2}, {"channel_base": 1024, "channel_max": 64}
            )

    assert membudget.widest_activation(Wrapper()) == 32 * 32 * 32

    class Config:
        channels = {4: 512, 8: 512, 64: 256, 256: 64}

    class Rosinality:
        img_resolution, img_channels, config = 256, 3, Config()

    assert membudget.widest_activation(Rosinality()) == 64 * 256 * 256

    class Unknown:
        img_resolution, img_channels = 1024, 3

    # StyleGAN2's channel rule: 32 channels at 1024 px is the widest
    assert membudget.widest_activation(Unknown()) == 32 * 1024 * 1024


def test_auto_batch_size_fits_the_budget() -> None:
    class G:
        img_resolution, img_channels, device = 256, 3, torch.device("cpu")

    per = membudget.image_bytes(G())
    assert membudget.auto_batch_size(G(), budget_bytes=5 * per) == 5
    assert membudget.auto_batch_size(G(), budget_bytes=5 * per + per - 1) == 5
    assert membudget.auto_batch_size(G(), budget_bytes=per - 1) == 1  # never below one image
    assert membudget.auto_batch_size(G(), budget_bytes=50 * per, limit=8) == 8
    assert membudget.render_batch_size(G(), 3, budget_bytes=50 * per) == 3
    assert membudget.render_batch_size(G(), 64, budget_bytes=4 * per) == 4
    assert membudget.render_batch_size(G(), None, budget_bytes=4 * per) == 4
    assert membudget.auto_batch_size(G()) >= 1  # the machine's default budget
    with pytest.raises(ValueError, match="budget_bytes"):
        membudget.auto_batch_size(G(), budget_bytes=-1)
    with pytest.raises(ValueError, match="batch_size"):
        membudget.render_batch_size(G(), 0)


class _FakeG:
    """A 1024-px W-space generator that records the batch of every synthesis call."""

    name, spaces, layers = "fake", ("z", "w", "w+"), ("w",)
    z_dim = w_dim = 8
    num_ws, c_dim, img_resolution, img_channels = 4, 0, 1024, 3
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[int] = []

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        self.calls.append(ws.shape[0])
        return ws[:, :3, :1, None].expand(-1, 3, 2, 2)  # (N, 3, 2, 2)

    def synthesis_at(self, ws: torch.Tensor, resolution: int | None = None, noise_mode: str = "const"):
        return self.synthesis(ws, noise_mode)


def test_render_full_chunks_by_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    G = _FakeG()
    per = membudget.image_bytes(G)
    monkeypatch.setattr(membudget, "default_budget", lambda device=None: 2 * per + 1)
    space = LatentSpace(G, "w")
    full = torch.randn(5, 4, 8)
    images = space.render_full(full)
    assert G.calls == [2, 2, 1] and images.shape == (5, 3, 2, 2)
    G.calls.clear()
    space.render_full(full, batch_size=32)  # an explicit batch is lowered to what the budget allows
    assert G.calls == [2, 2, 1]
    G.calls.clear()
    space.render_full(full, batch_size=1)
    assert G.calls == [1] * 5
