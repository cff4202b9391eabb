"""Rendered cartoon faces with known factors: the data set of ``builtin:avatars-sg2``.

Each face is an ``python-avatars`` SVG rendered by ``cairosvg`` at its native size (264x280), laid on a
280x280 square of its background colour, then downscaled with Pillow (Lanczos) to each requested
resolution (64, 32, ...). Rendering straight to a small size crops the SVG wrongly, hence the detour.

Every face ``i`` of a data set with seed ``s`` draws its parts from ``numpy.random.default_rng([s, i])``:
the same (seed, index) gives the same face whatever the worker count. The factors recorded per face
(:func:`factor_vocabularies`) are the *visible* ones: a hair colour under a hat with no beard is
``"none"``, an accessory or beard on a top that has no slot for it is ``"none"``.

On disk (``build_dataset(outdir, ...)``):

* ``avatars.npz``: ``images_<R>`` (N, R, R, 3) uint8 for each resolution R;
* ``factors.csv``: one row per face, columns ``index`` + the factor names, string values;
* ``preview.png``: the first 64 faces in a grid;
* ``dataset.json``: seed, count, resolutions, the factor vocabularies, package versions, sha256 of
  ``avatars.npz`` (written last: a data set without it is incomplete).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sfvq.io import atomic_open, read_json, sha256_file, write_json

__all__ = [
    "BACKGROUNDS",
    "DATASET_FILES",
    "SMILE_MOUTHS",
    "AvatarData",
    "DatasetError",
    "build_dataset",
    "factor_vocabularies",
    "load_dataset",
    "render_faces",
    "sample_face",
]

DATASET_FILES = ("avatars.npz", "factors.csv", "dataset.json")
PREVIEW_FILE = "preview.png"  # the first 64 faces in a grid
NATIVE_SIZE = (264, 280)  # (width, height) of a python-avatars SVG
CANVAS = 280  # square canvas the face is centred on before downscaling
RESAMPLE = "lanczos"
FORMAT = "sfvq-avatars-v1"

# Background colours (name -> hex); the first three are python-avatars' own.
BACKGROUNDS: dict[str, str] = {
    "blue": "#65C9FF",
    "black": "#262E33",
    "white": "#FFFFFF",
    "green": "#A7FFC4",
    "yellow": "#FFFFB1",
    "red": "#FF5C5C",
}
# Mouths that read as a smile (open happy mouths and the gentle default/twinkle).
SMILE_MOUTHS = ("smile", "big_smile", "tongue", "twinkle", "default")
_GLASSES = {
    "kurt": "glasses",
    "prescription_01": "glasses",
    "prescription_02": "glasses",
    "round": "glasses",
    "wayfarers": "glasses",
    "wayfarers_2": "glasses",
    "sunglasses": "sunglasses",
    "sunglasses_2": "sunglasses",
    "eyepatch": "eyepatch",
}
_BEARDS = {
    "beard_light": "beard",
    "beard_magestic": "beard",
    "beard_medium": "beard",
    "wick_beard": "beard",
    "moustache_fancy": "moustache",
    "moustache_magnum": "moustache",
    "einstien_mustache": "moustache",
}


class DatasetError(ValueError):
    """A data-set directory that is missing, incomplete or does not match what was asked for."""


def _pa() -> Any:
    """Import python-avatars, or say how to install it."""
    try:
        import python_avatars
    except ModuleNotFoundError as e:
        raise DatasetError(
            "the avatars data set needs python-avatars and cairosvg: pip install 'sfvq[avatars]'"
        ) from e
    return python_avatars


def factor_vocabularies() -> dict[str, tuple[str, ...]]:
    """Every recorded factor -> its values (vocabulary) in a fixed order; codes index into these."""
    return dict(_vocabularies())


def _names(enum: Any, skip: Sequence[str] = ()) -> tuple[str, ...]:
    """Values of a python-avatars enum as lower-case names ("" -> "none"), in declaration order."""
    return tuple((m.value or "none") for m in enum if m.name not in skip)


@functools.lru_cache(maxsize=1)
def _vocabularies() -> dict[str, tuple[str, ...]]:
    pa = _pa()
    hair = tuple(f"hair:{v}" for v in _names(pa.HairType))
    hats = tuple(f"hat:{v}" for v in _names(pa.HatType))
    mouths = _names(pa.MouthType)
    missing = [m for m in SMILE_MOUTHS if m not in mouths]
    if missing:
        raise DatasetError(f"this python-avatars has no mouth(s) {missing}; expected version 1.4")
    return {
        "smile": ("no", "yes"),
        "mouth": mouths,
        "eyes": _names(pa.EyeType),
        "eyebrows": _names(pa.EyebrowType),
        "nose": _names(pa.NoseType),
        "glasses": ("none", "glasses", "sunglasses", "eyepatch"),
        "accessory": _names(pa.AccessoryType),
        "skin": tuple(m.name.lower() for m in pa.SkinColor),
        "hat": ("no", "yes"),
        "top": hair + hats,
        "hair_colour": ("none", *(m.name.lower() for m in pa.HairColor)),
        "beard": ("none", "beard", "moustache"),
        "facial_hair": _names(pa.FacialHairType),
        "clothing": _names(pa.ClothingType),
        "clothing_colour": ("none", *(m.name.lower() for m in pa.ClothingColor)),
        "shirt_graphic": _names(pa.ClothingGraphic, skip=("CUSTOM_TEXT",)),
        "background": tuple(BACKGROUNDS),
    }


_SLOTS: dict[str, tuple[bool, bool, bool]] = {}


def _top_slots(pa: Any, top: Any) -> tuple[bool, bool, bool]:
    """Whether a top's SVG has a hair colour, a facial-hair slot and an accessory slot (cached)."""
    key = f"{type(top).__name__}:{top.value}"
    if key not in _SLOTS:
        text = Path(pa.core._get_path(type(top), top.value)).read_text(encoding="utf-8")
        _SLOTS[key] = tuple(f'id="{i}"' in text for i in ("Hair-Color", "Facial-Hair", "Accessory"))
    return _SLOTS[key]


