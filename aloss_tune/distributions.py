"""Search-range value objects: `Float`, `Int`, `Categorical`.

They mirror Optuna's distributions (and its YAML-friendly short form ``{type: float, low, high, log,
step}``) but belong to aloss-tune, so that the loss factories can declare default search ranges without
importing any search backend. They are immutable, validated on construction, comparable and printable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aloss_tune.errors import ConfigError, describe

Scalar = bool | int | float | str | None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]``, optionally log-uniform or on a grid of ``step``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        for key in ("low", "high"):
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value):
                raise ConfigError(f"`{key}` must be a finite number, but got {key}={describe(value)}.")
            object.__setattr__(self, key, float(value))
        if self.low > self.high:
            raise ConfigError(f"`low <= high` must hold, but got (low={self.low}, high={self.high}).")
        if self.step is not None:
            if self.log:
                raise ConfigError(
                    f"`step` and `log` cannot be used together, but got (step={self.step}, log=True)."
                )
            if not _is_number(self.step) or not self.step > 0:
                raise ConfigError(f"`step` must be a number > 0, but got step={describe(self.step)}.")
            object.__setattr__(self, "step", float(self.step))
            span, step = Decimal(repr(self.high)) - Decimal(repr(self.low)), Decimal(repr(self.step))
            if span % step != 0:
                raise _step_error(self.low, self.high, self.step)
        if self.log and self.low <= 0:
            raise ConfigError(f"`low > 0` must hold when `log` is true, but got (low={self.low}, log=True).")

    def contains(self, value: object) -> bool:
        return _is_number(value) and self.low <= float(value) <= self.high  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "float", "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    def scaled(self, factor: float) -> Float:
        """The same range multiplied by ``factor`` (> 0); used for data-relative default ranges."""
        step = None if self.step is None else self.step * factor
        return Float(_round_sig(self.low * factor), _round_sig(self.high * factor), self.log, step)

    def __str__(self) -> str:
        kind = "log-uniform" if self.log else "uniform"
        step = f", step {self.step:g}" if self.step is not None else ""
        return f"{kind} [{self.low:g}, {self.high:g}]{step}"


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]``, optionally log-uniform or on a grid of ``step``."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        for key in ("low", "high", "step"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool)):
                if _is_number(value) and float(value).is_integer():
                    object.__setattr__(self, key, int(value))
                else:
                    raise ConfigError(f"`{key}` must be an integer, but got {key}={describe(value)}.")
        if self.low > self.high:
            raise ConfigError(f"`low <= high` must hold, but got (low={self.low}, high={self.high}).")
        if self.step < 1:
            raise ConfigError(f"`step` must be >= 1, but got step={self.step}.")
        if (self.high - self.low) % self.step != 0:
            raise _step_error(self.low, self.high, self.step)
        if self.log and self.step != 1:
            raise ConfigError(
                f"`step` and `log` cannot be used together, but got (step={self.step}, log=True)."
            )
        if self.log and self.low < 1:
            raise ConfigError(f"`low >= 1` must hold when `log` is true, but got (low={self.low}, log=True).")

    def contains(self, value: object) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "int", "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step != 1:
            out["step"] = self.step
        return out

    def __str__(self) -> str:
        kind = "log-uniform int" if self.log else "int"
        step = f", step {self.step}" if self.step != 1 else ""
        return f"{kind} [{self.low}, {self.high}]{step}"


@dataclass(frozen=True)
class Categorical:
    """One of a fixed, non-empty tuple of choices (numbers, strings, booleans or None)."""

    choices: tuple[Scalar, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        choices = self.choices
        if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)):
            raise ConfigError(f"`choices` must be a list, but got choices={describe(choices)}.")
        choices = tuple(choices)
        if not choices:
            raise ConfigError("`choices` must not be empty, but got choices=[].")
        for choice in choices:
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise ConfigError(
                    "`choices` may hold numbers, strings, booleans or null only, "
                    f"but got {describe(choice)}."
                )
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"`choices` must be unique, but got choices={list(choices)}.")
        object.__setattr__(self, "choices", choices)

    def contains(self, value: object) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)}

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


Distribution = Float | Int | Categorical


def _step_error(low: float, high: float, step: float) -> ConfigError:
    """A grid whose steps do not end at ``high``: Optuna would silently lower ``high`` to the last step (and
    a step beyond the range leaves ``low`` as the only value)."""
    return ConfigError(f"`step` must divide `high - low` (the grid is low, low + step, ..., high), but got "
                       f"(low={low:g}, high={high:g}, step={step:g}).")


def _round_sig(value: float, digits: int = 3) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def from_dict(spec: dict[str, Any]) -> Distribution:
    """Build a distribution from Optuna's short form; raises `ConfigError` naming the bad key."""
    if not isinstance(spec, dict):
        raise ConfigError(f"a search range must be a mapping, but got {describe(spec)}.")
    kind = spec.get("type")
    allowed = {
        "float": {"type", "low", "high", "log", "step"},
        "int": {"type", "low", "high", "log", "step"},
        "categorical": {"type", "choices"},
    }
    if kind not in allowed:
        raise ConfigError(
            f"`type` must be one of float, int, categorical, but got type={describe(kind)}."
        )
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise ConfigError(
            f"unknown key `{unknown[0]}` for type {kind}; allowed keys: {', '.join(sorted(allowed[kind]))}."
        )
    if kind == "categorical":
        if "choices" not in spec:
            raise ConfigError("`choices` is required for type categorical.")
        return Categorical(spec["choices"])
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"`{key}` is required for type {kind}.")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"`log` must be true or false, but got log={describe(log)}.")
    if kind == "float":
        return Float(spec["low"], spec["high"], log=log, step=spec.get("step"))
    step = spec.get("step", 1)
    if "step" in spec and log:
        raise ConfigError(f"`step` and `log` cannot be used together, but got (step={step}, log=True).")
    return Int(spec["low"], spec["high"], log=log, step=step)
