"""Best-loss import: rebuild the winning loss anywhere, later, from a study, an MLflow run or a file.

::

    import aloss_tune
    loss = aloss_tune.load_best_loss("robust_regression")           # from the study's storage
    loss = aloss_tune.load_loss("runs:/<run_id>")                   # from a trial's (or the study's) run
    loss = aloss_tune.load_loss("best_loss.json")                   # from an exported file
    model = aloss_tune.attach(model, loss)                          # adaptive / penalised losses only
    model.compile(optimizer="adam", loss=loss)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from aloss_tune.errors import ConfigError, UsageError, describe
from aloss_tune.factories import build_loss

ENV_STORAGE = "ALOSS_TUNE_STORAGE"


def default_storage() -> str:
    return os.environ.get(ENV_STORAGE, "sqlite:///aloss_tune.db")


def loss_from_config(config: Mapping[str, Any], *, source: str = "") -> keras.losses.Loss:
    """A loss from a loss-config artifact (``{"params", "keras"}``), a Keras serialization or flat params.

    Always a `keras.losses.Loss`: anything else (a layer's or an optimizer's serialization, a list) is a
    `ConfigError` naming ``source`` (a file or a run) when given.
    """
    import aloss_tune.losses  # noqa: F401  (registers our classes for deserialization)

    where = f"{source}: " if source else ""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}a loss config must be a mapping, but got a {type(config).__name__}.")
    if "keras" in config and isinstance(config["keras"], Mapping):
        return _deserialize(dict(config["keras"]), where)
    if "class_name" in config:
        return _deserialize(dict(config), where)
    if isinstance(config.get("loss"), str):
        return build_loss(config)
    if isinstance(config.get("params"), Mapping):
        return build_loss(config["params"])
    raise ConfigError(
        f"{where}a loss config must hold flat params ({{'loss': 'huber', ...}}), a Keras serialization "
        f"({{'class_name': ...}}) or both ({{'params', 'keras'}}), but got keys {sorted(map(str, config))}."
    )


def _deserialize(config: dict[str, Any], where: str) -> keras.losses.Loss:
    name = config.get("class_name")
    try:
        obj = keras.saving.deserialize_keras_object(config)
    except Exception as exc:  # noqa: BLE001 - Keras raises TypeError, ValueError, ... for unknown objects
        raise ConfigError(f"{where}cannot rebuild {name!r} from its Keras serialization "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}).") from None
    if not isinstance(obj, keras.losses.Loss):
        raise ConfigError(f"{where}holds a {type(obj).__name__} ({name!r}), not a keras.losses.Loss.")
    return obj


def load_loss(source: Any, *, tracking_uri: str | None = None) -> keras.losses.Loss:
    """Rebuild a loss from a dict, a JSON file path, or an MLflow URI ``runs:/<run_id>[/artifact.json]``.

    For a trial's run the artifact is ``loss_config.json``; for a study's parent run,
    ``best_loss_config.json``.
    """
    if isinstance(source, keras.losses.Loss):
        return source
    if isinstance(source, Mapping):
        return loss_from_config(source)
    if isinstance(source, (str, Path)):
        text = str(source)
        if text.startswith("runs:/"):
            return loss_from_config(_config_from_run(text, tracking_uri), source=text)
        path = Path(text)
        if not path.exists():
            raise UsageError(f"load_loss: no such file {text!r} (give a JSON file, a dict or 'runs:/<run_id>').")
        if path.is_dir():
            raise ConfigError(f"load_loss: {text!r} is a folder; give a loss config JSON file, a dict or "
                              "'runs:/<run_id>'.")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror or exc}).") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text (UTF-8) JSON file.") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
        return loss_from_config(config, source=str(path))
    raise ConfigError(f"load_loss: cannot load a loss from {describe(source)}.")


def _config_from_run(uri: str, tracking_uri: str | None) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from aloss_tune.tracking import check_tracking_scheme, load_settings, missing_store

    rest = uri[len("runs:/"):].strip("/")
    run_id, _, artifact = rest.partition("/")
    if not run_id:
        raise ConfigError(f"load_loss: {uri!r} must look like runs:/<run_id>.")
    uri = load_settings(tracking_uri=tracking_uri).tracking_uri
    check_tracking_scheme(uri)
    store = missing_store(uri)
    if store is not None:  # MLflow would create an empty store to look for the run
        raise UsageError(f"load_loss: no run {run_id}: the MLflow tracking store file {store} does not exist "
                         "(give the tracking URI where the study logged).")
    client = MlflowClient(tracking_uri=uri)
    candidates = [artifact] if artifact else ["loss_config.json", "best_loss_config.json"]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in candidates:
            try:
                local = client.download_artifacts(run_id, name, tmp)
            except (MlflowException, OSError):
                continue
            return json.loads(Path(local).read_text(encoding="utf-8"))
    raise UsageError(f"load_loss: run {run_id} has no {' or '.join(candidates)} artifact.")


def best_trial_summary(study_name: str, storage: str | None = None, *, backend: str = "optuna",
                       directory: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """``{number, value, params, loss_config}`` of a study's best finished trial.

    A KerasTuner study (``backend="keras-tuner"``) is read from its project under ``directory`` (default
    ``kt_projects``), or, when that project is not there, from its MLflow parent run at ``tracking_uri``.
    """
    if backend == "keras-tuner":
        from aloss_tune.backends import keras_tuner as kt_backend

        return kt_backend.best_summary(study_name, directory=directory, tracking_uri=tracking_uri)
    import optuna

    from aloss_tune.backends.optuna import best_summary, open_existing_storage

    store = open_existing_storage(storage or default_storage(), study_name)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
        known = ", ".join(names) if names else "none"
        raise UsageError(f"no study named {study_name!r} in this storage; studies there: {known}.") from None
    best = best_summary(study)
    if best is None:
        raise UsageError(f"study {study_name!r} has no finished trial yet.")
    return best


def load_best_params(study_name: str, storage: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """The best trial's flat params dict (loss, model and optimizer)."""
    return dict(best_trial_summary(study_name, storage, **kwargs)["params"])


