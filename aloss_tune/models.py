"""The built-in model builder: a tabular MLP whose size, dropout and activation are searchable.

A model builder takes the trial's flat params dict (and, optionally, the `Dataset`) and returns an
uncompiled Keras model; the runner compiles it with the trial's loss and optimizer. The flat keys it reads
are ``model.units``, ``model.layers``, ``model.dropout`` and ``model.activation``.

For regression the MLP ends in a fixed ``Rescaling(scale=spread, offset=center)`` computed from the
training targets' median and robust spread: the network learns on a standardised scale (fast, well
conditioned) while its predictions, residuals, metrics and losses stay in the data's own units, so a tuned
``scale`` or ``delta`` is directly reusable on the raw targets.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aloss_tune.datasets import Dataset, import_object
from aloss_tune.errors import ConfigError, describe

if TYPE_CHECKING:  # Keras loads when a model is built: checking a space's params needs none
    import keras

MLP_DEFAULTS: dict[str, Any] = {"units": 64, "layers": 2, "dropout": 0.0, "activation": "relu"}
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "elu")


def check_mlp_param(name: str, value: Any) -> str | None:
    """What is wrong with the value ``value`` of the mlp parameter ``name``, or ``None`` if it is fine."""
    if name not in MLP_DEFAULTS:
        return f"unknown parameter for model 'mlp' (allowed: {', '.join(MLP_DEFAULTS)})."
    if name in ("units", "layers"):
        low = 1 if name == "units" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            return f"must be an integer >= {low}, but got {describe(value)}."
    elif name == "dropout":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
            return f"must be in [0, 1), but got {describe(value)}."
    elif value not in ACTIVATIONS:
        return f"must be one of {', '.join(ACTIVATIONS)}, but got {describe(value)}."
    return None


def mlp(params: Mapping[str, Any], data: Dataset) -> keras.Model:
    """A tabular MLP for ``data``'s task (see the module docstring for its params)."""
    cfg = {k: params.get(f"model.{k}", v) for k, v in MLP_DEFAULTS.items()}
    unknown = sorted(k for k in params if k.startswith("model.") and k[6:] not in MLP_DEFAULTS)
    if unknown:
        raise ConfigError(f"mlp: unknown parameter `{unknown[0]}`; its parameters are: "
                          + ", ".join(f"model.{k}" for k in MLP_DEFAULTS) + ".")
    for key, value in cfg.items():
        problem = check_mlp_param(key, value)
        if problem:
            raise ConfigError(f"mlp: `model.{key}` {problem}")
    import keras

    units, layers, dropout, activation = cfg["units"], cfg["layers"], cfg["dropout"], cfg["activation"]
    inputs = keras.Input(shape=data.x_train.shape[1:], name="features")
    h = keras.layers.Flatten()(inputs) if len(data.x_train.shape) > 2 else inputs
    for i in range(layers):
        h = keras.layers.Dense(units, activation=activation, name=f"dense_{i}")(h)
        if dropout:
            h = keras.layers.Dropout(dropout)(h)
    if data.task == "regression":
        out = keras.layers.Dense(data.n_outputs, name="standardized")(h)
        out = keras.layers.Rescaling(scale=data.target_scale, offset=data.target_center, name="target_units")(out)
    elif data.task == "binary":
        out = keras.layers.Dense(1, activation="sigmoid", name="probability")(h)
    else:
        out = keras.layers.Dense(data.n_outputs, activation="softmax", name="probabilities")(h)
    return keras.Model(inputs, out, name="mlp")


BUILTIN: dict[str, Callable[..., keras.Model]] = {"mlp": mlp}


def resolve_builder(model: Any) -> Callable[[Mapping[str, Any], Dataset], keras.Model]:
    """A space's ``model`` (built-in name, ``module:function`` or callable) as ``fn(params, data)``.

    User builders may take ``(params)`` or ``(params, data)``.
    """
    if isinstance(model, str):
        fn = BUILTIN.get(model)
        if fn is None:
            if ":" not in model:
                raise ConfigError(f"model: unknown builder {model!r}; built-ins: {', '.join(BUILTIN)} "
                                  "(or 'module:function').")
            fn = import_object(model, "model")
    elif callable(model):
        fn = model
    else:
        raise ConfigError(f"model must be a builder name, 'module:function' or a callable, but got {describe(model)}.")
    try:
        positional = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        positional = []
    if len(positional) >= 2:
        return fn
    return lambda params, data: fn(params)
