"""MLflow tracking: one parent run per study, one child run per trial, nothing lost or left RUNNING.

Layout (the same for every backend):

* experiment = the study name (or ``experiment`` from ``mlflow.yaml``);
* the study's **parent run**, tagged ``aloss_tune.study=<study>``, ``aloss_tune.backend`` and
  ``aloss_tune.study_id`` (the id the study was given when it was created, kept in its Optuna storage or
  KerasTuner project); a worker that joins or resumes finds it by backend and id instead of creating another,
  so the studies of two backends, or of two storages, that share a name never share a parent; it holds the
  space (``space.yaml``), the backend, the redacted storage URL and, when a worker ends, the best params,
  value and loss config;
* one **child run per trial**, named ``trial-<n> <loss>`` (``trial-7 barron``), its parent set explicitly
  with the ``mlflow.parentRunId`` tag (works across processes and machines). Params = the flat params dict
  plus seed, backend and versions, logged when the trial *starts* (so pruned and failed trials keep them);
  metrics of every epoch with ``step=epoch`` (including learned ``alpha``/``scale``), sent in batches; the
  final ``objective``; ``loss_config.json`` whatever the trial's fate (a pruned or failed trial's loss
  rebuilds with ``load_loss("runs:/<run_id>")`` too); status complete -> FINISHED, pruned -> KILLED,
  failed -> FAILED with ``error.txt``, dead (`aloss_tune.states`) -> KILLED when stopped early, FINISHED when it
  completed no better than the baseline; the tag ``aloss_tune.state`` (``running``, then ``complete``,
  ``dead``, ``pruned`` or ``failed``) and the tag ``aloss_tune.loss`` (its loss), which the runs table shows
  as columns;
* the parent run shows the winner in the same columns, updated after every trial: the best objective as its
  ``objective`` metric (one value per finished trial, so its history is the best-so-far curve), the best
  trial's loss as its ``aloss_tune.loss`` tag (a tag, as MLflow params cannot change once logged) and the
  study's counts (``4 complete, 2 dead, 1 pruned, 0 failed``) as its ``aloss_tune.state`` tag.

The experiment is set up for review in MLflow 3's UI, which otherwise opens an experiment on its GenAI
overview (0 traces): it is tagged ``mlflow.experimentKind=custom_model_development`` (the model-training
kind, which the UI reads where its GenAI / Model training switch is not shown), and it holds a shared view
of the runs table, ``aloss_tune`` (the experiment tag ``mlflow.sharedViewState.aloss_tune``), that shows
each run's ``objective``, ``aloss_tune.loss`` and ``aloss_tune.state`` columns, sorted by ``objective`` best
first (the parent, holding the best value, at the top with the best trial), with column widths that fit
their values. `runs_url` opens that view in model training mode; the CLI prints it when a study ends.

Training never waits on the tracking store: MLflow itself (its import, opening or creating the store, the
experiment and the parent run) starts in a background thread while the first trial trains
(`StudyTracker.start`), then one background thread per worker creates each trial's run and sends its epochs
in order, a batch every `EPOCH_BATCH_S` seconds (one MLflow call costs several times the rows of one epoch);
a new study's check that no other worker opened a parent run at the same moment (`PARENT_SETTLE_S`) runs
there too. Only ending a run is synchronous, so that a run is ended (with every epoch stored) before its
trial's state reaches the study storage. SQLite stores are written in WAL mode (`aloss_tune._sqlite`).

Settings come from ``mlflow.yaml`` (``tracking_uri``, ``experiment``, ``tags``, ``enabled``), overridden by
the ``MLFLOW_TRACKING_URI`` environment variable, overridden by explicit arguments (CLI flags).

If the tracking store goes away mid-study, training goes on: a failing call is retried, then tracking for
the rest of this worker is switched off with one warning, and the study's results stay complete in the
search backend's own storage (from which ``aloss-tune best`` and ``report`` work). Nothing already logged
is touched; runs left ``RUNNING`` are ended later (below). For a tracking server (``http(s)``) the retries
are MLflow's own, with a bounded budget set unless the environment sets one
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES=4``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1``,
``MLFLOW_HTTP_REQUEST_TIMEOUT=20``): a server restart of up to about 15 s goes unnoticed, and a server that
is gone costs this worker about 15 s once, where MLflow's defaults (7 retries, 120 s timeouts) would stall
training for minutes at every call. Other stores (SQLite) get one more attempt after 0.5 s. The tracker also
keeps MLflow from printing a "View run" link on stdout each time a run ends
(``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``) and drops the per-attempt error lines of urllib3 and of
MLflow's asynchronous logging queue, so a lost server shows as that one warning. MLflow's own chatter is
kept off the console too (`quiet_mlflow`): the INFO lines of a new store's table creation and the
"Downloading artifacts" progress bars.

A run left ``RUNNING`` by a worker that died (or whose tracking was off when its trial ended) is ended
later by `StudyTracker.end_lost_run`, which the search backend calls when it learns the trial's fate:
a live worker failing a heartbeat-stale trial, or any worker starting or ending on the study.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from aloss_tune._filelock import store_lock
from aloss_tune._schema import (  # noqa: F401 - the tag names are also read from here
    BACKEND_TAG,
    BEST_LOSS_TAG,
    BEST_TRIAL_TAG,
    CONTINUES_TAG,
    DEFAULT_TRACKING_URI,
    ERROR_TAG,
    LOSS_TAG,
    RECONCILED_TAG,
    RETRY_TAG,
    STATE_TAG,
    STUDY_ID_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    WORKER_TAG,
)
from aloss_tune._sqlite import use_wal
from aloss_tune._urls import redact_text, redact_url, url_password
from aloss_tune.errors import ConfigError, UsageError, describe
from aloss_tune.states import STATES, counts_text

_log = logging.getLogger("aloss_tune.tracking")

# MLflow 3's UI picks an experiment's first page from this tag; this value opens the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# A shared view of the runs table (MLflow UI's `viewStateShareKey`): the columns that tell trials apart.
VIEW_KEY = "aloss_tune"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
RUNS_COLUMNS = ("metrics.`objective`", f"tags.`{LOSS_TAG}`", f"tags.`{STATE_TAG}`")
# Widths (pixels) that show each column's values whole: a full float, a loss name, the study's counts.
RUNS_COLUMN_WIDTHS = {"attributes.`Run Name`": 210, "metrics.`objective`": 150, f"tags.`{LOSS_TAG}`": 130,
                      f"tags.`{STATE_TAG}`": 270}
# The table's own columns before the selected ones (MLflow applies widths only to the columns it is given).
_TABLE_COLUMNS = ("attributes.`Run Name`", "runDateAndNestInfo", "duration")
# A run's MLflow status by its state (a dead trial that ran all its epochs ends FINISHED: see `TrialRun.finish`).
STATUS = {"complete": "FINISHED", "dead": "KILLED", "pruned": "KILLED", "failed": "FAILED"}

# MLflow settings for a tracking server, unless the environment sets them (see the module docstring).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# A parent run is chosen only among runs older than this (seconds), so that every worker creating one at
# the same moment sees all of them before it decides which one is kept.
PARENT_SETTLE_S = 2.0
# A trial's epochs are sent to MLflow together, once every this many seconds (the first one at once), and at
# most this many metric values in one call (MLflow takes up to 1000).
EPOCH_BATCH_S = 2.0
MAX_BATCH_METRICS = 500


@dataclass(frozen=True)
class TrackingSettings:
    """Where and how to log. ``tracking_uri`` is never logged with its password."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    log_model: bool = False  # log the best trial's trained model (`aloss_tune.best_model`)
    register: str | None = None  # ... and register it under this name in the Model Registry


