"""Your own image on the explore page, in headless Chromium: upload a photo, see it projected and placed,
go to its place on the curve and edit it with the slider (skips like test_browser.py without Chromium)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_run, serving
from test_browser import (  # it skips (or, where required, fails) without Chromium and playwright
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    digest,
    expect,
    sync_playwright,
)


@pytest.fixture(scope="module")
def photo_page(
    tiny_run_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path]]:
    """The page on a private copy of the tiny run, and a photo (an image its generator drew, as a PNG)."""
    import torch
    from PIL import Image

    from sfvq.explore.app import Explorer, create_app
    from sfvq.generators.base import to_uint8

    base_dir = tmp_path_factory.mktemp("photos-browser")
    run = copy_run(tiny_run_template, base_dir / "run")
    explorer = Explorer.open(run)
    with torch.no_grad():
        face = to_uint8(explorer.space.render_full(explorer.space.encode_seeds([99])))[0]
    photo = base_dir / "photo.png"
    Image.fromarray(face).save(photo)
    problems: list[str] = []
    with (
        serving(create_app(explorer)) as base,
        tempfile.TemporaryDirectory(prefix="sfvq-chromium-") as profile,
        sync_playwright() as p,
    ):
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.goto(base + "/")
        expect(page.locator("body")).to_have_attribute("data-ready", "1")
        try:
            yield page, photo
        finally:
            context.close()
    assert problems == []


def test_upload_place_and_edit_a_photo(photo_page: tuple[Any, Path]) -> None:
    page, photo = photo_page
    page.set_input_files("#photo-file", str(photo))
    page.click("#photo-upload")
    expect(page.locator("#photo-status")).to_contain_text("projected and placed", timeout=120_000)
    expect(page.locator("#photo-result")).to_be_visible()
    expect(page.locator("#photo-place")).to_contain_text("t = ")
    expect(page.locator("#photo-list img")).to_have_count(1)
    # its place: the slider along the curve moves there
    page.click("#photo-goto")
    segment = int(page.input_value("#photo-segment"))
    t = float(page.input_value("#t"))
    assert segment <= t <= segment + 1
    # the edit slider: sigma 0 is the projection itself, another sigma another image
    expect(page.locator("#photo-edit")).to_have_attribute("data-sigma", "0")
    still = digest(page, "#photo-edit")
    page.fill("#photo-sigma", "4")
    page.dispatch_event("#photo-sigma", "input")
    expect(page.locator("#photo-edit")).to_have_attribute("data-sigma", "4")
    assert digest(page, "#photo-edit") != still
