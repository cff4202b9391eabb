"""The explorer with a run's annotations (sfvq annotate): segments carry them, heat maps are served,
``layers=auto`` edits and saves with the annotated range."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BITS, copy_run
from PIL import Image

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def annotated(tiny_run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from starlette.testclient import TestClient

    from sfvq.annotate import annotate_run
    from sfvq.explore.app import Explorer, create_app
    from sfvq.runs import Run

    run = copy_run(tiny_run_template, tmp_path_factory.mktemp("explore-annotated") / "run")
    annotate_run(Run.open(run), BITS, seeds=[0, 1], progress=False)
    explorer = Explorer.open(run)
    client = TestClient(create_app(explorer), base_url=BASE, raise_server_exceptions=False)
    client.explorer = explorer
    client.run = run
    return client


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_segments_carry_their_annotations(annotated: Any) -> None:
    data = annotated.get(f"/api/segments?bits={BITS}").json()
    assert data["annotated"] is True
    saved = json.loads((annotated.run / "annotations.json").read_text())["bits"][str(BITS)]
    for row, note in zip(data["segments"], saved, strict=True):
        a = row["annotation"]
        assert a["summary"] == note["summary"] and a["locality"] == note["locality"]
        lo, hi = note["layers"]
        assert a["layers"] == (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}")
        heat = annotated.get(a["heat"])
        assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
        assert np.array_equal(pixels(heat.content), pixels((annotated.run / note["heat"]).read_bytes()))
    # Bitrates without annotations have none; a heat map that is not there is a 404.
    other = annotated.get("/api/segments?bits=2").json()
    assert other["annotated"] is False and all(r["annotation"] is None for r in other["segments"])
    assert annotated.get("/api/heat?bits=2&segment=0").status_code == 404
    assert annotated.get(f"/api/heat?bits={BITS}&segment=99").status_code == 400


def test_layers_auto_uses_the_annotated_range(annotated: Any) -> None:
    note = json.loads((annotated.run / "annotations.json").read_text())["bits"][str(BITS)][2]
    lo, hi = note["layers"]
    text = "" if (lo, hi) == (0, 8) else f"&layers={lo}-{hi - 1}"
    url = f"/api/edit?bits={BITS}&segment=2&seeds=0&sigma=3"
    auto = annotated.get(url + "&layers=auto")
    assert auto.status_code == 200
    assert np.array_equal(pixels(auto.content), pixels(annotated.get(url + text).content))
    r = annotated.post(
        "/api/directions", json={"name": "auto-2", "bits": BITS, "segment": 2, "layers": "auto"}
    )
    assert r.status_code == 201, r.text
    saved = r.json()["saved"]
    assert [saved["layer_start"], saved["layer_stop"]] in ([lo, hi], [None, None])


def test_a_broken_annotations_file_is_ignored(tiny_run_template: Path, tmp_path: Path) -> None:
    from sfvq.explore.app import Explorer

    run = copy_run(tiny_run_template, tmp_path / "run")
    (run / "annotations.json").write_text(
        '{"bits": {"3": [{"segment": "x"}, 5, {"segment": 1, "layers": "all"}]}}'
    )
    data = Explorer.open(run).segments(BITS)
    assert data["annotated"] is True
    assert data["segments"][1]["annotation"]["layers"] is None and data["segments"][0]["annotation"] is None
    (run / "annotations.json").write_text("not json")
    assert Explorer.open(run).segments(BITS)["annotated"] is False