def load_settings(path: str | Path | None = None, *, tracking_uri: str | None = None,
                  experiment: str | None = None, enabled: bool | None = None) -> TrackingSettings:
    """Read ``mlflow.yaml`` (``path``, or ``./mlflow.yaml`` if present) and apply env and overrides."""
    raw: dict[str, Any] = {}
    source = Path(path) if path is not None else Path("mlflow.yaml")
    if path is not None or source.exists():
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the MLflow settings ({exc.strerror or exc}).") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}.") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: must be a mapping, but got {describe(raw)}.")
        allowed = ("tracking_uri", "experiment", "tags", "enabled")
        for key in raw:
            if key not in allowed:
                raise ConfigError(f"{source}: {key}: unknown key; allowed keys: {', '.join(allowed)}.")
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict):
        raise ConfigError(f"{source}: tags: must be a mapping of names to values, but got {describe(tags)}.")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or raw.get("tracking_uri") or DEFAULT_TRACKING_URI
    if not isinstance(uri, str):
        raise ConfigError(f"{source}: tracking_uri: must be a URI string, but got {describe(uri)}.")
    exp = experiment if experiment is not None else raw.get("experiment")
    if exp is not None and not isinstance(exp, str):
        raise ConfigError(f"{source}: experiment: must be a name, but got {describe(exp)}.")
    on = raw.get("enabled", True) if enabled is None else enabled
    if not isinstance(on, bool):
        raise ConfigError(f"{source}: enabled: must be true or false, but got {describe(on)}.")
    return TrackingSettings(tracking_uri=uri, experiment=exp, tags={str(k): str(v) for k, v in tags.items()},
                            enabled=on)


# Tracking URI schemes MLflow can log to ("" is a local folder, MLflow's file store, as is file:).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file")
_SCHEME_HINT = ("sqlite:///mlflow.db, http(s)://host:port, postgresql://..., mysql://..., mssql://..., "
                "databricks, or file:///folder with MLFLOW_ALLOW_FILE_STORE=true")


