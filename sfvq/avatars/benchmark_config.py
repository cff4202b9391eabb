"""Settings of the ground-truth benchmark, kept free of torch so that the CLI can read its defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GroundTruthConfig:
    """Settings of :func:`run_ground_truth` (all recorded with the result)."""

    n: int = 48  # seeds edited per direction
    steps: tuple[float, ...] = (0.25, 0.5, 1.0)  # std units, applied with both signs
    k: int = 15  # directions per baseline method (SFVQ at 4 bits has 15 segments)
    bits: tuple[int, ...] = (3, 4, 5, 6)  # SFVQ bitrates whose segments are measured
    methods: tuple[str, ...] = ("ganspace", "sefa", "latentclr", "random")
    fit_n: int = 20_000  # W samples for the curve, the PCA and the stds
    purity: float | None = None  # None: the purest random direction's purity (see purity_threshold)
    random_k: int = 32  # random directions: the reference for chance purity
    floor: float = 0.25
    mi_n: int = 4096
    mi_ranges: int = 8  # ranges of consecutive corners at each bitrate (finer bitrates: longer ranges)
    shuffles: int = 50
    latentclr_steps: int = 300
    seed: int = 0
    batch_size: int = 128
    layers: tuple[int, int] | None = None  # W+ layers every edit touches (start, stop exclusive); None: all
    match_change: float = 1.0  # per-face change (summed over groups) at which purities are also compared
    # --layers auto: also measure every W set with each direction on its own W+ range (sfvq.annotate's
    # criterion), named "<set>@auto", next to the variants on ``layers``; found on ``auto_seeds`` seeds
    # after the measured ones, edited by ``auto_sigma`` stds (None: sfvq annotate's default per bitrate)
    auto_layers: bool = False
    auto_seeds: int = 4
    auto_sigma: float | None = None
    # how the ranges are chosen: "pixels" (sfvq annotate's default: keep the image change) or "purity"
    # (the range whose edit moves one factor group most purely on the auto seeds, group shifts divided
    # by random directions' there; a range must move its main group by ``floor`` unless it is the full one;
    # every range is rendered). Needs "random" in ``methods`` (the chance shifts).
    auto_criterion: str = "pixels"
    # StyleSpace variants ("s", "s:coarse", "s:4-7", ...) whose own SFVQ curves are measured at ``bits`` too
    style_spaces: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise ValueError naming the first unusable setting."""
        if (
            self.n < 1
            or self.k < 1
            or self.random_k < 1
            or self.fit_n < 2
            or self.mi_n < 2
            or self.shuffles < 1
        ):
            raise ValueError("n, k, shuffles must be >= 1 and fit_n, mi_n >= 2")
        if not self.steps or any(not s > 0 for s in self.steps):
            raise ValueError(f"steps must be positive, got {self.steps}")
        if not self.bits or any(b < 1 for b in self.bits):
            raise ValueError(f"bits must be >= 1, got {self.bits}")
        if (self.purity is not None and not 0 < self.purity <= 1) or not 0 <= self.floor <= 1:
            raise ValueError(f"purity must be in (0, 1] and floor in [0, 1], got {self.purity}, {self.floor}")
        unknown = set(self.methods) - {"ganspace", "sefa", "latentclr", "random"}
        if unknown:
            raise ValueError(
                f"unknown methods {sorted(unknown)}; choose from ganspace, sefa, latentclr, random"
            )
        if len(set(self.methods)) != len(self.methods) or len(set(self.bits)) != len(self.bits):
            raise ValueError(f"a method or bitrate is listed twice ({self.methods}, {self.bits})")
        if not self.match_change > 0:
            raise ValueError(f"match_change must be > 0, got {self.match_change}")
        if self.mi_ranges < 2:
            raise ValueError(f"mi_ranges must be >= 2, got {self.mi_ranges}")
        if self.auto_layers and self.layers is not None:
            raise ValueError(f"layers is either a range or auto, not both (got {self.layers} and auto)")
        if self.auto_seeds < 1:
            raise ValueError(f"auto_seeds must be >= 1, got {self.auto_seeds}")
        if self.auto_sigma is not None and not 0 < self.auto_sigma < float("inf"):
            raise ValueError(f"auto_sigma must be a positive number, got {self.auto_sigma}")
        if self.auto_criterion not in ("pixels", "purity"):
            raise ValueError(f"auto_criterion must be pixels or purity, got {self.auto_criterion!r}")
        if self.auto_criterion != "pixels" and not self.auto_layers:
            raise ValueError("auto_criterion (--auto-criterion) applies with --layers auto only")
        if self.auto_criterion == "purity" and "random" not in self.methods:
            raise ValueError("auto_criterion purity divides by random directions' shifts: add random")
        if self.auto_sigma is not None and not self.auto_layers:
            raise ValueError("auto_sigma (--auto-sigma) applies with layers auto (--layers auto) only")
        from sfvq.parsing import split_space_name

        names = []
        for name in self.style_spaces:
            base, group = split_space_name(name)  # ValueError for a bad group
            if base != "s":
                raise ValueError(f"style spaces are s or s:GROUP (e.g. s:coarse, s:4-7), got {name!r}")
            names.append("s" if group is None else f"s:{group}")
        if len(set(names)) != len(names):
            raise ValueError(f"a style space is listed twice ({self.style_spaces})")
