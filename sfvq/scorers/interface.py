"""One small interface for everything that scores images, so that ``sfvq annotate`` can say what a segment
changes with whichever scorer fits the generator.

A scorer is any object with

* ``names``: the names of its scores (a non-empty sequence of str), and
* ``score(images) -> {name: (N,) tensor}``: one value per image for every name; ``images`` are float
  (N, C, H, W) in [-1, 1], as generators return them.

Optional, read with ``getattr``: ``label`` (a short name recorded in annotations.json), ``paired`` (names
that are a *change between two images*, not a property of one, e.g. identity) with
``compare(before, after) -> {name: (N,) tensor}``, ``scales`` ({name: typical size of a change}, used to
rank shifts of different units against each other; 1 when absent) and ``close()``.

Built in: :class:`FaceScorer` (face-api age, gender, smile, yaw in Node and dlib identity, for face
generators), :class:`AvatarsScorer` (the factor classifier of ``builtin:avatars-sg2``: the probability of
every ``factor=value``), and a user's own scorer through :func:`load_user_scorer`:

``--scorer my_module:make_scorer`` or ``--scorer path/to/file.py:make_scorer`` names a function that is
called without arguments and returns a scorer as above, e.g.::

    # my_scorers.py
    import torch

    class Brightness:
        names = ("brightness",)

        def score(self, images):  # (N, C, H, W) in [-1, 1]
            return {"brightness": images.mean(dim=(1, 2, 3))}

    def make_scorer():
        return Brightness()

:func:`make_scorer` turns the ``--scorer`` text (``auto``, ``none``, ``faces``, ``avatars`` or an entry
point) into a scorer; ``auto`` picks the avatars classifier for ``builtin:avatars-sg2``, the face scorers
for face generators (when installed) and none otherwise (then annotations hold only the heat maps and
layer ranges).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from sfvq.scorers._common import ScorerUnavailable

SCORER_CHOICES = ("auto", "none", "faces", "avatars")
_ENTRY_RE = re.compile(r"^(?P<target>.+):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$")


class ScorerError(ValueError):
    """A scorer that cannot be used (bad entry point, wrong output); the message says why."""


@runtime_checkable
class Scorer(Protocol):
    """What annotations need of a scorer (see the module docstring for the optional attributes)."""

    names: Sequence[str]

    def score(self, images: torch.Tensor) -> Mapping[str, Any]:
        """Images (N, C, H, W) float in [-1, 1] -> {name: (N,) values}."""
        ...


def scorer_label(scorer: Any) -> str:
    """The name a scorer is recorded under: its ``label``, else its class name; ``"none"`` for None."""
    if scorer is None:
        return "none"
    return str(getattr(scorer, "label", None) or type(scorer).__name__)


def check_scorer(scorer: Any, where: str = "the scorer") -> Any:
    """Raise :class:`ScorerError` unless ``scorer`` has non-empty string ``names`` and a callable
    ``score`` (and ``compare`` when it lists ``paired`` names); returns it."""
    names = getattr(scorer, "names", None)
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ScorerError(f"{where} must have `names`, a non-empty sequence of str, got {names!r}")
    if not all(isinstance(n, str) and n for n in names):
        raise ScorerError(f"{where}: every name must be a non-empty str, got {list(names)!r}")
    if len(set(names)) != len(names):
        raise ScorerError(f"{where}: names must be unique, got {list(names)!r}")
    if not callable(getattr(scorer, "score", None)):
        raise ScorerError(f"{where} has no callable `score(images)`")
    paired = list(getattr(scorer, "paired", ()) or ())
    if paired and not callable(getattr(scorer, "compare", None)):
        raise ScorerError(f"{where} lists paired names {paired} but has no callable `compare(before, after)`")
    return scorer


def _as_scores(out: Any, names: Sequence[str], n: int, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(out, Mapping):
        raise ScorerError(f"{where} returned {type(out).__name__}, expected a dict of name -> (N,) values")
    missing = [k for k in names if k not in out]
    if missing:
        raise ScorerError(f"{where} gave no {', '.join(missing)} (it gave {', '.join(map(str, out))})")
    scores = {}
    for k in names:
        v = torch.as_tensor(np.asarray(out[k].detach().cpu() if isinstance(out[k], torch.Tensor) else out[k]))
        v = v.to(torch.float64).reshape(-1)
        if v.numel() != n:
            raise ScorerError(f"{where}: score {k!r} has {v.numel()} values for {n} images")
        scores[k] = v  # (N,)
    return scores


def run_scorer(scorer: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``scorer.score(images)`` checked: {name: (N,) float64} for every one of its (unpaired) names."""
    names = [k for k in scorer.names if k not in set(getattr(scorer, "paired", ()) or ())]
    if not names:
        return {}
    return _as_scores(scorer.score(images), names, images.shape[0], f"{scorer_label(scorer)}.score")


