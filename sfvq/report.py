"""``report.html``: one self-contained page for a run (images embedded as data: URIs, no script, no URL).

The page is built from a :class:`ReportData` with plain string formatting; every piece of text goes
through :func:`html.escape`. Images are read from the run directory's files and embedded as base64, sized
for a screen (:func:`screen_data_uri`: small files as they are, large ones shrunk and JPEG-encoded), and
the walk as a small video, so that the page of a full-size generator still opens quickly. The page says
at which resolution its images were rendered and what a time budget left out.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sfvq.io import atomic_open, atomic_path

Z_SPACE_NOTE = (
    "This curve lives in the generator's input space z. A Gaussian z carries no structure for a curve to "
    "follow: it is round, every direction alike, so the curve has nothing to trace. In a throwaway "
    "experiment on the faces DCGAN, z-space corners collapsed to the origin and rendered as texture, "
    "while in the first layer's activations contiguous ranges of corners held pose, lighting, skin tone "
    "and caps. Read this map as a baseline; the default space (W, or the first layer's features) gives a "
    "map worth reading."
)

_MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
MAP_WIDTH = 2048  # px: widest a panoptic map is embedded (the file in maps/ keeps every pixel)
EDIT_WIDTH = 1280  # px: widest an edit grid is embedded
EMBED_AS_IS_BYTES = 300_000  # a file up to this size (and width) is embedded byte for byte
EMBED_VIDEO_BYTES = 4_000_000  # the walk's MP4 is embedded up to this size, else named
EMBED_GIF_BYTES = 2_000_000  # without an embeddable MP4, the GIF up to this size
JPEG_QUALITY = 88

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
img, video { max-width: 100%; } img.px { image-rendering: pixelated; }
.note { background: #fff4e5; border-left: 4px solid #e69500; padding: .6em 1em; }
.flag { color: #c81414; }
.scroll { overflow-x: auto; }
nav a { margin-right: 1em; }
"""


@dataclass
class ReportData:
    """Everything the report shows. Paths are files in the run directory; optional ones may be None."""

    title: str
    settings: dict[str, Any]  # run settings shown as a table (truncation and noise mode included)
    space: dict[str, Any]  # LatentSpace.describe()
    stages: list[dict[str, Any]]  # sfvq.fitting.summary_rows(model)
    smoothness: list[dict[str, Any]]  # per bits: sfvq_image, kmeans_image, sfvq_latent, kmeans_latent
    maps: dict[int, Path]  # bits -> panoptic map PNG
    empty: dict[int, dict[int, str]]  # bits -> {corner: reason}
    segments: list[dict[str, Any]]  # bits, segment, length, usage, std, edit (Path or None)
    edit_settings: dict[str, Any]  # bits, seeds, sigmas, layers
    curve_plot: Path | None = None
    loss_plot: Path | None = None
    usage_plot: Path | None = None
    walk_gif: Path | None = None
    files: dict[str, str] = field(default_factory=dict)  # name -> relative path of other outputs
    walk_mp4: Path | None = None
    image_resolution: int | None = None  # px the maps, walk and edits were rendered at (None: unknown)
    full_resolution: int | None = None  # the generator's own resolution
    left_out: list[str] = field(default_factory=list)  # what the time budget left out, one line each
    full_size_hint: str | None = None  # how to get full-size images (commands), shown with the note


def data_uri(path: str | Path) -> str:
    """The bytes of an image file as a ``data:`` URI (base64)."""
    path = Path(path)
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"cannot embed {path}: unknown image type {path.suffix!r}")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, fmt: str = ".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return _e(x)
    return _e(format(x, fmt)) if isinstance(x, (int, float)) else _e(x)


def _screen_image(path: str | Path, max_width: int) -> tuple[str, int]:
    """(data URI, width in px) of an image file sized for a screen (see :func:`screen_data_uri`)."""
    import io

    from PIL import Image

    path = Path(path)
    with Image.open(path) as im:
        width, height = im.size
        small = width <= max_width and path.stat().st_size <= EMBED_AS_IS_BYTES
        if small or path.suffix.lower() == ".gif":
            return data_uri(path), width
        rgb = im.convert("RGB")
    if width > max_width:
        height = max(1, round(height * max_width / width))
        width = max_width
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), width


