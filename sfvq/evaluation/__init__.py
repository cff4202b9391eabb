"""The re-scoring benchmark behind ``sfvq evaluate``: do a method's directions change a face attribute
while keeping the person?

For each method (a :class:`~sfvq.baselines.MethodDirections`: candidate directions and their space):

1. **Screen** (seeds disjoint from the evaluation seeds, so that picking the best direction does not
   flatter it on the seeds it is then measured on): every candidate edits ``screen_n`` seeds by
   ``+s`` and ``-s`` (in std units of the data along the direction); the attribute scorer gives the
   one-sided changes per unit step ``(a(+s) - a(0)) / s`` and ``(a(-s) - a(0)) / s`` averaged over
   seeds. The best direction for an attribute, with its sign, is the one that raises it most per unit
   step (one-sided, because the measurement follows it one way and responses are often lopsided).
2. **Measure**: each method's best (oriented) directions edit the ``n`` evaluation seeds at steps
   ``0 < s_1 < ... < s_T``; every image gets the attributes, its identity distance to the unedited
   image (face embeddings) and, when given, SSIM to it.
3. **Summarise** per method and attribute: the change per unit step (slope of the mean change through
   the origin); the *matched* comparison: the target change ``T_a`` is ``match`` times the smallest
   largest-mean-change the methods' best directions reach (leaving out methods that reach less than
   ``floor`` times the best one: they are "not reached"), the step at which each method's mean curve
   first reaches ``T_a`` (linear interpolation between steps), and at that step the identity distance,
   SSIM and the change of every other attribute (entanglement: their mean ``|change| / std`` over the
   unedited seeds). All with percentile bootstrap intervals over seeds (seeded).

Modules: :mod:`~sfvq.evaluation.effects` (scorers, edited renders, screening, response curves),
:mod:`~sfvq.evaluation.stats` (curve statistics, bootstrap, matched targets),
:mod:`~sfvq.evaluation.benchmark` (settings, the run, the summary) and :mod:`~sfvq.evaluation.reporting`
(tables, figures, plots). Every public name is importable from ``sfvq.evaluation``.

Scorers are parameters (so tests inject fakes): an attribute scorer has ``score(images) -> dict`` of
(N,) arrays holding at least the attribute names (``detected`` optional); an identity scorer has
``embed(images) -> (N, E)`` and ``distance(a, b) -> (...)``; ``ssim(images_a, images_b) -> (N,)``.
Images are passed as float (N, C, H, W) in [-1, 1], as generators return them.
"""

from sfvq.evaluation.benchmark import (
    DEFAULT_STEPS,
    SCREEN_SEED_START,
    EvalConfig,
    EvalResult,
    MethodResult,
    run_evaluation,
    summarise,
)
from sfvq.evaluation.effects import (
    Curves,
    Scorers,
    Scores,
    Screen,
    measure,
    render_steps,
    score_images,
    screen_method,
)
from sfvq.evaluation.reporting import curves_plot, markdown_table, method_figure
from sfvq.evaluation.stats import bootstrap_stats, curve_stats, first_crossing, matched_targets

__all__ = [
    "DEFAULT_STEPS",
    "SCREEN_SEED_START",
    "Curves",
    "EvalConfig",
    "EvalResult",
    "MethodResult",
    "Scorers",
    "Scores",
    "Screen",
    "bootstrap_stats",
    "curve_stats",
    "curves_plot",
    "first_crossing",
    "markdown_table",
    "matched_targets",
    "measure",
    "method_figure",
    "render_steps",
    "run_evaluation",
    "score_images",
    "screen_method",
    "summarise",
]
