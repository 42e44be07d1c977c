"""The study's figures, drawn with matplotlib's object API on the Agg canvas (headless; no pyplot state).

Every figure has the same size (`FIGSIZE` at `DPI`, i.e. `PIXELS`), so the MLflow preview and the report
page look alike. A figure that cannot say anything yet (no complete trial) is drawn as a short message
rather than left out, so that the user sees why it is empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aloss_tune.report._study import StudyData

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from aloss_tune.report._shape import Shape

FIGSIZE = (9.0, 5.5)
DPI = 100
PIXELS = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
_MAX_PARALLEL_AXES = 9


# ----------------------------------------------------------------------------------------------- helpers
def new_figure(ncols: int = 1, nrows: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure of the standard size with a grid of axes, using the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG of exactly `PIXELS` (no tight bounding box, which would change the size)."""
    fig.savefig(path, dpi=DPI, format="png")
    return path


def message_figure(path: Path, title: str, message: str) -> Path:
    """A figure holding only a title and a short explanation."""
    fig, axes = new_figure()
    ax = axes[0][0]
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=12, transform=ax.transAxes)
    return save(fig, path)


def family_colors(data: StudyData) -> dict[str, Any]:
    """One stable color per loss family, in the order of the space's choices."""
    from matplotlib import colormaps

    names = list(dict.fromkeys([*data.losses, *(t.loss for t in data.trials)]))
    palette = colormaps["tab10"].colors  # type: ignore[attr-defined]  # a ListedColormap
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _value_limits(values: Sequence[float], minimize: bool) -> tuple[float, float]:
    """Axis limits zoomed on objective values (those of the trials that learned: `_zoomed_on`), keeping the
    good end visible when a few trials are far off. The baseline does not stretch them: `_baseline` marks it
    with a note when it is outside, and `_clip_markers` marks the trials outside at the edge."""
    points = sorted(values)
    lo, hi = points[0], points[-1]
    if len(points) >= 5:
        q_lo, q_hi = np.quantile(points, [0.1, 0.9])
        span = max(q_hi - q_lo, 1e-12)
        # Clip only the bad end, and only when it is far away: a diverged trial would flatten the rest.
        if minimize and hi > q_hi + 3 * span:
            hi = q_hi + span
        if not minimize and lo < q_lo - 3 * span:
            lo = q_lo - span
    pad = 0.06 * (hi - lo) if hi > lo else (abs(hi) * 0.05 or 1.0)
    return lo - pad, hi + pad


def _zoomed_on(rows: Sequence[Any]) -> list[float]:
    """The values the value axis zooms on: those of the trials that are not dead (all, if every one is)."""
    live = [float(t.value) for t in rows if not t.dead]
    return live or [float(t.value) for t in rows]


def _clip_markers(ax: Axes, xs: Sequence[float], ys: Sequence[float], limits: tuple[float, float]) -> None:
    """Mark points outside the value axis at its edge."""
    lo, hi = limits
    for x, y in zip(xs, ys, strict=True):
        if y > hi:
            ax.plot([x], [hi], marker="^", color="0.4", markersize=7, clip_on=False)
        elif y < lo:
            ax.plot([x], [lo], marker="v", color="0.4", markersize=7, clip_on=False)


def _baseline(ax: Axes, data: StudyData, limits: tuple[float, float]) -> None:
    """The dead-trial bar, the objective of a constant prediction: a dashed line when it lies within the
    value axis ``limits``, else a note at the edge it lies beyond (the axis stays zoomed on the trials)."""
    if data.baseline is None:
        return
    what = "predict the training median" if data.task == "regression" else "a constant prediction"
    lo, hi = limits
    if lo <= data.baseline <= hi:
        ax.axhline(data.baseline, color="crimson", linestyle="--", linewidth=1.2, label=f"baseline: {what}")
        return
    above = data.baseline > hi
    arrow, side = ("\u25b2", "above") if above else ("\u25bc", "below")
    ax.text(0.99, 0.98 if above else 0.02, f"{arrow} baseline ({what}): {data.baseline:.4g}, {side} the axis",
            transform=ax.transAxes, ha="right", va="top" if above else "bottom", fontsize=8, color="crimson",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0}, zorder=5)


