"""How a trial ended, counted one way everywhere: ``complete``, ``dead``, ``pruned`` or ``failed``.

The four states partition a study's finished trials (the console, `aloss_tune.TuneResult.counts`, the MLflow
runs table, ``trials.csv`` and ``summary.md`` all count them so):

* **dead**: the trial never got better than the *baseline*, the objective of a constant predictor
  (`aloss_tune.runner.TrialContext.baseline_value`): a trial that completed with an objective no better than
  the baseline, or a trial stopped early because it was not learning (`should_stop_dead`);
* **complete**: every other trial that ran all its epochs;
* **pruned**: stopped early by the search's pruner;
* **failed**: raised an error.

The policy that stops a dead trial is `should_stop_dead`: after a warm-up of `dead_warmup` epochs (counted from
the trial's first epoch), a trial whose best objective so far is no better than the baseline (within
`DEAD_MARGIN`) is stopped. This module imports nothing of aloss-tune or of the search backends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

STATES = ("complete", "dead", "pruned", "failed")

# How much better than the baseline a trial must be to count as learning, as a fraction of the baseline's
# magnitude (0: strictly better).
DEAD_MARGIN = 0.0
# The shortest warm-up, in epochs, before a trial may be stopped as dead.
DEAD_MIN_WARMUP = 3


def dead_warmup(epochs: int) -> int:
    """The default warm-up before a trial may be stopped as dead: a quarter of its epochs, at least
    `DEAD_MIN_WARMUP` (``max(3, ceil(epochs / 4))``)."""
    return max(DEAD_MIN_WARMUP, math.ceil(epochs / 4))


def no_better(value: float | None, baseline: float | None, direction: str, margin: float = DEAD_MARGIN) -> bool:
    """Whether objective ``value`` is no better than ``baseline`` (``False`` when either is unknown)."""
    if value is None or baseline is None or not math.isfinite(value) or not math.isfinite(baseline):
        return False
    slack = margin * abs(baseline)
    if direction == "minimize":
        return value >= baseline - slack
    return value <= baseline + slack


def should_stop_dead(best: float | None, epochs_done: int, warmup: int | None, baseline: float | None,
                     direction: str) -> bool:
    """Stop a trial as dead: the warm-up is over and its best objective so far is no better than the baseline.

    Args:
        best: the trial's best objective so far (``None``: none yet).
        epochs_done: epochs the trial has trained, counted from its first one.
        warmup: the warm-up in epochs (``None``: never stop).
        baseline: the objective of a constant predictor (``None``: unknown for this metric, never stop).
        direction: ``minimize`` or ``maximize``.
    """
    if warmup is None or baseline is None or epochs_done < warmup:
        return False
    return best is None or no_better(best, baseline, direction)


def final_state(state: str, value: float | None, baseline: float | None, direction: str) -> str:
    """The counted state of a trial that ended ``complete`` (``dead`` when its objective is no better than the
    baseline), ``pruned`` or ``failed`` (unchanged)."""
    if state == "complete" and no_better(value, baseline, direction):
        return "dead"
    return state


def counts_text(counts: Mapping[str, int]) -> str:
    """``4 complete, 2 dead, 1 pruned, 0 failed`` (then any other state counted, e.g. ``2 running``)."""
    parts = [f"{counts.get(state, 0)} {state}" for state in STATES]
    parts += [f"{n} {state}" for state, n in counts.items() if state not in STATES and n]
    return ", ".join(parts)


def ordered_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` with every state of `STATES` (0 when absent) first, in that order, then any other state."""
    out = {state: int(counts.get(state, 0)) for state in STATES}
    out.update({state: int(n) for state, n in counts.items() if state not in STATES and n})
    return out
