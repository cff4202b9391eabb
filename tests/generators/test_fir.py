"""The memory-bounded FIR kernels and modulated convs against plain reference implementations."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import sfvq.generators.fir as fir
import sfvq.generators.stylegan2 as sg2
import sfvq.generators.stylegan3 as sg3
from sfvq.generators.fir import fir1d, rows_needed, separable_taps, upfirdn2d


def ref_upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int, down: int, pad: tuple, gain: float
) -> torch.Tensor:
    """Zero insertion, padding, a depthwise conv with the flipped 2-D filter, every down-th pixel."""
    n, c, h, w = x.shape
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, list(pad))
    kernel = (f2.flip([0, 1]) * gain)[None, None].expand(c, 1, *f2.shape)
    return F.conv2d(x, kernel, groups=c)[:, :, ::down, ::down]


def _filter(kind: str, taps: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(taps, generator=gen, dtype=torch.float64)
    if kind == "1d":
        return a
    if kind == "separable":
        return torch.outer(a, torch.randn(taps, generator=gen, dtype=torch.float64))
    return torch.randn(taps, taps, generator=gen, dtype=torch.float64)


@pytest.fixture(params=[10**9, 300], ids=["whole", "row-chunks"])
def chunk_bytes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(fir, "CHUNK_BYTES", request.param)
    return request.param


@pytest.mark.parametrize("kind", ["1d", "separable", "2d"])
@pytest.mark.parametrize("n", [1, 3])
def test_upfirdn2d_matches_reference(kind: str, n: int, chunk_bytes: int) -> None:
    gen = torch.Generator().manual_seed(0)
    cases = itertools.product(
        [1, 2, 4], [1, 2], [1, 4, 12], [(0, 0, 0, 0), (2, 1, 2, 1), (1, 3, -1, 2), (-2, 5, 4, -3)]
    )
    checked = 0
    for up, down, taps, pad in cases:
        x = torch.randn(n, 2, 9, 11, generator=gen, dtype=torch.float64)
        f = _filter(kind, taps, gen)
        try:
            want = ref_upfirdn2d(x, f, up, down, pad, 2.5)
        except RuntimeError:  # the filter is longer than the padded input: no output
            continue
        if want.numel() == 0:
            continue
        got = upfirdn2d(x, f, up=up, down=down, padding=pad, gain=2.5)
        assert got.shape == want.shape, (up, down, taps, pad)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        checked += 1
    assert checked > 50


def test_upfirdn2d_channels_last_and_gradients() -> None:
    gen = torch.Generator().manual_seed(1)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    x = torch.randn(3, 4, 12, 10, generator=gen, dtype=torch.float64)
    for up, down, pad in [(1, 1, (1, 1, 1, 1)), (2, 1, (2, 1, 2, 1)), (1, 2, (0, 0, 0, 0))]:
        want = ref_upfirdn2d(x, f, up, down, pad, 4.0)
        got = upfirdn2d(
            x.contiguous(memory_format=torch.channels_last), f, up=up, down=down, padding=pad, gain=4.0
        )
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        # with a gradient the out-of-place path runs; its gradient equals the reference's
        xg = x.clone().requires_grad_(True)
        y = upfirdn2d(xg, f, up=up, down=down, padding=pad, gain=4.0)
        torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
        g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        (got_grad,) = torch.autograd.grad((y * g).sum(), xg)
        xr = x.clone().requires_grad_(True)
        (want_grad,) = torch.autograd.grad((ref_upfirdn2d(xr, f, up, down, pad, 4.0) * g).sum(), xr)
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)


def test_results_do_not_depend_on_chunks_or_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit for bit: an image filtered alone, in a batch, in any row chunks, on 1 or 2 threads."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(k, k) / 64
    x = torch.randn(5, 6, 37, 29, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(fir, "CHUNK_BYTES", 10**9)
    want = upfirdn2d(x, f, padding=(1, 1, 1, 1), gain=4.0)
    want_up = upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4.0)
    threads = torch.get_num_threads()
    try:
        for chunk, n, t in itertools.product([200, 5000, 10**9], [1, 2, 5], [1, 2]):
            monkeypatch.setattr(fir, "CHUNK_BYTES", chunk)
            torch.set_num_threads(t)
            assert torch.equal(upfirdn2d(x[:n], f, padding=(1, 1, 1, 1), gain=4.0), want[:n])
            assert torch.equal(upfirdn2d(x[:n], f, up=2, padding=(2, 1, 2, 1), gain=4.0), want_up[:n])
    finally:
        torch.set_num_threads(threads)


def test_fir1d_and_rows_needed() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 23, 5, generator=gen, dtype=torch.float64)
    taps = torch.randn(6, generator=gen, dtype=torch.float64).tolist()
    for up, down, pad in [(1, 1, (2, 3)), (2, 1, (5, 4)), (1, 2, (0, 1)), (4, 1, (-3, 7))]:
        full = fir1d(x, taps, -2, up=up, down=down, pad=pad)  # along H
        for a, b in [(0, 1), (3, 9), (full.shape[2] - 4, full.shape[2])]:
            i0, i1, pad_ab = rows_needed(a, b, x.shape[2], len(taps), up, down, pad)
            part = fir1d(x[:, :, i0:i1], taps, -2, up=up, down=down, pad=pad_ab)
            torch.testing.assert_close(part, full[:, :, a:b], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="dim"):
        fir1d(x, taps, 1)
    with pytest.raises(ValueError, match="empty"):
        fir1d(x[:, :, :1], taps, -2)


def test_separable_taps() -> None:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    col, row = separable_taps(torch.outer(k, k) / 64)
    torch.testing.assert_close(torch.outer(torch.tensor(col), torch.tensor(row)), torch.outer(k, k) / 64)
    assert separable_taps(k) == (k.tolist(), k.tolist())
    assert separable_taps(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) is None
    with pytest.raises(ValueError, match="filter"):
        separable_taps(torch.zeros(2, 2, 2))


# ------------------------------------------------------------------------------ modulated convolutions


def ref_modulated_conv2d(x, weight, styles, demodulate, up, padding, f):
    """The grouped-conv formulation (one group per sample) with the reference FIR."""
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    wts = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)  # (N, O, I, k, k)
    if demodulate:
        wts = wts * (wts.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    xg = x.reshape(1, n * i, h, w)
    if up == 1:
        y = F.conv2d(xg, wts.reshape(n * o, i, kh, kw), padding=padding, groups=n)
    else:
        y = F.conv_transpose2d(xg, wts.transpose(1, 2).reshape(n * i, o, kh, kw), stride=2, groups=n)
        y = ref_upfirdn2d(y, f, 1, 1, (1, 1, 1, 1), 4.0)
    return y.reshape(n, o, y.shape[2], y.shape[3])


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_stylegan2_modulated_conv_matches_grouped_conv(
    shared: bool, channels_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sg2, "SHARED_WEIGHT_BATCHES", shared)
    monkeypatch.setattr(sg2, "_CHANNELS_LAST_MIN_PIXELS", 1 if channels_last else 10**9)
    gen = torch.Generator().manual_seed(4)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(k, k) / 64
    for n, up, demod, ksize in itertools.product([1, 3], [1, 2], [True, False], [3, 1]):
        if up == 2 and ksize == 1:
            continue
        x = torch.randn(n, 5, 8, 7, generator=gen)
        weight = torch.randn(4, 5, ksize, ksize, generator=gen)
        styles = torch.randn(n, 5, generator=gen)
        pad = ksize // 2
        got = sg2.modulated_conv2d(x, weight, styles, demodulate=demod, up=up, padding=pad, resample_filter=f)
        want = ref_modulated_conv2d(x, weight, styles, demod, up, pad, f)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_stylegan2_renders_an_image_the_same_alone_or_in_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-sample form: one image's result is bit for bit independent of its batch."""
    monkeypatch.setattr(sg2, "SHARED_WEIGHT_BATCHES", False)
    gen = torch.Generator().manual_seed(5)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(k, k) / 64
    x = torch.randn(4, 6, 9, 9, generator=gen)
    weight = torch.randn(5, 6, 3, 3, generator=gen)
    styles = torch.randn(4, 6, generator=gen)
    for up in (1, 2):
        batch = sg2.modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f)
        for i in range(4):
            alone = sg2.modulated_conv2d(
                x[i : i + 1], weight, styles[i : i + 1], up=up, padding=1, resample_filter=f
            )
            assert torch.equal(alone, batch[i : i + 1])