# ----------------------------------------------------------------------------------------------- figures
def plot_history(data: StudyData, path: Path) -> Path:
    """Objective of every finished trial by trial number, colored by loss family, with the best so far."""
    done = [t for t in data.trials if t.value is not None and t.state in ("complete", "pruned")]
    if not done:
        return message_figure(path, f"{data.name}: optimization history", "No finished trial yet.")
    fig, axes = new_figure()
    ax = axes[0][0]
    colors = family_colors(data)
    complete = [t for t in done if t.complete]
    limits = _value_limits(_zoomed_on(done), data.minimize)
    for name in colors:
        rows = [t for t in complete if t.loss == name]
        if rows:
            ax.scatter([t.number for t in rows], [t.value for t in rows], color=colors[name], s=36,
                       label=name, zorder=3, edgecolors="white", linewidths=0.5)
    pruned = [t for t in done if t.state == "pruned"]
    if pruned:
        ax.scatter([t.number for t in pruned], [t.value for t in pruned], marker="x", color="0.55", s=30,
                   label="pruned (last value)", zorder=2)
    dead = [t for t in done if t.dead]
    if dead:
        ax.scatter([t.number for t in dead], [t.value for t in dead], facecolors="none", edgecolors="crimson",
                   s=110, linewidths=1.2, label="dead (no better than baseline)", zorder=4)
    if complete:
        numbers, best_so_far, best = [], [], None
        for t in sorted(complete, key=lambda r: r.number):
            if best is None or data.better(t.value, best):  # type: ignore[arg-type]
                best = t.value
            numbers.append(t.number)
            best_so_far.append(best)
        ax.step(numbers, best_so_far, where="post", color="black", linewidth=1.5, label="best so far",
                zorder=2)
    _baseline(ax, data, limits)
    _clip_markers(ax, [t.number for t in done], [t.value for t in done], limits)  # type: ignore[misc]
    ax.set_ylim(*limits)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{data.metric} ({data.direction})")
    ax.set_title(f"{data.name}: optimization history")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save(fig, path)


