"""What a report needs from a study, read once into backend-neutral records (no MLflow, no plotting).

A report is drawn from `StudyData`: the study's objective, baseline and target spread, and one `TrialRow`
per trial (number, state, value, flat params, searched params with their ranges, per-epoch history, loss
config). `read_study` makes it from the `aloss_tune.backends.base.StudyRecord` that either backend reads
out of its own storage (``make_backend(...).records(study)``): the report knows no backend.

The *baseline* is the objective of a constant predictor: the training median (regression), the class
prior (classification). A trial that never got better than the baseline learned nothing: it is counted as
**dead** (`aloss_tune.states`), whether it completed no better than the baseline or was stopped early for it.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aloss_tune.states import no_better, ordered_counts

# Names the runner logs per epoch that are metrics, not learned loss parameters.
_METRIC_NAMES = frozenset({"loss", "mae", "mse", "rmse", "auc", "pr_auc", "accuracy", "learning_rate"})
_CLASSIFICATION_METRICS = frozenset({"auc", "pr_auc", "accuracy"})


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report sees it.

    Attributes:
        number: the trial number.
        state: how it ended: ``complete``, ``pruned`` (stopped early: by the pruner, or as dead),
            ``failed``, ``running`` or ``waiting``; `outcome` is how it is counted.
        value: the objective (for a trial stopped as dead, its best value; for a pruned trial, its last
            reported value), or ``None``.
        loss: the loss factory name (the family).
        params: the flat params dict (``loss.delta``, ``model.units``, ...).
        search_params: the backend's own params (``loss.huber.delta``) with their distributions.
        history: per-epoch values, metrics and learned loss parameters.
        learned: the learned loss parameters' per-epoch values (``alpha``, ``scale``, ``alpha.0``, ...).
        dead: it never got better than the baseline: complete with an objective no better than it, or
            stopped early as not learning.
    """

    number: int
    state: str
    value: float | None
    loss: str
    params: Mapping[str, Any]
    search_params: Mapping[str, Any]
    distributions: Mapping[str, Any]
    history: Mapping[str, Sequence[float]]
    learned: Mapping[str, Sequence[float]]
    loss_config: Mapping[str, Any] | None
    seed: int | None
    duration_s: float | None
    epochs: int
    error: str | None
    run_id: str | None
    dead: bool = False

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def outcome(self) -> str:
        """How the trial is counted: ``complete``, ``dead``, ``pruned``, ``failed``, ``running``, ``waiting``."""
        return "dead" if self.dead else self.state

    @property
    def final_learned(self) -> dict[str, float]:
        """The learned parameters' last values (``{"alpha": 0.8, "scale": 12.0}``)."""
        return {k: float(v[-1]) for k, v in self.learned.items() if v}


@dataclass(frozen=True)
class FamilySummary:
    """The results of one loss family (all trials that used one loss factory)."""

    loss: str
    trials: int
    complete: int
    pruned: int
    failed: int
    dead: int
    best: float | None
    median: float | None
    best_trial: int | None


