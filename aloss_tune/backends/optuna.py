"""The Optuna backend: a space becomes a define-by-run objective; Optuna's storage coordinates workers.

Search names are qualified by the loss they belong to (``loss.huber.delta``), so two losses may share a
parameter name with different domains (``alpha`` of ``barron`` and of ``focal``). Each trial also stores its
flat params dict (``loss.delta``; the vocabulary of `aloss_tune.build_loss`) as the user attribute
``aloss_tune.params``, with its loss config, history and MLflow run id.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import optuna

from aloss_tune._urls import redact_text, redact_url
from aloss_tune.distributions import Categorical, Distribution, Float, Int
from aloss_tune.errors import ConfigError, TrialFailed, UsageError
from aloss_tune.runner import TrialContext, run_trial
from aloss_tune.space import SearchSpace
from aloss_tune.tracking import StudyTracker

DEFAULT_STORAGE = "sqlite:///aloss_tune.db"
PARAMS_ATTR = "aloss_tune.params"
CONFIG_ATTR = "aloss_tune.loss_config"
HISTORY_ATTR = "aloss_tune.history"
ERROR_ATTR = "aloss_tune.error"
RUN_ATTR = "aloss_tune.mlflow_run_id"
SEED_ATTR = "aloss_tune.seed"

_log = logging.getLogger("aloss_tune.optuna")


class OptunaSuggester:
    """`aloss_tune.space.Suggester` over an Optuna trial (conditional scopes are implicit: define-by-run)."""

    def __init__(self, trial: optuna.trial.BaseTrial):
        self.trial = trial

    def suggest(self, name: str, dist: Distribution) -> Any:
        if isinstance(dist, Float):
            return self.trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
        if isinstance(dist, Int):
            return self.trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
        return self.trial.suggest_categorical(name, list(dist.choices))

    @contextlib.contextmanager
    def conditional(self, parent: str, value: Any) -> Iterator[None]:
        yield


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    search = space.search
    args = dict(search.sampler_args)
    seed = search.seed
    try:
        if search.sampler == "tpe":
            args.setdefault("multivariate", True)
            args.setdefault("group", True)  # conditional (per-loss) parameters
            with _quiet_experimental():
                return optuna.samplers.TPESampler(seed=seed, **args)
        if search.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed, **args)
        if search.sampler == "cmaes":
            # CMA-ES handles the numeric parameters; the loss choice falls to its independent sampler.
            args.setdefault("warn_independent_sampling", False)
            return optuna.samplers.CmaEsSampler(seed=seed, **args)
        grid = {}
        for name, dist in space.search_params().items():
            grid[name] = list(_grid_values(dist))
        return optuna.samplers.GridSampler(grid, seed=seed, **args)
    except TypeError as exc:
        raise ConfigError(f"search.sampler: {search.sampler} does not accept {sorted(args)} ({exc}).") from None


def _grid_values(dist: Distribution) -> list[Any]:
    if isinstance(dist, Categorical):
        return list(dist.choices)
    if isinstance(dist, Int):
        return list(range(dist.low, dist.high + 1, dist.step))
    n = int(round((dist.high - dist.low) / dist.step)) + 1  # type: ignore[operator]
    return [dist.low + i * dist.step for i in range(n)]  # type: ignore[operator]


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    search = space.search
    args = dict(search.pruner_args)
    try:
        if search.pruner == "median":
            args.setdefault("n_startup_trials", 3)
            args.setdefault("n_warmup_steps", 2)
            return optuna.pruners.MedianPruner(**args)
        if search.pruner == "hyperband":
            args.setdefault("min_resource", 1)
            args.setdefault("max_resource", space.training.epochs)
            return optuna.pruners.HyperbandPruner(**args)
        return optuna.pruners.NopPruner()
    except TypeError as exc:
        raise ConfigError(f"search.pruner: {search.pruner} does not accept {sorted(args)} ({exc}).") from None


@dataclass(frozen=True)
class StorageOptions:
    """How workers share a study. Heartbeats let a live worker fail (or retry) trials of a dead one."""

    url: str = DEFAULT_STORAGE
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    retries: int = 0


def open_storage(options: StorageOptions) -> optuna.storages.BaseStorage:
    """Connect to the Optuna storage now (so an unreachable one fails before training)."""
    url = options.url
    kwargs: dict[str, Any] = {}
    if options.heartbeat_interval:
        kwargs["heartbeat_interval"] = options.heartbeat_interval
        kwargs["grace_period"] = options.grace_period or 2 * options.heartbeat_interval
        if options.retries:
            from optuna.storages import RetryFailedTrialCallback

            kwargs["failed_trial_callback"] = RetryFailedTrialCallback(max_retry=options.retries)
    try:
        if url.startswith("sqlite:"):
            engine = {"connect_args": {"timeout": 60}}
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
        if "://" in url:
            engine = {"pool_pre_ping": True}
            if url.startswith("postgresql"):
                engine["connect_args"] = {"connect_timeout": 10}
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors of every kind
        reason = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
        raise UsageError(f"cannot open the Optuna storage {redact_url(url)}: {reason}") from None
    raise UsageError(f"storage: {redact_url(url)!r} is not a database URL (e.g. sqlite:///aloss_tune.db, "
                     "postgresql+psycopg2://user@host/db).")


def create_study(space: SearchSpace, storage: optuna.storages.BaseStorage, study_name: str,
                 direction: str) -> optuna.Study:
    """Create the study, or load it if it exists (a rerun resumes)."""
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, sampler=make_sampler(space), pruner=make_pruner(space),
            direction=direction, load_if_exists=True,
        )
    except ValueError as exc:
        raise UsageError(f"study {study_name!r}: {exc}") from None
    if study.direction.name.lower() != direction:
        raise UsageError(
            f"study {study_name!r} exists with direction {study.direction.name.lower()}, but the space asks to "
            f"{direction}; use another study name."
        )
    return study


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


class Objective:
    """The define-by-run objective: sample, track, train, report each epoch for pruning, return the value."""

    def __init__(self, ctx: TrialContext, tracker: StudyTracker | None, *, seed: int):
        self.ctx = ctx
        self.tracker = tracker
        self.seed = seed

    def __call__(self, trial: optuna.Trial) -> float:
        ctx = self.ctx
        params = ctx.space.sample(OptunaSuggester(trial), ctx.target_scale)
        seed = self.seed + trial.number
        trial.set_user_attr(PARAMS_ATTR, params)
        trial.set_user_attr(SEED_ATTR, seed)
        run = None
        if self.tracker is not None:
            run = self.tracker.start_trial(trial.number, params, seed=seed)
            if run.run_id is not None:
                trial.set_user_attr(RUN_ATTR, run.run_id)
        metric = ctx.objective.metric

        def report(epoch: int, metrics: dict[str, float]) -> None:
            if run is not None:
                run.log_epoch(epoch, metrics)
            value = metrics.get(metric)
            if value is not None and value == value:  # not NaN
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric}={value:.6g})")

        try:
            outcome = run_trial(ctx, params, seed=seed, reporters=[report])
        except optuna.TrialPruned:
            if run is not None:
                run.finish("pruned")
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr(ERROR_ATTR, message[:2000])
            if run is not None:
                run.finish("failed", error=traceback.format_exc())
            if isinstance(exc, (TrialFailed, ConfigError)):
                raise
            raise TrialFailed(message) from exc
        except BaseException:  # interrupted (Ctrl-C, SystemExit): never leave the run RUNNING
            if run is not None:
                run.finish("failed", error="interrupted\n" + traceback.format_exc())
            raise
        trial.set_user_attr(CONFIG_ATTR, outcome.loss_config)
        trial.set_user_attr(HISTORY_ATTR, outcome.history)
        if run is not None:
            run.finish("complete", objective=outcome.value, loss_config=outcome.loss_config)
        return outcome.value


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The best finished trial as ``{number, value, params, loss_config}``, or ``None``."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    return {
        "number": best.number,
        "value": best.value,
        "params": best.user_attrs.get(PARAMS_ATTR, {}),
        "loss_config": best.user_attrs.get(CONFIG_ATTR),
    }


def run_study(space: SearchSpace, ctx: TrialContext, *, storage: StorageOptions, study_name: str,
              n_trials: int | None, timeout: float | None, tracker: StudyTracker | None,
              progress: bool = False, max_consecutive_failures: int = 5,
              after_study: Any = None) -> optuna.Study:
    """Run (or resume, or join) ``study_name`` until this worker has done ``n_trials`` or ``timeout``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_study(space, open_storage(storage), study_name, ctx.objective.direction)
    study.set_user_attr("aloss_tune.space", space.to_dict())
    study.set_user_attr("aloss_tune.objective", {"metric": ctx.objective.metric,
                                                 "direction": ctx.objective.direction})
    study.set_user_attr("aloss_tune.target_scale", ctx.target_scale)
    baseline = ctx.baseline_value()
    if baseline is not None:
        study.set_user_attr("aloss_tune.baseline", baseline)
    status = "FINISHED"
    failures = {"consecutive": 0}

    def stop_on_failures(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            failures["consecutive"] += 1
            if failures["consecutive"] >= max_consecutive_failures:
                _log.error("%d trials failed in a row; stopping this worker.", failures["consecutive"])
                study.stop()
        else:
            failures["consecutive"] = 0

    if tracker is not None:
        tracker.open()
    try:
        with _quiet_experimental():
            study.optimize(
                Objective(ctx, tracker, seed=space.search.seed), n_trials=n_trials, timeout=timeout,
                catch=(Exception,), callbacks=[stop_on_failures], gc_after_trial=True,
                show_progress_bar=progress,
            )
    except BaseException:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            artifacts = after_study(study) if after_study is not None else None
            tracker.close(best=best_summary(study), status=status, artifacts=artifacts)
    return study
