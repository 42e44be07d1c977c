"""The valid values of loss parameters: numeric `Interval` domains, choice tuples and their checks.

The losses (`aloss_tune.losses`) validate their hyperparameters with these, and the factories
(`aloss_tune.factories`) declare them as each parameter's domain, so both say the same thing. This module
imports nothing of ours but `aloss_tune.errors` (nor Keras): a command that only lists or checks parameters
(``aloss-tune losses``, ``validate``, ``best``) never loads a tensor library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aloss_tune.errors import ConfigError, describe


@dataclass(frozen=True)
class Interval:
    """A numeric domain such as ``> 0``, ``[0, 1]`` or ``>= -1``; validates values with clear errors."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        lo_inf, hi_inf = self.low == -math.inf, self.high == math.inf
        if lo_inf and hi_inf:
            return "any number" if not self.integer else "any integer"
        if hi_inf:
            finite = " and finite" if self.high_open else ""
            return f"{'>' if self.low_open else '>='} {self.low:g}{finite}"
        if lo_inf:
            finite = " and finite" if self.low_open else ""
            return f"{'<' if self.high_open else '<='} {self.high:g}{finite}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def check(self, owner: str, name: str, value: Any) -> float:
        """Return ``value`` as a float (or int) if it lies in the domain, else raise `ConfigError`."""
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok_type:
            try:  # numpy scalars
                import numpy as np

                ok_type = isinstance(value, np.number) and not isinstance(value, np.bool_)
            except ImportError:  # pragma: no cover
                pass
        if not ok_type:
            kind = "an integer" if self.integer else "a number"
            raise ConfigError(f"{owner}: `{name}` must be {kind} {self}, but got {name}={describe(value)}.")
        number = float(value)
        if self.integer and not number.is_integer():
            raise ConfigError(f"{owner}: `{name}` must be an integer {self}, but got {name}={describe(value)}.")
        if not self.contains(number):
            raise ConfigError(f"{owner}: `{name}` must be {self}, but got {name}={describe(value)}.")
        return int(number) if self.integer else number


POSITIVE = Interval(0.0, math.inf, low_open=True)
NON_NEGATIVE = Interval(0.0, math.inf)
UNIT = Interval(0.0, 1.0)
# Open at infinity: a hyperparameter that must be a finite number (a weight, a Huber delta, ...).
FINITE_POSITIVE = Interval(0.0, math.inf, low_open=True, high_open=True)
FINITE_NON_NEGATIVE = Interval(0.0, math.inf, high_open=True)


def check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: `{name}` must be true or false, but got {name}={describe(value)}.")
    return value


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"{owner}: `{name}` must be one of {', '.join(choices)}, but got {name}={describe(value)}."
        )
    return value


# ------------------------------------------------------------------------- the domains of single losses
#: Poly-1 (`aloss_tune.losses.classic`): its ``epsilon`` and its output ``mode``.
POLY1_EPSILON = Interval(-1.0, math.inf, high_open=True)
POLY1_MODES = ("binary", "categorical")
#: The base losses of `aloss_tune.losses.DynamicAlpha`.
BASES = ("mse", "mae", "bce", "cce")
#: The label-noise losses (`aloss_tune.losses.label_noise`): output modes, sub-losses, bootstrapping targets.
MODES = ("auto", "binary", "categorical")
ACTIVE = ("ce", "nce", "gce", "ngce", "focal", "nfocal")
PASSIVE = ("mae", "rce", "nnce")
TARGETS = ("soft", "hard")
#: Reed et al.'s values of bootstrapping's ``beta`` for each target (its default when ``beta`` is null).
BOOTSTRAP_BETA = {"soft": 0.95, "hard": 0.8}
#: The log-clip ``A`` of reverse cross-entropy: ``log 0`` is replaced by ``A < 0``.
LOG_CLIP = Interval(-math.inf, 0.0, low_open=True, high_open=True)
#: The smallest probability of normalized negative cross-entropy.
MIN_PROB = Interval(0.0, 1.0, low_open=True, high_open=True)

__all__ = [
    "ACTIVE",
    "BASES",
    "BOOTSTRAP_BETA",
    "FINITE_NON_NEGATIVE",
    "FINITE_POSITIVE",
    "LOG_CLIP",
    "MIN_PROB",
    "MODES",
    "NON_NEGATIVE",
    "PASSIVE",
    "POLY1_EPSILON",
    "POLY1_MODES",
    "POSITIVE",
    "TARGETS",
    "UNIT",
    "Interval",
    "check_bool",
    "check_choice",
]
