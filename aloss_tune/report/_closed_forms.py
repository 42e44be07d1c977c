"""The built-in losses' per-sample values in NumPy (float64), for the loss-shape figure.

`closed_form` returns ``fn(y_true, y_pred) -> one value per sample`` for a trial's flat loss params, the same
values as the loss's ``call`` (`aloss_tune.losses`) on the inputs the figure uses: regression targets and
predictions of shape ``(n, 1)``; binary labels and probabilities (or logits) of shape ``(n, 1)``; one-hot
labels and probabilities (or logits) over the classes. A report then draws the figure without loading a
tensor library (``aloss-tune report`` starts in a fraction of a second; importing Keras takes seconds).
``tests/test_report.py`` checks every factory against its Keras loss on those inputs.

Probabilities are clipped to ``[EPS, 1 - EPS]`` where the losses clip them (`aloss_tune.losses._prob`), with
Keras's default epsilon. ``None`` for a loss without a closed form here: a user's factory or alpha formula,
an adaptive loss without learned values (its NLL needs the partition function); the figure then evaluates the
loss itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

EPS = 1e-7  # keras.config.epsilon()'s default: the probability clip and the denominators' guard

PerSample = Callable[[np.ndarray, np.ndarray], np.ndarray]


def closed_form(params: Mapping[str, Any]) -> PerSample | None:
    """``fn(y_true, y_pred)``, the per-sample values of the loss of the flat ``params`` (``{"loss": "huber",
    "loss.delta": 1.5}``; missing parameters take their defaults, a weight penalty is ignored), or ``None``
    when the loss has no closed form here."""
    from aloss_tune.errors import ConfigError
    from aloss_tune.factories import get_factory

    name = params.get("loss")
    maker = _FORMS.get(str(name))
    if maker is None:
        return None
    try:
        factory = get_factory(str(name))
    except ConfigError:
        return None
    given = {k[len("loss."):]: v for k, v in params.items() if k.startswith("loss.")}
    p = {**factory.defaults(), **{k: v for k, v in given.items() if k in factory.defaults()}}
    return maker(p)


# ------------------------------------------------------------------------------------------- helpers
def _mean(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype="float64").reshape(len(values), -1).mean(axis=1)


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(z))


def _binary_log_probs(y_pred: np.ndarray, from_logits: bool) -> tuple[np.ndarray, np.ndarray]:
    if from_logits:
        return _log_sigmoid(y_pred), _log_sigmoid(-y_pred)
    p = np.clip(y_pred, EPS, 1.0 - EPS)
    return np.log(p), np.log(1.0 - p)


def _binary_probs(y_pred: np.ndarray, from_logits: bool, clip: bool) -> tuple[np.ndarray, np.ndarray]:
    if from_logits:
        p, q = _sigmoid(y_pred), _sigmoid(-y_pred)
        return (np.clip(p, EPS, 1.0 - EPS), np.clip(q, EPS, 1.0 - EPS)) if clip else (p, q)
    if clip:
        p = np.clip(y_pred, EPS, 1.0 - EPS)
        return p, 1.0 - p
    return y_pred, 1.0 - y_pred


def _bce(y: np.ndarray, log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    return -(y * log_p + (1.0 - y) * log_q)


def _categorical_log_probs(y_pred: np.ndarray, from_logits: bool) -> np.ndarray:
    if from_logits:
        shifted = y_pred - y_pred.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    total = y_pred.sum(axis=-1, keepdims=True)
    total = np.where(total > 0, total, 1.0)
    return np.log(np.clip(y_pred / total, EPS, 1.0 - EPS))


# ------------------------------------------------------------------------------------------ regression
def _barron_rho(x: np.ndarray, alpha: float, scale: float) -> np.ndarray:
    """Barron's rho(x, alpha, scale) (`aloss_tune.losses.robust.general_loss`)."""
    z = np.square(x / scale)
    if alpha == 2.0:
        return 0.5 * z
    if alpha == 0.0:
        return np.log1p(0.5 * z)
    if alpha == -math.inf:
        return -np.expm1(-0.5 * z)
    if alpha == math.inf:
        return np.expm1(0.5 * z)
    b = abs(alpha - 2.0)
    return (b / alpha) * np.expm1(0.5 * alpha * np.log1p(z / b))


def _mse(p: Mapping[str, Any]) -> PerSample:
    return lambda y, f: _mean(np.square(f - y))


def _mae(p: Mapping[str, Any]) -> PerSample:
    return lambda y, f: _mean(np.abs(f - y))


