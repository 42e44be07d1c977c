"""The Optuna backend: a space becomes a define-by-run objective; Optuna's storage coordinates workers.

Search names are qualified by the loss they belong to (``loss.huber.delta``), so two losses may share a
parameter name with different domains (``alpha`` of ``barron`` and of ``focal``). Each trial also stores its
flat params dict (``loss.delta``; the vocabulary of `aloss_tune.build_loss`) as the user attribute
``aloss_tune.params``, with its loss config, history, MLflow run id and the worker (``host:pid``) that ran it.

Many workers, on one machine or many, share a study through its RDB storage (PostgreSQL for many machines).
With heartbeats on, each running trial records a heartbeat every ``heartbeat_interval`` seconds; a live
worker that starts a trial first fails every trial whose heartbeat is older than ``grace_period``
(Optuna's ``fail_stale_trials``), ends that trial's MLflow run as FAILED ("worker lost") and, if asked,
queues a retry with the same params (Optuna's ``RetryHeartbeatStaleTrialCallback``), which the next free
worker runs under a new trial number. Heartbeats are on by default (`DEFAULT_HEARTBEAT_INTERVAL`) whenever
the study may be shared: a storage other than SQLite, or several local workers. Without heartbeats, a trial
left RUNNING by a process of this machine that is gone is failed when the next command starts on the study
(`reclaim_running`).

The samplers are reseeded before each trial from the study's seed and the trial's number
(`_SeededPerTrial`), so resumed studies and workers sharing one never propose the params of another trial.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import optuna

from aloss_tune._filelock import store_lock
from aloss_tune._schema import (  # noqa: F401 - the attribute names are also read from here
    BASELINE_ATTR,
    CONFIG_ATTR,
    DEAD_ATTR,
    DEFAULT_STORAGE,
    ERROR_ATTR,
    HEARTBEAT_ATTR,
    HISTORY_ATTR,
    OBJECTIVE_ATTR,
    PARAMS_ATTR,
    RUN_ATTR,
    SEED_ATTR,
    SPACE_ATTR,
    STUDY_ID_ATTR,
    TARGET_SCALE_ATTR,
    WORKER_ATTR,
)
from aloss_tune._sqlite import use_wal
from aloss_tune._urls import redact_text, redact_url
from aloss_tune.backends.base import StudyRecord, TrialRecord
from aloss_tune.backends.pruning import FamilyMedianPruner, asks_at, default_warmup
from aloss_tune.distributions import Categorical, Distribution, Float, Int
from aloss_tune.errors import ConfigError, TrialDead, TrialFailed, UsageError
from aloss_tune.lifecycle import (
    MAX_CONSECUTIVE_FAILURES,
    SAME_CONFIG_ERROR_STOP,
    check_outcomes,
    finish_interrupted,
    located,
    start_run,
    training_seed,
)
from aloss_tune.space import SearchSpace
from aloss_tune.states import final_state, ordered_counts
from aloss_tune.tracking import StudyTracker, worker_id

if TYPE_CHECKING:  # the runner (Keras) loads with the first trial: reading a study back needs none
    from aloss_tune.runner import TrialContext

DEFAULT_HEARTBEAT_INTERVAL = 60  # seconds; the grace period defaults to twice this
LOST_WORKER = "worker lost (no heartbeat)"
GONE = "left RUNNING by a process that is gone"

_log = logging.getLogger("aloss_tune.optuna")
# Set once this process has begun ending its study after an interrupt: a worker's signal handler then
# ignores further signals rather than cut short the ending of its trial and runs (`aloss_tune.workers`).
STOPPING = threading.Event()


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
    def conditional(self, parent: str, values: tuple[Any, ...]) -> Iterator[None]:
        yield


_SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "grid": "GridSampler"}
_PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}


def _check_args(space: SearchSpace, key: str, cls: Any, args: Mapping[str, Any],
                reserved: tuple[str, ...]) -> None:
    """`ConfigError` at ``search.<key>.<arg>`` for an argument ``cls`` does not take (or that we set)."""
    import inspect

    where = f"{space.source}: " if space.source else ""
    taken = [name for name, p in inspect.signature(cls).parameters.items()
             if name not in ("self", "search_space", *reserved) and p.kind is not p.VAR_KEYWORD]
    for name in args:
        if name in reserved:
            raise ConfigError(f"{where}search.{key}.{name}: set by aloss-tune (the seed is search.seed).")
        if name not in taken:
            owner = "optuna's " if cls.__module__.startswith("optuna") else ""
            raise ConfigError(f"{where}search.{key}.{name}: unknown argument of {owner}{cls.__name__} "
                              f"(allowed: {', '.join(taken) or 'none'}).")


def check_search(space: SearchSpace) -> None:
    """Build the space's sampler and pruner once (no storage touched): bad arguments fail here."""
    make_sampler(space)
    make_pruner(space)