def run_compare(scorer: Any, before: torch.Tensor, after: torch.Tensor) -> dict[str, torch.Tensor]:
    """``scorer.compare(before, after)`` checked for its paired names: {name: (N,) float64}; {} if none."""
    paired = list(getattr(scorer, "paired", ()) or ())
    if not paired:
        return {}
    return _as_scores(
        scorer.compare(before, after), paired, before.shape[0], f"{scorer_label(scorer)}.compare"
    )


# ---------------------------------------------------------------------------------------------- adapters
class FaceScorer:
    """The offline face scorers behind one interface: ``age`` (years), ``gender`` (P(male)), ``smile``
    (P(happy)), ``yaw`` (+ = turned to the image's right) from face-api (:class:`AttributeScorer`), and
    ``identity`` (paired: dlib's embedding distance from the unedited face; 0.6 is usually another
    person) from :class:`IdentityScorer`. Either part may be None (its names are then left out)."""

    label = "faces"

    def __init__(self, attributes: Any | None = None, identity: Any | None = None) -> None:
        if attributes is None and identity is None:
            raise ScorerError("a face scorer needs the attribute scorer, the identity scorer or both")
        from sfvq.scorers.attributes import ATTRIBUTES

        self.attributes = attributes
        self.identity = identity
        self.names = (ATTRIBUTES if attributes is not None else ()) + (("identity",) if identity else ())
        self.paired = ("identity",) if identity is not None else ()
        self.scales = {"age": 10.0, "identity": 0.6}

    def score(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images (N, C, H, W) in [-1, 1] -> {age, gender, smile, yaw: (N,)}."""
        if self.attributes is None:
            return {}
        from sfvq.scorers.attributes import ATTRIBUTES

        out = self.attributes.score(images)
        return {k: torch.as_tensor(np.asarray(out[k], np.float64)) for k in ATTRIBUTES}

    def compare(self, before: torch.Tensor, after: torch.Tensor) -> dict[str, torch.Tensor]:
        """Paired images -> {identity: (N,) dlib embedding distance}."""
        if self.identity is None:
            return {}
        return {"identity": torch.as_tensor(self.identity.distances(before, after), dtype=torch.float64)}

    def close(self) -> None:
        """End the Node process of the attribute scorer."""
        if self.attributes is not None:
            self.attributes.close()


def face_scorer() -> FaceScorer:
    """The face scorers that are installed (:class:`ScorerUnavailable` naming what to install if none)."""
    from sfvq.scorers.attributes import AttributeScorer
    from sfvq.scorers.identity import IdentityScorer

    errors = []
    parts: dict[str, Any] = {}
    for key, make in (("attributes", AttributeScorer), ("identity", IdentityScorer)):
        try:
            parts[key] = make()
        except ScorerUnavailable as e:
            errors.append(str(e))
    if not parts:
        raise ScorerUnavailable("no face scorer is installed: " + "; ".join(errors))
    return FaceScorer(**parts)


class AvatarsScorer:
    """The factor classifier of ``builtin:avatars-sg2``: one score ``factor=value`` per value of every
    factor, the predicted probability of that value (e.g. ``glasses=none``, ``mouth=smile``)."""

    label = "avatars-classifier"

    def __init__(self, classifier: Any | None = None) -> None:
        if classifier is None:
            from sfvq.avatars.classifier import load_avatars_classifier

            classifier = load_avatars_classifier()
        self.classifier = classifier
        self.names = tuple(f"{f}={v}" for f, values in classifier.vocab.items() for v in values)

    def score(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images (N, 3, R, R) in [-1, 1] -> {``factor=value``: (N,) probability}."""
        probs = self.classifier.predict_proba(images)  # {factor: (N, K)}
        return {
            f"{f}={v}": probs[f][:, k].double() for f, values in self.classifier.vocab.items()
            for k, v in enumerate(values)
        }  # fmt: skip


def load_user_scorer(spec: str) -> Any:
    """``module:function`` or ``path/to/file.py:function`` -> the scorer that ``function()`` returns
    (checked with :func:`check_scorer`). Errors say which part is wrong."""
    m = _ENTRY_RE.match(str(spec).strip())
    if not m:
        raise ScorerError(
            f"--scorer {spec!r} is not one of {', '.join(SCORER_CHOICES)} nor an entry point "
            "module:function or path/to/file.py:function"
        )
    target, func = m.group("target"), m.group("func")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ScorerError(f"--scorer {spec!r}: no such file {path}")
        name = "sfvq_user_scorer_" + re.sub(r"\W", "_", path.stem)
        mspec = importlib.util.spec_from_file_location(name, path)
        if mspec is None or mspec.loader is None:
            raise ScorerError(f"--scorer {spec!r}: {path} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        try:
            mspec.loader.exec_module(module)
        except Exception as e:  # the user's code: report whatever it raised
            sys.modules.pop(name, None)
            raise ScorerError(f"--scorer {spec!r}: importing {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ScorerError(f"--scorer {spec!r}: cannot import module {target!r} ({e})") from e
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ScorerError(f"--scorer {spec!r}: {target} has no function {func!r}")
    try:
        scorer = fn()
    except Exception as e:  # the user's code
        raise ScorerError(f"--scorer {spec!r}: {func}() failed: {type(e).__name__}: {e}") from e
    check_scorer(scorer, f"the object {func}() returned")
    if not getattr(scorer, "label", None):
        try:
            scorer.label = f"{target}:{func}"
        except AttributeError:
            pass
    return scorer


def is_avatars(network: str | None) -> bool:
    """Whether ``network`` is the built-in avatars generator (whose factor classifier ships with it)."""
    from sfvq.avatars import BUILTIN_NAME

    return str(network or "") == BUILTIN_NAME


def make_scorer(spec: str | None, network: str | None = None, G: Any = None) -> tuple[Any, str]:
    """The ``--scorer`` text -> (scorer or None, a line saying what was chosen and why).

    ``auto`` (or None): the avatars classifier for ``builtin:avatars-sg2``; the face scorers for a face
    generator (:func:`sfvq.project.is_face_generator`) when installed, else none with the reason; none for
    other generators. ``none``: no scorer. ``faces`` / ``avatars``: that scorer (errors when unavailable).
    Anything else is a user entry point (:func:`load_user_scorer`).
    """
    spec = "auto" if spec is None else str(spec).strip()
    if spec == "none":
        return None, "no scorer (--scorer none): heat maps and layer ranges only"
    if spec == "avatars":
        return AvatarsScorer(), "scorer: the avatars factor classifier"
    if spec == "faces":
        return face_scorer(), "scorer: the offline face scorers"
    if spec != "auto":
        s = load_user_scorer(spec)
        return s, f"scorer: {scorer_label(s)} ({len(s.names)} names)"
    if is_avatars(network):
        return AvatarsScorer(), f"scorer: the avatars factor classifier ({network})"
    from sfvq.project import is_face_generator

    if G is not None and is_face_generator(G):
        try:
            s = face_scorer()
        except ScorerUnavailable as e:
            return None, f"no scorer: {G.name} draws faces but {e}"
        return s, f"scorer: the offline face scorers ({', '.join(s.names)}), as {G.name} draws faces"
    name = getattr(G, "name", network) or "this generator"
    return (
        None,
        f"no scorer fits {name} (--scorer module:function for your own): heat maps and layer ranges only",
    )


__all__ = [
    "SCORER_CHOICES",
    "AvatarsScorer",
    "FaceScorer",
    "Scorer",
    "ScorerError",
    "check_scorer",
    "face_scorer",
    "is_avatars",
    "load_user_scorer",
    "make_scorer",
    "run_compare",
    "run_scorer",
    "scorer_label",
]
