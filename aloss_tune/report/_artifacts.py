"""Write a study's artifacts: figures, the trials table and the one-page summary.

`study_artifacts_dir` is what a study calls when it ends (and again when it resumes): it writes every
artifact into a fresh temporary folder, whose files the tracker logs on the study's MLflow parent run. It
never raises into the study: a step that fails is logged as a warning and the others still run.
`write_report` does the same into a folder of the user's choosing, for people without an MLflow server.

Artifacts (fixed names, so that a resumed study overwrites them):

* ``optimization_history.png``, ``objective_by_loss.png``, ``param_importances.png``,
  ``parallel_coordinates.png``, ``loss_shape.png``, and ``learned_params.png`` when a trial learned loss
  parameters;
* ``trials.csv``: one row per trial;
* ``summary.md`` / ``summary.html``: the one-page summary (the HTML embeds its figures);
* ``interactive.html``: Optuna's interactive plots, only when plotly happens to be installed.
"""

from __future__ import annotations

import atexit
import base64
import functools
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aloss_tune._schema import DEFAULT_KT_DIRECTORY

_log = logging.getLogger("aloss_tune.report")

SUMMARY_FORMATS = ("md", "html")
KT_DIRECTORY = DEFAULT_KT_DIRECTORY  # the KerasTuner backend's default project root
MIN_TRIALS_FOR_IMPORTANCE = 2


def _step(name: str, notes: list[str], fn: Callable[[], Any]) -> Any:
    """Run one step; on failure log a warning, note it for the summary and return ``None``."""
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # plotting and importance chatter is not the user's concern
            return fn()
    except Exception as exc:  # noqa: BLE001 - a report must never stop a study
        message = f"{name}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        _log.warning("report: could not write %s", message)
        notes.append(f"could not write {message}")
        return None
    finally:
        _log.debug("report: %s took %.2f s", name, time.perf_counter() - started)


def as_optuna_study(data: Any) -> Any:
    """An in-memory `optuna.Study` of ``data``'s complete trials (searched params, ranges and objective), so
    that Optuna's importances and plots serve every backend's studies alike."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(study_name=data.name, direction=data.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in data.complete:
        try:
            study.add_trial(optuna.trial.create_trial(
                value=t.value, params=dict(t.search_params), distributions=dict(t.distributions)))
        except ValueError as exc:  # a value outside its recorded range: left out, not fatal
            _log.debug("report: trial %d left out of the importances (%s)", t.number, exc)
    return study


def param_importances(data: Any) -> tuple[dict[str, float] | None, str]:
    """Optuna's default importances (PED-ANOVA, conditional parameters included), or ``None`` and why."""
    import optuna

    n_complete = len(data.complete)
    if n_complete < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
                      f"this study has {n_complete}.")
    try:
        values = optuna.importance.get_param_importances(as_optuna_study(data))
    except (ValueError, RuntimeError) as exc:
        return None, f"Optuna could not rank the parameters: {exc}"
    if not values:
        return None, "The study searches no parameter (every value is fixed)."
    return {k: float(v) for k, v in values.items()}, ""


def _interactive_html(data: Any, path: Path) -> Path | None:
    """Optuna's plotly figures in one self-contained page, when plotly is installed (not a dependency)."""
    if importlib.util.find_spec("plotly") is None:
        return None
    import optuna.visualization as vis

    study = as_optuna_study(data)
    figures = [vis.plot_optimization_history(study), vis.plot_param_importances(study),
               vis.plot_parallel_coordinate(study), vis.plot_slice(study)]
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{study.study_name}</title></head>"
            f"<body>{''.join(parts)}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path


def _embed_images(page_html: str, folder: Path) -> str:
    """Replace ``src="<figure>.png"`` by data URLs, so that the page stands alone (and previews in MLflow)."""
    def inline(match: re.Match[str]) -> str:
        path = folder / match.group(1)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    return re.sub(r'src="([\w.-]+\.png)"', inline, page_html)


