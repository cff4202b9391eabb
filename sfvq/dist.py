"""Several processes through ``torch.distributed``, as ``torchrun`` starts them; a no-op in one process.

``torchrun --nproc-per-node=N -m sfvq -- fit ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in every process; :func:`init` joins the process group they
describe (gloo on the CPU, NCCL for CUDA devices). Without those variables, or with a world of one,
nothing is initialised and every helper here answers for a single process: rank 0 of 1, collectives
return their input. The fit and the sharded writers call only these helpers, so the same code runs in
one process and in many. Joining the group waits at most :data:`DEFAULT_INIT_TIMEOUT_S` (a process that
died before joining fails the others quickly); collectives wait up to :data:`DEFAULT_TIMEOUT_S`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset): how many processes torchrun started."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        n = int(value)
    except ValueError as e:
        raise RuntimeError(f"WORLD_SIZE must be an integer, got {value!r}") from e
    if n < 1:
        raise RuntimeError(f"WORLD_SIZE must be >= 1, got {n}")
    return n


def _dist() -> Any:
    import torch.distributed as dist

    return dist


_alone = False  # set by local(): this process acts as a world of one


@contextmanager
def local() -> Iterator[None]:
    """Inside the block this process works alone: every helper here answers for a single process (rank 0
    of 1, collectives return their input), so that code which would share its work (a fit) runs whole
    here, e.g. on rank 0 while the others wait for its result."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def is_distributed() -> bool:
    """Whether a process group of more than one process is active (and not set aside by :func:`local`)."""
    if _alone or not torch.distributed.is_available():
        return False
    dist = _dist()
    return dist.is_initialized() and dist.get_world_size() > 1


def backend_for(device: str | torch.device | None) -> str:
    """NCCL for a CUDA device (when NCCL is built in), gloo otherwise."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.distributed.is_nccl_available():
        return "nccl"
    return "gloo"


# How long a process waits for the others in a collective: long, because ranks of a resumed render
# may have very different amounts of work left before they meet at the final barrier.
DEFAULT_TIMEOUT_S = 6 * 3600
# How long a process waits for the others to join the group (torchrun's own default join timeout): a
# process that died before joining (a bad path, an import error) fails the others within this, not after
# DEFAULT_TIMEOUT_S. SFVQ_INIT_TIMEOUT_S overrides it (machines started by hand far apart).
DEFAULT_INIT_TIMEOUT_S = 600
INIT_TIMEOUT_ENV = "SFVQ_INIT_TIMEOUT_S"


def init_timeout() -> float:
    """Seconds to wait for every process to join: ``SFVQ_INIT_TIMEOUT_S``, else DEFAULT_INIT_TIMEOUT_S."""
    value = os.environ.get(INIT_TIMEOUT_ENV)
    if value is None or value == "":
        return float(DEFAULT_INIT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError as e:
        raise RuntimeError(f"{INIT_TIMEOUT_ENV} must be a number of seconds, got {value!r}") from e
    if not seconds > 0:
        raise RuntimeError(f"{INIT_TIMEOUT_ENV} must be positive, got {value!r}")
    return seconds


def init(
    device: str | torch.device | None = None,
    backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    init_timeout_s: float | None = None,
) -> bool:
    """Join the process group torchrun describes; returns whether this run is distributed.

    A no-op (False) when ``WORLD_SIZE`` is unset or 1, and when a group is already initialised (then
    that group is used). ``MASTER_ADDR``/``MASTER_PORT`` must be set for a world of more than one.
    Joining (the rendezvous store, the connections between processes and a first barrier) may take at
    most ``init_timeout_s`` (None: :func:`init_timeout`), after which a RuntimeError says which
    process is missing; collectives afterwards wait up to ``timeout_s``.
    """
    if env_world_size() == 1:
        return False
    dist = _dist()
    if dist.is_initialized():
        return dist.get_world_size() > 1
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {var} is not set: start several "
                "processes with torchrun (python -m torch.distributed.run), which sets RANK, MASTER_ADDR "
                "and MASTER_PORT"
            )
    join_s = init_timeout() if init_timeout_s is None else float(init_timeout_s)
    backend = backend or backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        # The store torchrun describes, with the short timeout: it bounds the wait for the others to join
        # (rank 0's store waits for every process, the connections wait for every peer's address).
        store, rank_, world = next(dist.rendezvous("env://", timeout=timedelta(seconds=join_s)))
        dist.init_process_group(
            backend=backend, store=store, rank=rank_, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
        dist.barrier()  # every process joined (and NCCL made its communicator) within the join timeout
    except RuntimeError as e:  # torch's DistError, DistStoreError, ... (all RuntimeErrors)
        if dist.is_initialized():
            dist.destroy_process_group()
        raise RuntimeError(
            f"process {os.environ['RANK']} of {os.environ['WORLD_SIZE']} could not join the others at "
            f"{where} within {join_s:g} s ({INIT_TIMEOUT_ENV} sets this): did every process start, and "
            f"can each reach {where}? ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    store.set_timeout(timedelta(seconds=timeout_s))  # later uses of the store wait as collectives do
    return True


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if torch.distributed.is_available() and _dist().is_initialized():
        _dist().destroy_process_group()


def rank() -> int:
    """This process's rank, 0 in a single process."""
    return _dist().get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes share the work, 1 in a single process."""
    return _dist().get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank on this machine (``LOCAL_RANK``), which picks the GPU; 0 in a single process."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes shared outputs."""
    return rank() == 0


