"""The shape of a loss: rho (its value) and psi (its derivative, the influence of one residual or prediction).

For regression losses the loss is evaluated per sample at ``y_true = 0``, ``y_pred = x`` on a residual grid
of +-5 robust spreads of the target (``Shape.x`` is in the target's units, the figure's axis in spreads);
psi is a central finite difference (backend-neutral, and honest for losses with kinks). Both are normalised
to a maximum of 1 on the plotted range, so a loss can be compared with MSE and MAE whatever its units: what
matters is where the influence grows, saturates or redescends.

For classification losses the loss is plotted against the predicted probability of the true class, once for
a positive and once for a negative example (class weights and focal ``alpha`` make them differ), with
binary (or categorical) cross-entropy for reference; psi is the size of the gradient with respect to the
logit, the push a single example gives the model.

A loss with learned parameters is drawn at the values it learned (its non-adaptive counterpart, e.g.
``barron`` for ``adaptive_barron``, built with the final learned values) or, failing that, at its initial
values. A weight penalty does not change the shape and is left out.

The built-in losses are evaluated in NumPy (`aloss_tune.report._closed_forms`), so that a report needs no
tensor library; a loss without a closed form there (a user's factory or alpha formula, an adaptive loss that
learned nothing) is built and called, which loads Keras for this figure alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aloss_tune.report._closed_forms import PerSample, closed_form
from aloss_tune.report._study import StudyData, TrialRow

GRID_POINTS = 401
GRID_SPREADS = 5.0
_PENALTY_KEYS = ("loss.l1", "loss.l2")


@dataclass
class Curve:
    """One loss on the grid: its values and derivatives, per example kind (``""``, ``"y=1"``, ``"y=0"``)."""

    label: str
    rho: dict[str, np.ndarray]
    psi: dict[str, np.ndarray]
    reference: bool = False


@dataclass
class Shape:
    """Curves of the best loss and its references on a common grid."""

    task: str
    x: np.ndarray
    curves: list[Curve]
    x_label: str
    rho_label: str
    psi_label: str
    spread: float = 1.0
    notes: list[str] = field(default_factory=list)


def _loss_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items()
            if (k == "loss" or k.startswith("loss.")) and k not in _PENALTY_KEYS}


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def describe_params(params: Mapping[str, Any]) -> str:
    """``huber(delta=12.3)`` for flat loss params."""
    own = {k[len("loss."):]: v for k, v in _loss_params(params).items() if k != "loss"}
    inner = ", ".join(f"{k}={_format(v)}" for k, v in own.items())
    return f"{params.get('loss')}({inner})"


def _counterpart_params(name: str, params: dict[str, Any],
                        learned: Mapping[str, float]) -> tuple[dict[str, Any], str] | None:
    """The flat params of the non-adaptive twin of an adaptive loss at the learned values (per-dimension values
    averaged), and its label; ``None`` when there is none."""
    from aloss_tune.errors import ConfigError
    from aloss_tune.factories import get_factory

    if not learned or not name.startswith("adaptive_"):
        return None
    twin = name[len("adaptive_"):]
    try:
        factory = get_factory(twin)
    except ConfigError:
        return None
    names = {p.name for p in factory.params}
    grouped: dict[str, list[float]] = {}
    for key, value in learned.items():
        grouped.setdefault(key.split(".", 1)[0], []).append(float(value))
    if not set(grouped) <= names:
        return None
    values = {k: float(np.mean(v)) for k, v in grouped.items()}
    twin_params: dict[str, Any] = {"loss": twin}
    for key, value in params.items():
        short = key[len("loss."):] if key.startswith("loss.") else None
        if short in names and short not in values:
            twin_params[key] = value
    twin_params.update({f"loss.{k}": v for k, v in values.items()})
    learned_text = ", ".join(f"{k}={_format(v)}" for k, v in values.items())
    return twin_params, f"{name}, learned {learned_text}"


def _counterpart(name: str, params: dict[str, Any], learned: Mapping[str, float]) -> tuple[Any, str] | None:
    """The non-adaptive twin of an adaptive loss at the learned values, built."""
    from aloss_tune.errors import ConfigError
    from aloss_tune.factories import build_loss

    found = _counterpart_params(name, params, learned)
    if found is None:
        return None
    try:
        return build_loss(found[0]), found[1]
    except ConfigError:
        return None


def shape_function(row: TrialRow) -> tuple[PerSample, str, str | None]:
    """``(fn, label, note)``: ``fn(y_true, y_pred)`` gives the trial's loss per sample, from its closed form
    when it has one (no Keras), else from the loss itself (`build_shape_loss`)."""
    from aloss_tune.errors import ConfigError
    from aloss_tune.factories import get_factory

    params = _loss_params(row.params)
    name = str(params.get("loss"))
    try:
        adaptive = get_factory(name).adaptive
    except ConfigError:
        adaptive = None  # not registered here: building it says so
    if adaptive:
        twin = _counterpart_params(name, params, row.final_learned)
        fn = None if twin is None else closed_form(twin[0])
        if twin is not None and fn is not None:
            return fn, twin[1], None
    elif adaptive is not None:
        fn = closed_form(params)
        if fn is not None:
            return fn, describe_params(params), None
    loss, label, note = build_shape_loss(row)
    return (lambda y_true, y_pred: per_sample(loss, y_true, y_pred)), label, note


def build_shape_loss(row: TrialRow) -> tuple[Any, str, str | None]:
    """``(loss, label, note)``: the trial's loss, ready to be called on a batch without its model."""
    from aloss_tune.factories import build_loss

    params = _loss_params(row.params)
    loss = build_loss(params)  # loads Keras (quietly) if nothing has yet
    import keras

    from aloss_tune.losses import attach, needs_model

    label = describe_params(params)
    if not needs_model(loss):
        return loss, label, None
    twin = _counterpart(str(params["loss"]), params, row.final_learned)
    if twin is not None:
        return twin[0], twin[1], None
    # Bind the loss to a throwaway model so that it can be evaluated at its initial values.
    dummy = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1)])
    attach(dummy, loss)
    note = "the learned values could not be applied; drawn at initial values"
    return loss, f"{label} (initial values)", note


