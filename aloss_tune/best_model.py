"""The best trial's trained model in MLflow (``tune(..., log_model=True)``, ``aloss-tune tune --log-model``).

Nothing is retrained and no model is kept in memory from one trial to the next:

* **Optuna**: every trial of a worker trains with `BestEpoch`, which gives the model back at the end of
  ``fit`` with its best epoch's weights (the epoch whose validation score is the trial's objective, as
  early stopping's ``restore_best_weights`` does). When a trial beats this worker's earlier trials its
  weights are written to a temporary file (`BestWeights.offer`, one ``save_weights``), replacing the
  previous one. When the worker ends and the study's best trial is its own, it rebuilds that model (the
  trial's params through the study's model builder, then the saved weights) and logs it. With many
  workers, on one machine or many, the worker that ran the best trial is the one that logs it.
* **KerasTuner**: the tuner keeps each trial's best-epoch checkpoint already; the study's best trial's
  model is rebuilt from it when the search ends (by the chief in distributed mode).

What is logged (`log_best_model`): one MLflow 3 LoggedModel named ``best_model`` in the study's experiment,
its source run the best trial's run, with the trial's flat params:

* its Keras flavor (``mlflow.keras.load_model`` / ``mlflow.pyfunc.load_model``) is the export-ready copy
  (`aloss_tune.export`): the plain Keras model, which loads and serves without aloss-tune;
* ``loss_config.json``: the trial's loss (``aloss_tune.load_loss`` rebuilds it);
* ``training/model.keras``: the trained model as it was compiled, with its loss (and, for an adaptive or
  penalised loss, the learned alpha and scale), to train further (``import aloss_tune`` before loading it).

With ``register`` it becomes a new version of that registered model in the Model Registry. The study's
parent run is tagged with the model's URI (``aloss_tune.best_model``) and the registered version
(``aloss_tune.registered_model``, ``<name>/<version>``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from aloss_tune._schema import (
    BACKEND_TAG,
    BEST_MODEL_NAME,
    BEST_MODEL_TAG,
    BEST_MODEL_TRIAL_TAG,
    LOSS_CONFIG_ARTIFACT,
    OBJECTIVE_TAG,
    REGISTERED_MODEL_TAG,
    STUDY_TAG,
    TRIAL_TAG,
)
from aloss_tune.errors import UsageError, describe

_log = logging.getLogger("aloss_tune.best_model")

TRAINING_MODEL = "training/model.keras"
_BACKEND_DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax",), "torch": ("torch",)}


def check_model_name(name: Any) -> str:
    """A registered model name as MLflow's registry accepts it (`UsageError` naming the rule otherwise)."""
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"register: a registered model name must be a non-empty name, but got {describe(name)}.")
    if "/" in name or ":" in name:
        raise UsageError(f"register: {name!r} is not a valid registered model name: names cannot contain '/' "
                         "or ':'.")
    return name


@dataclass(frozen=True)
class LoggedBestModel:
    """Where the best trial's model went: ``uri`` (``models:/<model_id>``) and, when registered, the
    registered model's ``name`` and ``version``."""

    uri: str
    model_id: str
    trial: int
    registered_name: str | None = None
    registered_version: str | None = None

    @property
    def registered(self) -> str | None:
        """``<name>/<version>``, or ``None``."""
        return f"{self.registered_name}/{self.registered_version}" if self.registered_version else None