def test_stylegan2_bias_act_in_place_equals_plain() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 5, 5, generator=gen) * 300
    bias, noise = torch.randn(3, generator=gen), torch.randn(5, 5, generator=gen)
    for act, clamp in [("lrelu", 256.0), ("relu", None), ("linear", 10.0)]:
        want = sg2._activate(x + noise + bias.reshape(1, -1, 1, 1), act)
        want = want if clamp is None else want.clamp(-clamp, clamp)
        got = sg2._bias_act(x.clone(), bias, act, clamp, noise)
        torch.testing.assert_close(got, want)
        xg = x.clone().requires_grad_(True)
        torch.testing.assert_close(sg2._bias_act(xg, bias, act, clamp, noise), want)
        assert torch.equal(xg, x)  # a tensor that needs a gradient is left alone


@pytest.mark.parametrize("shared", [False, True])
def test_stylegan3_modulated_conv_matches_grouped_conv(shared: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sg3, "SHARED_WEIGHT_BATCHES", shared)
    monkeypatch.setattr(sg3, "_CHANNELS_LAST_MIN_PIXELS", 1)
    gen = torch.Generator().manual_seed(7)
    gain = torch.tensor(0.7)
    for n, demod, ksize in itertools.product([1, 3], [True, False], [3, 1]):
        x = torch.randn(n, 5, 8, 8, generator=gen)
        weight = torch.randn(4, 5, ksize, ksize, generator=gen)
        styles = torch.randn(n, 5, generator=gen)
        w, s = weight, styles
        if demod:
            w = w * w.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
            s = s * s.square().mean().rsqrt()
        want = ref_modulated_conv2d(x, w, s, demod, 1, ksize - 1, None) * gain
        got = sg3._modulated_conv2d(x, weight, styles, demodulate=demod, input_gain=gain)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _ref_filtered_lrelu(x, bias, fu, fd, up, down, padding, gain, slope, clamp):
    x = x + bias.reshape(1, -1, 1, 1)
    x = ref_upfirdn2d(x, fu, up, 1, padding, float(up * up)) if fu is not None else F.pad(x, list(padding))
    x = F.leaky_relu(x, slope) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return ref_upfirdn2d(x, fd, 1, down, (0, 0, 0, 0), 1.0) if fd is not None else x[:, :, ::down, ::down]


