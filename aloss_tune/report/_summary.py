"""The one-page summary of a study, as Markdown or HTML from one description of its content.

It says which loss won and how to reuse it, how each loss family fared, the top trials, how many trials
were dead (never better than a constant prediction: `aloss_tune.states`), and shows the figures written
beside it. Trials are counted as the console and MLflow count them: complete, dead, pruned, failed.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aloss_tune.report._study import StudyData
from aloss_tune.states import counts_text

TOP_TRIALS = 10

# (file name, caption) of the figures, in the order the page shows them.
FIGURES = (
    ("optimization_history.png", "Optimization history: every finished trial's objective, the best so far "
                                 "and the dead-trial bar (a constant prediction), zoomed on the trials."),
    ("objective_by_loss.png", "Objective by loss family."),
    ("param_importances.png", "Parameter importances."),
    ("parallel_coordinates.png", "Parallel coordinates of the complete trials: the loss, the shared parameters "
                                 "and the objective, then each loss family's own parameters (a trial's line "
                                 "only where its parameters apply)."),
    ("loss_shape.png", "The best loss's shape: rho(x) and its derivative psi(x), the influence of a "
                       "residual, beside the references."),
    ("learned_params.png", "Learned alpha and scale of the adaptive trials, per epoch."),
)


@dataclass
class Page:
    """A page as a list of blocks ``(kind, payload)``; rendered by `to_markdown` and `to_html`."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", (list(header), [[_text(c) for c in r] for r in rows])))

    def code(self, text: str, language: str = "") -> None:
        self.blocks.append(("code", (text, language)))

    def image(self, src: str, caption: str) -> None:
        self.blocks.append(("img", (src, caption)))

    # ------------------------------------------------------------------------------------------ render
    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, payload in self.blocks:
            if kind == "h2":
                out += [f"## {payload}", ""]
            elif kind == "p":
                out += [payload, ""]
            elif kind == "ul":
                out += [f"- {item}" for item in payload] + [""]
            elif kind == "table":
                header, rows = payload
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "code":
                text, language = payload
                out += [f"```{language}", text, "```", ""]
            elif kind == "img":
                src, caption = payload
                out += [f"![{src}]({src})", "", f"*{caption}*", ""]
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        body = [f"<h1>{_inline(self.title)}</h1>"]
        for kind, payload in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{_inline(payload)}</h2>")
            elif kind == "p":
                body.append(f"<p>{_inline(payload)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in payload) + "</ul>")
            elif kind == "table":
                header, rows = payload
                head = "".join(f"<th>{_inline(h)}</th>" for h in header)
                cells = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            elif kind == "code":
                text, _ = payload
                body.append(f"<pre><code>{html.escape(text)}</code></pre>")
            elif kind == "img":
                src, caption = payload
                body.append(f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
                            f"<figcaption>{_inline(caption)}</figcaption></figure>")
        return _HTML.format(title=html.escape(self.title), body="\n".join(body))


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em;
        color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
code, pre {{ background: #f6f6f6; font-size: 0.9em; }}
pre {{ padding: 0.8em; overflow-x: auto; }}
figure {{ margin: 1em 0 2em; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 0.9em; }}
</style></head>
<body>
{body}
</body></html>
"""


def _inline(text: str) -> str:
    """Escape for HTML and turn `code` spans and **bold** into tags."""
    escaped = html.escape(str(text))
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _short_params(params: dict[str, Any], keep_loss: bool = False) -> str:
    items = [(k, v) for k, v in params.items() if keep_loss or k != "loss"]
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items) or "defaults"


def build_page(data: StudyData, figures: Sequence[str], notes: Sequence[str] = ()) -> Page:
    """The summary page of ``data``; ``figures`` are the figure files that exist beside it."""
    page = Page(f"Study `{data.name}`")
    counts = data.counts
    facts = [
        f"Objective: {data.direction} `{data.metric}`",
        f"Trials: {len(data.trials)} ({counts_text(counts)})",
    ]
    if data.baseline is not None:
        what = "predicting the training median" if data.task == "regression" else "a constant prediction"
        stopped = sum(t.dead and t.state != "complete" for t in data.trials)
        facts.append(f"Baseline ({what}): {data.baseline:.6g}")
        facts.append(f"**Dead trials: {counts.get('dead', 0)}** of {len(data.trials)} (never better than the "
                     f"baseline: the model learned nothing; {stopped} of them stopped early for it)")
    if data.task == "regression":
        facts.append(f"Target robust spread (1.4826 x MAD): {data.target_scale:.6g}; scale-like loss "
                     "parameters are searched relative to it")
    page.bullets(facts)

    best = data.best
    page.heading("Best loss")
    if best is None:
        page.paragraph("No complete trial yet.")
    else:
        loss_params = {k: v for k, v in best.params.items() if k == "loss" or k.startswith("loss.")}
        other = {k: v for k, v in best.params.items() if k not in loss_params}
        page.paragraph(f"Trial {best.number}: `{data.metric}` = **{best.value:.6g}** with loss "
                       f"**`{best.loss}`** ({best.epochs} epochs).")
        rows = [[k, v] for k, v in best.params.items()]
        rows += [[f"learned {k} (final)", v] for k, v in best.final_learned.items()]
        page.table(["parameter", "value"], rows)
        if best.loss_config:
            page.paragraph("Loss config (`aloss-tune best` prints it; `aloss_tune.load_loss` rebuilds "
                           "from it):")
            page.code(json.dumps(best.loss_config, indent=2, default=str), "json")
        snippet = [
            "import aloss_tune",
            "",
            f'loss = aloss_tune.load_best_loss("{data.name}")  # or: aloss_tune.build_loss({loss_params!r})',
            "model = aloss_tune.attach(model, loss)  # only needed for learned or penalized losses",
            'model.compile(optimizer="adam", loss=loss)',
        ]
        page.code("\n".join(snippet), "python")
        if other:
            page.paragraph(f"Model and optimizer of the best trial: {_short_params(other)}.")

    page.heading("Results per loss family")
    header = ["loss", "trials", "complete", "pruned", "failed", "dead", f"best {data.metric}",
              f"median {data.metric}", "best trial"]
    page.table(header, [
        [f.loss, f.trials, f.complete, f.pruned, f.failed, f.dead, _fmt(f.best), _fmt(f.median),
         "" if f.best_trial is None else f.best_trial]
        for f in data.families()
    ])

    ranked = data.ranked()[:TOP_TRIALS]
    page.heading(f"Top {len(ranked)} trials")
    if ranked:
        page.table(["rank", "trial", data.metric, "loss", "loss params", "model / optimizer", "epochs"], [
            [i + 1, t.number, t.value, t.loss,
             _short_params({k: v for k, v in t.params.items() if k.startswith("loss.")}),
             _short_params({k: v for k, v in t.params.items() if not k.startswith("loss")}), t.epochs]
            for i, t in enumerate(ranked)
        ])
    else:
        page.paragraph("No complete trial yet.")
    failed = [t for t in data.trials if t.state == "failed" and t.error]
    if failed:
        page.heading("Failed trials")
        page.table(["trial", "loss", "error"], [[t.number, t.loss, (t.error or "")[:200]] for t in failed])

    page.heading("Figures")
    shown = set(figures)
    for name, caption in FIGURES:
        if name in shown:
            page.image(name, caption)
    if "learned_params.png" not in shown:
        page.paragraph("No trial learned loss parameters (no adaptive loss was tried), so there is no "
                       "trajectory figure.")
    page.paragraph("Every trial, with all its params: `trials.csv`.")
    if notes:
        page.heading("Notes")
        page.bullets(list(notes))
    return page