def trial_seed(seed: int, number: int) -> int:
    """The seed of the sampler's random streams for trial ``number`` of a study seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class _SeededPerTrial:
    """Reseeds the sampler's random streams before each trial from ``(seed, trial number)``.

    A sampler seeded once draws the same sequence in every process: a resumed study (same seed, a new
    process) would propose again the params of its first trials (TPE's start-up trials are random draws),
    and processes sharing a study would propose the same params as each other. Seeding each trial from its
    number, which the storage hands out once per study, makes trial n's draw the same in a fresh study
    (reproducible) and different from every other trial's, whichever process runs it. (TPE's later trials
    also depend on the trials already finished, as they should.)
    """

    _seed: int

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = trial_seed(self._seed, trial.number)
        for name in ("_rng", "_cma_rng"):
            state = getattr(self, name, None)
            if state is not None:
                state.rng.seed(value)
        for name in ("_random_sampler", "_independent_sampler"):
            inner = getattr(self, name, None)
            if isinstance(inner, optuna.samplers.RandomSampler):
                inner._rng.rng.seed(value)
        super().before_trial(study, trial)  # type: ignore[misc]


class SeededTPESampler(_SeededPerTrial, optuna.samplers.TPESampler):
    """`optuna.samplers.TPESampler` reseeded per trial (`_SeededPerTrial`)."""

    def __init__(self, *, seed: int, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self._seed = seed


class SeededRandomSampler(_SeededPerTrial, optuna.samplers.RandomSampler):
    """`optuna.samplers.RandomSampler` reseeded per trial (`_SeededPerTrial`)."""

    def __init__(self, *, seed: int, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self._seed = seed


class SeededCmaEsSampler(_SeededPerTrial, optuna.samplers.CmaEsSampler):
    """`optuna.samplers.CmaEsSampler` reseeded per trial (`_SeededPerTrial`)."""

    def __init__(self, *, seed: int, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self._seed = seed


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The space's sampler, seeded per trial (see `_SeededPerTrial`); the grid sampler as Optuna makes it
    (it never proposes a point already run, in any process)."""
    search = space.search
    args = dict(search.sampler_args)
    seed = search.seed
    _check_args(space, "sampler", getattr(optuna.samplers, _SAMPLERS[search.sampler]), args, ("seed",))
    try:
        if search.sampler == "tpe":
            args.setdefault("multivariate", True)
            args.setdefault("group", True)  # conditional (per-loss) parameters
            with _quiet_experimental():
                return SeededTPESampler(seed=seed, **args)
        if search.sampler == "random":
            return SeededRandomSampler(seed=seed, **args)
        if search.sampler == "cmaes":
            # CMA-ES handles the numeric parameters; the loss choice falls to its independent sampler.
            args.setdefault("warn_independent_sampling", False)
            return SeededCmaEsSampler(seed=seed, **args)
        grid = {}
        for name, dist in space.search_params().items():
            grid[name] = list(_grid_values(dist))
        return optuna.samplers.GridSampler(grid, seed=seed, **args)
    except (TypeError, ValueError) as exc:
        where = f"{space.source}: " if space.source else ""
        raise ConfigError(f"{where}search.sampler: {search.sampler} refuses {dict(search.sampler_args)} "
                          f"({' '.join(str(exc).split())}).") from None


def _grid_values(dist: Distribution) -> list[Any]:
    if isinstance(dist, Categorical):
        return list(dist.choices)
    if isinstance(dist, Int):
        return list(range(dist.low, dist.high + 1, dist.step))
    n = int(round((dist.high - dist.low) / dist.step)) + 1  # type: ignore[operator]
    return [dist.low + i * dist.step for i in range(n)]  # type: ignore[operator]


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The space's pruner. ``median`` compares a trial with the completed trials of its own loss only, from two
    of them on and after a quarter of the epochs (`aloss_tune.backends.pruning.FamilyMedianPruner`)."""
    search = space.search
    args = dict(search.pruner_args)
    cls = FamilyMedianPruner if search.pruner == "median" else getattr(optuna.pruners, _PRUNERS[search.pruner])
    _check_args(space, "pruner", cls, args, ())
    try:
        if search.pruner == "median":
            args.setdefault("n_startup_trials", 2)
            args.setdefault("n_warmup_steps", default_warmup(space.training.epochs))
            return FamilyMedianPruner(**args)
        if search.pruner == "hyperband":
            args.setdefault("min_resource", 1)
            args.setdefault("max_resource", space.training.epochs)
            return optuna.pruners.HyperbandPruner(**args)
        return optuna.pruners.NopPruner()
    except (TypeError, ValueError) as exc:
        where = f"{space.source}: " if space.source else ""
        raise ConfigError(f"{where}search.pruner: {search.pruner} refuses {dict(search.pruner_args)} "
                          f"({' '.join(str(exc).split())}).") from None


def default_heartbeat(url: str, *, workers: int = 1) -> int | None:
    """The heartbeat interval used when none is given: on when the study may be shared, else off.

    Shared means several local workers, or a storage other than SQLite (a database server is there to be
    shared by many machines). A single process on a SQLite file gets no heartbeat thread.
    """
    if workers > 1 or not url.startswith("sqlite"):
        return DEFAULT_HEARTBEAT_INTERVAL
    return None


@dataclass(frozen=True)
class StorageOptions:
    """How workers share a study. Heartbeats let a live worker fail (or retry) trials of a dead one.

    Attributes:
        url: an RDB URL (``sqlite:///aloss_tune.db``, ``postgresql+psycopg2://user:pw@host/db``).
        heartbeat_interval: seconds between a running trial's heartbeats; ``None`` for `default_heartbeat`,
            ``0`` for none.
        grace_period: seconds without a heartbeat after which a trial counts as lost (default: twice the
            interval); it must exceed the longest stall of a live worker.
        retries: how many times a lost trial is queued again with the same params.
    """

    url: str = DEFAULT_STORAGE
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    retries: int = 0

    @property
    def heartbeat(self) -> int | None:
        """The heartbeat interval in effect (``None``: off)."""
        if self.heartbeat_interval is None:
            return default_heartbeat(self.url)
        return self.heartbeat_interval or None


StaleTrialHook = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class _OnStaleTrial:
    """Optuna's heartbeat-stale callback: tell the tracker the trial is lost, then queue its retry.

    Runs inside a live worker's ``study.optimize``; an error here must not stop that worker.
    """

    def __init__(self, retries: int, hook: StaleTrialHook | None):
        self.retries = retries
        self.retry = None
        if retries:
            with _quiet_experimental():
                self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
        self.hook = hook

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        attempts = len(trial.system_attrs.get("retry_history", [])) + 1  # this one included
        retried = attempts <= self.retries
        _log.warning("trial %d: %s; %s.", trial.number, LOST_WORKER,
                     f"queued for retry {attempts} of {self.retries}" if retried else "marked failed")
        if self.hook is not None:
            try:
                self.hook(study, trial)
            except Exception as exc:  # noqa: BLE001 - bookkeeping must not stop a live worker
                _log.warning("trial %d: could not record the lost worker (%s).", trial.number,
                             redact_text(str(exc)))
        if self.retry is not None:
            try:
                self.retry(study, trial)
            except Exception as exc:  # noqa: BLE001 - as above; the trial stays failed
                _log.warning("trial %d: could not queue its retry (%s).", trial.number, redact_text(str(exc)))


_URL_EXAMPLES = "e.g. sqlite:///aloss_tune.db or postgresql+psycopg2://user@host/db"


def check_storage_url(url: str) -> None:
    """`UsageError` unless ``url`` is a database URL of a known kind (nothing is opened or created)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UsageError(f"storage: {shown!r} is not a valid database URL ({_URL_EXAMPLES}).") from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise UsageError(f"storage: {shown!r} names no known database kind ({parsed.drivername!r}); "
                         f"{_URL_EXAMPLES}.") from None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for another database or an in-memory one)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return None if not database or database == ":memory:" else Path(database)


