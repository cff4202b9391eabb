"""The benchmark's results for people: markdown tables, the grid of each method's best edits, and the
response-curve plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sfvq.evaluation.benchmark import EvalResult
from sfvq.evaluation.stats import nanmean0


# ---------------------------------------------------------------------------------------------- reporting
def _ok(v: Any) -> bool:
    """A finite number (results read back from JSON hold the string "nan" where NaN was)."""
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _f(v: float | None, spec: str = ".3g") -> str:
    return format(v, spec) if _ok(v) else "-"


def _ci(v: float, ci: Sequence[float], spec: str = ".3g", missing: str = "-") -> str:
    if not _ok(v):
        return missing
    return f"{_f(v, spec)} [{_f(ci[0], spec)}, {_f(ci[1], spec)}]"


def _share(row: dict[str, Any]) -> str:
    """A note when the matched change is reached in fewer than 95 % of the bootstrap resamples."""
    r = row.get("reached")
    if not _ok(r) or not _ok(row["step"]) or r >= 0.95:
        return ""
    return f" ({math.floor(100 * r)} % of resamples reach it)"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as markdown: one table per attribute, one row per method."""
    lines = []
    for a in summary["attributes"]:
        t = summary["targets"][a]
        lines += [
            f"### {a} (matched change: {_f(t)}; std over unedited faces {_f(summary['attribute_std'][a])})",
            "",
            "| method | best direction | change per unit step [95% CI] | steps to the matched change "
            "| identity distance at it | SSIM at it | other attributes' change at it | entanglement "
            "| faces found |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["rows"]:
            if r["attribute"] != a:
                continue
            others = (
                ", ".join(f"{b} {_f(v, '+.2g')}" for b, v in r["other"].items()) if _ok(r["step"]) else "-"
            )
            lines.append(
                f"| {r['method']} | {'-' if r['sign'] < 0 else '+'}{r['direction']} ({r['space']}) "
                f"| {_ci(r['slope'], r['slope_ci'])} "
                f"| {_ci(r['step'], r['step_ci'], missing='not reached')}{_share(r)} "
                f"| {_ci(r['identity'], r['identity_ci'])} | {_ci(r['ssim'], r['ssim_ci'])} | {others} "
                f"| {_ci(r['entanglement'], r['entanglement_ci'], '.2f')} "
                f"| {_f(100 * r['detected'], '.0f') + ' %' if _ok(r['detected']) else '-'} |"
            )
        lines.append("")
    return "\n".join(lines)


def method_figure(result: EvalResult, method: str) -> Any:
    """A grid of ``method``'s best direction per attribute: rows = attribute x kept seed, columns = steps."""
    from sfvq.generators.base import to_uint8
    from sfvq.images import labelled_grid

    r = result.methods[method]
    tiles, labels = [], []
    steps = None
    for j, a in enumerate(result.attributes):
        if a not in r.images:
            continue
        imgs = r.images[a]  # (keep, T+1, C, H, W)
        steps = r.curves[a].steps
        sign = "-" if r.screen.signs[j] < 0 else "+"
        name = r.candidates[int(r.screen.best[j])]
        for k in range(imgs.shape[0]):
            tiles.append(to_uint8(imgs[k]))  # (T+1, H, W, C)
            labels += [f"{a} {sign}{name} {s:g}" for s in steps]
    if not tiles:
        raise ValueError(f"no images kept for {method} (figure_seeds was 0)")
    arr = np.concatenate(tiles)
    return labelled_grid(arr, labels, cols=len(steps))


def curves_plot(result: EvalResult, summary: dict[str, Any], path: Any) -> Any:
    """Per attribute: mean change vs step (left) and identity distance vs change (right), one line per
    method, the matched change dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sfvq.plots import _save

    names = result.attributes
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.6 * len(names)), squeeze=False)
    for j, a in enumerate(names):
        for m, r in result.methods.items():
            c = r.curves[a]
            delta = nanmean0(c.attrs - c.attrs[:, :1])[:, j]  # (T+1,)
            (line,) = axes[j, 0].plot(c.steps, delta, marker="o", label=m)
            if c.identity is not None:
                axes[j, 1].plot(delta, nanmean0(c.identity), marker="o", color=line.get_color(), label=m)
        t = summary["targets"][a]
        if np.isfinite(t):
            axes[j, 0].axhline(t, ls="--", color="grey", lw=0.8)
            axes[j, 1].axvline(t, ls="--", color="grey", lw=0.8)
        axes[j, 0].set_ylabel(f"change in {a}")
        axes[j, 0].set_xlabel(f"step ({result.config.units} units)")
        axes[j, 1].set_xlabel(f"change in {a}")
        axes[j, 1].set_ylabel("identity distance")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["curves_plot", "markdown_table", "method_figure"]
