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
from collections.abc import Sequence
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
MIN_TILE_PX = 96  # px: corner images narrower than this are enlarged (nearest neighbour) in the page
ROW_TILES = 8  # corners per row of a map in the page; the U-profile is drawn under each row
MAP_PAD = 3  # px between the tiles of a map row
UPROFILE_HEIGHT = 40  # px (in the row image's pixels) of the U-profile under a row
EDIT_MIN_WIDTH = 720  # px: a narrower edit grid is shown enlarged by an integer factor (hard pixels)
WALK_MIN_WIDTH = 256  # px: the same for the walk's GIF
ANNOTATIONS_FILE = "annotations.json"  # written by `sfvq annotate --run R`
QUALITY_FILE = "quality.json"  # written by `sfvq quality --run R`

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; } td.l:first-child { white-space: nowrap; }
img, video { max-width: 100%; } img.px, video.px { image-rendering: pixelated; }
.maprow img { width: 100%; display: block; } .maprow { margin-bottom: .5em; }
svg.uprofile { display: block; height: 40px; }
svg.uprofile rect.bar { fill: #7a8fb0; } svg.uprofile rect.jump { fill: #1f3a68; }
svg.uprofile line.median { stroke: #999; stroke-dasharray: 3 3; } svg.uprofile line.base { stroke: #555; }
.absent { color: #555; font-style: italic; } .recommend { font-size: 1.05em; }
img.heat { vertical-align: middle; }
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
    tiles: dict[int, np.ndarray] = field(default_factory=dict)  # bits -> corner images (K, H, W, C) uint8
    u_profiles: dict[int, Any] = field(default_factory=dict)  # bits -> (K-1,) consecutive corner distances
    run_dir: Path | None = None  # where annotations.json and quality.json are read from (None: not read)
    run_label: str | None = None  # the run as commands name it (default: run_dir)


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


def _img(path: Path | None, alt: str, max_width: int = MAP_WIDTH, min_width: int = 0) -> str:
    """An embedded image; small ones (a 32 px generator's maps) keep hard pixels when the page enlarges
    them, large ones are smoothed when it shrinks them. An image narrower than ``min_width`` is shown
    enlarged by the smallest integer factor that reaches it (nearest neighbour, in the browser)."""
    if path is None:
        return ""
    uri, width = _screen_image(path, max_width)
    cls = ' class="px"' if width <= 600 else ""
    size = f' width="{width * -(-min_width // width)}"' if 0 < width < min_width else ""
    return f'<img{cls}{size} src="{uri}" alt="{_e(alt)}">'


def _walk_html(d: ReportData) -> str:
    """The walk: the MP4 as an embedded video when small, else the GIF when small, else the files named."""
    mp4 = d.walk_mp4 if d.walk_mp4 is not None and Path(d.walk_mp4).is_file() else None
    gif = d.walk_gif if d.walk_gif is not None and Path(d.walk_gif).is_file() else None
    if mp4 is not None and mp4.stat().st_size <= EMBED_VIDEO_BYTES:
        uri = "data:video/mp4;base64," + base64.b64encode(mp4.read_bytes()).decode("ascii")
        return f'<video src="{uri}" class="px" controls loop muted autoplay playsinline></video>'
    if gif is not None and gif.stat().st_size <= EMBED_GIF_BYTES:
        return _img(gif, "walk along the curve", min_width=WALK_MIN_WIDTH)
    names = [d.files.get(k) for k in ("walk (MP4)", "walk (GIF)") if d.files.get(k)]
    return f"<p>The walk is too large to embed: open {_e(' or '.join(names) or 'walks/')}.</p>"


def _table(headers: list[str], rows: list[list[str]], left: int = 0, left_cols: Sequence[int] = ()) -> str:
    """An HTML table; cells are already-escaped HTML; the first ``left`` columns (and ``left_cols``) are
    left-aligned."""

    def cls(i: int) -> str:
        return ' class="l"' if i < left or i in left_cols else ""

    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def upscale_nearest(tiles: np.ndarray, min_px: int = MIN_TILE_PX) -> np.ndarray:
    """Corner images (K, H, W, C) uint8 enlarged by the smallest integer factor that makes them at least
    ``min_px`` wide, each pixel repeated (nearest neighbour: no smoothing, a 32 px avatar stays crisp);
    images already that wide come back as they are. -> (K, H*f, W*f, C)."""
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.dtype != np.uint8:
        raise ValueError(f"expected (K, H, W, C) uint8 tiles, got {tiles.shape} {tiles.dtype}")
    f = max(1, -(-min_px // tiles.shape[2]))
    if f == 1:
        return tiles
    return np.repeat(np.repeat(tiles, f, axis=1), f, axis=2)  # (K, H*f, W*f, C)


def _pil_data_uri(im: Any, max_width: int) -> tuple[str, int, int]:
    """(data URI, width, height) of a PIL image for a screen: PNG when it is at most ``max_width`` px and
    :data:`EMBED_AS_IS_BYTES`, else shrunk to ``max_width`` (antialiased) and JPEG-encoded."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    if im.width <= max_width:
        im.save(buf, format="PNG")
        if buf.tell() <= EMBED_AS_IS_BYTES:
            return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), *im.size
    rgb = im.convert("RGB")
    if rgb.width > max_width:
        rgb = rgb.resize(
            (max_width, max(1, round(rgb.height * max_width / rgb.width))), Image.Resampling.LANCZOS
        )
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), *rgb.size


def uprofile_svg(
    values: Sequence[float], first: int, cols: int, width: float, pad: float, vmax: float, median: float
) -> str:
    """The U-profile under one row of a map: an inline SVG as wide as the row's image (``width`` px in
    the image's own pixels, scaled with it), with a bar for each segment ``first + c -> first + c + 1``
    of the row's corners (``values``: those segments' corner distances, at most ``cols``), centred on the
    gap between the two tiles (the last one, leading to the next row, at the right edge). Tall bars are
    where the curve jumps: region boundaries between the tiles above them. Bars above twice the median
    are drawn darker; the dashed line is the median."""
    h = UPROFILE_HEIGHT
    pitch = (width - pad) / cols  # px from one tile's left edge to the next one's
    bar = max(2.0, 0.35 * pitch)
    parts = [
        f'<svg class="uprofile" viewBox="0 0 {width:g} {h}" width="100%" preserveAspectRatio="none" '
        f'role="img" aria-label="U-profile of corners {first}-{first + len(values)}">'
    ]
    for c, v in enumerate(values):
        seg = first + c
        x = pad / 2 + (c + 1) * pitch  # the gap between tile c and c+1
        x = min(x, width - bar / 2)  # the step to the next row: at the right edge
        top = h - 1 - (h - 4) * (float(v) / vmax if vmax > 0 else 0.0)
        cls = "jump" if median > 0 and v > 2 * median else "bar"
        parts.append(
            f'<rect class="{cls}" data-segment="{seg}" x="{x - bar / 2:.2f}" y="{top:.2f}" width="{bar:.2f}" '
            f'height="{h - 1 - top:.2f}"><title>corners {seg} \u2192 {seg + 1}: {float(v):.4g}</title></rect>'
        )
    if vmax > 0 and median > 0:
        y = h - 1 - (h - 4) * median / vmax
        parts.append(f'<line class="median" x1="0" x2="{width:g}" y1="{y:.2f}" y2="{y:.2f}"></line>')
    parts.append(f'<line class="base" x1="0" x2="{width:g}" y1="{h - 0.5}" y2="{h - 0.5}"></line></svg>')
    return "".join(parts)


def screen_tiles(tiles: np.ndarray) -> np.ndarray:
    """Corner images (K, H, W, C) sized for the page: small ones enlarged (:func:`upscale_nearest`), large
    ones shrunk (antialiased) to the size a map of K corners had on the page before, ``MAP_WIDTH /
    ceil(sqrt(K))`` px, but never below :data:`MIN_TILE_PX` (a full-size generator's page stays small)."""
    from PIL import Image

    tiles = np.asarray(tiles)
    K, H, W = tiles.shape[:3]
    target = max(MIN_TILE_PX, MAP_WIDTH // math.ceil(math.sqrt(K)))
    if W <= target:
        return upscale_nearest(tiles)
    h = max(1, round(H * target / W))
    out = []
    for t in tiles:
        im = Image.fromarray(t[..., 0] if t.shape[2] == 1 else t)
        small = np.asarray(im.resize((target, h), Image.Resampling.LANCZOS))
        out.append(small[..., None] if small.ndim == 2 else small)
    return np.stack(out)  # (K, h, target, C)


def _map_html(bits: int, tiles: np.ndarray, flagged: set[int], profile: Sequence[float] | None) -> str:
    """A map laid out for the page: rows of :data:`ROW_TILES` corners (:func:`screen_tiles`: small ones
    upscaled, nearest; large ones shrunk), the U-profile of the row's segments under each."""
    from sfvq.images import labelled_grid

    big = screen_tiles(tiles)
    K = len(big)
    cols = min(K, ROW_TILES)
    prof = None if profile is None else [float(v) for v in profile]
    if prof is not None and len(prof) != K - 1:
        prof = None  # a profile of another curve: not drawn rather than misaligned
    vmax = max(prof) if prof else 0.0
    med = float(np.median(prof)) if prof else 0.0
    out = [f'<div class="map" data-bits="{bits}">']
    for start in range(0, K, cols):
        row = big[start : start + cols]
        grid = labelled_grid(
            row,
            [str(k) for k in range(start, start + len(row))],
            cols,
            pad=MAP_PAD,
            flagged={k - start for k in flagged if start <= k < start + len(row)},
        )
        uri, w, _ = _pil_data_uri(grid, MAP_WIDTH)
        alt = f"corners {start}-{start + len(row) - 1} of the {bits}-bit curve"
        cls = ' class="px"' if w >= grid.width else ""  # kept hard pixels unless shrunk
        out.append(f'<div class="maprow" style="max-width:{w}px"><img{cls} src="{uri}" alt="{_e(alt)}">')
        if prof is not None:
            seg = prof[start : min(start + len(row), K - 1)]
            if seg:
                out.append(uprofile_svg(seg, start, cols, grid.width, MAP_PAD, vmax, med))
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------- run extras
@dataclass
class RunFile:
    """An optional JSON file of a run read defensively: ``data`` (checked) or why there is none."""

    name: str
    data: Any = None
    problem: str | None = None  # None with data None: the file is absent


QUALITY_METRICS = (
    ("mse", "MSE"),
    ("mean_distance", "mean distance"),
    ("topographic_error", "topographic error"),
    ("kaski_lagus", "Kaski-Lagus"),
    ("trustworthiness", "trustworthiness"),
    ("continuity", "continuity"),
    ("usage_kl", "usage KL"),
    ("sparseness", "sparseness"),
    ("entropy", "entropy"),
    ("smoothness", "smoothness"),
)
BASELINE_LABELS = {  # quality.json's baseline keys, as the page names them
    "kmeans_tour": "k-means, shortest tour (2-opt)",
    "som": "1-D SOM",
    "pca_order": "k-means, PC 1 order",
}
MAX_EXTRA_BYTES = 20_000_000  # an annotations.json or quality.json larger than this is not read


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(parsed JSON, None), (None, None) when absent, or (None, why it cannot be read)."""
    import json

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot read it ({e.strerror or e})"
    if not path.is_file():
        return None, "it is not a file"
    if size > MAX_EXTRA_BYTES:
        return None, f"it is {size:,} bytes, more than the {MAX_EXTRA_BYTES:,} read"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot read it ({e})"
    except ValueError as e:
        return None, f"it is not valid JSON ({e})"


def _number(x: Any) -> float | None:
    """A JSON number as a float (booleans and everything else: None)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _bits_key(k: Any) -> int | None:
    try:
        b = int(k)
    except (TypeError, ValueError):
        return None
    return b if 1 <= b <= 30 and str(b) == str(k).strip() else None


def _annotation(entry: Any) -> dict[str, Any] | None:
    """One segment's annotation checked field by field (None: not a usable entry)."""
    if not isinstance(entry, dict):
        return None
    seg = entry.get("segment")
    if isinstance(seg, bool) or not isinstance(seg, int) or seg < 0:
        return None
    layers = entry.get("layers")
    ok_layers = (
        isinstance(layers, (list, tuple))
        and len(layers) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in layers)
        and 0 <= layers[0] < layers[1]
    )
    effects = entry.get("effects")
    return {
        "segment": seg,
        "summary": entry.get("summary") if isinstance(entry.get("summary"), str) else None,
        "heat": entry.get("heat") if isinstance(entry.get("heat"), str) else None,
        "locality": _number(entry.get("locality")),
        "layers": (int(layers[0]), int(layers[1])) if ok_layers else None,
        "layer_share": _number(entry.get("layer_share")),
        "effects": (
            {str(k): float(v) for k, v in effects.items() if _number(v) is not None}
            if isinstance(effects, dict)
            else {}
        ),
    }


def read_annotations(run_dir: str | Path | None) -> RunFile:
    """``annotations.json`` of a run (format: ``sfvq annotate``), checked: ``data`` is ``{"scorer", "bits":
    {b: {segment: entry}}, "skipped": n}`` (entries that are not usable are counted, not shown)."""
    rf = RunFile(ANNOTATIONS_FILE)
    if run_dir is None:
        return rf
    raw, rf.problem = _read_json(Path(run_dir) / ANNOTATIONS_FILE)
    if raw is None:
        return rf
    if not isinstance(raw, dict) or not isinstance(raw.get("bits"), dict):
        rf.problem = 'it has no "bits" object mapping bitrates to lists of segment annotations'
        return rf
    by_bits: dict[int, dict[int, dict[str, Any]]] = {}
    skipped = 0
    for k, entries in raw["bits"].items():
        b = _bits_key(k)
        if b is None or not isinstance(entries, list):
            skipped += len(entries) if isinstance(entries, list) else 1
            continue
        for entry in entries:
            a = _annotation(entry)
            if a is None or a["segment"] >= 2**b - 1:
                skipped += 1
                continue
            by_bits.setdefault(b, {})[a["segment"]] = a
    scorer = raw.get("scorer") if isinstance(raw.get("scorer"), str) else None
    rf.data = {"scorer": scorer, "bits": by_bits, "skipped": skipped}
    return rf


def _metrics(row: Any) -> dict[str, float | None]:
    """A bitrate's metrics: the numbers (or nulls) of a dict, lists (the U-profile) left out."""
    if not isinstance(row, dict):
        return {}
    return {str(k): _number(v) for k, v in row.items() if v is None or _number(v) is not None}


def read_quality(run_dir: str | Path | None) -> RunFile:
    """``quality.json`` of a run (format: ``sfvq quality``), checked: ``data`` is ``{"bits": {b: metrics},
    "baselines": {name: {b: metrics}}, "recommended_bits", "recommendation"}``."""
    rf = RunFile(QUALITY_FILE)
    if run_dir is None:
        return rf
    raw, rf.problem = _read_json(Path(run_dir) / QUALITY_FILE)
    if raw is None:
        return rf
    if not isinstance(raw, dict) or not isinstance(raw.get("bits"), dict):
        rf.problem = 'it has no "bits" object mapping bitrates to their metrics'
        return rf
    bits = {b: _metrics(v) for k, v in raw["bits"].items() if (b := _bits_key(k)) is not None}
    if not bits:
        rf.problem = 'its "bits" object holds no bitrate'
        return rf
    baselines: dict[str, dict[int, dict[str, float | None]]] = {}
    if isinstance(raw.get("baselines"), dict):
        for name, rows in raw["baselines"].items():
            if isinstance(rows, dict):
                got = {b: _metrics(v) for k, v in rows.items() if (b := _bits_key(k)) is not None}
                if got:
                    baselines[str(name)] = got
    rec = raw.get("recommended_bits")
    rf.data = {
        "bits": bits,
        "baselines": baselines,
        "recommended_bits": rec if isinstance(rec, int) and not isinstance(rec, bool) else None,
        "recommendation": raw.get("recommendation") if isinstance(raw.get("recommendation"), str) else None,
    }
    return rf


def _run_image(run_dir: Path | None, rel: str | None) -> Path | None:
    """A picture a run file names (relative to the run): the path when it is an image file inside the run
    directory, else None (absolute paths, ``..`` out of the run and missing files are not embedded)."""
    if run_dir is None or not rel:
        return None
    root = Path(run_dir).resolve()
    try:
        path = (root / rel).resolve()
        path.relative_to(root)
    except (ValueError, OSError):
        return None
    if Path(rel).is_absolute() or path.suffix.lower() not in _MIME or not path.is_file():
        return None
    return path


def segment_anchor(bits: int, segment: int) -> str:
    """The in-page id of a segment's edit grid."""
    return f"edit-{bits}bit-seg{segment:03d}"


SECTIONS = (
    ("map", "map"),
    ("walk", "walk"),
    ("segments", "segments"),
    ("quality", "map quality"),
    ("maps", "all bitrates"),
    ("smoothness", "smoothness"),
    ("curve", "curve"),
    ("fit", "fit"),
    ("edits", "edits"),
    ("settings", "settings"),
    ("files", "files"),
)  # the page's sections, in order: the map and the walk first, settings and files last


def _run_command(d: ReportData) -> str:
    """The run as commands name it."""
    return d.run_label or (str(d.run_dir) if d.run_dir is not None else "RUN")


def _map_section(d: ReportData, b: int, level: str = "h3", anchor: str | None = None) -> str:
    """One bitrate's map: its rows with the U-profile under each (from the corner images), or the map
    file as it is when only that is given."""
    out = []
    ident = f' id="{anchor}"' if anchor else ""
    out.append(f"<{level}{ident}>{_e(b)} bits ({_e(2**b)} corners)</{level}>")
    empty = d.empty.get(b, {})
    if empty:
        items = "".join(f"<li>corner {_e(k)}: {_e(why)}</li>" for k, why in sorted(empty.items()))
        out.append(f'<p class="flag">{_e(len(empty))} corner(s) in empty regions:</p><ul>{items}</ul>')
    tiles = d.tiles.get(b)
    if tiles is not None:
        out.append(f'<div class="scroll">{_map_html(b, tiles, set(empty), d.u_profiles.get(b))}</div>')
    elif b in d.maps:
        out.append(f'<div class="scroll">{_img(d.maps[b], f"panoptic map at {b} bits", MAP_WIDTH)}</div>')
        prof = d.u_profiles.get(b)
        if prof is not None and len(prof) > 0:
            vals = [float(v) for v in prof]
            width = 12.0 * len(vals) + 12
            out.append(
                "<p>U-profile of this map (one bar per segment, in curve order):</p>"
                + uprofile_svg(vals, 0, len(vals), width, 0.0, max(vals), float(np.median(vals)))
            )
    return "".join(out)


def _annotation_cells(a: dict[str, Any] | None, d: ReportData, num_ws: int | None) -> list[str]:
    """Summary, heat map, layer range and locality cells of one segment (dashes without an annotation)."""
    if a is None:
        return ["-", "-", "-", "-"]
    heat = _run_image(d.run_dir, a["heat"])
    if heat is not None:
        uri, width = _screen_image(heat, 256)
        shown = max(MIN_TILE_PX, min(width, 160))
        heat_html = (
            f'<img class="px heat" src="{uri}" width="{shown}" alt="heat map of segment {a["segment"]}">'
        )
    else:
        heat_html = "missing" if a["heat"] else "-"
    if a["layers"] is not None:
        lo, hi = a["layers"]
        layers = f"{lo}-{hi - 1}" + (f" of 0-{num_ws - 1}" if num_ws else "")
        if a["layer_share"] is not None:
            layers += f" ({100 * a['layer_share']:.0f} % of the effect)"
    else:
        layers = "all (no style layers)"
    return [
        _e(a["summary"] or "-"),
        heat_html,
        _e(layers),
        _num(a["locality"], ".2f"),
    ]


def _segments_html(d: ReportData, ann: RunFile) -> str:
    """The segment table of the edit bitrate, annotated when the run has usable annotations."""
    eb = d.edit_settings.get("bits")
    out = ['<h2 id="segments">Segments</h2>']
    have = ann.data["bits"].get(eb, {}) if ann.data is not None and isinstance(eb, int) else {}
    cmd = _run_command(d)
    out.append(
        f"<p>Segments of the {_e(eb)}-bit curve: length, usage (share of samples projecting onto it) and "
        "the std of the data projected on its unit direction, the unit of the edit sigmas. "
        "Click an index for its edit grid.</p>"
    )
    if ann.data is not None and have:
        scorer = ann.data.get("scorer")
        out.append(
            "<p>Annotations from <code>annotations.json</code>"
            + (f" (scorer: {_e(scorer)})" if scorer else "")
            + ": what each segment changes (summary), where in the image (heat map: mean absolute change "
            "over fixed seeds; locality: the share of it inside the largest region) and on which W+ layers "
            "(the contiguous range that keeps most of the effect).</p>"
        )
        if ann.data["skipped"]:
            out.append(f"<p>{_e(ann.data['skipped'])} unusable entr(ies) of annotations.json left out.</p>")
    else:
        if ann.problem is not None:
            why = f"annotations.json could not be read: {ann.problem}."
        elif ann.data is not None:
            got = ", ".join(str(b) for b in sorted(ann.data["bits"])) or "none"
            why = f"annotations.json has no annotations of the {eb}-bit curve (bitrates: {got})."
        else:
            why = "No annotations: annotations.json is absent."
        out.append(
            f'<p class="absent">{_e(why)} Make them with <code>sfvq annotate --run {_e(cmd)}</code>, then '
            f"redraw this page with <code>sfvq report --run {_e(cmd)}</code>.</p>"
        )
    num_ws = d.space.get("num_ws") if isinstance(d.space.get("num_ws"), int) else None
    rows = []
    for s in d.segments:
        idx = _e(s["segment"])
        if s.get("edit") is not None:
            idx = f'<a href="#{segment_anchor(s["bits"], s["segment"])}">{idx}</a>'
        row = [
            _e(s["bits"]),
            idx,
            _e(f"{s['segment']} \u2192 {s['segment'] + 1}"),
            _num(s["length"]),
            _num(100 * s["usage"], ".2f") + " %",
            _num(s["std"]),
        ]
        if have:
            row += _annotation_cells(have.get(s["segment"]) if s["bits"] == eb else None, d, num_ws)
        rows.append(row)
    headers = ["bits", "index", "corners", "length", "usage", "std along it"]
    if have:
        headers += ["what it changes", "where (heat map)", "layers", "locality"]
    out.append(_table(headers, rows, left_cols=(6, 8) if have else ()))
    out.append(_img(d.usage_plot, "segment usage"))
    return "".join(out)


def _metric_table(
    rows: list[tuple[str, dict[str, float | None]]], first: str, mark: str | None = None
) -> str:
    """A table of map-quality metrics, one row per (label, metrics); known metrics first, in order."""
    known = [k for k, _ in QUALITY_METRICS]
    extra = sorted({k for _, m in rows for k in m if k not in known})
    cols = [k for k in known if any(k in m for _, m in rows)] + extra
    names = dict(QUALITY_METRICS)
    body = [
        [(f"<strong>{_e(label)}</strong>" if label == mark else _e(label))]
        + [_num(m.get(k), ".4g") for k in cols]
        for label, m in rows
    ]
    return '<div class="scroll">' + _table([first] + [names.get(k, k) for k in cols], body, left=1) + "</div>"


def _quality_html(d: ReportData, q: RunFile) -> str:
    """The map-quality section from quality.json, or what is missing and how to make it."""
    out = ['<h2 id="quality">Map quality</h2>']
    cmd = _run_command(d)
    if q.data is None:
        why = (
            f"quality.json could not be read: {q.problem}."
            if q.problem is not None
            else "No map-quality measurements: quality.json is absent."
        )
        out.append(
            f'<p class="absent">{_e(why)} Measure them with <code>sfvq quality --run {_e(cmd)}</code>, then '
            f"redraw this page with <code>sfvq report --run {_e(cmd)}</code>.</p>"
        )
        return "".join(out)
    data = q.data
    rec = data["recommended_bits"]
    if rec is not None:
        out.append(
            f'<p class="recommend"><strong>Recommended bitrate: {_e(rec)} bits ({_e(2**rec)} '
            f"corners).</strong> {_e(data['recommendation'] or '')}</p>"
        )
    else:
        out.append("<p>quality.json recommends no bitrate.</p>")
    out.append(
        "<p>Per bitrate of this curve: quantization error (mean squared, and mean distance), topographic "
        "error (share of samples whose two nearest corners are not curve neighbours), Kaski-Lagus error, "
        "trustworthiness and continuity, usage (KL divergence from uniform use, sparseness, entropy) and "
        "smoothness. What each means: docs/interpretation.md.</p>"
    )
    mark = f"{rec} bits" if rec is not None else None
    out.append(_metric_table([(f"{b} bits", m) for b, m in sorted(data["bits"].items())], "curve", mark))
    if data["baselines"]:
        out.append("<h3>Ordered baselines at equal K</h3>")
        rows = [
            (f"{BASELINE_LABELS.get(name, name)}, {b} bits", m)
            for name, per in data["baselines"].items()
            for b, m in sorted(per.items())
        ]
        out.append(_metric_table(rows, "baseline"))
    else:
        out.append("<p>quality.json holds no baselines.</p>")
    return "".join(out)


def render_html(d: ReportData) -> str:
    """The report page as a string: the map (with its U-profile) and the walk first, then the annotated
    segments, map quality, every bitrate's map, smoothness, the curve, the fit and the edit grids; settings
    and file lists last. ``annotations.json`` and ``quality.json`` are read from ``d.run_dir`` when there."""
    ann, quality = read_annotations(d.run_dir), read_quality(d.run_dir)
    parts: list[str] = []
    add = parts.append
    add(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(d.title)}</title>')
    add(f"<style>{_CSS}</style></head><body>")
    add(f"<h1>{_e(d.title)}</h1>")
    add("<nav>" + "".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in SECTIONS) + "</nav>")
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

    # The map: the finest bitrate drawn, with its U-profile.
    drawn = sorted(set(d.maps) | set(d.tiles))
    add('<h2 id="map">Panoptic map</h2>')
    if drawn:
        top = drawn[-1]
        add(
            "<p>The image of every corner in curve order (index under each; corners in empty regions, where "
            'no data projects near them, framed and labelled in <span class="flag">red</span>). Under each '
            "row, the <strong>U-profile</strong>: one bar per step between consecutive corners, as tall as "
            "the distance between them in the latent space; a tall bar is a jump of the curve, a boundary "
            "between regions of the map (darker: over twice the median, dashed line).</p>"
        )
        add(_map_section(d, top))
    else:
        add("<p>No map was rendered.</p>")

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

    add(_segments_html(d, ann))
    add(_quality_html(d, quality))

    add('<h2 id="maps">Maps at every bitrate</h2>')
    add("<p>One long strip per bitrate is in <code>maps/</code>.</p>")
    for b in drawn[:-1]:
        add(_map_section(d, b, anchor=f"map-{b}bit"))
    if len(drawn) < 2:
        add("<p>Only the map above was rendered.</p>")

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

    add('<h2 id="curve">The curve over the data</h2>')
    add("<p>The space vectors on their first two principal components, with the curve of each bitrate.</p>")
    add(_img(d.curve_plot, "the data on two principal components with the curve drawn over it"))

    add('<h2 id="fit">Fit</h2>')
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

    add('<h2 id="edits">Edits along the segment directions</h2>')
    es = d.edit_settings
    rule = f" The sigmas were {es['sigma_rule']}." if es.get("sigma_rule") else ""
    add(
        f"<p>Rows: seeds {_e(_plain(es.get('seeds')))}; columns: sigma {_e(_plain(es.get('sigmas')))} "
        f"(in units of the std of the data along the direction).{_e(rule)} Layers edited: "
        f"{_e(es.get('layers'))}. Direction of segment i: corner i+1 minus corner i, unit length.</p>"
    )
    for s in d.segments:
        if s.get("edit") is None:
            continue
        anchor = segment_anchor(s["bits"], s["segment"])
        add(f'<h3 id="{anchor}">{_e(s["bits"])} bits, segment {_e(s["segment"])}</h3>')
        add(_img(s["edit"], f"edits along segment {s['segment']}", EDIT_WIDTH, min_width=EDIT_MIN_WIDTH))

    add('<h2 id="settings">Run settings</h2>')
    add(_table(["setting", "value"], [[_e(k), _e(_plain(v))] for k, v in d.settings.items()], left=2))
    add("<h3>Latent space</h3>")
    add(_table(["field", "value"], [[_e(k), _e(_plain(v))] for k, v in d.space.items()], left=2))
    add('<h2 id="files">Files in the run directory</h2>')
    if d.files:
        add(_table(["output", "path"], [[_e(k), _e(v)] for k, v in d.files.items()], left=2))
    else:
        add("<p>No files listed.</p>")
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


# ---------------------------------------------------------------------------------------------- redraw
REPORT_INPUTS = "report.json"  # what report.html was drawn from, so that `sfvq report` can redraw it
REPORT_FORMAT = "sfvq.report"
REPORT_VERSION = 1
TILES_FILE = "maps/tiles_{bits}bit.png"  # a map's corner images, unlabelled, ROW_TILES a row, no gaps


class ReportInputsError(ValueError):
    """A run without a usable ``report.json`` (no report to redraw)."""


def _rel_to(path: Any, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None  # outside the run: not something a redraw can find


def _inside(root: Path, rel: Any) -> Path | None:
    """``root / rel`` when ``rel`` is a relative path that stays inside ``root`` and names a file."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        return None
    base = root.resolve()
    path = (base / rel).resolve()
    try:
        path.relative_to(base)
    except ValueError:
        return None
    return path if path.is_file() else None


def write_report_inputs(run_dir: str | Path, d: ReportData) -> Path:
    """Write ``report.json`` (everything :class:`ReportData` holds, file paths relative to ``run_dir``) and
    each map's corner images as ``maps/tiles_{b}bit.png``, so that :func:`redraw_report` can draw the page
    again later, e.g. once ``sfvq annotate`` or ``sfvq quality`` added their files."""
    import json

    from sfvq.images import image_grid
    from sfvq.io import save_png

    root = Path(run_dir)
    tiles = {}
    for b, t in sorted(d.tiles.items()):
        t = np.asarray(t)
        rgb = np.repeat(t, 3, axis=3) if t.shape[3] == 1 else t  # (K, H, W, 3)
        rel = TILES_FILE.format(bits=b)
        save_png(root / rel, image_grid(rgb, cols=min(len(rgb), ROW_TILES), pad=0))
        tiles[str(b)] = {
            "file": rel,
            "count": int(t.shape[0]),
            "height": int(t.shape[1]),
            "width": int(t.shape[2]),
        }
    rel = lambda p: _rel_to(p, root)  # noqa: E731
    data = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "title": d.title,
        "settings": d.settings,
        "space": d.space,
        "stages": d.stages,
        "smoothness": d.smoothness,
        "maps": {str(b): rel(p) for b, p in d.maps.items()},
        "empty": {str(b): {str(k): v for k, v in e.items()} for b, e in d.empty.items()},
        "segments": [{**s, "edit": rel(s.get("edit"))} for s in d.segments],
        "edit_settings": d.edit_settings,
        "curve_plot": rel(d.curve_plot),
        "loss_plot": rel(d.loss_plot),
        "usage_plot": rel(d.usage_plot),
        "walk_gif": rel(d.walk_gif),
        "walk_mp4": rel(d.walk_mp4),
        "files": d.files,
        "image_resolution": d.image_resolution,
        "full_resolution": d.full_resolution,
        "left_out": d.left_out,
        "full_size_hint": d.full_size_hint,
        "tiles": tiles,
        "u_profiles": {
            str(b): [float(v) for v in np.asarray(u).reshape(-1)] for b, u in d.u_profiles.items()
        },
        "run_label": d.run_label,
    }
    with atomic_open(root / REPORT_INPUTS, "w") as f:
        f.write(json.dumps(data, indent=1, default=_plain))
    return root / REPORT_INPUTS


def _read_tiles(root: Path, entry: Any) -> np.ndarray | None:
    """A map's corner images (K, H, W, 3) from its tiles file (None when missing or not the size said)."""
    from PIL import Image

    if not isinstance(entry, dict):
        return None
    path = _inside(root, entry.get("file"))
    K, H, W = (entry.get(k) for k in ("count", "height", "width"))
    if path is None or not all(isinstance(v, int) and v > 0 for v in (K, H, W)):
        return None
    cols = min(K, ROW_TILES)
    with Image.open(path) as im:
        grid = np.asarray(im.convert("RGB"))  # (rows*H, cols*W, 3)
    if grid.shape[:2] != (-(-K // cols) * H, cols * W):
        return None
    out = [grid[(k // cols) * H : (k // cols + 1) * H, (k % cols) * W : (k % cols + 1) * W] for k in range(K)]
    return np.stack(out)  # (K, H, W, 3)


def load_report_data(run_dir: str | Path, run_label: str | None = None) -> ReportData:
    """The :class:`ReportData` a run's ``report.json`` holds, its files found in ``run_dir`` (a file that
    has gone is left out of the page). Raises :class:`ReportInputsError` when there is none to read."""
    import json

    root = Path(run_dir)
    path = root / REPORT_INPUTS
    if not path.is_file():
        raise ReportInputsError(
            f"{root} has no {REPORT_INPUTS}: its report was not written by this version of `sfvq run`; "
            "run it again to get one"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReportInputsError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != REPORT_FORMAT:
        raise ReportInputsError(f"{path} is not an sfvq report description")
    if raw.get("version") != REPORT_VERSION:
        raise ReportInputsError(
            f"{path} has version {raw.get('version')!r}; this sfvq reads {REPORT_VERSION}"
        )
    file = lambda rel: _inside(root, rel)  # noqa: E731

    def ints(m: Any) -> dict[int, Any]:
        return {b: v for k, v in (m or {}).items() if (b := _bits_key(k)) is not None}

    try:
        tiles = {b: t for b, e in ints(raw.get("tiles")).items() if (t := _read_tiles(root, e)) is not None}
        return ReportData(
            title=str(raw["title"]),
            settings=dict(raw["settings"]),
            space=dict(raw["space"]),
            stages=list(raw["stages"]),
            smoothness=list(raw["smoothness"]),
            maps={b: p for b, rel in ints(raw.get("maps")).items() if (p := file(rel)) is not None},
            empty={b: {int(k): str(v) for k, v in e.items()} for b, e in ints(raw.get("empty")).items()},
            segments=[{**s, "edit": file(s.get("edit"))} for s in raw["segments"]],
            edit_settings=dict(raw["edit_settings"]),
            curve_plot=file(raw.get("curve_plot")),
            loss_plot=file(raw.get("loss_plot")),
            usage_plot=file(raw.get("usage_plot")),
            walk_gif=file(raw.get("walk_gif")),
            walk_mp4=file(raw.get("walk_mp4")),
            files={str(k): str(v) for k, v in dict(raw.get("files") or {}).items()},
            image_resolution=raw.get("image_resolution"),
            full_resolution=raw.get("full_resolution"),
            left_out=[str(x) for x in raw.get("left_out") or []],
            full_size_hint=raw.get("full_size_hint"),
            tiles=tiles,
            u_profiles={b: np.asarray(v, dtype=np.float64) for b, v in ints(raw.get("u_profiles")).items()},
            run_dir=root,
            run_label=run_label or str(root),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ReportInputsError(f"{path} is malformed ({type(e).__name__}: {e})") from e


def redraw_report(run_dir: str | Path, run_label: str | None = None) -> Path:
    """Draw ``report.html`` of a run again from its ``report.json``, with the run's ``annotations.json``
    and ``quality.json`` as they are now (``sfvq report --run DIR``)."""
    return write_report(Path(run_dir) / "report.html", load_report_data(run_dir, run_label))


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
    "ANNOTATIONS_FILE",
    "QUALITY_FILE",
    "REPORT_INPUTS",
    "Z_SPACE_NOTE",
    "CompareSection",
    "ReportData",
    "ReportInputsError",
    "RunFile",
    "compare_html",
    "data_uri",
    "load_report_data",
    "png_data_uri",
    "read_annotations",
    "read_quality",
    "redraw_report",
    "render_html",
    "resolution_text",
    "screen_data_uri",
    "screen_tiles",
    "segment_anchor",
    "upscale_nearest",
    "uprofile_svg",
    "usage_plot",
    "write_compare_page",
    "write_report",
    "write_report_inputs",
]
