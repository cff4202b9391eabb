"""The explore page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Python playwright;
nothing is downloaded): it loads, the slider changes the image, a selected segment shows its edits, a
named direction lands in the run's file and the augmentation button writes and shows a batch.

Without /usr/bin/chromium these tests skip, unless SFVQ_REQUIRE_BROWSER=1 (set by .ci/run), where they fail.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BITS, serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
K = 2**BITS
TIMEOUT_MS = 20_000


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (install Debian's chromium: bash scripts/install-browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is missing (pip install -e '.[dev]')"
    return None


_missing = _browser_missing()
if _missing is not None:
    if os.environ.get("SFVQ_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required (SFVQ_REQUIRE_BROWSER=1) but {_missing}", pytrace=False)
    pytest.skip(_missing, allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_run: Path) -> Iterator[tuple[str, Path]]:
    from sfvq.explore.app import Explorer, create_app

    with serving(create_app(Explorer.open(tiny_run))) as base:
        yield base, tiny_run


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    """Chromium with a fresh profile folder; the profile is deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="sfvq-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def problems() -> list[str]:
    """Page errors, console errors and requests to other origins seen by ``page`` (must stay empty)."""
    return []


@pytest.fixture
def page(server: tuple[str, Path], browser_context: Any, problems: list[str]) -> Iterator[Any]:
    """The page loaded and ready; fails the test on any page error, console error or foreign request."""
    base, _ = server
    page = browser_context.new_page()
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on(
        "request",
        lambda r: None if r.url.startswith((base, "data:", "blob:")) else problems.append(f"request {r.url}"),
    )
    page.goto(base + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    yield page
    page.close()
    assert problems == []


def digest(page: Any, selector: str) -> tuple[int, int, int]:
    """(width, height, FNV-1a hash of the RGBA pixels) of an <img> as decoded, read through a canvas."""
    return tuple(
        page.evaluate(
            """(sel) => {
                const img = document.querySelector(sel);
                const c = document.createElement("canvas");
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext("2d");
                g.drawImage(img, 0, 0);
                const data = g.getImageData(0, 0, c.width, c.height).data;
                let h = 0x811c9dc5;
                for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i], 0x01000193) >>> 0;
                return [c.width, c.height, h];
            }""",
            selector,
        )
    )


def test_page_loads(page: Any) -> None:
    expect(page.locator("#run-info")).to_contain_text("space w (32-D)")
    expect(page.locator("#run-info")).to_contain_text("8 style layers")
    assert page.locator("#bits option").all_inner_texts() == [
        "2 bits (4 corners)",
        f"{BITS} bits ({K} corners)",
    ]
    assert page.locator("#bits").input_value() == str(BITS)
    expect(page.locator("#map .corner")).to_have_count(K)
    expect(page.locator("#map .segment")).to_have_count(K - 1)
    expect(page.locator("#live")).to_have_attribute("data-t", "0")
    assert page.evaluate("document.getElementById('live').naturalWidth") == 32
    # every corner thumbnail arrived
    page.wait_for_load_state("networkidle")
    widths = page.evaluate(
        "Array.from(document.querySelectorAll('#map .corner img')).map(i => i.naturalWidth)"
    )
    assert widths == [32] * K
    # switching the bitrate rebuilds the map
    page.select_option("#bits", "2")
    expect(page.locator("#map .corner")).to_have_count(4)
    assert page.get_attribute("#t", "max") == "3"


def test_slider_changes_the_image(page: Any) -> None:
    before = digest(page, "#live")
    page.focus("#t")
    page.keyboard.press("End")
    expect(page.locator("#live")).to_have_attribute("data-t", str(K - 1))
    expect(page.locator("#t-value")).to_have_text(f"{K - 1:.2f}")
    after = digest(page, "#live")
    assert after[:2] == before[:2] == (32, 32) and after != before
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#live")).to_have_attribute("data-t", f"{K - 1 - 0.01:.2f}")
    expect(page.locator("#latency")).to_contain_text("ms")


def test_selecting_a_segment_shows_its_edits(page: Any) -> None:
    assert page.is_hidden("#edit-section")
    page.click("#map .segment[data-index='2']")
    expect(page.locator("#edit-section")).to_be_visible()
    expect(page.locator("#map .segment[data-index='2']")).to_have_class("segment selected")
    expect(page.locator("#seg-label")).to_have_text(f"{BITS}:2")
    edits = page.locator("#edits")
    expect(edits).to_have_attribute("data-segment", "2")
    expect(edits).to_have_attribute("data-seeds", "0-3")
    expect(page.locator("#live")).to_have_attribute("data-t", "2.5")  # the live image moves to the segment
    shape = page.evaluate(
        "[document.getElementById('edits').naturalWidth, document.getElementById('edits').naturalHeight]"
    )
    assert shape[0] > 3 * 32 and shape[1] > 4 * 32  # 3 columns (-sigma, 0, +sigma), 4 seeds
    first = digest(page, "#edits")
    # a stronger sigma and a layer range give another grid
    page.focus("#sigma")
    page.keyboard.press("End")
    expect(edits).to_have_attribute("data-sigma", "20")
    page.fill("#layer-start", "4")
    expect(edits).to_have_attribute("data-layers", "4-7")
    assert digest(page, "#edits") != first
    # clicking a corner selects it instead and moves the slider there
    page.click("#map .corner[data-index='5']")
    expect(page.locator("#live")).to_have_attribute("data-t", "5")
    expect(page.locator("#map .corner[data-index='5']")).to_have_class("corner selected")
    assert page.is_hidden("#edit-section")


def test_named_direction_lands_in_the_file(page: Any, server: tuple[str, Path], problems: list[str]) -> None:
    from sfvq.directions import DirectionSet

    _, run = server
    page.click("#map .segment[data-index='4']")
    page.fill("#layer-start", "2")
    page.fill("#layer-stop", "5")
    page.fill("#dir-name", "from-browser")
    page.click("#save-dir")
    expect(page.locator("#save-status")).to_have_class("status ok")
    expect(page.locator("#save-status")).to_contain_text('saved "from-browser"')
    d = DirectionSet.load(run / "directions")["from-browser"]
    assert (d.layer_start, d.layer_stop) == (2, 6)
    assert d.source["bits"] == BITS and d.source["segments"] == [4]
    expect(page.locator("#saved tbody tr")).to_contain_text(["from-browser"])
    # the same name again is refused, with the server's message shown
    page.click("#save-dir")
    expect(page.locator("#save-status")).to_have_class("status bad")
    expect(page.locator("#save-status")).to_contain_text("already saved")
    page.fill("#dir-name", "../escape")
    page.click("#save-dir")
    expect(page.locator("#save-status")).to_contain_text("not allowed")
    # the browser logs the two refusals (409, 400) as failed loads; nothing else may have gone wrong
    refused = [p for p in problems if "status of 409" in p or "status of 400" in p]
    assert len(refused) == 2, problems
    for p in refused:
        problems.remove(p)


def test_augment_button_writes_and_shows_a_batch(page: Any, server: tuple[str, Path]) -> None:
    _, run = server
    page.click("#map .segment[data-index='1']")
    page.fill("#aug-name", "from-browser")
    page.fill("#aug-n", "6")
    page.click("#augment")
    expect(page.locator("#aug-preview")).to_have_attribute("data-name", "from-browser")
    expect(page.locator("#aug-status")).to_contain_text(
        f"wrote 6 images along {BITS}:1 into augment/from-browser/"
    )
    assert len(list((run / "augment/from-browser/images").iterdir())) == 6
    assert page.evaluate("document.getElementById('aug-preview').naturalWidth") > 6 * 32


def test_segments_filter_by_their_annotations(page: Any, server: tuple[str, Path]) -> None:
    """A hand-made annotations.json: the filter dims the segments whose summary lacks the words, lists the
    others, and a selected segment shows its summary; layers auto sends layers=auto."""
    import json

    _, run = server
    summaries = ["smile +0.30", "age +4.0", "smile -0.2, yaw +0.1", "yaw +0.2", "", "hair +0.1", "smile +0.1"]
    rows = [{"segment": i, "summary": s, "locality": 0.5, "layers": [1, 3], "layer_share": 0.9}
            for i, s in enumerate(summaries)]  # fmt: skip
    path = run / "annotations.json"
    path.write_text(json.dumps({"bits": {str(BITS): rows}}))
    try:
        page.reload()
        expect(page.locator("body")).to_have_attribute("data-ready", "1")
        expect(page.locator("#filter-box")).to_be_visible()
        page.fill("#seg-filter", "smile")
        expect(page.locator("#seg-matches button")).to_have_count(3)
        expect(page.locator("#filter-count")).to_have_text(f"3 of {K - 1} segments match")
        expect(page.locator("#map .segment.dim")).to_have_count(K - 1 - 3)
        page.fill("#seg-filter", "smile yaw")
        expect(page.locator("#seg-matches button")).to_have_count(1)
        page.click("#seg-matches button")
        expect(page.locator("#seg-label")).to_have_text(f"{BITS}:2")
        expect(page.locator("#seg-note")).to_contain_text("smile -0.2, yaw +0.1")
        expect(page.locator("#seg-note")).to_contain_text("layers 1-2 keep 90%")
        page.check("#layers-auto")
        expect(page.locator("#edits")).to_have_attribute("data-layers", "auto")
        page.fill("#seg-filter", "")
        expect(page.locator("#map .segment.dim")).to_have_count(0)
    finally:
        path.unlink()
