"""The SFVQ estimator: fitting, inference equivalences, persistence and every error message."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sfvq import SFVQ, ModelFileError, NotFittedError, curve
from sfvq.datasets import make_spiral, spiral_points

FAST = dict(epochs=2, batch_size=128, lr=0.02, verbose=False)


@pytest.fixture(scope="module")
def blob():
    return np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(blob):
    return SFVQ(4, random_state=0, **FAST).fit(blob)


def test_fit_keeps_every_bitrate_and_reports(fitted, blob):
    assert sorted(fitted.codebooks_) == [2, 3, 4]
    assert all(fitted.codebooks_[b].shape == (2**b, 8) for b in (2, 3, 4))
    assert fitted.codebook_ is fitted.codebooks_[4]
    assert fitted.n_features_in_ == 8
    assert [h["bits"] for h in fitted.history_] == [2, 3, 4]
    assert all(len(h["loss"]) == 2 and h["seconds"] > 0 for h in fitted.history_)
    assert fitted.usage_.shape == (15,) and fitted.usage_.sum() == 600
    assert 1 <= fitted.perplexity_ <= 15
    # More corners never fit worse on this data.
    mses = [h["mse"] for h in fitted.history_]
    assert mses[0] > mses[1] > mses[2]
    assert fitted.score(blob) == pytest.approx(-mses[-1], rel=1e-5)  # scikit-learn's sign: greater is better


def test_each_stage_starts_from_the_doubled_previous_curve(blob):
    # With zero epochs of training the chain would be exact; with training, check the very first
    # step of each stage starts from double(previous) by fitting with an infinitesimal learning rate.
    m = SFVQ(4, random_state=0, epochs=1, batch_size=600, lr=1e-12, verbose=False).fit(blob)
    for b in (3, 4):
        torch.testing.assert_close(m.codebooks_[b], curve.double(m.codebooks_[b - 1]), atol=1e-8, rtol=0)


def test_fit_is_deterministic_for_a_seed(blob):
    a = SFVQ(3, random_state=7, **FAST).fit(blob)
    b = SFVQ(3, random_state=7, **FAST).fit(blob)
    c = SFVQ(3, random_state=8, **FAST).fit(blob)
    assert torch.equal(a.codebook_, b.codebook_)
    assert not torch.equal(a.codebook_, c.codebook_)


@pytest.mark.parametrize("init", ["data", "gaussian"])
@pytest.mark.parametrize("assign", ["dithered", "exact"])
def test_options_fit(blob, init, assign):
    m = SFVQ(3, init=init, assign=assign, random_state=0, **FAST).fit(blob)
    total = float(np.var(blob, axis=0).sum())
    assert -m.score(blob) < 0.9 * total


def test_spiral_fit_is_accurate_and_ordered():
    X = make_spiral(4000, turns=1.0, seed=0)
    m = SFVQ(5, epochs=4, batch_size=256, lr=0.02, random_state=0, verbose=False).fit(X)
    nmse = -m.score(X) / m.total_variance_
    assert nmse < 0.003
    # Each corner's position along the noise-free spiral: consecutive corners must advance along it.
    ts = np.linspace(0, 1, 5001)
    C = m.codebook_.numpy()
    pos = ts[((C[:, None] - spiral_points(ts, turns=1.0)[None]) ** 2).sum(-1).argmin(1)]
    steps = np.diff(pos)
    steps = steps * np.sign(steps.sum())  # the curve may run either way
    assert (steps > 0).all(), pos
    assert steps.max() < 0.15


def test_inverse_transform_of_transform_is_quantize(fitted, blob):
    t = fitted.transform(blob)
    assert t.shape == (600,) and t.min() >= 0 and t.max() <= 15
    np.testing.assert_allclose(fitted.inverse_transform(t), fitted.quantize(blob), atol=1e-5)


def test_exact_error_never_exceeds_the_two_segment_rule(fitted, blob):
    x = np.random.default_rng(1).standard_normal((2000, 8)).astype(np.float32) * 1.5
    exact = fitted.project(x).sqdist
    adjacent = fitted.project(x, method="adjacent").sqdist
    assert (exact <= adjacent + 1e-5).all()


def test_predict_directions_and_intermediate_bits(fitted, blob):
    k = fitted.predict(blob)
    C = fitted.codebook_.numpy()
    brute = ((blob[:, None] - C[None]) ** 2).sum(-1).argmin(1)
    assert (k == brute).mean() > 0.99  # float ties aside
    d = fitted.directions()
    assert d.shape == (15, 8)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(15))
    raw = fitted.directions(bits=2, normalize=False)
    torch.testing.assert_close(raw, fitted.codebooks_[2][1:] - fitted.codebooks_[2][:-1])
    assert fitted.transform(blob, bits=2).max() <= 3


def test_input_kinds_follow_the_caller(fitted, blob):
    assert isinstance(fitted.quantize(blob), np.ndarray)
    xt = torch.from_numpy(blob)
    out = fitted.quantize(xt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    out64 = fitted.quantize(xt.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, atol=1e-5, rtol=0)
    m = SFVQ(2, random_state=0, **FAST).fit(blob.astype(np.float64))
    assert m.codebook_.dtype == torch.float32


def test_save_load_round_trip(fitted, blob, tmp_path):
    path = fitted.save(tmp_path / "model.safetensors")
    assert not list(tmp_path.glob(".*tmp*"))
    loaded = SFVQ.load(path)
    assert sorted(loaded.codebooks_) == sorted(fitted.codebooks_)
    for b, C in fitted.codebooks_.items():
        assert torch.equal(loaded.codebooks_[b], C)
    assert loaded.get_params() == fitted.get_params()
    assert loaded.history_ == json.loads(json.dumps(fitted.history_))
    assert loaded.perplexity_ == fitted.perplexity_
    np.testing.assert_array_equal(loaded.usage_, fitted.usage_)
    np.testing.assert_array_equal(loaded.transform(blob), fitted.transform(blob))


def test_score_follows_scikit_learn_greater_is_better(fitted, blob):
    mse = float(((fitted.quantize(blob) - blob) ** 2).sum(1).mean())
    assert fitted.score(blob) == pytest.approx(-mse, rel=1e-5)
    assert fitted.score(blob, bits=4) > fitted.score(blob, bits=2)  # the finer curve scores higher
    on_curve = fitted.codebook_.numpy()[:5]
    assert fitted.score(on_curve) == pytest.approx(0.0, abs=1e-6)  # a perfect fit scores 0, the maximum


def test_from_codebooks_with_data_scores_as_fit_does(fitted, blob):
    books = {b: C.numpy().copy() for b, C in fitted.codebooks_.items()}
    m = SFVQ.from_codebooks(books, blob, metadata={"source": "test"}, random_state=3)
    assert m.bits == 4 and m.random_state == 3 and m.verbose is False and m.metadata_ == {"source": "test"}
    assert m.n_features_in_ == 8 and m.n_samples_fit_ == 600
    assert m.total_variance_ == pytest.approx(fitted.total_variance_, rel=1e-12)
    for h, g in zip(m.history_, fitted.history_, strict=True):
        assert h["bits"] == g["bits"] and h["loss"] == [] and h["seconds"] == 0.0
        for k in ("mse", "perplexity", "used_segments"):
            assert h[k] == pytest.approx(g[k], rel=1e-5), k
    np.testing.assert_array_equal(m.usage_, fitted.usage_)
    assert m.perplexity_ == pytest.approx(fitted.perplexity_, rel=1e-5)
    # The model owns its codebooks: changing the caller's arrays changes nothing.
    books[4][0] += 1
    assert torch.equal(m.codebooks_[4], fitted.codebooks_[4])
    np.testing.assert_array_equal(m.transform(blob), fitted.transform(blob))


def test_from_codebooks_without_data_says_unknown(fitted, tmp_path):
    m = SFVQ.from_codebooks({3: fitted.codebooks_[3].double()})
    assert sorted(m.codebooks_) == [3] and m.codebooks_[3].dtype == torch.float32 and m.bits == 3
    assert m.n_samples_fit_ == 0 and np.isnan(m.total_variance_) and np.isnan(m.perplexity_)
    assert m.history_ == [] and m.usage_.shape == (7,) and not m.usage_.any()
    back = SFVQ.load(m.save(tmp_path / "imported.safetensors"))  # a built model saves like a fitted one
    assert torch.equal(back.codebooks_[3], m.codebooks_[3]) and back.n_samples_fit_ == 0


def test_from_codebooks_refuses_bad_codebooks(fitted, blob):
    C2, C3 = fitted.codebooks_[2], fitted.codebooks_[3]
    with pytest.raises(ValueError, match="no codebooks given"):
        SFVQ.from_codebooks({})
    with pytest.raises(ValueError, match=r"the 3-bit codebook must have 8 rows, got shape \(4, 8\)"):
        SFVQ.from_codebooks({3: C2})
    with pytest.raises(ValueError, match=r"disagree on the dimension \(4 vs 8\)"):
        SFVQ.from_codebooks({2: C2, 3: C3[:, :4]})
    with pytest.raises(ValueError, match="codebook bits must lie in"):
        SFVQ.from_codebooks({1: C2[:2]})
    with pytest.raises(ValueError, match="the 2-bit codebook contains NaN or inf"):
        SFVQ.from_codebooks({2: torch.full((4, 8), float("nan"))})
    with pytest.raises(ValueError, match="bits=5, but the largest codebook has 3 bits"):
        SFVQ.from_codebooks({3: C3}, bits=5)
    with pytest.raises(ValueError, match="X has 3 features, but the codebooks are 8-D"):
        SFVQ.from_codebooks({3: C3}, blob[:, :3])


# ---------------------------------------------------------------------- errors
def test_nan_rows_are_counted():
    X = np.zeros((50, 3), np.float32)
    X[[3, 9], 1] = np.nan
    X[20, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf in 3 of 50 rows \(first bad row: 3\)"):
        SFVQ(2, **FAST).fit(X)


@pytest.mark.parametrize("shape", [(10,), (2, 5, 3)])
def test_wrong_ndim(shape):
    with pytest.raises(ValueError, match=r"must be 2-D \(n_samples, n_features\), got \d-D"):
        SFVQ(2, **FAST).fit(np.zeros(shape, np.float32))


def test_wrong_type_and_empty():
    with pytest.raises(TypeError, match="numpy array or a torch tensor, got list"):
        SFVQ(2, **FAST).fit([[1.0, 2.0]])
    with pytest.raises(ValueError, match="empty"):
        SFVQ(2, **FAST).fit(np.zeros((0, 4), np.float32))


def test_too_few_samples():
    with pytest.raises(ValueError, match=r"too few samples: 10 rows for a 4-bit curve \(16 corners\)"):
        SFVQ(4, **FAST).fit(np.ones((10, 2), np.float32))


@pytest.mark.parametrize("bits", [1, 17, 2.5, "6", True])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits must"):
        SFVQ(bits, **FAST).fit(np.ones((100, 2), np.float32))


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"init": "kmeans"}, "init must be"),
        ({"assign": "hard"}, "assign must be"),
        ({"lr": -1}, "lr must"),
        ({"epochs": 0}, "epochs must"),
        ({"eps": 0.7}, "eps must"),
    ],
)
def test_bad_settings(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SFVQ(2, **{**FAST, **kw}).fit(np.ones((100, 2), np.float32))


@pytest.mark.parametrize("method", ["quantize", "transform", "predict", "score"])
def test_use_before_fit(method):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(SFVQ(2), method)(np.zeros((3, 2), np.float32))
    with pytest.raises(NotFittedError):
        SFVQ(2).directions()


def test_feature_count_mismatch(fitted):
    with pytest.raises(ValueError, match="X has 5 features, but this SFVQ was fitted on 8"):
        fitted.transform(np.zeros((4, 5), np.float32))


def test_bad_t_and_unknown_bits(fitted):
    with pytest.raises(ValueError, match=r"t must lie in \[0, 15\]"):
        fitted.inverse_transform(np.array([0.0, 15.5]))
    with pytest.raises(ValueError, match="t must be 1-D"):
        fitted.inverse_transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"no codebook at 6 bits; this model has bits \[2, 3, 4\]"):
        fitted.quantize(np.zeros((2, 8), np.float32), bits=6)


def test_files_that_are_not_models(tmp_path, fitted):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        SFVQ.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a model at all")
    with pytest.raises(ModelFileError, match="not an sfvq model"):
        SFVQ.load(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ModelFileError, match="is a safetensors file, not an sfvq model file"):
        SFVQ.load(other)
    # A truncated copy of a real model.
    good = fitted.save(tmp_path / "good.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match="not an sfvq model"):
        SFVQ.load(cut)


def test_progress_bar_only_when_verbose(blob, capsys):
    SFVQ(2, random_state=0, **FAST).fit(blob)
    assert capsys.readouterr().err == ""
    SFVQ(2, random_state=0, **{**FAST, "verbose": True}).fit(blob)
    err = capsys.readouterr().err
    assert "2-bit curve" in err and "perplexity" in err


def test_callback_sees_every_event(blob):
    events = []
    SFVQ(3, random_state=0, **FAST).fit(blob, callback=lambda e, info: events.append(e))
    assert events.count("stage_start") == 2 and events.count("stage_end") == 2
    assert events.count("epoch_end") == 4 and "step" in events


@pytest.mark.parametrize("assign", ["dithered", "exact"])
def test_closed_form_gradient_matches_autograd(blob, assign):
    m = SFVQ(3, assign=assign, random_state=0, **FAST)
    C = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    xb = torch.from_numpy(blob[:200])
    loss, grad = m._batch_loss_and_grad(xb, C, torch.Generator().manual_seed(5))
    # The same loss through autograd, with the same dithers.
    Cg = C.clone().requires_grad_(True)
    if assign == "dithered":
        lam = torch.rand(7, generator=torch.Generator().manual_seed(5))
        P = curve.dithered_points(Cg, lam)
        j = ((xb[:, None] - P[None].detach()) ** 2).sum(-1).argmin(1)
        xhat = P[j]
    else:
        p = curve.project(xb, C)
        xhat = torch.lerp(Cg[p.segment], Cg[p.segment + 1], p.lam.unsqueeze(1))
    ref = ((xb - xhat) ** 2).sum(1).mean()
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, Cg.grad, rtol=1e-4, atol=1e-5)


def test_own_adam_matches_torch_adam():
    from sfvq.quantizer import _Adam

    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, generator=g)
    b = a.clone().requires_grad_(True)
    ours = _Adam(a)
    ref = torch.optim.Adam([b], lr=0.05)
    for step in range(20):
        grad = torch.randn(6, 4, generator=g) * (step + 1)
        lr = 0.05 if step < 10 else 0.025
        ours.step(grad, lr)
        for group in ref.param_groups:
            group["lr"] = lr
        b.grad = grad.clone()
        ref.step()
    torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- data larger than memory
_PEAK_SCRIPT = r"""
import sys
from pathlib import Path

