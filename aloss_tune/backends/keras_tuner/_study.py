"""Running a KerasTuner study (a project directory) and reading back its best trial."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from keras_tuner.engine import trial as kt_trial

from aloss_tune._schema import BACKEND_TAG, BEST_TRIAL_TAG, STUDY_ID_TAG
from aloss_tune._urls import redact_url
from aloss_tune.backends.base import StudyRecord, TrialRecord
from aloss_tune.backends.keras_tuner._common import (
    DEFAULT_DIRECTORY,
    LOCK_FILE,
    STUDY_FILE,
    STUDY_ID_FILE,
    TRIAL_FILE,
    _log,
    _read_json,
    _summary,
    _write_json,
)
from aloss_tune.backends.keras_tuner._space import SpaceHyperModel, choice_labels, make_oracle
from aloss_tune.backends.keras_tuner._tuner import SpaceTuner, _SearchStopped
from aloss_tune.distributions import Categorical
from aloss_tune.errors import ConfigError, UsageError
from aloss_tune.lifecycle import check_outcomes
from aloss_tune.result import make_result
from aloss_tune.runner import TrialContext, loss_config
from aloss_tune.space import SearchSpace
from aloss_tune.tracking import (
    StudyTracker,
    TrackingSettings,
    load_settings,
    quiet_mlflow,
    study_runs,
    unreadable_store,
    worker_id,
)


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


def project_name_problem(study: str) -> str | None:
    """Why ``study`` cannot name a project folder inside the project root, or ``None`` if it can."""
    if study in ("", ".", "..") or any(c in study for c in "/\\\0"):
        return (f"{study!r} cannot name a KerasTuner project: the project is the folder <directory>/<study>, so "
                "a study name must not hold '/', '\\' or be '.' or '..'.")
    return None


def project_dir(study: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the KerasTuner project of ``study`` lives: ``<directory>/<study>`` (default ``kt_projects``).

    `UsageError` for a name that would leave the project root (``../x``, ``/abs/path``).
    """
    problem = project_name_problem(study)
    if problem is not None:
        raise UsageError(f"study {problem}")
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
        # what `aloss-tune best --format python` needs to rebuild the optimizer and the built-in model
        **{k: v for k, v in space.to_dict().items() if k in ("optimizer", "model", "data")},
    }


def _check_project(project: Path, record: Mapping[str, Any]) -> None:
    """Refuse to resume a project made with another tuner, objective, loss list or set of ranges."""
    old = _read_json(project / STUDY_FILE)
    if old is None:
        if (project / "oracle.json").exists():
            raise UsageError(f"{project} holds a KerasTuner project that aloss-tune did not create; "
                             "use another study name or --directory.")
        return
    for key, what in (("tuner", "tuner"), ("objective", "objective"), ("losses", "loss list"),
                      ("search_params", "searched ranges")):
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
    oracle = make_oracle(space, ctx.objective.metric, ctx.objective.direction, target_scale=ctx.target_scale,
                         **dict(oracle_options or {}))
    tuner = SpaceTuner(
        oracle, SpaceHyperModel(space, ctx.target_scale, ctx), ctx=ctx, tracker=tracker,
        timeout=space.search.timeout, directory=str(project.parent), project_name=project.name,
        overwrite=overwrite, executions_per_trial=space.search.executions_per_trial,
    )
    tuner.study_id = record["study_id"] = _claim_study_id(project)
    _write_json(project / STUDY_FILE, record)
    return tuner


def _claim_study_id(project: Path) -> str:
    """The project's study id (``aloss_tune.study_id`` in it): the one written there first, by this process
    or by another one starting the same project (a distributed chief and its workers) at the same moment."""
    path = project / STUDY_ID_FILE
    if not path.exists():
        project.mkdir(parents=True, exist_ok=True)
        mine = project / f".{STUDY_ID_FILE}.{os.getpid()}.tmp"
        mine.write_text(uuid.uuid4().hex + "\n", encoding="utf-8")
        try:
            os.link(mine, path)  # atomic, and refused if another process linked its id first
        except FileExistsError:
            pass
        finally:
            mine.unlink()
    return path.read_text(encoding="utf-8").strip()


