"""The report page: self-contained, escaped, anchors that resolve, the z-space note only for z."""

from html.parser import HTMLParser

import numpy as np
import pytest

from sfvq.io import save_png
from sfvq.report import Z_SPACE_NOTE, ReportData, data_uri, render_html, segment_anchor, usage_plot


class Collector(HTMLParser):
    """Collects tags, ids, in-page links and text of a page; fails on unbalanced tags."""

    VOID = {"img", "meta", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.imgs, self.ids, self.links, self.text, self.stack, self.tags = [], set(), [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        if "id" in a:
            assert a["id"] not in self.ids, f"duplicate id {a['id']}"
            self.ids.add(a["id"])
        if tag == "a":
            self.links.append(a.get("href"))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> (open: {self.stack[-3:]})"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Collector:
    c = Collector()
    c.feed(page)
    c.close()
    assert c.stack == [], f"unclosed tags {c.stack}"
    return c


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    png = lambda name: save_png(tmp_path / name, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))  # noqa: E731
    usage_plot({2: np.array([5, 0, 3]), 3: np.arange(7)}, tmp_path / "usage.png")
    segs = [
        {"bits": 2, "segment": i, "length": 1.5, "usage": 0.25, "std": 0.5, "edit": png(f"e{i}.png")}
        for i in range(3)
    ]
    return ReportData(
        title="run <script>alert(1)</script> & co",
        settings={"network": "x.pkl", "truncation psi": 0.7, "noise mode": "const", "seeds": [0, 1]},
        space={"kind": "w", "layer": None, "dim": 32},
        stages=[
            {
                "bits": 2,
                "mse": 1.0,
                "nmse": 0.5,
                "perplexity": 3.0,
                "used_segments": 3,
                "segments": 3,
                "seconds": 0.1,
            }
        ],
        smoothness=[
            {
                "bits": 2,
                "sfvq_image": 0.4,
                "kmeans_image": 1.0,
                "sfvq_latent": 0.3,
                "kmeans_latent": float("nan"),
            }
        ],
        maps={2: png("map.png")},
        empty={2: {1: "0.00% of samples nearby <tiny>"}},
        segments=segs,
        edit_settings={"bits": 2, "seeds": [0, 1], "sigmas": [-1.0, 0.0, 1.0], "layers": "all"},
        curve_plot=png("curve.png"),
        loss_plot=png("loss.png"),
        usage_plot=tmp_path / "usage.png",
        walk_gif=None,
        files={"model": "model.safetensors"},
    )


def test_report_is_self_contained_valid_and_escaped(data):
    page = render_html(data)
    c = parse(page)
    assert c.tags[0] == "html" and "title" in c.tags
    assert len(c.imgs) == 1 + 1 + 1 + 1 + 3  # loss, map, curve, usage, three edits
    for img in c.imgs:
        assert img["src"].startswith("data:image/png;base64,") and img.get("alt")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    text = " ".join(c.text)
    assert "0.00% of samples nearby <tiny>" in text and "corner 1" in text  # flagged corner listed
    assert "truncation psi" in text and "0.7" in text and "noise mode" in text and "const" in text
    assert Z_SPACE_NOTE not in text
    # Every in-page link resolves, and each segment's link reaches its edit grid.
    for href in c.links:
        assert href.startswith("#") and href[1:] in c.ids, href
    for s in data.segments:
        assert f"#{segment_anchor(2, s['segment'])}" in c.links


def test_z_space_report_says_so(data):
    data.space = {"kind": "z", "dim": 100}
    text = " ".join(parse(render_html(data)).text)
    assert Z_SPACE_NOTE in text
    assert "no structure" in text


def test_data_uri_round_trip_and_unknown_type(tmp_path):
    import base64

    p = save_png(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    uri = data_uri(p)
    assert base64.b64decode(uri.split(",", 1)[1]) == p.read_bytes()
    (tmp_path / "a.svg").write_text("<svg/>")
    with pytest.raises(ValueError, match="unknown image type"):
        data_uri(tmp_path / "a.svg")


def test_compare_page_embeds_each_grid_and_escapes_names(tmp_path):
    import base64
    import io

    from PIL import Image

    from sfvq.report import CompareSection, write_compare_page

    grid = Image.new("RGB", (6, 4), (10, 200, 30))
    sections = [
        CompareSection("sfvq", "w", grid, [("4:1", 0.5, {"bits": 4}), ("<b>", None, {"x": "&"})]),
        CompareSection("sefa", "w", grid, []),
    ]
    path = write_compare_page(
        tmp_path / "index.html",
        ["sfvq", "sefa"],
        "G<1>",
        [0, 3],
        [-3.0, 0.0, 3.0],
        "std",
        "all layers",
        sections,
    )
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and page.count("<h2>") == 2
    assert (
        "Directions of sfvq, sefa on G&lt;1&gt;" in page and "sigma -3, 0, 3 (std units); all layers" in page
    )
    assert "<td>&lt;b&gt;</td><td>-</td>" in page and "<td>4:1</td><td>0.5</td>" in page
    assert "{&#x27;x&#x27;: &#x27;&amp;&#x27;}" in page  # sources escaped, quotes included
    uri = page.split("<img src='")[1].split("'")[0]
    assert uri.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (6, 4) and decoded.getpixel((0, 0)) == (10, 200, 30)
    assert not list(tmp_path.glob(".*"))  # written atomically, no temporary file left


def test_report_states_the_resolution_and_what_was_left_out(data):
    data.image_resolution, data.full_resolution = 256, 1024
    data.left_out = ["edit grids of 12 of 15 segments (the least used)", "the walk"]
    data.full_size_hint = "Full size: sfvq edit <model>"
    text = " ".join(parse(render_html(data)).text)
    assert "rendered at 256 px, a preview of the generator's 1024 px" in text
    assert "Full size: sfvq edit <model>" in text
    assert "Left out to fit the time budget" in text and "12 of 15 segments" in text
    data.image_resolution, data.full_resolution, data.left_out = 32, 32, []
    text = " ".join(parse(render_html(data)).text)
    assert "rendered at 32 px, the generator's full resolution" in text and "Left out" not in text


def test_large_images_are_shrunk_for_the_screen(data, tmp_path):
    import base64
    import io

    from PIL import Image

    from sfvq.report import MAP_WIDTH, screen_data_uri

    rng = np.random.default_rng(1)
    big = save_png(tmp_path / "big_map.png", rng.integers(0, 255, (600, 3000, 3), dtype=np.uint8))
    uri = screen_data_uri(big)
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.size == (MAP_WIDTH, 410)
    assert len(uri) < big.stat().st_size  # smaller than the file itself
    small = save_png(tmp_path / "small.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    assert screen_data_uri(small) == data_uri(small)  # small files as they are
    data.maps = {2: big}
    page = parse(render_html(data))
    srcs = [img["src"] for img in page.imgs]
    assert uri in srcs
    map_tag = next(img for img in page.imgs if img["src"] == uri)
    assert map_tag.get("class") != "px"  # shrunk images are smoothed, not pixelated


def test_walk_is_an_embedded_video_when_small_and_named_when_large(data, tmp_path, monkeypatch):
    from sfvq import report
    from sfvq.render import write_gif, write_mp4

    frames = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(6)])
    data.walk_mp4 = write_mp4(tmp_path / "walk.mp4", frames, fps=6, min_size=16)
    data.walk_gif = write_gif(tmp_path / "walk.gif", frames, fps=6)
    data.files.update({"walk (MP4)": "walks/walk.mp4", "walk (GIF)": "walks/walk.gif"})
    page = render_html(data)
    assert '<video src="data:video/mp4;base64,' in page and "walks/walk.mp4" in page
    parse(page)
    monkeypatch.setattr(report, "EMBED_VIDEO_BYTES", 10)
    page = render_html(data)
    assert "<video" not in page and "data:image/gif;base64," in page  # the GIF instead
    monkeypatch.setattr(report, "EMBED_GIF_BYTES", 10)
    page = render_html(data)
    assert "data:image/gif" not in page and "too large to embed" in page and "walks/walk.mp4" in page
