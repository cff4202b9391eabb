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


# ---------------------------------------------------------------------------------------------- issue 14
def _ids_in_order(page: str) -> list[str]:
    import re

    return re.findall(r'<h2 id="([a-z]+)"', page)


def _decode(uri: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture
def mapped(data, tmp_path):
    """The fixture's report with 4-bit corner tiles (32 px) and a U-profile with one jump (corners 5 -> 6)."""
    rng = np.random.default_rng(3)
    data.tiles = {4: rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)}
    C = np.cumsum(np.full((16, 2), 0.1), axis=0)  # (16, 2) evenly spaced corners ...
    C[6:] += 5.0  # ... and one jump between corners 5 and 6
    from sfvq.mapquality import u_profile

    data.u_profiles = {4: u_profile(__import__("torch").from_numpy(C)).numpy()}
    data.empty = {4: {9: "no samples"}}
    data.run_dir = tmp_path
    data.run_label = "runs/demo"
    return data


def test_sections_open_on_the_map_and_walk_and_end_with_settings_and_files(mapped):
    page = render_html(mapped)
    c = parse(page)
    order = _ids_in_order(page)
    assert order[:2] == ["map", "walk"] and order[-2:] == ["settings", "files"]
    assert order.index("segments") < order.index("quality") < order.index("edits") < order.index("settings")
    # The first picture of the page is a row of the finest map (4 bits), before any other image.
    assert c.imgs[0]["alt"] == "corners 0-7 of the 4-bit curve"
    assert page.index('<h2 id="walk"') > page.index("corners 8-15 of the 4-bit curve")
    assert page.index("Run settings") > page.index('<h2 id="edits"')
    for href in c.links:  # the navigation still resolves
        assert href.startswith("#") and href[1:] in c.ids, href