def device_for_rank(device: str) -> str:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` when distributed, so each process gets its own GPU."""
    if device == "cuda" and is_distributed():
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    """Wait until every process gets here."""
    if is_distributed():
        _dist().barrier()


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over every process, in place; returned for chaining."""
    if is_distributed():
        _dist().all_reduce(t, op=_dist().ReduceOp.SUM)
    return t


def all_reduce_min_(t: torch.Tensor) -> torch.Tensor:
    """Element-wise minimum of ``t`` over every process, in place."""
    if is_distributed():
        _dist().all_reduce(t, op=_dist().ReduceOp.MIN)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` with rank ``src``'s ``t``, in place."""
    if is_distributed():
        _dist().broadcast(t, src=src)
    return t


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``t`` (same shape on each), in rank order."""
    if not is_distributed():
        return [t]
    out = [torch.empty_like(t) for _ in range(world_size())]
    _dist().all_gather(out, t.contiguous())
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (pickled between our own processes only)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (pickled between our own processes only), in rank order."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    _dist().all_gather_object(gathered, obj)
    return gathered


def raise_together(error: BaseException | None) -> None:
    """Raise on every process if any process met an error, else return.

    Lets a check that runs on one rank (rank 0 reading a checkpoint) fail everywhere instead of leaving
    the others waiting in the next collective: the failing rank raises its own error, the others a
    RuntimeError quoting the lowest failing rank's message.
    """
    if not is_distributed():
        if error is not None:
            raise error
        return
    gathered: list[Any] = [None] * world_size()
    _dist().all_gather_object(gathered, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    for r, message in enumerate(gathered):
        if message is not None:
            raise RuntimeError(f"rank {r} failed: {message}")


def split_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """Contiguous share ``index`` of ``parts`` of ``range(n)``: sizes differ by at most one row."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def my_range(n: int) -> tuple[int, int]:
    """This process's contiguous share of ``range(n)``."""
    return split_range(n, world_size(), rank())


def my_items(items: Sequence[Any]) -> list[Any]:
    """This process's items, round-robin (item ``k`` belongs to rank ``k % world``)."""
    return list(items[rank() :: world_size()])


__all__ = [
    "DEFAULT_INIT_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "INIT_TIMEOUT_ENV",
    "all_gather",
    "all_gather_object",
    "all_reduce_min_",
    "all_reduce_sum_",
    "backend_for",
    "barrier",
    "broadcast_",
    "broadcast_object",
    "device_for_rank",
    "env_world_size",
    "init",
    "init_timeout",
    "is_distributed",
    "is_main",
    "local",
    "local_rank",
    "my_items",
    "my_range",
    "raise_together",
    "rank",
    "shutdown",
    "split_range",
    "world_size",
]
