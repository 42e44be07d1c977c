"""`SpaceTuner`: KerasTuner's `Tuner` running aloss-tune trials (tracked, checkpointed, seeded)."""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
from keras_tuner.engine import trial as kt_trial

from aloss_tune.backends.keras_tuner._common import (
    EXECUTION_SEED_STRIDE,
    MAX_CONSECUTIVE_FAILURES,
    SAME_CONFIG_ERROR_STOP,
    TRIAL_FILE,
    _log,
    _read_json,
    _summary,
    _write_json,
)
from aloss_tune.backends.keras_tuner._space import SpaceHyperModel
from aloss_tune.errors import ConfigError, TrialDead
from aloss_tune.lifecycle import error_line, finish_interrupted, located, start_run, training_seed
from aloss_tune.runner import TrialContext, loss_config, run_trial
from aloss_tune.states import final_state, ordered_counts
from aloss_tune.tracking import (
    StudyTracker,
)


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

    A trial stopped as dead (not learning: `aloss_tune.states`) ends COMPLETED for KerasTuner, with its best
    objective so far as its score. KerasTuner has no pruned state its oracles learn from (Bayesian
    optimization skips FAILED and INVALID trials), so a bad score is what moves the search away from it; its
    record says ``state: dead`` and ``stopped_dead``, its MLflow run ends KILLED, and it is never the study's
    best trial.

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
        self.study_id: str | None = None  # the project's study id (set by `make_tuner`)
        self.timeout = timeout
        self.seed = ctx.space.search.seed
        self.baseline = ctx.baseline_value()
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
        retry = previous is not None and previous.get("state") not in ("complete", "dead")
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
        except TrialDead as dead:  # not learning: a bad score for the oracle (see the class docstring)
            callback.on_train_end()  # what a continuing Hyperband trial needs beside the checkpoint
            record.update(stopped_dead=dead.record(), history=dead.history, value=float(
                dead.best if dead.best is not None else dead.baseline))
            return float(record["value"])
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
            self._consecutive_failures = 0
            if record.get("stopped_dead") is not None:
                record["state"] = "dead"
                if run is not None:
                    run.finish("dead")
            else:
                record["state"] = final_state("complete", record["value"], self.baseline,
                                              self.ctx.objective.direction)
                if run is not None:
                    run.finish(record["state"], objective=record["value"], loss_config=record.get("loss_config"),
                               status="FINISHED")
        else:
            error = trial.message or f"the trial ended with status {trial.status}"
            record.update(state="failed", error=error_line(error.strip().splitlines()[-1] if error.strip() else ""))
            self._consecutive_failures += 1
            if run is not None:
                run.finish("failed", error=error)
        self._save_record(trial.trial_id, record)
        if self.trial_log is None and (self.tracker is None or self._is_worker()):
            return
        best = self.best_summary()
        if self.tracker is not None and not self._is_worker():  # a worker's view is partial: the chief's
            self.tracker.record_progress(best, self.counts())
        if self.trial_log is not None:
            loss = (record.get("params") or {}).get("loss", "?")
            self.trial_log(record["number"], record["state"], loss, record.get("value"),
                           best=None if best is None else (best["value"], best["number"]),
                           best_loss=None if best is None else best["params"].get("loss"),
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
            done = [r for r in self.ran.values() if r.get("state") in ("complete", "dead")
                    and r.get("stopped_dead") is None]
            if not done:
                return None
            pick = min if self.oracle.objective.direction == "min" else max
            best = pick(done, key=lambda r: r["value"])
            return _summary(best["number"], best["value"], best["params"], best.get("loss_config"))
        # The best trial that ran all its epochs (a trial stopped as dead is COMPLETED for KerasTuner).
        for candidate in self.oracle.get_best_trials(len(self.oracle.trials)):
            if candidate.status != kt_trial.TrialStatus.COMPLETED:
                continue
            record = self._record(candidate.trial_id)
            if record.get("stopped_dead") is not None:
                continue
            params = record.get("params") or self.hypermodel.params(candidate.hyperparameters)
            config = record.get("loss_config") or loss_config(params)
            return _summary(int(candidate.trial_id), candidate.score, params, config)
        return None

    def _record(self, trial_id: str) -> dict[str, Any]:
        """Trial ``trial_id``'s record (``trial_<id>/aloss_tune.json``), ``{}`` when it has none."""
        return self.ran.get(trial_id) or _read_json(Path(self.get_trial_dir(trial_id)) / TRIAL_FILE) or {}

    def counts(self) -> dict[str, int]:
        """Complete, dead, pruned (never, on KerasTuner) and failed trials of the study (on a distributed
        worker: of this worker)."""
        if self._is_worker():
            states = [str(r.get("state")) for r in self.ran.values() if r.get("state") != "running"]
        else:
            states = []
            for trial in self.oracle.trials.values():
                if trial.status == kt_trial.TrialStatus.COMPLETED:
                    states.append("dead" if self._record(trial.trial_id).get("state") == "dead" else "complete")
                elif trial.status in (kt_trial.TrialStatus.FAILED, kt_trial.TrialStatus.INVALID):
                    states.append("failed")
        return ordered_counts({state: states.count(state) for state in set(states)})


def _epoch_logger(run: Any, execution: int) -> Any:
    """The MLflow reporter of one execution: the first logs plain metric names, later ones a prefix."""
    prefix = "" if execution == 0 else f"execution_{execution}/"

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if run is not None:
            run.log_epoch(epoch, {prefix + k: v for k, v in metrics.items()} if prefix else metrics)

    return report