def test_small_tiles_are_upscaled_nearest_pixel_exact():
    from sfvq.report import upscale_nearest

    rng = np.random.default_rng(0)
    t32 = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    up = upscale_nearest(t32)
    assert up.shape == (3, 96, 96, 3)
    for y, x in [(0, 0), (95, 95), (50, 7), (3, 94)]:  # every output pixel is its source pixel
        np.testing.assert_array_equal(up[:, y, x], t32[:, y // 3, x // 3])
    np.testing.assert_array_equal(up[:, ::3, ::3], t32)
    t64 = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    assert upscale_nearest(t64).shape == (2, 128, 128, 3)  # factor 2: at least 96 px
    big = rng.integers(0, 255, (2, 256, 256, 3), dtype=np.uint8)
    assert upscale_nearest(big) is big  # large tiles as they are


def test_large_tiles_are_shrunk_as_the_map_was_but_never_below_96_px():
    from sfvq.report import MAP_WIDTH, screen_tiles

    rng = np.random.default_rng(1)
    t = rng.integers(0, 255, (64, 300, 300, 3), dtype=np.uint8)
    assert screen_tiles(t).shape == (64, MAP_WIDTH // 8, MAP_WIDTH // 8, 3)  # 8 x 8 map in MAP_WIDTH
    t = rng.integers(0, 255, (1024, 120, 120, 3), dtype=np.uint8)
    assert screen_tiles(t).shape == (1024, 96, 96, 3)  # 32 x 32 would be 64 px: kept readable
    t = rng.integers(0, 255, (16, 32, 32, 1), dtype=np.uint8)
    assert screen_tiles(t).shape == (16, 96, 96, 1)  # small: enlarged, nearest


def test_map_rows_embed_the_upscaled_tiles_exactly(mapped):
    from sfvq.report import upscale_nearest

    c = parse(render_html(mapped))
    row = next(img for img in c.imgs if img["alt"] == "corners 0-7 of the 4-bit curve")
    assert row["src"].startswith("data:image/png;base64,") and row.get("class") == "px"
    pixels = _decode(row["src"])  # (h, w, 3)
    want = upscale_nearest(mapped.tiles[4])[3]  # (96, 96, 3): corner 3
    hits = [
        (y, x)
        for y in range(pixels.shape[0] - 95)
        for x in range(pixels.shape[1] - 95)
        if np.array_equal(pixels[y, x], want[0, 0]) and np.array_equal(pixels[y : y + 96, x : x + 96], want)
    ]
    assert len(hits) == 1
    pitch = (pixels.shape[1] - 3) / 8
    assert 3 * pitch < hits[0][1] < 4 * pitch  # the fourth cell of the row


def test_u_profile_is_drawn_under_the_map_aligned_with_the_gaps(mapped):
    import re

    page = render_html(mapped)
    section = page[page.index('<h2 id="map"') : page.index('<h2 id="walk"')]
    rows = re.findall(r'<div class="maprow"[^>]*><img[^>]*src="([^"]+)"[^>]*>(<svg.*?</svg>)</div>', section)
    assert len(rows) == 2  # 16 corners, 8 a row, each row with its profile directly under it
    prof = mapped.u_profiles[4]
    bars = {}
    for r, (src, svg) in enumerate(rows):
        width = _decode(src).shape[1]
        assert f'viewBox="0 0 {width:g} ' in svg
        for seg, x, w, h in re.findall(
            r'data-segment="(\d+)" x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="([\d.]+)"', svg
        ):
            bars[int(seg)] = (r, float(x) + float(w) / 2, float(h), width)
    assert sorted(bars) == list(range(15))  # one bar per segment, in curve order
    tallest = max(bars, key=lambda s: bars[s][2])
    assert tallest == int(np.argmax(prof)) == 5
    for seg, (r, centre, _, width) in bars.items():
        pitch = (width - 3) / 8
        col = seg - 8 * r
        if col < 7:  # between the centres of tiles seg and seg + 1 of the same row
            assert 1.5 + (col + 0.5) * pitch < centre < 1.5 + (col + 1.5) * pitch
        else:  # the step to the next row: at the row's right edge
            assert centre > 1.5 + 7.5 * pitch
    assert 'class="jump" data-segment="5"' in section  # over twice the median: drawn as a boundary
    assert "U-profile" in section


def _annotations(tmp_path, **changes):
    import json

    heat = save_png(tmp_path / "annotations" / "b2_s001.png", np.full((8, 8, 3), 200, np.uint8))
    doc = {
        "scorer": "avatars <classifier>",
        "seeds": [0, 1],
        "bits": {
            "2": [
                {
                    "segment": 1,
                    "heat": "annotations/b2_s001.png",
                    "locality": 0.63,
                    "effects": {"smile": 0.12},
                    "summary": "smile +0.12 <b>",
                    "layers": [2, 5],
                    "layer_share": 0.81,
                },
                {"segment": 0, "heat": "../../etc/passwd.png", "locality": None, "summary": "hair",
                 "layers": None, "layer_share": None},
                {"segment": "x"},
            ]
        },
    }  # fmt: skip
    doc.update(changes)
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    return heat


def test_segment_table_is_annotated_from_annotations_json(mapped, tmp_path):
    mapped.space = {"kind": "w", "dim": 32, "num_ws": 8}
    heat = _annotations(tmp_path)
    page = render_html(mapped)
    c = parse(page)
    section = page[page.index('<h2 id="segments"') : page.index('<h2 id="quality"')]
    assert "what it changes" in section and "layers" in section and "locality" in section
    assert "smile +0.12 &lt;b&gt;" in section and "avatars &lt;classifier&gt;" in section
    assert "2-4 of 0-7 (81 % of the effect)" in section  # stop exclusive -> inclusive range shown
    assert "0.63" in section and "hair" in section and "all (no style layers)" in section
    assert "1 unusable entr" in section  # the entry without a segment index
    heats = [img for img in c.imgs if "heat" in (img.get("class") or "")]
    assert len(heats) == 1 and heats[0]["src"] == data_uri(heat)  # ../ out of the run: not embedded
    assert int(heats[0]["width"]) >= 96
    assert "absent" not in section


def test_quality_section_from_quality_json(mapped, tmp_path):
    import json

    row = {"mse": 0.5, "mean_distance": 0.7, "topographic_error": 0.1, "kaski_lagus": 0.9,
           "trustworthiness": 0.95, "continuity": 0.93, "usage_kl": 0.2, "sparseness": 0.3,
           "entropy": 1.9, "smoothness": 0.45, "u_profile": [1.0, 2.0, 3.0]}  # fmt: skip
    doc = {
        "bits": {"2": row, "3": {**row, "mse": 0.25}},
        "baselines": {"kmeans_tour": {"2": {**row, "mse": 0.4}}, "som": {"2": {**row, "mse": 0.6}}},
        "recommended_bits": 3,
        "recommendation": "3 bits: the error halves from 2 bits <while> topography holds",
    }
    (tmp_path / "quality.json").write_text(json.dumps(doc))
    page = render_html(mapped)
    parse(page)
    section = page[page.index('<h2 id="quality"') : page.index('<h2 id="maps"')]
    assert "Recommended bitrate: 3 bits (8 corners)" in section
    assert "the error halves from 2 bits &lt;while&gt; topography holds" in section
    for header in ("MSE", "topographic error", "Kaski-Lagus", "trustworthiness", "usage KL", "smoothness"):
        assert f">{header}</th>" in section
    assert "<strong>3 bits</strong>" in section and ">0.25<" in section  # the recommended row marked
    assert "k-means, shortest tour (2-opt), 2 bits" in section and "1-D SOM, 2 bits" in section
    assert ">0.6<" in section
    assert "u_profile" not in section  # lists are not table columns


@pytest.mark.parametrize(
    "name, text, says",
    [
        ("annotations.json", "{not json", "annotations.json could not be read: it is not valid JSON"),
        ("annotations.json", '{"bits": [1, 2]}', 'annotations.json could not be read: it has no "bits"'),
        ("quality.json", '["bits"]', 'quality.json could not be read: it has no "bits"'),
        ("quality.json", '{"bits": {"two": {}}}', "quality.json could not be read: its"),
        ("quality.json", "\xff\xfe", "quality.json could not be read"),
    ],
)
def test_malformed_run_files_are_named_and_the_page_still_renders(mapped, tmp_path, name, text, says):
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    page = render_html(mapped)
    c = parse(page)
    text_all = " ".join(c.text)
    assert says in text_all
    cmd = "sfvq " + ("annotate" if name.startswith("annotations") else "quality") + " --run runs/demo"
    assert cmd in text_all and "sfvq report --run runs/demo" in text_all
    assert _ids_in_order(page)[0] == "map" and _ids_in_order(page)[-1] == "files"


def test_absent_run_files_say_how_to_make_them(mapped):
    text = " ".join(parse(render_html(mapped)).text)
    assert "annotations.json is absent" in text and "sfvq annotate --run runs/demo" in text
    assert "quality.json is absent" in text and "sfvq quality --run runs/demo" in text


def test_report_is_redrawn_from_report_json_with_the_files_added_later(mapped, tmp_path):
    from click.testing import CliRunner

    from sfvq.cli import main
    from sfvq.report import REPORT_INPUTS, load_report_data, write_report, write_report_inputs

    mapped.edit_settings["sigma_rule"] = "chosen from the data"
    write_report(tmp_path / "report.html", mapped)
    write_report_inputs(tmp_path, mapped)
    assert (tmp_path / REPORT_INPUTS).is_file() and (tmp_path / "maps" / "tiles_4bit.png").is_file()
    back = load_report_data(tmp_path)
    np.testing.assert_array_equal(back.tiles[4], mapped.tiles[4])  # the corner images, exactly
    np.testing.assert_allclose(back.u_profiles[4], mapped.u_profiles[4])
    assert back.maps == mapped.maps and back.segments == mapped.segments and back.title == mapped.title
    assert back.edit_settings["sigma_rule"] == "chosen from the data"
    _annotations(tmp_path)
    r = CliRunner().invoke(main, ["report", "--run", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "annotations.json: included" in r.output and "quality.json: absent" in r.output
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "smile +0.12" in page and "corners 0-7 of the 4-bit curve" in page
    (tmp_path / REPORT_INPUTS).write_text("{}")
    r = CliRunner().invoke(main, ["report", "--run", str(tmp_path)])
    assert r.exit_code != 0 and "not an sfvq report description" in r.output
