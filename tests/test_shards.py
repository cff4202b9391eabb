"""Row sources and sharded latents: every way of reading rows gives the rows; manifests are checked;
sharded sampling equals the one-file stream and resumes; fits and projections of files equal those of
arrays in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfvq import SFVQ, shards
from sfvq.shards import (
    ArrayRows,
    ManifestError,
    ShardedRows,
    TensorRows,
    as_rows,
    open_manifest,
    read_manifest,
    shard_name,
    shard_ranges,
)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).standard_normal((1000, 6)).astype(np.float32)


@pytest.fixture
def mapped(data, tmp_path):
    np.save(tmp_path / "x.npy", data)
    return np.load(tmp_path / "x.npy", mmap_mode="r")


def _kinds(data, mapped):
    """Every kind of row source over the same rows."""
    return {
        "tensor": TensorRows(torch.from_numpy(data)),
        "in memory": ArrayRows(data.astype(np.float64)),
        "mapped": ArrayRows(mapped),  # small: read through the map
        "positional reads": ArrayRows(mapped, map_bytes=0),  # read with preadv
        "released view": ArrayRows(mapped[0:], release_bytes=4096),  # a view: mapped, released often
        "shards": ShardedRows([mapped[:333], mapped[333:334], mapped[334:]]),
    }


def test_every_source_reads_and_gathers_the_rows(data, mapped):
    idx = torch.tensor([999, 0, 333, 334, 333, 5, 998, 332])  # any order, repeats, across shard ends
    for name, rows in _kinds(data, mapped).items():
        assert rows.shape == (1000, 6), name
        got = rows.read(330, 700, torch.float32).numpy()
        assert np.array_equal(got, data[330:700]), name
        assert np.array_equal(rows.take(idx, torch.float32).numpy(), data[idx.numpy()]), name
        blocks = list(rows.chunks(rows=300))
        assert [a for a, _ in blocks] == [0, 300, 600, 900]
        assert np.array_equal(torch.cat([b for _, b in blocks]).float().numpy(), data), name
        rows.release()
    assert _kinds(data, mapped)["positional reads"]._fd is not None
    assert _kinds(data, mapped)["released view"]._mm is not None


def test_dtypes_follow_the_data(data):
    assert TensorRows(torch.from_numpy(data)).dtype == torch.float32
    assert ArrayRows(data.astype(np.float64)).dtype == torch.float64
    ints = ArrayRows((data * 10).astype(np.int16))
    assert ints.dtype == torch.float32 and ints.read(0, 2).dtype == torch.float32


def test_as_rows_refuses_what_as_matrix_refuses():
    with pytest.raises(TypeError, match="numpy array or a torch tensor, got list"):
        as_rows([[1.0, 2.0]])
    with pytest.raises(TypeError, match="must hold numbers"):
        as_rows(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"must be 2-D \(n_samples, n_features\), got 3-D"):
        as_rows(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="empty"):
        as_rows(torch.zeros(0, 3))


def test_shard_names_and_ranges():
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_name(3, 10) == "shards/latents-00003-of-00010.npy"
    with pytest.raises(ValueError, match="shard_rows must be a positive integer"):
        shard_ranges(10, 0)


# ---------------------------------------------------------------------- manifests
def _write_manifest(folder, data, cuts):
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        np.save(folder / f"shards/{k}.npy", data[a:b])
        entries.append({"file": f"shards/{k}.npy", "start": a, "stop": b})
    meta = {"kind": shards.MANIFEST_KIND, "shape": list(data.shape), "shards": entries}
    (folder / "manifest.json").write_text(json.dumps(meta))
    return folder / "manifest.json", meta


def test_a_manifest_opens_as_one_matrix(data, tmp_path):
    path, _ = _write_manifest(tmp_path, data, [0, 400, 1000])
    rows = open_manifest(path)
    assert rows.shape == (1000, 6) and np.array_equal(rows.read(0, 1000).numpy(), data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(kind="other"), "not an sfvq latents manifest"),
        (lambda m: m.update(shape=[1000]), r"'shape' must be \[N, D\]"),
        (lambda m: m["shards"][1].update(start=401), "shard 1 must be"),
        (lambda m: m["shards"][1].update(file="/etc/passwd"), "relative path inside the folder"),
        (lambda m: m.update(shape=[999, 6]), "the shards cover 1000 rows but the shape says 999"),
        (lambda m: m["shards"].clear(), "must list at least one shard"),
    ],
)
def test_bad_manifests_say_why(data, tmp_path, change, message):
    path, meta = _write_manifest(tmp_path, data, [0, 400, 1000])
    change(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_a_missing_or_wrong_shard_is_named(data, tmp_path):
    path, meta = _write_manifest(tmp_path, data, [0, 400, 1000])
    np.save(tmp_path / "shards/1.npy", data[:5])
    with pytest.raises(ManifestError, match=r"shard 1 \(1.npy\) holds \(5, 6\) float32, expected \(600, 6\)"):
        open_manifest(path)
    (tmp_path / "shards/1.npy").unlink()
    with pytest.raises(ManifestError, match="shard 1 .* is missing or unreadable"):
        open_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="is not valid JSON"):
        open_manifest(path)


# ---------------------------------------------------------------------- the estimator on files
def test_fit_and_projections_of_files_equal_those_in_memory(data, mapped, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "CHUNK_BYTES", 4 * 6 * 128)  # 128-row chunks: every pass in pieces
    path, _ = _write_manifest(tmp_path / "m", data, [0, 250, 777, 1000])
    monkeypatch.setattr(shards, "MAP_BYTES", 10_000)  # the set (24 kB) counts as large: positional reads
    assert all(p._fd is not None for p in open_manifest(path).parts)
    kw = dict(epochs=2, batch_size=100, random_state=4, verbose=False)
    ref = SFVQ(4, **kw).fit(data)
    for X in (mapped, open_manifest(path), ArrayRows(mapped, map_bytes=0)):
        m = SFVQ(4, **kw).fit(X)
        for b in ref.codebooks_:
            assert torch.equal(m.codebooks_[b], ref.codebooks_[b])
        assert [h["mse"] for h in m.history_] == pytest.approx([h["mse"] for h in ref.history_], rel=1e-12)
        assert m.total_variance_ == pytest.approx(ref.total_variance_, rel=1e-12)
        np.testing.assert_array_equal(ref.transform(X), ref.transform(data))
        np.testing.assert_array_equal(ref.predict(X), ref.predict(data))
        np.testing.assert_array_equal(ref.quantize(X), ref.quantize(data))
        assert ref.score(X) == pytest.approx(ref.score(data), rel=1e-12)
        assert isinstance(ref.transform(X), np.ndarray)


def test_non_finite_rows_in_a_file_are_counted_over_every_chunk(data, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "CHUNK_BYTES", 4 * 6 * 100)
    bad = data.copy()
    bad[[120, 450, 451, 999], 2] = [np.nan, np.inf, -np.inf, np.nan]
    np.save(tmp_path / "bad.npy", bad)
    X = np.load(tmp_path / "bad.npy", mmap_mode="r")
    with pytest.raises(ValueError, match=r"NaN or inf in 4 of 1000 rows \(first bad row: 120\)"):
        SFVQ(2, epochs=1, verbose=False).fit(X)
    model = SFVQ(2, epochs=1, random_state=0, verbose=False).fit(data)
    with pytest.raises(ValueError, match=r"NaN or inf in 4 of 1000 rows \(first bad row: 120\)"):
        model.transform(X)


def test_total_variance_in_float64_accumulators_keeps_its_precision():
    from sfvq.quantizer import total_variance

    X = (np.random.default_rng(1).standard_normal((50_000, 16)) * 0.3 + 50).astype(np.float32)  # large offset
    exact = float(((X.astype(np.float64) - X.astype(np.float64).mean(0)) ** 2).sum(1).mean())
    assert total_variance(X) == pytest.approx(exact, rel=1e-8)
    assert total_variance(ShardedRows([X[:20_000], X[20_000:]])) == pytest.approx(exact, rel=1e-8)


# ---------------------------------------------------------------------- sharded sampling
@pytest.fixture(scope="module")
def dcgan():
    from sfvq.generators.registry import load_generator

    return load_generator("builtin:faces-dcgan")


@pytest.mark.parametrize("per_seed", [False, True])
def test_sharded_sampling_equals_the_one_file(dcgan, tmp_path, per_seed):
    from sfvq.latents import load_latents, sample_latent_shards, sample_latents

    kw = {"seeds": list(range(100, 230))} if per_seed else {"n": 130, "seed": 9}
    ref = sample_latents(dcgan, space="z", batch_size=16, progress=False, **kw)
    manifest = sample_latent_shards(
        dcgan, tmp_path, space="z", batch_size=16, shard_rows=40, progress=False, **kw
    )
    rows = open_manifest(manifest)
    assert np.array_equal(rows.read(0, 130).numpy(), ref)
    meta = read_manifest(manifest)
    assert meta["shard_rows"] == 40 and [s["stop"] for s in meta["shards"]] == [40, 80, 120, 130]
    assert meta["seed" if not per_seed else "seeds"] == (9 if not per_seed else "100-229")
    shard, side = load_latents(tmp_path / meta["shards"][2]["file"])  # each shard is a latents file too
    assert np.array_equal(shard, ref[80:120]) and side["shard"]["start"] == 80


def test_sharded_sampling_resumes_and_redoes_what_is_not_its_own(dcgan, tmp_path):
    from sfvq.latents import sample_latent_shards

    kw = dict(space="z", n=100, seed=1, batch_size=32, shard_rows=30, progress=False)
    manifest = sample_latent_shards(dcgan, tmp_path, **kw)
    files = sorted((tmp_path / "shards").glob("*.npy"))
    before = {f: f.stat().st_mtime_ns for f in files}
    want = {f: f.read_bytes() for f in files}
    files[1].write_bytes(b"torn")  # a shard a kill damaged (not possible with atomic writes, but still)
    manifest.unlink()
    sample_latent_shards(dcgan, tmp_path, **kw)  # resumes: only the damaged shard is drawn again
    assert {f: f.read_bytes() for f in files} == want
    assert [f.stat().st_mtime_ns == before[f] for f in files] == [True, False, True, True]
    other = sample_latent_shards(dcgan, tmp_path, **{**kw, "seed": 2})  # another request: all redrawn
    assert all(f.read_bytes() != want[f] for f in files) and read_manifest(other)["seed"] == 2


def test_sfvq_fit_reads_a_manifest(data, tmp_path):
    from click.testing import CliRunner

    from sfvq.cli import main

    path, _ = _write_manifest(tmp_path / "m", data, [0, 300, 1000])
    args = ["fit", "--latents", path, "--bits", 3, "--epochs", 1, "--batch-size", 128, "--seed", 2, "--quiet"]
    res = CliRunner().invoke(main, [str(a) for a in [*args, "--outdir", tmp_path / "fit"]])
    assert res.exit_code == 0, res.output
    model = SFVQ.load(tmp_path / "fit" / "model.safetensors")
    ref = SFVQ(3, epochs=1, batch_size=128, random_state=2, verbose=False).fit(data)
    assert torch.equal(model.codebook_, ref.codebook_)
    assert not (tmp_path / "fit" / "checkpoint.safetensors").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = CliRunner().invoke(main, ["fit", "--latents", str(bad), "--outdir", str(tmp_path / "x")])
    assert res.exit_code == 2 and "not an sfvq latents manifest" in res.output
