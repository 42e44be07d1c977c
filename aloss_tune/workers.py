"""Several worker processes on this machine sharing one Optuna study (``aloss-tune tune --workers N``).

Each worker is a fresh interpreter (the ``spawn`` start method: never a fork of a process that has loaded
TensorFlow) that calls `aloss_tune.tune` on the same study and storage; Optuna's RDB storage hands out the
trials, exactly as it does for workers on other machines running the same command. There is no scheduler
here: this module only starts the processes, waits for them and reads the study back.

``n_trials`` is the number of trials this command runs in total: it is split as evenly as possible among
the workers (10 trials on 3 workers: 4, 3 and 3), so the study gains exactly ``n_trials`` trials when no
worker dies. ``timeout`` applies to each worker. A worker that dies (SIGKILL, OOM) does not stop the others;
the trial it was running is failed, and retried if ``retries`` asks for it, by the heartbeat of a live
worker (or of the next run on the study), and its share of trials is not run. Ctrl-C or SIGTERM stops the
workers: each ends its running trial (FAIL) and runs, ignoring further signals while it does; whatever a
worker could not end (the trial of one killed meanwhile, the parent run) is ended by this process.

Heartbeats are on by default here (`aloss_tune.backends.optuna.DEFAULT_HEARTBEAT_INTERVAL`), whatever the
storage. Each worker gets ``cpus // n`` threads for TensorFlow and OpenMP unless the environment sets them,
so that N workers do not each start one thread per core and thrash.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aloss_tune._schema import OBJECTIVE_ATTR
from aloss_tune.errors import AlossTuneError, ConfigError, StudyFailed, UsageError

_log = logging.getLogger("aloss_tune.workers")

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STOP_GRACE_S = 30.0  # how long interrupted workers get to end their trials and runs before they are killed
_ERRORS: Mapping[str, type[AlossTuneError]] = {"ConfigError": ConfigError, "UsageError": UsageError,
                                               "StudyFailed": StudyFailed}


def split_trials(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` split as evenly as possible among at most ``workers`` workers (none gets 0)."""
    workers = max(1, min(workers, n_trials))
    base, extra = divmod(n_trials, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_workers(space: Any, workers: int, *, n_trials: int | None = None, timeout: float | None = None,
                storage: str | None = None, study_name: str | None = None,
                heartbeat_interval: int | None = None, retries: int = 0, tracking: bool = True,
                tracking_uri: str | None = None, mlflow_config: str | Path | None = None,
                threads: int | None = None, reclaim: bool = False, progress: bool | str | None = "lines",
                **tune_kwargs: Any) -> Any:
    """Run one study with ``workers`` processes on this machine; return its `aloss_tune.api.TuneResult`.

    Args:
        space: a YAML path, a dict or a `SearchSpace` (anything given to a worker must pickle: module-level
            functions do, lambdas do not).
        workers: how many processes.
        n_trials: trials in total for this command, split among the workers (default: the space's).
        timeout: each worker stops starting trials after this many seconds.
        storage: the Optuna storage URL shared by the workers (default: ``$ALOSS_TUNE_STORAGE`` or
            ``sqlite:///aloss_tune.db``); a database server (PostgreSQL) for workers on many machines.
        heartbeat_interval: seconds between trial heartbeats (default 60; ``0`` turns heartbeats off).
        retries: how many times a trial of a dead worker is run again.
        threads: threads per worker for TensorFlow and OpenMP (default: CPUs // workers).
        reclaim: mark failed every trial left RUNNING when the command starts (see
            `aloss_tune.backends.optuna.reclaim_running`; by default only those of processes of this machine
            that are gone). Checked once, here, before the workers start.
        progress: ``"lines"`` (default): each worker writes one line per trial it finishes on stderr, the
            line one process writes (`aloss_tune.progress.TrialLog`, the study's best so far included);
            ``False``: nothing. (A bar per worker would overwrite the others', so ``True`` and ``None`` are
            lines too.)
        tracking, tracking_uri, mlflow_config, **tune_kwargs: passed to `aloss_tune.tune` in every worker.

    Raises:
        UsageError: bad options, or an unreachable storage or tracking server (before any worker starts).
        AlossTuneError: a worker stopped with an error (the first one is reported).
    """
    from aloss_tune.backends.base import check_options
    from aloss_tune.backends.optuna import DEFAULT_HEARTBEAT_INTERVAL
    from aloss_tune.best import default_storage
    from aloss_tune.space import load_space

    if workers < 1:
        raise UsageError(f"workers: must be an integer >= 1, but got {workers}.")
    if not tracking and (tune_kwargs.get("log_model") or tune_kwargs.get("register")):
        raise UsageError("log_model: the best model is logged to MLflow, but tracking is off.")
    spec = load_space(space)
    backend = tune_kwargs.get("backend") or spec.search.backend
    if backend != "optuna":
        raise UsageError("--workers needs the optuna backend; KerasTuner distributes a search with its own "
                         "chief/worker mode.")
    url = storage or default_storage()
    if url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite:/")):
        raise UsageError(f"storage: {url!r} lives in one process; workers need a file or a database server.")
    name = study_name or spec.study
    total = n_trials if n_trials is not None else spec.search.n_trials
    shares = split_trials(total, workers)
    if len(shares) < workers:
        _log.warning("%d trials for %d workers: starting %d workers.", total, workers, len(shares))
    if heartbeat_interval is None:
        heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
    check_options(spec, "optuna", tuner=tune_kwargs.get("tuner"))
    ctx = _check_inputs(spec, url, tune_kwargs)
    settings = _check_stores(url, tracking=tracking, tracking_uri=tracking_uri, mlflow_config=mlflow_config,
                             space=spec.with_overrides(study=name), ctx=ctx)
    threads = threads or max(1, available_cpus() // len(shares))
    _reclaim_left_running(name, url, settings, everything=reclaim, heartbeat=bool(heartbeat_interval))
    _queue_first_round(spec.with_overrides(study=name), url, ctx, total)

    common = dict(tune_kwargs, timeout=timeout, storage=url, study_name=name,
                  heartbeat_interval=heartbeat_interval, retries=retries, tracking=tracking,
                  tracking_uri=tracking_uri, mlflow_config=mlflow_config,
                  progress="lines" if progress is not False else False,
                  reclaim=None)  # checked above: a worker must not fail the trial a sibling has just started
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    procs = [
        context.Process(target=_worker_main, name=f"aloss-tune-worker-{i}",
                        args=(i, space, {**common, "n_trials": share}, threads, messages))
        for i, share in enumerate(shares)
    ]
    try:
        reports = _run(procs, messages)
        _check_outcome(procs, reports)  # every worker interrupted (Ctrl-C reaches them first): as below
    except KeyboardInterrupt:
        with _signals_ignored():  # the workers are stopped; what they could not end is ended here
            _reclaim_left_running(name, url, settings, heartbeat=False)
            _end_parent_run(name, url, settings)
        raise
    parent_run_id = next((r["parent_run_id"] for r in reports.values() if r.get("parent_run_id")), None)
    experiment_id = next((r["experiment_id"] for r in reports.values() if r.get("experiment_id")), None)
    result = load_result(name, url, parent_run_id=parent_run_id, experiment_id=experiment_id,
                         tracking_uri=settings.tracking_uri if settings is not None else None)
    # The worker that ran the study's best trial logged its model (aloss_tune.best_model).
    logged = [r for r in reports.values() if r.get("best_model_uri") and r.get("best_trial") == result.best_trial]
    if logged:
        result.best_model_uri, result.registered_model = logged[-1]["best_model_uri"], logged[-1]["registered_model"]
    return result


def _queue_first_round(spec: Any, url: str, ctx: Any, total: int) -> None:
    """Queue a new study's first round for the whole command: each worker would queue at most its own share
    (4 workers of 5 trials each would try 5 of 6 losses first)."""
    from aloss_tune.backends.optuna import StorageOptions, create_study, enqueue_first_round, open_storage

    study = create_study(spec, open_storage(StorageOptions(url=url, heartbeat_interval=0)), spec.study,
                         ctx.objective.direction)
    enqueue_first_round(study, spec, ctx.target_scale, url, limit=total)


def _check_inputs(spec: Any, url: str, tune_kwargs: Mapping[str, Any]) -> Any:
    """What each worker's `aloss_tune.tune` checks first (data, model, optimizer, sampler, pruner, storage
    URL), checked once here, before `_check_stores` creates any store; returns the study's context."""
    from aloss_tune.backends.optuna import check_search, check_storage_url
    from aloss_tune.runner import prepare

    if tune_kwargs.get("register") is not None:
        from aloss_tune.best_model import check_model_name

        check_model_name(tune_kwargs["register"])
    if tune_kwargs.get("data") is not None:
        spec = spec.with_overrides(data=tune_kwargs["data"])
    if tune_kwargs.get("build_model") is not None:
        spec = spec.with_overrides(model=tune_kwargs["build_model"])
    ctx = prepare(spec)
    check_search(spec)
    check_storage_url(url)
    return ctx


def _reclaim_left_running(study_name: str, url: str, settings: Any, *, everything: bool = False,
                          heartbeat: bool) -> None:
    """`aloss_tune.backends.optuna.reclaim_running` on the study, if it exists (its MLflow runs ended too)."""
    from aloss_tune.backends.optuna import reclaim_running

    study = _existing_study(study_name, url)
    if study is None:  # a new study
        return
    reclaim_running(study, _tracker(study, settings), everything=everything, heartbeat=heartbeat)


def _existing_study(study_name: str, url: str) -> Any:
    """The study ``study_name`` in the storage at ``url``, or ``None`` if there is none."""
    import optuna

    from aloss_tune.backends.optuna import StorageOptions, open_storage

    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(StorageOptions(url=url,
                                                                                             heartbeat_interval=0)))
    except KeyError:
        return None


def _tracker(study: Any, settings: Any) -> Any:
    """The tracker of ``study``'s parent run (found by the study's id), or ``None`` without tracking."""
    if settings is None or study is None:
        return None
    from aloss_tune.backends.optuna import study_key
    from aloss_tune.tracking import StudyTracker

    return StudyTracker(settings, study.study_name, backend="optuna", study_id=study_key(study))


def _end_parent_run(study_name: str, url: str, settings: Any) -> None:
    """End the study's parent run as KILLED if the stopped workers left it RUNNING."""
    tracker = _tracker(_existing_study(study_name, url), settings) if settings is not None else None
    if tracker is not None and tracker.end_parent("KILLED"):
        _log.warning("the study's MLflow parent run was left RUNNING by the stopped workers; ended as "
                     "KILLED.")


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM are ignored (cleanup after the first must not be cut short)."""
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_stores(url: str, *, tracking: bool, tracking_uri: str | None, mlflow_config: Any, space: Any,
                  ctx: Any) -> Any:
    """Fail before any worker starts if the storage or the tracking store cannot be reached, if the study
    exists with another objective or loss list (`aloss_tune.backends.optuna.check_resume`), or if its MLflow
    experiment cannot be used (`aloss_tune.tracking.check_experiment`); the settings are checked before either
    store is opened.

    Opening the stores here also creates their tables, once: workers creating a fresh MLflow database
    together would race on its schema migrations.
    """
    from aloss_tune._filelock import store_lock
    from aloss_tune.backends.optuna import StorageOptions, check_resume, open_storage

    settings = None
    if tracking:
        from aloss_tune.tracking import check_experiment, check_tracking_uri, load_settings, quiet_mlflow

        settings = load_settings(mlflow_config, tracking_uri=tracking_uri)
        if not settings.enabled:
            settings = None
        else:
            check_tracking_uri(settings.tracking_uri)
            check_experiment(settings, space.study, source=space.source)
    check_resume(open_storage(StorageOptions(url=url, heartbeat_interval=0)), space, ctx)
    if settings is not None and not settings.tracking_uri.startswith(("http://", "https://")):
        from mlflow.tracking import MlflowClient

        quiet_mlflow()

        from aloss_tune._urls import redact_text, redact_url

        try:
            with store_lock(settings.tracking_uri):
                client = MlflowClient(settings.tracking_uri)
            client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any store error: a usage error, before training
            reason = redact_text(" ".join(str(exc).split())[:300], settings.tracking_uri)
            raise UsageError(f"cannot open the MLflow tracking store {redact_url(settings.tracking_uri)}: "
                             f"{reason}") from None
    return settings


def _run(procs: list[Any], messages: Any) -> dict[int, dict[str, Any]]:
    """Start the workers, collect their reports until all have ended; interrupted: stop them cleanly."""
    reports: dict[int, dict[str, Any]] = {}

    def collect(wait: float) -> None:
        try:
            report = messages.get(timeout=wait)
        except queue_module.Empty:
            return
        reports[report["index"]] = report

    try:
        with sigterm_as_interrupt():
            for proc in procs:
                proc.start()
            while any(proc.is_alive() for proc in procs):
                collect(0.5)
    except KeyboardInterrupt:
        with _signals_ignored():  # a second Ctrl-C must not leave the workers unstopped
            _stop(procs)
        raise
    deadline = time.monotonic() + 5.0
    while len(reports) < len(procs) and time.monotonic() < deadline:  # reports of workers that ended last
        collect(0.2)
    for proc in procs:
        proc.join()
    return reports


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (how preemption usually starts) raises KeyboardInterrupt, like Ctrl-C.

    So a stopped worker still ends its running trial as failed (Optuna) and its run (MLflow) instead of
    leaving both to the heartbeat. Outside the main thread this does nothing.
    """
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


# Set once this process received SIGINT or SIGTERM within `interrupt_once`: an error raised after it (an
# interrupt landing inside Optuna's own bookkeeping of a trial ends in its "Should not reach" assertion) is
# reported as the interruption it follows.
INTERRUPTED = threading.Event()


@contextlib.contextmanager
def interrupt_once() -> Iterator[None]:
    """Within the block, SIGINT or SIGTERM raises KeyboardInterrupt, unless the study is already ending after
    one (`aloss_tune.backends.optuna.STOPPING`): then it is ignored.

    For a worker: Ctrl-C on a terminal reaches it, then its parent interrupts it again (`_stop`); a second
    KeyboardInterrupt would cut short the cleanup that ends its trial, its run and the study's parent run.
    A KeyboardInterrupt raised inside a finaliser or weakref callback, where Python only prints it, is
    delivered again a moment later (from a thread: a signal sent to itself would be handled inside the
    same callback).
    """

    def stopping() -> bool:
        backend = sys.modules.get("aloss_tune.backends.optuna")
        return backend is not None and backend.STOPPING.is_set()

    def handler(signum: int, frame: Any) -> None:
        INTERRUPTED.set()
        if not stopping():
            _raise_interrupt(signum, frame)

    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt):
            if not stopping():
                threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        previous_hook(info)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    if previous:
        sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop(procs: list[Any]) -> None:
    """Interrupt live workers (they end their trial as failed and their runs), then kill stragglers."""
    time.sleep(1.0)  # on a terminal the workers received the same Ctrl-C: let them act on it first
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            _log.warning("worker %s did not stop in %.0f s; killing it.", proc.name, STOP_GRACE_S)
            proc.kill()
            proc.join()