def write_artifacts(study: Any, out_dir: str | Path, ctx: Any = None, *,
                    formats: Sequence[str] = SUMMARY_FORMATS) -> dict[str, Path]:
    """Write every artifact of ``study`` into ``out_dir``; returns ``{name: path}``.

    Args:
        study: the study's `aloss_tune.backends.base.StudyRecord` (a backend's ``records(study)``), or
            `StudyData` (see `aloss_tune.report._study.read_study`).
        out_dir: the folder (created if missing).
        ctx: the run's `aloss_tune.runner.TrialContext`, when the caller has it (gives the task and the
            target's spread without guessing).
        formats: the summary formats to write, among ``md`` and ``html``.

    Each figure is its own step: one that fails is noted in the summary and logged, the rest are written.
    """
    from aloss_tune.report import _plots, _study, _summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    written: dict[str, Path] = {}

    def keep(name: str, path: Path | None) -> None:
        if path is not None and Path(path).is_file():
            written[name] = Path(path)

    data = _step("the study", notes, lambda: _study.read_study(study, ctx))
    if data is None:
        return written
    keep("trials.csv", _step("trials.csv", notes, lambda: _study.write_trials_csv(data, out / "trials.csv")))
    ranking = _step("importances", notes, lambda: param_importances(data))
    importances, reason = ranking if ranking is not None else (None, "Could not compute the importances.")
    figures: list[tuple[str, Callable[[Path], Path | None]]] = [
        ("optimization_history.png", lambda p: _plots.plot_history(data, p)),
        ("objective_by_loss.png", lambda p: _plots.plot_by_family(data, p)),
        ("param_importances.png", lambda p: _plots.plot_importances(data, importances, p, reason)),
        ("parallel_coordinates.png", lambda p: _plots.plot_parallel(data, importances, p)),
        ("loss_shape.png", lambda p: _loss_shape_figure(data, p, notes)),
        ("learned_params.png", lambda p: _plots.plot_learned(data, p)),
    ]
    for name, draw in figures:
        keep(name, _step(name, notes, functools.partial(_draw_into, draw, out / name)))
    interactive = out / "interactive.html"
    keep(interactive.name, _step(interactive.name, notes, lambda: _interactive_html(data, interactive)))

    pngs = [name for name in written if name.endswith(".png")]
    for fmt in formats:
        name = f"summary.{fmt}"

        def render(fmt: str = fmt, name: str = name) -> Path:
            page = _summary.build_page(data, pngs, notes)
            path = out / name
            text = page.to_markdown() if fmt == "md" else _embed_images(page.to_html(), out)
            path.write_text(text, encoding="utf-8")
            return path

        keep(name, _step(name, notes, render))
    return written


def _loss_shape_figure(data: Any, path: Path, notes: list[str]) -> Path:
    from aloss_tune.report import _plots, _shape

    best = data.best
    if best is None:
        return _plots.plot_loss_shape(data, None, path)
    try:
        shape = _shape.loss_shape(data, best)
    except Exception as exc:  # noqa: BLE001 - e.g. a user loss not registered in this process
        reason = f"The best loss ({best.loss}) could not be evaluated here: {type(exc).__name__}: {exc}"
        notes.append(reason)
        return _plots.plot_loss_shape(data, None, path, reason=reason)
    return _plots.plot_loss_shape(data, shape, path)