def per_sample(loss: Any, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The loss's per-sample values (before Keras's reduction) as float64."""
    from keras import ops

    values = loss.call(ops.convert_to_tensor(y_true, dtype="float32"),
                       ops.convert_to_tensor(y_pred, dtype="float32"))
    out = np.asarray(ops.convert_to_numpy(values), dtype="float64")
    return out.reshape(len(y_true), -1).mean(axis=1)


def _values(fn: PerSample, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return np.asarray(fn(y_true, y_pred), dtype="float64").reshape(len(y_true), -1).mean(axis=1)


def _regression_curve(fn: PerSample, label: str, x: np.ndarray, h: float, reference: bool) -> Curve:
    column = x.reshape(-1, 1)
    zeros = np.zeros_like(column)
    rho = _values(fn, zeros, column)
    psi = (_values(fn, zeros, column + h) - _values(fn, zeros, column - h)) / (2.0 * h)
    return Curve(label, {"": _normalise(rho)}, {"": _normalise(psi)}, reference)


def _normalise(values: np.ndarray) -> np.ndarray:
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return values / top if top > 0 else values


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _at_logits(fn: PerSample, logit: np.ndarray, label_value: float, task: str, from_logits: bool) -> np.ndarray:
    """Per-sample loss of examples of class ``label_value`` whose positive-class logit is ``logit``."""
    positive = 1.0 / (1.0 + np.exp(-logit))
    if task == "multiclass":
        y_true = np.tile([1.0, 0.0], (len(logit), 1))
        y_pred = (np.stack([logit, np.zeros_like(logit)], axis=1) if from_logits
                  else np.stack([positive, 1.0 - positive], axis=1))
    else:
        y_true = np.full((len(logit), 1), label_value)
        y_pred = (logit if from_logits else positive).reshape(-1, 1)
    return _values(fn, y_true, y_pred)


def _classification_curve(fn: PerSample, label: str, p: np.ndarray, task: str, from_logits: bool,
                          reference: bool) -> Curve:
    """Loss and |d loss / d logit| against the probability of the true class, for y=1 and y=0."""
    z = _logit(p)
    h = 1e-3
    rho: dict[str, np.ndarray] = {}
    psi: dict[str, np.ndarray] = {}
    cases = {"y=1": 1.0} if task == "multiclass" else {"y=1": 1.0, "y=0": 0.0}
    for case, label_value in cases.items():
        z_true = z if label_value == 1.0 else -z  # logit of the positive class when p is the true class's
        values = [_at_logits(fn, logit, label_value, task, from_logits)
                  for logit in (z_true, z_true + h, z_true - h)]
        rho[case] = values[0]
        psi[case] = np.abs(values[1] - values[2]) / (2.0 * h)
    return Curve(label, rho, psi, reference)


def loss_shape(data: StudyData, row: TrialRow | None = None) -> Shape:
    """The shape of ``row``'s loss (default: the study's best trial) beside its references."""
    row = row if row is not None else data.best
    if row is None:
        raise ValueError("the study has no complete trial")
    fn, label, note = shape_function(row)
    notes = [note] if note else []
    if data.task == "regression":
        spread = data.target_scale if data.target_scale > 0 else 1.0
        x = np.linspace(-GRID_SPREADS * spread, GRID_SPREADS * spread, GRID_POINTS)
        h = 2e-3 * spread
        curves = [_regression_curve(fn, label, x, h, reference=False)]
        for name in ("mse", "mae"):
            curves.append(_regression_curve(_reference(name), name, x, h, reference=True))
        return Shape(
            task="regression", x=x, curves=curves, spread=spread, notes=notes,
            x_label=f"residual y_pred - y_true, in robust spreads of the target ({spread:.4g})",
            rho_label="rho(x) / its maximum on the range",
            psi_label="psi(x) = d rho / dx, / its maximum |psi|",
        )
    p = np.linspace(0.002, 0.998, 300)
    from_logits = bool(row.params.get("loss.from_logits", False))
    reference = "cce" if data.task == "multiclass" else "bce"
    curves = [_classification_curve(fn, label, p, data.task, from_logits, reference=False),
              _classification_curve(_reference(reference), reference, p, data.task, False, True)]
    return Shape(
        task=data.task, x=p, curves=curves, notes=notes, x_label="predicted probability of the true class",
        rho_label="loss (nats)", psi_label="|d loss / d logit| (push on the model)",
    )


def _reference(name: str) -> PerSample:
    """A built-in baseline (mse, mae, bce, cce) in closed form."""
    fn = closed_form({"loss": name})
    if fn is None:  # pragma: no cover - every baseline has one
        raise ValueError(f"no closed form for the baseline {name!r}")
    return fn
