"""A run directory opened once: its model, latent space, generator, latents, options and saved directions.

Every command that reads a run (``sfvq edit``, ``directions``, ``augment``, ``export``, ``compare
--model``, ``import directions --run``) and the explorer open it through :meth:`Run.open`, so a run is
read the same way everywhere and a broken one fails with the same message everywhere. The contract:

* ``model.safetensors``: the fitted curve; its ``metadata_`` records ``network`` (the generator),
  ``space`` and ``data``;
* ``space.json`` (+ ``space_pca.safetensors`` for a feature space): the space the curve lives in; a model
  alone (as ``sfvq fit`` writes it) has none, and then the space kind must be given;
* ``latents.npy`` (+ sidecar): the vectors the curve was fitted to (optional; stds along directions need
  them);
* ``directions.safetensors`` + ``directions.json``: named directions saved into the run (optional);
* ``options.json``: the settings of the command that wrote the run (optional).

The model is read at once; the generator, the space and the latents when first used (loading a
generator takes seconds, and several commands fail on their own options before they need one).

Writing a run. The commands that write a whole run (``sfvq run``, ``fit``, ``demo``, ``import
codebooks``) write it into a staging folder beside the run directory and publish it whole
(:func:`staged_run`), so a job killed at any moment leaves either the previous run or the new one, never
a mix. Every run gets an id (:func:`new_run_id`) stamped into ``options.json``, ``summary.json``,
``latents.json`` and the model's metadata (``run_id``); :meth:`Run.open` refuses a folder whose stamped
files disagree, and first finishes or undoes what a killed job left beside the run. Commands that add to
an existing run (a saved direction, an augmentation batch) write atomically file by file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_FILE = "model.safetensors"
OPTIONS_FILE = "options.json"
RUN_ID_KEY = "run_id"
# The files a run stamps with its id, besides the model (whose metadata holds it).
STAMPED_FILES = ("options.json", "summary.json", "latents.json")
# What the run writers write: a new run supersedes these entries of a previous run in its folder. Other
# entries (saved directions, augmentation batches, the user's own files) are carried over.
RUN_FILES = frozenset(
    {
        MODEL_FILE, OPTIONS_FILE, "summary.json", "loss.png", "curve.png", "usage.png", "report.html",
        "report.json",
        "latents.npy", "latents.json", "space.json", "space_pca.safetensors",
        "checkpoint.safetensors",  # sfvq fit's: a published run has nothing left to resume
        "annotations.json",  # sfvq annotate's: describes the previous curve's segments
        "quality.json",  # sfvq quality's: measures the previous curve
    }
)  # fmt: skip
RUN_FOLDERS = {"maps": ("map_*bit.png", "strip_*bit.png", "corner_*bit_*.png", "tiles_*bit.png"),
               "walks": ("walk.gif", "walk.mp4"), "edits": ("*bit_seg*.png",),
               "annotations": ("b*_s*.png",)}  # fmt: skip


class RunError(ValueError):
    """A run that cannot be used as asked. ``param`` names the input at fault: ``"path"`` (the run
    directory or model file), ``"network"`` or ``"space"``; None when it is the combination. ``missing``:
    the input was needed but not given (the message then says what is missing, not how to give it)."""

    def __init__(self, message: str, param: str | None = None, *, missing: bool = False) -> None:
        super().__init__(message)
        self.param = param
        self.missing = missing


class Run:
    """One run directory (see the module docstring). Build it with :meth:`open`.

    Attributes: ``path`` (the run directory), ``model_path``, ``model`` (an :class:`~sfvq.SFVQ`),
    ``device``; the rest are loaded on first use: :attr:`network`, :attr:`generator`, :attr:`space`,
    :attr:`latents`, :attr:`num_ws`, :attr:`options`.
    """

    def __init__(
        self,
        path: str | Path,
        model: Any,
        *,
        model_path: str | Path | None = None,
        network: str | None = None,
        device: str = "cpu",
        space_kind: str | None = None,
        generator: Any = None,
    ) -> None:
        self.path = Path(path)
        self.model = model
        self.model_path = Path(model_path) if model_path is not None else self.path / MODEL_FILE
        self.device = device
        self.space_kind = space_kind
        self._network = network
        self._generator = generator
        self._space: Any = None
        self._latents: Any = None
        self._latents_read = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: str | Path,
        network: str | None = None,
        device: str = "cpu",
        *,
        space: str | None = None,
        generator: Any = None,
    ) -> Run:
        """Open a run directory, or a ``model.safetensors`` (the run is the folder holding it).

        ``network`` overrides the generator the model records; ``space`` is the kind (``w``, ``z``) of the
        model's latents, needed only when no ``space.json`` lies beside the model (and checked against it
        when one does); ``generator`` an already loaded generator to use instead of loading ``network``.
        Raises :class:`RunError` (``param="path"``) when there is no readable model, or when the folder
        mixes files of two runs (:func:`check_one_run`). What a killed job left beside or inside the run is
        dealt with first (:func:`recover`).
        """
        from sfvq.quantizer import SFVQ, ModelFileError

        model_path = Path(path)
        recover(model_path.parent if model_path.suffix == ".safetensors" else model_path)
        if model_path.is_dir():
            if not (model_path / MODEL_FILE).is_file():
                raise RunError(f"{model_path} is a directory without {MODEL_FILE}", "path")
            model_path = model_path / MODEL_FILE
        try:
            model = SFVQ.load(model_path)
        except (FileNotFoundError, ModelFileError) as e:
            raise RunError(str(e), "path") from e
        check_one_run(model_path.parent, model)
        return cls(
            model_path.parent,
            model,
            model_path=model_path,
            network=network,
            device=device,
            space_kind=space,
            generator=generator,
        )

    # ------------------------------------------------------------------ files
    @property
    def space_file(self) -> Path:
        """``<run>/space.json`` (it may not exist)."""
        from sfvq.spaces import SPACE_FILE

        return self.path / SPACE_FILE

    @property
    def options(self) -> dict[str, Any]:
        """The options of the command that wrote the run (``options.json``), or {} without one."""
        p = self.path / OPTIONS_FILE
        if not p.is_file():
            return {}
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
            raise RunError(f"{p} is not readable JSON: {e}", "path") from e
        opts = data.get("options") if isinstance(data, dict) else None
        return dict(opts) if isinstance(opts, dict) else {}

    # ------------------------------------------------------------------ generator and space
    @property
    def network(self) -> str:
        """The generator: the one given to :meth:`open`, else the one the model records."""
        if self._network:
            return str(self._network)
        recorded = (getattr(self.model, "metadata_", None) or {}).get("network")
        if not recorded:
            raise RunError(
                "the model does not record its generator (metadata 'network')", "network", missing=True
            )
        return str(recorded)

    @property
    def generator(self) -> Any:
        """The generator, loaded on first use; :class:`~sfvq.generators.base.GeneratorError` when it
        cannot be."""
        if self._generator is None:
            from sfvq.generators.registry import load_generator

            self._generator = load_generator(self.network, device=self.device)
        return self._generator

    @property
    def space(self) -> Any:
        """The model's latent space with its saved settings (loaded once; see :meth:`load_space`)."""
        if self._space is None:
            self._space = self.load_space()
        return self._space

    def load_space(self, truncation_psi: float | None = None, noise_mode: str | None = None) -> Any:
        """A fresh :class:`~sfvq.spaces.LatentSpace` of the model: ``space.json`` beside it, else the kind
        given to :meth:`open` built fresh. ``truncation_psi`` / ``noise_mode`` override the saved settings.
        Raises :class:`RunError` naming what does not fit."""
        from sfvq.spaces import SPACE_FILE, LatentSpace

        G = self.generator
        kind = self.space_kind
        if self.space_file.is_file():
            try:
                space = LatentSpace.load(self.path, G)
            except (ValueError, KeyError, OSError) as e:
                raise RunError(f"cannot use {self.space_file} with {G.name}: {e}") from e
            if kind is not None and kind not in (space.kind, space.name):
                raise RunError(
                    f"the model was fitted in space {space.name!r} ({self.space_file}), not {kind!r}", "space"
                )
        else:
            if kind is None:
                raise RunError(f"no {SPACE_FILE} beside the model in {self.path}", "space", missing=True)
            if kind == "features":
                raise RunError(
                    f"a feature space is defined by its PCA, saved as {SPACE_FILE} + space_pca.safetensors "
                    "beside the model; none found",
                    "space",
                )
            try:
                space = LatentSpace(G, kind)
            except ValueError as e:
                raise RunError(str(e), "space") from e
        if space.dim != self.model.n_features_in_:
            raise RunError(
                f"the model is {self.model.n_features_in_}-D but space {space.name!r} of {G.name} is "
                f"{space.dim}-D: wrong network or space?"
            )
        if truncation_psi is not None:
            space.truncation_psi = float(truncation_psi)
        if noise_mode is not None:
            space.noise_mode = noise_mode
        return space

    # ------------------------------------------------------------------ data and directions
    @property
    def latents(self) -> Any:
        """The (N, D) latents the curve was fitted to, memory-mapped, or None (see
        :func:`sfvq.directions.run_latents`)."""
        if not self._latents_read:
            from sfvq.directions import run_latents

            self._latents = run_latents(self.path, self.model)
            self._latents_read = True
        return self._latents

    @property
    def num_ws(self) -> int | None:
        """Style layers of the run's space (from ``space.json`` or the model's metadata), None if unknown."""
        from sfvq.directions import run_num_ws

        return run_num_ws(self.path, self.model)

    def directions(self) -> Any:
        """The named directions saved in the run (a :class:`~sfvq.directions.DirectionSet`, read afresh:
        other processes may add to it), or None when it has none; ValueError for a broken file."""
        from sfvq.directions import load_run_directions

        return load_run_directions(self.path)

    def save_direction(
        self,
        name: str,
        spec: str,
        layers: tuple[int, int] | None = None,
        sign: int = 1,
        *,
        overwrite: bool = False,
    ) -> Any:
        """Save segment ``spec`` (``b:i``, ``b:i-j`` or a saved name) as ``name`` into the run's directions
        with its layer range and sign; its std is measured on the run's latents. Returns the Direction."""
        from sfvq.directions import save_named_direction

        return save_named_direction(
            self.path, name, spec, layers, self.model, sign, overwrite=overwrite, X=self.latents
        )

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, bits={sorted(self.model.codebooks_)})"