# The tables every Optuna storage holds (and an MLflow tracking store's, to say what a wrong file is).
OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
_MLFLOW_TABLES = frozenset({"experiments", "runs", "metrics"})


def open_existing_storage(url: str, study_name: str) -> optuna.storages.BaseStorage:
    """Open a storage for reading only (``best``, ``report``, ``load_best_loss``): nothing is created or
    written, whatever the URL points at.

    A SQLite file is opened read-only (SQLite's ``mode=ro``); a file that does not exist, an empty file and a
    database without Optuna's tables (an MLflow tracking store given by mistake) are each one `UsageError`,
    where opening them for writing would create Optuna's tables in them.
    """
    check_storage_url(url)
    shown = redact_url(url)
    path = sqlite_file(url)
    read_url = url
    if path is not None:
        if not path.exists():
            raise UsageError(f"no study named {study_name!r}: the storage file {path} does not exist "
                             f"(storage {shown}).")
        if path.is_dir():
            raise UsageError(f"storage {shown}: {path} is a folder, not an Optuna storage file.")
        if path.stat().st_size == 0:
            raise UsageError(f"storage {shown}: {path} is an empty file, not an Optuna storage.")
        read_url = "sqlite:///file:" + quote(str(path.resolve())) + "?mode=ro&uri=true"
    _check_optuna_tables(read_url, shown)
    try:
        with _quiet_experimental():
            return optuna.storages.RDBStorage(read_url, skip_table_creation=True)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors of every kind
        raise UsageError(f"cannot open the Optuna storage {shown}: {_first_line(exc, url)}") from None


def _check_optuna_tables(url: str, shown: str | None) -> None:
    """`UsageError` unless the database at ``url`` holds Optuna's tables (read with SQLAlchemy's inspector)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - not a database file, unreachable server, ...
        raise UsageError(f"cannot open the Optuna storage {shown}: {_first_line(exc, url)}") from None
    if not OPTUNA_TABLES <= tables:
        what = ("an MLflow tracking store" if _MLFLOW_TABLES <= tables else
                "an empty database" if not tables else "a database of something else")
        raise UsageError(f"storage {shown} is not an Optuna storage: it holds no Optuna tables (it looks like "
                         f"{what}); give the storage the study ran on (--storage).")


def _first_line(exc: BaseException, url: str) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__, url)


class _SQLiteStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage on a SQLite file, where a queued trial is claimed by one worker only.

    A worker claims a queued (WAITING) trial by reading its state and setting it RUNNING if it still waits;
    other databases lock the row it reads (``SELECT ... FOR UPDATE``), SQLite does not, so two processes
    started together could both read WAITING and both run (and both tell) the same trial ("Cannot tell a
    COMPLETE trial"). Here the read and the write of a claim are made under the file's lock
    (`aloss_tune._filelock.store_lock`), one process at a time.
    """

    def set_trial_state_values(self, trial_id: int, state: optuna.trial.TrialState,
                               values: Any = None) -> bool:
        if state != optuna.trial.TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        with store_lock(self.url):
            return super().set_trial_state_values(trial_id, state, values)


def open_storage(options: StorageOptions, *,
                 on_stale: StaleTrialHook | None = None) -> optuna.storages.BaseStorage:
    """Connect to the Optuna storage now (so an unreachable one fails before training).

    ``on_stale(study, trial)`` is called for each trial of a dead worker that this worker fails.
    """
    url = options.url
    check_storage_url(url)
    kwargs: dict[str, Any] = {}
    interval = options.heartbeat
    if interval:
        kwargs["heartbeat_interval"] = interval
        kwargs["grace_period"] = options.grace_period or 2 * interval
        kwargs["heartbeat_stale_trial_callback"] = _OnStaleTrial(options.retries, on_stale)
    try:
        with _quiet_experimental():
            if url.startswith("sqlite:"):
                use_wal(url)  # a commit per epoch and per attribute: without an fsync each
                engine: dict[str, Any] = {"connect_args": {"timeout": 60}}
                with store_lock(url):  # a fresh file gets its tables once, whoever opens it at the same time
                    return _SQLiteStorage(url, engine_kwargs=engine, **kwargs)
            if "://" in url:
                engine = {"pool_pre_ping": True}
                if url.startswith("postgresql"):
                    engine["connect_args"] = {"connect_timeout": 10}
                # Workers started together on an empty database create Optuna's tables one at a time.
                with store_lock(url, connect_args=engine.get("connect_args")):
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors of every kind
        reason = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
        raise UsageError(f"cannot open the Optuna storage {redact_url(url)}: {reason}") from None
    raise UsageError(f"storage: {redact_url(url)!r} is not a database URL (e.g. sqlite:///aloss_tune.db, "
                     "postgresql+psycopg2://user@host/db).")


