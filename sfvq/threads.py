"""Thread use for loops of many small torch ops (the fit's steps, the projection's chunks).

Each small multi-threaded op ends at a barrier where every thread waits for the slowest. On a quiet
machine that costs nothing, but when another process keeps a core busy, one of torch's threads is often
descheduled and every op waits a scheduler time slice for it: on 2 cores the 6-bit fit of 100,000
vectors took 10x longer with torch's 2 threads than with 1 (issue 12). Large ops (one big matrix
product) only lose their fair share.

:class:`ThreadPicker` runs a loop of similar steps on whichever is faster *right now*, one thread or the
caller's thread count: it times a few interleaved steps of each, keeps the winner for a while (longer each
time the same count wins again), then checks again. torch's thread setting is restored when the loop ends,
so the user's global settings never change behind their back. Results do not depend on the choice for the
loops it is used in (their ops are deterministic per element; tested).

The policy is global and can be set for a block: ``with sfvq.threads.policy(1): model.fit(X)``.
``"adaptive"`` (the default) chooses as above; an int runs every such loop on that many threads
(never more than torch's current setting); ``None`` leaves torch's setting alone (the previous behaviour).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch

__all__ = ["Policy", "ThreadPicker", "get_policy", "num_threads", "policy", "set_policy"]

Policy = Literal["adaptive"] | int | None

_policy: Policy = "adaptive"

# A comparison times up to _TRIALS interleaved pairs of steps (one thread, then the caller's count) and
# stops early once one count is _DECISIVE times faster. The winner then runs for a period that starts at
# _FIRST_PERIOD seconds and doubles (up to _LONGEST_PERIOD) while the same count keeps winning; the
# verdict is shared by every loop of the process in that time (contention is a property of the machine,
# not of the loop). A step on several threads slower than _SLOW_FACTOR times the running average (the
# machine got busy) compares again at once.
_TRIALS = 3
_DECISIVE = 2.0
_FIRST_PERIOD = 0.5
_LONGEST_PERIOD = 4.0
_SLOW_FACTOR = 3.0
_EMA = 0.2  # weight of the newest step in the running average of step times

# The last verdict, by loop kind and the caller's thread count: (winner, valid until (clock s), period).
_verdicts: dict[tuple[str, int], tuple[int, float, float]] = {}


def _check(value: Policy) -> Policy:
    if value is None or value == "adaptive":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"thread policy must be 'adaptive', None or a positive int, got {value!r}")
    return value


def get_policy() -> Policy:
    """The current thread policy for small-op loops: "adaptive", a fixed thread count, or None."""
    return _policy


def set_policy(value: Policy) -> None:
    """Set the thread policy for small-op loops (see the module docstring)."""
    global _policy
    _policy = _check(value)


@contextmanager
def policy(value: Policy) -> Iterator[None]:
    """Use ``value`` as the thread policy inside the block, then restore the previous one."""
    global _policy
    saved, _policy = _policy, _check(value)
    try:
        yield
    finally:
        _policy = saved


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with torch set to ``n`` intra-op threads; the previous setting is restored after."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"thread count must be a positive int, got {n!r}")
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class ThreadPicker:
    """Chooses the thread count for each step of a loop of similar steps (see the module docstring).

    Use::

        with ThreadPicker() as picker:
            for batch in batches:
                with picker.step():
                    work(batch)

    ``key`` names the kind of loop: loops of one kind share their verdicts (a fit's stages, the chunks of
    successive filters), different kinds compare on their own. ``threads`` overrides the global policy
    for this loop. ``clock`` (seconds) is injectable for tests.
    """

    def __init__(
        self,
        key: str = "",
        threads: Policy | str = "global",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.key = key
        self.policy: Policy = get_policy() if threads == "global" else _check(threads)  # type: ignore[arg-type]
        self.clock = clock
        self.saved: int | None = None
        self.choices: list[int] = []  # the thread count of every step, for inspection
        self.comparisons = 0  # how many comparisons this loop ran
        self._many = 1
        self._plan: list[int] = []  # counts still to time in the running comparison
        self._times: dict[int, list[float]] = {}
        self._winner = 1
        self._average = 0.0  # running average of the winner's step times

    def __enter__(self) -> ThreadPicker:
        self.saved = torch.get_num_threads()
        self._many = self.saved
        if isinstance(self.policy, int):
            self._winner = min(self.policy, self.saved)
        elif self.policy is None or not self.adaptive:
            self._winner = self._many
        else:
            winner, until, _ = _verdicts.get((self.key, self._many), (1, 0.0, 0.0))
            self._winner = winner
            if self.clock() >= until:
                self._start_comparison()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            torch.set_num_threads(self.saved)

    @property
    def adaptive(self) -> bool:
        """Whether this loop chooses between one thread and several."""
        return self.policy == "adaptive" and self._many > 1

    def _start_comparison(self) -> None:
        # An untimed first step (one-off costs) on one thread, then pairs of timed steps.
        self._plan = [0] + [n for _ in range(_TRIALS) for n in (1, self._many)]
        self._times = {self._many: [], 1: []}
        self.comparisons += 1

    def _next_count(self) -> int:
        if (
            not self._plan
            and self.adaptive
            and self.clock() >= _verdicts.get((self.key, self._many), (1, 0.0, 0.0))[1]
        ):
            self._start_comparison()
        if self._plan:
            return self._plan[0] or 1
        return self._winner

    @contextmanager
    def step(self) -> Iterator[int]:
        """Run one step of the loop on the chosen thread count (yielded)."""
        if self.saved is None:
            raise RuntimeError("ThreadPicker.step() used outside its 'with' block")
        n = self._next_count()
        torch.set_num_threads(n)
        self.choices.append(n)
        start = self.clock()
        yield n
        elapsed = self.clock() - start
        if self._plan:
            timed = self._plan.pop(0)
            if timed:
                self._times[timed].append(elapsed)
            self._maybe_decide()
        elif self.adaptive:
            self._average = elapsed if self._average == 0 else (1 - _EMA) * self._average + _EMA * elapsed
            if n > 1 and elapsed > _SLOW_FACTOR * self._average:
                _verdicts[(self.key, self._many)] = (
                    self._winner,
                    0.0,
                    _FIRST_PERIOD,
                )  # busy now: compare again

    def _maybe_decide(self) -> None:
        one, many = self._times[1], self._times[self._many]
        if not many or len(one) != len(many):
            if self._plan:
                return
        t1, tm = statistics.median(one), statistics.median(many)
        if self._plan and max(t1, tm) < _DECISIVE * min(t1, tm):
            return  # not decided yet: time another pair
        self._plan = []
        winner = self._many if tm < t1 else 1
        _, _, period = _verdicts.get((self.key, self._many), (winner, 0.0, _FIRST_PERIOD / 2))
        period = min(period * 2, _LONGEST_PERIOD) if winner == self._winner else _FIRST_PERIOD
        self._winner = winner
        self._average = min(t1, tm)
        _verdicts[(self.key, self._many)] = (winner, self.clock() + period, period)