class BestEpoch(keras.callbacks.Callback):
    """Gives the model back, at the end of ``fit``, with the weights of its best epoch on ``monitor``
    (non-finite values never count); held in memory during one ``fit`` only."""

    def __init__(self, monitor: str, direction: str):
        super().__init__()
        self.monitor = monitor
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.best = math.inf
        self.weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(float(value)) and self.sign * float(value) < self.best:
            self.best = self.sign * float(value)
            self.weights = self.model.get_weights()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class BestWeights:
    """This worker's best trial so far, on disk: its number, value, params and weights.

    `callback` goes into every trial's ``fit``; `offer` saves a finished trial's weights when it beats this
    worker's earlier trials. `close` removes the file.
    """

    def __init__(self, metric: str, direction: str):
        self.metric = metric
        self.direction = direction
        self.folder = Path(tempfile.mkdtemp(prefix="aloss_tune_best_"))
        self.path = self.folder / "best.weights.h5"
        self.number: int | None = None
        self.value: float | None = None
        self.params: dict[str, Any] = {}
        self.run_id: str | None = None

    def callback(self) -> BestEpoch:
        return BestEpoch(self.metric, self.direction)

    def offer(self, number: int, value: float, params: Mapping[str, Any], model: keras.Model,
              run_id: str | None) -> bool:
        """Keep ``model``'s weights if trial ``number`` is this worker's best so far; returns whether it is."""
        if not math.isfinite(value):
            return False
        if self.value is not None and not (value < self.value if self.direction == "minimize"
                                           else value > self.value):
            return False
        try:
            model.save_weights(str(self.path))
        except Exception as exc:  # noqa: BLE001 - a full disk costs the logged model, never the trial
            _log.warning("trial %d: could not keep its weights for the best model (%s: %s).", number,
                         type(exc).__name__, exc)
            self.number = self.value = None
            return False
        self.number, self.value, self.params, self.run_id = number, float(value), dict(params), run_id
        return True

    def model(self, ctx: Any) -> keras.Model:
        """The kept trial's trained model, rebuilt: its params through the study's builder, then its weights."""
        from aloss_tune.runner import build_trial_model

        model, _ = build_trial_model(ctx, self.params)
        if not model.built:  # an attached model (learned loss parameters) builds on its first call
            model.build((None, *ctx.data.x_train.shape[1:]))
        model.optimizer.build(model.trainable_variables)
        model.load_weights(str(self.path))
        return model

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def requirements() -> list[str]:
    """The pip requirements of the export-ready copy: Keras and the backend it was saved with (pinned)."""
    out = [f"keras=={keras.__version__}"]
    for dist in _BACKEND_DISTRIBUTIONS.get(keras.backend.backend(), ()):
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def log_best_model(tracker: Any, model: keras.Model, *, number: int, value: float | None,
                   params: Mapping[str, Any], loss_config: Mapping[str, Any] | None, run_id: str | None,
                   x_example: Any, register: str | None = None,
                   still_best: Callable[[], AbstractContextManager[bool]] | None = None) -> LoggedBestModel:
    """Log ``model`` (trial ``number``'s trained model) as the study's ``best_model`` (see the module
    docstring); returns where it went. Raises whatever MLflow raises.

    ``still_best()``: with many workers, a context whose value says whether trial ``number`` is still the
    study's best, held while the parent run's tags are written (a lock over the check and the write). A
    worker whose best trial was beaten while it logged the model then leaves the tags to the better trial's
    worker, whichever of them writes last.
    """
    import mlflow.keras
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model, infer_signature

    from aloss_tune.losses import export

    client = tracker.client
    parent = tracker.parent_run_id
    source = run_id or parent
    plain = export(model)
    example = np.asarray(x_example[:5])
    signature = infer_signature(example, np.asarray(plain.predict(example, verbose=0)))
    tags = {STUDY_TAG: tracker.study, TRIAL_TAG: str(number), BACKEND_TAG: tracker.backend}
    if value is not None:
        tags[OBJECTIVE_TAG] = repr(float(value))
    logged = client.create_logged_model(
        tracker.experiment_id, name=BEST_MODEL_NAME, source_run_id=source,
        params={str(k): _text(v) for k, v in params.items()}, tags=tags)
    try:
        with tempfile.TemporaryDirectory(prefix="aloss_tune_model_") as tmp:
            path = os.path.join(tmp, "model")
            mlflow_model = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                 run_id=source, model_id=logged.model_id)
            mlflow.keras.save_model(plain, path, mlflow_model=mlflow_model, signature=signature,
                                    pip_requirements=requirements())
            if loss_config is not None:
                Path(path, LOSS_CONFIG_ARTIFACT).write_text(json.dumps(loss_config, indent=1), encoding="utf-8")
            Path(path, TRAINING_MODEL).parent.mkdir()
            model.save(os.path.join(path, TRAINING_MODEL))
            client.log_model_artifacts(logged.model_id, path)
        if source is not None:
            client.log_outputs(source, [LoggedModelOutput(logged.model_id, step=0)])
        client.finalize_logged_model(logged.model_id, "READY")
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    result = LoggedBestModel(uri=f"models:/{logged.model_id}", model_id=logged.model_id, trial=number)
    if register:
        version = _register(client, register, logged, source, tags, tracker.settings.tracking_uri)
        result = LoggedBestModel(uri=result.uri, model_id=result.model_id, trial=number,
                                 registered_name=register, registered_version=str(version))
    parent_tags = {BEST_MODEL_TAG: result.uri, BEST_MODEL_TRIAL_TAG: str(number)}
    if result.registered:
        parent_tags[REGISTERED_MODEL_TAG] = result.registered
    with still_best() if still_best is not None else contextlib.nullcontext(True) as best_now:
        if parent is not None and best_now:
            for key, tag in parent_tags.items():
                client.set_tag(parent, key, tag)
    return result