def create_study(space: SearchSpace, storage: optuna.storages.BaseStorage, study_name: str,
                 direction: str) -> optuna.Study:
    """Create the study, or load it if it exists (a rerun resumes).

    The worker that creates the study gives it its id (`STUDY_ID_ATTR`, read back by `study_key`).
    """
    try:
        study_id = storage.create_new_study([optuna.study.StudyDirection[direction.upper()]], study_name)
    except optuna.exceptions.DuplicatedStudyError:  # it exists: resume (or join) it
        pass
    except ValueError as exc:
        raise UsageError(f"study {study_name!r}: {exc}") from None
    else:
        storage.set_study_user_attr(study_id, STUDY_ID_ATTR, uuid.uuid4().hex)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=make_sampler(space),
                              pruner=make_pruner(space))
    if study.direction.name.lower() != direction:
        raise UsageError(
            f"study {study_name!r} exists with direction {study.direction.name.lower()}, but the space asks to "
            f"{direction}; use another study name."
        )
    return study


def enqueue_first_round(study: optuna.Study, space: SearchSpace, target_scale: float, url: str,
                        limit: int | None = None) -> int:
    """Queue the space's first round (`SearchSpace.first_round`: each loss at its start values) in a new study.

    Only a study without trials gets it (a resumed one has its history), and not under the grid sampler (its
    own schedule). A budget of fewer trials than losses (``limit``) queues the first ``limit`` losses of the
    list, so no queued trial is left waiting when the study ends. Workers starting together on a new study
    look and queue under the storage's lock (`aloss_tune._filelock.store_lock`), so the round is queued once.
    Returns how many trials were queued.
    """
    if not space.search.first_round or space.search.sampler == "grid":
        return 0
    with store_lock(url):
        if study.get_trials(deepcopy=False):
            return 0
        rounds = space.first_round(target_scale)[:limit]
        for params in rounds:
            study.enqueue_trial(params)
    return len(rounds)


def study_key(study: optuna.Study, *, wait: float = 10.0) -> str:
    """The id of ``study`` (`STUDY_ID_ATTR`): what its MLflow parent run is found by, whatever the study's
    name and the URL its storage is reached by.

    A study created a moment ago by another worker gets its id just after it is created (waited for up to
    ``wait`` seconds). A study created before studies had ids gets one made from what its storage holds
    (its number in the storage, its name, when its first trial started), the same for every worker.
    """
    deadline = time.monotonic() + wait
    attrs = study.user_attrs
    while STUDY_ID_ATTR not in attrs and SPACE_ATTR not in attrs and time.monotonic() < deadline:
        time.sleep(0.1)  # created just now by another worker, which is about to give it its id
        attrs = study._storage.get_study_user_attrs(study._study_id)
    if STUDY_ID_ATTR in attrs:
        return str(attrs[STUDY_ID_ATTR])
    first = study.get_trials(deepcopy=False)[:1]
    started = first[0].datetime_start.isoformat() if first and first[0].datetime_start else ""
    key = hashlib.sha256(f"{study._study_id}\0{study.study_name}\0{started}".encode()).hexdigest()[:32]
    study.set_user_attr(STUDY_ID_ATTR, key)
    return key


def check_resume(storage: optuna.storages.BaseStorage, space: SearchSpace, ctx: TrialContext) -> None:
    """Refuse (`ConfigError`, before anything is written) to resume a study with another objective or another
    loss list than it was run with: its trials would be ranked on two metrics at once, or every trial would
    fail (Optuna does not let a categorical parameter change its choices)."""
    try:
        study_id = storage.get_study_id_from_name(space.study)
    except KeyError:  # a new study
        return
    attrs = storage.get_study_user_attrs(study_id)
    where = f"{space.source}: " if space.source else ""
    stored = attrs.get(OBJECTIVE_ATTR) or {}
    if stored.get("metric") not in (None, ctx.objective.metric):
        raise ConfigError(
            f"{where}objective.metric: study {space.study!r} was run with objective {stored['metric']}, not "
            f"{ctx.objective.metric}: resuming it would rank values of both metrics together; keep "
            f"{stored['metric']} or use another study name (--study).")
    losses = ((attrs.get(SPACE_ATTR) or {}).get("loss") or {}).get("choices")
    if losses is not None and list(losses) != list(space.losses):
        raise ConfigError(
            f"{where}loss.choices: study {space.study!r} was run with losses [{', '.join(losses)}], not "
            f"[{', '.join(space.losses)}]: a resumed study keeps its loss list (in its order); keep it or use "
            "another study name (--study).")


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