def _check_outcome(procs: list[Any], reports: Mapping[int, Mapping[str, Any]]) -> None:
    """Warn about workers that died or were stopped; raise the first error a worker reported."""
    lost = 0
    for index, proc in enumerate(procs):
        report = reports.get(index)
        if report is not None and report.get("kind") != "KeyboardInterrupt":
            continue
        lost += 1
        if report is not None:
            _log.warning("worker %d (pid %s) was interrupted; its running trial was marked failed.",
                         index, proc.pid)
            continue
        code = proc.exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        _log.warning("worker %d (pid %s) ended by %s; a trial it was running is failed (and retried, if "
                     "asked) by the heartbeat of a live worker or of the next run of the study.",
                     index, proc.pid, how)
    interrupted = [r for r in reports.values() if r.get("kind") == "KeyboardInterrupt"]
    if len(interrupted) == len(procs):
        raise KeyboardInterrupt("every worker was interrupted")
    errors = [r for r in reports.values() if not r["ok"] and r["kind"] != "KeyboardInterrupt"]
    if errors and all(r["kind"] == "StudyFailed" for r in errors) and any(r["ok"] for r in reports.values()):
        for report in errors:  # only some workers failed every trial: the study has results
            _log.warning("worker %d: %s", report["index"], report["message"])
        errors = []
    if errors:
        first = min(errors, key=lambda r: r["index"])
        cls = _ERRORS.get(first["kind"], AlossTuneError)
        prefix = "" if cls is not AlossTuneError else f"worker {first['index']}: {first['kind']}: "
        raise cls(prefix + first["message"])
    if lost == len(procs):
        raise AlossTuneError(f"all {len(procs)} workers stopped before finishing; the study keeps every "
                             "trial they finished.")


