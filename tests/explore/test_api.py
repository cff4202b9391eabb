"""The explore API through Starlette's test client (and, for raw paths, a live uvicorn server): every
endpoint, every class of bad request, path traversal, and the ``sfvq explore`` command itself."""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import BITS, copy_run, serving
from PIL import Image

K = 2**BITS
NUM_WS = 8
BASE = "http://127.0.0.1"


def client_for(run: Path) -> Any:
    from starlette.testclient import TestClient

    from sfvq.explore.app import Explorer, create_app

    explorer = Explorer.open(run)
    return TestClient(create_app(explorer), base_url=BASE, raise_server_exceptions=False), explorer


@pytest.fixture(scope="module")
def api(tiny_run: Path) -> Any:
    client, explorer = client_for(tiny_run)
    client.explorer = explorer
    return client


@pytest.fixture
def fresh(tiny_run_template: Path, tmp_path: Path) -> Any:
    """A client on a private copy of the run (for tests that plant files in it)."""
    client, explorer = client_for(copy_run(tiny_run_template, tmp_path / "run"))
    client.explorer = explorer
    return client


def pixels(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def expected_png_pixels(images: np.ndarray, labels: list[str], cols: int | None = None) -> np.ndarray:
    from sfvq.images import labelled_grid

    return np.asarray(labelled_grid(images, labels, cols=cols).convert("RGB"))


def render(explorer: Any, v: torch.Tensor) -> np.ndarray:
    from sfvq.generators.base import to_uint8

    return to_uint8(explorer.space.render(v))


def assert_error(r: Any, status: int, param: str | None = "any", contains: str = "") -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    body = r.json()
    assert set(body) == {"error", "param"} and body["error"], body
    if param != "any":
        assert body["param"] == param, body
    assert contains.lower() in body["error"].lower(), body
    return body


# ---------------------------------------------------------------------------------------------- endpoints
def test_info(api: Any) -> None:
    r = api.get("/api/info")
    assert r.status_code == 200
    info = r.json()
    assert info["bits"] == [2, BITS]
    assert info["corners"] == {"2": 4, str(BITS): K}
    assert info["num_ws"] == NUM_WS and info["image_size"] == [32, 32]
    assert info["space"]["kind"] == "w" and info["space"]["dim"] == 32
    assert info["has_latents"] is True and info["sigma_unit"] == "std"
    assert info["limits"]["max_seeds"] == 8 and info["limits"]["sigma_max"] == 20.0


def test_page_and_assets_are_local(api: Any) -> None:
    r = api.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    html = r.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        a = api.get(asset)
        assert a.status_code == 200 and len(a.content) > 500
    static = Path(__file__).resolve().parents[2] / "sfvq/explore/static"
    for f in static.iterdir():
        text = f.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


def test_image_is_the_curve_point(api: Any) -> None:
    ex = api.explorer
    C = ex.model.codebooks_[BITS].float()  # (K, D)
    r0 = api.get(f"/api/image?bits={BITS}&t=0")
    assert r0.status_code == 200 and r0.headers["content-type"] == "image/png"
    assert float(r0.headers["x-render-ms"]) >= 0
    assert pixels(r0.content).shape == (32, 32, 3)
    np.testing.assert_array_equal(pixels(r0.content), render(ex, C[:1])[0])
    r1 = api.get(f"/api/image?bits={BITS}&t=2.25")
    point = 0.75 * C[2] + 0.25 * C[3]  # (D,)
    np.testing.assert_array_equal(pixels(r1.content), render(ex, point[None])[0])
    assert not np.array_equal(pixels(r0.content), pixels(r1.content))
    last = api.get(f"/api/image?bits={BITS}&t={K - 1}")
    np.testing.assert_array_equal(
        pixels(last.content), pixels(api.get(f"/api/corner?bits={BITS}&index={K - 1}").content)
    )


def test_corners_and_map(api: Any) -> None:
    ex = api.explorer
    corners = render(ex, ex.model.codebooks_[BITS].float())  # (K, 32, 32, 3)
    for i in (0, 5, K - 1):
        r = api.get(f"/api/corner?bits={BITS}&index={i}")
        assert r.status_code == 200
        np.testing.assert_array_equal(pixels(r.content), corners[i])
    m = api.get(f"/api/map?bits={BITS}")
    assert m.status_code == 200
    np.testing.assert_array_equal(pixels(m.content), expected_png_pixels(corners, [str(i) for i in range(K)]))
    assert api.get(f"/api/map?bits={BITS}").content == m.content  # cached
    assert pixels(api.get("/api/map?bits=2").content).shape != pixels(m.content).shape


def test_segments(api: Any) -> None:
    r = api.get(f"/api/segments?bits={BITS}")
    assert r.status_code == 200
    data = r.json()
    rows = data["segments"]
    assert [s["index"] for s in rows] == list(range(K - 1)) and rows[1]["spec"] == f"{BITS}:1"
    lengths = api.explorer.model.directions(BITS, normalize=False).norm(dim=1)
    np.testing.assert_allclose([s["length"] for s in rows], lengths.numpy(), rtol=1e-5)
    assert sum(s["usage"] for s in rows) == pytest.approx(1.0)
    assert all(s["std"] > 0 for s in rows) and data["sigma_unit"] == "std"
    assert all(0 <= i < K for i in data["empty_corners"])


def test_edit_grid(api: Any) -> None:
    ex = api.explorer
    seeds = [0, 3]
    unit, std, _ = ex.direction(BITS, 2)
    full = ex.space.encode_seeds(seeds)  # (2, L, D)
    r = api.get(f"/api/edit?bits={BITS}&segment=2&seeds=0,3&sigma=4&layers=2-5")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    edited = torch.stack(
        [ex.space.edit(full, unit, s * std, (2, 6)) for s in (-4, 0, 4)], dim=1
    )  # (2, 3, L, D)
    from sfvq.generators.base import to_uint8

    images = to_uint8(ex.space.render_full(edited.reshape(6, NUM_WS, -1)))
    labels = [f"seed {s} {g:+g}" for s in seeds for g in (-4.0, 0.0, 4.0)]
    np.testing.assert_array_equal(pixels(r.content), expected_png_pixels(images, labels, cols=3))
    # sigma 0 shows the unedited seeds; a layer range changes what an edit does
    plain = to_uint8(ex.space.render_full(full))
    zero = api.get(f"/api/edit?bits={BITS}&segment=2&seeds=0,3&sigma=0")
    labels0 = [f"seed {s} {g:+g}" for s in seeds for g in (0.0, 0.0, 0.0)]
    np.testing.assert_array_equal(
        pixels(zero.content), expected_png_pixels(np.repeat(plain, 3, 0), labels0, 3)
    )
    every = api.get(f"/api/edit?bits={BITS}&segment=2&seeds=0,3&sigma=4")
    assert not np.array_equal(pixels(every.content), pixels(r.content))


def test_save_direction_lands_in_the_run(fresh: Any) -> None:
    from sfvq.directions import DirectionSet

    run = fresh.explorer.run_dir
    assert fresh.get("/api/directions").json() == {"directions": []}
    r = fresh.post("/api/directions", json={"name": "smile", "bits": BITS, "segment": 2, "layers": "2-5"})
    assert r.status_code == 201, r.text
    assert r.json()["saved"]["layer_start"] == 2 and r.json()["saved"]["layer_stop"] == 6
    saved = DirectionSet.load(run / "directions")
    d = saved["smile"]
    assert (d.layer_start, d.layer_stop) == (2, 6)
    unit = fresh.explorer.model.directions(BITS)[2].float()
    torch.testing.assert_close(d.vector, unit)
    assert json.loads((run / "directions.json").read_text())["directions"][0]["name"] == "smile"
    assert_error(
        fresh.post("/api/directions", json={"name": "smile", "bits": BITS, "segment": 1}), 409, "name"
    )
    r = fresh.post(
        "/api/directions", json={"name": "smile", "bits": 2, "segment": 1, "sign": -1, "overwrite": True}
    )
    assert r.status_code == 201
    d = DirectionSet.load(run / "directions")["smile"]
    assert d.layer_start is None and d.sign == -1
    torch.testing.assert_close(d.vector, -fresh.explorer.model.directions(2)[1].float())
    rows = fresh.get("/api/directions").json()["directions"]
    assert [(x["name"], x["bits"], x["segment"], x["layers"]) for x in rows] == [("smile", 2, "1", "0-7")]


def test_augment_writes_a_batch(fresh: Any) -> None:
    run = fresh.explorer.run_dir
    r = fresh.post("/api/augment", json={"name": "smiles", "bits": BITS, "segment": 4, "n": 6, "seed": 5})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["folder"] == "augment/smiles" and out["segment"] == f"{BITS}:4" and out["n"] == 6
    batch = run / "augment" / "smiles"
    assert sorted(p.name for p in (batch / "images").iterdir()) == [f"{k:06d}.png" for k in range(6)]
    rows = list(csv.DictReader((batch / "labels.csv").open()))
    assert [row["segment"] for row in rows] == [f"{BITS}:4"] * 6
    assert json.loads((batch / "options.json").read_text())["options"]["seed"] == 5
    assert [p.name for p in (run / "augment").iterdir()] == ["smiles"]  # no temporary folder left
    preview = fresh.get(out["preview"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    labels = fresh.get(out["labels"])
    assert labels.status_code == 200 and labels.headers["content-type"].startswith("text/csv")
    img = fresh.get(out["first_images"][3])
    np.testing.assert_array_equal(pixels(img.content), np.asarray(Image.open(batch / "images/000003.png")))
    assert fresh.get("/api/augment").json() == {
        "batches": [{"name": "smiles", "segment": f"{BITS}:4", "n": 6}]
    }
    # same seed, same batch; an existing name needs overwrite
    again = {"name": "smiles2", "bits": BITS, "segment": 4, "n": 6, "seed": 5}
    assert fresh.post("/api/augment", json=again).status_code == 201
    np.testing.assert_array_equal(
        np.load(batch / "latents.npy"), np.load(run / "augment/smiles2/latents.npy")
    )
    assert_error(fresh.post("/api/augment", json=again), 409, "name")
    r = fresh.post("/api/augment", json={**again, "n": 3, "overwrite": True, "jitter": 0.5})
    assert r.status_code == 201
    assert len(list((run / "augment/smiles2/images").iterdir())) == 3
    assert sorted(p.name for p in (run / "augment").iterdir()) == ["smiles", "smiles2"]


def test_run_without_latents(tiny_run_template: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run_template, tmp_path / "run")
    (run / "latents.npy").unlink()
    client, _ = client_for(run)
    assert client.get("/api/info").json()["sigma_unit"] == "raw"
    rows = client.get(f"/api/segments?bits={BITS}").json()["segments"]
    assert rows[0]["usage"] is None and rows[0]["std"] is None
    assert client.get(f"/api/edit?bits={BITS}&segment=1&seeds=0&sigma=1").status_code == 200
    body = {"name": "j", "bits": BITS, "segment": 1, "n": 2, "jitter": 0.1}
    assert_error(client.post("/api/augment", json=body), 400, "jitter", "latents")


# ---------------------------------------------------------------------------------------------- bad requests
BAD_GETS = [
    # (url, status, param, text in the error)
    ("/api/image?t=1", 400, "bits", "missing"),
    (f"/api/image?bits={BITS}", 400, "t", "missing"),
    (f"/api/image?bits={BITS}&t=1&x=2", 400, "x", "unknown parameter"),
    (f"/api/image?bits={BITS}&t=1&t=2", 400, "t", "more than once"),
    ("/api/image?bits=three&t=1", 400, "bits", "integer"),
    ("/api/image?bits=4&t=1", 400, "bits", "bitrates [2, 3]"),
    ("/api/image?bits=1e1&t=1", 400, "bits", "integer"),
    (f"/api/image?bits={BITS}&t=-0.5", 400, "t", "[0, 7]"),
    (f"/api/image?bits={BITS}&t=7.01", 400, "t", "[0, 7]"),
    ("/api/image?bits=2&t=3.5", 400, "t", "[0, 3]"),
    (f"/api/image?bits={BITS}&t=nan", 400, "t", "decimal"),
    (f"/api/image?bits={BITS}&t=inf", 400, "t", "decimal"),
    (f"/api/image?bits={BITS}&t=1e999", 400, "t", "finite"),
    (f"/api/image?bits={BITS}&t=0x1", 400, "t", "decimal"),
    (f"/api/image?bits={BITS}&t=", 400, "t", "decimal"),
    (f"/api/corner?bits={BITS}&index={K}", 400, "index", "[0, 7]"),
    (f"/api/corner?bits={BITS}&index=-1", 400, "index", "[0, 7]"),
    (f"/api/corner?bits={BITS}&index=1.5", 400, "index", "integer"),
    ("/api/map", 400, "bits", "missing"),
    ("/api/map?bits=99999999999999999999", 400, "bits", "integer"),
    ("/api/segments?bits=5", 400, "bits", "bitrates"),
    (f"/api/edit?bits={BITS}&segment={K - 1}&seeds=0&sigma=1", 400, "segment", "[0, 6]"),
    (f"/api/edit?bits={BITS}&segment=-1&seeds=0&sigma=1", 400, "segment", "[0, 6]"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=0-8&sigma=1", 400, "seeds", "more than 8"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=a&sigma=1", 400, "seeds", "not a seed"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=3-1&sigma=1", 400, "seeds", "reversed"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=1,1&sigma=1", 400, "seeds", "more than once"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=4294967296&sigma=1", 400, "seeds", "out of range"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=0&sigma=20.5", 400, "sigma", "[-20, 20]"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=0&sigma=-nan", 400, "sigma", "decimal"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=0", 400, "sigma", "missing"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=0&sigma=1&layers=5-2", 400, "layers", "reversed"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=0&sigma=1&layers=0-8", 400, "layers", "0-7"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=0&sigma=1&layers=x", 400, "layers", "layer index"),
    (f"/api/edit?bits={BITS}&segment=1&seeds=0&sigma=1&layers=-1-3", 400, "layers", "layer index"),
    ("/api/info?debug=1", 400, "debug", "unknown parameter"),
    ("/api/directions?path=/etc/passwd", 400, "path", "unknown parameter"),
    ("/api/augment/x/../../model.safetensors", 404, None, "not found"),
    ("/api/augment/%2e%2e/preview.png", 400, "name", "not allowed"),
    ("/api/augment/nobatch/preview.png", 404, "file", "no such file"),
    ("/api/augment/x/model.safetensors", 400, "file", "preview.png"),
    ("/api/augment/x/..%2F..%2Fmodel.safetensors", 400, "file", "preview.png"),
    ("/api/augment/x/%2Fetc%2Fpasswd", 400, "file", "preview.png"),
    ("/api/augment/x/images/..%2F..%2F..%2Flatents.json", 400, "file", "preview.png"),
    ("/api/nothing", 404, None, "not found"),
    ("/static/%2e%2e/app.py", 404, None, "not found"),
]


@pytest.mark.parametrize(("url", "status", "param", "text"), BAD_GETS, ids=[b[0] for b in BAD_GETS])
def test_bad_get(api: Any, url: str, status: int, param: str | None, text: str) -> None:
    assert_error(api.get(url), status, param, text)


BAD_POSTS = [
    # (endpoint, body, status, param, text)
    ("directions", {"bits": BITS, "segment": 1}, 400, "name", "missing"),
    ("directions", {"name": "a", "segment": 1}, 400, "bits", "missing"),
    ("directions", {"name": "a", "bits": BITS}, 400, "segment", "missing"),
    ("directions", {"name": "a", "bits": BITS, "segment": 1, "path": "x"}, 400, "path", "unknown field"),
    ("directions", {"name": "", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("directions", {"name": "../evil", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("directions", {"name": "/etc/passwd", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("directions", {"name": "%2e%2e", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("directions", {"name": ".hidden", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("directions", {"name": "a b", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("directions", {"name": "x" * 65, "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("directions", {"name": "a\nb", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("directions", {"name": 5, "bits": BITS, "segment": 1}, 400, "name", "string"),
    ("directions", {"name": "a", "bits": "3", "segment": 1}, 400, "bits", "integer"),
    ("directions", {"name": "a", "bits": True, "segment": 1}, 400, "bits", "integer"),
    ("directions", {"name": "a", "bits": 9, "segment": 1}, 400, "bits", "bitrates"),
    ("directions", {"name": "a", "bits": BITS, "segment": K - 1}, 400, "segment", "[0, 6]"),
    ("directions", {"name": "a", "bits": BITS, "segment": 1.0}, 400, "segment", "integer"),
    ("directions", {"name": "a", "bits": BITS, "segment": 1, "layers": "0-8"}, 400, "layers", "0-7"),
    ("directions", {"name": "a", "bits": BITS, "segment": 1, "layers": [0, 3]}, 400, "layers", "range"),
    ("directions", {"name": "a", "bits": BITS, "segment": 1, "sign": 0}, 400, "sign", "1 or -1"),
    ("directions", {"name": "a", "bits": BITS, "segment": 1, "sign": True}, 400, "sign", "1 or -1"),
    ("directions", {"name": "a", "bits": BITS, "segment": 1, "overwrite": "yes"}, 400, "overwrite", "true"),
    ("augment", {"name": "a", "bits": BITS, "segment": 1, "n": 0}, 400, "n", "[1, 256]"),
    ("augment", {"name": "a", "bits": BITS, "segment": 1, "n": 257}, 400, "n", "[1, 256]"),
    ("augment", {"name": "a", "bits": BITS, "segment": 1, "n": "5"}, 400, "n", "integer"),
    ("augment", {"name": "a", "bits": BITS, "segment": 1, "seed": -1}, 400, "seed", "[0, 4294967295]"),
    ("augment", {"name": "a", "bits": BITS, "segment": 1, "jitter": 2.5}, 400, "jitter", "[0, 2]"),
    ("augment", {"name": "a", "bits": BITS, "segment": 1, "jitter": -0.1}, 400, "jitter", "[0, 2]"),
    ("augment", {"name": "a", "bits": BITS, "segment": 7}, 400, "segment", "[0, 6]"),
    ("augment", {"name": "a.b", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("augment", {"name": "..", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
    ("augment", {"name": "a/b", "bits": BITS, "segment": 1}, 400, "name", "not allowed"),
]


@pytest.mark.parametrize(
    ("endpoint", "body", "status", "param", "text"),
    BAD_POSTS,
    ids=[f"{b[0]}-{b[3]}-{b[4]}" for b in BAD_POSTS],
)
def test_bad_post(api: Any, endpoint: str, body: dict, status: int, param: str, text: str) -> None:
    assert_error(api.post(f"/api/{endpoint}", json=body), status, param, text)
    assert not (api.explorer.run_dir / "directions.safetensors").exists()
    assert not (api.explorer.run_dir / "augment").exists()


@pytest.mark.parametrize("endpoint", ["directions", "augment"])
def test_bad_post_bodies(api: Any, endpoint: str) -> None:
    url = f"/api/{endpoint}"
    ok = json.dumps({"name": "a", "bits": BITS, "segment": 1})
    assert_error(api.post(url, content=ok, headers={"content-type": "text/plain"}), 415, None, "JSON")
    assert_error(api.post(url, content=ok), 415, None, "JSON")
    assert_error(api.post(url, data={"name": "a"}), 415, None, "JSON")
    js = {"content-type": "application/json"}
    assert_error(api.post(url, content=b"{not json", headers=js), 400, None, "not valid JSON")
    assert_error(api.post(url, content=b"\xff\xfe", headers=js), 400, None, "not valid JSON")
    assert_error(api.post(url, content=b"[1, 2]", headers=js), 400, None, "JSON object")
    assert_error(api.post(url, content=b"{" + b" " * 5000 + b"}", headers=js), 413, None, "larger")
    assert_error(
        api.post(url, content=ok, headers={**js, "origin": "http://evil.example"}), 403, None, "cross-origin"
    )
    assert_error(api.post(f"{url}?name=a", content=ok, headers=js), 400, "name", "unknown parameter")
    assert_error(api.put(url, content=ok, headers=js), 405, None, "method")
    assert_error(api.delete(url), 405, None, "method")


def test_foreign_host_header_is_refused(api: Any) -> None:
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example"):
        assert_error(api.get("/api/info", headers={"host": host}), 400, "Host", "host")
    assert api.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200


# ---------------------------------------------------------------------------------------------- files
def test_symlinks_out_of_the_run_are_refused(fresh: Any, tmp_path: Path) -> None:
    run = fresh.explorer.run_dir
    outside = tmp_path / "outside"
    (outside / "images").mkdir(parents=True)
    secret = b"\x89PNG TOPSECRET"
    for name in ("preview.png", "labels.csv", "images/000000.png"):
        (outside / name).write_bytes(secret)
    assert (
        fresh.post("/api/augment", json={"name": "ok", "bits": BITS, "segment": 1, "n": 2}).status_code == 201
    )
    # a batch folder that is a link to elsewhere, and a file of a real batch that is one
    (run / "augment" / "link").symlink_to(outside, target_is_directory=True)
    (run / "augment/ok/preview.png").unlink()
    (run / "augment/ok/preview.png").symlink_to(outside / "preview.png")
    for url in (
        "/api/augment/link/preview.png",
        "/api/augment/link/images/000000.png",
        "/api/augment/ok/preview.png",
    ):
        r = fresh.get(url)
        assert_error(r, 403, None, "outside the run")
        assert b"TOPSECRET" not in r.content
    assert [b["name"] for b in fresh.get("/api/augment").json()["batches"]] == ["ok"]
    body = {"name": "link", "bits": BITS, "segment": 1, "n": 2, "overwrite": True}
    assert_error(fresh.post("/api/augment", json=body), 409, "name")
    assert sorted(p.name for p in outside.iterdir()) == ["images", "labels.csv", "preview.png"]
    # the directions file as a link to a file outside: neither read nor replaced
    target = outside / "stolen.safetensors"
    target.write_bytes(secret)
    (run / "directions.safetensors").symlink_to(target)
    assert_error(fresh.get("/api/directions"), 403, None, "outside the run")
    body = {"name": "a", "bits": BITS, "segment": 1}
    assert_error(fresh.post("/api/directions", json=body), 403, None, "outside the run")
    assert target.read_bytes() == secret and (run / "directions.safetensors").is_symlink()


def test_augment_folder_linked_outside_is_refused(fresh: Any, tmp_path: Path) -> None:
    run = fresh.explorer.run_dir
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run / "augment").symlink_to(outside, target_is_directory=True)
    assert_error(fresh.get("/api/augment"), 403, None, "outside the run")
    assert_error(fresh.post("/api/augment", json={"name": "a", "bits": BITS, "segment": 1, "n": 2}), 403)
    assert list(outside.iterdir()) == []


def raw_get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """GET with the path sent byte for byte (no client-side normalisation of ``..``)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", (headers or {}).pop("Host", f"{host}:{port}"))
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    out = (r.status, r.getheader("content-type") or "", r.read())
    conn.close()
    return out


def test_live_server_path_traversal_and_survival(fresh: Any) -> None:
    from sfvq.explore.app import create_app

    run = fresh.explorer.run_dir
    model_bytes = (run / "model.safetensors").read_bytes()[:64]
    with serving(create_app(fresh.explorer)) as base:
        attempts = [
            "/api/augment/x/../../model.safetensors",
            "/api/augment/../../../../etc/passwd",
            "/api/augment/x/%2e%2e/%2e%2e/model.safetensors",
            "/api/augment/%2e%2e/%2e%2e%2fmodel.safetensors",
            "/api/augment/x/..%2f..%2fmodel.safetensors",
            "/api/augment/x/%2fetc%2fpasswd",
            "/api/augment/x//etc/passwd",
            "/api/augment/x/images/%2e%2e%2f%2e%2e%2f%2e%2e%2fspace.json",
            "/static/../../model.safetensors",
            "/static/%2e%2e/%2e%2e/%2e%2e/model.safetensors",
            "/static/..%2fapp.py",
            "//etc/passwd",
            "/api/image?bits=3&t=%00",
            "/api/image?bits=%ff&t=1",
            "/api/edit?bits=3&segment=1&seeds=" + "1," * 2000 + "&sigma=1",
        ]
        for path in attempts:
            status, ctype, body = raw_get(base, path)
            assert 400 <= status < 500, (path, status, body[:200])
            assert ctype.startswith("application/json"), (path, ctype)
            assert model_bytes not in body and b"root:" not in body and b'"kind"' not in body, path
        assert raw_get(base, "/api/info", {"Host": "attacker.example"})[0] == 400
        # concurrent renders are serialised by the lock and all succeed
        results: list[int] = []

        def work(i: int) -> None:
            for j in range(3):
                results.append(raw_get(base, f"/api/image?bits={BITS}&t={(i + j) * 0.3:.2f}")[0])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert results == [200] * 18
        assert raw_get(base, "/api/info")[0] == 200  # still serving


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_errors(tiny_run_template: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sfvq.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["explore", "--run", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "'--run'" in r.output and "not a directory" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(main, ["explore", "--run", str(empty)])
    assert r.exit_code == 2 and "'--run'" in r.output and "model.safetensors" in r.output
    run = copy_run(tiny_run_template, tmp_path / "run")
    r = runner.invoke(main, ["explore", "--run", str(run), "--network", "builtin:nope"])
    assert r.exit_code == 2 and "'--network'" in r.output and "unknown built-in" in r.output
    r = runner.invoke(main, ["explore", "--run", str(run), "--network", "builtin:faces-dcgan"])
    assert r.exit_code == 2 and "no mapping network" in r.output
    (run / "space.json").unlink()
    r = runner.invoke(main, ["explore", "--run", str(run)])
    assert r.exit_code == 2 and "space.json" in r.output
    r = runner.invoke(main, ["explore", "--run", str(run), "--port", "70000"])
    assert r.exit_code == 2 and "'--port'" in r.output


def test_cli_error_for_a_model_without_its_generator(tiny_run_template: Path, tmp_path: Path) -> None:
    """The run is opened as every command opens it (sfvq.runs.Run): the same message, the same fix."""
    from click.testing import CliRunner

    from sfvq import SFVQ
    from sfvq.cli import main

    run = copy_run(tiny_run_template, tmp_path / "run")
    model = SFVQ.load(run / "model.safetensors")
    network = model.metadata_.pop("network")
    model.save(run / "model.safetensors")
    r = CliRunner().invoke(main, ["explore", "--run", str(run)])
    assert r.exit_code == 2 and "does not record its generator" in r.output and "pass --network" in r.output
    from sfvq.explore.app import Explorer

    explorer = Explorer.open(run, network=network)
    assert explorer.run.path == run and explorer.network == network and explorer.space.kind == "w"


def test_cli_serves_on_loopback(tiny_run_template: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run_template, tmp_path / "run")
    exe = Path(sys.executable).parent / "sfvq"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from sfvq.cli import main; main()"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*cmd, "explore", "--run", str(run), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "open http" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "sfvq explore exited early"
            assert time.monotonic() < deadline, "sfvq explore did not start in 60 s"
        url = line.split("open ", 1)[1].split()[0].rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        status, ctype, body = raw_get(url, "/api/info")
        assert status == 200 and json.loads(body)["bits"] == [2, BITS]
        assert raw_get(url, f"/api/image?bits={BITS}&t=1.5")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


# ------------------------------------------------------------------- the built-in DCGAN's feature space
@pytest.mark.slow
def test_explore_faces_dcgan_feature_space(tmp_path: Path) -> None:
    """The built-in DCGAN in its default feature space (first layer's activations, PCA).

    Latency is measured by ``python -m benchmarks.explore_latency``, not asserted here.
    """
    from sfvq import SFVQ
    from sfvq.generators.registry import load_generator
    from sfvq.spaces import LatentSpace

    run = tmp_path / "dcgan"
    run.mkdir()
    space = LatentSpace(load_generator("builtin:faces-dcgan"), "features")
    X = space.sample(300, seed=0, progress=False, pca_max=32)  # (300, <=32)
    model = SFVQ(5, epochs=1, batch_size=128, random_state=0, verbose=False).fit(X)
    model.metadata_ = {"network": "builtin:faces-dcgan", "space": space.describe()}
    model.save(run / "model.safetensors")
    space.save(run)
    client, explorer = client_for(run)
    client.explorer = explorer
    assert client.get("/api/info").json()["image_size"] == [64, 64]
    for t in (0.0, 7.3, 31.0):
        r = client.get(f"/api/image?bits=5&t={t}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    # edits work in a feature space, where layer ranges do not exist
    assert client.get("/api/edit?bits=5&segment=3&seeds=0,1&sigma=2").status_code == 200
    assert_error(client.get("/api/edit?bits=5&segment=3&seeds=0&sigma=2&layers=0"), 400, "layers", "no style")


# ------------------------------------------------------------------- the host guard (issue 13, item 5)
def test_wildcard_bind_keeps_the_host_and_origin_allow_list(fresh: Any) -> None:
    """Listening on 0.0.0.0 used to accept any Host: a foreign Host with a matching Origin saved a
    direction (DNS rebinding). The allow-list now holds whatever the bind address."""
    from starlette.testclient import TestClient

    from sfvq.explore.app import allowed_hosts_for, create_app

    hosts = allowed_hosts_for("0.0.0.0", None, ["lab-box.example"])
    assert "*" not in hosts and "evil.example" not in hosts and "lab-box.example" in hosts
    client = TestClient(create_app(fresh.explorer, allowed_hosts=hosts), base_url=BASE)
    body = {"name": "smile", "bits": BITS, "segment": 1}
    foreign = {"host": "evil.example:8000", "origin": "http://evil.example:8000"}
    assert_error(client.post("/api/directions", json=body, headers=foreign), 400, "Host", "host")
    assert not (fresh.explorer.run_dir / "directions.safetensors").exists()
    # an allowed Host with a foreign Origin is refused too (before the body is read)
    crossed = {"host": "lab-box.example:8000", "origin": "http://evil.example"}
    assert_error(client.post("/api/directions", json=body, headers=crossed), 403, None, "cross-origin")
    mine = {"host": "lab-box.example:8000", "origin": "http://lab-box.example:8000"}
    assert client.post("/api/directions", json=body, headers=mine).status_code == 201
    with pytest.raises(ValueError, match="wildcard"):
        create_app(fresh.explorer, allowed_hosts=["*"])


def test_allowed_hosts_and_names() -> None:
    from sfvq.explore.app import allowed_hosts_for, check_host_name, is_loopback

    assert allowed_hosts_for("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]", "::1"]
    named = allowed_hosts_for("192.0.2.7", "192.0.2.7", ["Box.Example", "fe80::1"])
    assert named[:4] == ["127.0.0.1", "localhost", "[::1]", "::1"]
    assert {"192.0.2.7", "box.example", "[fe80::1]", "fe80::1"} <= set(named)
    for bad in ("*", "*.example", "evil.example:80", "a b", "", "x" * 300, "name\n"):
        with pytest.raises(ValueError):
            check_host_name(bad)
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")


def test_deeply_nested_json_is_a_400_not_a_500(api: Any) -> None:
    js = {"content-type": "application/json"}
    for endpoint in ("/api/directions", "/api/augment"):
        for deep in (b"[" * 4000, b'{"name": ' + b"[" * 2000 + b"]" * 2000 + b"}"):
            assert_error(api.post(endpoint, content=deep, headers=js), 400, None, "JSON")


def test_a_name_ending_in_a_newline_is_refused(fresh: Any) -> None:
    run = fresh.explorer.run_dir
    for endpoint, body in (
        ("/api/augment", {"name": "batch\n", "bits": BITS, "segment": 1, "n": 2}),
        ("/api/directions", {"name": "smile\n", "bits": BITS, "segment": 1}),
    ):
        assert_error(fresh.post(endpoint, json=body), 400, "name", "not allowed")
    assert not (run / "augment").exists() or not any((run / "augment").iterdir())
    assert not (run / "directions.safetensors").exists()
    # the page gets the same rule in the form a browser's input pattern takes
    pattern = fresh.get("/api/info").json()["limits"]["name_pattern"]
    assert pattern.startswith("^") and pattern.endswith("$") and "\\Z" not in pattern


def test_cli_wildcard_bind_warns_and_guards(tiny_run_template: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sfvq.cli import main

    run = copy_run(tiny_run_template, tmp_path / "run")
    r = CliRunner().invoke(main, ["explore", "--run", str(run), "--allow-host", "*"])
    assert r.exit_code == 2 and "'--allow-host'" in r.output and "wildcard" in r.output
    exe = Path(sys.executable).parent / "sfvq"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from sfvq.cli import main; main()"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*cmd, "explore", "--run", str(run), "--host", "0.0.0.0", "--port", "0", "--allow-host", "lab.ex"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        lines = [""]
        while "open http" not in lines[-1]:
            lines.append(proc.stdout.readline())
            assert lines[-1] or proc.poll() is None, f"sfvq explore exited early: {lines}"
            assert time.monotonic() < deadline, "sfvq explore did not start in 60 s"
        text = "".join(lines)
        assert "warning: listening on 0.0.0.0" in text and "beyond this machine" in text
        assert "lab.ex" in text and "--allow-host" in text
        port = lines[-1].split("open ", 1)[1].split()[0].rstrip("/").rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        assert raw_get(base, "/api/info", {"Host": "attacker.example"})[0] == 400
        assert raw_get(base, "/api/info", {"Host": f"lab.ex:{port}"})[0] == 200
        assert raw_get(base, "/api/info")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


def test_cli_refuses_a_run_mixing_two_runs(tiny_run_template: Path, tmp_path: Path) -> None:
    """New latents beside an old model (a killed `sfvq run` used to leave them): not explored."""
    from click.testing import CliRunner

    from sfvq import SFVQ
    from sfvq.cli import main
    from sfvq.io import save_npy_with_sidecar

    run = copy_run(tiny_run_template, tmp_path / "run")
    model = SFVQ.load(run / "model.safetensors")
    model.metadata_["run_id"] = "20250101T000000Zaaaaaaaa"
    model.save(run / "model.safetensors")
    X = np.load(run / "latents.npy")
    save_npy_with_sidecar(run / "latents.npy", X[:100], {"run_id": "20250102T000000Zbbbbbbbb"})
    r = CliRunner().invoke(main, ["explore", "--run", str(run)])
    assert r.exit_code == 2 and "'--run'" in r.output and "mixes files of different runs" in r.output
