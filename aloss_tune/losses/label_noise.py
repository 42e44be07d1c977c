"""Losses for training on noisy labels: GCE, SCE, the active-passive family and bootstrapping.

Each is a pure function in `keras.ops` returning one value per sample, plus a thin `Loss` class that
validates the hyperparameters, keeps them in ``get_config`` and lets Keras apply ``sample_weight`` and the
reduction. They share one convention for their inputs:

* **binary or categorical** (``mode``): ``"categorical"`` is a softmax over the last axis of ``y_pred`` (two
  classes or more); ``"binary"`` treats each output as a sigmoid, i.e. as two classes with ``p_1 = p`` and
  ``p_0 = 1 - p`` (several outputs are several binary problems, averaged like Keras's binary losses);
  ``"auto"`` (the default) is binary when the static last dimension of ``y_pred`` is 1 and categorical
  otherwise, so one configuration serves both tasks.
* **labels**: in categorical mode one-hot (or soft) labels of ``y_pred``'s shape, or integer class indices
  of shape ``(B,)`` or ``(B, 1)``; in binary mode 0/1 (or soft) labels of shape ``(B,)`` or ``(B, 1)``.
  Soft labels weigh the classes: "the loss of the label" is ``sum_k y_k l_k``, where ``l_k`` is the loss
  had the label been ``k`` (the reverse cross-entropy, defined through ``log y``, is the exception).
* **logits or probabilities** (``from_logits``): logits go through a stable log-softmax (log-sigmoid in
  binary mode), exact for any finite logit; probabilities are clipped to ``[eps, 1 - eps]`` as
  `aloss_tune.losses._prob.probability_epsilon` says before any logarithm, so every value and gradient is
  finite when a prediction is exactly 0 or 1.
* **precision**: 16-bit inputs are computed in float32 (`aloss_tune.losses._safe.compute_dtype`).
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from aloss_tune.domains import (  # noqa: F401 - also read from here
    ACTIVE,
    BOOTSTRAP_BETA,
    LOG_CLIP,
    MIN_PROB,
    MODES,
    PASSIVE,
    TARGETS,
)
from aloss_tune.errors import ConfigError
from aloss_tune.losses._base import (
    FINITE_NON_NEGATIVE,
    PACKAGE,
    UNIT,
    Loss,
    align,
    check_bool,
    check_choice,
)
from aloss_tune.losses._prob import binary_log_probs, categorical_log_probs, probability_epsilon
from aloss_tune.losses._safe import compute_dtype, expm1, exprel_series, exprel_threshold

__all__ = [
    "ActivePassiveLoss",
    "BootstrappedCrossentropy",
    "GeneralizedCrossentropy",
    "SymmetricCrossentropy",
    "active_passive_loss",
    "bootstrapped_crossentropy",
    "generalized_crossentropy",
    "symmetric_crossentropy",
]



# --------------------------------------------------------------------------------------- shared pieces
def _distribution(owner: str, y_true: Any, y_pred: Any, from_logits: bool, mode: str) -> tuple[Any, Any, bool]:
    """``(y, log_p, binary)``: label distribution and log-probabilities over a trailing class axis.

    In categorical mode both have ``y_pred``'s shape; in binary mode a class axis of size 2 is appended
    (``[1 - y, y]`` and ``[log(1 - p), log p]``), and ``binary`` tells the caller to average the per-output
    values over the last axis.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    dtype = compute_dtype(y_pred)
    y_pred = ops.cast(y_pred, dtype)
    y_true = ops.convert_to_tensor(y_true)
    if mode == "auto":
        if len(y_pred.shape) >= 2 and y_pred.shape[-1] is None:
            raise ValueError(
                f"{owner}: mode='auto' needs the last dimension of `y_pred` to be known (1: binary, more: "
                f"categorical), but got y_pred.shape={tuple(y_pred.shape)}; pass mode='binary' or "
                "mode='categorical'."
            )
        mode = "binary" if len(y_pred.shape) < 2 or y_pred.shape[-1] == 1 else "categorical"
    if mode == "binary":
        if len(y_pred.shape) < 2:  # (B,) predictions: one output per sample
            y_pred = ops.expand_dims(y_pred, -1)
            if len(y_true.shape) == len(y_pred.shape) - 1:
                y_true = ops.expand_dims(y_true, -1)
        y_true, y_pred = align(y_true, y_pred)
        if y_true.shape[-1] is not None and y_pred.shape[-1] is not None and y_true.shape[-1] != y_pred.shape[-1]:
            raise ValueError(
                f"{owner}: binary mode needs one label per output, but got y_true.shape={tuple(y_true.shape)} "
                f"and y_pred.shape={tuple(y_pred.shape)}; one-hot labels of a softmax output need "
                "mode='categorical'."
            )
        log_p1, log_p0 = binary_log_probs(y_pred, from_logits)
        log_p = ops.stack([log_p0, log_p1], axis=-1)
        y = ops.stack([1.0 - y_true, y_true], axis=-1)
        return y, log_p, True
    classes = y_pred.shape[-1]
    if len(y_pred.shape) < 2 or classes == 1:
        raise ValueError(
            f"{owner}: categorical mode needs the classes on the last axis of `y_pred` (2 or more), but got "
            f"y_pred.shape={tuple(y_pred.shape)}; a single sigmoid output needs mode='binary'."
        )
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if true_rank == pred_rank and y_true.shape[-1] == 1:
        indices = ops.squeeze(y_true, axis=-1)
    elif true_rank == pred_rank - 1:
        indices = y_true
    elif true_rank == pred_rank and y_true.shape[-1] in (classes, None):
        indices = None
    else:
        raise ValueError(
            f"{owner}: `y_true` must be one-hot labels of y_pred's shape {tuple(y_pred.shape)} or integer "
            f"labels of shape {tuple(y_pred.shape[:-1])} or {(*y_pred.shape[:-1], 1)}, but got "
            f"y_true.shape={tuple(y_true.shape)}."
        )
    if indices is not None:
        if classes is None:
            raise ValueError(f"{owner}: integer labels need the number of classes (the last dimension of "
                             f"`y_pred`) to be known, but got y_pred.shape={tuple(y_pred.shape)}.")
        y = ops.one_hot(ops.cast(indices, "int32"), classes, dtype=dtype)
    else:
        y = ops.cast(y_true, dtype)
    return y, categorical_log_probs(y_pred, from_logits), False