def _huber(p: Mapping[str, Any]) -> PerSample:
    delta = float(p["delta"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        e = np.abs(f - y)
        return _mean(np.where(e <= delta, 0.5 * np.square(e), delta * e - 0.5 * delta**2))

    return fn


def _error_mse(p: Mapping[str, Any]) -> PerSample:
    low, high = float(p["clip_min"]), float(p["clip_max"])
    return lambda y, f: _mean((1.0 + np.clip(np.abs(y - f), low, high)) * np.square(y - f))


def _barron(p: Mapping[str, Any]) -> PerSample:
    alpha, scale = float(p["alpha"]), float(p["scale"])
    return lambda y, f: _mean(_barron_rho(f - y, alpha, scale))


# ----------------------------------------------------------------------------------- classification
def _binary_ce(p: Mapping[str, Any]) -> PerSample:
    logits = bool(p["from_logits"])
    return lambda y, f: _mean(_bce(y, *_binary_log_probs(f, logits)))


def _categorical_ce(p: Mapping[str, Any]) -> PerSample:
    logits = bool(p["from_logits"])
    return lambda y, f: -(y * _categorical_log_probs(f, logits)).sum(axis=-1)


def _confidence_bce(p: Mapping[str, Any]) -> PerSample:
    low, high, logits = float(p["clip_min"]), float(p["clip_max"]), bool(p["from_logits"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        pos, neg = _binary_probs(f, logits, clip=True)
        weight = np.clip(1.0 / (y * pos + (1.0 - y) * neg), low, high)
        return _mean(weight * _bce(y, *_binary_log_probs(f, logits)))

    return fn


def _class_bce(p: Mapping[str, Any]) -> PerSample:
    pos_w, neg_w, logits = float(p["pos_weight"]), float(p["neg_weight"]), bool(p["from_logits"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        log_p, log_q = _binary_log_probs(f, logits)
        return _mean(-(pos_w * y * log_p + neg_w * (1.0 - y) * log_q))

    return fn


def _class_cce(p: Mapping[str, Any]) -> PerSample:
    weights, logits = p["class_weights"], bool(p["from_logits"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        w = 1.0 if weights is None else np.asarray(weights, dtype="float64")
        if weights is not None and len(weights) != f.shape[-1]:
            raise ValueError(f"class_cce: `class_weights` has {len(weights)} weights for {f.shape[-1]} classes")
        return -(w * y * _categorical_log_probs(f, logits)).sum(axis=-1)

    return fn


def _focal(p: Mapping[str, Any]) -> PerSample:
    gamma, alpha, logits = float(p["gamma"]), float(p["alpha"]), bool(p["from_logits"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        pos, neg = _binary_probs(f, logits, clip=True)
        alpha_t = y * alpha + (1.0 - y) * (1.0 - alpha)
        modulating = np.power(y * neg + (1.0 - y) * pos, gamma)
        return _mean(alpha_t * modulating * _bce(y, *_binary_log_probs(f, logits)))

    return fn


def _poly1(p: Mapping[str, Any]) -> PerSample:
    epsilon, logits, mode = float(p["epsilon"]), bool(p["from_logits"]), str(p["mode"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        if mode == "categorical":
            log_probs = _categorical_log_probs(f, logits)
            if logits:
                probs = np.exp(log_probs)
            else:
                total = f.sum(axis=-1, keepdims=True)
                probs = f / np.where(total > 0, total, 1.0)
            return -(y * log_probs).sum(axis=-1) + epsilon * (1.0 - (y * probs).sum(axis=-1))
        pos, neg = _binary_probs(f, logits, clip=False)
        return _mean(_bce(y, *_binary_log_probs(f, logits)) + epsilon * (y * neg + (1.0 - y) * pos))

    return fn


def _distribution(y: np.ndarray, f: np.ndarray, logits: bool, mode: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(labels, log-probabilities, binary)`` over a trailing class axis (`aloss_tune.losses.label_noise`)."""
    if mode == "binary" or (mode == "auto" and f.shape[-1] == 1):
        log_p1, log_p0 = _binary_log_probs(f, logits)
        return np.stack([1.0 - y, y], axis=-1), np.stack([log_p0, log_p1], axis=-1), True
    return y, _categorical_log_probs(f, logits), False


def _per_sample(values: np.ndarray, binary: bool) -> np.ndarray:
    return values.mean(axis=-1) if binary else values


def _gce_per_class(log_p: np.ndarray, q: float) -> np.ndarray:
    return -log_p if q == 0.0 else -np.expm1(q * log_p) / q


def _focal_per_class(log_p: np.ndarray, gamma: float) -> np.ndarray:
    if gamma == 0.0:
        return -log_p
    return -np.power(np.clip(-np.expm1(log_p), EPS, 1.0 - EPS), gamma) * log_p


def _normalized(y: np.ndarray, per_class: np.ndarray) -> np.ndarray:
    return (y * per_class).sum(axis=-1) / np.maximum(per_class.sum(axis=-1), EPS**4)


def _reverse_ce(y: np.ndarray, log_p: np.ndarray, log_clip: float) -> np.ndarray:
    above = y > math.exp(log_clip)
    log_y = np.where(above, np.log(np.where(above, np.minimum(y, 1.0), 1.0)), log_clip)
    return -(np.exp(log_p) * log_y).sum(axis=-1)


def _gce(p: Mapping[str, Any]) -> PerSample:
    q, logits, mode = float(p["q"]), bool(p["from_logits"]), str(p["mode"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        labels, log_p, binary = _distribution(y, f, logits, mode)
        return _per_sample((labels * _gce_per_class(log_p, q)).sum(axis=-1), binary)

    return fn


def _sce(p: Mapping[str, Any]) -> PerSample:
    alpha, beta, log_clip = float(p["alpha"]), float(p["beta"]), float(p["log_clip"])
    logits, mode = bool(p["from_logits"]), str(p["mode"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        labels, log_p, binary = _distribution(y, f, logits, mode)
        ce = -(labels * log_p).sum(axis=-1)
        return _per_sample(alpha * ce + beta * _reverse_ce(labels, log_p, log_clip), binary)

    return fn


def _active_passive(p: Mapping[str, Any]) -> PerSample:
    active, passive = str(p["active"]), str(p["passive"])
    alpha, beta, q, gamma = float(p["alpha"]), float(p["beta"]), float(p["q"]), float(p["gamma"])
    log_clip, min_prob = float(p["log_clip"]), float(p["min_prob"])
    logits, mode = bool(p["from_logits"]), str(p["mode"])

    def active_loss(y: np.ndarray, log_p: np.ndarray) -> np.ndarray:
        per_class = {"ce": -log_p, "nce": -log_p}.get(active)
        if per_class is None:
            per_class = _gce_per_class(log_p, q) if active.endswith("gce") else _focal_per_class(log_p, gamma)
        return _normalized(y, per_class) if active.startswith("n") else (y * per_class).sum(axis=-1)

    def passive_loss(y: np.ndarray, log_p: np.ndarray) -> np.ndarray:
        if passive == "mae":
            return 1.0 - (y * np.exp(log_p)).sum(axis=-1)
        if passive == "rce":
            return _reverse_ce(y, log_p, log_clip)
        z = np.maximum(log_p - math.log(min_prob), 0.0)
        return 1.0 - (y * z).sum(axis=-1) / np.maximum(z.sum(axis=-1), EPS**4)

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        labels, log_p, binary = _distribution(y, f, logits, mode)
        return _per_sample(alpha * active_loss(labels, log_p) + beta * passive_loss(labels, log_p), binary)

    return fn


def _bootstrap(p: Mapping[str, Any]) -> PerSample:
    from aloss_tune.domains import BOOTSTRAP_BETA

    target, logits, mode = str(p["target"]), bool(p["from_logits"]), str(p["mode"])
    beta = BOOTSTRAP_BETA[target] if p["beta"] is None else float(p["beta"])

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        labels, log_p, binary = _distribution(y, f, logits, mode)
        if target == "soft":
            guess = np.exp(log_p)
        else:
            guess = np.eye(log_p.shape[-1])[np.argmax(log_p, axis=-1)]
        return _per_sample(-((beta * labels + (1.0 - beta) * guess) * log_p).sum(axis=-1), binary)

    return fn


# ------------------------------------------------------------------------------------ dynamic alpha
def _std(x: np.ndarray) -> float:
    return float(np.sqrt(np.var(x)))


_ALPHA: dict[str, Callable[..., float]] = {
    "constant": lambda e, alpha_value: float(alpha_value),
    "sigmoid_snr": lambda e, temperature: float(1.0 / (1.0 + np.exp(-np.mean(e) / (temperature * (_std(e) + EPS))))),
    "inverse_rms": lambda e, power: float((np.mean(np.square(e)) + EPS) ** (-0.5 * power)),
    "outlier_damping": lambda e, strength: float(1.0 / (1.0 + strength * _std(np.abs(e)) / (np.mean(np.abs(e)) + EPS))),
}


def _dynamic_alpha(p: Mapping[str, Any]) -> PerSample | None:
    from aloss_tune._alpha_formulas import BUILTIN_PARAMS, is_builtin

    formula, base, logits = str(p["alpha_formula"]), str(p["base"]), bool(p["from_logits"])
    if formula not in _ALPHA or not is_builtin(formula):
        return None  # a user's formula (or one registered under a built-in's name)
    constants = {key: float(p[key]) for key in BUILTIN_PARAMS[formula]}

    def fn(y: np.ndarray, f: np.ndarray) -> np.ndarray:
        if base in ("mse", "mae"):
            errors = y - f
            values = _mean(np.square(errors) if base == "mse" else np.abs(errors))
        elif base == "bce":
            values = _mean(_bce(y, *_binary_log_probs(f, logits)))
            errors = y - _binary_probs(f, logits, clip=False)[0]
        else:
            log_probs = _categorical_log_probs(f, logits)
            values, errors = -(y * log_probs).sum(axis=-1), y - np.exp(log_probs)
        return _ALPHA[formula](errors, **constants) * values

    return fn


_FORMS: dict[str, Callable[[Mapping[str, Any]], PerSample | None]] = {
    "mse": _mse,
    "mae": _mae,
    "huber": _huber,
    "error_mse": _error_mse,
    "barron": _barron,
    "bce": _binary_ce,
    "cce": _categorical_ce,
    "confidence_bce": _confidence_bce,
    "class_bce": _class_bce,
    "class_cce": _class_cce,
    "focal": _focal,
    "poly1": _poly1,
    "gce": _gce,
    "sce": _sce,
    "active_passive": _active_passive,
    "bootstrap": _bootstrap,
    "dynamic_alpha": _dynamic_alpha,
}
