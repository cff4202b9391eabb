"""Atomic files and folders with no dependencies, shared by the core (model files), ``sfvq.io`` and
:mod:`sfvq.runs`.

Three tools:

* :func:`atomic_path`: one file written under a temporary name beside its destination, fsynced and
  renamed into place only when complete (removed on any error);
* :func:`staged_dir`: a whole output folder written into a staging folder beside it and published by
  renames, so the destination is at every moment either the complete old folder or the complete new one
  (see :func:`publish_dir` for the protocol and :func:`recover_dir` for what a killed job leaves);
* :func:`clean_stale`: removes the temporary files and folders of dead jobs.

Every temporary name carries the id of the process that owns it (``.NAME.PID.XXXXXXXX.tmp`` for files,
``.NAME.sfvq-staging.PID.TAG`` and friends for folders), so a cleaner removes only leftovers whose owner
is gone and that were last changed before this process started (:data:`STARTED`), never the work of a job
that is still running (in another PID namespace, a dead-looking id may be a live process).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# A temporary file or folder of :func:`atomic_path` / :func:`temp_dir`: ``.NAME.PID.XXXXXXXX.tmp``.
TMP_RE = re.compile(r"\A\.(?P<name>.+)\.(?P<pid>\d{1,10})\.(?P<rand>[a-z0-9_]{8})\.tmp\Z")
# The side folders of a publish, in the destination's parent: ``.NAME.sfvq-KIND.PID.TAG``. ``staging`` is
# being written; ``ready`` is complete and about to replace NAME; ``old`` is the previous NAME moved aside.
SIDE_RE = re.compile(
    r"\A\.(?P<name>.+)\.sfvq-(?P<kind>staging|ready|old)\.(?P<pid>\d{1,10})\.(?P<tag>[A-Za-z0-9]+)\Z"
)

# What becomes of an entry of a previous folder when a new one replaces it, given its path relative to
# the folder ("model.safetensors", "maps/map_4bit.png"): "drop" (the new folder supersedes it), "keep"
# (carried over into the new folder unless it has one of that name) or "merge" (a folder whose entries
# are sorted one by one).
Superseded = Callable[[str], str]

STARTED = time.time()  # when this process loaded sfvq: leftovers changed since may be a live job's


def _default_file_mode() -> int:
    """Mode a plain ``open(..., "w")`` would give a new file: 0o666 minus the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; folders on systems that cannot are skipped."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if Path(path).is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except (IsADirectoryError, PermissionError):  # a folder on a system without O_DIRECTORY
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        if not Path(path).is_dir():
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and folder under ``root`` (symlinks not followed), deepest first."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                fsync_path(p)
        fsync_path(folder)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and replaces ``path``, on error it
    is removed. The temporary name records this process's id (see :func:`clean_stale`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _default_file_mode())  # mkstemp makes 0o600; give the usual permissions
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def temp_dir(parent: str | Path, name: str) -> Path:
    """A new empty folder ``.NAME.PID.XXXXXXXX.tmp`` in ``parent`` (cleaned by :func:`clean_stale` once
    this process is gone)."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=parent))


# ---------------------------------------------------------------------------------------------- owners
def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (this one counts as alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep its files
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clean_stale(root: str | Path, *, depth: int = 3, before: float | None = None) -> list[Path]:
    """Remove the temporary files and folders (``.NAME.PID.XXXXXXXX.tmp``) under ``root``, at most
    ``depth`` folders down, whose owning process is dead and that were last modified before ``before``
    (default: :data:`STARTED`). Only names of that pattern are touched. Returns what was removed."""
    root = Path(root)
    limit = STARTED if before is None else before
    removed: list[Path] = []
    if not root.is_dir() or root.is_symlink():
        return removed
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = TMP_RE.match(p.name)
        if m is not None:
            try:
                old = p.lstat().st_mtime < limit
            except OSError:
                continue
            if old and not pid_alive(int(m["pid"])):
                _remove(p)
                removed.append(p)
        elif depth > 1 and p.is_dir() and not p.is_symlink():
            removed += clean_stale(p, depth=depth - 1, before=limit)
    return removed


# ---------------------------------------------------------------------------------------------- folders
def _side(outdir: Path, kind: str, pid: int, tag: str) -> Path:
    return outdir.parent / f".{outdir.name}.sfvq-{kind}.{pid}.{tag}"


def side_folders(outdir: str | Path) -> list[tuple[str, int, str, Path]]:
    """The publish side folders of ``outdir`` in its parent: (kind, pid, tag, path), oldest first."""
    return [(kind, pid, tag, p) for _, kind, pid, tag, p in _sides(outdir)]


def _sides(outdir: str | Path) -> list[tuple[float, str, int, str, Path]]:
    """:func:`side_folders` with each one's modification time first."""
    outdir = Path(outdir)
    found = []
    try:
        entries = list(outdir.parent.iterdir())
    except OSError:
        return []
    for p in entries:
        m = SIDE_RE.match(p.name)
        if m is not None and m["name"] == outdir.name and p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                found.append((p.stat().st_mtime, m["kind"], int(m["pid"]), m["tag"], p))
    return sorted(found)


