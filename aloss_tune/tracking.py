"""MLflow tracking: one parent run per study, one child run per trial, nothing lost or left RUNNING.

Layout (the same for every backend):

* experiment = the study name (or ``experiment`` from ``mlflow.yaml``);
* the study's **parent run**, tagged ``aloss_tune.study=<study>``; a worker that joins or resumes finds it by
  that tag instead of creating another; it holds the space (``space.yaml``), the backend, the redacted
  storage URL and, when a worker ends, the best params, value and loss config;
* one **child run per trial**, named ``trial-<n>``, its parent set explicitly with the
  ``mlflow.parentRunId`` tag (works across processes and machines). Params = the flat params dict plus
  seed, backend and versions, logged when the trial *starts* (so pruned and failed trials keep them);
  metrics once per epoch with ``step=epoch`` in one batch (including learned ``alpha``/``scale``); the
  final ``objective``; ``loss_config.json``; status complete -> FINISHED, pruned -> KILLED,
  failed -> FAILED with ``error.txt``.

Settings come from ``mlflow.yaml`` (``tracking_uri``, ``experiment``, ``tags``, ``enabled``), overridden by
the ``MLFLOW_TRACKING_URI`` environment variable, overridden by explicit arguments (CLI flags).

If the tracking server goes away mid-study, training goes on: the failing call is retried once, then
tracking for the rest of this worker is switched off with one warning, and the study's results stay
complete in the search backend's own storage (from which ``aloss-tune best`` and ``report`` work). Nothing
already logged is touched.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from aloss_tune._urls import redact_text, redact_url
from aloss_tune.errors import ConfigError, UsageError, describe

_log = logging.getLogger("aloss_tune.tracking")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
STUDY_TAG = "aloss_tune.study"
STATE_TAG = "aloss_tune.state"
TRIAL_TAG = "aloss_tune.trial"
STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


@dataclass(frozen=True)
class TrackingSettings:
    """Where and how to log. ``tracking_uri`` is never logged with its password."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True


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


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (`UsageError`) if the tracking store cannot be reached, before any training starts."""
    shown = redact_url(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status != 200:
                    raise UsageError(f"tracking server {shown} answered /health with HTTP {response.status}.")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UsageError(f"cannot reach the MLflow tracking server {shown}: {reason}.") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.exists():
            raise UsageError(f"tracking store {shown}: folder {folder} does not exist.")
        if not os.access(folder, os.W_OK):
            raise UsageError(f"tracking store {shown}: folder {folder} is not writable.")


def versions() -> dict[str, str]:
    """Versions worth logging with every trial (reproducibility)."""
    import keras

    out = {"keras": keras.__version__, "keras_backend": keras.backend.backend(), "python": platform.python_version()}
    from aloss_tune import __version__

    out["aloss_tune"] = __version__
    return out


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


class _Guard:
    """Runs tracking calls; after a call fails twice, switches tracking off for this worker with one warning."""

    def __init__(self, uri: str):
        self.uri = uri
        self.failed: str | None = None

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None:
            return None
        for attempt in (0, 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any MLflow/network error
                if attempt == 0:
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
    """

    def __init__(self, settings: TrackingSettings, study: str, *, backend: str,
                 space: Mapping[str, Any] | None = None, storage: str | None = None):
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.study = study
        self.backend = backend
        self.space = dict(space or {})
        self.storage = redact_url(storage)
        self.client = MlflowClient(tracking_uri=settings.tracking_uri)
        self.guard = _Guard(settings.tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None

    # ------------------------------------------------------------------------------------------ parent
    def open(self) -> str:
        """Find the study's parent run by tag, or create it; mark it RUNNING. Returns its id."""
        name = self.settings.experiment or self.study
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(name)
            except Exception:  # noqa: BLE001 - created meanwhile by another worker
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            if experiment.lifecycle_stage != "active":
                raise UsageError(f"MLflow experiment {name!r} is deleted; restore it or choose another name.")
            self.experiment_id = experiment.experiment_id
        existing = self.find_parent()
        if existing is None:
            tags = {STUDY_TAG: self.study, "aloss_tune.backend": self.backend, **self.settings.tags}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=self.study)
            self.parent_run_id = run.info.run_id
            # Two workers may create a parent at the same moment: keep the oldest, remove ours if it lost.
            winner = self.find_parent()
            if winner is not None and winner != self.parent_run_id:
                self.client.delete_run(self.parent_run_id)
                self.parent_run_id = winner
            else:
                self._log_parent_setup()
        else:
            self.parent_run_id = existing
            self.client.update_run(self.parent_run_id, status="RUNNING")
        return self.parent_run_id

    def find_parent(self) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{_quote(self.study)}'",
            order_by=["attributes.start_time ASC"], max_results=5,
        )
        runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        if not runs:
            return None
        runs.sort(key=lambda r: (r.info.start_time, r.info.run_id))
        return runs[0].info.run_id

    def _log_parent_setup(self) -> None:
        from mlflow.entities import Param

        params = {"backend": self.backend, **({"storage": self.storage} if self.storage else {}), **versions()}
        self.client.log_batch(self.parent_run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
        if self.space:
            self.client.log_text(self.parent_run_id, yaml.safe_dump(self.space, sort_keys=False), "space.yaml")

    def close(self, *, best: Mapping[str, Any] | None = None, status: str = "FINISHED",
              artifacts: Path | None = None) -> None:
        """Log the best trial (params, value, loss config) and artifacts on the parent, then end it."""
        run_id = self.parent_run_id
        if run_id is None:
            return
        if best is not None:
            self.guard(self._log_best, run_id, best)
        if artifacts is not None and Path(artifacts).exists():
            self.guard(self.client.log_artifacts, run_id, str(artifacts))
        self.guard(self.client.set_terminated, run_id, status=status)

    def _log_best(self, run_id: str, best: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        tags = [RunTag("aloss_tune.best_trial", str(best.get("number"))),
                RunTag("aloss_tune.best_loss", str(best.get("params", {}).get("loss")))]
        metrics = [Metric("best_objective", float(best["value"]), now, 0)] if best.get("value") is not None else []
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.log_dict(run_id, dict(best.get("params", {})), "best_params.json")
        if best.get("loss_config") is not None:
            self.client.log_dict(run_id, best["loss_config"], "best_loss_config.json")

    # ------------------------------------------------------------------------------------------ trials
    def start_trial(self, number: int, params: Mapping[str, Any], *, seed: int,
                    extra: Mapping[str, Any] | None = None) -> TrialRun:
        """Create ``trial-<number>`` under the parent and log its params now."""
        run_id = self.guard(self._create_trial, number, params, seed, extra or {})
        return TrialRun(self, run_id, number)

    def _create_trial(self, number: int, params: Mapping[str, Any], seed: int, extra: Mapping[str, Any]) -> str:
        from mlflow.entities import Param

        tags = {"mlflow.parentRunId": self.parent_run_id, STUDY_TAG: self.study, TRIAL_TAG: str(number),
                "aloss_tune.backend": self.backend, **self.settings.tags}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"trial-{number}")
        all_params = {**params, "seed": seed, "backend": self.backend, **extra}
        self.client.log_batch(run.info.run_id,
                              params=[Param(k, _param_value(v)) for k, v in all_params.items()])
        return run.info.run_id

    def children(self) -> list[Any]:
        """The trial runs of this study (for tests and reports)."""
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
            max_results=10000,
        )


