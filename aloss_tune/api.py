"""`tune`: run a study from a space, on Optuna or KerasTuner, tracked in MLflow."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras

from aloss_tune.backends.base import check_options, make_backend
from aloss_tune.errors import UsageError
from aloss_tune.result import TuneResult
from aloss_tune.space import SearchSpace, load_space

__all__ = ["TuneResult", "tune"]


def tune(
    space: SearchSpace | str | Path | Mapping[str, Any],
    *,
    data: Any = None,
    build_model: Callable[..., keras.Model] | str | None = None,
    backend: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = None,
    tuner: str | None = None,
    tracking: bool = True,
    tracking_uri: str | None = None,
    mlflow_config: str | Path | None = None,
    progress: bool | str | None = None,
    heartbeat_interval: int | None = None,
    retries: int = 0,
    directory: str | Path | None = None,
    reclaim: bool | None = False,
    log_model: bool = False,
    register: str | None = None,
) -> TuneResult:
    """Run (or resume) a study.

    Args:
        space: a `SearchSpace`, a YAML path or a dict.
        data: overrides the space's data: a `aloss_tune.datasets.Dataset`, a tuple
            ``(x_train, y_train, x_val, y_val[, x_test, y_test])`` or a callable returning one.
        build_model: overrides the space's model: ``fn(params)`` or ``fn(params, data)`` returning an
            uncompiled `keras.Model`; it reads its hyperparameters from the flat params (``model.units``).
        backend: ``optuna`` or ``keras-tuner`` (default: the space's ``search.backend``).
        n_trials, timeout, seed, tuner: override the space's ``search`` settings.
        storage: Optuna storage URL (default ``$ALOSS_TUNE_STORAGE`` or ``sqlite:///aloss_tune.db``).
        study_name: overrides the space's ``study``.
        tracking: log to MLflow (settings from ``mlflow.yaml``, ``$MLFLOW_TRACKING_URI``, ``tracking_uri``).
        progress: ``True``: a progress bar (trials done, the counts of complete, dead, pruned and failed
            trials, the best value with its trial and loss); ``"lines"``: one line per finished trial on
            stderr (trial number, state, loss, objective, best so far); ``False``: nothing; ``None``
            (default): a bar when a person is watching (a terminal, an interactive shell, a notebook), else
            lines.
        heartbeat_interval, retries: Optuna heartbeats for many workers: trials of a dead worker are marked
            failed (and retried ``retries`` times).
        directory: KerasTuner's project root (default ``kt_projects``).
        reclaim: trials left RUNNING when the study starts (Optuna): by default those of processes of this
            machine that are gone are marked failed and the others reported; ``True`` marks them all failed
            (nothing else runs the study); ``None`` skips the check (`aloss_tune.workers` checks once for all
            its workers).
        log_model: when the study ends, log its best trial's trained model to MLflow as a LoggedModel
            (``best_model``: the export-ready Keras model, its loss config and the model as trained; see
            `aloss_tune.best_model`). Its URI is ``result.best_model_uri``. Needs tracking.
        register: also register that model under this name in MLflow's Model Registry (implies
            ``log_model``); ``result.registered_model`` is ``<name>/<version>``.

    Everything is validated (space, data, model, objective, storage, tracking store) before any training.

    Raises:
        ConfigError, UsageError: a setting refused before any store is opened (or every trial refused by
            one configuration error).
        StudyFailed: every trial this call ran failed (the message names the most common error).
    """
    if register is not None:
        from aloss_tune.best_model import check_model_name

        check_model_name(register)
        log_model = True
    if log_model and not tracking:
        raise UsageError("log_model: the best model is logged to MLflow, but tracking is off.")
    spec = load_space(space)
    overrides: dict[str, Any] = {}
    for key, value in (("n_trials", n_trials), ("timeout", timeout), ("seed", seed), ("tuner", tuner),
                       ("backend", backend)):
        if value is not None:
            overrides[key] = value
    if study_name is not None:
        overrides["study"] = study_name
    if overrides:
        spec = _validated(spec, overrides)
    if data is not None:
        spec = spec.with_overrides(data=data)
    if build_model is not None:
        spec = spec.with_overrides(model=build_model)
    backend_name = spec.search.backend
    check_options(spec, backend_name, tuner=tuner)

    from aloss_tune.runner import prepare

    # Validation order: space (loaded above), data, model and optimizer (prepare), the search's sampler and
    # pruner, the storage URL, the tracking URI; only then is a store opened or created.
    ctx = prepare(spec)

    chosen = make_backend(backend_name, storage=storage, heartbeat_interval=heartbeat_interval, retries=retries,
                          reclaim=reclaim, directory=directory)
    chosen.check(spec)

    settings = None
    if tracking:
        from aloss_tune.tracking import check_experiment, check_tracking_uri, load_settings

        settings = load_settings(mlflow_config, tracking_uri=tracking_uri)
        if not settings.enabled:
            if log_model:
                raise UsageError("log_model: the best model is logged to MLflow, but the MLflow settings turn "
                                 "tracking off (enabled: false).")
            settings = None
        else:
            check_tracking_uri(settings.tracking_uri)
            if log_model:
                settings = dataclasses.replace(settings, log_model=True, register=register)
            check_experiment(settings, spec.study, source=spec.source)

    from aloss_tune.progress import make_reporter

    total = spec.search.n_trials if backend_name == "optuna" else None  # KerasTuner's is the project's total
    trial_log = make_reporter(progress, ctx.objective.metric, ctx.objective.direction, total=total)
    try:
        return chosen.run(spec, ctx, settings=settings, progress=False, trial_log=trial_log,
                          after_study=_artifacts_hook(ctx))
    finally:
        if trial_log is not None:
            trial_log.close()


def _validated(spec: SearchSpace, overrides: Mapping[str, Any]) -> SearchSpace:
    """Apply overrides through the loader so they are validated like the file."""
    raw = dict(spec.raw) if spec.raw else spec.to_dict()
    search = dict(raw.get("search") or {})
    for key, value in overrides.items():
        if key == "study":
            raw["study"] = value
        else:
            search[key] = value
    raw["search"] = search
    new = SearchSpace.from_dict(raw, source=spec.source)
    # Python objects given directly (callables, arrays) are not in the raw dict: keep them.
    keep = {k: getattr(spec, k) for k in ("data", "model") if not isinstance(getattr(spec, k), str)}
    return new.with_overrides(**keep) if keep else new


def _artifacts_hook(ctx: Any) -> Callable[[Any], Path | None]:
    def hook(record: Any) -> Path | None:  # the study's StudyRecord (None: it could not be read back)
        from aloss_tune.report import study_artifacts_dir

        return None if record is None else study_artifacts_dir(record, ctx)

    return hook
