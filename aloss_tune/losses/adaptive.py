"""The adaptive robust loss: Barron's NLL with its shape ``alpha`` and scale learned by ``model.fit``.

A loss given to ``compile`` is not part of the model, so its variables would never be trained. The latent
``alpha`` and scale therefore live in a small layer, `AdaptiveRobustState`, that the loss creates for the
model and that `aloss_tune.attach` makes part of it (a `LossModel`); the optimiser then trains them with the
model's weights, and ``model.save`` / ``keras.saving.load_model`` keep them. In one line::

    loss = AdaptiveRobustLoss()
    model = aloss_tune.attach(model, loss)          # the model must be built (an Input, or called once)
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, epochs=10)
    aloss_tune.learned_values(model)                # {"alpha": array([...]), "scale": array([...])}

``learned_values`` reads the current values at any time (from a callback's ``on_epoch_end``, say).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from aloss_tune.errors import ConfigError, describe
from aloss_tune.losses._base import FINITE_NON_NEGATIVE, FINITE_POSITIVE, PACKAGE, align, check_bool
from aloss_tune.losses.model import ModelAwareLoss
from aloss_tune.losses.partition import robust_nll
from aloss_tune.losses.robust import mean_last_axis

__all__ = ["AdaptiveRobustLoss", "AdaptiveRobustState"]

_OWNER = "AdaptiveRobustLoss"
_SOFTPLUS_SHIFT = math.log(math.e - 1.0)  # softplus(0 + shift) = 1, so a zero latent gives scale_init


def _check_bounds(
    alpha_lo: Any, alpha_hi: Any, alpha_init: Any, scale_lo: Any, scale_init: Any
) -> tuple[float, float, float, float, float]:
    """Validate the bounds and initial values; ``alpha_init=None`` means the midpoint of the alpha bounds."""
    alpha_lo = FINITE_NON_NEGATIVE.check(_OWNER, "alpha_lo", alpha_lo)
    alpha_hi = FINITE_NON_NEGATIVE.check(_OWNER, "alpha_hi", alpha_hi)
    if alpha_lo > alpha_hi:
        raise ConfigError(
            f"{_OWNER}: `alpha_lo <= alpha_hi` must hold, but got (alpha_lo={alpha_lo:g}, alpha_hi={alpha_hi:g})."
        )
    if alpha_init is None:
        alpha_init = 0.5 * (alpha_lo + alpha_hi)
    else:
        alpha_init = FINITE_NON_NEGATIVE.check(_OWNER, "alpha_init", alpha_init)
        if alpha_lo == alpha_hi:
            if alpha_init != alpha_lo:
                raise ConfigError(
                    f"{_OWNER}: `alpha_init` must equal the fixed alpha when alpha_lo == alpha_hi, but got "
                    f"(alpha_lo={alpha_lo:g}, alpha_hi={alpha_hi:g}, alpha_init={alpha_init:g})."
                )
        elif not alpha_lo < alpha_init < alpha_hi:
            # A sigmoid reaches its bounds only at infinite latent values.
            raise ConfigError(
                f"{_OWNER}: `alpha_lo < alpha_init < alpha_hi` must hold (strictly, unless alpha_lo == alpha_hi), "
                f"but got (alpha_lo={alpha_lo:g}, alpha_init={alpha_init:g}, alpha_hi={alpha_hi:g})."
            )
    scale_lo = FINITE_POSITIVE.check(_OWNER, "scale_lo", scale_lo)
    scale_init = FINITE_POSITIVE.check(_OWNER, "scale_init", scale_init)
    if scale_init < scale_lo:
        raise ConfigError(
            f"{_OWNER}: `scale_lo <= scale_init` must hold, but got (scale_lo={scale_lo:g}, scale_init={scale_init:g})."
        )
    return alpha_lo, alpha_hi, alpha_init, scale_lo, scale_init


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveRobustState(keras.layers.Layer):
    """The learned shape and scale of an `AdaptiveRobustLoss`, as latent variables of a layer.

    Formula:
        ```
        alpha = alpha_lo + (alpha_hi - alpha_lo) * sigmoid(latent_alpha)
        scale = (scale_init - scale_lo) * softplus(latent_scale + log(e - 1)) + scale_lo
        ```
        ``latent_alpha`` starts at ``logit((alpha_init - alpha_lo) / (alpha_hi - alpha_lo))`` and
        ``latent_scale`` at 0, so the values start at ``alpha_init`` and ``scale_init``. Equal bounds
        (``alpha_lo == alpha_hi``, ``scale_lo == scale_init``) fix the value: its latent is not trainable.

    Args:
        size: the number of (alpha, scale) pairs: the model's output dimensions, or 1 when shared.
        alpha_lo, alpha_hi, alpha_init, scale_lo, scale_init: as in `AdaptiveRobustLoss`.

    The variables are float32 whatever the dtype policy; the loss casts them to its compute dtype.
    """

    def __init__(
        self,
        size: int,
        alpha_lo: float,
        alpha_hi: float,
        alpha_init: float,
        scale_lo: float,
        scale_init: float,
        **kwargs: Any,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        size = _check_size("size", size)
        bounds = _check_bounds(alpha_lo, alpha_hi, alpha_init, scale_lo, scale_init)
        self.size = size
        self.alpha_lo, self.alpha_hi, self.alpha_init, self.scale_lo, self.scale_init = bounds
        self.alpha_fixed = self.alpha_lo == self.alpha_hi
        self.scale_fixed = self.scale_lo == self.scale_init
        if self.alpha_fixed:
            start = 0.0
        else:
            p = (self.alpha_init - self.alpha_lo) / (self.alpha_hi - self.alpha_lo)
            start = math.log(p) - math.log1p(-p)
        self.latent_alpha = self.add_weight(
            name="latent_alpha",
            shape=(size,),
            initializer=keras.initializers.Constant(start),
            trainable=not self.alpha_fixed,
        )
        self.latent_scale = self.add_weight(
            name="latent_scale", shape=(size,), initializer="zeros", trainable=not self.scale_fixed
        )
        self.built = True

    def alpha(self) -> Any:
        """The current shape per dimension, a float32 tensor of shape ``(size,)`` in ``[alpha_lo, alpha_hi]``."""
        if self.alpha_fixed:
            return ops.full((self.size,), self.alpha_lo, dtype="float32")
        return self.alpha_lo + (self.alpha_hi - self.alpha_lo) * ops.sigmoid(self.latent_alpha)

    def scale(self) -> Any:
        """The current scale per dimension, a float32 tensor of shape ``(size,)``, ``>= scale_lo``."""
        if self.scale_fixed:
            return ops.full((self.size,), self.scale_lo, dtype="float32")
        spread = self.scale_init - self.scale_lo
        return spread * ops.softplus(self.latent_scale + _SOFTPLUS_SHIFT) + self.scale_lo

    def call(self, inputs: Any = None) -> tuple[Any, Any]:
        return self.alpha(), self.scale()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("dtype", None)
        config.update(
            size=self.size,
            alpha_lo=self.alpha_lo,
            alpha_hi=self.alpha_hi,
            alpha_init=self.alpha_init,
            scale_lo=self.scale_lo,
            scale_init=self.scale_init,
        )
        return config


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{_OWNER}: `{name}` must be an integer >= 1, but got {name}={describe(value)}.")
    return int(value)


def _output_dims(model: keras.Model) -> int | None:
    """The size of the model's last output axis, or ``None`` if the model has no known output yet."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs:
        return None
    if len(outputs) != 1:
        raise ConfigError(
            f"{_OWNER}: the model has {len(outputs)} outputs; the adaptive loss needs a model with one output."
        )
    shape = tuple(outputs[0].shape)
    if len(shape) <= 1:
        return 1
    return None if shape[-1] is None else int(shape[-1])


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveRobustLoss(ModelAwareLoss):
    """Barron's adaptive robust loss: the NLL of the residuals, with ``alpha`` and scale learned in ``fit``.

    Formula:
        ```
        x = y_pred - y_true
        loss = mean over the last axis of  rho(x, alpha, scale) + log(scale) + log Z(alpha)
        ```
        with ``rho`` Barron's general loss and ``Z`` its partition function (see `robust_nll`). ``alpha``
        and ``scale`` are learned per output dimension (or one pair when ``shared``), bounded as in
        `AdaptiveRobustState`. **The loss can be negative**: it is a negative log-*density*, which is below
        zero wherever the density exceeds 1 (a small learned scale); that is expected, not a bug.

    Apply it with `aloss_tune.attach`, which adds the state to the model (the model must be built, so that
    its output size is known, or ``num_dims`` given); compile with this same loss. Saving and
    ``keras.saving.load_model`` keep the learned values; `aloss_tune.learned_values` reads them.

    Args:
        num_dims: the number of output dimensions; inferred from the model when ``None``.
        shared: one ``alpha`` and one scale for all dimensions.
        alpha_lo: lower bound of ``alpha``, >= 0 (the distribution is improper below 0). Default 0.001.
        alpha_hi: upper bound of ``alpha``, >= ``alpha_lo``; equal bounds fix ``alpha``. Default 1.999.
        alpha_init: the initial ``alpha``, strictly between the bounds; default their midpoint.
        scale_lo: lower bound of the scale, > 0. Default 1e-5.
        scale_init: the initial scale, >= ``scale_lo``; equal to it fixes the scale. Default 1.0, in the
            target's units: standardise targets, or set it to their typical residual size.
        name: the loss's name.
        reduction: Keras reduction (default ``"sum_over_batch_size"``).
        dtype: the compute dtype (default ``keras.config.floatx()``, float32 even under mixed precision).

    Example:
        >>> loss = AdaptiveRobustLoss(alpha_hi=1.999)
        >>> model = aloss_tune.attach(model, loss)
        >>> model.compile(optimizer="adam", loss=loss)

    References:
        J. T. Barron, "A General and Adaptive Robust Loss Function", CVPR 2019, arXiv:1701.03077 (Sec. 3).
    """

    def __init__(
        self,
        num_dims: int | None = None,
        *,
        shared: bool = False,
        alpha_lo: float = 0.001,
        alpha_hi: float = 1.999,
        alpha_init: float | None = None,
        scale_lo: float = 1e-5,
        scale_init: float = 1.0,
        name: str = "adaptive_robust_loss",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_dims = None if num_dims is None else _check_size("num_dims", num_dims)
        self.shared = check_bool(_OWNER, "shared", shared)
        self._alpha_init_given = alpha_init
        (self.alpha_lo, self.alpha_hi, self.alpha_init, self.scale_lo, self.scale_init) = _check_bounds(
            alpha_lo, alpha_hi, alpha_init, scale_lo, scale_init
        )

    def create_state(self, model: keras.Model) -> AdaptiveRobustState:
        """The layer holding this loss's latent ``alpha`` and scale, sized for ``model``'s output."""
        dims = _output_dims(model)
        if self.num_dims is None and not self.shared:
            if dims is None:
                raise ConfigError(
                    f"{_OWNER}: cannot infer the number of output dimensions of model {model.name!r}: build it "
                    "first (start it with keras.Input or call it once) or pass num_dims=..."
                )
            self.num_dims = dims  # kept in get_config, so a reloaded model needs no inference
        if self.num_dims is not None and dims is not None and dims != self.num_dims:
            raise ConfigError(
                f"{_OWNER}: `num_dims` must match the model's output size, but got num_dims={self.num_dims} "
                f"for an output of size {dims}."
            )
        return AdaptiveRobustState(
            1 if self.shared or self.num_dims is None else self.num_dims,  # set above unless shared
            self.alpha_lo,
            self.alpha_hi,
            self.alpha_init,
            self.scale_lo,
            self.scale_init,
            name="adaptive_robust_state",
        )

    def _state(self) -> AdaptiveRobustState:
        state = self._require_host().loss_state
        if not isinstance(state, AdaptiveRobustState):
            raise ConfigError(f"{_OWNER}: the attached model carries no adaptive state; attach this loss.")
        return state

    def call(self, y_true: Any, y_pred: Any) -> Any:
        state = self._state()
        y_true, y_pred = align(y_true, y_pred)
        residual = y_pred - y_true
        if state.size > 1 and len(residual.shape) >= 1 and residual.shape[-1] not in (None, state.size):
            raise ConfigError(
                f"{_OWNER}: the targets have {residual.shape[-1]} dimensions, but the loss learns "
                f"{state.size} (alpha, scale) pairs."
            )
        return mean_last_axis(robust_nll(residual, state.alpha(), state.scale()))

    def learned_values(self) -> dict[str, np.ndarray]:
        """The current ``alpha`` and ``scale`` (float64 arrays of shape ``(num_dims,)``, or ``(1,)`` if shared)."""
        state = self._state()
        return {
            "alpha": np.asarray(ops.convert_to_numpy(state.alpha()), dtype=np.float64),
            "scale": np.asarray(ops.convert_to_numpy(state.scale()), dtype=np.float64),
        }

    def _params(self) -> dict[str, Any]:
        return {
            "num_dims": self.num_dims,
            "shared": self.shared,
            "alpha_lo": self.alpha_lo,
            "alpha_hi": self.alpha_hi,
            "alpha_init": self._alpha_init_given,
            "scale_lo": self.scale_lo,
            "scale_init": self.scale_init,
        }