def load_best_loss(study_name: str, storage: str | None = None, **kwargs: Any) -> keras.losses.Loss:
    """The best trial's loss, rebuilt with its exact config.

    Args:
        study_name: the study (the ``study:`` of its space).
        storage: the Optuna storage URL (default ``$ALOSS_TUNE_STORAGE`` or ``sqlite:///aloss_tune.db``).
        backend: ``optuna`` (default) or ``keras-tuner``; ``directory``: KerasTuner's project root;
            ``tracking_uri``: where to find a KerasTuner study whose project directory is not at hand.

    Losses with learned parameters or a weight penalty must be applied with
    ``model = aloss_tune.attach(model, loss)`` before ``compile``.
    """
    best = best_trial_summary(study_name, storage, **kwargs)
    if best.get("loss_config"):
        return loss_from_config(best["loss_config"])
    return build_loss(best["params"])


def python_snippet(params: Mapping[str, Any]) -> str:
    """Python code that rebuilds the loss of ``params`` (for ``aloss-tune best --format python``)."""
    loss_params = {k: v for k, v in params.items() if k == "loss" or k.startswith("loss.")}
    loss = build_loss(loss_params)
    import pprint

    from aloss_tune.losses import needs_model

    body = pprint.pformat(loss_params, sort_dicts=False, width=100)
    lines = [
        "import aloss_tune",
        "",
        f"loss = aloss_tune.build_loss({body})",
    ]
    if needs_model(loss):
        lines.append("model = aloss_tune.attach(model, loss)  # learned loss parameters / weight penalty")
    lines.append('model.compile(optimizer="adam", loss=loss)')
    return "\n".join(lines)