class Objective:
    """The define-by-run objective: sample, track, train, report each epoch for pruning, return the value."""

    def __init__(self, ctx: TrialContext, tracker: StudyTracker | None, *, seed: int,
                 heartbeat: bool = False, keeper: Any = None):
        self.ctx = ctx
        self.tracker = tracker
        self.seed = seed
        self.config_errors: dict[int, str] = {}  # trial number -> the ConfigError that failed it
        self.heartbeat = heartbeat
        self.keeper = keeper  # an aloss_tune.best_model.BestWeights when the best model is to be logged
        self.baseline = ctx.baseline_value()

    def __call__(self, trial: optuna.Trial) -> float:
        ctx = self.ctx
        params = ctx.space.sample(OptunaSuggester(trial), ctx.target_scale)
        seed = training_seed(self.seed, trial.number)
        # A retry of a lost trial (same params, new number) inherits the lost trial's attributes.
        retry_of = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
        # The run first (its creation is queued, not awaited): a trial stopped from here on ends its run.
        run = start_run(self.tracker, trial.number, params, seed, retry_of=retry_of)
        recorded = False

        def record_run() -> None:
            """Store the run's id on the trial as soon as the background sender has created it."""
            nonlocal recorded
            if run is not None and run.run_id is not None and not recorded:
                trial.set_user_attr(RUN_ATTR, run.run_id)
                recorded = True

        metric = ctx.objective.metric
        pruner = trial.study.pruner

        def report(epoch: int, metrics: dict[str, float]) -> None:
            if run is not None:
                run.log_epoch(epoch, metrics)
                record_run()
            value = metrics.get(metric)
            if value is not None and value == value:  # not NaN
                trial.report(value, epoch)  # every epoch: the study's intermediate values, the dashboard's curve
                # Asking reads the study's trials from the storage: only at a step where the pruner may prune.
                if asks_at(pruner, epoch) and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric}={value:.6g})")

        try:
            trial.set_user_attr(PARAMS_ATTR, params)
            trial.set_user_attr(SEED_ATTR, seed)
            trial.set_user_attr(WORKER_ATTR, worker_id())
            trial.set_user_attr(HEARTBEAT_ATTR, self.heartbeat)  # how a lost worker's trial will be found
            if retry_of is not None:
                trial.set_user_attr(RUN_ATTR, None)  # not the lost trial's run
            from aloss_tune.runner import run_trial, train

            model = None
            if self.keeper is None:
                outcome = run_trial(ctx, params, seed=seed, reporters=[report])
            else:  # the model comes back at its best epoch, to be kept if it is this worker's best
                model, outcome = train(ctx, params, seed=seed, reporters=[report],
                                       callbacks=[self.keeper.callback()])
        except TrialDead as dead:
            # Not learning: PRUNED (TPE ranks pruned trials below every complete one), and marked as dead.
            trial.set_user_attr(DEAD_ATTR, dead.record())
            trial.set_user_attr(HISTORY_ATTR, dead.history)
            if run is not None:
                run.finish("dead")
                record_run()
            raise optuna.TrialPruned(str(dead)) from None
        except optuna.TrialPruned:
            if run is not None:
                run.finish("pruned")
                record_run()
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr(ERROR_ATTR, message[:2000])
            if run is not None:
                run.finish("failed", error=traceback.format_exc())
                record_run()
            if isinstance(exc, ConfigError):
                self.config_errors[trial.number] = located(exc, ctx.space)
            if isinstance(exc, (TrialFailed, ConfigError)):
                raise
            raise TrialFailed(message) from exc
        except BaseException:  # interrupted (Ctrl-C, SystemExit): never leave the run RUNNING
            STOPPING.set()
            finish_interrupted(run)
            if run is not None:
                with contextlib.suppress(Exception):  # the interrupt goes on whatever the storage says
                    record_run()  # interrupted before its first epoch: the run was created just now
            raise
        trial.set_user_attr(CONFIG_ATTR, outcome.loss_config)
        trial.set_user_attr(HISTORY_ATTR, outcome.history)
        if run is not None:
            state = final_state("complete", outcome.value, self.baseline, ctx.objective.direction)
            run.finish(state, objective=outcome.value, loss_config=outcome.loss_config, status="FINISHED")
            record_run()
        if model is not None:
            self.keeper.offer(trial.number, outcome.value, params, model, None if run is None else run.run_id)
        return outcome.value


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The best finished trial as ``{number, value, params, loss_config}``, or ``None``."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    space = study.user_attrs.get(SPACE_ATTR) or {}
    optimizer = space.get("optimizer")
    return {
        "number": best.number,
        "value": best.value,
        "params": best.user_attrs.get(PARAMS_ATTR, {}),
        "loss_config": best.user_attrs.get(CONFIG_ATTR),
        "optimizer": optimizer.get("name", "adam") if isinstance(optimizer, dict) else (optimizer or "adam"),
        "model": space.get("model"),
        "data": space.get("data"),
    }


def study_record(study: optuna.Study) -> StudyRecord:
    """The study as a backend-neutral `StudyRecord` (what reports draw from): every trial's flat params,
    searched values and ranges, history, loss config and fate, from the attributes aloss-tune stores."""
    attrs = study.user_attrs
    objective = attrs.get(OBJECTIVE_ATTR) or {}
    space = attrs.get(SPACE_ATTR) or {}
    states = {**_STATE_NAMES, optuna.trial.TrialState.RUNNING: "running",
              optuna.trial.TrialState.WAITING: "waiting"}
    metric = objective.get("metric") or "objective"
    trials = []
    for trial in study.get_trials(deepcopy=False):
        history = {str(k): list(v) for k, v in (trial.user_attrs.get(HISTORY_ATTR) or {}).items()}
        value = trial.value if trial.values is not None and len(trial.values) == 1 else None
        stopped = trial.user_attrs.get(DEAD_ATTR)
        if stopped is not None and value is None:
            value = stopped.get("best")
        trials.append(TrialRecord(
            number=trial.number, state=states[trial.state], value=value,
            params=dict(trial.user_attrs.get(PARAMS_ATTR) or {}), search_params=dict(trial.params),
            distributions={k: distribution_dict(d) for k, d in trial.distributions.items()}, history=history,
            loss_config=trial.user_attrs.get(CONFIG_ATTR), seed=trial.user_attrs.get(SEED_ATTR),
            duration_s=trial.duration.total_seconds() if trial.duration is not None else None,
            epochs=len(history.get(metric) or ()) or len(trial.intermediate_values),
            error=trial.user_attrs.get(ERROR_ATTR), run_id=trial.user_attrs.get(RUN_ATTR),
            stopped_dead=stopped is not None,
        ))
    scale = attrs.get(TARGET_SCALE_ATTR)
    baseline = attrs.get(BASELINE_ATTR)
    return StudyRecord(
        name=study.study_name, backend="optuna", metric=metric,
        direction=objective.get("direction") or study.direction.name.lower(), trials=tuple(trials),
        losses=tuple((space.get("loss") or {}).get("choices") or ()),
        baseline=None if baseline is None else float(baseline), target_scale=None if scale is None else float(scale),
        space=space,
    )


