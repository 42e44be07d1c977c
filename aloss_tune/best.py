"""Best-loss import: rebuild the winning loss anywhere, later, from a study, an MLflow run or a file.

::

    import aloss_tune
    loss = aloss_tune.load_best_loss("robust_regression")           # from the study's storage
    loss = aloss_tune.load_loss("runs:/<run_id>")                   # from a trial's (or the study's) run
    loss = aloss_tune.load_loss("best_loss.json")                   # from an exported file
    model = aloss_tune.attach(model, loss)                          # adaptive / penalised losses only
    model.compile(optimizer="adam", loss=loss)

Reading a study's best trial or writing it as code (`best_trial_summary`, `python_snippet`; ``aloss-tune
best``) needs no Keras: the params are checked against the factories' declarations. Keras loads when a loss
is built.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aloss_tune._schema import ENV_STORAGE, default_storage  # noqa: F401 - re-exported
from aloss_tune._urls import redact_url
from aloss_tune.errors import ConfigError, UsageError, describe
from aloss_tune.factories import (  # noqa: F401 - re-exported
    build_loss,
    check_loss_config,
    check_params,
    loss_from_config,
)

if TYPE_CHECKING:
    import keras


def load_loss(source: Any, *, tracking_uri: str | None = None) -> keras.losses.Loss:
    """Rebuild a loss from a dict, a JSON file path, or an MLflow URI ``runs:/<run_id>[/artifact.json]``.

    For a trial's run the artifact is ``loss_config.json``; for a study's parent run,
    ``best_loss_config.json``.
    """
    if _is_loss(source):
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


def _is_loss(value: Any) -> bool:
    """Whether ``value`` is a `keras.losses.Loss` (none can exist before Keras is imported)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(value, keras.losses.Loss)