def _per_sample(values: Any, binary: bool) -> Any:
    """One value per sample: binary mode averages over its outputs (the last axis)."""
    return ops.mean(values, axis=-1) if binary else values


def _exprel(u: Any) -> Any:
    """``expm1(u) / u``, 1 at ``u = 0``, with a Taylor series near 0: no division by zero in value or gradient."""
    dtype = keras.backend.standardize_dtype(u.dtype)
    threshold = exprel_threshold(dtype)
    small = ops.abs(u) < threshold
    # Each branch gets an input that is safe in it, since both are differentiated.
    far = ops.where(small, ops.full_like(u, -1.0), u)
    near = ops.where(small, u, ops.zeros_like(u))
    return ops.where(small, exprel_series(near, dtype), expm1(far) / far)


def _gce_per_class(log_p: Any, q: float) -> Any:
    """``(1 - p^q) / q`` of every class, written as ``-log p * exprel(q log p)``: exact at ``q = 0`` (CE)."""
    if q == 0.0:
        return -log_p
    return -log_p * _exprel(q * log_p)


def _focal_per_class(log_p: Any, gamma: float) -> Any:
    """``-(1 - p)^gamma log p`` of every class; ``1 - p`` is ``-expm1(log p)`` clipped to ``[eps, 1 - eps]``."""
    if gamma == 0.0:
        return -log_p
    eps = probability_epsilon(log_p.dtype)
    one_minus_p = ops.clip(-expm1(log_p), eps, 1.0 - eps)
    return -ops.power(one_minus_p, gamma) * log_p


def _of_label(y: Any, per_class: Any) -> Any:
    return ops.sum(y * per_class, axis=-1)


def _normalized(y: Any, per_class: Any) -> Any:
    """The loss of the label divided by the sum of the loss over every class (in [0, 1])."""
    total = ops.sum(per_class, axis=-1)
    tiny = float(keras.backend.epsilon()) ** 4  # a denominator that underflowed (huge gamma) gives 0, not NaN
    return _of_label(y, per_class) / ops.maximum(total, tiny)


