"""Issue 13: seeded mutations of the fixture files, each loaded in a limited child, never do anything but
load or raise one GeneratorError (the long campaign is ``python -m benchmarks.fuzz``)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.fuzz import OK_KINDS, make_seeds, mutations, run_campaign, strip_frames, summarize

N = 200  # mutations in the suite (about 20 s on two idle cores)
SEED = 13


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list:
    return make_seeds(tmp_path_factory.mktemp("seeds"))


def test_mutations_are_deterministic(seeds: list) -> None:
    def digest(start: int) -> list[str]:
        return [
            f"{name} {what} {hashlib.sha256(data).hexdigest()[:16]}"
            for _, name, what, data in mutations(seeds, start + 40, SEED, start=start)
        ]

    first = digest(0)
    assert first == digest(0)
    assert digest(20)[:20] == first[20:]  # a file depends on its index alone
    assert len({line.split()[2] for line in first}) > 35  # and the files differ
    assert len({line.split()[0] for line in first}) >= 5  # drawn from most seeds


def test_frames_are_stripped_losslessly(seeds: list) -> None:
    import pickle

    framed = next(s for s in seeds if s.kind == "frames")
    plain = strip_frames(framed.data)
    assert len(plain) < len(framed.data) and b"\x95" not in plain[:12]
    from sfvq.generators.safe_pickle import safe_loads

    a, b = safe_loads(framed.data), safe_loads(plain)
    assert a["G_ema"].state_dict().keys() == b["G_ema"].state_dict().keys()
    with pytest.raises(pickle.UnpicklingError):
        safe_loads(plain[:-40])


def test_fuzzed_files_load_or_raise_a_generator_error(tmp_path: Path) -> None:
    outcomes = run_campaign(N, seed=SEED, jobs=2, timeout=30.0, mem_mib=2048, forward=False, workdir=tmp_path)
    summary = summarize(outcomes)
    bad = [
        f"#{o.index} {o.seed} {o.mutation}: {o.kind} {o.error} at {o.where}: {o.message}"
        for o in outcomes
        if o.kind not in OK_KINDS
    ]
    assert not bad, "\n".join(bad)
    assert len(outcomes) == N
    kinds = Counter(o.kind for o in outcomes)
    assert kinds["loaded"] >= N // 10 and kinds["generator_error"] >= N // 2  # both ends are reached
    assert {"RefusedPickleError", "UnsafePickleError", "GeneratorError"} <= set(summary["errors"])
    assert summary["max_seconds"] < 10.0, summary["slowest"]