def _record_or_none(study: optuna.Study) -> StudyRecord | None:
    """`study_record`, or ``None`` with a warning: reading the study back must not fail its end."""
    try:
        return study_record(study)
    except Exception as exc:  # noqa: BLE001 - a storage error; the trials themselves are stored
        _log.warning("could not read the study back for its report (%s).", redact_text(str(exc)))
        return None


def distribution_dict(dist: optuna.distributions.BaseDistribution) -> dict[str, Any]:
    """An Optuna distribution in the space's dict form (``{type, low, high, log, step}``,
    ``{type: categorical, choices}``)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return {"type": "categorical", "choices": list(dist.choices)}
    if isinstance(dist, optuna.distributions.IntDistribution):
        return {"type": "int", "low": dist.low, "high": dist.high, "log": dist.log, "step": dist.step}
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return {"type": "float", "low": dist.low, "high": dist.high, "log": dist.log, "step": dist.step}
    raise TypeError(f"unknown Optuna distribution {type(dist).__name__}")


def state_counts(study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None) -> dict[str, int]:
    """``{"complete": n, "dead": n, "pruned": n, "failed": n}`` over the study's trials (`trial_state`), and
    ``"running": n`` when some are still running (in other processes, or left so by a process that is gone).
    ``trials``: the study's trials, when just read."""
    baseline, direction = study_baseline(study)
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False) if trials is None else trials:
        if trial.state == optuna.trial.TrialState.WAITING:
            continue
        name = trial_state(trial, baseline, direction)
        counts[name] = counts.get(name, 0) + 1
    return ordered_counts(counts)


def study_baseline(study: optuna.Study) -> tuple[float | None, str]:
    """The study's baseline (the objective of a constant predictor, or ``None``) and its direction."""
    baseline = study.user_attrs.get(BASELINE_ATTR)
    return (None if baseline is None else float(baseline)), study.direction.name.lower()


def trial_state(trial: optuna.trial.FrozenTrial, baseline: float | None, direction: str) -> str:
    """How a trial is counted (`aloss_tune.states`): ``complete``, ``dead`` (stopped as not learning, or
    complete with an objective no better than ``baseline``), ``pruned``, ``failed`` or ``running``."""
    if trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs.get(DEAD_ATTR) is not None:
        return "dead"
    name = _STATE_NAMES.get(trial.state, trial.state.name.lower())
    return final_state(name, trial.value if name == "complete" else None, baseline, direction)


def end_lost_runs(study: optuna.Study, tracker: StudyTracker) -> int:
    """End the MLflow runs of finished trials that their worker left ``RUNNING``; returns how many.

    A worker ends a trial's run before it tells Optuna the trial's state, so a run still ``RUNNING`` whose
    trial has finished belongs to a worker that died (its trial failed by a heartbeat) or that lost the
    tracking server. Trial states are read before the runs, so a run ended meanwhile is not touched.
    """
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    running = tracker.running_trials()
    baseline, direction = study_baseline(study)
    ended = 0
    for run_id, number in (running or {}).items():
        trial = trials.get(number)
        if trial is None or not trial.state.is_finished():
            continue
        state = trial_state(trial, baseline, direction)
        error = None
        if trial.state == optuna.trial.TrialState.FAIL:
            error = trial.user_attrs.get(ERROR_ATTR) or _lost_message(trial)
        objective = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        ended += tracker.end_lost_run(run_id, state, objective=objective, error=error,
                                      status=_STATUS[trial.state])
    return ended


_STATE_NAMES = {
    optuna.trial.TrialState.COMPLETE: "complete",
    optuna.trial.TrialState.PRUNED: "pruned",
    optuna.trial.TrialState.FAIL: "failed",
}
# The MLflow status of a trial's run by the trial's Optuna state (a dead trial: KILLED if it was stopped,
# FINISHED if it completed).
_STATUS = {
    optuna.trial.TrialState.COMPLETE: "FINISHED",
    optuna.trial.TrialState.PRUNED: "KILLED",
    optuna.trial.TrialState.FAIL: "FAILED",
}


def reclaim_running(study: optuna.Study, tracker: StudyTracker | None, *, everything: bool = False,
                    heartbeat: bool = False) -> list[int]:
    """Fail the trials left RUNNING by processes that are gone, end their MLflow runs; returns their numbers.

    Without heartbeats nothing tells a trial of a killed process from a running one, so when a command starts:

    * a trial whose worker (``host:pid``) is a process of this machine that has ended is failed (a live
      process, even a sibling worker, is never touched);
    * a trial of another machine, or of a live process, is only reported (with how many there are), unless
      ``everything`` (``--reclaim``: the user knows that nothing else runs the study) fails it too;
    * with ``heartbeat`` on, a trial that was running with heartbeats is left to them (its retry included).
    """
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    gone, others = [], []
    for trial in trials:
        if everything:
            gone.append(trial)
        elif heartbeat and trial.user_attrs.get(HEARTBEAT_ATTR):
            continue
        elif process_gone(trial.user_attrs.get(WORKER_ATTR)):
            gone.append(trial)
        else:
            others.append(trial)
    how = "marked failed by --reclaim" if everything else "marked failed"
    failed = [t.number for t in gone if _fail_left_running(study, t, tracker, how)]
    if failed:
        _log.warning("%s left RUNNING %s: %s; marked FAIL%s.", _trials(len(failed)),
                     "when this command started" if everything else "by a process that is gone",
                     ", ".join(f"#{n}" for n in failed), " (--reclaim)" if everything else "")
    if others:
        _log.warning("%s still RUNNING: %s, in other processes or on other machines; if none of them runs "
                     "any more, rerun with --reclaim to mark them failed.", _trials(len(others)),
                     ", ".join(f"#{t.number}" for t in others))
    return failed


def _trials(n: int) -> str:
    return f"{n} trial" + ("" if n == 1 else "s")