@contextlib.contextmanager
def project_lock(project: Path) -> Iterator[None]:
    """Hold ``<project>/aloss_tune.lock`` for the whole search: a second process searching the same project
    (outside KerasTuner's chief/worker mode) is refused with `UsageError` instead of running the same trials
    and overwriting their checkpoints. The lock (``fcntl.flock``) ends with the process that holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    project.mkdir(parents=True, exist_ok=True)
    path = project / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            raise UsageError(
                f"KerasTuner project {project} is being searched by {holder}; a project takes one search at a "
                "time: wait for it, use another study name or --directory, or share the search with KerasTuner's "
                "chief/worker mode (examples/distributed_keras_tuner.md).") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {worker_id()}".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def tune(space: SearchSpace, ctx: TrialContext, *, settings: TrackingSettings | None = None,
         directory: str | os.PathLike[str] | None = None, progress: bool = False, trial_log: Any = None,
         after_study: Callable[[Any], Path | None] | None = None) -> Any:
    """Run (or resume, or join as a distributed chief or worker) the study of ``space`` on KerasTuner.

    ``trial_log`` (an `aloss_tune.progress.TrialLog`) is called once per finished trial.
    ``after_study(record)`` (the study's `StudyRecord`) returns a folder of artifacts (the report) to log on
    the parent run when the search ends; a distributed worker leaves that to the chief.

    Returns an `aloss_tune.result.TuneResult` whose ``storage`` is the project root directory and whose
    ``study`` is the `SpaceTuner`.
    """
    root = Path(directory if directory is not None else DEFAULT_DIRECTORY)
    project = project_dir(space.study, root)
    role = distributed_role()
    chief, worker = role == "chief", role == "worker"
    _check_project(project, _study_record(space, ctx))  # before the lock file is made in someone else's project
    with contextlib.ExitStack() as held:
        if role is None:  # a chief and its workers share the project by design
            held.enter_context(project_lock(project))
        return _search(space, ctx, settings=settings, root=root, project=project, progress=progress,
                       trial_log=trial_log, after_study=after_study, chief=chief, worker=worker)


def _search(space: SearchSpace, ctx: TrialContext, *, settings: TrackingSettings | None, root: Path,
            project: Path, progress: bool, trial_log: Any, after_study: Callable[[Any], Path | None] | None,
            chief: bool, worker: bool) -> Any:
    """`tune` once the project is this process's."""
    tuner = make_tuner(space, ctx, directory=root)
    tracker = None
    if settings is not None:
        tracker = StudyTracker(settings, space.study, backend="keras-tuner", space=space.to_dict(),
                               storage=str(project), direction=ctx.objective.direction,
                               study_id=tuner.study_id)
        tuner.tracker = tracker
    tuner.trial_log = trial_log
    if worker and space.search.timeout is not None:
        _log.warning("search.timeout is not applied on a distributed KerasTuner worker (the chief waits for "
                     "every worker); the chief's max_trials bounds the search.")
    if tracker is not None:
        tracker.start(background=True)  # as on Optuna: the first trial's run waits for the parent, not the search
    status = "FINISHED"
    config_error = None
    try:
        with contextlib.ExitStack() as stack:
            if chief or worker:
                echoes = {str(label) for label in choice_labels(Categorical(space.losses))}
                sink = _DropLines(sys.stdout, echoes)
                stack.callback(sink.write_pending)
                stack.enter_context(contextlib.redirect_stdout(sink))
            stack.enter_context(_own_tracebacks_only())
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
            if best is not None and status == "FINISHED" and tracker.settings.log_model:
                tracker.best_model = _log_best_model(tuner, tracker, best, ctx)
            artifacts = None
            if after_study is not None and not worker:
                artifacts = after_study(_record_or_none(tuner))
            tracker.close(best=best, status=status, artifacts=artifacts, counts=None if worker else tuner.counts())
    errors = tuner._config_errors
    if config_error is None and errors and errors[0] is not None and set(errors) == {errors[0]}:
        config_error = errors[0]  # fewer trials than SAME_CONFIG_ERROR_STOP, all refused alike
    if config_error is not None:
        raise ConfigError(config_error)
    records = list(tuner.ran.values())
    check_outcomes([r.get("error") for r in records if r.get("state") == "failed"], ran=len(records))
    return make_result(
        study_name=space.study, backend="keras-tuner", best=_safe_best(tuner),
        objective={"metric": ctx.objective.metric, "direction": ctx.objective.direction},
        counts=tuner.counts(), storage=str(root), tracker=tracker,
        tracking_uri=settings.tracking_uri if settings is not None else None, study=tuner,
    )


@contextlib.contextmanager
def _own_tracebacks_only() -> Iterator[None]:
    """KerasTuner prints the traceback of every failed trial (its ``config.DEBUG``, on by default); here a failed
    trial is one line, its traceback in its MLflow run's ``error.txt`` and its record."""
    from keras_tuner.src import config as kt_config

    saved = kt_config.DEBUG
    kt_config.DEBUG = False
    try:
        yield
    finally:
        kt_config.DEBUG = saved


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


def _log_best_model(tuner: SpaceTuner, tracker: StudyTracker, best: Mapping[str, Any], ctx: TrialContext) -> Any:
    """Log the best trial's model, rebuilt from the checkpoint KerasTuner keeps of its best epoch (see
    `aloss_tune.best_model`); ``None`` with a warning if it cannot be."""
    from aloss_tune.best_model import log_best_model

    try:
        model = tuner.get_best_models(num_models=1)[0]
        trial_id = tuner.oracle.get_best_trials(1)[0].trial_id
        record = _read_json(Path(tuner.get_trial_dir(trial_id)) / TRIAL_FILE) or {}
        return log_best_model(tracker, model, number=int(best["number"]), value=best.get("value"),
                              params=best["params"], loss_config=best.get("loss_config"),
                              run_id=record.get("mlflow_run_id"), x_example=ctx.data.x_val,
                              register=tracker.settings.register)
    except Exception as exc:  # noqa: BLE001 - the study's results are stored; only the model is missing
        _log.warning("could not log the best trial's model (trial %s) to MLflow: %s: %s", best.get("number"),
                     type(exc).__name__, " ".join(str(exc).split())[:300])
        return None


def _safe_best(tuner: SpaceTuner) -> dict[str, Any] | None:
    try:
        return tuner.best_summary()
    except Exception as exc:  # noqa: BLE001 - never lose the study's end over its summary
        _log.warning("could not read the best trial: %s: %s", type(exc).__name__, exc)
        return None


# ----------------------------------------------------------------------------------------------- records
_KT_STATES = {"COMPLETED": "complete", "FAILED": "failed", "INVALID": "failed", "RUNNING": "running",
              "IDLE": "waiting", "STOPPED": "failed"}


def existing_project(study_name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """The project of ``study_name`` under ``directory`` (default ``kt_projects``); `UsageError` when there is
    no aloss-tune project there."""
    project = project_dir(study_name, directory)
    if not (project / STUDY_FILE).is_file():
        raise UsageError(f"no KerasTuner project of aloss-tune's at {project} (give its root with "
                         "--directory).")
    return project


def searched_values(params: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
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


def project_record(project: Path) -> StudyRecord:
    """A KerasTuner project of aloss-tune's (``<directory>/<study>``) as a backend-neutral `StudyRecord`:
    KerasTuner's ``trial_<id>/trial.json`` beside aloss-tune's own records of the study and of each trial."""
    record = _read_json(project / STUDY_FILE)
    if not isinstance(record, dict):
        raise UsageError(f"{project} is not a KerasTuner project of aloss-tune's (no {STUDY_FILE}); give the "
                         "project root with --directory.")
    objective = record.get("objective") or {}
    specs = record.get("search_params") or {}
    losses = tuple(record.get("losses") or (specs.get("loss") or {}).get("choices") or ())

    def trial_number(path: Path) -> int:
        suffix = path.parent.name.removeprefix("trial_")
        return int(suffix) if suffix.isdigit() else -1

    trials = []
    for path in sorted(project.glob("trial_*/trial.json"), key=trial_number):
        trial = _read_json(path) or {}
        mine = _read_json(path.parent / TRIAL_FILE) or {}
        stopped = mine.get("stopped_dead") is not None  # COMPLETED for KerasTuner, stopped early for us
        state = mine.get("state") if mine.get("state") in ("complete", "failed") else None
        if mine.get("state") == "dead":
            state = "pruned" if stopped else "complete"
        state = state or _KT_STATES.get(str(trial.get("status")), "running")
        params = dict(mine.get("params") or {})
        if not params:  # ran where this directory is not shared: KerasTuner's own names and values
            values = (trial.get("hyperparameters") or {}).get("values") or {}
            params = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        value = mine.get("value", trial.get("score")) if state == "complete" or stopped else None
        history = {str(k): [float(x) for x in v] for k, v in (mine.get("history") or {}).items()}
        searched = searched_values(params, list(specs))
        trials.append(TrialRecord(
            number=int(mine.get("number", trial_number(path))), state=state,
            value=None if value is None else float(value), params=params, search_params=searched,
            distributions={k: specs[k] for k in searched}, history=history, loss_config=mine.get("loss_config"),
            seed=mine.get("seed"), epochs=len(history.get(objective.get("metric") or "") or ()),
            error=mine.get("error"), run_id=mine.get("mlflow_run_id"), stopped_dead=stopped,
        ))
    baseline, scale = record.get("baseline"), record.get("target_scale")
    return StudyRecord(
        name=str(record.get("study") or project.name), backend="keras-tuner",
        metric=objective.get("metric") or "objective", direction=objective.get("direction") or "minimize",
        trials=tuple(trials), losses=losses, baseline=None if baseline is None else float(baseline),
        target_scale=None if scale is None else float(scale), task=record.get("task"),
        space={"loss": {"choices": list(losses)}},
    )


def _record_or_none(tuner: SpaceTuner) -> StudyRecord | None:
    """`project_record` of the tuner's project, or ``None`` with a warning (never fails the study's end)."""
    try:
        return project_record(Path(tuner.project_dir))
    except Exception as exc:  # noqa: BLE001
        _log.warning("could not read the project back for its report (%s: %s).", type(exc).__name__, exc)
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
    mlflow_part = (unreadable_store(uri) or
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
        if ((_read_json(path.parent / TRIAL_FILE) or {}).get("stopped_dead")) is not None:
            continue  # stopped as not learning: COMPLETED for KerasTuner, never the best trial
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
    optimizer = study.get("optimizer")
    return {**_summary(int(trial["trial_id"]), score, params, record.get("loss_config") or loss_config(params)),
            "optimizer": optimizer.get("name", "adam") if isinstance(optimizer, dict) else (optimizer or "adam"),
            "model": study.get("model"), "data": study.get("data")}


def _best_from_mlflow(study_name: str, tracking_uri: str | None) -> dict[str, Any] | None:
    """The best trial the study's MLflow parent run records (``best_params.json``, ``best_loss_config.json``,
    the ``aloss_tune.best_trial`` tag and the ``best_objective`` metric), or ``None``."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    settings = load_settings(tracking_uri=tracking_uri)
    if unreadable_store(settings.tracking_uri) is not None:  # reading would create an empty store
        return None
    quiet_mlflow()  # no "Downloading artifacts" progress bar
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        experiment = client.get_experiment_by_name(settings.experiment or study_name)
    except MlflowException:
        return None
    if experiment is None:
        return None
    runs = study_runs(client, experiment.experiment_id, study_name, max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and BEST_TRIAL_TAG in r.data.tags
               and r.data.tags.get(BACKEND_TAG) == "keras-tuner"]
    if not parents:
        return None
    if len({r.data.tags.get(STUDY_ID_TAG) for r in parents}) > 1:  # projects of one name in several roots
        listed = "; ".join(f"runs:/{r.info.run_id} ({r.data.params.get('storage', '?')})" for r in parents)
        raise UsageError(f"MLflow holds {len(parents)} KerasTuner studies named {study_name!r}: {listed}; give "
                         "--directory (the project root) or one of these runs.")
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