def _has_fabric(pa: Any, clothing: Any) -> bool:
    key = f"clothing:{clothing.value}"
    if key not in _SLOTS:
        text = Path(pa.core._get_path(pa.ClothingType, clothing.value)).read_text(encoding="utf-8")
        _SLOTS[key] = ('id="Fabric-Color"' in text, False, False)
    return _SLOTS[key][0]


def sample_face(seed: int, index: int) -> tuple[Any, dict[str, str]]:
    """The avatar of face ``index`` in the data set of ``seed``, and its visible factors.

    Smile, accessory and facial hair are each present with probability 1/2 (a value drawn uniformly
    from their kinds otherwise); every other part is uniform over its kinds. Facial hair takes the hair
    colour. Returns ``(python_avatars.Avatar, {factor: value})``.
    """
    pa = _pa()
    rng = np.random.default_rng([int(seed), int(index)])

    def pick(options: Sequence[Any]) -> Any:
        return options[int(rng.integers(len(options)))]

    mouths = list(pa.MouthType)
    smile = bool(rng.random() < 0.5)
    mouth = pick([m for m in mouths if (m.value in SMILE_MOUTHS) == smile])
    eyes = pick(list(pa.EyeType))
    eyebrows = pick(list(pa.EyebrowType))
    nose = pick(list(pa.NoseType))
    top = pick(list(pa.HairType) + list(pa.HatType))
    hat_colour = pick(list(pa.ClothingColor))
    hair_colour = pick(list(pa.HairColor))
    skin = pick(list(pa.SkinColor))
    wants_accessory = bool(rng.random() < 0.5)
    accessory = pick([a for a in pa.AccessoryType if a.value]) if wants_accessory else pa.AccessoryType.NONE
    wants_beard = bool(rng.random() < 0.5)
    facial = pick([f for f in pa.FacialHairType if f.value]) if wants_beard else pa.FacialHairType.NONE
    clothing = pick(list(pa.ClothingType))
    clothing_colour = pick(list(pa.ClothingColor))
    graphic = pick([g for g in pa.ClothingGraphic if g.value and g.name != "CUSTOM_TEXT"])
    background = pick(list(BACKGROUNDS))

    avatar = pa.Avatar(
        style=pa.AvatarStyle.TRANSPARENT,
        background_color=BACKGROUNDS[background],
        top=top,
        hat_color=hat_colour,
        eyebrows=eyebrows,
        eyes=eyes,
        nose=nose,
        mouth=mouth,
        facial_hair=facial,
        skin_color=skin,
        hair_color=hair_colour,
        facial_hair_color=hair_colour,
        accessory=accessory,
        clothing=clothing,
        clothing_color=clothing_colour,
        shirt_graphic=graphic,
        shirt_text="",
    )
    has_hair_colour, facial_slot, accessory_slot = _top_slots(pa, top)
    is_hat = isinstance(top, pa.HatType)
    facial_name = (facial.value or "none") if facial_slot else "none"
    accessory_name = (accessory.value or "none") if accessory_slot else "none"
    hair_visible = has_hair_colour or facial_name != "none"
    wears = clothing.value != ""
    factors = {
        "smile": "yes" if smile else "no",
        "mouth": mouth.value,
        "eyes": eyes.value,
        "eyebrows": eyebrows.value or "none",
        "nose": nose.value,
        "glasses": _GLASSES.get(accessory_name, "none"),
        "accessory": accessory_name,
        "skin": skin.name.lower(),
        "hat": "yes" if is_hat else "no",
        "top": f"{'hat' if is_hat else 'hair'}:{top.value}",
        "hair_colour": hair_colour.name.lower() if hair_visible else "none",
        "beard": _BEARDS.get(facial_name, "none"),
        "facial_hair": facial_name,
        "clothing": clothing.value or "none",
        "clothing_colour": clothing_colour.name.lower() if wears and _has_fabric(pa, clothing) else "none",
        "shirt_graphic": graphic.value if clothing == pa.ClothingType.GRAPHIC_SHIRT else "none",
        "background": background,
    }
    return avatar, factors