def process_gone(worker: str | None) -> bool:
    """Whether ``worker`` (``host:pid``) is a process of this machine that has ended (unknown: ``False``)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != worker_id().rpartition(":")[0] or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's)
        return False
    try:  # a killed process its parent has not reaped yet
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _fail_left_running(study: optuna.Study, trial: optuna.trial.FrozenTrial, tracker: StudyTracker | None,
                       how: str) -> bool:
    """Mark one trial left RUNNING as failed (unless it finished meanwhile) and end its MLflow run."""
    worker = trial.user_attrs.get(WORKER_ATTR, "unknown")
    reason = "when a command started" if how.endswith("--reclaim") else GONE
    message = f"trial {trial.number} {reason} (worker {worker}); {how}."
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, message)
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # its process was alive after all, and finished it
        return False
    run_id = trial.user_attrs.get(RUN_ATTR)
    if tracker is not None and run_id:
        tracker.end_lost_run(run_id, "failed", error=message)
    return True


class _OneLinePerFailure(logging.Filter):
    """Optuna logs a failed trial with its params and full traceback, then its value on a second line.

    Keep one line, ``trial N failed: <exception type>: <message>``: the traceback is in the trial run's
    ``error.txt`` (MLflow) and the message in the trial's ``aloss_tune.error`` attribute.
    """

    FAILED = re.compile(r"Trial (\d+) failed with (parameters|value)")

    silent = False  # True while a progress line per trial (`aloss_tune.progress.TrialLog`) says it already

    def filter(self, record: logging.LogRecord) -> bool:
        found = self.FAILED.match(str(record.msg))
        if found is None:
            return True
        if _OneLinePerFailure.silent:
            return False
        if found.group(2) == "value" or record.exc_info is None or record.exc_info[1] is None:
            return found.group(2) != "value"
        exc = record.exc_info[1]
        text = " ".join(str(exc).split())
        if isinstance(exc, KeyboardInterrupt):
            text = "interrupted" + (f" ({text})" if text else "")
        elif not isinstance(exc, TrialFailed):  # a TrialFailed message names the original error already
            text = f"{type(exc).__name__}: {text}"
        record.msg, record.args = "trial %s failed: %s", (found.group(1), text[:500])
        record.exc_info = record.exc_text = None
        return True


@contextlib.contextmanager
def _failures_told_by(trial_log: Any) -> Iterator[None]:
    """While a `TrialLog` writes a line per trial, failed trials are not logged a second time."""
    saved = _OneLinePerFailure.silent
    _OneLinePerFailure.silent = trial_log is not None
    try:
        yield
    finally:
        _OneLinePerFailure.silent = saved


def quiet_failed_trials() -> None:
    """Install `_OneLinePerFailure` on Optuna's optimize logger (once)."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _OneLinePerFailure) for f in logger.filters):
        logger.addFilter(_OneLinePerFailure())


def _reclaim(study: optuna.Study, tracker: StudyTracker | None, *, fail_stale: bool) -> None:
    """Fail trials of dead workers (``fail_stale``) and end lost runs; a failure here is only logged."""
    try:
        if fail_stale:
            with _quiet_experimental():
                optuna.storages.fail_stale_trials(study)
        if tracker is not None:
            end_lost_runs(study, tracker)
    except Exception as exc:  # noqa: BLE001 - bookkeeping; the study's own results are already stored
        _log.warning("could not check for trials of lost workers (%s).", redact_text(str(exc)))


def _stale_trial_hook(tracker: StudyTracker) -> StaleTrialHook:
    """End a lost trial's run as FAILED as soon as this worker fails the trial (see `_OnStaleTrial`)."""

    def hook(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ATTR)
        if run_id:  # a run its worker ended just before dying is failed too: the trial has no value
            tracker.end_lost_run(run_id, "failed", error=_lost_message(trial), lost=True)

    return hook


def _lost_message(trial: optuna.trial.FrozenTrial) -> str:
    worker = trial.user_attrs.get(WORKER_ATTR, "?")
    return (f"{LOST_WORKER}: worker {worker} stopped sending heartbeats while running trial {trial.number}, "
            "and Optuna marked the trial failed.")


def _trial_loss(trial: optuna.trial.FrozenTrial) -> Any:
    return (trial.user_attrs.get(PARAMS_ATTR) or {}).get("loss", trial.params.get("loss", "?"))


