"""Face attributes (age, gender, smile, head yaw) from face-api's small nets, run offline in Node.

`@vladmandic/face-api` (npm, MIT) ships its trained models inside the package: a tiny face detector, a
68-point landmark net, an age/gender net and a 7-way expression net. They run in Node with tfjs's wasm
backend (its pure-JS CPU backend took 20 s per image here, wasm 0.1 s). :class:`AttributeScorer` starts
one long-lived Node process (``faceapi_runner.cjs`` beside this file) and talks JSON lines with it, so
that each image costs only the nets' time. Images travel as base64 raw RGB bytes: face-api's Node build has no
image decoder and raw bytes are cheaper than PNG. The Node packages are pinned in the repository's
``package.json`` / ``package-lock.json`` and installed by ``scripts/install-scorers.sh`` (``npm ci``).

Porting the four nets to torch was the alternative; calling the maintained package keeps its exact
pre- and post-processing and leaves nothing of ours to get wrong there.

Outputs (:meth:`AttributeScorer.score`), one value per image:

* ``age``: years (face-api's regression).
* ``gender``: probability that the face is **male** (face-api gives the likelier label and its
  probability; we turn that into P(male)).
* ``smile``: probability of the "happy" expression; ``expression_<name>`` for all seven.
* ``yaw``: head turn from the 68 landmarks (:func:`yaw_from_landmarks`), unitless, about -1..1;
  **positive = the face turned towards the image's right** (its nose moves right of the face's midline).
* ``detected``: whether the detector found the face; where not, the nets ran on the whole image
  (generated faces are tight crops, so that is usually still the face). ``det_score`` is NaN there.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sfvq.scorers._common import ScorerUnavailable, as_uint8_rgb

RUNNER = Path(__file__).with_name("faceapi_runner.cjs")
EXPRESSIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
ATTRIBUTES = ("age", "gender", "smile", "yaw")  # the continuous attributes, in this order
NODE_INSTALL_HINT = "run scripts/install-scorers.sh from the repository root (needs Node >= 18 and npm)"
_FACEAPI = Path("@vladmandic") / "face-api" / "package.json"


def find_node_modules(start: str | Path | None = None) -> Path:
    """The node_modules folder that holds @vladmandic/face-api.

    Looked for in $SFVQ_NODE_MODULES, then in the folders above ``start`` (default: this package, which
    finds the repository root's node_modules for a source checkout), then in the working directory.
    """
    candidates: list[Path] = []
    if os.environ.get("SFVQ_NODE_MODULES"):
        candidates.append(Path(os.environ["SFVQ_NODE_MODULES"]))
    here = Path(start) if start is not None else Path(__file__).resolve().parent
    candidates += [p / "node_modules" for p in (here, *here.parents)]
    candidates.append(Path.cwd() / "node_modules")
    for c in candidates:
        if (c / _FACEAPI).is_file():
            return c
    raise ScorerUnavailable(
        f"the attribute scorer needs the npm package @vladmandic/face-api: {NODE_INSTALL_HINT}"
    )


def yaw_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Head yaw from 68-point landmarks (iBUG order): (N, 68, 2) pixel (x, y) -> (N,), about -1..1.

    The face's midline is the mean of the midpoints of the eight symmetric jaw-contour pairs (i, 16 - i);
    the nose is the mean of the tip and the four nostril points (30-35). Yaw is the nose's offset from the
    midline along x, divided by the mean half-width of those pairs: 0 for a frontal face, positive when the
    face turns towards the image's right, and the exact negative for the mirror image of the landmarks.
    It is roughly the sine of the turn, scaled by how far the nose stands out of the face.
    """
    L = np.asarray(landmarks, np.float64)
    if L.ndim != 3 or L.shape[1:] != (68, 2):
        raise ValueError(f"expected landmarks (N, 68, 2), got shape {L.shape}")
    left = L[:, 0:8, 0]  # (N, 8) jaw points on the image's left
    right = L[:, 16:8:-1, 0]  # (N, 8) their partners on the right
    mid = ((left + right) / 2).mean(axis=1)  # (N,)
    half = ((right - left) / 2).mean(axis=1)  # (N,)
    nose = L[:, 30:36, 0].mean(axis=1)  # (N,)
    return (nose - mid) / np.maximum(np.abs(half), 1e-6)


class AttributeScorer:
    """Age, gender, smile, expressions and yaw of face images, through one Node process.

    Args:
        batch_size: images per request to the process.
        detector: "tiny" (TinyFaceDetector, fast) or "ssd" (SSD-MobileNet, about 20x slower).
        input_size: the tiny detector's input size (multiple of 32).
        pad: grey border added around the image for detection only, as a fraction of its size.
        min_confidence: detector score threshold.
        node: the node executable (default: $SFVQ_NODE or ``node`` on PATH).
        node_modules: folder holding @vladmandic/face-api (default: :func:`find_node_modules`).
        backend: tfjs backend in Node, "wasm" (default) or "cpu".
        max_side: larger images are downscaled (area filter) to this many px on their longer side before
            sending (the nets look at 112-160 px inputs anyway); landmarks come back in the original pixels.
        timeout: seconds to wait for the process to start; a request may take this plus 5 s per image.

    Use as a context manager or call :meth:`close`; the process also ends with the Python process.
    """

    def __init__(
        self,
        batch_size: int = 32,
        detector: str = "tiny",
        input_size: int = 160,
        pad: float = 0.5,
        min_confidence: float = 0.3,
        node: str | None = None,
        node_modules: str | Path | None = None,
        backend: str = "wasm",
        max_side: int = 512,
        timeout: float = 60.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if detector not in ("tiny", "ssd"):
            raise ValueError(f"detector must be 'tiny' or 'ssd', got {detector!r}")
        if input_size < 32 or input_size % 32:
            raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")
        if not 0 <= pad <= 4:
            raise ValueError(f"pad must be in [0, 4], got {pad}")
        if not 0 < min_confidence < 1:
            raise ValueError(f"min_confidence must be in (0, 1), got {min_confidence}")
        if max_side < 64:
            raise ValueError(f"max_side must be at least 64 px, got {max_side}")
        if backend not in ("wasm", "cpu"):
            raise ValueError(f"backend must be 'wasm' or 'cpu', got {backend!r}")
        exe = node or os.environ.get("SFVQ_NODE") or shutil.which("node")
        if not exe or not (shutil.which(exe) or Path(exe).is_file()):
            raise ScorerUnavailable(
                f"the attribute scorer needs Node.js (node not found); {NODE_INSTALL_HINT}"
            )
        modules = Path(node_modules) if node_modules is not None else find_node_modules()
        if not (modules / _FACEAPI).is_file():
            raise ScorerUnavailable(f"{modules} has no @vladmandic/face-api: {NODE_INSTALL_HINT}")
        self.batch_size = int(batch_size)
        self.max_side = int(max_side)
        self.timeout = float(timeout)
        self._options = {
            "detector": detector,
            "input_size": int(input_size),
            "pad": float(pad),
            "min_confidence": float(min_confidence),
        }
        self._stderr: deque[str] = deque(maxlen=40)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            [exe, str(RUNNER), "--modules", str(modules), "--backend", backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        threading.Thread(
            target=self._pump, args=(self._proc.stdout, self._lines.put, True), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self._proc.stderr, self._stderr.append, False), daemon=True
        ).start()
        hello = self._receive(self.timeout)
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"face-api runner did not start: {hello}")
        self.backend = hello.get("backend")
        self.versions = hello.get("versions", {})
        self.images_seen = 0
        self.fallbacks = 0

    @staticmethod
    def _pump(stream: Any, sink: Any, mark_end: bool) -> None:
        """Copy a pipe's lines into ``sink`` until the process closes it (then ``sink(None)`` if mark_end)."""
        with stream:
            for line in stream:
                sink(line.rstrip("\n"))
        if mark_end:
            sink(None)

    def _receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise RuntimeError(
                f"face-api runner gave no answer in {timeout:.0f} s; stderr: {self._tail()}"
            ) from None
        if line is None:
            proc, self._proc = self._proc, None
            code = proc.wait(timeout=5) if proc is not None else None
            raise RuntimeError(f"face-api runner exited (code {code}); stderr: {self._tail()}")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise RuntimeError(f"face-api runner wrote something that is not JSON: {line[:200]!r}") from None

    def _tail(self) -> str:
        return " | ".join(self._stderr) or "(empty)"

    def _request(self, batch: np.ndarray) -> list[dict[str, Any]]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"face-api runner is not running; stderr: {self._tail()}")
        images = [
            {
                "w": int(im.shape[1]),
                "h": int(im.shape[0]),
                "rgb": base64.b64encode(im.tobytes()).decode("ascii"),
            }
            for im in batch
        ]
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"images": images, **self._options}) + "\n")
        self._proc.stdin.flush()
        reply = self._receive(self.timeout + 5.0 * len(batch))
        if not reply.get("ok"):
            raise RuntimeError(f"face-api runner failed: {reply.get('error')}")
        return reply["results"]

    def score(
        self, images: np.ndarray | torch.Tensor, return_landmarks: bool = False
    ) -> dict[str, np.ndarray]:
        """Images (uint8 (N, H, W, 3), or float (N, C, H, W) in [-1, 1]) -> arrays of length N.

        Keys: age, gender (P(male)), smile (P(happy)), yaw, detected (bool), det_score (NaN where not
        detected), expression_<name> for the seven expressions, and with ``return_landmarks`` also
        landmarks (N, 68, 2) in pixels of the given images.
        """
        batch = as_uint8_rgb(images)  # (N, H, W, 3)
        H, W = batch.shape[1:3]
        scale = min(1.0, self.max_side / max(H, W))
        if scale < 1.0:
            size = (max(1, round(W * scale)), max(1, round(H * scale)))
            batch = np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BOX)) for im in batch])
        results: list[dict[str, Any]] = []
        for start in range(0, batch.shape[0], self.batch_size):
            results += self._request(batch[start : start + self.batch_size])
        landmarks = np.array([r["landmarks"] for r in results], np.float64)  # (N, 68, 2)
        if scale < 1.0:
            landmarks *= [W / batch.shape[2], H / batch.shape[1]]  # back to the given images' pixels
        out = {
            "age": np.array([r["age"] for r in results], np.float64),
            "gender": np.array(
                [
                    r["gender_probability"] if r["gender"] == "male" else 1.0 - r["gender_probability"]
                    for r in results
                ],
                np.float64,
            ),
            "smile": np.array([r["expressions"]["happy"] for r in results], np.float64),
            "yaw": yaw_from_landmarks(landmarks),
            "detected": np.array([bool(r["detected"]) for r in results]),
            "det_score": np.array(
                [np.nan if r["score"] is None else r["score"] for r in results], np.float64
            ),
        }
        for name in EXPRESSIONS:
            out[f"expression_{name}"] = np.array([r["expressions"][name] for r in results], np.float64)
        if return_landmarks:
            out["landmarks"] = landmarks
        self.images_seen += len(results)
        self.fallbacks += int((~out["detected"]).sum())
        return out

    def close(self) -> None:
        """End the Node process (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # the runner ends at end of input
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __enter__(self) -> AttributeScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