def screen_data_uri(path: str | Path, max_width: int = MAP_WIDTH) -> str:
    """An image file as a ``data:`` URI sized for a screen: a file of at most ``max_width`` px and
    :data:`EMBED_AS_IS_BYTES` (or a GIF) goes in byte for byte; a larger one is shrunk to ``max_width`` px
    wide (antialiased, aspect kept) and JPEG-encoded, which keeps a full-size run's page a few MB."""
    return _screen_image(path, max_width)[0]


def _img(path: Path | None, alt: str, max_width: int = MAP_WIDTH) -> str:
    """An embedded image; small ones (a 32 px generator's maps) keep hard pixels when the page enlarges
    them, large ones are smoothed when it shrinks them."""
    if path is None:
        return ""
    uri, width = _screen_image(path, max_width)
    cls = ' class="px"' if width <= 600 else ""
    return f'<img{cls} src="{uri}" alt="{_e(alt)}">'


def _walk_html(d: ReportData) -> str:
    """The walk: the MP4 as an embedded video when small, else the GIF when small, else the files named."""
    mp4 = d.walk_mp4 if d.walk_mp4 is not None and Path(d.walk_mp4).is_file() else None
    gif = d.walk_gif if d.walk_gif is not None and Path(d.walk_gif).is_file() else None
    if mp4 is not None and mp4.stat().st_size <= EMBED_VIDEO_BYTES:
        uri = "data:video/mp4;base64," + base64.b64encode(mp4.read_bytes()).decode("ascii")
        return f'<video src="{uri}" controls loop muted autoplay playsinline></video>'
    if gif is not None and gif.stat().st_size <= EMBED_GIF_BYTES:
        return _img(gif, "walk along the curve")
    names = [d.files.get(k) for k in ("walk (MP4)", "walk (GIF)") if d.files.get(k)]
    return f"<p>The walk is too large to embed: open {_e(' or '.join(names) or 'walks/')}.</p>"


def _table(headers: list[str], rows: list[list[str]], left: int = 0) -> str:
    """An HTML table; cells are already-escaped HTML; the first ``left`` columns are left-aligned."""

    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def segment_anchor(bits: int, segment: int) -> str:
    """The in-page id of a segment's edit grid."""
    return f"edit-{bits}bit-seg{segment:03d}"


