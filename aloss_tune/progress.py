"""What a study shows while it runs: one line per finished trial, or a progress bar on a terminal.

Without a terminal (logs, CI, ``nohup``, ``--workers N``), one line per finished trial::

    trial 7 complete  loss=barron  val_mae=61.2  best=58.3 (trial 4)
    trial 8 pruned    loss=huber   val_mae=70.1  best=58.3 (trial 4)
    trial 9 dead      loss=mse     val_mae=150.9  best=58.3 (trial 4)
    trial 10 failed   loss=mse     ValueError: ...

On a terminal, one bar rewritten in place, with the counts (`aloss_tune.states`) and the best trial's loss::

    12/24 [##########----------] 8 complete, 2 dead, 1 pruned, 1 failed | best val_mae=58.3 (trial 4, barron)

`make_reporter` chooses; both are called the same way by the backends after each trial.
"""

from __future__ import annotations

import math
import shutil
import sys
from typing import Any, TextIO

from aloss_tune.states import counts_text


def interactive() -> bool:
    """A person is watching: stderr is a terminal, or Python runs in an interactive shell or a notebook."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty or hasattr(sys, "ps1") or "ipykernel" in sys.modules


def resolve(progress: bool | str | None) -> tuple[bool, bool]:
    """``(bar, lines)`` for `aloss_tune.tune`'s ``progress``: ``None`` is a bar when interactive, else lines;
    ``"lines"`` is lines whatever the terminal."""
    if progress == "lines":
        return False, True
    if progress is None:
        return (True, False) if interactive() else (False, True)
    return bool(progress), False


def make_reporter(progress: bool | str | None, metric: str, direction: str, *,
                  total: int | None = None) -> TrialLog | TrialBar | None:
    """The per-trial reporter for `aloss_tune.tune`'s ``progress`` (see `resolve`), or ``None`` for nothing."""
    bar, lines = resolve(progress)
    if bar:
        return TrialBar(metric, direction, total=total)
    return TrialLog(metric, direction) if lines else None


class TrialLog:
    """Writes one line per finished trial with the best value so far (of the trials this process saw, or the
    study's best when the backend gives it)."""

    def __init__(self, metric: str, direction: str, stream: TextIO | None = None):
        self.metric = metric
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.stream = stream
        self.best: tuple[float, int] | None = None
        self.best_loss: Any = None

    def __call__(self, number: int, state: str, loss: Any, value: float | None = None, *,
                 error: str | None = None, best: tuple[float, int] | None = None, best_loss: Any = None) -> None:
        if state == "complete" and value is not None and math.isfinite(value):
            if self.best is None or self.sign * value < self.sign * self.best[0]:
                self.best, self.best_loss = (value, number), loss
        if best is not None:
            self.best, self.best_loss = best, best_loss
        parts = [f"trial {number} {state:<8}", f"loss={loss}"]
        if error:
            parts.append(" ".join(error.split())[:200])
        elif value is not None:
            parts.append(f"{self.metric}={value:.6g}")
        if self.best is not None:
            parts.append(f"best={self.best[0]:.6g} (trial {self.best[1]})")
        self.write("  ".join(parts))

    def write(self, line: str) -> None:
        # One write of the whole line: worker processes share the stream, and print() writes the text and its
        # newline separately, which interleaves lines on an unbuffered stream (PYTHONUNBUFFERED, python -u).
        stream = self.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def close(self) -> None:
        """Nothing to finish: every line is complete."""


class TrialBar(TrialLog):
    """A progress bar on one terminal line, rewritten after each trial: trials done (of ``total`` when
    known), the counts of each state, the best value with its trial and loss, and the last trial. A failed
    trial also gets its own line above the bar (its error)."""

    WIDTH = 20  # characters of the bar itself

    def __init__(self, metric: str, direction: str, stream: TextIO | None = None, *, total: int | None = None):
        super().__init__(metric, direction, stream)
        self.total = total
        self.counts: dict[str, int] = {}
        self.shown = 0  # characters of the bar line now on screen

    def __call__(self, number: int, state: str, loss: Any, value: float | None = None, *,
                 error: str | None = None, best: tuple[float, int] | None = None, best_loss: Any = None) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        if error:
            self._line(f"trial {number} failed  loss={loss}  {' '.join(error.split())[:200]}", newline=True)
        if state == "complete" and value is not None and math.isfinite(value):
            if self.best is None or self.sign * value < self.sign * self.best[0]:
                self.best, self.best_loss = (value, number), loss
        if best is not None:
            self.best, self.best_loss = best, best_loss
        self._line(self.text(number, state, loss))

    def text(self, number: int, state: str, loss: Any) -> str:
        done = sum(self.counts.values())
        parts = [f"{done}/{self.total}" if self.total else f"{done} trials"]
        if self.total:
            filled = min(self.WIDTH, round(self.WIDTH * done / self.total))
            parts[0] += f" [{'#' * filled}{'-' * (self.WIDTH - filled)}]"
        parts.append(counts_text(self.counts))
        if self.best is not None:
            of = f"trial {self.best[1]}" + (f", {self.best_loss}" if self.best_loss is not None else "")
            parts.append(f"best {self.metric}={self.best[0]:.6g} ({of})")
        parts.append(f"last: trial {number} {loss} {state}")
        return parts[0] + " " + " | ".join(parts[1:])

    def _line(self, text: str, *, newline: bool = False) -> None:
        stream = self.stream or sys.stderr
        width = shutil.get_terminal_size((100, 24)).columns - 1
        text = text[:width]
        stream.write("\r" + text + " " * max(0, self.shown - len(text)) + ("\n" if newline else ""))
        stream.flush()
        self.shown = 0 if newline else len(text)

    def close(self) -> None:
        """End the bar's line."""
        if self.shown:
            stream = self.stream or sys.stderr
            stream.write("\n")
            stream.flush()
            self.shown = 0