class TrialRun:
    """One trial's child run. Every method is a no-op when tracking is off or has failed."""

    def __init__(self, tracker: StudyTracker, run_id: str | None, number: int):
        self.tracker = tracker
        self.run_id = run_id
        self.number = number
        self.finished = False
        self._pending: list[Any] = []

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """All of one epoch's metrics in one batch, at ``step=epoch``.

        Sent asynchronously (MLflow's background queue), so training never waits on the tracking store;
        `finish` waits for every pending batch before it ends the run.
        """
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(epoch)) for k, v in metrics.items()]
        operation = self.tracker.guard(self.tracker.client.log_batch, self.run_id, metrics=batch, synchronous=False)
        if operation is not None:
            self._pending.append(operation)

    def flush(self) -> None:
        """Wait until every epoch batch is stored."""
        pending, self._pending = self._pending, []
        for operation in pending:
            self.tracker.guard(operation.wait)

    def finish(self, state: str, *, objective: float | None = None, loss_config: Mapping[str, Any] | None = None,
               error: str | None = None) -> None:
        """End the run: ``complete`` -> FINISHED, ``pruned`` -> KILLED, ``failed`` -> FAILED (+ error.txt)."""
        if self.run_id is None or self.finished:
            return
        self.finished = True
        self.flush()
        self.tracker.guard(self._finish, state, objective, loss_config, error)

    def _finish(self, state: str, objective: float | None, loss_config: Mapping[str, Any] | None,
                error: str | None) -> None:
        from mlflow.entities import Metric, RunTag

        client, run_id = self.tracker.client, self.run_id
        tags = [RunTag(STATE_TAG, state)]
        metrics = []
        if objective is not None:
            metrics.append(Metric("objective", float(objective), int(time.time() * 1000), 0))
        if error:
            error = redact_text(error, self.tracker.settings.tracking_uri)
            tags.append(RunTag("aloss_tune.error", error.strip().splitlines()[-1][:500] if error.strip() else ""))
            client.log_text(run_id, error, "error.txt")
        client.log_batch(run_id, metrics=metrics, tags=tags)
        if loss_config is not None:
            client.log_dict(run_id, dict(loss_config), "loss_config.json")
        client.set_terminated(run_id, status=STATUS[state])


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