def plot_importances(data: StudyData, importances: Mapping[str, float] | None, path: Path,
                     reason: str = "") -> Path:
    """Horizontal bars of the parameters' importances (Optuna's default evaluator, normalised to sum 1)."""
    title = f"{data.name}: parameter importances"
    if not importances:
        return message_figure(path, title, reason or "Not enough complete trials to rank the parameters.")
    fig, axes = new_figure()
    ax = axes[0][0]
    items = sorted(((k, v) for k, v in importances.items() if math.isfinite(v)), key=lambda kv: kv[1])[-15:]
    if not items:
        return message_figure(path, title, reason or "Optuna could not rank the parameters.")
    names = [k for k, _ in items]
    values = [float(v) for _, v in items]
    bars = ax.barh(range(len(items)), values, color="steelblue")
    ax.set_yticks(range(len(items)), names, fontsize=9)
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.2f}", va="center",
                fontsize=8)
    ax.set_xlim(0, max(values + [1e-9]) * 1.15)
    ax.set_xlabel(f"importance for {data.metric} (sums to 1)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def plot_by_family(data: StudyData, path: Path) -> Path:
    """Box and strip plot of the complete trials' objective per loss family, best family first."""
    title = f"{data.name}: {data.metric} by loss family"
    families = [f for f in data.families() if any(t.loss == f.loss for t in data.complete)]
    if not families:
        return message_figure(path, title, "No complete trial yet.")
    fig, axes = new_figure()
    ax = axes[0][0]
    colors = family_colors(data)
    values = [[t.value for t in data.complete if t.loss == f.loss] for f in families]
    ax.boxplot(values, positions=range(len(families)), widths=0.5, showfliers=False,
               medianprops={"color": "black"}, boxprops={"color": "0.4"}, whiskerprops={"color": "0.4"},
               capprops={"color": "0.4"})
    rng = np.random.default_rng(0)
    limits = _value_limits(_zoomed_on([t for t in data.complete if t.loss in {f.loss for f in families}]),
                           data.minimize)
    for i, family in enumerate(families):
        rows = [t for t in data.complete if t.loss == family.loss]
        xs = i + rng.uniform(-0.15, 0.15, size=len(rows))
        ax.scatter(xs, [t.value for t in rows], color=colors[family.loss], s=28, zorder=3, alpha=0.85,
                   edgecolors="white", linewidths=0.5)
        dead = [(x, t.value) for x, t in zip(xs, rows, strict=True) if t.dead]
        if dead:
            ax.scatter([d[0] for d in dead], [d[1] for d in dead], marker="x", color="crimson", s=40,
                       zorder=4)
        _clip_markers(ax, list(xs), [t.value for t in rows], limits)  # type: ignore[misc]
    labels = [f"{f.loss}\nn={len(group)}" + (f", dead={f.dead}" if f.dead else "")
              for f, group in zip(families, values, strict=True)]
    ax.set_xticks(range(len(families)), labels, fontsize=9)
    _baseline(ax, data, limits)
    ax.set_ylim(*limits)
    ax.set_ylabel(f"{data.metric} ({data.direction})")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    return save(fig, path)


def _axis_position(value: Any, dist: Any) -> float:
    """A param value on [0, 1] along its distribution (log scale where the search was)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        return choices.index(value) / max(len(choices) - 1, 1) if value in choices else math.nan
    low, high = float(dist.low), float(dist.high)
    v = float(value)
    if getattr(dist, "log", False):
        low, high, v = math.log(low), math.log(high), math.log(v)
    return 0.5 if high <= low else (v - low) / (high - low)


def _axis_ticks(dist: Any) -> list[tuple[float, str]]:
    """``(position, text)`` labels of one axis: every choice of a categorical, the bounds of a range."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        return [(_axis_position(c, dist), str(c)) for c in choices]
    return [(0.0, f"{dist.low:.3g}"), (1.0, f"{dist.high:.3g}")]


def axis_label(name: str) -> str:
    """A parallel-coordinates axis name: a loss family's parameter without the ``loss.`` prefix
    (``huber.delta``), every other name as it is searched (``loss``, ``loss.l2``, ``model.units``)."""
    parts = name.split(".")
    return ".".join(parts[1:]) if len(parts) == 3 and parts[0] == "loss" else name


def _fit(text: str, max_chars: int) -> str:
    """``text``, cut to ``max_chars`` with an ellipsis when longer."""
    return text if len(text) <= max_chars else text[:max(max_chars - 1, 1)] + "\u2026"


_VALUE_FONT = 7  # points; the value labels beside each axis
_CHAR_WIDTH = 0.62  # a character's width, in em, of the default sans-serif font (generous)


def _family(name: str) -> str | None:
    """The loss family a searched name belongs to (``loss.huber.delta`` -> ``huber``), ``None`` if shared."""
    parts = name.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "loss" else None


def parallel_axes(names: Sequence[str], importances: Mapping[str, float] | None,
                  limit: int = _MAX_PARALLEL_AXES) -> list[str]:
    """The parameter axes of the parallel coordinates: the ``limit`` most important names, arranged as the
    loss choice and the parameters every trial has (model, optimizer, penalty), then each loss family's own
    parameters side by side, family by family (most important first within each group)."""
    rank = sorted(names, key=lambda n: (-(importances or {}).get(n, -1.0), n))
    if "loss" in rank:
        rank.remove("loss")
        rank.insert(0, "loss")
    chosen = rank[:limit]
    families = list(dict.fromkeys(_family(n) for n in chosen if _family(n) is not None))
    shared = [n for n in chosen if _family(n) is None]
    return shared + [n for family in families for n in chosen if _family(n) == family]


_SECTION_GAP = 0.6  # extra room (in axis spacings) before each loss family's section


def _runs(ys: Sequence[float], sections: Sequence[int]) -> list[list[int]]:
    """The runs of consecutive indices of ``ys`` that hold a value (not NaN) within one section."""
    runs: list[list[int]] = []
    for i, y in enumerate(ys):
        if math.isnan(y):
            continue
        if runs and runs[-1][-1] == i - 1 and sections[i] == sections[i - 1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def plot_parallel(data: StudyData, importances: Mapping[str, float] | None, path: Path) -> Path:
    """Parallel coordinates of the complete trials, colored by the objective, drawing for each trial only the
    parameters that apply to it (`parallel_axes`).

    The first section holds the loss, the parameters every trial has and the objective, so that every
    trial's line runs through it; then comes one section per loss family with that family's own
    parameters, where only its trials have a line. A line never crosses an axis of a parameter its trial did
    not have (it would read as a value there): it breaks between sections instead.

    Axis names are slanted so that long ones never run into their neighbours, and the value labels beside
    an axis (a categorical's choices, a range's bounds) are cut to the room left before the previous axis.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    title = f"{data.name}: parallel coordinates"
    done = data.complete
    if not done:
        return message_figure(path, title, "No complete trial yet.")
    dists: dict[str, Any] = {}
    for t in done:
        for name, dist in t.distributions.items():
            dists.setdefault(name, dist)
    names = parallel_axes(list(dists), importances)
    shared = [n for n in names if _family(n) is None]
    slots: list[str | None] = [*shared, None, *(n for n in names if _family(n) is not None)]  # None: objective
    families = [None if slot is None else _family(slot) for slot in slots]
    sections = [0 if family is None else 1 + list(dict.fromkeys(f for f in families if f)).index(family)
                for family in families]
    xs_of = []
    x = 0.0
    for i in range(len(slots)):
        if i and sections[i] != sections[i - 1]:
            x += _SECTION_GAP
        xs_of.append(x)
        x += 1.0
    fig, axes = new_figure()
    ax = axes[0][0]
    values = np.array([t.value for t in done], dtype="float64")
    lo, hi = float(values.min()), float(values.max())
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    cmap = colormaps["viridis_r" if data.minimize else "viridis"]
    ranked = sorted(done, key=lambda t: _value(t) if not data.minimize else -_value(t))  # best drawn last
    best = data.best
    for t in ranked:
        objective = 0.5 if hi <= lo else (t.value - lo) / (hi - lo)  # type: ignore[operator]
        ys = [objective if n is None else _axis_position(t.search_params[n], dists[n]) if n in t.search_params
              else math.nan for n in slots]
        is_best = best is not None and t.number == best.number
        for piece in _runs(ys, sections):  # one piece per section it has values in
            ax.plot([xs_of[i] for i in piece], [ys[i] for i in piece],
                    color="crimson" if is_best else cmap(norm(_value(t))), linewidth=2.6 if is_best else 1.2,
                    alpha=1.0 if is_best else 0.75, marker="o", markersize=3, zorder=3 if is_best else 2,
                    gid=f"trial-{t.number}")
    for i, x in enumerate(xs_of):
        ax.axvline(x, color="0.3", linewidth=1.6 if slots[i] is None else 0.8, zorder=1)
        if i and sections[i] != sections[i - 1]:
            ax.axvspan(x - 0.35, xs_of[max(j for j in range(len(slots)) if sections[j] == sections[i])] + 0.35,
                       color="0.94", zorder=0)
    labels = [data.metric if n is None else axis_label(n) for n in slots]
    ax.set_xticks(xs_of, labels, fontsize=8, rotation=25, ha="right", rotation_mode="anchor")
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    ax.set_xlim(-0.6, xs_of[-1] + 0.2)
    # Room between two axes, in characters of the value labels (the plot is about 80 % of the figure wide).
    gap_inches = 0.8 * FIGSIZE[0] / (xs_of[-1] + 1.2)
    room = max(int(gap_inches * 72 / (_VALUE_FONT * _CHAR_WIDTH)) - 1, 3)
    for i, slot in enumerate(slots):
        ticks = [(0.0, f"{lo:.4g}"), (1.0, f"{hi:.4g}")] if slot is None else _axis_ticks(dists[slot])
        for position, text in ticks:
            ax.text(xs_of[i] - 0.03, position, text if i == 0 else _fit(text, room), ha="right", va="center",
                    fontsize=_VALUE_FONT, color="0.25",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5})
    colorbar = fig.colorbar(_mappable(cmap, norm), ax=ax, pad=0.01)
    colorbar.set_label(data.metric)
    shown = f"; top {len(names)} of {len(dists)} params by importance" if len(dists) > len(names) else ""
    best_text = f"; red: the best trial ({best.number})" if best is not None else ""
    sectioned = "; shaded: each loss family's own params" if len(set(sections)) > 1 else ""
    ax.set_title(f"{title}\n{len(done)} complete trials{best_text}{shown}{sectioned}", fontsize=10)
    return save(fig, path)


def _mappable(cmap: Any, norm: Any) -> Any:
    from matplotlib.cm import ScalarMappable

    mappable = ScalarMappable(norm=norm, cmap=cmap)
    mappable.set_array([])
    return mappable


def plot_loss_shape(data: StudyData, shape: Shape | None, path: Path, reason: str = "") -> Path:
    """The best loss's rho and psi beside its references (MSE and MAE, or cross-entropy).

    A regression loss is drawn against the residual in units of the target's robust spread (``-5`` to
    ``5``; dashed: one spread), so that the figures of studies on differently scaled targets compare.
    """
    title = f"{data.name}: shape of the best loss"
    if shape is None:
        return message_figure(path, title, reason or "No complete trial yet.")
    fig, axes = new_figure(ncols=2)
    ax_rho, ax_psi = axes[0]
    case_styles = {"": "-", "y=1": "-", "y=0": "--"}
    reference_case_styles = {"y=1": ":", "y=0": "-."}
    references = 0
    xs = shape.x / shape.spread if shape.task == "regression" else shape.x
    for curve in shape.curves:
        if curve.reference:
            color, width = ("0.3", "0.55")[references % 2], 1.4
            plain_style = (":", "-.")[references % 2]
            references += 1
        else:
            color, width, plain_style = "crimson", 2.2, "-"
        for case in curve.rho:
            if not case:
                style = plain_style
            else:
                style = reference_case_styles[case] if curve.reference else case_styles[case]
            suffix = f" [{case}]" if case else ""
            ax_rho.plot(xs, curve.rho[case], linestyle=style, color=color, linewidth=width,
                        label=f"{curve.label}{suffix}")
            ax_psi.plot(xs, curve.psi[case], linestyle=style, color=color, linewidth=width)
    if shape.task == "regression":
        for ax in (ax_rho, ax_psi):
            for sign in (-1, 1):
                ax.axvline(sign, color="0.75", linewidth=0.8, linestyle="--")
            ax.axhline(0, color="0.75", linewidth=0.8)
        ax_psi.set_ylim(-1.08, 1.08)
    else:
        # Log scale: class weights multiply a curve (a constant offset here) and focusing terms bend it.
        for ax, series in ((ax_rho, "rho"), (ax_psi, "psi")):
            top = max(float(np.nanmax(getattr(c, series)[k])) for c in shape.curves for k in c.rho)
            ax.set_yscale("log")
            ax.set_ylim(1e-3, max(top * 1.5, 1e-2))
    ax_rho.set_xlabel(shape.x_label, fontsize=9)
    ax_psi.set_xlabel(shape.x_label, fontsize=9)
    ax_rho.set_ylabel(shape.rho_label, fontsize=9)
    ax_psi.set_ylabel(shape.psi_label, fontsize=9)
    ax_rho.set_title("rho: the loss", fontsize=10)
    ax_psi.set_title("psi: the influence of one example", fontsize=10)
    for ax in (ax_rho, ax_psi):
        ax.grid(alpha=0.3)
    ax_rho.legend(loc="best", fontsize=8)
    subtitle = shape.curves[0].label + ("; " + "; ".join(shape.notes) if shape.notes else "")
    fig.suptitle(f"{title}\n{subtitle}", fontsize=10)
    return save(fig, path)


def plot_learned(data: StudyData, path: Path) -> Path | None:
    """Per-epoch trajectories of the learned loss parameters (alpha, scale, ...) of adaptive trials.

    Returns ``None`` (and writes nothing) when no trial learned anything.
    """
    from matplotlib.ticker import MaxNLocator

    trials = data.adaptive()
    if not trials:
        return None
    groups: dict[str, list[str]] = {}
    for t in trials:
        for key in t.learned:
            base = key.split(".", 1)[0]
            groups.setdefault(base, [])
            if key not in groups[base]:
                groups[base].append(key)
    bases = sorted(groups, key=lambda b: (b != "alpha", b != "scale", b))
    fig, axes = new_figure(ncols=len(bases))
    best = data.best
    best_adaptive = min((t for t in trials if t.complete and t.value is not None),
                        key=lambda t: t.value if data.minimize else -t.value, default=None)  # type: ignore
    highlight = best.number if best is not None and best.learned else (
        best_adaptive.number if best_adaptive is not None else None)
    for ax, base in zip(axes[0], bases, strict=True):
        for t in trials:
            for key in groups[base]:
                series = t.learned.get(key)
                if not series:
                    continue
                epochs = np.arange(1, len(series) + 1)
                if t.number == highlight:
                    ax.plot(epochs, series, color="crimson", linewidth=2.2, marker="o", markersize=3,
                            label=f"trial {t.number}{'' if key == base else ' ' + key}", zorder=3)
                else:
                    ax.plot(epochs, series, color="0.55" if t.state != "pruned" else "0.8", linewidth=1.0,
                            alpha=0.8)
        values = [v for t in trials for key in groups[base] for v in t.learned.get(key, ())]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if base == "scale" and data.task == "regression":
            ax.axhline(data.target_scale, color="0.5", linestyle=":", linewidth=1,
                       label=f"target robust spread {data.target_scale:.3g}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(base)
        ax.set_title(f"learned {base}", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{data.name}: learned loss parameters of {len(trials)} adaptive trial(s) "
                 "(red: the best of them)", fontsize=10)
    return save(fig, path)


def _value(trial: Any) -> float:
    """A finished trial's objective (``done`` trials always have one)."""
    return math.nan if trial.value is None else float(trial.value)