def render_html(d: ReportData) -> str:
    """The report page as a string."""
    parts: list[str] = []
    add = parts.append
    add(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(d.title)}</title>')
    add(f"<style>{_CSS}</style></head><body>")
    add(f"<h1>{_e(d.title)}</h1>")
    add(
        '<nav><a href="#settings">settings</a><a href="#smoothness">smoothness</a><a href="#maps">maps</a>'
        '<a href="#curve">curve</a><a href="#walk">walk</a><a href="#segments">segments</a>'
        '<a href="#edits">edits</a></nav>'
    )
    if d.space.get("kind") == "z":
        add(f'<p class="note"><strong>z space.</strong> {_e(Z_SPACE_NOTE)}</p>')
    if d.image_resolution is not None:
        add(f"<p>{_e(resolution_text(d.image_resolution, d.full_resolution))}")
        if d.full_size_hint:
            add(f" {_e(d.full_size_hint)}")
        add("</p>")
    if d.left_out:
        items = "".join(f"<li>{_e(line)}</li>" for line in d.left_out)
        add(f'<div class="note"><strong>Left out to fit the time budget:</strong><ul>{items}</ul></div>')

    # Settings.
    add('<h2 id="settings">Run settings</h2>')
    rows = [[_e(k), _e(_plain(v))] for k, v in d.settings.items()]
    add(_table(["setting", "value"], rows, left=2))
    add("<h3>Latent space</h3>")
    add(_table(["field", "value"], [[_e(k), _e(_plain(v))] for k, v in d.space.items()], left=2))
    if d.files:
        add("<h3>Files in the run directory</h3>")
        add(_table(["output", "path"], [[_e(k), _e(v)] for k, v in d.files.items()], left=2))

    # Fit.
    add("<h2>Fit</h2>")
    rows = [
        [
            _e(r["bits"]),
            _num(r["mse"], ".5g"),
            _num(r["nmse"], ".4f"),
            _num(r["perplexity"], ".1f"),
            _e(f"{r['used_segments']}/{r['segments']}"),
            _num(r["seconds"], ".2f"),
        ]
        for r in d.stages
    ]
    add(_table(["bits", "MSE", "NMSE", "perplexity", "used segments", "seconds"], rows))
    add(_img(d.loss_plot, "training loss per stage and error per bitrate"))

    # Smoothness.
    add('<h2 id="smoothness">Smoothness</h2>')
    add(
        "<p>Mean distance between consecutive corners divided by the mean distance over all pairs of "
        "corners: 1.0 means the order says nothing; the lower, the more alike neighbours on the curve "
        "are. Images are "
        "compared by mean absolute pixel difference (downsampled to at most 32 px), space vectors by "
        "Euclidean distance. The baseline is k-means with as many centroids, in the order k-means returns "
        "them, rendered the same way.</p>"
    )
    rows = [
        [
            _e(r["bits"]),
            _e(2 ** r["bits"]),
            _num(r["sfvq_image"], ".3f"),
            _num(r["kmeans_image"], ".3f"),
            _num(r["sfvq_latent"], ".3f"),
            _num(r["kmeans_latent"], ".3f"),
        ]
        for r in d.smoothness
    ]
    add(
        _table(
            ["bits", "corners", "SFVQ (images)", "k-means (images)", "SFVQ (space)", "k-means (space)"], rows
        )
    )

    # Maps.
    add('<h2 id="maps">Panoptic maps</h2>')
    add(
        "<p>The image of every corner in curve order (index under each). Corners in empty regions, where "
        'no data projects near them, are framed and labelled in <span class="flag">red</span>. One long '
        "strip per bitrate is in <code>maps/</code>.</p>"
    )
    for b in sorted(d.maps):
        add(f'<h3 id="map-{b}bit">{_e(b)} bits ({_e(2**b)} corners)</h3>')
        empty = d.empty.get(b, {})
        if empty:
            items = "".join(f"<li>corner {_e(k)}: {_e(why)}</li>" for k, why in sorted(empty.items()))
            add(f'<p class="flag">{_e(len(empty))} corner(s) in empty regions:</p><ul>{items}</ul>')
        add(f'<div class="scroll">{_img(d.maps[b], f"panoptic map at {b} bits", MAP_WIDTH)}</div>')

    # Curve.
    add('<h2 id="curve">The curve over the data</h2>')
    add("<p>The space vectors on their first two principal components, with the curve of each bitrate.</p>")
    add(_img(d.curve_plot, "the data on two principal components with the curve drawn over it"))

    add('<h2 id="walk">Walk along the curve</h2>')
    if d.walk_gif is not None or d.walk_mp4 is not None:
        files = [d.files.get(k) for k in ("walk (MP4)", "walk (GIF)") if d.files.get(k)]
        add(
            "<p>Points at evenly spaced positions from the first corner to the last (finest bitrate); "
            f"the same walk is in {_e(' and '.join(files) or 'walks/')}.</p>"
        )
        add(_walk_html(d))
    else:
        add("<p>No walk was rendered.</p>")

    # Segments.
    eb = d.edit_settings.get("bits")
    add('<h2 id="segments">Segments</h2>')
    add(_img(d.usage_plot, "segment usage"))
    add(
        f"<p>Segments of the {_e(eb)}-bit curve: length, usage (share of samples projecting onto it) and "
        "the std of the data projected on its unit direction, the unit of the edit sigmas. "
        "Click an index for its edit grid.</p>"
    )
    rows = []
    for s in d.segments:
        idx = _e(s["segment"])
        if s.get("edit") is not None:
            idx = f'<a href="#{segment_anchor(s["bits"], s["segment"])}">{idx}</a>'
        rows.append(
            [
                _e(s["bits"]),
                idx,
                _e(f"{s['segment']} \u2192 {s['segment'] + 1}"),
                _num(s["length"]),
                _num(100 * s["usage"], ".2f") + " %",
                _num(s["std"]),
            ]
        )
    add(_table(["bits", "index", "corners", "length", "usage", "std along it"], rows))

    # Edits.
    add('<h2 id="edits">Edits along the segment directions</h2>')
    es = d.edit_settings
    add(
        f"<p>Rows: seeds {_e(_plain(es.get('seeds')))}; columns: sigma {_e(_plain(es.get('sigmas')))} "
        f"(in units of the std of the data along the direction). Layers edited: {_e(es.get('layers'))}. "
        "Direction of segment i: corner i+1 minus corner i, unit length.</p>"
    )
    for s in d.segments:
        if s.get("edit") is None:
            continue
        anchor = segment_anchor(s["bits"], s["segment"])
        add(f'<h3 id="{anchor}">{_e(s["bits"])} bits, segment {_e(s["segment"])}</h3>')
        add(_img(s["edit"], f"edits along segment {s['segment']}", EDIT_WIDTH))
    add("</body></html>\n")
    return "\n".join(parts)


