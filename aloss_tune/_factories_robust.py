"""Factories of Barron's general (`barron`) and adaptive (`adaptive_barron`) robust losses.

``barron`` searches the shape over ``[-4, 1.5]`` (from beyond Geman-McClure up to between pseudo-Huber and
L2) and the scale log-uniformly over ``[0.01, 1]`` robust spreads of the targets. ``adaptive_barron`` learns both
during ``fit``; what a search can tune are the bounds it learns them within (alpha in ``[0.001, 1.999]`` by
default, as in the paper: with room above 2 a fit may learn a loss steeper than L2) and where it starts (scale
within ``[0.03, 1]`` spreads). A good model's residuals are much smaller than the targets' spread (which holds
the signal too), and a scale far above them makes the loss L2 for all of them: on the quality suite's
contaminated problems the best scales and deltas lay between 0.01 and 1 spreads, and every trial above 2
spreads (Huber deltas of 4.4 spreads, Barron scales of 4 to 7 spreads) was among the worst or dead. A study's
first round starts ``barron`` at alpha 0 (Cauchy) and scale 0.1 spreads, ``adaptive_barron`` at 0.15 spreads.

The adaptive loss's default ranges never produce an invalid combination: ``alpha_lo`` ranges below
``alpha_hi`` (they may meet at 1, which fixes alpha), ``alpha_init`` defaults to the midpoint of the bounds, and
``scale_init`` ranges above ``scale_lo``'s default. ``alpha_init`` and ``scale_lo`` have no default range (a
space may still search them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aloss_tune.distributions import Float
from aloss_tune.domains import FINITE_NON_NEGATIVE, FINITE_POSITIVE, Interval
from aloss_tune.factories import LossFactory, ParamSpec, register_loss_factory

if TYPE_CHECKING:
    from aloss_tune.losses.adaptive import AdaptiveRobustLoss
    from aloss_tune.losses.robust import RobustLoss

REGRESSION = ("regression",)


def _barron(alpha: float, scale: float) -> RobustLoss:
    from aloss_tune.losses.robust import RobustLoss

    return RobustLoss(alpha=alpha, scale=scale)


def _adaptive_barron(
    alpha_lo: float, alpha_hi: float, alpha_init: Any, scale_lo: float, scale_init: float, shared: bool
) -> AdaptiveRobustLoss:
    from aloss_tune.losses.adaptive import AdaptiveRobustLoss

    return AdaptiveRobustLoss(
        shared=shared,
        alpha_lo=alpha_lo,
        alpha_hi=alpha_hi,
        alpha_init=alpha_init,
        scale_lo=scale_lo,
        scale_init=scale_init,
    )


register_loss_factory(
    LossFactory(
        "barron",
        _barron,
        (
            ParamSpec("alpha", float, 1.0, Interval(), Float(-4.0, 1.5), start=0.0,
                      doc="shape: 2 L2, 1 pseudo-Huber, 0 Cauchy, -2 Geman-McClure, -inf Welsch"),
            ParamSpec("scale", float, 1.0, FINITE_POSITIVE, Float(0.01, 1.0, log=True), relative=True, start=0.1,
                      doc="residual size below which the loss is quadratic"),
        ),
        tasks=REGRESSION,
        description="Barron's general robust loss with a fixed shape alpha and scale",
    )
)

register_loss_factory(
    LossFactory(
        "adaptive_barron",
        _adaptive_barron,
        (
            ParamSpec("alpha_lo", float, 0.001, FINITE_NON_NEGATIVE, Float(0.001, 1.0),
                      doc="lower bound of the learned alpha (>= 0)"),
            ParamSpec("alpha_hi", float, 1.999, FINITE_NON_NEGATIVE, Float(1.0, 1.999),
                      doc="upper bound of the learned alpha; equal bounds fix alpha (the default range stays "
                          "below 2: a learned alpha above 2 is steeper than L2, the opposite of robust)"),
            ParamSpec("alpha_init", float, None, FINITE_NON_NEGATIVE, None,
                      doc="initial alpha, strictly between the bounds (default: their midpoint)"),
            ParamSpec("scale_lo", float, 1e-5, FINITE_POSITIVE, None, relative=True,
                      doc="lower bound of the learned scale"),
            ParamSpec("scale_init", float, 1.0, FINITE_POSITIVE, Float(0.03, 1.0, log=True), relative=True,
                      start=0.15,
                      doc="initial scale (>= scale_lo); equal to scale_lo fixes the scale (the default range "
                          "stays within 3 spreads: started far above the residuals, the loss is L2 for them)"),
            ParamSpec("shared", bool, False, None, None,
                      doc="one alpha and scale for all output dimensions instead of one pair each"),
        ),
        tasks=REGRESSION,
        description="Barron's adaptive loss: the NLL with alpha and scale learned during fit (needs attach)",
        adaptive=True,
    )
)