def check_tracking_scheme(uri: str) -> str:
    """The scheme of a tracking URI MLflow can use (``""`` for a bare folder); `UsageError` otherwise."""
    shown = redact_url(uri)
    if uri == "databricks" or uri.startswith("databricks://"):
        return "databricks"
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise UsageError(f"tracking URI {shown!r}: unknown scheme {scheme!r}; use {_SCHEME_HINT}.")
    if scheme in ("http", "https"):
        password = url_password(uri) or ""
        unsafe = sorted({c for c in password if c in "/?#"})
        if unsafe:  # a server URL's host would start inside the password (MLflow's client refuses it)
            codes = ", ".join(f"{c} as {quote(c, safe='')}" for c in unsafe)
            raise UsageError(f"tracking URI {shown!r}: the password holds {' and '.join(repr(c) for c in unsafe)}, "
                             f"which end a URL's host part; percent-encode it ({codes}) or set "
                             "MLFLOW_TRACKING_PASSWORD instead.")
    if scheme in ("", "file") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        raise UsageError(f"tracking URI {shown!r}: MLflow refuses file stores unless "
                         "MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///mlflow.db (the default) or a tracking "
                         "server.")
    return scheme


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (`UsageError`) if the tracking store cannot be reached, before any training starts.

    Nothing is created. A tracking server's credentials are taken from the URI (``http://user:pw@host``)
    or, as MLflow does, from ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` (or
    ``MLFLOW_TRACKING_TOKEN``), and sent as HTTP authentication; a password is never shown.
    """
    shown = redact_url(uri)
    scheme = check_tracking_scheme(uri)
    if scheme in ("http", "https"):
        url, headers = _without_credentials(uri)
        request = urllib.request.Request(url.rstrip("/") + "/health", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status != 200:
                    raise UsageError(f"tracking server {shown} answered /health with HTTP {response.status}.")
        except urllib.error.HTTPError as exc:
            exc.close()
            raise UsageError(f"tracking server {shown} answered /health with HTTP {exc.code} "
                             f"({redact_text(str(exc.reason), uri)})"
                             + ("; check the credentials." if exc.code in (401, 403) else ".")) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = redact_text(str(getattr(exc, "reason", exc)), uri)
            raise UsageError(f"cannot reach the MLflow tracking server {shown}: {reason}.") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.exists():
            raise UsageError(f"tracking store {shown}: folder {folder} does not exist.")
        if not os.access(folder, os.W_OK):
            raise UsageError(f"tracking store {shown}: folder {folder} is not writable.")


MAX_EXPERIMENT_NAME = 500  # MLflow's limit on an experiment's name
MAX_RUN_NAME = 250  # the name column of MLflow's runs table (enforced by PostgreSQL and MySQL)


def check_experiment(settings: TrackingSettings, study: str, *, source: str | None = None) -> None:
    """Refuse, before any store is written, a study whose MLflow experiment cannot be used: a name over
    MLflow's limit, a deleted experiment of that name, or a tracking store file that is not MLflow's (MLflow
    would refuse each only once the study's storage exists). A store that does not exist yet, or an empty
    file, is left for the study to create."""
    name = settings.experiment or study
    if len(name) > MAX_EXPERIMENT_NAME:
        key = "experiment (mlflow.yaml)" if settings.experiment else "study"
        where = f"{source}: " if source and not settings.experiment else ""
        raise ConfigError(f"{where}{key}: names the MLflow experiment, which MLflow limits to "
                          f"{MAX_EXPERIMENT_NAME} characters, but has {len(name)}.")
    uri = settings.tracking_uri
    path = missing_store(uri)
    if path is not None or (uri.startswith("sqlite:///") and _empty_file(uri)):
        return
    problem = unreadable_store(uri)
    if problem is not None:
        raise UsageError(f"tracking store {redact_url(uri)}: {problem}.")
    stage = _sqlite_experiment_stage(uri, name)
    if stage is None:  # not a SQLite file: ask the store
        from mlflow.tracking import MlflowClient

        try:
            with store_lock(uri):
                experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
        except Exception as exc:  # noqa: BLE001 - any store error: a usage error, before training
            reason = redact_text(" ".join(str(exc).split())[:300], uri)
            raise UsageError(f"cannot read the MLflow tracking store {redact_url(uri)}: {reason}") from None
        stage = "" if experiment is None else experiment.lifecycle_stage
    if stage not in ("", "active"):
        raise UsageError(f"MLflow experiment {name!r} is deleted; restore it or choose another name.")


def _sqlite_experiment_stage(uri: str, name: str) -> str | None:
    """The lifecycle stage (``active``, ``deleted``) of the experiment ``name`` in the SQLite tracking store of
    ``uri``, ``""`` when it has none, read with SQLite alone (read-only); ``None`` for another kind of store.

    A study's start needs no MLflow import for this check: MLflow itself (seconds to import and to open its
    store) starts while the first trial trains (`StudyTracker.start`).
    """
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    if str(path) in ("", ":memory:"):
        return None
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT lifecycle_stage FROM experiments WHERE name = ?", (name,)).fetchone()
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read the MLflow tracking store {redact_url(uri)}: {exc}") from None
    return "" if row is None else str(row[0])


def _empty_file(uri: str) -> bool:
    path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return path.is_file() and path.stat().st_size == 0


def runs_url(tracking_uri: str, experiment_id: str) -> str | None:
    """The address of an experiment's runs table (model training mode, the ``aloss_tune`` view with its
    columns) in the MLflow UI of a tracking server, or ``None`` for a store that has no UI of its own (a
    SQLite file: serve it with ``mlflow ui`` and give that server's address)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return (f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


def experiment_tags(direction: str = "minimize") -> dict[str, str]:
    """The tags that set an experiment up for review in the MLflow UI (see the module docstring): its runs
    sorted by ``objective``, best first for ``direction``."""
    view = {"selectedColumns": list(RUNS_COLUMNS), "orderByKey": RUNS_COLUMNS[0],
            "orderByAsc": direction == "minimize", "columnOrder": [*_TABLE_COLUMNS, *RUNS_COLUMNS],
            "columnWidths": dict(RUNS_COLUMN_WIDTHS)}
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: json.dumps(view)}


def quiet_mlflow() -> None:
    """Keep MLflow's chatter off the console: the INFO lines of a new SQLite store's table creation and the
    "Downloading artifacts" progress bars (unless ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is set). Call it
    before opening a store or downloading an artifact."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def trial_run_name(number: int, loss: Any) -> str:
    """``trial-7 barron``: a trial's run name says its loss, so that the runs table shows it at a glance."""
    return f"trial-{number} {loss}" if loss else f"trial-{number}"


def _without_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """``http://user:pw@host/x`` -> (``http://host/x``, its Authorization header); MLflow's variables when
    the URI holds no user."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    user, password = parts.username, parts.password
    netloc = parts.netloc.rpartition("@")[2]
    url = urlunsplit(parts._replace(netloc=netloc))
    if user is None:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    else:
        user, password = unquote(user), unquote(password or "")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        return url, {"Authorization": f"Basic {token}"}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return url, {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    return url, {}


def missing_store(uri: str) -> Path | None:
    """A SQLite tracking URI's file when it does not exist (reading it would create it), else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    return None if path.exists() or str(path) in ("", ":memory:") else path


def unreadable_store(uri: str) -> str | None:
    """Why the SQLite tracking store of ``uri`` cannot be read without writing to it, or ``None``.

    MLflow's client creates its tables in a file that has none (a missing or empty file, an Optuna storage
    given by mistake fails its schema check instead), so a command that only reads checks the file first,
    read-only: it must exist and hold MLflow's tables. Other stores (a server) are never written by a read.
    """
    path = missing_store(uri)
    if path is not None:
        return f"the MLflow tracking store file {path} does not exist"
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    if str(path) in ("", ":memory:"):
        return None
    if path.is_dir():
        return f"the MLflow tracking store {path} is a folder, not a SQLite file"
    if path.stat().st_size == 0:
        return f"the MLflow tracking store file {path} is empty"
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        return f"{path} is not an MLflow tracking store ({exc})"
    if not {"experiments", "runs"} <= tables:
        kind = " (it looks like an Optuna storage)" if "studies" in tables else ""
        return f"{path} is not an MLflow tracking store{kind}"
    return None


def versions() -> dict[str, str]:
    """Versions worth logging with every trial (reproducibility)."""
    import keras

    out = {"keras": keras.__version__, "keras_backend": keras.backend.backend(), "python": platform.python_version()}
    from aloss_tune import __version__

    out["aloss_tune"] = __version__
    return out


def worker_id() -> str:
    """``host:pid`` of this process: which worker ran a trial (logged as a tag and a trial attribute)."""
    return f"{platform.node() or 'localhost'}:{os.getpid()}"


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


class _DropRecords(logging.Filter):
    """Drops log records whose message starts with ``prefix`` (failures the guard reports once)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


_NOISE = {
    "urllib3.connectionpool": "Retrying",  # one warning per HTTP attempt
    "mlflow.utils.async_logging.async_logging_queue": "Run Id",  # one error per failed metrics batch
}


def _quiet_retry_noise() -> None:
    for name, prefix in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropRecords) for f in logger.filters):
            logger.addFilter(_DropRecords(prefix))


class _Guard:
    """Runs tracking calls; once a call has failed ``attempts`` times, switches tracking off for this worker
    with one warning."""

    def __init__(self, uri: str, attempts: int = 2):
        self.uri = uri
        self.attempts = attempts
        self.failed: str | None = None

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None:
            return None
        for attempt in range(self.attempts):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any MLflow/network error
                if attempt + 1 < self.attempts:
                    time.sleep(0.5)
                    continue
                self.failed = redact_text(f"{type(exc).__name__}: {exc}", self.uri)
                _log.warning("MLflow tracking at %s failed (%s); training goes on without tracking, the "
                             "results stay in the study storage.", redact_url(self.uri), self.failed)
        return None


class StudyTracker:
    """The parent run of one study; creates the child run of each trial.

    Args:
        settings: where to log.
        study: the study name.
        backend: ``optuna`` or ``keras-tuner`` (logged).
        space: the validated space as a dict (logged as ``space.yaml``).
        storage: the search storage URL or directory (logged redacted).
        direction: the objective's direction (the runs table lists the best run first).
        study_id: the study's id (`aloss_tune._schema.STUDY_ID_ATTR`); set it before `start`. Without one,
            any parent run of the study name and backend is the study's (a reader that has no id).
    """

    def __init__(self, settings: TrackingSettings, study: str, *, backend: str,
                 space: Mapping[str, Any] | None = None, storage: str | None = None, direction: str = "minimize",
                 study_id: str | None = None):
        self.settings = settings
        self.study = study
        self.backend = backend
        self.direction = direction
        self.study_id = study_id
        self.space = dict(space or {})
        self.storage = redact_url(storage)
        self._urls = (settings.tracking_uri, storage)  # whose passwords are redacted from every error logged
        server = settings.tracking_uri.startswith(("http://", "https://"))
        if server:
            for name, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
        _quiet_retry_noise()
        use_wal(settings.tracking_uri)  # MLflow commits each call: without an fsync each
        self._client: Any = None  # MLflow's client, made when first needed (`client`)
        self._client_lock = threading.Lock()
        # A server's calls are already retried by MLflow's HTTP client; a local store gets a second attempt.
        self.guard = _Guard(settings.tracking_uri, attempts=1 if server else 2)
        self.experiment_id: str | None = None
        self.best_model: Any = None  # where the best trial's model went (`aloss_tune.best_model`), if logged
        self._parent: str | None = None
        self.created_parent = False  # this worker created the parent (a new study)
        self._settled = threading.Event()
        self._settled.set()
        self._epoch_sender = _Sender(self.guard, self._settled)  # its thread starts with the first submission

    @property
    def client(self) -> Any:
        """MLflow's client of the tracking store, made on first use: importing MLflow and opening (or creating)
        its store take seconds, which `start` with ``background=True`` spends while the first trial trains."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    from mlflow.tracking import MlflowClient

                    quiet_mlflow()  # after MLflow's import, which sets its loggers up
                    with store_lock(self.settings.tracking_uri):  # the client opens (creates) a SQLite store
                        self._client = MlflowClient(tracking_uri=self.settings.tracking_uri)
        return self._client

    # ------------------------------------------------------------------------------------------ parent
    @property
    def parent_run_id(self) -> str | None:
        """The study's parent run (waits until the choice among simultaneously created parents is made)."""
        self._settled.wait()
        return self._parent

    def open(self) -> str | None:
        """Find the study's parent run by tag, or create it; mark it RUNNING. Returns its id."""
        self.start()
        return self.parent_run_id

    def start(self, *, background: bool = False, then: Callable[[StudyTracker], None] | None = None) -> None:
        """`open` without waiting: the parent is found or created now (errors raise here, before any
        training), and if this worker created it, the check that no other worker created one at the same
        moment (`PARENT_SETTLE_S`) runs in the background while the first trial trains. Child runs are
        created once the parent is settled.

        With ``background``, all of it (importing MLflow, opening or creating its store, the experiment, the
        parent) runs in a thread of its own while training starts, and then ``then(self)`` (the study's lost
        runs, say); a failure there switches tracking off for this worker with one warning, as a failure of
        the tracking store during the study does (`check_experiment` has checked what can be checked before).
        """
        if not background:
            settle = self._start_now()
            if settle is not None:
                self._settled.clear()
                threading.Thread(target=self._settle, args=settle, name="aloss-tune-parent", daemon=True).start()
            if then is not None:
                then(self)
            return
        self._settled.clear()

        def run() -> None:
            try:
                settle = self.guard(self._start_now)
                if settle is not None:
                    self.guard(self._settle_now, *settle)
            finally:
                self._settled.set()
            if then is not None and self.guard.failed is None:
                then(self)

        threading.Thread(target=run, name="aloss-tune-tracking-start", daemon=True).start()

    def _start_now(self) -> tuple[str | None, int] | None:
        """Find or create the experiment and the parent run; returns ``(my new parent or None, its start time)``
        when the choice among parents created at the same moment is still to be made (`_settle_now`)."""
        name = self.settings.experiment or self.study
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(name, tags=experiment_tags(self.direction))
            except Exception:  # noqa: BLE001 - created meanwhile by another worker
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            if experiment.lifecycle_stage != "active":
                raise UsageError(f"MLflow experiment {name!r} is deleted; restore it or choose another name.")
            self.experiment_id = experiment.experiment_id
        if experiment is not None:
            # An experiment made before (or by someone else): set it up too, keeping a kind or a view that
            # is there already.
            for key, value in experiment_tags(self.direction).items():
                if key not in experiment.tags:
                    self.client.set_experiment_tag(self.experiment_id, key, value)
        existing = self._oldest_parent()
        if existing is None:
            tags = {STUDY_TAG: self.study, BACKEND_TAG: self.backend, **self.settings.tags}
            if self.study_id is not None:
                tags[STUDY_ID_TAG] = self.study_id
            name = self.study if self.backend == "optuna" else f"{self.study} ({self.backend})"
            run = self.client.create_run(self._experiment, tags=tags, run_name=name[:MAX_RUN_NAME])
            mine, start_time = run.info.run_id, run.info.start_time
        else:
            mine = None
            run_id, start_time = existing
            if time.time() >= start_time / 1000 + PARENT_SETTLE_S:  # settled long ago: the common case
                self._parent = run_id
                self.client.update_run(run_id, status="RUNNING")
                return None
        self._parent = mine or existing[0]  # type: ignore[index]
        self.created_parent = mine is not None
        return mine, start_time

    @property
    def _experiment(self) -> str:
        if self.experiment_id is None:
            raise RuntimeError("the study's MLflow experiment is not open yet")
        return self.experiment_id

    @property
    def _parent_id(self) -> str:
        if self._parent is None:
            raise RuntimeError("the study's MLflow parent run is not open yet")
        return self._parent

    def _settle(self, mine: str | None, start_time: int) -> None:
        """Keep the oldest of the parents created together; the others' workers delete theirs."""
        try:
            self.guard(self._settle_now, mine, start_time)
        finally:
            self._settled.set()

    def _settle_now(self, mine: str | None, start_time: int) -> None:
        winner = self._settled_parent(start_time) or self._parent
        self._parent = winner
        if mine is not None and winner != mine:
            self.client.delete_run(mine)
        elif mine is not None:
            self._log_parent_setup()
        elif winner is not None:
            self.client.update_run(winner, status="RUNNING")

    def _settled_parent(self, start_time: int) -> str | None:
        """The oldest parent, looked up once every parent started before ``start_time`` is surely stored.

        A run's start time is taken when its creation request is sent, so another worker's parent with an
        earlier start time may still be in flight; waiting `PARENT_SETTLE_S` after ``start_time`` makes every
        worker see the same set of candidates, and so agree on the oldest.
        """
        wait = start_time / 1000 + PARENT_SETTLE_S - time.time()
        if wait > 0:
            time.sleep(wait)
        found = self._oldest_parent()
        return None if found is None else found[0]

    def _oldest_parent(self) -> tuple[str, int] | None:
        """``(run_id, start_time)`` of the study's oldest active parent run, or ``None``.

        With a study id, the parents tagged with it; failing those, a parent of the same backend made before
        parents were tagged with an id (it is adopted: tagged with this study's id).
        """
        runs: list[Any] = []
        if self.study_id is not None:
            runs = self.client.search_runs([self._experiment], filter_string=tag_filter(STUDY_ID_TAG, self.study_id),
                                           order_by=["attributes.start_time ASC"], max_results=5)
            runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        if not runs:
            runs = [r for r in study_runs(self.client, self._experiment, self.study, max_results=1000)
                    if "mlflow.parentRunId" not in r.data.tags
                    and r.data.tags.get(BACKEND_TAG, self.backend) == self.backend
                    and (self.study_id is None or STUDY_ID_TAG not in r.data.tags)]
            if runs and self.study_id is not None:
                runs = runs[:1]
                self.client.set_tag(runs[0].info.run_id, STUDY_ID_TAG, self.study_id)
        if not runs:
            return None
        runs.sort(key=lambda r: (r.info.start_time, r.info.run_id))
        return runs[0].info.run_id, runs[0].info.start_time

    def end_parent(self, status: str = "KILLED") -> bool:
        """End the study's parent run with ``status`` if it is still RUNNING (its workers were stopped before
        they could end it); returns whether it was ended here. Does not create anything."""
        return bool(self.guard(self._end_parent, status))

    def _end_parent(self, status: str) -> bool:
        experiment = self.client.get_experiment_by_name(self.settings.experiment or self.study)
        if experiment is None:
            return False
        self.experiment_id = experiment.experiment_id
        found = self._oldest_parent()
        if found is None or self.client.get_run(found[0]).info.status != "RUNNING":
            return False
        self.client.set_terminated(found[0], status=status)
        return True

    def _log_parent_setup(self) -> None:
        from mlflow.entities import Param

        params = {"backend": self.backend, **({"storage": self.storage} if self.storage else {}), **versions()}
        self.client.log_batch(self._parent_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
        if self.space:
            self.client.log_text(self._parent_id, yaml.safe_dump(self.space, sort_keys=False), "space.yaml")

    def record_progress(self, best: Mapping[str, Any] | None, counts: Mapping[str, int]) -> None:
        """Show the study's winner on the parent run, in the runs table's columns: the best objective as its
        ``objective`` metric, the best trial's loss as its ``aloss_tune.loss`` tag, the counts
        (``4 complete, 2 dead, 1 pruned, 0 failed``) as its ``aloss_tune.state`` tag.

        Sent by the background sender (training does not wait). The metric's step is the number of finished
        trials, so that the runs table (which shows a metric's value at its highest step) keeps the newest
        of several workers' updates.
        """
        if self.guard.failed is None:
            self._epoch_sender.submit(self._record_progress, best, dict(counts))

    def _record_progress(self, best: Mapping[str, Any] | None, counts: Mapping[str, int]) -> None:
        from mlflow.entities import Metric, RunTag

        run_id = self.parent_run_id
        if run_id is None:
            return
        step = sum(int(counts.get(state, 0)) for state in STATES)
        metrics, tags = [], [RunTag(STATE_TAG, counts_text(counts))]
        if best is not None and best.get("value") is not None:
            metrics.append(Metric("objective", float(best["value"]), int(time.time() * 1000), step))
        if best is not None and (best.get("params") or {}).get("loss"):
            tags.append(RunTag(LOSS_TAG, str(best["params"]["loss"])))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)

    def close(self, *, best: Mapping[str, Any] | None = None, status: str = "FINISHED",
              artifacts: Path | None = None, counts: Mapping[str, int] | None = None) -> None:
        """Log the best trial (params, value, loss config), the study's counts (`record_progress`) and
        artifacts on the parent, then end it."""
        run_id = self.parent_run_id
        if run_id is None:
            return
        self._epoch_sender.drain()  # updates still queued come before the final ones
        if counts is not None:
            self.guard(self._record_progress, best, counts)
        if best is not None:
            self.guard(self._log_best, run_id, best)
        if artifacts is not None and Path(artifacts).exists():
            self.guard(self.client.log_artifacts, run_id, str(artifacts))
        self.guard(self.client.set_terminated, run_id, status=status)

    def _log_best(self, run_id: str, best: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        tags = [RunTag(BEST_TRIAL_TAG, str(best.get("number"))),
                RunTag(BEST_LOSS_TAG, str(best.get("params", {}).get("loss")))]
        if (best.get("params") or {}).get("loss"):
            tags.append(RunTag(LOSS_TAG, str(best["params"]["loss"])))
        metrics = [Metric("best_objective", float(best["value"]), now, 0)] if best.get("value") is not None else []
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.log_dict(run_id, dict(best.get("params", {})), "best_params.json")
        if best.get("loss_config") is not None:
            self.client.log_dict(run_id, best["loss_config"], "best_loss_config.json")

    def sender(self) -> _Sender:
        """The background sender of this worker's epoch batches (one thread for all its trials)."""
        return self._epoch_sender

    # ------------------------------------------------------------------------------------------ trials
    def start_trial(self, number: int, params: Mapping[str, Any], *, seed: int,
                    extra: Mapping[str, Any] | None = None,
                    tags: Mapping[str, str] | None = None) -> TrialRun:
        """``trial-<number> <loss>`` under the parent, with its params (and ``tags``).

        The run is created by the background sender, ahead of the trial's epoch batches, so training does
        not wait for it; `TrialRun.resolve` waits for its id.
        """
        run = TrialRun(self, None, number, params)
        run.pending = self.guard.failed is None
        if run.pending:
            run._sender.submit(run._create, params, seed, extra or {}, tags or {})
        return run

    def _create_trial(self, number: int, params: Mapping[str, Any], seed: int, extra: Mapping[str, Any],
                      more_tags: Mapping[str, str]) -> str:
        from mlflow.entities import Param

        tags = {"mlflow.parentRunId": self.parent_run_id, STUDY_TAG: self.study, TRIAL_TAG: str(number),
                STATE_TAG: "running", BACKEND_TAG: self.backend, WORKER_TAG: worker_id(),
                **({LOSS_TAG: str(params["loss"])} if params.get("loss") else {}), **self.settings.tags,
                **more_tags}
        run = self.client.create_run(self._experiment, tags=tags,
                                     run_name=trial_run_name(number, params.get("loss")))
        all_params = {**params, "seed": seed, "backend": self.backend, **extra}
        self.client.log_batch(run.info.run_id,
                              params=[Param(k, _param_value(v)) for k, v in all_params.items()])
        return run.info.run_id

    # ------------------------------------------------------------------------------- lost trial runs
    def running_trials(self) -> dict[str, int] | None:
        """``{run_id: trial number}`` of the trial runs still ``RUNNING`` (``None``: tracking is off)."""
        if self.parent_run_id is None:
            return None
        runs = self.guard(
            self.client.search_runs, [self.experiment_id],
            filter_string=(f"tags.mlflow.parentRunId = '{self.parent_run_id}' "
                           "and attributes.status = 'RUNNING'"),
            max_results=10000,
        )
        if runs is None:
            return None
        out = {}
        for run in runs:
            number = run.data.tags.get(TRIAL_TAG, "")
            if number.isdigit():
                out[run.info.run_id] = int(number)
        return out

    def end_lost_run(self, run_id: str, state: str, *, objective: float | None = None,
                     error: str | None = None, status: str | None = None, lost: bool = False) -> bool:
        """End a trial run that its worker left ``RUNNING``, with the state the search backend recorded
        (``status``: the MLflow status, when not the state's usual one).

        Only a run still ``RUNNING`` is touched (a run its worker ended meanwhile is left as it is); it is
        tagged ``aloss_tune.reconciled``. ``lost``: the backend failed the trial because its worker died, so
        a run that worker ended (it died after ending the run, before the backend heard of the trial's end)
        is marked failed too, as the backend recorded the trial. Returns whether the run was ended here.
        """
        return bool(self.guard(self._end_lost_run, run_id, state, objective, error, status, lost))

    def _end_lost_run(self, run_id: str, state: str, objective: float | None, error: str | None,
                      status: str | None = None, lost: bool = False) -> bool:
        client = self.client  # MLflow imported (by whichever thread got there first) before anything else of it
        from mlflow.entities import Metric, RunTag

        was = client.get_run(run_id).info.status
        status = status or STATUS[state]
        if was != "RUNNING" and not (lost and was != status):
            return False
        how = f"ended by worker {worker_id()}"
        if was != "RUNNING":
            how = f"ended {was} by its worker, which died before the study recorded the trial; {how}"
        tags = [RunTag(STATE_TAG, state), RunTag(RECONCILED_TAG, how)]
        metrics = []
        if objective is not None:
            metrics.append(Metric("objective", float(objective), int(time.time() * 1000), 0))
        if error:
            tags.append(RunTag(ERROR_TAG, error.strip().splitlines()[-1][:500]))
            self.client.log_text(run_id, error, "error.txt")
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(run_id, status=status)
        return True


class _Sender:
    """One background thread that sends a trial's epoch batches in order, so training never waits on the
    tracking store. (MLflow's own ``synchronous=False`` queue is shut down by every ``set_terminated`` and
    restarted by the next batch, which costs most of a second per trial.)

    Nothing is sent before ``ready`` is set (the tracker has started: MLflow is imported, its store open, the
    parent run chosen): two threads importing MLflow's modules at once can deadlock on Python's import locks.
    """

    def __init__(self, guard: _Guard, ready: threading.Event | None = None):
        self.guard = guard
        self.ready = ready
        self.queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = queue.Queue()
        self.thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._run, name="aloss-tune-tracking", daemon=True)
            self.thread.start()
        self.queue.put((fn, args, kwargs))

    def _run(self) -> None:
        while True:
            fn, args, kwargs = self.queue.get()
            try:
                self._call(fn, args, kwargs)
            finally:
                self.queue.task_done()

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Send one item (guarded: a store that fails switches tracking off)."""
        if self.ready is not None:
            self.ready.wait()
        self.guard(fn, *args, **kwargs)

    def drain(self) -> None:
        """Wait until everything submitted is sent (or given up on by the guard)."""
        self.queue.join()


class TrialRun:
    """One trial's child run. Every method is a no-op when tracking is off or has failed."""

    def __init__(self, tracker: StudyTracker, run_id: str | None, number: int,
                 params: Mapping[str, Any] | None = None):
        self.tracker = tracker
        self.run_id = run_id
        self.number = number
        self.params = dict(params or {})
        self.finished = False
        self.pending = False  # its creation is queued on the sender
        self._sender = tracker.sender()
        self._epochs: list[tuple[str, float, int, int]] = []  # (key, value, time, step) not sent yet
        self._sent_at = -math.inf  # the first epoch goes at once

    def _create(self, params: Mapping[str, Any], seed: int, extra: Mapping[str, Any],
                tags: Mapping[str, str]) -> None:
        try:
            self.run_id = self.tracker._create_trial(self.number, params, seed, extra, tags)
        finally:
            self.pending = False

    def resolve(self) -> str | None:
        """The run's id, once created (``None`` if tracking is off or failed)."""
        if self.pending:
            self._sender.drain()
        return self.run_id

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Every metric of one epoch, at ``step=epoch`` and with the epoch's time.

        Epochs are sent in batches from the background sender, in order: the first at once, then those of every
        `EPOCH_BATCH_S` seconds in one call (an MLflow call costs several times one epoch's rows, and shares
        the cores training runs on); `flush` and `finish` send what is left.
        """
        if self.tracker.guard.failed is not None or (self.run_id is None and not self.pending):
            return  # tracking is off for this worker, or this run was never queued
        now = int(time.time() * 1000)
        self._epochs.extend((k, float(v), now, int(epoch)) for k, v in metrics.items())
        if time.monotonic() >= self._sent_at + EPOCH_BATCH_S or len(self._epochs) >= MAX_BATCH_METRICS:
            self._send_epochs()

    def _send_epochs(self) -> None:
        self._sent_at = time.monotonic()
        if self._epochs:
            rows, self._epochs = self._epochs, []
            self._sender.submit(self._send, rows)

    def _send(self, rows: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric  # in the sender: training never waits for MLflow's import

        if self.run_id is not None:
            self.tracker.client.log_batch(self.run_id, metrics=[Metric(*row) for row in rows])

    def flush(self) -> None:
        """Send the epochs not sent yet and wait until every one is stored."""
        self._send_epochs()
        self._sender.drain()

    def finish(self, state: str, *, objective: float | None = None, loss_config: Mapping[str, Any] | None = None,
               error: str | None = None, status: str | None = None) -> None:
        """End the run: ``complete`` -> FINISHED, ``pruned`` -> KILLED, ``failed`` -> FAILED (+ error.txt),
        ``dead`` -> KILLED (stopped early), or ``status`` when given (FINISHED for a dead trial that ran all
        its epochs).

        Every run gets ``loss_config.json``: without ``loss_config`` (a trial pruned or failed before it had
        one) it is made from the params the trial started with.
        """
        if self.finished:
            return
        self.finished = True
        self.flush()
        if self.run_id is None:
            return
        if loss_config is None:
            loss_config = self._config_from_params()
        self.tracker.guard(self._finish, state, objective, loss_config, error, status)

    def _config_from_params(self) -> dict[str, Any] | None:
        if not self.params.get("loss"):
            return None
        from aloss_tune.runner import loss_config

        try:
            return loss_config(self.params)
        except Exception as exc:  # noqa: BLE001 - params no loss can be built from (the trial's failure)
            _log.debug("trial %d: no loss config (%s: %s)", self.number, type(exc).__name__, exc)
            return None

    def _finish(self, state: str, objective: float | None, loss_config: Mapping[str, Any] | None,
                error: str | None, status: str | None = None) -> None:
        client, run_id = self.tracker.client, self.run_id  # MLflow imported before anything else of it
        from mlflow.entities import Metric, RunTag

        if run_id is None:  # never created (tracking went off before the sender reached it)
            return
        tags = [RunTag(STATE_TAG, state)]
        metrics = []
        if objective is not None:
            metrics.append(Metric("objective", float(objective), int(time.time() * 1000), 0))
        if error:
            error = redact_text(error, *self.tracker._urls)
            tags.append(RunTag(ERROR_TAG, error.strip().splitlines()[-1][:500] if error.strip() else ""))
            client.log_text(run_id, error, "error.txt")
        client.log_batch(run_id, metrics=metrics, tags=tags)
        if loss_config is not None:
            client.log_dict(run_id, dict(loss_config), "loss_config.json")
        client.set_terminated(run_id, status=status or STATUS[state])


def tag_filter(key: str, value: str) -> str:
    """An MLflow search filter for the runs whose tag ``key`` is ``value``, and possibly a few more.

    MLflow's filter grammar takes a value verbatim between single or double quotes, with no escape
    (``'bob\\'s'`` looks for a backslash). So a value without ``'`` goes between single quotes, one with ``'``
    but no ``"`` between double quotes, and one with both becomes a ``LIKE`` pattern with ``_`` in place of
    each quote and backslash: it also matches other values, so check the tag of what it returns
    (`study_runs` does).
    """
    if "'" not in value:
        return f"tags.`{key}` = '{value}'"
    if '"' not in value:
        return f'tags.`{key}` = "{value}"'
    pattern = "".join("_" if c in "'\"\\" else c for c in value)
    return f"tags.`{key}` LIKE '{pattern}'"


def study_runs(client: Any, experiment_id: str, study: str, *, max_results: int = 1000) -> list[Any]:
    """The runs (parent and trials) tagged with ``study``, oldest first."""
    flt = tag_filter(STUDY_TAG, study)
    if " LIKE " in flt:  # a pattern: look further, the exact check comes after
        max_results = max(max_results, 1000)
    runs = client.search_runs([experiment_id], filter_string=flt, order_by=["attributes.start_time ASC"],
                              max_results=max_results)
    return [r for r in runs if r.data.tags.get(STUDY_TAG) == study]
