"""One interface for the search backends: `Backend` runs a study and reads it back.

`aloss_tune.tune`, `aloss_tune.load_best_loss` and the reports talk to a backend only through it::

    backend = make_backend("optuna", storage="postgresql+psycopg2://...", heartbeat_interval=60)
    backend.check(space)                      # before any store exists: arguments, URLs, directories
    result = backend.run(space, ctx, settings=settings, progress=False, trial_log=None, after_study=hook)
    backend.best("robust_regression")         # {number, value, params, loss_config, ...}
    backend.records("robust_regression")      # StudyRecord: every trial, in words all backends share

The backends themselves live in `aloss_tune.backends.optuna` and `aloss_tune.backends.keras_tuner`; the
classes here only hold each one's own options and import it when first used. `StudyRecord` and
`TrialRecord` are what a backend reads out of its own storage for everyone else (`aloss_tune.report`
draws from them and from nothing backend-specific); ``after_study`` receives the study's `StudyRecord`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aloss_tune._schema import default_storage
from aloss_tune.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from aloss_tune.result import TuneResult
    from aloss_tune.runner import TrialContext
    from aloss_tune.space import SearchSpace
    from aloss_tune.tracking import TrackingSettings

BACKENDS = ("optuna", "keras-tuner")
STATES = ("complete", "pruned", "failed", "running", "waiting")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as its backend stored it.

    Attributes:
        number: the trial number.
        state: one of `STATES`.
        value: the objective (a pruned trial: its last reported value), or ``None``.
        params: the flat params dict (``loss.delta``, ``model.units``, ...).
        search_params: the backend's searched names (``loss.huber.delta``) with this trial's values.
        distributions: the range of each searched name, in the space's dict form (``{type, low, high, log,
            step}`` or ``{type: categorical, choices}``).
        history: per-epoch values (metrics and learned loss parameters).
        loss_config: the loss config artifact (``{"params", "keras"}``), or ``None``.
        seed, duration_s, epochs, error, run_id: the training seed, wall time, epochs trained, the error of a
            failed trial and the trial's MLflow run id, where known.
        stopped_dead: stopped early as not learning (`aloss_tune.states`); its ``state`` is ``pruned`` and its
            ``value`` its best objective.
    """

    number: int
    state: str
    value: float | None
    params: Mapping[str, Any]
    search_params: Mapping[str, Any] = field(default_factory=dict)
    distributions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    loss_config: Mapping[str, Any] | None = None
    seed: int | None = None
    duration_s: float | None = None
    epochs: int = 0
    error: str | None = None
    run_id: str | None = None
    stopped_dead: bool = False