def study_artifacts_dir(study: Any, ctx: Any = None) -> Path | None:
    """Write all artifacts of ``study`` (a `StudyRecord`) into a fresh temporary folder and return it (removed
    at exit).

    Called when a study ends, its files are logged on the study's MLflow parent run. Never raises: a
    failure is logged as a warning, and whatever could be written is returned (``None`` if nothing).
    """
    try:
        label = getattr(study, "name", None) or "study"
        name = re.sub(r"[^\w.-]+", "_", str(label))[:60]
        folder = Path(tempfile.mkdtemp(prefix=f"aloss_tune_{name}_"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001
        _log.warning("report: cannot create a temporary folder for the study's artifacts (%s)", exc)
        return None
    started = time.perf_counter()
    try:
        write_artifacts(study, folder, ctx)
    except Exception as exc:  # noqa: BLE001 - a report must never stop a study
        _log.warning("report: writing the study's artifacts failed (%s: %s)", type(exc).__name__, exc)
    _log.debug("report: artifacts written in %.2f s", time.perf_counter() - started)
    return folder if any(folder.iterdir()) else None


def load_study(study_name: str, storage: str | None = None, *, directory: str | Path | None = None,
               backend: str = "optuna") -> Any:
    """The `aloss_tune.backends.base.StudyRecord` of ``study_name``, read (only) by its backend: from an
    Optuna storage URL (default: ``$ALOSS_TUNE_STORAGE`` or the embedded) or from the KerasTuner project
    ``<directory>/<study_name>`` (default ``kt_projects``).

    When the Optuna storage has no such study but a KerasTuner project of that name is under ``directory``,
    the error says to add ``--backend keras-tuner``.
    """
    from aloss_tune.backends.base import make_backend
    from aloss_tune.errors import UsageError

    try:
        return make_backend(backend, storage=storage, directory=directory).records(study_name)
    except UsageError:
        if backend != "optuna" or not _is_keras_tuner_study(study_name, directory):
            raise
    root = Path(directory if directory is not None else KT_DIRECTORY)
    flag = "" if directory is None else f" --directory {directory}"
    raise UsageError(f"study {study_name!r} is a KerasTuner project in {root}: add --backend keras-tuner{flag}.")


def _is_keras_tuner_study(study_name: str, directory: str | Path | None) -> bool:
    from aloss_tune.backends.base import make_backend
    from aloss_tune.errors import UsageError

    if not (Path(directory if directory is not None else KT_DIRECTORY) / study_name).is_dir():
        return False  # nothing to read (and no KerasTuner, nor Keras, to load for it)
    try:
        make_backend("keras-tuner", directory=directory).records(study_name)
    except UsageError:
        return False
    return True


def check_writable(folder: str | Path) -> None:
    """`UsageError` unless ``folder`` is, or can be made, a writable folder (nothing is created)."""
    from aloss_tune.errors import UsageError

    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"report: cannot write the folder {folder}: {existing} is not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"report: cannot write the folder {folder}: {existing} is not writable.")


def write_report(study: Any, out_dir: str | Path, fmt: str = "md", *, storage: str | None = None,
                 ctx: Any = None, backend: str = "optuna", directory: str | Path | None = None) -> Path:
    """Write the figures, ``trials.csv`` and the summary page of ``study`` into ``out_dir``.

    Args:
        study: a study name, read (only) from ``storage`` (``backend="optuna"``) or from
            ``<directory>/<study>`` (``backend="keras-tuner"``); or its `StudyRecord` (see `load_study`).
        out_dir: the output folder (created if missing; existing artifacts are overwritten).
        fmt: ``md`` (Markdown, figures beside it) or ``html`` (one page with the figures embedded).
        storage: the Optuna storage URL when ``study`` is a name.
        ctx: the run's `aloss_tune.runner.TrialContext`, if at hand.
        backend: ``optuna`` or ``keras-tuner``, when ``study`` is a name.
        directory: the KerasTuner project root (default ``kt_projects``).

    Returns:
        The summary page's path.

    Example::

        aloss_tune.report.write_report("robust_regression", "report/", fmt="html",
                                       storage="sqlite:///aloss_tune.db")
    """
    from aloss_tune.errors import UsageError

    if fmt not in SUMMARY_FORMATS:
        raise UsageError(f"report: `fmt` must be one of {', '.join(SUMMARY_FORMATS)}, but got {fmt!r}.")
    if backend not in ("optuna", "keras-tuner"):
        raise UsageError(f"report: `backend` must be optuna or keras-tuner, but got {backend!r}.")
    name = study if isinstance(study, str) else getattr(study, "name", "?")
    check_writable(out_dir)
    if isinstance(study, str):
        study = load_study(study, storage, directory=directory, backend=backend)
    try:
        written = write_artifacts(study, out_dir, ctx, formats=(fmt,))
    except OSError as exc:
        raise UsageError(f"report: cannot write the folder {out_dir} ({exc.strerror or exc}).") from None
    summary = written.get(f"summary.{fmt}")
    if summary is None:
        raise UsageError(f"report: could not write the summary of study {name!r} (see the warnings).")
    return summary


def _draw_into(draw: Callable[[Path], Any], path: Path) -> Any:
    return draw(path)