def resolution_text(image_resolution: int, full_resolution: int | None) -> str:
    """The sentence that says at which resolution a run's pictures were rendered."""
    if full_resolution is None or image_resolution >= full_resolution:
        return f"Images rendered at {image_resolution} px, the generator's full resolution."
    return (
        f"Images rendered at {image_resolution} px, a preview of the generator's {full_resolution} px "
        "(maps, walk and edits)."
    )


def _plain(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_plain(x) for x in v)
    if v is None:
        return "-"
    return str(v)


def write_report(path: str | Path, data: ReportData) -> Path:
    """Write the report page to ``path`` atomically."""
    text = render_html(data)
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


# ---------------------------------------------------------------------------------------------- compare
@dataclass
class CompareSection:
    """One method of ``sfvq compare``: its edit grid and, per direction, (name, std or None, source)."""

    method: str
    space: str  # LatentSpace.name
    grid: Any  # PIL image: rows = directions, columns = seed, then sigma
    directions: list[tuple[str, float | None, Any]]


def png_data_uri(image: Any) -> str:
    """A PIL image as a PNG ``data:`` URI (base64)."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def compare_html(
    methods: list[str],
    generator: str,
    seeds: list[int],
    sigma: list[float],
    units: str,
    where: str,
    sections: list[CompareSection],
) -> str:
    """The ``sfvq compare`` page (``index.html``): each method's edit grid (embedded) and directions."""
    e = html.escape
    parts = []
    for sec in sections:
        rows = "".join(
            f"<tr><td>{e(name)}</td><td>{'-' if std is None else f'{std:.4g}'}</td>"
            f"<td><code>{e(str(source))}</code></td></tr>"
            for name, std, source in sec.directions
        )
        parts.append(
            f"<h2>{e(sec.method)} <small>({e(sec.space)})</small></h2>"
            f"<img src='{png_data_uri(sec.grid)}' alt='{e(sec.method)}'>"
            f"<table><tr><th>direction</th><th>std</th><th>source</th></tr>{rows}</table>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>sfvq compare</title>"
        "<style>body{font-family:sans-serif;margin:1em}img{image-rendering:pixelated;max-width:100%}"
        "td,th{padding:2px 8px;text-align:left;font-size:small}</style></head><body>"
        f"<h1>Directions of {e(', '.join(methods))} on {e(generator)}</h1>"
        f"<p>Seeds {e(', '.join(map(str, seeds)))}; "
        f"sigma {e(', '.join(f'{s:g}' for s in sigma))} ({units} units); {e(where)}. "
        "Rows: directions; columns: seed, then sigma.</p>" + "".join(parts) + "</body></html>"
    )


def write_compare_page(
    path: str | Path,
    methods: list[str],
    generator: str,
    seeds: list[int],
    sigma: list[float],
    units: str,
    where: str,
    sections: list[CompareSection],
) -> Path:
    """Write :func:`compare_html` to ``path`` atomically."""
    text = compare_html(methods, generator, seeds, sigma, units, where, sections)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def usage_plot(usage: dict[int, np.ndarray], path: str | Path) -> Path:
    """Bar charts of segment usage (share of samples per segment), one panel per bitrate given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(usage)
    fig, axes = plt.subplots(1, n, figsize=(max(4.5, 5.0 * n), 2.8), squeeze=False)
    for ax, (b, u) in zip(axes[0], sorted(usage.items()), strict=True):
        u = np.asarray(u, dtype=np.float64)
        share = u / u.sum() if u.sum() > 0 else u
        ax.bar(np.arange(len(share)), 100 * share, width=0.9, color="tab:blue")
        ax.axhline(100 / len(share), color="tab:red", lw=0.8, ls="--", label="uniform")
        ax.set_xlabel("segment")
        ax.set_ylabel("% of samples")
        ax.set_title(f"segment usage, {b} bits", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


__all__ = [
    "Z_SPACE_NOTE",
    "CompareSection",
    "ReportData",
    "compare_html",
    "data_uri",
    "png_data_uri",
    "render_html",
    "resolution_text",
    "screen_data_uri",
    "segment_anchor",
    "usage_plot",
    "write_compare_page",
    "write_report",
]
