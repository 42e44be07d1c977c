"""Exceptions raised by aloss-tune.

Two kinds of failure, as in Optuna and KerasTuner: a trial that failed (the study goes on) and a fatal
configuration or usage error (stop before any work starts). Every class subclasses a builtin so callers
can catch ``ValueError`` without importing us.
"""

from __future__ import annotations


class AlossTuneError(Exception):
    """Base class of every error raised by aloss-tune."""


class ConfigError(AlossTuneError, ValueError):
    """An invalid loss parameter, search space or setting.

    The message names the parameter (or the key path in a YAML file), the value received and what is
    allowed, e.g. ``huber: `delta` must be > 0, but got delta=-1.0.``
    """


class ConfigErrors(ConfigError):
    """Several independent configuration errors found together (e.g. bad keys in different sections of one
    search space): ``messages`` holds each one's one-line message, in the order found; ``str()`` is one per
    line."""

    def __init__(self, messages: list[str]):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


class UsageError(AlossTuneError, ValueError):
    """A command or API used the wrong way (an unknown study, an unreachable storage, ...)."""


class TrialFailed(AlossTuneError, RuntimeError):
    """One trial failed (an exception in training, a non-finite loss); the study goes on."""


class TrialDead(AlossTuneError):
    """A trial stopped early because it was not learning (see `aloss_tune.states`); not a failure.

    Attributes:
        epochs: the epochs it trained.
        best: its best objective value (``None`` if none was finite).
        baseline: the objective of a constant predictor it never beat.
        history: its per-epoch metrics until it was stopped.
    """

    def __init__(self, message: str, *, epochs: int, best: float | None, baseline: float,
                 history: dict[str, list[float]] | None = None):
        super().__init__(message)
        self.epochs = epochs
        self.best = best
        self.baseline = baseline
        self.history = dict(history or {})

    def record(self) -> dict[str, float | int | None]:
        """What a backend stores on the trial: ``{"epochs", "best", "baseline"}``."""
        return {"epochs": self.epochs, "best": self.best, "baseline": self.baseline}


class StudyFailed(AlossTuneError, RuntimeError):
    """Every trial a command ran failed: it has no result (the message names the most common error)."""


def describe(value: object) -> str:
    """A short, unambiguous rendering of a received value for error messages."""
    if isinstance(value, str):
        return repr(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def located(message: str, where: str) -> str:
    """``message`` on one line, prefixed once with the space file it refers to (``where``: ``"file: "``)."""
    text = " ".join(message.split())
    return text if not where or text.startswith(where) else where + text