import sfvq.plots  # noqa: F401  (the libraries the fit and the plots load belong to the baseline)
import sfvq.quantizer  # noqa: F401
import sfvq.shards
import torch
from sfvq.fitting import fit_curve, read_latents, write_fit

# Files up to MAP_BYTES (1 GiB) stay mapped (resident, within input + 1 GiB); lowered here, this 400 MB
# file is read the way a 20 GB one is, with positional reads that keep nothing resident.
sfvq.shards.MAP_BYTES = 64 * 2**20


def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024


torch.set_num_threads(1)  # as in the suite: spinning OpenMP threads on busy shared cores are slow
X = read_latents(sys.argv[1])  # memory-mapped, nothing read yet
base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
model = fit_curve(X, 2, epochs=1, seed=0)
write_fit(model, X, Path(sys.argv[2]))
print(base, status("VmHWM:"), model.n_samples_fit_)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_fit_of_a_memory_map_never_holds_the_array(tmp_path):
    """`sfvq fit`'s path (read_latents, fit_curve, write_fit) on a 400 MB memory map read as a file
    larger than the mapping threshold: the peak resident memory grows by well under the input's size (a
    whole copy, as the old fit made, would add at least the input's size), and stays under the input
    size plus 1 GiB in all. What it may add: the
    initialisation subset (100,000 rows, 100 MB here), a few chunk buffers and the plot's sample."""
    import subprocess
    import sys

    N, D = 400_000, 256
    path = tmp_path / "big.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(N, D))
    rng = np.random.default_rng(0)
    for a in range(0, N, 25_000):
        mm[a : a + 25_000] = rng.standard_normal((25_000, D), dtype=np.float32)
    mm.flush()
    del mm
    size = path.stat().st_size
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path), str(tmp_path / "fit")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    ).stdout.split()  # fmt: skip
    base, peak, n = (int(v) for v in out)
    assert n == N
    added = (peak - base) / 2**20
    assert peak - base < 0.75 * size, f"the fit added {added:.0f} MiB for a {size / 2**20:.0f} MiB input"
    assert peak < size + 2**30
