"""Your own images in the explorer: upload (type, size and content checked), projection and placement,
the stored files (inside the run only), the slider edit, and every class of bad request."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BITS, copy_run
from PIL import Image

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def world(tiny_run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A client on a private copy of the tiny run, and a photo: an image its generator drew, as a PNG."""
    import torch
    from starlette.testclient import TestClient

    from sfvq.explore.app import Explorer, create_app
    from sfvq.generators.base import to_uint8

    run = copy_run(tiny_run_template, tmp_path_factory.mktemp("photos") / "run")
    explorer = Explorer.open(run)
    client = TestClient(create_app(explorer), base_url=BASE, raise_server_exceptions=False)
    with torch.no_grad():
        face = to_uint8(explorer.space.render_full(explorer.space.encode_seeds([77])))[0]
    buf = io.BytesIO()
    Image.fromarray(face).resize((64, 48)).save(buf, format="PNG")
    return {"client": client, "explorer": explorer, "run": run, "png": buf.getvalue()}


def _post(client: Any, data: bytes, ctype: str = "image/png", **headers: str) -> Any:
    return client.post("/api/photos", content=data, headers={"Content-Type": ctype, **headers})


def test_upload_projects_places_and_stores_inside_the_run(world: dict[str, Any]) -> None:
    client, run = world["client"], world["run"]
    before = {p for p in run.parent.rglob("*")} - {p for p in run.rglob("*")}
    r = _post(client, world["png"])
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["new"] is True and len(out["id"]) == 16
    assert sorted(out["bits"]) == [str(b) for b in range(2, BITS + 1)]
    row = out["bits"][str(BITS)]
    assert 0 <= row["t"] <= 2**BITS - 1 and row["nearest"] and 0 <= row["percentile"] <= 100
    assert isinstance(out["outlier"]["off_map"], bool) and 0 < out["psnr"] < 100 and 0 < out["ssim"] <= 1
    folder = run / "photos" / out["id"]
    assert {"photo.png", "target.png", "projection.png", "compare.png", "projected.npy"} <= {
        p.name for p in folder.iterdir()
    }
    after = {p for p in run.parent.rglob("*")} - {p for p in run.rglob("*")}
    assert after == before  # nothing written outside the run
    assert not [p for p in (run / "photos").iterdir() if p.name.startswith(".")]  # no temporary folder left
    # the same image again: not projected twice
    again = _post(client, world["png"])
    assert again.status_code == 200 and again.json()["id"] == out["id"] and again.json()["new"] is False
    world["id"] = out["id"]


def test_the_photo_can_be_listed_read_and_edited(world: dict[str, Any]) -> None:
    if "id" not in world:
        pytest.skip("needs the upload of the test above")
    client, pid = world["client"], world["id"]
    listing = client.get("/api/photos").json()["photos"]
    assert [p["id"] for p in listing] == [pid]
    one = client.get(f"/api/photos/{pid}").json()
    assert one["files"]["compare"] == f"/api/photos/{pid}/compare.png"
    png = client.get(one["files"]["projection"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    zero = client.get(f"/api/photos/{pid}/edit?bits={BITS}&segment=1&sigma=0")
    assert zero.status_code == 200
    projection = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(zero.content)).convert("RGB")), projection)
    moved = client.get(f"/api/photos/{pid}/edit?bits={BITS}&segment=1&sigma=3&layers=0-3")
    assert moved.status_code == 200 and moved.content != zero.content
    # placements are recomputed from the stored latent: the same answer every time
    assert client.get(f"/api/photos/{pid}").json()["bits"] == one["bits"]


def test_bad_uploads_are_refused(world: dict[str, Any]) -> None:
    client = world["client"]
    r = _post(client, world["png"], "application/octet-stream")
    assert r.status_code == 415 and "send the image itself" in r.json()["error"]
    r = _post(client, b"this is not an image at all")
    assert r.status_code == 400 and "not an image" in r.json()["error"] and r.json()["param"] == "image"
    r = _post(client, b"")
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = _post(client, world["png"], "image/jpeg")  # a PNG sent as a JPEG
    assert r.status_code == 415 and "holds a PNG image" in r.json()["error"]
    r = _post(client, world["png"], "image/png", Origin="http://evil.example")
    assert r.status_code == 403
    from sfvq.explore import photos

    r = _post(client, b"\x89PNG" + b"0" * (photos.UPLOAD_MAX_BYTES + 1))
    assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_too_many_pixels_is_refused(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from sfvq.explore import photos

    monkeypatch.setattr(photos, "UPLOAD_MAX_PIXELS", 1000)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 8, 7)).save(buf, format="PNG")  # not an image uploaded before
    r = _post(world["client"], buf.getvalue())
    assert (
        r.status_code == 400
        and "too large: 64x48 = 3,072 pixels, over the limit of 1,000" in r.json()["error"]
    )


def test_bad_photo_requests_are_refused(world: dict[str, Any]) -> None:
    client = world["client"]
    assert client.get("/api/photos/not-an-id").status_code == 400
    r = client.get("/api/photos/0123456789abcdef")
    assert r.status_code == 404 and r.json()["param"] == "id"
    assert client.get("/api/photos/..%2F..%2Fetc/photo.png").status_code in (400, 404)
    if "id" in world:
        pid = world["id"]
        r = client.get(f"/api/photos/{pid}/projected.npy")
        assert r.status_code == 400 and "file must be one of" in r.json()["error"]
        assert client.get(f"/api/photos/{pid}/edit?bits={BITS}&segment=1").status_code == 400  # no sigma
        r = client.get(f"/api/photos/{pid}/edit?bits={BITS}&segment=1&sigma=99")
        assert r.status_code == 400 and r.json()["param"] == "sigma"
        r = client.get(f"/api/photos/{pid}/edit?bits={BITS}&segment=1&sigma=1&extra=2")
        assert r.status_code == 400 and r.json()["param"] == "extra"


def test_a_photos_folder_that_is_a_symlink_is_refused(tiny_run_template: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from sfvq.explore.app import Explorer, create_app

    run = copy_run(tiny_run_template, tmp_path / "run")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run / "photos").symlink_to(outside, target_is_directory=True)
    client = TestClient(create_app(Explorer.open(run)), base_url=BASE, raise_server_exceptions=False)
    r = _post(client, _tiny_png())
    assert r.status_code == 409 and list(outside.iterdir()) == []
    assert client.get("/api/photos").status_code == 403  # the folder resolves outside the run


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()