def _reverse_ce(y: Any, log_p: Any, log_clip: float) -> Any:
    """``-sum_k p_k log clip(y_k, exp(A), 1)``; ``-A (1 - p_y)`` for one-hot labels."""
    floor = math.exp(log_clip)
    above = y > floor
    log_y = ops.where(above, ops.log(ops.where(above, ops.minimum(y, 1.0), ops.ones_like(y))), log_clip)
    return -ops.sum(ops.exp(log_p) * log_y, axis=-1)


def _nnce(y: Any, log_p: Any, min_prob: float) -> Any:
    """Normalized negative cross-entropy: ``1 - z_y / sum_k z_k``, ``z_k = A + log max(p_k, min_prob)``."""
    z = ops.maximum(log_p - math.log(min_prob), 0.0)
    total = ops.sum(z, axis=-1)
    ratio = _of_label(y, z) / ops.maximum(total, float(keras.backend.epsilon()) ** 4)
    return 1.0 - ratio


def _active(name: str, y: Any, log_p: Any, q: float, gamma: float) -> Any:
    if name == "ce":
        return -_of_label(y, log_p)
    if name == "nce":
        return _normalized(y, -log_p)
    if name == "gce":
        return _of_label(y, _gce_per_class(log_p, q))
    if name == "ngce":
        return _normalized(y, _gce_per_class(log_p, q))
    if name == "focal":
        return _of_label(y, _focal_per_class(log_p, gamma))
    return _normalized(y, _focal_per_class(log_p, gamma))


def _passive(name: str, y: Any, log_p: Any, log_clip: float, min_prob: float) -> Any:
    if name == "mae":
        return 1.0 - _of_label(y, ops.exp(log_p))
    if name == "rce":
        return _reverse_ce(y, log_p, log_clip)
    return _nnce(y, log_p, min_prob)


def _check_weights(owner: str, alpha: Any, beta: Any) -> tuple[float, float]:
    alpha = FINITE_NON_NEGATIVE.check(owner, "alpha", alpha)
    beta = FINITE_NON_NEGATIVE.check(owner, "beta", beta)
    if alpha == 0.0 and beta == 0.0:
        raise ConfigError(f"{owner}: `alpha` and `beta` must not both be 0 (the loss would be 0), but got "
                          "alpha=0.0 and beta=0.0.")
    return alpha, beta


# ----------------------------------------------------------------------------------------------- GCE
def generalized_crossentropy(
    y_true: Any, y_pred: Any, q: float = 0.7, from_logits: bool = False, mode: str = "auto"
) -> Any:
    """Generalized cross-entropy, one value per sample: from cross-entropy (``q = 0``) to MAE (``q = 1``).

    Formula:
        ``loss = sum_k y_k (1 - p_k^q) / q``, i.e. ``(1 - p_y^q) / q`` for a one-hot label ``y``

    It is computed as ``-log p_k * exprel(q log p_k)`` with ``exprel(u) = expm1(u) / u`` (a Taylor series
    near 0), which is exact for every ``q`` in ``[0, 1]``: ``q = 0`` is the cross-entropy ``-log p_y``
    (the limit, with no 0/0), ``q = 1`` is ``1 - p_y``.

    Args:
        y_true: labels (see the module's conventions: one-hot, integer or binary).
        y_pred: probabilities or logits.
        q: the exponent, in [0, 1].
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"auto"``, ``"binary"`` or ``"categorical"``.

    References:
        Zhang and Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
        Labels", NeurIPS 2018.
    """
    q = UNIT.check("gce", "q", q)
    y, log_p, binary = _distribution("gce", y_true, y_pred, from_logits, check_choice("gce", "mode", mode, MODES))
    return _per_sample(_of_label(y, _gce_per_class(log_p, q)), binary)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GeneralizedCrossentropy(Loss):
    """Generalized cross-entropy (GCE): a noise-robust interpolation between cross-entropy and MAE.

    Formula:
        ``loss = (1 - p_y^q) / q``; ``q = 0`` is the cross-entropy, ``q = 1`` is ``1 - p_y``.

    Unlike ``keras.losses.CategoricalGeneralizedCrossEntropy`` (integer labels, probabilities, ``q`` in
    ``(0, 1)``), it takes one-hot or integer labels, logits or probabilities, binary or categorical
    outputs and every ``q`` in ``[0, 1]``.

    Args:
        q: the exponent, in [0, 1] (0.7 in the paper).
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"auto"`` (binary for one output, else categorical), ``"binary"`` or ``"categorical"``.

    Example:
        >>> loss = GeneralizedCrossentropy(q=0.7)
        >>> model.compile(optimizer="adam", loss=loss)  # softmax or sigmoid output

    References:
        Zhang and Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
        Labels", NeurIPS 2018.
    """

    def __init__(self, q: float = 0.7, from_logits: bool = False, mode: str = "auto", **kwargs: Any):
        kwargs.setdefault("name", "generalized_crossentropy")
        super().__init__(**kwargs)
        self.q = UNIT.check("gce", "q", q)
        self.from_logits = check_bool("gce", "from_logits", from_logits)
        self.mode = check_choice("gce", "mode", mode, MODES)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return generalized_crossentropy(y_true, y_pred, self.q, self.from_logits, self.mode)

    def _params(self) -> dict[str, Any]:
        return {"q": self.q, "from_logits": self.from_logits, "mode": self.mode}