@dataclass(frozen=True)
class StudyData:
    """A study, read once: its settings, every trial, and what the report derives from them."""

    name: str
    metric: str
    direction: str
    baseline: float | None
    target_scale: float
    task: str
    losses: tuple[str, ...]
    trials: tuple[TrialRow, ...]
    space: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------ derived
    @property
    def complete(self) -> list[TrialRow]:
        return [t for t in self.trials if t.complete and t.value is not None and math.isfinite(t.value)]

    @property
    def counts(self) -> dict[str, int]:
        """Trials per counted state (`TrialRow.outcome`): ``complete``, ``dead``, ``pruned``, ``failed``, then
        ``running`` and ``waiting`` when there are some."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.outcome] = out.get(t.outcome, 0) + 1
        return ordered_counts(out)

    @property
    def best(self) -> TrialRow | None:
        """The best complete trial, or ``None``."""
        done = self.complete
        if not done:
            return None
        key = (lambda t: t.value) if self.minimize else (lambda t: -t.value)
        return min(done, key=key)

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"

    def better(self, a: float, b: float) -> bool:
        """Whether objective value ``a`` is strictly better than ``b``."""
        return a < b if self.minimize else a > b

    def ranked(self) -> list[TrialRow]:
        """Complete trials, best first."""
        return sorted(self.complete, key=lambda t: t.value if self.minimize else -t.value)  # type: ignore

    def families(self) -> list[FamilySummary]:
        """One summary per loss family, best family first (families without a complete trial last)."""
        names = list(self.losses) + sorted({t.loss for t in self.trials} - set(self.losses))
        out = []
        for name in names:
            rows = [t for t in self.trials if t.loss == name]
            if not rows:
                continue
            values = [t.value for t in rows if t.complete and t.value is not None and math.isfinite(t.value)]
            best_row = None
            if values:
                pick = min if self.minimize else max
                best_value = pick(values)
                best_row = next(t for t in rows if t.complete and t.value == best_value)
            out.append(FamilySummary(
                loss=name, trials=len(rows), complete=sum(t.outcome == "complete" for t in rows),
                pruned=sum(t.outcome == "pruned" for t in rows), failed=sum(t.outcome == "failed" for t in rows),
                dead=sum(t.dead for t in rows), best=None if best_row is None else best_row.value,
                median=statistics.median(values) if values else None,
                best_trial=None if best_row is None else best_row.number,
            ))
        sign = 1.0 if self.minimize else -1.0
        out.sort(key=lambda f: (f.best is None, sign * (f.best if f.best is not None else 0.0)))
        return out

    def adaptive(self) -> list[TrialRow]:
        """Trials that learned loss parameters during training."""
        return [t for t in self.trials if t.learned]


def _is_adaptive(loss: str) -> bool | None:
    """Whether the registered factory ``loss`` learns parameters; ``None`` when it is not registered here."""
    from aloss_tune.errors import ConfigError
    from aloss_tune.factories import get_factory

    try:
        return bool(get_factory(loss).adaptive)
    except ConfigError:
        return None


def learned_series(history: Mapping[str, Sequence[float]], loss: str) -> dict[str, list[float]]:
    """The learned loss parameters in a trial's history (``alpha``, ``scale``, ``alpha.0``, ...).

    The runner logs metrics (``loss``, ``mae``, ``val_*``) and learned values side by side; anything that is
    not a metric is a learned value. Losses whose factory is known not to learn anything have none.
    """
    if _is_adaptive(loss) is False:
        return {}
    out = {}
    for key, values in history.items():
        base = key.split(".", 1)[0]
        if key.startswith("val_") or base in _METRIC_NAMES:
            continue
        out[key] = [float(v) for v in values]
    return out


def infer_task(metric: str, losses: Sequence[str]) -> str:
    """``regression``, ``binary`` or ``multiclass`` from the objective metric (and the losses' tasks)."""
    from aloss_tune.errors import ConfigError
    from aloss_tune.factories import get_factory

    base = metric.removeprefix("val_")
    if base in ("mae", "mse", "rmse"):
        return "regression"
    tasks: set[str] = set()
    for name in losses:
        try:
            tasks.update(get_factory(name).tasks)
        except ConfigError:
            continue
    if base in _CLASSIFICATION_METRICS:
        tasks.discard("regression")
        if base == "accuracy" and tasks == {"multiclass"}:
            return "multiclass"
        return "binary" if "binary" in tasks or not tasks else sorted(tasks)[0]
    if len(tasks) == 1:
        return next(iter(tasks))
    return "regression"


def read_study(study: Any, ctx: Any = None) -> StudyData:
    """Read a study into `StudyData`, with the run's `aloss_tune.runner.TrialContext` when given.

    ``study`` is the `aloss_tune.backends.base.StudyRecord` a backend read from its storage
    (``make_backend(...).records(name)``), or `StudyData` already.
    """
    from aloss_tune.backends.base import StudyRecord

    if isinstance(study, StudyData):
        return study
    if not isinstance(study, StudyRecord):
        raise TypeError(f"cannot read a study from {type(study).__name__} (give the StudyRecord of a backend: "
                        "aloss_tune.backends.base.make_backend(name, ...).records(study))")
    losses = tuple(study.losses)
    scale = getattr(ctx, "target_scale", None) if ctx is not None else None
    scale = scale if scale is not None else study.target_scale
    baseline = study.baseline
    if baseline is None and ctx is not None:
        baseline = ctx.baseline_value()
    if baseline is not None and not math.isfinite(float(baseline)):
        baseline = None
    rows: list[TrialRow] = []
    for trial in study.trials:
        searched, dists = {}, {}
        for name, value in trial.search_params.items():
            try:
                dists[name] = optuna_distribution(trial.distributions[name])
            except (KeyError, TypeError, ValueError):
                continue  # a range Optuna cannot hold: left off the figures that need ranges
            searched[name] = value
        loss = str(trial.params.get("loss") or trial.search_params.get("loss")
                   or (losses[0] if len(losses) == 1 else "?"))
        value = trial.value
        if value is not None and not math.isfinite(value):
            value = None
        history = {str(k): [float(x) for x in v] for k, v in trial.history.items()}
        rows.append(TrialRow(
            number=trial.number, state=trial.state, value=value, loss=loss, params=dict(trial.params),
            search_params=searched, distributions=dists, history=history, learned=learned_series(history, loss),
            loss_config=trial.loss_config, seed=trial.seed, duration_s=trial.duration_s, epochs=trial.epochs,
            error=trial.error, run_id=trial.run_id,
            dead=_dead(trial.state, value, baseline, study.direction, stopped=trial.stopped_dead),
        ))
    if not losses:
        losses = tuple(dict.fromkeys(t.loss for t in rows))
    task = (getattr(getattr(ctx, "data", None), "task", None) or study.task
            or infer_task(study.metric, losses))
    return StudyData(
        name=study.name, metric=study.metric, direction=study.direction,
        baseline=None if baseline is None else float(baseline),
        target_scale=float(scale) if scale else 1.0, task=task, losses=losses, trials=tuple(rows),
        space=study.space,
    )


def _dead(state: str, value: float | None, baseline: float | None, direction: str, stopped: bool = False) -> bool:
    """Stopped early as dead, or complete with an objective no better than the baseline."""
    return stopped or (state == "complete" and no_better(value, baseline, direction))


def optuna_distribution(spec: Mapping[str, Any]) -> Any:
    """The Optuna distribution of one of aloss-tune's ranges in its dict form (``{type, low, high, ...}``), for
    Optuna's importances and plots."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec.get("type")
    if kind == "categorical":
        return CategoricalDistribution(list(spec["choices"]))
    if kind == "int":
        return IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)),
                               step=int(spec.get("step") or 1))
    return FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)),
                             step=None if spec.get("step") is None else float(spec["step"]))


def write_trials_csv(data: StudyData, path: Path) -> Path:
    """One row per trial (every state): number, state (as counted: ``complete``, ``dead``, ``pruned``,
    ``failed``, ...), objective, dead, loss, epochs, duration, seed, each flat param, each learned
    parameter's final value, the error and the MLflow run id."""
    param_keys = sorted({k for t in data.trials for k in t.params if k != "loss"})
    learned_keys = sorted({k for t in data.trials for k in t.final_learned})
    header = ["number", "state", data.metric, "dead", "loss", "epochs", "duration_s", "seed",
              *param_keys, *(f"learned.{k}" for k in learned_keys), "error", "mlflow_run_id"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for t in data.trials:
            final = t.final_learned
            writer.writerow([
                t.number, t.outcome, _cell(t.value), t.dead, t.loss, t.epochs,
                _cell(None if t.duration_s is None else round(t.duration_s, 3)), _cell(t.seed),
                *(_cell(t.params.get(k)) for k in param_keys), *(_cell(final.get(k)) for k in learned_keys),
                _cell(t.error), _cell(t.run_id),
            ])
    return path


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(float(value))
    return value