def _register(client: Any, name: str, logged: Any, run_id: str | None, tags: Mapping[str, str],
              tracking_uri: str) -> str:
    """A new version of the registered model ``name`` (created if missing) for the LoggedModel ``logged``."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(name, description="The best model of aloss-tune studies.")
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    # The version's source is the LoggedModel's URI, as `mlflow.<flavor>.log_model(registered_model_name=...)`
    # records it. MLflow 3.17's SQL registry looks such a source up through the process-wide tracking URI,
    # not through its client's (a tracking server does the lookup on its side): point it at ours meanwhile,
    # or, where MLflow offers no way to, register the model's artifact location instead.
    source, scope = logged.model_uri, contextlib.nullcontext()
    if not tracking_uri.startswith(("http://", "https://")):
        from mlflow.tracking._tracking_service import utils

        use = getattr(utils, "_use_tracking_uri", None)
        if use is None:
            source = logged.artifact_location
        else:
            scope = use(tracking_uri)
    with scope:
        version = client.create_model_version(name, source=source, run_id=run_id, tags=dict(tags),
                                              model_id=logged.model_id)
    return str(version.version)


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _logged_before(tracker: Any, number: Any) -> LoggedBestModel | None:
    """The model of the study's best trial ``number`` that another worker (or an earlier command) logged, as
    the parent run's tags record it; ``None`` if there is none (yet: its worker may still be running)."""
    try:
        tags = tracker.client.get_run(tracker.parent_run_id).data.tags
    except Exception as exc:  # noqa: BLE001 - only what the result reports is missing
        _log.debug("could not read the parent run's tags: %s", exc)
        return None
    if tags.get(BEST_MODEL_TRIAL_TAG) != str(number) or not tags.get(BEST_MODEL_TAG):
        return None
    uri = tags[BEST_MODEL_TAG]
    name, _, version = (tags.get(REGISTERED_MODEL_TAG) or "").rpartition("/")
    return LoggedBestModel(uri=uri, model_id=uri.removeprefix("models:/"), trial=int(number),
                           registered_name=name or None, registered_version=version or None)


def log_if_best(tracker: Any, keeper: BestWeights | None, best: Mapping[str, Any] | None, ctx: Any, *,
                register: str | None = None,
                still_best: Callable[[], AbstractContextManager[bool]] | None = None) -> LoggedBestModel | None:
    """Log the study's best trial's model when this worker kept it (`BestWeights`); otherwise the one logged
    for that trial before (by another worker, or an earlier command on the study), or ``None``.
    ``still_best``: as in `log_best_model`.

    A failure is a warning: the study and everything else it logged stand.
    """
    if tracker is None or keeper is None or best is None or tracker.parent_run_id is None:
        return None
    if keeper.number is None or best.get("number") != keeper.number:
        return _logged_before(tracker, best.get("number"))
    try:
        model = keeper.model(ctx)
        return log_best_model(tracker, model, number=keeper.number, value=keeper.value, params=keeper.params,
                              loss_config=best.get("loss_config"), run_id=keeper.run_id,
                              x_example=ctx.data.x_val, register=register, still_best=still_best)
    except Exception as exc:  # noqa: BLE001 - the study's results are stored; only the model is missing
        _log.warning("could not log the best trial's model (trial %d) to MLflow: %s: %s", keeper.number,
                     type(exc).__name__, " ".join(str(exc).split())[:300])
        return None