# ----------------------------------------------------------------------------------------------- SCE
def symmetric_crossentropy(
    y_true: Any,
    y_pred: Any,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_clip: float = -4.0,
    from_logits: bool = False,
    mode: str = "auto",
) -> Any:
    """Symmetric cross-entropy, one value per sample: cross-entropy plus reverse cross-entropy.

    Formula:
        ``CE = -sum_k y_k log p_k``
        ``RCE = -sum_k p_k log clip(y_k, exp(A), 1)`` (``-A (1 - p_y)`` for a one-hot label)
        ``loss = alpha * CE + beta * RCE``

    Args:
        y_true: labels (one-hot, integer or binary).
        y_pred: probabilities or logits.
        alpha: weight of the cross-entropy, >= 0.
        beta: weight of the reverse cross-entropy, >= 0 (not both 0).
        log_clip: ``A``, what ``log 0`` becomes in the reverse cross-entropy, < 0.
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"auto"``, ``"binary"`` or ``"categorical"``.

    References:
        Wang, Ma, Chen, Luo, Yi and Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy Labels",
        ICCV 2019.
    """
    alpha, beta = _check_weights("sce", alpha, beta)
    log_clip = LOG_CLIP.check("sce", "log_clip", log_clip)
    y, log_p, binary = _distribution("sce", y_true, y_pred, from_logits, check_choice("sce", "mode", mode, MODES))
    out = alpha * -_of_label(y, log_p) + beta * _reverse_ce(y, log_p, log_clip)
    return _per_sample(out, binary)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SymmetricCrossentropy(Loss):
    """Symmetric cross-entropy (SCE): cross-entropy boosted by the noise-tolerant reverse cross-entropy.

    Formula:
        ``loss = alpha * CE + beta * RCE``, ``RCE = -sum_k p_k log clip(y_k, exp(A), 1) = -A (1 - p_y)``
        for one-hot labels.

    The paper sets ``A = -4``. Its reference code (and that of the active-passive losses) clips the labels at
    1e-4 instead, i.e. ``A = ln(1e-4)`` (about -9.21), which makes the RCE term 2.3 times larger: pass
    ``log_clip=math.log(1e-4)`` to reproduce that code.

    Args:
        alpha: weight of the cross-entropy, >= 0 (0.01 on MNIST, 0.1 on CIFAR-10, 6.0 on CIFAR-100 in the
            paper).
        beta: weight of the reverse cross-entropy, >= 0 (1.0; 0.1 on CIFAR-100).
        log_clip: ``A``, what ``log 0`` becomes, < 0.
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"auto"`` (binary for one output, else categorical), ``"binary"`` or ``"categorical"``.

    Example:
        >>> loss = SymmetricCrossentropy(alpha=0.1, beta=1.0, from_logits=True)

    References:
        Wang, Ma, Chen, Luo, Yi and Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy Labels",
        ICCV 2019.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        beta: float = 1.0,
        log_clip: float = -4.0,
        from_logits: bool = False,
        mode: str = "auto",
        **kwargs: Any,
    ):
        kwargs.setdefault("name", "symmetric_crossentropy")
        super().__init__(**kwargs)
        self.alpha, self.beta = _check_weights("sce", alpha, beta)
        self.log_clip = LOG_CLIP.check("sce", "log_clip", log_clip)
        self.from_logits = check_bool("sce", "from_logits", from_logits)
        self.mode = check_choice("sce", "mode", mode, MODES)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return symmetric_crossentropy(
            y_true, y_pred, self.alpha, self.beta, self.log_clip, self.from_logits, self.mode
        )

    def _params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "log_clip": self.log_clip,
            "from_logits": self.from_logits,
            "mode": self.mode,
        }


# ------------------------------------------------------------------------------------ active-passive
def active_passive_loss(
    y_true: Any,
    y_pred: Any,
    active: str = "nce",
    passive: str = "rce",
    alpha: float = 1.0,
    beta: float = 1.0,
    q: float = 0.7,
    gamma: float = 0.5,
    log_clip: float = -4.0,
    min_prob: float = 1e-7,
    from_logits: bool = False,
    mode: str = "auto",
) -> Any:
    """An active loss plus a passive loss, one value per sample (APL; ANL with ``passive="nnce"``).

    Formula:
        ``loss = alpha * active + beta * passive``

        active (``l_k`` the loss had the label been ``k``; a normalized loss is ``l_y / sum_k l_k``):

        - ``ce``: ``-log p_y``; ``nce``: ``log p_y / sum_k log p_k``
        - ``gce``: ``(1 - p_y^q) / q``; ``ngce``: ``(1 - p_y^q) / sum_k (1 - p_k^q)`` (``nce`` at ``q = 0``)
        - ``focal``: ``-(1 - p_y)^gamma log p_y``; ``nfocal``: that over ``sum_k -(1 - p_k)^gamma log p_k``

        passive:

        - ``mae``: ``1 - p_y`` (half of ``sum_k |p_k - y_k|``, the convention of the APL code, to which
          its published ``alpha``/``beta`` refer)
        - ``rce``: ``-sum_k p_k log clip(y_k, exp(A), 1)`` = ``-A (1 - p_y)``, ``A = log_clip``
        - ``nnce``: ``1 - z_y / sum_k z_k`` with ``z_k = A + log max(p_k, min_prob)``,
          ``A = -log(min_prob)``

    The normalized losses (``nce``, ``ngce``, ``nfocal``, ``nnce``) lie in [0, 1]. Every term, the
    normalizers and the focal factor ``(1 - p)^gamma`` included, is differentiated as written (the papers'
    definition; their reference code detaches the focal factor and the ``nfocal`` normalizer).

    Args:
        y_true: labels (one-hot, integer or binary).
        y_pred: probabilities or logits.
        active: one of ``ce``, ``nce``, ``gce``, ``ngce``, ``focal``, ``nfocal``.
        passive: one of ``mae``, ``rce``, ``nnce``.
        alpha: weight of the active loss, >= 0.
        beta: weight of the passive loss, >= 0 (not both 0).
        q: exponent of ``gce`` and ``ngce``, in [0, 1] (unused by the other active losses).
        gamma: focusing parameter of ``focal`` and ``nfocal``, >= 0.
        log_clip: ``A`` of ``rce``, < 0.
        min_prob: smallest probability of ``nnce``, in (0, 1); below ``1 / classes`` for a loss that is not
            constant.
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"auto"``, ``"binary"`` or ``"categorical"``.

    References:
        Ma, Huang, Wang, Romano, Erfani and Bailey, "Normalized Loss Functions for Deep Learning with Noisy
        Labels", ICML 2020.
        Ye, Li, Wei, Gong and Liu, "Active Negative Loss Functions for Learning with Noisy Labels",
        NeurIPS 2023.
    """
    owner = "active_passive"
    active = check_choice(owner, "active", active, ACTIVE)
    passive = check_choice(owner, "passive", passive, PASSIVE)
    alpha, beta = _check_weights(owner, alpha, beta)
    q = UNIT.check(owner, "q", q)
    gamma = FINITE_NON_NEGATIVE.check(owner, "gamma", gamma)
    log_clip = LOG_CLIP.check(owner, "log_clip", log_clip)
    min_prob = MIN_PROB.check(owner, "min_prob", min_prob)
    y, log_p, binary = _distribution(owner, y_true, y_pred, from_logits, check_choice(owner, "mode", mode, MODES))
    out = alpha * _active(active, y, log_p, q, gamma) + beta * _passive(passive, y, log_p, log_clip, min_prob)
    return _per_sample(out, binary)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActivePassiveLoss(Loss):
    """Active passive losses (APL) and active negative losses (ANL): ``alpha * active + beta * passive``.

    Formula:
        ``loss = alpha * active + beta * passive``, with ``active`` in ``ce``, ``nce``, ``gce``, ``ngce``,
        ``focal``, ``nfocal`` and ``passive`` in ``mae``, ``rce``, ``nnce`` (see `active_passive_loss`).

    The paper's combinations are points of this one loss: NCE+RCE (``active="nce", passive="rce"``),
    NCE+MAE, NGCE+MAE and NFL+RCE (``active="nfocal"``). ANL-CE is ``active="nce", passive="nnce"``;
    its L1 weight penalty ``delta * ||theta||_1`` is the ``l1`` of `aloss_tune.losses.Penalized`
    (``loss.l1`` of every factory), which sums over the model's kernels where the reference code also
    includes biases.

    Args:
        active: the active loss: ``ce``, ``nce``, ``gce``, ``ngce``, ``focal`` or ``nfocal``.
        passive: the passive loss: ``mae``, ``rce`` or ``nnce``.
        alpha: weight of the active loss, >= 0 (APL: 1 on MNIST and CIFAR-10, 10 on CIFAR-100).
        beta: weight of the passive loss, >= 0 (APL: 10 on MNIST, 1 on CIFAR-10, 0.1 or 1 on CIFAR-100).
        q: exponent of ``gce`` / ``ngce``, in [0, 1].
        gamma: focusing parameter of ``focal`` / ``nfocal``, >= 0 (0.5 in APL).
        log_clip: ``A`` of ``rce``, < 0 (-4, as in `SymmetricCrossentropy`; the APL code's label clip of 1e-4
            is ``A = ln(1e-4)``).
        min_prob: smallest probability of ``nnce``, in (0, 1) (1e-7 in ANL).
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"auto"`` (binary for one output, else categorical), ``"binary"`` or ``"categorical"``.

    Example:
        >>> nce_rce = ActivePassiveLoss(active="nce", passive="rce", alpha=1.0, beta=1.0)
        >>> anl_ce = ActivePassiveLoss(active="nce", passive="nnce", alpha=5.0, beta=5.0)

    References:
        Ma, Huang, Wang, Romano, Erfani and Bailey, "Normalized Loss Functions for Deep Learning with Noisy
        Labels", ICML 2020.
        Ye, Li, Wei, Gong and Liu, "Active Negative Loss Functions for Learning with Noisy Labels",
        NeurIPS 2023.
    """

    def __init__(
        self,
        active: str = "nce",
        passive: str = "rce",
        alpha: float = 1.0,
        beta: float = 1.0,
        q: float = 0.7,
        gamma: float = 0.5,
        log_clip: float = -4.0,
        min_prob: float = 1e-7,
        from_logits: bool = False,
        mode: str = "auto",
        **kwargs: Any,
    ):
        kwargs.setdefault("name", "active_passive")
        super().__init__(**kwargs)
        owner = "active_passive"
        self.active = check_choice(owner, "active", active, ACTIVE)
        self.passive = check_choice(owner, "passive", passive, PASSIVE)
        self.alpha, self.beta = _check_weights(owner, alpha, beta)
        self.q = UNIT.check(owner, "q", q)
        self.gamma = FINITE_NON_NEGATIVE.check(owner, "gamma", gamma)
        self.log_clip = LOG_CLIP.check(owner, "log_clip", log_clip)
        self.min_prob = MIN_PROB.check(owner, "min_prob", min_prob)
        self.from_logits = check_bool(owner, "from_logits", from_logits)
        self.mode = check_choice(owner, "mode", mode, MODES)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return active_passive_loss(y_true, y_pred, **self._params())

    def _params(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "passive": self.passive,
            "alpha": self.alpha,
            "beta": self.beta,
            "q": self.q,
            "gamma": self.gamma,
            "log_clip": self.log_clip,
            "min_prob": self.min_prob,
            "from_logits": self.from_logits,
            "mode": self.mode,
        }


# --------------------------------------------------------------------------------------- bootstrapping
def _bootstrap_beta(owner: str, beta: Any, target: str) -> float:
    return BOOTSTRAP_BETA[target] if beta is None else UNIT.check(owner, "beta", beta)


def bootstrapped_crossentropy(
    y_true: Any,
    y_pred: Any,
    beta: float | None = None,
    target: str = "soft",
    from_logits: bool = False,
    mode: str = "auto",
) -> Any:
    """Bootstrapped cross-entropy, one value per sample: the label mixed with the model's own prediction.

    Formula:
        soft: ``loss = -sum_k (beta y_k + (1 - beta) p_k) log p_k``
        hard: ``loss = -sum_k (beta y_k + (1 - beta) z_k) log p_k``, ``z`` the one-hot argmax of ``p``

    The soft target is differentiated, as in the paper: its ``(1 - beta)`` part is the entropy of the
    prediction, a minimum-entropy regularizer, and stopping its gradient would make it a different loss.
    The hard target ``z`` is piecewise constant and carries no gradient.

    Args:
        y_true: labels (one-hot, integer or binary).
        y_pred: probabilities or logits.
        beta: weight of the label, in [0, 1] (1 is cross-entropy); ``None``: the paper's value for the
            target, 0.95 soft, 0.8 hard.
        target: ``"soft"`` or ``"hard"``.
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"auto"``, ``"binary"`` or ``"categorical"``.

    References:
        Reed, Lee, Anguelov, Szegedy, Erhan and Rabinovich, "Training Deep Neural Networks on Noisy Labels
        with Bootstrapping", ICLR 2015 workshop.
    """
    owner = "bootstrap"
    target = check_choice(owner, "target", target, TARGETS)
    beta = _bootstrap_beta(owner, beta, target)
    y, log_p, binary = _distribution(owner, y_true, y_pred, from_logits, check_choice(owner, "mode", mode, MODES))
    if target == "soft":
        guess = ops.exp(log_p)
    else:
        guess = ops.stop_gradient(ops.one_hot(ops.argmax(log_p, axis=-1), log_p.shape[-1], dtype=log_p.dtype))
    return _per_sample(-_of_label(beta * y + (1.0 - beta) * guess, log_p), binary)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BootstrappedCrossentropy(Loss):
    """Bootstrapping: cross-entropy against a mix of the label and the model's own prediction.

    Formula:
        soft: ``loss = -sum_k (beta y_k + (1 - beta) p_k) log p_k``
        hard: ``loss = -sum_k (beta y_k + (1 - beta) z_k) log p_k``, ``z = one_hot(argmax p)``

    The soft target is differentiated (the paper's minimum-entropy regularization); the hard one carries
    no gradient.

    Args:
        beta: weight of the label, in [0, 1]; ``None`` (default) takes the paper's value for the target,
            0.95 soft and 0.8 hard, and ``get_config`` then holds that number.
        target: ``"soft"`` or ``"hard"``.
        from_logits: whether ``y_pred`` holds logits.
        mode: ``"auto"`` (binary for one output, else categorical), ``"binary"`` or ``"categorical"``.

    Example:
        >>> loss = BootstrappedCrossentropy(target="hard")  # beta 0.8

    References:
        Reed, Lee, Anguelov, Szegedy, Erhan and Rabinovich, "Training Deep Neural Networks on Noisy Labels
        with Bootstrapping", ICLR 2015 workshop.
    """

    def __init__(
        self,
        beta: float | None = None,
        target: str = "soft",
        from_logits: bool = False,
        mode: str = "auto",
        **kwargs: Any,
    ):
        kwargs.setdefault("name", "bootstrapped_crossentropy")
        super().__init__(**kwargs)
        self.target = check_choice("bootstrap", "target", target, TARGETS)
        self.beta = _bootstrap_beta("bootstrap", beta, self.target)
        self.from_logits = check_bool("bootstrap", "from_logits", from_logits)
        self.mode = check_choice("bootstrap", "mode", mode, MODES)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return bootstrapped_crossentropy(y_true, y_pred, self.beta, self.target, self.from_logits, self.mode)

    def _params(self) -> dict[str, Any]:
        return {"beta": self.beta, "target": self.target, "from_logits": self.from_logits, "mode": self.mode}