def _render_one(args: tuple[int, int, tuple[int, ...]]) -> tuple[int, list[np.ndarray], dict[str, str]]:
    """Render face ``index`` of ``seed`` at its native size, then downscale to each resolution."""
    seed, index, resolutions = args
    try:
        import cairosvg
    except (ModuleNotFoundError, OSError) as e:  # OSError: the cairo library itself is missing
        raise DatasetError(f"cairosvg cannot render ({e}); install cairosvg and the cairo library") from e
    avatar, factors = sample_face(seed, index)
    png = cairosvg.svg2png(bytestring=avatar.render().encode("utf-8"))
    face = Image.open(io.BytesIO(png)).convert("RGBA")
    if face.size != NATIVE_SIZE:
        raise DatasetError(f"python-avatars rendered {face.size}, expected its native size {NATIVE_SIZE}")
    canvas = Image.new("RGB", (CANVAS, CANVAS), BACKGROUNDS[factors["background"]])
    canvas.paste(face, ((CANVAS - NATIVE_SIZE[0]) // 2, CANVAS - NATIVE_SIZE[1]), face)
    images = [
        np.asarray(canvas.resize((r, r), Image.Resampling.LANCZOS), dtype=np.uint8) for r in resolutions
    ]
    return index, images, factors


def _check_resolutions(resolutions: Sequence[int]) -> tuple[int, ...]:
    res = tuple(sorted({int(r) for r in resolutions}, reverse=True))
    if not res:
        raise DatasetError("give at least one resolution")
    for r in res:
        if r < 4 or r > CANVAS or 2 ** int(round(math.log2(r))) != r:
            raise DatasetError(f"resolution {r} is not a power of two in 4..256")
    return res


def render_faces(
    seed: int,
    indices: Sequence[int],
    resolutions: Sequence[int] = (32,),
    workers: int = 1,
    progress: bool = False,
) -> tuple[dict[int, np.ndarray], list[dict[str, str]]]:
    """Render faces ``indices`` of data set ``seed``: ({R: (N, R, R, 3) uint8}, [factors per face]).

    ``workers`` > 1 renders in that many processes (spawned); the result does not depend on it.
    """
    res = _check_resolutions(resolutions)
    if workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    n = len(indices)
    images = {r: np.zeros((n, r, r, 3), np.uint8) for r in res}
    factors: list[dict[str, str]] = [{} for _ in range(n)]
    jobs = [(int(seed), int(i), res) for i in indices]
    position = {int(i): k for k, i in enumerate(indices)}
    if len(position) != n:
        raise DatasetError("face indices must be distinct")

    def consume(results: Iterator[tuple[int, list[np.ndarray], dict[str, str]]]) -> None:
        from sfvq.progress import track

        for index, imgs, fac in track(results, "rendering faces", total=n, enabled=progress):
            k = position[index]
            for r, img in zip(res, imgs, strict=True):
                images[r][k] = img
            factors[k] = fac

    if workers == 1 or n < 2:
        consume(map(_render_one, jobs))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, n)) as pool:
            consume(pool.imap_unordered(_render_one, jobs, chunksize=max(1, min(32, n // (8 * workers)))))
    return images, factors


@dataclass
class AvatarData:
    """A loaded data set: images at one resolution, factor codes and vocabularies.

    Attributes:
        images: (N, R, R, 3) uint8.
        codes: factor -> (N,) int64 index into ``vocab[factor]``.
        vocab: factor -> its values.
        meta: the contents of ``dataset.json``.
    """

    images: np.ndarray
    codes: dict[str, np.ndarray]
    vocab: dict[str, tuple[str, ...]]
    meta: dict[str, Any]

    @property
    def resolution(self) -> int:
        """Image side in pixels."""
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("python-avatars", "cairosvg", "pillow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _matches(meta: dict[str, Any], count: int, seed: int, res: tuple[int, ...]) -> bool:
    return (
        meta.get("format") == FORMAT
        and meta.get("count") == count
        and meta.get("seed") == seed
        and tuple(meta.get("resolutions", ())) == res
    )


def build_dataset(
    outdir: str | Path,
    count: int,
    seed: int = 0,
    resolutions: Sequence[int] = (64, 32),
    workers: int = 2,
    progress: bool = True,
    force: bool = False,
) -> tuple[Path, bool]:
    """Render ``count`` faces of data set ``seed`` into ``outdir`` (cached).

    Returns ``(outdir, built)``: ``built`` is False when ``outdir`` already held a complete data set of
    the same seed, count and resolutions (nothing is rendered then, unless ``force``). A directory with
    a different complete data set is refused rather than overwritten.
    """
    if count < 1:
        raise DatasetError(f"count must be >= 1, got {count}")
    res = _check_resolutions(resolutions)
    outdir = Path(outdir)
    meta_path = outdir / "dataset.json"
    if meta_path.is_file() and not force:
        try:
            old = read_json(meta_path)
        except ValueError as e:
            raise DatasetError(f"{meta_path} is not readable JSON ({e}); remove it or pass force") from e
        if _matches(old, count, int(seed), res) and (outdir / "avatars.npz").is_file():
            return outdir, False
        raise DatasetError(
            f"{outdir} already holds a data set (seed {old.get('seed')}, count {old.get('count')}, "
            f"resolutions {old.get('resolutions')}); choose another directory or pass force"
        )
    vocab = {k: list(v) for k, v in factor_vocabularies().items()}
    t0 = time.perf_counter()
    images, factors = render_faces(seed, range(count), res, workers=workers, progress=progress)
    seconds = time.perf_counter() - t0
    outdir.mkdir(parents=True, exist_ok=True)
    if meta_path.exists():
        meta_path.unlink()  # the data set is incomplete until dataset.json is written again
    with atomic_open(outdir / "avatars.npz", "wb") as f:
        np.savez_compressed(f, **{f"images_{r}": images[r] for r in res})
    names = list(vocab)
    for i, fac in enumerate(factors):
        bad = {k: fac[k] for k in names if fac[k] not in vocab[k]}
        if bad:
            raise DatasetError(f"face {i}: factor value(s) outside the vocabularies: {bad}")
    with atomic_open(outdir / "factors.csv", "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", *names])
        for i, fac in enumerate(factors):
            writer.writerow([i, *(fac[k] for k in names)])
    from sfvq.images import image_grid
    from sfvq.io import save_png

    top = max(res)  # a look at the first faces at the largest stored size
    save_png(outdir / PREVIEW_FILE, image_grid(images[top][:64], cols=min(8, count)))
    write_json(
        meta_path,
        {
            "format": FORMAT,
            "seed": int(seed),
            "count": int(count),
            "resolutions": list(res),
            "native_size": list(NATIVE_SIZE),
            "canvas": CANVAS,
            "resample": RESAMPLE,
            "factors": vocab,
            "smile_mouths": list(SMILE_MOUTHS),
            "backgrounds": BACKGROUNDS,
            "versions": _versions(),
            "render_seconds": round(seconds, 2),
            "workers": workers,
            "sha256": {"avatars.npz": sha256_file(outdir / "avatars.npz")},
        },
    )
    return outdir, True


def load_dataset(path: str | Path, resolution: int | None = None) -> AvatarData:
    """Load a data set built by :func:`build_dataset` at ``resolution`` (default: the smallest)."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"no data-set directory {path} (build one with: sfvq avatars build-dataset)")
    for name in DATASET_FILES:
        if not (path / name).is_file():
            raise DatasetError(f"{path} is not a complete avatars data set: {name} is missing")
    meta = read_json(path / "dataset.json")
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{path}/dataset.json has format {meta.get('format')!r}, expected {FORMAT!r}")
    res = [int(r) for r in meta["resolutions"]]
    r = min(res) if resolution is None else int(resolution)
    if r not in res:
        raise DatasetError(f"{path} holds resolutions {res}, not {r}")
    with np.load(path / "avatars.npz", allow_pickle=False) as z:
        images = z[f"images_{r}"]
    vocab = {k: tuple(v) for k, v in meta["factors"].items()}
    index = {k: {v: i for i, v in enumerate(vals)} for k, vals in vocab.items()}
    codes = {k: np.zeros(len(images), np.int64) for k in vocab}
    with open(path / "factors.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [k for k in vocab if k not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}/factors.csv lacks the factor column(s) {missing}")
        rows = 0
        for row in reader:
            i = int(row["index"])
            for k in vocab:
                try:
                    codes[k][i] = index[k][row[k]]
                except KeyError as e:
                    raise DatasetError(f"{path}/factors.csv row {i}: {row[k]!r} is not a {k} value") from e
            rows += 1
    if rows != len(images) or rows != meta["count"]:
        raise DatasetError(f"{path}: {rows} factor rows for {len(images)} images (count {meta['count']})")
    return AvatarData(images=images, codes=codes, vocab=vocab, meta=meta)
