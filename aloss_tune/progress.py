"""One line per finished trial, for studies that run without a terminal (logs, CI, ``nohup``, workers).

::

    trial 7 complete  loss=barron  val_mae=61.2  best=58.3 (trial 4)
    trial 8 pruned    loss=huber   val_mae=70.1  best=58.3 (trial 4)
    trial 9 failed    loss=mse     ValueError: ...

With a terminal, a progress bar shows the same thing; `resolve` chooses.
"""

from __future__ import annotations

import math
import sys
from typing import Any, TextIO


def interactive() -> bool:
    """A person is watching: stderr is a terminal, or Python runs in an interactive shell or a notebook."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty or hasattr(sys, "ps1") or "ipykernel" in sys.modules


def resolve(progress: bool | None) -> tuple[bool, bool]:
    """``(bar, lines)`` for `aloss_tune.tune`'s ``progress``: ``None`` is a bar when interactive, else lines."""
    if progress is None:
        return (True, False) if interactive() else (False, True)
    return bool(progress), False


class TrialLog:
    """Writes one line per finished trial with the best value so far (of the trials this process saw, or the
    study's best when the backend gives it)."""

    def __init__(self, metric: str, direction: str, stream: TextIO | None = None):
        self.metric = metric
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.stream = stream
        self.best: tuple[float, int] | None = None

    def __call__(self, number: int, state: str, loss: Any, value: float | None = None, *,
                 error: str | None = None, best: tuple[float, int] | None = None) -> None:
        if state == "complete" and value is not None and math.isfinite(value):
            if self.best is None or self.sign * value < self.sign * self.best[0]:
                self.best = (value, number)
        if best is not None:
            self.best = best
        parts = [f"trial {number} {state:<8}", f"loss={loss}"]
        if error:
            parts.append(" ".join(error.split())[:200])
        elif value is not None:
            parts.append(f"{self.metric}={value:.6g}")
        if self.best is not None:
            parts.append(f"best={self.best[0]:.6g} (trial {self.best[1]})")
        stream = self.stream or sys.stderr
        print("  ".join(parts), file=stream, flush=True)
