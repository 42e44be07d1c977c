"""What a report needs from a study, read once into backend-neutral records (no MLflow, no plotting).

A report is drawn from `StudyData`: the study's objective, baseline and target spread, and one `TrialRow`
per trial (number, state, value, flat params, searched params with their ranges, per-epoch history, loss
config). `read_study` makes it from either backend's own storage:

* an `optuna.Study`: every trial of an aloss-tune study carries its flat params, loss config and per-epoch
  history as user attributes (see `aloss_tune.backends.optuna`), the study its objective, the target's
  robust spread and the baseline;
* a KerasTuner project directory (or the tuner itself): KerasTuner's ``trial_<id>/trial.json`` beside the
  records aloss-tune writes there (``aloss_tune.json`` for the study and for each trial; see
  `aloss_tune.backends.keras_tuner`).

The *baseline* is the objective of a constant predictor: the training median (regression), the class
prior (classification). A trial that never got better than the baseline learned nothing: it is counted as
**dead** (`aloss_tune.states`), whether it completed no better than the baseline or was stopped early for it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from aloss_tune._schema import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    DEAD_ATTR,
    ERROR_ATTR,
    HISTORY_ATTR,
    OBJECTIVE_ATTR,
    PARAMS_ATTR,
    RUN_ATTR,
    SEED_ATTR,
    SPACE_ATTR,
    TARGET_SCALE_ATTR,
)
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


def _state(trial: optuna.trial.FrozenTrial) -> str:
    return {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.PRUNED: "pruned",
        optuna.trial.TrialState.FAIL: "failed",
        optuna.trial.TrialState.RUNNING: "running",
        optuna.trial.TrialState.WAITING: "waiting",
    }[trial.state]


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

    ``study`` is an `optuna.Study`, a KerasTuner project directory (``kt_projects/<study>``), a KerasTuner
    tuner (its ``project_dir``), or `StudyData` already.
    """
    if isinstance(study, StudyData):
        return study
    if isinstance(study, optuna.Study):
        return _read_optuna(study, ctx)
    if isinstance(study, (str, os.PathLike)):
        return read_keras_tuner_project(Path(study), ctx)
    project = getattr(study, "project_dir", None)
    if project is not None:
        return read_keras_tuner_project(Path(project), ctx)
    raise TypeError(f"cannot read a study from {type(study).__name__} (give an optuna.Study or a KerasTuner "
                    "project directory)")


def _dead(state: str, value: float | None, baseline: float | None, direction: str, stopped: bool = False) -> bool:
    """Stopped early as dead, or complete with an objective no better than the baseline."""
    return stopped or (state == "complete" and no_better(value, baseline, direction))


def _read_optuna(study: optuna.Study, ctx: Any) -> StudyData:
    attrs = study.user_attrs
    objective = attrs.get(OBJECTIVE_ATTR) or {}
    direction = objective.get("direction") or study.direction.name.lower()
    metric = objective.get("metric") or "objective"
    space = attrs.get(SPACE_ATTR) or {}
    losses = tuple((space.get("loss") or {}).get("choices") or ())
    scale = attrs.get(TARGET_SCALE_ATTR)
    if ctx is not None:
        scale = getattr(ctx, "target_scale", scale)
    baseline = attrs.get(BASELINE_ATTR)
    if baseline is not None and not math.isfinite(float(baseline)):
        baseline = None

    rows: list[TrialRow] = []
    for trial in study.get_trials(deepcopy=False):
        params = dict(trial.user_attrs.get(PARAMS_ATTR) or {})
        loss = str(params.get("loss") or trial.params.get("loss") or (losses[0] if len(losses) == 1 else "?"))
        history = {str(k): list(v) for k, v in (trial.user_attrs.get(HISTORY_ATTR) or {}).items()}
        state = _state(trial)
        value = trial.value if trial.values is not None and len(trial.values) == 1 else None
        stopped = trial.user_attrs.get(DEAD_ATTR)
        if stopped is not None and value is None:
            value = stopped.get("best")
        if value is not None and not math.isfinite(value):
            value = None
        series = history.get(metric) or []
        epochs = len(series) or len(trial.intermediate_values)
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        dead = _dead(state, value, baseline, direction, stopped=stopped is not None)
        rows.append(TrialRow(
            number=trial.number, state=state, value=value, loss=loss, params=params,
            search_params=dict(trial.params), distributions=dict(trial.distributions), history=history,
            learned=learned_series(history, loss), loss_config=trial.user_attrs.get(CONFIG_ATTR),
            seed=trial.user_attrs.get(SEED_ATTR), duration_s=duration, epochs=epochs,
            error=trial.user_attrs.get(ERROR_ATTR), run_id=trial.user_attrs.get(RUN_ATTR), dead=dead,
        ))
    if not losses:
        losses = tuple(dict.fromkeys(t.loss for t in rows))
    task = getattr(getattr(ctx, "data", None), "task", None) or infer_task(metric, losses)
    return StudyData(
        name=study.study_name, metric=metric, direction=direction,
        baseline=None if baseline is None else float(baseline),
        target_scale=float(scale) if scale else 1.0, task=task, losses=losses, trials=tuple(rows),
        space=space,
    )


