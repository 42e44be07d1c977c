"""Factories of the label-noise family: ``gce``, ``sce``, ``active_passive`` and ``bootstrap``.

Each works for binary (one sigmoid output) and multiclass (softmax) models with the default ``mode``
(``auto``), on one-hot or integer labels. Default search ranges come from the papers' published settings
and their reference code (cited in each parameter's ``doc``). ``active_passive`` holds the whole
active-passive family: the sub-loss constants (``q`` of ``gce``/``ngce``, ``gamma`` of ``focal``/``nfocal``,
``log_clip`` of ``rce``, ``min_prob`` of ``nnce``) are conditional on the sub-loss that uses them, so a search
samples and logs them only when it chose that sub-loss.
"""

from __future__ import annotations

from typing import Any

from aloss_tune.distributions import Categorical, Float
from aloss_tune.domains import ACTIVE, FINITE_NON_NEGATIVE, LOG_CLIP, MIN_PROB, MODES, PASSIVE, TARGETS, UNIT
from aloss_tune.factories import LossFactory, ParamSpec, register_loss_factory

CLASSIFICATION = ("binary", "multiclass")
When = tuple[str, tuple[Any, ...]] | None


def _from_logits() -> ParamSpec:
    return ParamSpec("from_logits", bool, False, None, None, doc="y_pred holds logits (no final sigmoid/softmax)")


def _mode() -> ParamSpec:
    return ParamSpec("mode", str, "auto", MODES, None,
                     doc="auto: binary for one output, categorical (softmax) otherwise")


def _q(when: When = None) -> ParamSpec:
    return ParamSpec("q", float, 0.7, UNIT, Float(0.1, 0.9),
                     doc="exponent: 0 is cross-entropy, 1 is MAE; 0.7 in Zhang & Sabuncu 2018, 0.1 (MNIST, "
                         "CIFAR-10) and 0.7 (CIFAR-100) for NGCE in Ma et al. 2020", when=when)


def _log_clip(when: When = None) -> ParamSpec:
    return ParamSpec("log_clip", float, -4.0, LOG_CLIP, None,
                     doc="A, the value of log 0 in reverse cross-entropy (-4 in Wang et al. 2019; their code's "
                         "label clip 1e-4 is A = -9.21)", when=when)


FACTORIES = (
    LossFactory(
        "gce",
        "aloss_tune.losses.label_noise:GeneralizedCrossentropy",
        (_q(), _from_logits(), _mode()),
        tasks=CLASSIFICATION,
        description="generalized cross-entropy (1 - p_y^q) / q: CE at q = 0, MAE at q = 1 (Zhang & Sabuncu 2018)",
    ),
    LossFactory(
        "sce",
        "aloss_tune.losses.label_noise:SymmetricCrossentropy",
        (
            ParamSpec("alpha", float, 0.1, FINITE_NON_NEGATIVE, Float(0.01, 10.0, log=True),
                      doc="weight of CE: 0.01 MNIST, 0.1 CIFAR-10, 6.0 CIFAR-100, 10 Clothing1M "
                          "(Wang et al. 2019)"),
            ParamSpec("beta", float, 1.0, FINITE_NON_NEGATIVE, Float(0.1, 1.0, log=True),
                      doc="weight of reverse CE: 1.0, 0.1 on CIFAR-100 (Wang et al. 2019)"),
            _log_clip(),
            _from_logits(),
            _mode(),
        ),
        tasks=CLASSIFICATION,
        description="symmetric cross-entropy: alpha CE + beta reverse CE (Wang et al. 2019)",
    ),
    LossFactory(
        "active_passive",
        "aloss_tune.losses.label_noise:ActivePassiveLoss",
        (
            ParamSpec("active", str, "nce", ACTIVE, Categorical(("nce", "ngce", "nfocal")),
                      doc="active loss; the normalized ones are robust (Ma et al. 2020); ce, gce, focal on request"),
            ParamSpec("passive", str, "rce", PASSIVE, Categorical(PASSIVE),
                      doc="passive loss: mae, rce (Ma et al. 2020) or nnce (ANL, Ye et al. 2023)"),
            ParamSpec("alpha", float, 1.0, FINITE_NON_NEGATIVE, Float(1.0, 50.0, log=True),
                      doc="weight of the active loss: 1 MNIST/CIFAR-10, 10 CIFAR-100, 50 WebVision (APL); "
                          "1-20 in ANL"),
            ParamSpec("beta", float, 1.0, FINITE_NON_NEGATIVE, Float(0.1, 10.0, log=True),
                      doc="weight of the passive loss: 10 MNIST, 1 CIFAR-10, 0.1 (rce) or 1 (mae) CIFAR-100 "
                          "(APL); 1-5 in ANL"),
            _q(when=("active", ("gce", "ngce"))),
            ParamSpec("gamma", float, 0.5, FINITE_NON_NEGATIVE, Float(0.0, 5.0),
                      doc="focusing parameter: 0.5 in APL and ANL, 0-5 in Lin et al. 2017",
                      when=("active", ("focal", "nfocal"))),
            _log_clip(when=("passive", ("rce",))),
            ParamSpec("min_prob", float, 1e-7, MIN_PROB, None,
                      doc="smallest probability of nnce, below 1/classes (1e-7 in ANL)",
                      when=("passive", ("nnce",))),
            _from_logits(),
            _mode(),
        ),
        tasks=CLASSIFICATION,
        description="alpha * active + beta * passive (APL: NCE+RCE, NGCE+MAE, NFL+RCE; ANL-CE: NCE+NNCE)",
    ),
    LossFactory(
        "bootstrap",
        "aloss_tune.losses.label_noise:BootstrappedCrossentropy",
        (
            ParamSpec("beta", float, None, UNIT, Float(0.5, 1.0),
                      doc="weight of the label (1: CE); null: Reed et al. 2015's 0.95 soft, 0.8 hard"),
            ParamSpec("target", str, "soft", TARGETS, Categorical(TARGETS),
                      doc="soft: the prediction p (differentiated); hard: its argmax"),
            _from_logits(),
            _mode(),
        ),
        tasks=CLASSIFICATION,
        description="bootstrapping: CE against beta y + (1 - beta) prediction (Reed et al. 2015)",
    ),
)

for _factory in FACTORIES:
    register_loss_factory(_factory)