def _carry_over(old: Path, new: Path, superseded: Superseded, rel: str = "") -> None:
    """Move every entry of ``old`` that ``superseded`` keeps, and that ``new`` lacks, into ``new`` (folders
    it merges are sorted entry by entry, and made in ``new`` only when something goes into them).
    Nothing is deleted here."""
    for p in sorted(old.iterdir()):
        name = f"{rel}{p.name}"
        fate = superseded(name)
        is_dir = p.is_dir() and not p.is_symlink()
        target = new / p.name
        if fate == "merge" and is_dir:
            _carry_over(p, target, superseded, f"{name}/")
        elif fate == "keep" and not target.exists() and not target.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(p, target)


def publish_dir(staging: Path, outdir: Path, superseded: Superseded, tag: str) -> None:
    """Put the complete folder ``staging`` in place of ``outdir``.

    1. ``staging`` is renamed ``.NAME.sfvq-ready.PID.TAG``: from here on it will be published, even by
       :func:`recover_dir` if this process dies;
    2. without an ``outdir``: the ready folder is renamed ``outdir`` (one rename); else
    3. ``outdir`` is renamed ``.NAME.sfvq-old.PID.TAG``, the ready folder renamed ``outdir``, the old
       folder's entries that ``superseded`` keeps (files that are not a run's: notes, the user's
       pictures, ...) moved into it, and the old folder deleted.

    All renames stay in one parent folder (one file system), so each is atomic; the parent is fsynced
    after each.
    """
    pid = os.getpid()
    parent = outdir.parent
    ready = _side(outdir, "ready", pid, tag)
    os.rename(staging, ready)
    fsync_path(parent)
    if not outdir.exists():
        os.rename(ready, outdir)
        fsync_path(parent)
        return
    old = _side(outdir, "old", pid, tag)
    os.rename(outdir, old)
    os.rename(ready, outdir)
    fsync_path(parent)
    try:
        _carry_over(old, outdir, superseded)
    except OSError:  # the new folder is in place; recover_dir finishes the carry-over once we are gone
        return
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(outdir: str | Path, superseded: Superseded, *, before: float | None = None) -> list[str]:
    """Finish or undo what a killed :func:`staged_dir` left beside ``outdir`` (only side folders of dead
    processes, last changed before ``before`` (default :data:`STARTED`), are touched):

    * a ``ready`` folder (complete) is published when there is no ``outdir`` (the job died between its
      renames); when there is one, the job died before replacing it and the ready folder is deleted;
    * an ``old`` folder (the previous ``outdir`` moved aside) is put back when there is no ``outdir``, else
      the entries ``superseded`` keeps are carried into ``outdir`` and it is deleted;
    * a ``staging`` folder (incomplete) is deleted.

    Returns a line per action taken. Errors (a read-only parent, say) leave things as they are.
    """
    outdir = Path(outdir)
    done: list[str] = []
    try:
        limit = STARTED if before is None else before
        sides = [(k, pid, t, p) for m, k, pid, t, p in _sides(outdir) if m < limit and not pid_alive(pid)]
        for kind, _, _, p in sides:
            if kind == "ready" and not outdir.exists():
                os.rename(p, outdir)
                done.append(f"published the complete run a killed job left in {p.name}")
        for kind, _, _, p in sides:
            if kind != "old" or not p.exists():
                continue
            if not outdir.exists():
                os.rename(p, outdir)
                done.append(f"restored {outdir.name} from {p.name}")
            else:
                _carry_over(p, outdir, superseded)
                shutil.rmtree(p, ignore_errors=True)
                done.append(f"removed the previous run a killed job left in {p.name}")
        for kind, _, _, p in sides:
            if kind in ("staging", "ready") and p.exists():
                shutil.rmtree(p, ignore_errors=True)
                done.append(f"removed the incomplete output a killed job left in {p.name}")
        if done:
            fsync_path(outdir.parent)
    except OSError:
        pass
    return done


@contextlib.contextmanager
def staged_dir(outdir: str | Path, tag: str, superseded: Superseded) -> Iterator[Path]:
    """Yield an empty staging folder beside ``outdir``; when the block succeeds its files are fsynced and
    it replaces ``outdir`` (:func:`publish_dir`); on any error it is deleted and ``outdir`` is untouched.

    ``tag`` names this output (letters and digits, e.g. a run id); ``superseded`` says which entries of an
    existing ``outdir`` the new folder replaces and which are carried over (see :data:`Superseded`).
    Leftovers of killed jobs beside ``outdir`` are dealt with first (:func:`recover_dir`). Raises
    NotADirectoryError when ``outdir`` is a file, ValueError when it holds the current directory (which
    cannot be replaced).
    """
    if not re.fullmatch(r"[A-Za-z0-9]+", tag):
        raise ValueError(f"tag must be letters and digits, got {tag!r}")
    outdir = Path(os.path.abspath(outdir))
    if outdir.is_symlink():
        outdir = outdir.resolve()
    if outdir.exists() and not outdir.is_dir():
        raise NotADirectoryError(f"{outdir} exists and is not a directory")
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current directory was deleted
        cwd = None
    if cwd is not None and outdir.exists() and (cwd == outdir.resolve() or outdir.resolve() in cwd.parents):
        raise ValueError(
            f"{outdir} holds the current directory, which cannot be replaced: run from outside it"
        )
    outdir.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(outdir, superseded)
    staging = _side(outdir, "staging", os.getpid(), tag)
    staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_dir(staging, outdir, superseded, tag)


__all__ = [
    "SIDE_RE",
    "TMP_RE",
    "Superseded",
    "atomic_path",
    "clean_stale",
    "fsync_path",
    "fsync_tree",
    "pid_alive",
    "publish_dir",
    "recover_dir",
    "side_folders",
    "staged_dir",
    "temp_dir",
]