# ------------------------------------------------------------------------------------------- KerasTuner
_KT_STATES = {"COMPLETED": "complete", "FAILED": "failed", "INVALID": "failed", "RUNNING": "running",
              "IDLE": "waiting", "STOPPED": "failed"}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_keras_tuner_project(project: Path) -> bool:
    """Whether ``project`` holds a KerasTuner project of aloss-tune's (its study record)."""
    from aloss_tune.backends.keras_tuner import STUDY_FILE

    return (project / STUDY_FILE).is_file()


def optuna_distribution(spec: Mapping[str, Any]) -> Any:
    """The Optuna distribution of one of aloss-tune's ranges in its dict form (``{type, low, high, ...}``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec.get("type")
    if kind == "categorical":
        return CategoricalDistribution(list(spec["choices"]))
    if kind == "int":
        return IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)),
                               step=int(spec.get("step") or 1))
    return FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)),
                             step=None if spec.get("step") is None else float(spec["step"]))


def searched_values(params: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A trial's values of the searched names (``loss.huber.delta``) from its flat params (``loss.delta``);
    the names of another loss's parameters are left out."""
    loss = params.get("loss")
    out = {}
    for name in names:
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "loss":  # loss.<family>.<param>: only for that family
            if parts[1] == loss and f"loss.{parts[2]}" in params:
                out[name] = params[f"loss.{parts[2]}"]
        elif name in params:
            out[name] = params[name]
    return out


def read_keras_tuner_project(project: Path, ctx: Any = None) -> StudyData:
    """Read a KerasTuner project of aloss-tune's (``<directory>/<study>``) into `StudyData`."""
    from aloss_tune.backends.keras_tuner import STUDY_FILE, TRIAL_FILE
    from aloss_tune.errors import UsageError

    record = _read_json(project / STUDY_FILE)
    if not isinstance(record, dict):
        raise UsageError(f"{project} is not a KerasTuner project of aloss-tune's (no {STUDY_FILE}); give the "
                         "project root with --directory.")
    objective = record.get("objective") or {}
    metric = objective.get("metric") or "objective"
    direction = objective.get("direction") or "minimize"
    specs = record.get("search_params") or {}
    dists = {}
    for name, spec in specs.items():
        try:
            dists[name] = optuna_distribution(spec)
        except (KeyError, TypeError, ValueError):
            continue  # a range Optuna cannot hold: left off the figures that need ranges
    losses = tuple(record.get("losses") or (specs.get("loss") or {}).get("choices") or ())
    scale = getattr(ctx, "target_scale", None) if ctx is not None else record.get("target_scale")
    baseline = record.get("baseline")
    if ctx is not None:
        baseline = ctx.baseline_value()
    if baseline is not None and not math.isfinite(float(baseline)):
        baseline = None

    def trial_number(path: Path) -> int:
        suffix = path.parent.name.removeprefix("trial_")
        return int(suffix) if suffix.isdigit() else -1

    rows: list[TrialRow] = []
    for path in sorted(project.glob("trial_*/trial.json"), key=trial_number):
        trial = _read_json(path) or {}
        mine = _read_json(path.parent / TRIAL_FILE) or {}
        number = mine.get("number", trial_number(path))
        stopped = mine.get("stopped_dead") is not None  # COMPLETED for KerasTuner, stopped early for us
        state = mine.get("state") if mine.get("state") in ("complete", "failed") else None
        if mine.get("state") == "dead":
            state = "pruned" if stopped else "complete"
        state = state or _KT_STATES.get(str(trial.get("status")), "running")
        params = dict(mine.get("params") or {})
        if not params:  # ran where this directory is not shared: KerasTuner's own names and values
            values = (trial.get("hyperparameters") or {}).get("values") or {}
            params = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        loss = str(params.get("loss") or (losses[0] if len(losses) == 1 else "?"))
        value = mine.get("value", trial.get("score")) if state == "complete" or stopped else None
        value = None if value is None or not math.isfinite(float(value)) else float(value)
        history = {str(k): [float(x) for x in v] for k, v in (mine.get("history") or {}).items()}
        searched = searched_values(params, list(dists))
        rows.append(TrialRow(
            number=int(number), state=state, value=value, loss=loss, params=params, search_params=searched,
            distributions={k: dists[k] for k in searched}, history=history,
            learned=learned_series(history, loss), loss_config=mine.get("loss_config"), seed=mine.get("seed"),
            duration_s=None, epochs=len(history.get(metric) or ()), error=mine.get("error"),
            run_id=mine.get("mlflow_run_id"), dead=_dead(state, value, baseline, direction, stopped),
        ))
    if not losses:
        losses = tuple(dict.fromkeys(t.loss for t in rows))
    task = (getattr(getattr(ctx, "data", None), "task", None) or record.get("task")
            or infer_task(metric, losses))
    return StudyData(
        name=str(record.get("study") or project.name), metric=metric, direction=direction,
        baseline=None if baseline is None else float(baseline),
        target_scale=float(scale) if scale else 1.0, task=task, losses=losses, trials=tuple(rows),
        space={"loss": {"choices": list(losses)}},
    )


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
