"""Thread use for loops of small ops: settings restored, the faster count chosen, results unchanged."""

from __future__ import annotations

import pytest
import torch

from sfvq import SFVQ, threads
from sfvq.threads import ThreadPicker


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(threads, "_verdicts", {})
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


class Clock:
    """A fake clock: each step advances it by the cost of the thread count it ran on."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.t = 0.0
        self.cost = cost

    def __call__(self) -> float:
        return self.t

    def work(self) -> None:
        self.t += self.cost[torch.get_num_threads()]


def _loop(picker: ThreadPicker, clock: Clock, steps: int) -> list[int]:
    with picker:
        for _ in range(steps):
            with picker.step():
                clock.work()
    return picker.choices


def test_policy_and_num_threads_restore_settings() -> None:
    assert threads.get_policy() == "adaptive"
    with threads.policy(1):
        assert threads.get_policy() == 1
        with threads.policy(None):
            assert threads.get_policy() is None
        assert threads.get_policy() == 1
    assert threads.get_policy() == "adaptive"
    for bad in (0, -1, 1.5, True, "fast"):
        with pytest.raises(ValueError, match="thread policy"):
            threads.set_policy(bad)
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="boom"), threads.num_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="thread count"):
        with threads.num_threads(0):
            pass


def test_picker_restores_torch_threads_and_honours_fixed_policies() -> None:
    torch.set_num_threads(2)
    clock = Clock({1: 1.0, 2: 1.0})
    assert set(_loop(ThreadPicker("t", threads=1, clock=clock), clock, 5)) == {1}
    assert torch.get_num_threads() == 2
    assert set(_loop(ThreadPicker("t", threads=None, clock=clock), clock, 5)) == {2}
    assert set(_loop(ThreadPicker("t", threads=8, clock=clock), clock, 5)) == {2}  # never above torch's
    with threads.policy(1):
        assert set(_loop(ThreadPicker("t", clock=clock), clock, 3)) == {1}
    torch.set_num_threads(1)
    assert set(_loop(ThreadPicker("t", clock=clock), clock, 3)) == {1}
    with pytest.raises(RuntimeError, match="outside"), ThreadPicker("t").step():
        pass


@pytest.mark.parametrize(("cost", "winner"), [({1: 0.002, 2: 0.001}, 2), ({1: 0.002, 2: 0.02}, 1)])
def test_picker_runs_the_faster_count(cost: dict[int, float], winner: int) -> None:
    torch.set_num_threads(2)
    clock = Clock(cost)
    picker = ThreadPicker("t", clock=clock)
    choices = _loop(picker, clock, 40)
    assert choices[0] == 1  # the untimed first step
    assert choices[-20:] == [winner] * 20
    assert picker.comparisons >= 1
    assert torch.get_num_threads() == 2
    # the verdict holds for the next loop of the same kind (no comparison), not for another kind
    again = ThreadPicker("t", clock=clock)
    assert _loop(again, clock, 3) == [winner] * 3 and again.comparisons == 0
    other = ThreadPicker("u", clock=clock)
    _loop(other, clock, 3)
    assert other.comparisons == 1
    clock.t += 60  # the verdict's period is over: compare again
    later = ThreadPicker("t", clock=clock)
    _loop(later, clock, 3)
    assert later.comparisons == 1


def test_picker_compares_again_when_the_machine_changes() -> None:
    torch.set_num_threads(2)
    clock = Clock({1: 0.002, 2: 0.001})  # quiet: two threads win
    picker = ThreadPicker("t", clock=clock)
    with picker:
        for _ in range(12):
            with picker.step():
                clock.work()
        assert picker.choices[-1] == 2
        clock.cost = {1: 0.002, 2: 0.02}  # a busy core: two threads now stall
        for _ in range(12):
            with picker.step():
                clock.work()
    assert picker.comparisons == 2
    assert picker.choices[-3:] == [1, 1, 1]


def test_fit_and_quantize_do_not_depend_on_the_thread_policy() -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(3000, 24, generator=gen) * torch.linspace(3, 0.1, 24)
    results = []
    for pol in (1, None, "adaptive"):
        with threads.policy(pol):
            m = SFVQ(4, random_state=0, verbose=False).fit(X)
            results.append((m.codebook_, m.quantize(X), m.transform(X)))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)