def _config_from_run(uri: str, tracking_uri: str | None) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from aloss_tune.tracking import check_tracking_scheme, load_settings, quiet_mlflow, unreadable_store

    rest = uri[len("runs:/"):].strip("/")
    run_id, _, artifact = rest.partition("/")
    if not run_id:
        raise ConfigError(f"load_loss: {uri!r} must look like runs:/<run_id>.")
    uri = load_settings(tracking_uri=tracking_uri).tracking_uri
    check_tracking_scheme(uri)
    problem = unreadable_store(uri)
    if problem is not None:  # MLflow would create its tables in the file to look for the run
        raise UsageError(f"load_loss: no run {run_id}: {problem} (give the tracking URI where the study "
                         "logged).")
    quiet_mlflow()  # no "Downloading artifacts" progress bar
    client = MlflowClient(tracking_uri=uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise UsageError(f"load_loss: no run {run_id} in the MLflow tracking store {redact_url(uri)} (give the "
                         "tracking URI where the study logged).") from None
    candidates = [artifact] if artifact else ["loss_config.json", "best_loss_config.json"]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in candidates:
            try:
                local = client.download_artifacts(run_id, name, tmp)
            except (MlflowException, OSError):
                continue
            try:
                return json.loads(Path(local).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                reason = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not text"
                raise ConfigError(f"runs:/{run_id}/{name}: not a loss config: not valid JSON ({reason}).") from None
    what = (f"no {artifact} artifact" if artifact else "no loss config (loss_config.json or best_loss_config.json): "
            "it is not the run of an aloss-tune trial or study")
    raise UsageError(f"load_loss: run {run_id} has {what}.")


def best_trial_summary(study_name: str, storage: str | None = None, *, backend: str = "optuna",
                       directory: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """``{number, value, params, loss_config}`` of a study's best finished trial.

    A KerasTuner study (``backend="keras-tuner"``) is read from its project under ``directory`` (default
    ``kt_projects``), or, when that project is not there, from its MLflow parent run at ``tracking_uri``.
    """
    from aloss_tune.backends.base import make_backend

    return make_backend(backend, storage=storage, directory=directory).best(study_name, tracking_uri=tracking_uri)


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


def python_snippet(params: Mapping[str, Any], *, optimizer: str = "adam", title: str | None = None,
                   keras_config: Mapping[str, Any] | None = None, model: Any = None, data: Any = None) -> str:
    """Python code that rebuilds a trial's loss and optimizer (``aloss-tune best --format python``).

    It runs as it is: it defines ``loss``, ``optimizer``, the tuned ``model_params`` (if any) and
    ``compile_with_best_loss(model)``, which attaches the loss when it learns parameters or penalises
    weights, then compiles. When the study's ``model`` (its space's ``model`` entry) is the built-in MLP, it
    also defines ``build_best_model(data)``, which builds that MLP with the tuned hyperparameters for a
    `aloss_tune.datasets.Dataset` and compiles it, and shows the call for the study's ``data``.
    ``keras_config`` (a Keras serialization) replaces the flat loss params when a source holds only that.
    """
    loss_params = {k: v for k, v in params.items() if k == "loss" or k.startswith("loss.")}
    opt_params = {k[len("optimizer."):]: v for k, v in params.items() if k.startswith("optimizer.")}
    model_params = {k: v for k, v in params.items() if k.startswith("model.")}
    if loss_params:
        check_params(loss_params)  # refuses params that do not make a loss, from the declarations (no Keras)
        from aloss_tune.factories import needs_model

        attach = needs_model(loss_params)
        loss_line = _assign("loss = aloss_tune.build_loss(", loss_params, ")")
    elif keras_config is not None:  # a Keras serialization alone: only the loss itself tells
        loss = loss_from_config({"keras": keras_config})
        from aloss_tune.losses import needs_model as loss_needs_model

        attach = loss_needs_model(loss)
        loss_line = _assign("loss = keras.saving.deserialize_keras_object(", keras_config, ")")
    else:
        raise ConfigError("python_snippet: params name no loss (give {'loss': ...} or a Keras config).")
    builder = model.get("builder") if isinstance(model, Mapping) else model
    mlp = builder == "mlp"
    optimizer_config = {"class_name": optimizer, "config": opt_params}
    lines = ["import keras", "", "import aloss_tune", ""]
    if title:
        lines.append(f"# {title}")
    lines += [loss_line, _assign("optimizer = keras.optimizers.get(", optimizer_config, ")")]
    if model_params or mlp:
        lines.append(_assign("model_params = ", model_params, "") + "  # the tuned model hyperparameters")
    lines += [
        "",
        "",
        "def compile_with_best_loss(model: keras.Model) -> keras.Model:",
        '    """Compile ``model`` with the best trial\'s loss and optimizer; returns the model to fit."""',
    ]
    if attach:
        lines.append("    model = aloss_tune.attach(model, loss)  # the loss learns parameters or penalises weights")
    lines += ["    model.compile(optimizer=optimizer, loss=loss)", "    return model"]
    if mlp:
        lines += [
            "",
            "",
            "def build_best_model(data: aloss_tune.datasets.Dataset) -> keras.Model:",
            '    """The built-in MLP with the tuned hyperparameters, for ``data``, compiled with the best loss."""',
            "    return compile_with_best_loss(aloss_tune.models.mlp(model_params, data))",
            "",
            "",
            "# The study's data, or your own as aloss_tune.datasets.as_dataset((x_train, y_train, x_val, y_val)):",
            f"# model = build_best_model({_dataset_call(data)})",
        ]
    return "\n".join(lines)


def _assign(prefix: str, value: Any, suffix: str) -> str:
    """``prefix`` + ``value`` as a Python literal + ``suffix``, its continuation lines aligned under the literal."""
    return prefix + _literal(value, len(prefix)) + suffix


def _dataset_call(data: Any) -> str:
    """The `aloss_tune.datasets.as_dataset` call that loads a space's ``data`` entry again."""
    if isinstance(data, Mapping) and isinstance(data.get("name"), str):
        args = dict(data.get("args") or {})
        return f"aloss_tune.datasets.as_dataset({data['name']!r}" + (f", args={args!r})" if args else ")")
    if isinstance(data, str) and data:
        return f"aloss_tune.datasets.as_dataset({data!r})"
    return "aloss_tune.datasets.as_dataset((x_train, y_train, x_val, y_val))"


def _literal(value: Any, indent: int) -> str:
    """``value`` as a Python literal (``True``, ``None``: never JSON's ``true``, ``null``); lines after the
    first are indented by ``indent`` (the column the literal starts at)."""
    import pprint

    text = pprint.pformat(value, sort_dicts=False, width=max(40, 110 - indent))
    return text.replace("\n", "\n" + " " * indent)


def run_summary(uri: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """``{params, loss_config, optimizer}`` of a trial's (or a study's parent) MLflow run ``runs:/<id>``.

    The loss comes from the run's loss-config artifact; the model and optimizer values from its params
    (logged as text, read back as numbers where they are numbers); the optimizer's name from the study's
    ``space.yaml``.
    """
    config = _config_from_run(uri, tracking_uri)
    check_loss_config(config, source=uri)  # a loss config that rebuilds, or one line saying why not
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from aloss_tune.tracking import load_settings

    run_id = uri[len("runs:/"):].strip("/").partition("/")[0]
    client = MlflowClient(tracking_uri=load_settings(tracking_uri=tracking_uri).tracking_uri)
    run = client.get_run(run_id)
    logged = run.data.params
    if "best_params.json" in {a.path for a in client.list_artifacts(run_id)}:  # a study's parent run
        logged = _download_json(client, run_id, "best_params.json")
        parent = run
    else:
        parent_id = run.data.tags.get("mlflow.parentRunId")
        parent = client.get_run(parent_id) if parent_id else run
    params = {k: _param_value(v) for k, v in logged.items() if k.startswith(("model.", "optimizer."))}
    params.update(config.get("params") or {})
    optimizer = "adam"
    space: Any = {}
    try:
        space = yaml.safe_load(_download_text(client, parent.info.run_id, "space.yaml")) or {}
        named = space.get("optimizer")
        optimizer = named.get("name", "adam") if isinstance(named, Mapping) else (named or "adam")
    except (MlflowException, OSError, yaml.YAMLError, AttributeError):
        pass
    model, data = (space.get("model"), space.get("data")) if isinstance(space, Mapping) else (None, None)
    return {"params": params, "loss_config": config, "optimizer": optimizer, "model": model, "data": data}


def _param_value(text: Any) -> Any:
    """An MLflow param (text) as the number or flag it was, or the text itself."""
    if not isinstance(text, str):
        return text
    special = {"True": True, "False": False, "None": None}
    if text in special:
        return special[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _download_text(client: Any, run_id: str, name: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, name, tmp)).read_text(encoding="utf-8")


def _download_json(client: Any, run_id: str, name: str) -> Any:
    return json.loads(_download_text(client, run_id, name))