# ---------------------------------------------------------------------------------------------- writing
def new_run_id() -> str:
    """A fresh run id: the UTC time and 8 random hex digits, letters and digits only."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + secrets.token_hex(4)


def run_entry(rel: str) -> str:
    """What becomes of an entry of a previous run when a new run is published in its folder (see
    :data:`sfvq.atomic.Superseded`): the run writers' files and temporary files are dropped, the
    picture folders merged file by file, everything else kept."""
    from sfvq.atomic import TMP_RE

    parts = rel.split("/")
    if TMP_RE.match(parts[-1]):
        return "drop"
    if len(parts) == 1:
        if rel in RUN_FILES:
            return "drop"
        return "merge" if rel in RUN_FOLDERS else "keep"
    if len(parts) == 2 and parts[0] in RUN_FOLDERS:
        return "drop" if any(fnmatch.fnmatchcase(parts[1], p) for p in RUN_FOLDERS[parts[0]]) else "keep"
    return "keep"


@dataclass(frozen=True)
class Staging:
    """A run being written: ``path`` (the staging folder to write into), ``outdir`` (where it will be
    published) and ``run_id`` (to stamp into its files)."""

    path: Path
    outdir: Path
    run_id: str

    def final(self, p: str | Path) -> Path:
        """Where a path inside the staging folder will lie once published."""
        try:
            return self.outdir / Path(p).relative_to(self.path)
        except ValueError:
            return Path(p)


@contextlib.contextmanager
def staged_run(outdir: str | Path) -> Iterator[Staging]:
    """Write a run into a staging folder beside ``outdir`` and publish it whole when the block succeeds
    (:func:`sfvq.atomic.staged_dir`): a previous run there is replaced (its saved directions, batches and
    foreign files carried over), and a failure or a kill leaves ``outdir`` as it was. Raises
    NotADirectoryError (``outdir`` is a file), ValueError (it holds the current directory) or OSError."""
    from sfvq.atomic import staged_dir

    run_id = new_run_id()
    with staged_dir(outdir, run_id, run_entry) as staging:
        yield Staging(staging, Path(outdir), run_id)


def recover(run_dir: str | Path) -> list[str]:
    """Finish or undo a publish a killed job left beside ``run_dir``, and remove the temporary files dead
    processes left inside it. Returns what was done (one line each)."""
    from sfvq.atomic import clean_stale, recover_dir

    done = recover_dir(run_dir, run_entry)
    done += [f"removed {p}" for p in clean_stale(run_dir)]
    return done


def run_ids(run_dir: str | Path, model: Any = None) -> dict[str, str]:
    """The run id stamped into each file of ``run_dir`` that has one (the model's from ``model`` when
    given, else from the file): ``{file name: run id}``."""
    run_dir = Path(run_dir)
    ids: dict[str, str] = {}
    if model is None and (run_dir / MODEL_FILE).is_file():
        from sfvq.quantizer import SFVQ, ModelFileError

        with contextlib.suppress(ModelFileError, OSError):
            model = SFVQ.load(run_dir / MODEL_FILE)
    rid = (getattr(model, "metadata_", None) or {}).get(RUN_ID_KEY)
    if isinstance(rid, str):
        ids[MODEL_FILE] = rid
    for name in STAMPED_FILES:
        p = run_dir / name
        if not p.is_file():
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable files are reported by whoever reads them
        if isinstance(data, dict) and isinstance(data.get(RUN_ID_KEY), str):
            ids[name] = data[RUN_ID_KEY]
    return ids


def check_one_run(run_dir: str | Path, model: Any = None) -> None:
    """Raise :class:`RunError` when the stamped files of ``run_dir`` come from different runs (files
    without a stamp, from older versions or other commands, are not compared)."""
    ids = run_ids(run_dir, model)
    if len(set(ids.values())) > 1:
        which = ", ".join(f"{name} from run {rid}" for name, rid in sorted(ids.items()))
        raise RunError(
            f"{run_dir} mixes files of different runs ({which}): a job was killed while writing it, or "
            "files were copied in; write the run again",
            "path",
        )


__all__ = [
    "MODEL_FILE",
    "RUN_FILES",
    "RUN_ID_KEY",
    "Run",
    "RunError",
    "Staging",
    "check_one_run",
    "new_run_id",
    "recover",
    "run_entry",
    "run_ids",
    "staged_run",
]
