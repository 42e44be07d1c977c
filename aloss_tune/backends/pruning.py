"""`FamilyMedianPruner`: Optuna's median rule, applied within a trial's loss family, after a warm-up.

Optuna's `MedianPruner` stops a trial whose best value so far is worse than the median of the completed
trials at the same step. In a study over several losses that compares a slow-starting robust loss with a
fast-starting one: early epochs of a redescending or adaptive loss are often worse than MSE's while its final
value is better, and a global median kills it before it gets there. Here a trial is compared only with the
completed trials *of its own loss* (the ``loss`` param; a study with one loss has one family), from
``n_startup_trials`` of them on, and never before ``n_warmup_steps`` epochs.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

#: The key of a trial's loss family among its params.
FAMILY_KEY = "loss"


class FamilyMedianPruner(optuna.pruners.BasePruner):
    """Prune a trial whose best value so far is worse than the median of its loss family at the same step.

    Args:
        n_startup_trials: no pruning in a family until it has this many completed trials.
        n_warmup_steps: no pruning before this step (epoch) of a trial.
        interval_steps: ask only every this many steps after the warm-up.
        n_min_trials: at least this many completed trials of the family must have reported the step.
    """

    def __init__(self, n_startup_trials: int = 2, n_warmup_steps: int = 0, interval_steps: int = 1, *,
                 n_min_trials: int = 1):
        for name, value, low in (("n_startup_trials", n_startup_trials, 0), ("n_warmup_steps", n_warmup_steps, 0),
                                 ("interval_steps", interval_steps, 1), ("n_min_trials", n_min_trials, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, but got {name}={value!r}.")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.n_min_trials = n_min_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps or (step - self.n_warmup_steps) % self.interval_steps:
            return False
        family = trial.params.get(FAMILY_KEY)
        peers = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.params.get(FAMILY_KEY) == family]
        if len(peers) < max(self.n_startup_trials, 1):
            return False
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        mine = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        if not mine:
            return True  # nothing but NaN so far
        best = min(mine) if minimize else max(mine)
        at_step = sorted(v for t in peers if not math.isnan(v := t.intermediate_values.get(step, math.nan)))
        if len(at_step) < self.n_min_trials:
            return False
        middle = _median(at_step)
        return best > middle if minimize else best < middle

    def __repr__(self) -> str:
        return (f"FamilyMedianPruner(n_startup_trials={self.n_startup_trials}, n_warmup_steps="
                f"{self.n_warmup_steps}, interval_steps={self.interval_steps}, n_min_trials={self.n_min_trials})")


def _median(values: list[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


def asks_at(pruner: optuna.pruners.BasePruner, step: int) -> bool:
    """Whether asking ``pruner`` at ``step`` (``trial.should_prune()``) may prune: ``False`` where its own rules
    say it never does (no pruner, a `FamilyMedianPruner`'s warm-up and the steps between its intervals), so that
    a trial reports every epoch but reads the study's trials only when the answer can be yes. Any other
    pruner is asked every step."""
    if isinstance(pruner, optuna.pruners.NopPruner):
        return False
    if isinstance(pruner, FamilyMedianPruner):
        return step >= pruner.n_warmup_steps and (step - pruner.n_warmup_steps) % pruner.interval_steps == 0
    return True


def default_warmup(epochs: int) -> int:
    """Epochs before a trial may be pruned: a quarter of the budget, at least 2."""
    return max(2, epochs // 4)


__all__: list[Any] = ["FamilyMedianPruner", "asks_at", "default_warmup"]
