"""The KerasTuner backend: a space becomes a `HyperModel`; a KerasTuner oracle chooses every trial.

The same YAML space runs here and on Optuna, with the same flat params, the same MLflow layout and the same
best-loss import, so switching is one flag (``aloss-tune tune SPACE --backend keras-tuner``).

Search space
    `SpaceHyperModel` declares the space once, through the very `SearchSpace.sample` code the Optuna
    backend runs, with a `KerasTunerSuggester`: the loss choice is a ``Choice`` named ``loss`` and each
    loss's parameters are declared under ``hp.conditional_scope("loss", [name])``, so they exist (and get
    values) only when that loss is chosen. Hyperparameter names are the Optuna backend's qualified names
    (``loss.huber.delta``, ``loss.l2``, ``model.units``); a trial's flat params dict
    (``{"loss": "huber", "loss.delta": 1.2, ...}``) has exactly the keys and meanings Optuna produces.
    Log ranges map to ``sampling="log"`` and never carry a step (KerasTuner reads a step under log sampling
    as a multiplier); linear steps keep Optuna's meaning (``low + k * step``, ``high`` included: a stepped
    float is declared as an ordered ``Choice`` of its grid). Categorical choices that KerasTuner cannot hold
    as such (booleans, ``null``, mixed types) are stored as JSON labels and decoded.

Tuners
    ``search.tuner`` (or ``--tuner``): ``random``, ``bayesian`` or ``hyperband``, all run by one `SpaceTuner`
    over the matching KerasTuner oracle. ``search.n_trials`` is the oracle's ``max_trials``: the project's
    *total*, so rerunning the same command resumes an interrupted search and runs only the missing trials
    (finished trials are never redone; a trial cut short is retried). Hyperband's own schedule may stop
    sooner; its ``max_epochs`` is ``training.epochs`` (factor 3, one iteration), and a trial that continues an
    earlier one starts from that trial's best checkpoint at the bracket's ``initial_epoch``.
    ``search.seed`` seeds the oracle (as ``seed + 1``: KerasTuner reads 0 as "no seed") and each trial's Keras
    run (``seed + trial number``, as on Optuna). ``search.executions_per_trial`` trains each trial that many
    times (execution ``k`` seeded ``seed + number + k * 1_000_003``); the objective is their mean.

Project directory
    ``<directory>/<study>`` (default ``kt_projects/<study>``): KerasTuner's own files (``oracle.json``,
    ``trial_<id>/trial.json``, best-epoch checkpoints) plus ``aloss_tune.json`` (the study: tuner, objective,
    searched ranges) and ``trial_<id>/aloss_tune.json`` (the trial's flat params, seed, loss config, history,
    value, error and MLflow run id). `best_summary` reads them; a project is reopened only with the tuner,
    objective and ranges it was created with.

Tracking
    Identical to the Optuna backend (`aloss_tune.tracking`): a parent run per study found again by tag, a
    ``trial-<n> <loss>`` child run per trial with params logged when it starts (a retried trial gets a new
    run tagged ``aloss_tune.retry_of``; a run its dead worker left RUNNING is ended FAILED; a Hyperband
    trial that continues an earlier one is tagged ``aloss_tune.continues`` with that trial's run id, or its
    trial id when its run is unknown), one batch of metrics per epoch
    (learned ``alpha``/``scale`` included; executions after the first are logged as
    ``execution_<k>/<metric>``), ``loss_config.json``, and its status: complete -> FINISHED,
    failed -> FAILED with ``error.txt``. KerasTuner swallows every exception raised while a trial trains
    and only marks the trial failed; `SpaceTuner.on_trial_end` puts the traceback it kept into MLflow, so a
    failure is visible with its reason. Hyperband never prunes: a trial of an early-stopped bracket has
    completed its budget and is FINISHED. After five failed trials in a row a worker stops, as on Optuna.
    When the search ends, the parent run gets the same report as an Optuna study (figures, ``trials.csv``,
    summary; `aloss_tune.report`), read from the project directory; ``aloss-tune report STUDY --backend
    keras-tuner`` writes it again from there.

Distributed search (KerasTuner's chief/worker mode)
    Start the same command in several processes with ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``
    and ``KERASTUNER_TUNER_ID`` set: ``chief`` serves the oracle over gRPC (it trains nothing and logs the
    study's best to the parent run when every worker is done); every other id is a worker that asks the
    chief for trials and logs them. Give all processes the same ``--directory`` on a shared file system
    (Hyperband continues trials from checkpoints and `best_summary` reads every trial's record there).
    ``search.timeout`` and the five-failures stop apply only outside this mode: the chief waits for every
    worker to ask for a trial it cannot have, so a worker must not leave early. See
    ``examples/distributed_keras_tuner.md``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
from keras_tuner.engine import trial as kt_trial

from aloss_tune._schema import BEST_TRIAL_TAG, DEFAULT_KT_DIRECTORY
from aloss_tune._urls import redact_url
from aloss_tune.distributions import Categorical, Distribution, Float, Int
from aloss_tune.errors import ConfigError, UsageError
from aloss_tune.lifecycle import finish_interrupted, located, start_run, training_seed
from aloss_tune.result import make_result
from aloss_tune.runner import TrialContext, build_trial_model, loss_config, run_trial
from aloss_tune.space import SearchSpace
from aloss_tune.tracking import (
    StudyTracker,
    TrackingSettings,
    load_settings,
    missing_store,
    study_runs,
)

DEFAULT_DIRECTORY = DEFAULT_KT_DIRECTORY
STUDY_FILE = "aloss_tune.json"
TRIAL_FILE = "aloss_tune.json"
MAX_CONSECUTIVE_FAILURES = 5
# A worker stops once this many trials, and every trial it ran, failed with the same ConfigError.
SAME_CONFIG_ERROR_STOP = 3
EXECUTION_SEED_STRIDE = 1_000_003
HYPERBAND_FACTOR = 3

_log = logging.getLogger("aloss_tune.keras_tuner")


# --------------------------------------------------------------------------------------------- suggester
class KerasTunerSuggester:
    """`aloss_tune.space.Suggester` over KerasTuner `HyperParameters`.

    ``suggest`` registers (or reads) ``hp.Float`` / ``hp.Int`` / ``hp.Choice`` under the given qualified
    name; ``conditional`` opens ``hp.conditional_scope`` when the parent is a searched value (a loss fixed
    by the space needs no scope). A parameter of a scope that is not active reads as ``None``.
    """

    def __init__(self, hp: kt.HyperParameters):
        self.hp = hp
        self._labels: dict[str, list[tuple[Any, Any]]] = {}  # name -> [(value, KerasTuner label)]

    def suggest(self, name: str, dist: Distribution) -> Any:
        hp = self.hp
        if isinstance(dist, Float):
            grid = float_grid(dist)
            if grid is not None:
                value = hp.Choice(name, grid, ordered=True)
            elif dist.log:
                value = hp.Float(name, dist.low, dist.high, sampling="log")
            else:
                value = hp.Float(name, dist.low, dist.high, step=dist.step, sampling="linear")
            if value is None:
                return None
            if dist.step is not None and grid is None:  # a very long grid: snap KerasTuner's value onto it
                value = dist.low + round((value - dist.low) / dist.step) * dist.step
            # An optimizer may propose the closed end of KerasTuner's [0, 1) range: stay inside [low, high].
            return min(max(float(value), dist.low), dist.high)
        if isinstance(dist, Int):
            if dist.log:
                value = hp.Int(name, dist.low, dist.high, sampling="log")
            else:
                value = hp.Int(name, dist.low, dist.high, step=dist.step, sampling="linear")
            return None if value is None else min(max(int(value), dist.low), dist.high)
        labels = choice_labels(dist)
        self._labels[name] = list(zip(dist.choices, labels))
        label = hp.Choice(name, labels, ordered=False)
        if label is None:
            return None
        return dict(zip(labels, dist.choices))[label]

    @contextlib.contextmanager
    def conditional(self, parent: str, value: Any) -> Iterator[None]:
        pairs = self._labels.get(parent)
        if pairs is None:  # the parent is fixed by the space: nothing is conditional
            yield
            return
        # Matched by type too: True and 1 are different choices.
        label = next(label for choice, label in pairs if choice == value and type(choice) is type(value))
        with self.hp.conditional_scope(parent, [label]):
            yield


MAX_GRID = 1000


def float_grid(dist: Float) -> list[float] | None:
    """The values of a stepped float range, Optuna's way (``low + k * step`` up to ``high``), or ``None``.

    KerasTuner's own stepped ``Float`` computes its grid in binary floating point and can lose the top value
    (``[0, 0.3]`` step 0.1 gives 0, 0.1, 0.2), so a grid of at most `MAX_GRID` values is declared as an
    ordered ``Choice`` of exact decimal values instead; a longer one stays a stepped ``Float``.
    """
    if dist.step is None:
        return None
    low, step = Decimal(repr(dist.low)), Decimal(repr(dist.step))
    n = int((Decimal(repr(dist.high)) - low) // step) + 1
    if n > MAX_GRID:
        return None
    return [float(low + k * step) for k in range(n)]


def choice_labels(dist: Categorical) -> list[Any]:
    """The values KerasTuner holds for ``dist``'s choices.

    A ``Choice`` holds one type among str, int and float (a bool is stored as an int), so choices of one
    such type are kept as they are; any other mix (booleans, ``null``, strings with numbers) becomes JSON
    labels (``"true"``, ``"null"``, ``"\\"a\\""``).
    """
    types = {type(c) for c in dist.choices}
    if len(types) == 1 and types.pop() in (str, int, float):
        return list(dist.choices)
    return [json.dumps(c) for c in dist.choices]


# ------------------------------------------------------------------------------------------- hypermodel
class SpaceHyperModel(kt.HyperModel):
    """A `SearchSpace` as a KerasTuner `HyperModel`.

    Args:
        space: the validated space.
        target_scale: the regression target's robust spread (relative default ranges are scaled by it).
        ctx: the study context; needed only by `build` (KerasTuner's ``get_best_models``, or a user rebuilding
            the best model from ``tuner.get_best_hyperparameters()``).
    """

    def __init__(self, space: SearchSpace, target_scale: float = 1.0, ctx: TrialContext | None = None):
        super().__init__(name=space.study)
        self.space = space
        self.target_scale = target_scale
        self.ctx = ctx

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        """Register every hyperparameter, each loss's under its conditional scope."""
        suggester = KerasTunerSuggester(hp)
        for loss in self.space.losses:
            if len(self.space.losses) > 1 and "loss" in hp.values:
                hp.values["loss"] = loss  # walk each loss's scope while it is active
            self.space.sample(suggester, self.target_scale)
            for parent, choices in self.space.conditional_choices(loss, self.target_scale).items():
                key = f"loss.{loss}.{parent}"  # and each scope nested in it (an alpha formula's constants)
                for choice in choices:
                    label = next(lab for c, lab in suggester._labels.get(key, ()) if c == choice)
                    hp.values[key] = label
                    self.space.sample(suggester, self.target_scale)

    def params(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """A trial's flat params dict: the vocabulary of `aloss_tune.build_loss` and of the Optuna backend."""
        return self.space.sample(KerasTunerSuggester(hp), self.target_scale)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """The compiled model (with its loss attached) of ``hp``'s params, built with its optimizer so that a
        checkpoint loads into it whole."""
        if self.ctx is None:
            raise UsageError("SpaceHyperModel.build needs the study context (ctx).")
        model, _ = build_trial_model(self.ctx, self.params(hp))
        if not model.built:  # a wrapped model (learned loss parameters) builds on its first call
            model.build((None, *self.ctx.data.x_train.shape[1:]))
        model.optimizer.build(model.trainable_variables)
        return model


# ---------------------------------------------------------------------------------------------- oracles
def make_oracle(space: SearchSpace, metric: str, direction: str, **options: Any) -> kt.Oracle:
    """The KerasTuner oracle of ``space.search.tuner`` for ``metric`` (``minimize``/``maximize``).

    ``options`` go to the oracle's constructor (``num_initial_points`` of ``bayesian``, ``factor`` of
    ``hyperband``, ...). Failures never stop KerasTuner itself (it would raise before saving its state);
    `SpaceTuner` applies the limit instead.
    """
    search = space.search
    objective = kt.Objective(metric, "min" if direction == "minimize" else "max")
    common: dict[str, Any] = {
        "objective": objective,
        "seed": search.seed + 1,
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": sys.maxsize,
    }
    common.update(options)
    oracle: kt.Oracle
    if search.tuner == "random":
        oracle = kt.oracles.RandomSearchOracle(max_trials=search.n_trials, **common)
    elif search.tuner == "bayesian":
        oracle = kt.oracles.BayesianOptimizationOracle(max_trials=search.n_trials, **common)
    else:
        common.setdefault("max_epochs", space.training.epochs)
        common.setdefault("factor", HYPERBAND_FACTOR)
        oracle = kt.oracles.HyperbandOracle(**common)
        oracle.max_trials = search.n_trials  # Hyperband has its own schedule; n_trials caps it
    oracle.verbose = 0  # KerasTuner's trial table on stdout only when `tune(progress=True)` asks for it
    return oracle


# ------------------------------------------------------------------------------------------------ tuner
class _SearchStopped(Exception):
    """Raised between trials to end a search early (timeout, too many failures); caught by `tune`.

    ``config_error``: the one `ConfigError` that failed every trial of this worker, raised by `tune`.
    """

    def __init__(self, message: str, config_error: str | None = None):
        super().__init__(message)
        self.config_error = config_error


class _TrialCallback(keras.callbacks.Callback):
    """KerasTuner's side of a trial's training; one instance per trial, shared by its executions.

    * restores the checkpoint a Hyperband trial continues from (weights and optimizer state);
    * forwards epoch events to the tuner's hooks ``on_epoch_begin/end(trial, model, epoch, logs)``, as
      KerasTuner's own trial callback does (batch events are not forwarded);
    * saves the weights of the best epoch over all executions (``checkpoint.weights.h5``: what
      ``get_best_models`` and a continuing trial load) and the build config next to them.

    Args:
        tuner, trial: the tuner and the trial being trained.
        monitor, direction: the objective metric and ``minimize``/``maximize``.
        checkpoint, build_config: where to save this trial's best weights and build config.
        start_from: ``(checkpoint, build config)`` of the trial continued, or ``None``.
    """

    def __init__(self, tuner: kt.Tuner, trial: kt_trial.Trial, *, monitor: str, direction: str,
                 checkpoint: str, build_config: str, start_from: tuple[str, str] | None = None):
        super().__init__()
        self.tuner = tuner
        self.trial = trial
        self.monitor = monitor
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.best = math.inf
        self.checkpoint = checkpoint
        self.build_config = build_config
        self.start_from = start_from

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.start_from is None:
            return
        checkpoint, build_config = self.start_from
        model = self.model
        if not model.built:  # a wrapped model (learned loss parameters) builds when its step is traced
            model.build_from_config(_read_json(Path(build_config)))
        if model.optimizer is not None and not model.optimizer.built:  # restore the optimizer's state too
            model.optimizer.build(model.trainable_variables)
        model.load_weights(checkpoint)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.tuner.on_epoch_begin(self.trial, self.model, epoch, logs=logs)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(float(value)) and self.sign * float(value) < self.best:
            self.best = self.sign * float(value)
            self.model.save_weights(self.checkpoint)
        self.tuner.on_epoch_end(self.trial, self.model, epoch, logs=logs)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        _write_json(self.build_config, self.model.get_build_config())


class SpaceTuner(kt.Tuner):
    """A KerasTuner `Tuner` whose trials are aloss-tune trials.

    ``run_trial`` computes the flat params from the trial's hyperparameters and trains with
    `aloss_tune.runner.run_trial`, so seeding, loss attachment, compilation, the reporting callback and the
    objective are those of the Optuna backend; it returns the objective value to the oracle. Each trial is
    tracked in MLflow by ``tracker`` and recorded in ``trial_<id>/aloss_tune.json``.

    Args:
        oracle: from `make_oracle`.
        hypermodel: the space's `SpaceHyperModel`.
        ctx: the study context.
        tracker: the study's `StudyTracker`, or ``None`` for no tracking.
        timeout: stop starting trials after this many seconds (``None``: no limit).
        **kwargs: `keras_tuner.Tuner` arguments (``directory``, ``project_name``, ``overwrite``,
            ``executions_per_trial``).
    """

    def __init__(self, oracle: kt.Oracle, hypermodel: SpaceHyperModel, *, ctx: TrialContext,
                 tracker: StudyTracker | None = None, timeout: float | None = None, **kwargs: Any):
        self.ctx = ctx
        self.trial_log: Any = None  # an aloss_tune.progress.TrialLog, set by `tune`
        self.tracker = tracker
        self.timeout = timeout
        self.seed = ctx.space.search.seed
        self.ran: dict[str, dict[str, Any]] = {}  # trial id -> record, for the trials this process ran
        self._runs: dict[str, Any] = {}
        self._consecutive_failures = 0
        # Each trial this worker ran, as the message of the ConfigError that failed it (None: anything else).
        self._config_errors: list[str | None] = []
        self._trial_config_error: dict[str, str] = {}
        self._started = time.monotonic()
        reload_log = io.StringIO()
        with contextlib.redirect_stdout(reload_log):  # "Reloading Tuner from ..." goes to the log
            super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        if reload_log.getvalue().strip():
            _log.info("%s", reload_log.getvalue().strip())

    # ----------------------------------------------------------------------------------- KerasTuner hooks
    def _populate_initial_space(self) -> None:
        # The hypermodel declares every conditional scope itself: no need to build models to find them.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial: kt_trial.Trial, *args: Any, **kwargs: Any) -> float:
        hp = trial.hyperparameters
        number = int(trial.trial_id)
        params = self.hypermodel.params(hp)
        seed = training_seed(self.seed, number)
        epochs = hp.values.get("tuner/epochs")
        initial_epoch = int(hp.values.get("tuner/initial_epoch", 0))
        source = hp.values.get("tuner/trial_id")
        record: dict[str, Any] = {
            "number": number, "trial_id": trial.trial_id, "state": "running", "params": params, "seed": seed,
        }
        if epochs is not None:
            record["schedule"] = {"epochs": epochs, "initial_epoch": initial_epoch, "continues": source}
        # KerasTuner retries a trial cut short (an interrupted search, a dead worker) under the same id.
        previous = _read_json(Path(self.get_trial_dir(trial.trial_id)) / TRIAL_FILE)
        retry = previous is not None and previous.get("state") != "complete"
        run = None
        if self.tracker is not None:
            if retry and previous.get("mlflow_run_id"):  # a worker killed outright left its run RUNNING
                self.tracker.end_lost_run(previous["mlflow_run_id"], "failed", error=(
                    f"lost: the process running trial {number} stopped before the trial ended; "
                    "KerasTuner retried the trial"))
            run = start_run(self.tracker, number, params, seed, retry_of=number if retry else None,
                            continues=None if source is None else self._run_of(source))
            record["mlflow_run_id"] = run.resolve()
        self._runs[trial.trial_id] = run
        self.ran[trial.trial_id] = record
        self._save_record(trial.trial_id, record)

        start_from = None
        if source is not None:
            start_from = (self._get_checkpoint_fname(source), self._get_build_config_fname(source))
            missing = [path for path in start_from if not os.path.exists(path)]
            if missing:
                raise FileNotFoundError(
                    f"trial {number} continues trial {int(source)}, but {missing[0]} is missing (with "
                    "distributed workers, give every process the same shared --directory)")
        callback = _TrialCallback(
            self, trial, monitor=self.ctx.objective.metric, direction=self.ctx.objective.direction,
            checkpoint=self._get_checkpoint_fname(trial.trial_id),
            build_config=self._get_build_config_fname(trial.trial_id), start_from=start_from,
        )
        values: list[float] = []
        try:
            for execution in range(self.executions_per_trial):
                outcome = run_trial(
                    self.ctx, params, seed=seed + execution * EXECUTION_SEED_STRIDE,
                    reporters=[_epoch_logger(run, execution)], epochs=epochs, initial_epoch=initial_epoch,
                    callbacks=[callback],
                )
                values.append(outcome.value)
                if execution == 0:
                    record.update(loss_config=outcome.loss_config, history=outcome.history)
        except BaseException as exc:
            if isinstance(exc, ConfigError):
                self._trial_config_error[trial.trial_id] = located(exc, self.ctx.space)
            if not isinstance(exc, Exception) or isinstance(exc, kt.errors.FatalError):
                # Not a trial failure: the search ends here, without `on_trial_end`; end the run now.
                record.update(state="failed", error="interrupted")
                self._save_record(trial.trial_id, record)
                finish_interrupted(run)
            raise
        record["value"] = value = float(sum(values) / len(values))
        if len(values) > 1:
            record["execution_values"] = values
        return value

    def on_trial_end(self, trial: kt_trial.Trial) -> None:
        try:
            super().on_trial_end(trial)  # the oracle records the status and score first
        finally:
            self._finish(trial)
        if self._is_worker():
            return
        errors = self._config_errors
        same = bool(errors) and errors[0] is not None and set(errors) == {errors[0]}
        if same and len(errors) >= SAME_CONFIG_ERROR_STOP:
            raise _SearchStopped(f"{len(errors)} trials failed with the same configuration error; stopping "
                                 "this worker.", config_error=errors[0])
        if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise _SearchStopped(
                f"{self._consecutive_failures} trials failed in a row; stopping this worker.")
        if self.timeout is not None and time.monotonic() - self._started >= self.timeout:
            raise _SearchStopped(f"timeout of {self.timeout:g} s reached; no new trial started.")

    # -------------------------------------------------------------------------------------------- helpers
    def _finish(self, trial: kt_trial.Trial) -> None:
        record = self.ran.get(trial.trial_id)
        run = self._runs.pop(trial.trial_id, None)
        if record is None:  # failed before run_trial could record anything
            record = {"number": int(trial.trial_id), "trial_id": trial.trial_id}
            self.ran[trial.trial_id] = record
        config_error = self._trial_config_error.pop(trial.trial_id, None)
        failed = not (trial.status == kt_trial.TrialStatus.COMPLETED and "value" in record)
        self._config_errors.append(config_error if failed else None)
        if trial.status == kt_trial.TrialStatus.COMPLETED and "value" in record:
            record["state"] = "complete"
            self._consecutive_failures = 0
            if run is not None:
                run.finish("complete", objective=record["value"], loss_config=record.get("loss_config"))
        else:
            error = trial.message or f"the trial ended with status {trial.status}"
            record.update(state="failed", error=error.strip().splitlines()[-1][:2000])
            self._consecutive_failures += 1
            if run is not None:
                run.finish("failed", error=error)
        self._save_record(trial.trial_id, record)
        if self.trial_log is not None:
            loss = (record.get("params") or {}).get("loss", "?")
            self.trial_log(record["number"], record["state"], loss, record.get("value"),
                           error=record.get("error") if record["state"] == "failed" else None)

    def _run_of(self, trial_id: str) -> str:
        """The MLflow run id of trial ``trial_id`` (from its record), or the trial id when it has none."""
        record = self.ran.get(trial_id) or _read_json(Path(self.get_trial_dir(trial_id)) / TRIAL_FILE) or {}
        return str(record.get("mlflow_run_id") or trial_id)

    def _save_record(self, trial_id: str, record: Mapping[str, Any]) -> None:
        _write_json(os.path.join(self.get_trial_dir(trial_id), TRIAL_FILE), record)

    def best_summary(self) -> dict[str, Any] | None:
        """The best finished trial (``{number, value, params, loss_config}``) the oracle knows, or ``None``.

        On a distributed worker (whose oracle is the chief's, possibly gone), the best of its own trials.
        """
        if self._is_worker():
            done = [r for r in self.ran.values() if r.get("state") == "complete"]
            if not done:
                return None
            pick = min if self.oracle.objective.direction == "min" else max
            best = pick(done, key=lambda r: r["value"])
            return _summary(best["number"], best["value"], best["params"], best.get("loss_config"))
        trials = [t for t in self.oracle.get_best_trials(1) if t.status == kt_trial.TrialStatus.COMPLETED]
        if not trials:
            return None
        best = trials[0]
        record = _read_json(Path(self.get_trial_dir(best.trial_id)) / TRIAL_FILE) or {}
        params = record.get("params") or self.hypermodel.params(best.hyperparameters)
        config = record.get("loss_config") or loss_config(params)
        return _summary(int(best.trial_id), best.score, params, config)

    def counts(self) -> dict[str, int]:
        """Complete and failed trials of the study (on a distributed worker: of this worker)."""
        if self._is_worker():
            states = [r.get("state") for r in self.ran.values()]
            return {"complete": states.count("complete"), "failed": states.count("failed")}
        statuses = [t.status for t in self.oracle.trials.values()]
        return {
            "complete": statuses.count(kt_trial.TrialStatus.COMPLETED),
            "failed": statuses.count(kt_trial.TrialStatus.FAILED)
            + statuses.count(kt_trial.TrialStatus.INVALID),
        }


def _epoch_logger(run: Any, execution: int) -> Any:
    """The MLflow reporter of one execution: the first logs plain metric names, later ones a prefix."""
    prefix = "" if execution == 0 else f"execution_{execution}/"

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if run is not None:
            run.log_epoch(epoch, {prefix + k: v for k, v in metrics.items()} if prefix else metrics)

    return report


# ----------------------------------------------------------------------------------------------- studies
def distributed_role() -> str | None:
    """``"chief"``, ``"worker"`` or ``None``: KerasTuner's distributed mode, read from its environment as it
    reads it (``KERASTUNER_ORACLE_IP`` set; a ``KERASTUNER_TUNER_ID`` containing ``chief`` is the chief)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def check_directory(directory: str | os.PathLike[str] | None = None) -> None:
    """`UsageError` unless the project root ``directory`` is or can become a folder (nothing is created)."""
    root = Path(directory if directory is not None else DEFAULT_DIRECTORY)
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is" if existing == root else f"would be inside {existing}, which is"
        raise UsageError(f"KerasTuner project root {str(root)!r} (--directory) {what} not a folder.")


def project_dir(study: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the KerasTuner project of ``study`` lives: ``<directory>/<study>`` (default ``kt_projects``)."""
    return Path(directory if directory is not None else DEFAULT_DIRECTORY) / study


def _study_record(space: SearchSpace, ctx: TrialContext) -> dict[str, Any]:
    baseline = ctx.baseline_value()
    return {
        "study": space.study,
        "backend": "keras-tuner",
        "tuner": space.search.tuner,
        "objective": {"metric": ctx.objective.metric, "direction": ctx.objective.direction},
        "seed": space.search.seed,
        "search_params": {k: v.to_dict() for k, v in space.search_params(ctx.target_scale).items()},
        "target_scale": ctx.target_scale,
        "losses": list(space.losses),
        "task": ctx.data.task,
        "baseline": baseline if baseline is not None and math.isfinite(baseline) else None,
    }


def _check_project(project: Path, record: Mapping[str, Any]) -> None:
    """Refuse to resume a project made with another tuner, objective or set of ranges."""
    old = _read_json(project / STUDY_FILE)
    if old is None:
        if (project / "oracle.json").exists():
            raise UsageError(f"{project} holds a KerasTuner project that aloss-tune did not create; "
                             "use another study name or --directory.")
        return
    for key, what in (("tuner", "tuner"), ("objective", "objective"), ("search_params", "searched ranges")):
        if old.get(key) != record[key]:
            raise UsageError(
                f"study {record['study']!r} exists in {project} with another {what} "
                f"({json.dumps(old.get(key))[:300]}); resume it with the same space, or use another study "
                "name or --directory."
            )


def make_tuner(space: SearchSpace, ctx: TrialContext, *, directory: str | os.PathLike[str] | None = None,
               tracker: StudyTracker | None = None, overwrite: bool = False,
               oracle_options: Mapping[str, Any] | None = None) -> SpaceTuner:
    """The `SpaceTuner` of ``space`` in ``<directory>/<study>``, resuming the project if it exists.

    Raises `UsageError` if an existing project was made with another tuner, objective or ranges.
    """
    project = project_dir(space.study, directory)
    record = _study_record(space, ctx)
    if not overwrite:
        _check_project(project, record)
    oracle = make_oracle(space, ctx.objective.metric, ctx.objective.direction, **dict(oracle_options or {}))
    tuner = SpaceTuner(
        oracle, SpaceHyperModel(space, ctx.target_scale, ctx), ctx=ctx, tracker=tracker,
        timeout=space.search.timeout, directory=str(project.parent), project_name=project.name,
        overwrite=overwrite, executions_per_trial=space.search.executions_per_trial,
    )
    _write_json(project / STUDY_FILE, record)
    return tuner


def tune(space: SearchSpace, ctx: TrialContext, *, settings: TrackingSettings | None = None,
         directory: str | os.PathLike[str] | None = None, progress: bool = False, trial_log: Any = None,
         after_study: Callable[[Any], Path | None] | None = None) -> Any:
    """Run (or resume, or join as a distributed chief or worker) the study of ``space`` on KerasTuner.

    ``trial_log`` (an `aloss_tune.progress.TrialLog`) is called once per finished trial.
    ``after_study(tuner)`` returns a folder of artifacts (the report) to log on the parent run when the
    search ends; a distributed worker leaves that to the chief.

    Returns an `aloss_tune.result.TuneResult` whose ``storage`` is the project root directory and whose
    ``study`` is the `SpaceTuner`.
    """
    root = Path(directory if directory is not None else DEFAULT_DIRECTORY)
    project = project_dir(space.study, root)
    tracker = None
    if settings is not None:
        tracker = StudyTracker(settings, space.study, backend="keras-tuner", space=space.to_dict(),
                               storage=str(project))
    tuner = make_tuner(space, ctx, directory=root, tracker=tracker)
    tuner.trial_log = trial_log
    role = distributed_role()
    chief, worker = role == "chief", role == "worker"
    if worker and space.search.timeout is not None:
        _log.warning("search.timeout is not applied on a distributed KerasTuner worker (the chief waits for "
                     "every worker); the chief's max_trials bounds the search.")
    if tracker is not None:
        tracker.open()
    status = "FINISHED"
    config_error = None
    try:
        with contextlib.ExitStack() as stack:
            if chief or worker:
                echoes = {str(label) for label in choice_labels(Categorical(space.losses))}
                sink = _DropLines(sys.stdout, echoes)
                stack.callback(sink.write_pending)
                stack.enter_context(contextlib.redirect_stdout(sink))
            tuner.search(verbose=1 if progress else 0)
    except _SearchStopped as stop:
        if stop.config_error is None:
            _log.warning("%s", stop)
        config_error = stop.config_error
    except BaseException:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            # A worker's view of the study is partial: the chief logs the study's best and its report.
            best = None if worker else _safe_best(tuner)
            artifacts = after_study(tuner) if after_study is not None and not worker else None
            tracker.close(best=best, status=status, artifacts=artifacts)
    errors = tuner._config_errors
    if config_error is None and errors and errors[0] is not None and set(errors) == {errors[0]}:
        config_error = errors[0]  # fewer trials than SAME_CONFIG_ERROR_STOP, all refused alike
    if config_error is not None:
        raise ConfigError(config_error)
    return make_result(
        study_name=space.study, backend="keras-tuner", best=_safe_best(tuner),
        objective={"metric": ctx.objective.metric, "direction": ctx.objective.direction},
        counts=tuner.counts(), storage=str(root), tracker=tracker,
        tracking_uri=settings.tracking_uri if settings is not None else None, study=tuner,
    )


class _DropLines(io.TextIOBase):
    """Forwards text to ``stream`` except whole lines equal to one of ``lines``.

    KerasTuner 1.4.8 prints the first value of a conditional scope's parent each time it sends a trial over
    gRPC (a leftover ``print`` in ``Parent.to_proto``): in distributed mode a bare loss name per message.
    """

    def __init__(self, stream: Any, lines: set[str]):
        super().__init__()
        self.stream = stream
        self.lines = lines
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *complete, self.pending = self.pending.split("\n")
        for line in complete:
            if line not in self.lines:
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def write_pending(self) -> None:
        """Forward a last line left without its newline."""
        if self.pending and self.pending not in self.lines:
            self.stream.write(self.pending)
        self.pending = ""


def _safe_best(tuner: SpaceTuner) -> dict[str, Any] | None:
    try:
        return tuner.best_summary()
    except Exception as exc:  # noqa: BLE001 - never lose the study's end over its summary
        _log.warning("could not read the best trial: %s: %s", type(exc).__name__, exc)
        return None


# --------------------------------------------------------------------------------------------- best loss
def best_summary(study_name: str, *, directory: str | os.PathLike[str] | None = None,
                 tracking_uri: str | None = None) -> dict[str, Any]:
    """``{number, value, params, loss_config}`` of a KerasTuner study's best finished trial.

    Read from the project directory ``<directory>/<study_name>`` (default ``kt_projects``) when it exists,
    otherwise (or when the best trial's record is not there: a distributed worker on another machine ran
    it) from the study's MLflow parent run (``tracking_uri``, else ``$MLFLOW_TRACKING_URI`` / ``mlflow.yaml``
    / ``sqlite:///mlflow.db``), where every backend logs the best trial.
    """
    project = project_dir(study_name, directory)
    if (project / "oracle.json").exists():
        try:
            return _best_from_directory(project)
        except _MissingRecord as exc:  # the best trial ran on a machine that does not share this directory
            found = _best_from_mlflow(study_name, tracking_uri)
            if found is None:
                raise UsageError(str(exc)) from None
            return found
    found = _best_from_mlflow(study_name, tracking_uri)
    if found is not None:
        return found
    uri = load_settings(tracking_uri=tracking_uri).tracking_uri
    store = missing_store(uri)
    mlflow_part = (f"the MLflow tracking store file {store} does not exist" if store is not None else
                   f"the MLflow tracking store {redact_url(uri)} records no best trial of it")
    raise UsageError(f"no KerasTuner study {study_name!r}: no project in {project} (give --directory, the "
                     f"project root), and {mlflow_part}.")


class _MissingRecord(Exception):
    """The best trial's record is not in the project directory."""


def _best_from_directory(project: Path) -> dict[str, Any]:
    study = _read_json(project / STUDY_FILE) or {}
    best: tuple[float, dict[str, Any], Path] | None = None
    direction = (study.get("objective") or {}).get("direction")
    for path in sorted(project.glob("trial_*/trial.json")):
        trial = _read_json(path) or {}
        score = trial.get("score")
        if trial.get("status") != kt_trial.TrialStatus.COMPLETED or score is None or not math.isfinite(score):
            continue
        if direction is None:
            metrics = (trial.get("metrics") or {}).get("metrics") or {}
            maximize = any(m.get("direction") == "max" for m in metrics.values())
            direction = "maximize" if maximize else "minimize"
        better = best is None or (score < best[0] if direction == "minimize" else score > best[0])
        if better:
            best = (float(score), trial, path.parent)
    if best is None:
        raise UsageError(f"study {project.name!r} ({project}) has no finished trial yet.")
    score, trial, folder = best
    record = _read_json(folder / TRIAL_FILE)
    if record is None or "params" not in record:
        raise _MissingRecord(
            f"trial {trial.get('trial_id')} of {project} has no {TRIAL_FILE} (it ran on another machine: "
            "give every distributed worker the same shared --directory, or read the study from MLflow)."
        )
    params = record["params"]
    return _summary(int(trial["trial_id"]), score, params, record.get("loss_config") or loss_config(params))


def _best_from_mlflow(study_name: str, tracking_uri: str | None) -> dict[str, Any] | None:
    """The best trial the study's MLflow parent run records (``best_params.json``, ``best_loss_config.json``,
    the ``aloss_tune.best_trial`` tag and the ``best_objective`` metric), or ``None``."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    settings = load_settings(tracking_uri=tracking_uri)
    if missing_store(settings.tracking_uri) is not None:  # reading would create an empty store
        return None
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        experiment = client.get_experiment_by_name(settings.experiment or study_name)
    except MlflowException:
        return None
    if experiment is None:
        return None
    runs = study_runs(client, experiment.experiment_id, study_name, max_results=50)
    parents = [r for r in runs
               if "mlflow.parentRunId" not in r.data.tags and BEST_TRIAL_TAG in r.data.tags]
    if not parents:
        return None
    parent = parents[0]

    def artifact(name: str) -> Any:
        try:
            local = client.download_artifacts(parent.info.run_id, name, tmp)
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError):
            return None

    with tempfile.TemporaryDirectory() as tmp:
        params, config = artifact("best_params.json"), artifact("best_loss_config.json")
    if params is None:
        return None
    return _summary(int(parent.data.tags[BEST_TRIAL_TAG]), parent.data.metrics.get("best_objective"),
                    params, config or loss_config(params))


# ---------------------------------------------------------------------------------------------- helpers
def _summary(number: int, value: Any, params: Mapping[str, Any],
             config: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"number": number, "value": None if value is None else float(value), "params": dict(params),
            "loss_config": None if config is None else dict(config)}


def _write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` atomically (a distributed chief and worker may write the same study file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
