"""ffmpeg as a child process that never outlives sfvq.

The binary is the one bundled with ``imageio-ffmpeg`` (no system ffmpeg needed). We start it ourselves
rather than through ``imageio_ffmpeg.write_frames``, which puts ffmpeg in a process group of its own and
offers no hook to tie it to its parent: a ``kill -9`` of the job left ffmpeg running. Here, on Linux, the
child asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, set between fork and
exec), and every way out of :func:`write_frames` (done, error, interrupt) closes or kills it and reaps it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Generator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when this process dies (Linux), or None
    where the kernel offers no such thing.

    The death signal is tied to the thread that starts the child: call from a thread that lives as long
    as the child (the main thread, or the worker doing the writing)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def start(args: Sequence[str], **popen: Any) -> subprocess.Popen:
    """Start ffmpeg (the bundled binary) with ``args``, tied to this process (see the module docstring)."""
    import imageio_ffmpeg

    return subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), *args], preexec_fn=_die_with_parent(), **popen)


def write_frames(
    path: str | Path,
    size: tuple[int, int],
    *,
    fps: float = 24.0,
    codec: str = "libx264",
    pix_fmt_in: str = "rgb24",
    pix_fmt_out: str = "yuv420p",
    crf: int = 25,
    output_params: Sequence[str] = (),
    log_level: str = "error",
) -> Generator[None, Any, None]:
    """A generator encoding raw frames of ``size`` (width, height) into ``path``: prime it with
    ``send(None)`` (which starts ffmpeg), ``send`` each frame (a C-contiguous uint8 array, H x W x 3), and
    ``close()`` it to finish the file, as ``imageio_ffmpeg.write_frames`` is used (same encoder settings:
    its default quality is CRF 25).

    ``close()`` waits for ffmpeg and raises RuntimeError when it failed; an exception thrown in, or one
    while waiting, kills it. ffmpeg is always reaped before the generator ends.
    """
    width, height = (int(v) for v in size)
    rate = str(Fraction(fps).limit_denominator())
    args = [
        "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}", "-pix_fmt", pix_fmt_in,
        "-r", rate, "-i", "-", "-an", "-vcodec", codec, "-pix_fmt", pix_fmt_out, "-crf", str(crf),
        "-v", log_level, *output_params, str(path),
    ]  # fmt: skip
    proc = start(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    finished = False
    try:
        while True:
            try:
                frame = yield
            except GeneratorExit:
                finished = True
                return
            try:
                proc.stdin.write(memoryview(frame).cast("B"))  # type: ignore[union-attr]
            except BrokenPipeError:
                raise RuntimeError(f"ffmpeg stopped while writing {path} (exit code {proc.poll()})") from None
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        if finished:
            try:
                proc.wait()
            finally:
                if proc.poll() is None:  # interrupted while ffmpeg was finishing
                    proc.kill()
                    proc.wait()
        else:
            proc.kill()
            proc.wait()
        if finished and proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path} (exit code {proc.returncode})")


__all__ = ["start", "write_frames"]