@pytest.mark.parametrize("radial", [False, True])
def test_stylegan3_filtered_lrelu_chunked_matches_reference(radial: bool, chunk_bytes: int) -> None:
    gen = torch.Generator().manual_seed(8)
    # (up, down, up taps, down taps, padding) as in StyleGAN3-T schedules, plus the ToRGB identity
    for up, down, tu, td, pad in [
        (2, 2, 12, 12, (9, 8, 9, 8)),
        (4, 2, 24, 12, (-6, -9, -6, -9)),
        (1, 1, 1, 1, (0, 0, 0, 0)),
    ]:
        for n in (1, 3):
            x = torch.randn(n, 3, 14, 14, generator=gen, dtype=torch.float64) * 100
            bias = torch.randn(3, generator=gen, dtype=torch.float64)
            fu = torch.rand(tu, generator=gen, dtype=torch.float64) if tu > 1 else None
            fd = None
            if td > 1:
                fd = (
                    torch.rand(td, td, generator=gen, dtype=torch.float64)
                    if radial
                    else torch.rand(td, generator=gen, dtype=torch.float64)
                )
            want = _ref_filtered_lrelu(x, bias, fu, fd, up, down, pad, 2**0.5, 0.2, 256.0)
            got = sg3._filtered_lrelu(x, bias, fu, fd, up, down, pad, 2**0.5, 0.2, 256.0)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-9)