def load_result(study_name: str, storage: str, *, parent_run_id: str | None = None,
                experiment_id: str | None = None, tracking_uri: str | None = None) -> Any:
    """The `aloss_tune.result.TuneResult` of a whole study, read back from its storage."""
    import optuna

    from aloss_tune.backends.optuna import StorageOptions, best_summary, open_storage, state_counts
    from aloss_tune.result import make_result

    study = optuna.load_study(study_name=study_name,
                              storage=open_storage(StorageOptions(url=storage, heartbeat_interval=0)))
    objective = study.user_attrs.get(OBJECTIVE_ATTR) or {"metric": "objective",
                                                         "direction": study.direction.name.lower()}
    return make_result(study_name=study_name, backend="optuna", best=best_summary(study), objective=objective,
                       counts=state_counts(study), storage=storage, tracking_uri=tracking_uri,
                       parent_run_id=parent_run_id, experiment_id=experiment_id, study=study)


# ---------------------------------------------------------------------------------------- in a worker
def limit_threads(threads: int) -> None:
    """Cap this process's compute threads (call before TensorFlow loads; variables already set win)."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(min(2, threads)))


def _worker_main(index: int, space: Any, kwargs: dict[str, Any], threads: int, messages: Any) -> None:
    """The body of worker ``index``: `aloss_tune.tune` with its share of the trials; reports how it ended."""
    limit_threads(threads)
    logging.basicConfig(level=logging.WARNING, format=f"aloss-tune[worker {index}]: %(message)s")
    report: dict[str, Any] = {"index": index, "ok": True, "pid": os.getpid()}
    try:
        from aloss_tune._quiet import import_keras_quietly

        import_keras_quietly()
        _apply_tensorflow_threads(threads)
        from aloss_tune.api import tune

        with interrupt_once():
            result = tune(space, **kwargs)
        report.update(parent_run_id=result.parent_run_id, experiment_id=result.experiment_id, counts=result.counts,
                      best_trial=result.best_trial, best_model_uri=result.best_model_uri,
                      registered_model=result.registered_model)
    except KeyboardInterrupt:
        report.update(ok=False, kind="KeyboardInterrupt", message="interrupted")
    except Exception as exc:  # noqa: BLE001 - reported to the parent process, which raises it
        from aloss_tune._urls import redact_text

        if INTERRUPTED.is_set():  # the consequence of an interrupt, not an error of the study
            report.update(ok=False, kind="KeyboardInterrupt", message=f"interrupted ({type(exc).__name__})")
            messages.put(report)
            return

        report.update(ok=False, kind=type(exc).__name__,
                      message=redact_text(" ".join(str(exc).split()) or type(exc).__name__,
                                          kwargs.get("storage"), kwargs.get("tracking_uri")))
    messages.put(report)


def _apply_tensorflow_threads(threads: int) -> None:
    """The same cap through TensorFlow's API (its environment variables are read only by some builds)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["TF_NUM_INTEROP_THREADS"]))
    except (RuntimeError, ValueError):  # already initialised, or a user value that is not a number
        pass