@dataclass(frozen=True)
class StudyRecord:
    """A study as its backend stored it: its settings and every trial (`TrialRecord`).

    ``baseline`` is the objective of a predictor that ignores its inputs, ``target_scale`` the regression
    target's robust spread, ``task`` the data's task; each ``None`` where the backend did not record it.
    """

    name: str
    backend: str
    metric: str
    direction: str
    trials: tuple[TrialRecord, ...]
    losses: tuple[str, ...] = ()
    baseline: float | None = None
    target_scale: float | None = None
    task: str | None = None
    space: Mapping[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A search backend (Optuna, KerasTuner) with its own options (storage, project directory, ...)."""

    name: str

    def check(self, space: SearchSpace) -> None:
        """Raise `aloss_tune.ConfigError` / `UsageError` for a setting this backend refuses, creating nothing."""
        ...

    def run(self, space: SearchSpace, ctx: TrialContext, *, settings: TrackingSettings | None,
            progress: bool, trial_log: Any, after_study: Callable[[Any], Path | None] | None) -> TuneResult:
        """Run (or resume, or join) the study of ``space``; track it in MLflow when ``settings`` is given."""
        ...

    def best(self, study_name: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
        """``{number, value, params, loss_config, ...}`` of the study's best finished trial, reading only."""
        ...

    def records(self, study: Any) -> StudyRecord:
        """The study's `StudyRecord`: ``study`` is its name (read from this backend's store, reading only)
        or the study object of a `TuneResult` of this backend (``result.study``)."""
        ...


@dataclass
class OptunaBackend:
    """Optuna: a study in an RDB storage (``storage``, default ``$ALOSS_TUNE_STORAGE`` or the embedded
    SQLite file), heartbeats and retries for many workers, and the check of trials left RUNNING."""

    storage: str | None = None
    heartbeat_interval: int | None = None
    retries: int = 0
    reclaim: bool | None = False
    name: str = "optuna"

    @property
    def url(self) -> str:
        return self.storage or default_storage()

    def check(self, space: SearchSpace) -> None:
        from aloss_tune.backends import optuna as optuna_backend

        optuna_backend.check_search(space)
        optuna_backend.check_storage_url(self.url)

    def run(self, space: SearchSpace, ctx: TrialContext, *, settings: TrackingSettings | None,
            progress: bool, trial_log: Any, after_study: Callable[[Any], Path | None] | None) -> TuneResult:
        from aloss_tune.backends import optuna as optuna_backend
        from aloss_tune.result import make_result

        options = optuna_backend.StorageOptions(url=self.url, heartbeat_interval=self.heartbeat_interval,
                                                retries=self.retries)
        store = optuna_backend.open_storage(options)  # fail fast, before the tracking store is touched
        optuna_backend.check_resume(store, space, ctx)
        tracker = None
        if settings is not None:
            from aloss_tune.tracking import StudyTracker

            tracker = StudyTracker(settings, space.study, backend=self.name, space=space.to_dict(),
                                   storage=self.url, direction=ctx.objective.direction)
        study = optuna_backend.run_study(
            space, ctx, storage=options, study_name=space.study, n_trials=space.search.n_trials,
            timeout=space.search.timeout, tracker=tracker, progress=progress, after_study=after_study,
            trial_log=trial_log, reclaim=self.reclaim,
        )
        return make_result(
            study_name=space.study, backend=self.name, best=optuna_backend.best_summary(study),
            objective={"metric": ctx.objective.metric, "direction": ctx.objective.direction},
            counts=optuna_backend.state_counts(study), storage=self.url, tracker=tracker,
            tracking_uri=settings.tracking_uri if settings is not None else None, study=study,
        )

    def best(self, study_name: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
        from aloss_tune.backends.optuna import best_summary

        study = self._existing(study_name)
        best = best_summary(study)
        if best is None:
            raise UsageError(f"study {study_name!r} has no finished trial yet.")
        return best

    def records(self, study: Any) -> StudyRecord:
        from aloss_tune.backends.optuna import study_record

        return study_record(self._existing(study) if isinstance(study, str) else study)

    def _existing(self, study_name: str) -> Any:
        """The `optuna.Study` named ``study_name`` in the storage (`UsageError` listing the others if none)."""
        import optuna

        from aloss_tune.backends.optuna import open_existing_storage

        store = open_existing_storage(self.url, study_name)
        try:
            return optuna.load_study(study_name=study_name, storage=store)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
            known = ", ".join(names) if names else "none"
            raise UsageError(f"no study named {study_name!r} in this storage; studies there: {known}.") from None


@dataclass
class KerasTunerBackend:
    """KerasTuner: a project under ``directory`` (default ``kt_projects``), searched by the space's
    ``search.tuner`` (random, bayesian or hyperband) unless ``tuner`` overrides it."""

    directory: str | Path | None = None
    tuner: str | None = None
    name: str = "keras-tuner"

    def check(self, space: SearchSpace) -> None:
        _load_keras()
        from aloss_tune.backends import keras_tuner as kt_backend
        from aloss_tune.backends.keras_tuner._study import project_name_problem

        problem = project_name_problem(space.study)
        if problem is not None:
            raise ConfigError(f"{space.source}: study: {problem}" if space.source else f"study: {problem}")
        kt_backend.check_directory(self.directory)

    def run(self, space: SearchSpace, ctx: TrialContext, *, settings: TrackingSettings | None,
            progress: bool, trial_log: Any, after_study: Callable[[Any], Path | None] | None) -> TuneResult:
        _load_keras()
        from aloss_tune.backends import keras_tuner as kt_backend

        if self.tuner is not None:
            space = space.with_overrides(tuner=self.tuner)
        return kt_backend.tune(space, ctx, settings=settings, directory=self.directory, progress=progress,
                               trial_log=trial_log, after_study=after_study)

    def best(self, study_name: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
        _load_keras()
        from aloss_tune.backends import keras_tuner as kt_backend

        return kt_backend.best_summary(study_name, directory=self.directory, tracking_uri=tracking_uri)

    def records(self, study: Any) -> StudyRecord:
        _load_keras()
        from aloss_tune.backends import keras_tuner as kt_backend

        if isinstance(study, str):
            return kt_backend.project_record(kt_backend.existing_project(study, self.directory))
        return kt_backend.project_record(Path(getattr(study, "project_dir", study)))


def _load_keras() -> None:
    """The KerasTuner backend's package imports KerasTuner, and so Keras: quietly (`aloss_tune.load_keras`)."""
    from aloss_tune import load_keras

    load_keras()


def check_options(space: SearchSpace, backend: str, *, tuner: str | None = None) -> None:
    """Refuse the settings of KerasTuner given to the Optuna backend, which would silently ignore them: the
    ``tuner`` argument (``--tuner``) and ``search.executions_per_trial``. (A space's ``search.tuner`` may stay:
    it has a default and lets one file run on either backend.)"""
    if backend != "optuna":
        return
    if tuner is not None:
        raise UsageError(f"--tuner {tuner}: chooses KerasTuner's tuner, but the backend is optuna, which searches "
                         f"with search.sampler ({space.search.sampler}); add --backend keras-tuner or drop --tuner.")
    runs = space.search.executions_per_trial
    if runs != 1:
        where = f"{space.source}: " if space.source else ""
        raise ConfigError(f"{where}search.executions_per_trial: {runs} applies to the keras-tuner backend only "
                          "(Optuna trains each trial once); remove it, or add --backend keras-tuner.")


def make_backend(name: str, **options: Any) -> Backend:
    """The backend called ``name`` with ``options`` (those of the other backend, left ``None``, are ignored).

    Optuna takes ``storage``, ``heartbeat_interval``, ``retries``, ``reclaim``; KerasTuner ``directory`` and
    ``tuner``.
    """
    own = {"optuna": ("storage", "heartbeat_interval", "retries", "reclaim"),
           "keras-tuner": ("directory", "tuner")}
    if name not in own:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, but got {name!r}.")
    kwargs = {k: v for k, v in options.items() if k in own[name]}
    return OptunaBackend(**kwargs) if name == "optuna" else KerasTunerBackend(**kwargs)
