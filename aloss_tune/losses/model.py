"""Losses that need their model, and the one-line way to give it to them.

A Keras loss sees only ``y_true`` and ``y_pred``. Two of ours need more:

* a weight penalty (``l1``/``l2``, the "lambda" of the seeds) needs the model's weights, with a gradient;
* the adaptive robust loss owns trainable parameters (alpha and scale) that ``model.fit`` must update.

Keras trains only variables that belong to the model, and a loss given to ``compile`` is not part of it.
`attach` therefore wraps the user's model in a `LossModel`: a `keras.Model` that calls the wrapped model,
owns the loss's state as a tracked layer (so its variables are trained, saved and restored with the
model) and adds the penalty in ``compute_loss``. It is registered for serialization, so a ``.keras`` file
reloads with no ``custom_objects``::

    loss = aloss_tune.build_loss({"loss": "adaptive_barron", "loss.l2": 1e-4})
    model = aloss_tune.attach(model, loss)          # the one line
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y)
    aloss_tune.learned_values(model)                # {"alpha": ..., "scale": ...}

For any other loss `attach` returns the model unchanged, so callers may always use it.
"""

from __future__ import annotations

import weakref
from typing import Any

import keras
import numpy as np
from keras import ops

from aloss_tune.errors import ConfigError
from aloss_tune.losses._base import PACKAGE, Loss


class ModelAwareLoss(Loss):
    """A loss that needs its model. Subclasses override the hooks they use.

    The loss is bound to its `LossModel` by `attach` (and again by the model at each step, which covers
    a loss deserialized by ``load_model``); `get_host` returns it.
    """

    _host_ref: weakref.ref[LossModel] | None = None

    def get_host(self) -> LossModel | None:
        """The `LossModel` this loss is bound to, or ``None``.

        (A method, not a property: Keras's saving walks attributes, and a loss <-> model cycle of
        attributes would recurse.)
        """
        return None if self._host_ref is None else self._host_ref()

    def create_state(self, model: keras.Model) -> keras.layers.Layer | None:
        """A layer holding this loss's trainable parameters, created once for ``model``; or ``None``."""
        return None

    def penalty(self, model: keras.Model) -> Any:
        """An extra scalar added to the total loss (e.g. a weight penalty on ``model``); or ``None``."""
        return None

    def learned_values(self) -> dict[str, np.ndarray]:
        """Current values of learned loss parameters (empty for losses without any)."""
        return {}

    def bind(self, host: LossModel) -> None:
        # A weak reference: the model owns the loss, not the other way round (and saving walks attributes).
        self._host_ref = weakref.ref(host)

    def _require_host(self) -> LossModel:
        host = self.get_host()
        if host is None:
            raise ConfigError(
                f"{type(self).__name__} needs its model: wrap the model first with "
                "`model = aloss_tune.attach(model, loss)`, then compile it with this loss."
            )
        return host


def _as_model_aware(loss: Any) -> ModelAwareLoss | None:
    return loss if isinstance(loss, ModelAwareLoss) else None


@keras.saving.register_keras_serializable(package=PACKAGE)
class LossModel(keras.Model):
    """A model plus the state its loss needs; behaves like the wrapped model for predict and evaluate.

    Args:
        model: the user's model (any Keras model).
        loss: the `ModelAwareLoss` whose state this model carries. The loss given to ``compile`` is bound
            to this model, so the same object (or, after reloading, its deserialized copy) reads the state.
    """

    def __init__(self, model: keras.Model, loss: ModelAwareLoss, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(loss, ModelAwareLoss):
            raise ConfigError(
                f"LossModel: `loss` must be a model-aware aloss-tune loss, but got {type(loss).__name__}."
            )
        self.inner = model
        self.loss_spec = loss
        self.loss_state = loss.create_state(model)
        loss.bind(self)

    def call(self, inputs: Any, training: Any = None) -> Any:
        return self.inner(inputs, training=training)

    def build(self, input_shape: Any) -> None:
        if not self.inner.built:
            self.inner.build(input_shape)
        self.built = True

    def bound_loss(self) -> ModelAwareLoss:
        """The loss that reads this model's state: the compiled one if model-aware, else ``loss_spec``.

        Binding happens here rather than in ``compile`` so that a model reloaded from a ``.keras`` file,
        compiled by Keras from its saved config, binds its freshly deserialized loss too.
        """
        aware = _as_model_aware(getattr(self, "loss", None)) or self.loss_spec
        if aware.get_host() is not self:
            aware.bind(self)
        return aware

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        bound = self.bound_loss()
        total = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        extra = bound.penalty(self.inner)
        if extra is not None and total is not None:
            total = total + ops.cast(extra, total.dtype)
        return total

    def learned_values(self) -> dict[str, np.ndarray]:
        return self.bound_loss().learned_values()

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.inner),
            "loss": keras.saving.serialize_keras_object(self.loss_spec),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> LossModel:
        model = keras.saving.deserialize_keras_object(config["model"], custom_objects=custom_objects)
        loss = keras.saving.deserialize_keras_object(config["loss"], custom_objects=custom_objects)
        return cls(model, loss, name=config.get("name"))


def needs_model(loss: Any) -> bool:
    """Whether ``loss`` must be applied with `attach` (it has trainable state or a weight penalty)."""
    return isinstance(loss, ModelAwareLoss)


def attach(model: keras.Model, loss: Any) -> keras.Model:
    """Give ``loss`` what it needs from ``model``; returns the model to compile and fit.

    Returns ``model`` itself for ordinary losses, and a `LossModel` wrapping it for losses with learned
    parameters or a weight penalty. Compile the returned model with the same ``loss``.
    """
    if not needs_model(loss):
        return model
    if isinstance(model, LossModel):
        raise ConfigError("attach: this model already carries a loss; attach the original model instead.")
    return LossModel(model, loss, name=f"{model.name}_with_loss")


def export(model: keras.Model) -> keras.Model:
    """The plain Keras model to serve: it predicts exactly as ``model`` and reloads without aloss-tune.

    For an attached model (`attach`), the wrapped model, which holds every trained weight; the loss's own
    state (the learned alpha and scale) and the weight penalty stay behind, as they matter only to
    training. For any other model compiled with one of our losses, an uncompiled copy with the same
    weights, so that its ``.keras`` file names no aloss-tune class. ``model.save`` on the result writes a
    file that ``keras.saving.load_model`` reads in a process that never imports aloss-tune.
    """
    if isinstance(model, LossModel):
        return model.inner
    if not isinstance(model, keras.Model):
        raise ConfigError(f"export: expected a keras.Model, but got {type(model).__name__}.")
    if getattr(model, "compiled", False) is False:
        return model
    try:  # from its architecture alone (keras.models.clone_model would copy the compiled loss too)
        plain = type(model).from_config(model.get_config())
        if not plain.built:
            plain.build(model.input_shape)
        plain.set_weights(model.get_weights())
    except (AttributeError, NotImplementedError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"export: cannot copy {model.name!r} without its compiled loss ({type(exc).__name__}: {exc}); save "
            "it as it is and load it with `keras.saving.load_model(path, compile=False)`."
        ) from None
    return plain


def learned_values(model_or_loss: Any) -> dict[str, np.ndarray]:
    """Current learned loss parameters (``alpha``, ``scale``, ...) of an attached model or a bound loss."""
    if isinstance(model_or_loss, LossModel):
        return model_or_loss.learned_values()
    if isinstance(model_or_loss, ModelAwareLoss):
        return model_or_loss.learned_values()
    return {}