def _after_each_trial(log: Any, tracker: StudyTracker | None, baseline: float | None, direction: str) -> Any:
    """An Optuna callback that, after each finished trial, writes ``log``'s line for it (an
    `aloss_tune.progress.TrialLog` or `TrialBar`) and shows the study's best trial and counts on the MLflow
    parent run (`StudyTracker.record_progress`), from one read of the study's trials."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        best = _best_of(trials, direction)
        if tracker is not None:
            summary = None if best is None else {"number": best.number, "value": best.value,
                                                 "params": best.user_attrs.get(PARAMS_ATTR) or {}}
            tracker.record_progress(summary, state_counts(study, trials))
        if log is None:
            return
        state = trial_state(trial, baseline, direction)
        value = trial.value
        dead = trial.user_attrs.get(DEAD_ATTR)
        if dead is not None and dead.get("best") is not None:  # stopped as dead: its best epoch
            value = dead["best"]
        elif value is None and trial.intermediate_values:  # pruned: its last reported epoch
            value = trial.intermediate_values[max(trial.intermediate_values)]
        log(trial.number, state, _trial_loss(trial), value,
            best=None if best is None else (best.value, best.number),
            best_loss=None if best is None else _trial_loss(best),
            error=trial.user_attrs.get(ERROR_ATTR) if trial.state == optuna.trial.TrialState.FAIL else None)

    return callback


@contextlib.contextmanager
def _still_best(study: optuna.Study, number: int | None, url: str) -> Iterator[bool]:
    """Whether trial ``number`` is the study's best now, under the storage's lock (held within the block)."""
    with store_lock(url):
        try:
            best = study.best_trial.number
        except ValueError:  # no complete trial
            best = None
        yield best is not None and best == number


def _best_of(trials: list[optuna.trial.FrozenTrial], direction: str) -> optuna.trial.FrozenTrial | None:
    """The best complete trial, as `optuna.Study.best_trial` picks it (the first of equal values)."""
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if not done:
        return None
    return (min if direction == "minimize" else max)(done, key=lambda t: t.value)  # type: ignore[arg-type,return-value]


def run_study(space: SearchSpace, ctx: TrialContext, *, storage: StorageOptions, study_name: str,
              n_trials: int | None, timeout: float | None, tracker: StudyTracker | None,
              progress: bool = False, max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES,
              after_study: Any = None, trial_log: Any = None, reclaim: bool | None = False) -> optuna.Study:
    """Run (or resume, or join) ``study_name`` until this worker has done ``n_trials`` or ``timeout``.

    Lost trials are reclaimed on the way: with heartbeats on, trials of dead workers are failed (and
    retried) when this worker starts each trial and once more when it ends, and the MLflow runs of trials
    that finished without their worker ending them are ended (`end_lost_runs`) when it starts and ends.
    Trials left RUNNING by a process that is gone are failed when it starts (`reclaim_running`; ``reclaim``:
    every RUNNING trial; ``None``: no check, the caller made it).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_failed_trials()
    STOPPING.clear()
    hook = _stale_trial_hook(tracker) if tracker is not None else None
    study = create_study(space, open_storage(storage, on_stale=hook), study_name, ctx.objective.direction)
    enqueue_first_round(study, space, ctx.target_scale, storage.url, limit=n_trials)
    if tracker is not None:
        tracker.study_id = study_key(study)
    study.set_user_attr(SPACE_ATTR, space.to_dict())
    study.set_user_attr(OBJECTIVE_ATTR, {"metric": ctx.objective.metric,
                                                 "direction": ctx.objective.direction})
    study.set_user_attr(TARGET_SCALE_ATTR, ctx.target_scale)
    baseline = ctx.baseline_value()
    if baseline is not None:
        study.set_user_attr(BASELINE_ATTR, baseline)
    direction = ctx.objective.direction
    status = "FINISHED"
    failures = {"consecutive": 0}
    keeper = None
    if tracker is not None and tracker.settings.log_model:
        from aloss_tune.best_model import BestWeights

        keeper = BestWeights(ctx.objective.metric, ctx.objective.direction)
    objective = Objective(ctx, tracker, seed=space.search.seed, heartbeat=bool(storage.heartbeat), keeper=keeper)
    # This worker's trials, each as the message of the ConfigError that failed it (None: anything else).
    config_errors: list[str | None] = []
    failed_errors: list[str | None] = []  # the error of each failed trial of this worker

    def stop_on_failures(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        failed = trial.state == optuna.trial.TrialState.FAIL
        error = objective.config_errors.pop(trial.number, None) if failed else None
        config_errors.append(error)
        if failed:
            failed_errors.append(trial.user_attrs.get(ERROR_ATTR))
        same = error is not None and set(config_errors) == {error}
        if same and len(config_errors) >= SAME_CONFIG_ERROR_STOP:
            study.stop()  # every trial so far refused by the same configuration error: raised below
            return
        if trial.state == optuna.trial.TrialState.FAIL:
            failures["consecutive"] += 1
            if failures["consecutive"] >= max_consecutive_failures:
                _log.error("%d trials failed in a row; stopping this worker.", failures["consecutive"])
                study.stop()
        else:
            failures["consecutive"] = 0

    if reclaim is not None:
        reclaim_running(study, tracker, everything=reclaim, heartbeat=bool(storage.heartbeat))
    if tracker is not None:
        # MLflow (its import, the store, the experiment, the parent run) starts while the first trial trains;
        # then the runs that finished trials left RUNNING are ended (a parent made just now has none).
        tracker.start(background=True,
                      then=lambda started: None if started.created_parent else _reclaim(study, started,
                                                                                        fail_stale=False))
    try:
        with _quiet_experimental(), _config_errors_without_traceback(), _failures_told_by(trial_log):
            study.optimize(
                objective, n_trials=n_trials, timeout=timeout,
                catch=(Exception,), callbacks=[stop_on_failures, *(
                    [_after_each_trial(trial_log, tracker, baseline, direction)] if trial_log or tracker else [])],
                gc_after_trial=False,
                show_progress_bar=progress,
            )
    except BaseException:
        STOPPING.set()
        status = "KILLED"
        raise
    finally:
        if status == "FINISHED":
            _reclaim(study, tracker, fail_stale=bool(storage.heartbeat))
        if tracker is not None:
            best = best_summary(study)
            if keeper is not None:
                if status == "FINISHED":
                    from aloss_tune.best_model import log_if_best

                    tracker.best_model = log_if_best(
                        tracker, keeper, best, ctx, register=tracker.settings.register,
                        still_best=lambda: _still_best(study, keeper.number, storage.url))
                keeper.close()
            artifacts = after_study(_record_or_none(study)) if after_study is not None else None
            tracker.close(best=best, status=status, artifacts=artifacts, counts=state_counts(study))
    if config_errors and config_errors[0] is not None and set(config_errors) == {config_errors[0]}:
        raise ConfigError(config_errors[0])
    check_outcomes(failed_errors, ran=len(config_errors))
    return study




class _DropConfigErrorTraceback(logging.Filter):
    """Optuna logs each failed trial with its traceback; a ConfigError's one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConfigError):
            record.exc_info = None
            record.exc_text = None
        return True


@contextlib.contextmanager
def _config_errors_without_traceback() -> Iterator[None]:
    logger = logging.getLogger("optuna.study._optimize")
    drop = _DropConfigErrorTraceback()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
