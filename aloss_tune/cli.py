"""`aloss-tune`: a thin table of commands over the library.

Usage and configuration errors print one line on stderr and exit with code 2 (no traceback unless
``--debug``); settings fall back to environment variables (``ALOSS_TUNE_STORAGE``, ``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from aloss_tune.errors import AlossTuneError, ConfigError, UsageError

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, but got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, but got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, but got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, but got {value:g}")
    return value


# ------------------------------------------------------------------------------------------------ tune
def _add_tune(sub: Any) -> None:
    p = sub.add_parser("tune", help="run (or resume) a study from a search-space YAML file")
    p.add_argument("space", help="the search space, e.g. search_spaces/robust_regression.yaml")
    p.add_argument("--backend", choices=("optuna", "keras-tuner"), help="search backend (default: the space's)")
    p.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), help="KerasTuner tuner")
    p.add_argument("--n-trials", type=_positive_int,
                   help="trials this command runs; with --workers N, in total, split among the workers "
                        "(default: the space's)")
    p.add_argument("--timeout", type=_positive_float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="Optuna storage URL (default: $ALOSS_TUNE_STORAGE or sqlite:///aloss_tune.db)")
    p.add_argument("--study", help="study name (default: the space's `study`)")
    p.add_argument("--seed", type=_non_negative_int, help="study seed (trial n uses seed + n)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, mlflow.yaml, "
                                          "sqlite:///mlflow.db)")
    p.add_argument("--mlflow-config", help="MLflow settings file (default: ./mlflow.yaml if present)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--log-model", action="store_true",
                   help="when the study ends, log its best trial's trained model to MLflow (a LoggedModel: the "
                        "export-ready Keras model, its loss config and the model as trained)")
    p.add_argument("--register", metavar="NAME",
                   help="also register that model in MLflow's Model Registry under NAME (implies --log-model)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="worker processes on this machine sharing the study (Optuna)")
    p.add_argument("--heartbeat", type=_non_negative_int, metavar="SECONDS",
                   help="Optuna heartbeat interval: trials of dead workers are marked failed (default: "
                        "60 with --workers > 1 or a storage other than SQLite, else off; 0: off)")
    p.add_argument("--retries", type=_non_negative_int, default=0,
                   help="retry a dead worker's trial this many times (needs heartbeats)")
    p.add_argument("--reclaim", action="store_true",
                   help="mark failed every trial still RUNNING when the command starts (use it when no other "
                        "process runs the study); without it, only trials of processes of this machine that "
                        "are gone are marked failed, and the others are reported")
    p.add_argument("--directory", help="KerasTuner project root (default: kt_projects)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (default: a bar on a terminal, else one line per finished trial; with "
                        "--workers N, one line per trial from the worker that finished it)")
    p.set_defaults(func=_tune)


def _tune(args: argparse.Namespace) -> int:
    from aloss_tune.space import SearchSpace

    if args.retries and not _heartbeat_on(args):
        raise UsageError("tune: --retries needs --heartbeat (a dead worker is detected by its heartbeat; "
                         "heartbeats are off by default for one process on SQLite).")
    if args.no_tracking and (args.log_model or args.register):
        raise UsageError("tune: --log-model and --register log the best model to MLflow; drop --no-tracking.")
    if args.register is not None:
        from aloss_tune.best_model import check_model_name

        check_model_name(args.register)
    SearchSpace.from_yaml(args.space)  # validate before anything else
    _load_keras()
    from aloss_tune.api import tune

    kwargs = dict(
        backend=args.backend, n_trials=args.n_trials, timeout=args.timeout, storage=args.storage,
        study_name=args.study, seed=args.seed, tuner=args.tuner, tracking=not args.no_tracking,
        tracking_uri=args.tracking_uri, mlflow_config=args.mlflow_config,
        heartbeat_interval=args.heartbeat, retries=args.retries, directory=args.directory,
        log_model=args.log_model or args.register is not None, register=args.register,
    )
    if args.reclaim:
        kwargs["reclaim"] = True
    from aloss_tune.workers import run_workers, sigterm_as_interrupt

    if args.workers > 1:
        result = run_workers(args.space, args.workers, progress=False if args.quiet else "lines", **kwargs)
    else:
        with sigterm_as_interrupt():  # preempted: end the running trial and its run, as on Ctrl-C
            result = tune(args.space, progress=False if args.quiet else None, **kwargs)
    _print_result(result)
    return 0


def _heartbeat_on(args: argparse.Namespace) -> bool:
    """Whether the tune command runs with Optuna heartbeats (given, or on by default for shared studies)."""
    if args.heartbeat is not None:
        return args.heartbeat > 0
    from aloss_tune.backends.optuna import default_heartbeat
    from aloss_tune.best import default_storage

    return default_heartbeat(args.storage or default_storage(), workers=args.workers) is not None


def _print_result(result: Any) -> None:
    from aloss_tune.states import counts_text

    print(f"study {result.study_name!r} ({result.backend}): {counts_text(result.counts)}")
    if result.best_trial is None:
        print("no finished trial yet")
        return
    metric = result.objective["metric"]
    print(f"best trial {result.best_trial}: {metric} = {result.best_value:.6g}")
    for key, value in result.best_params.items():
        print(f"  {key}: {value}")
    if result.tracking_uri:
        # The runs table (MLflow 3's UI opens an experiment on it, as tagged by the tracker); a local store
        # is served first with `mlflow ui` (on 127.0.0.1:5000 by default).
        from aloss_tune.tracking import runs_url

        uri, experiment = result.tracking_uri, getattr(result, "experiment_id", None)
        if uri.startswith(("http://", "https://")):
            print(f"review: {runs_url(uri, experiment) if experiment else uri}")
        else:
            print(f"review: mlflow ui --backend-store-uri {uri}")
            if experiment:
                print(f"        then open {runs_url('http://127.0.0.1:5000', experiment)}")
    if getattr(result, "best_model_uri", None):
        registered = getattr(result, "registered_model", None)
        print(f"model:  {result.best_model_uri}" + (f" (registered as {registered})" if registered else ""))
    if result.backend == "keras-tuner":  # storage is the KerasTuner project root
        print(f"reuse:  aloss-tune best {result.study_name} --backend keras-tuner" + (
            f" --directory {result.storage}" if result.storage and result.storage != "kt_projects" else ""))
        return
    print(f"reuse:  aloss-tune best {result.study_name}" + (
        f" --storage {result.storage}" if result.storage and result.storage != "sqlite:///aloss_tune.db" else ""))


# ------------------------------------------------------------------------------------------------ best
def _add_best(sub: Any) -> None:
    p = sub.add_parser("best", help="show or export the best loss of a study (or of an MLflow run)")
    p.add_argument("study", help="study name, or an MLflow run URI runs:/<run_id>")
    p.add_argument("--storage", help="Optuna storage URL (default: $ALOSS_TUNE_STORAGE or sqlite:///aloss_tune.db)")
    p.add_argument("--backend", choices=("optuna", "keras-tuner"), default="optuna")
    p.add_argument("--directory", help="KerasTuner project root (default: kt_projects)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, for runs:/ sources and for a KerasTuner study "
                                          "whose project directory is not at hand")
    p.add_argument("--format", choices=("json", "python"), default="json",
                   help="json: the loss config (params + Keras serialization); python: a snippet")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.set_defaults(func=_best)


def _best(args: argparse.Namespace) -> int:
    from aloss_tune.best import best_trial_summary, python_snippet, run_summary

    if args.output:
        _check_output_file(args.output)
    if args.study.startswith("runs:/"):
        summary = run_summary(args.study, tracking_uri=args.tracking_uri)
        config = summary["loss_config"]
        title = f"from MLflow run {args.study}"
    else:
        summary = best_trial_summary(args.study, args.storage, backend=args.backend, directory=args.directory,
                                     tracking_uri=args.tracking_uri)
        config = summary.get("loss_config")
        if not config:  # a trial stored without its loss config: serialized from its params
            _load_keras()
            from aloss_tune.runner import loss_config

            config = loss_config(summary["params"])
        config = {**config, "trial": summary["number"], "value": summary["value"]}
        title = f"best trial {summary['number']} of study {args.study!r} (objective {summary['value']:.6g})"
    if args.format == "python":
        text = python_snippet(summary["params"], optimizer=summary.get("optimizer") or "adam", title=title,
                              keras_config=config.get("keras"), model=summary.get("model"),
                              data=summary.get("data"))
    else:
        text = json.dumps(config, indent=2, sort_keys=False)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            raise UsageError(f"best: cannot write --output {args.output} ({exc.strerror or exc}).") from None
    else:
        print(text)
    return 0


def _check_output_file(path: str) -> None:
    """`UsageError` unless ``path`` can be written as a file (checked before anything is read)."""
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        raise UsageError(f"best: --output {path} is a folder; give a file name, e.g. {target / 'best_loss.json'}.")
    folder = target.parent
    if not folder.exists():
        raise UsageError(f"best: --output {path}: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise UsageError(f"best: --output {path}: {folder} is not a folder.")


# -------------------------------------------------------------------------------------------- validate
def _add_validate(sub: Any) -> None:
    p = sub.add_parser("validate", help="check a search-space file and show what it searches")
    p.add_argument("space")
    p.add_argument("--data", action="store_true", help="also load the data and check losses and objective")
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from aloss_tune.space import SearchSpace

    space = SearchSpace.from_yaml(args.space)
    space.check_model_params()
    scale = 1.0
    objective = space.objective
    ctx = None
    if args.data:
        _load_keras()
        from aloss_tune.runner import prepare

        ctx = prepare(space)
        scale, objective = ctx.target_scale, ctx.objective
    print(f"{args.space}: valid")
    print(f"  study: {space.study}    data: {space.data}    model: {space.model}")
    if ctx is not None:
        print(f"  data: {_data_summary(ctx.data)}")
    if objective is not None:
        print(f"  objective: {objective.direction} {objective.metric}")
    print(f"  losses: {', '.join(space.losses)}")
    relative = set() if args.data else _relative_ranges(space)
    for name, dist in space.search_params(target_scale=scale).items():
        if name == "loss":  # the loss choice: the line above
            continue
        print(f"  {name}: {dist}" + (" (relative)" if name in relative else ""))
    if not args.data:
        print("  not checked without --data: that the data loads, that each loss fits its task, that the "
              "objective's metric exists for it, and that the model and optimizer build; ranges marked "
              "relative are in units of the target's robust spread (--data resolves them)")
    return 0


def _relative_ranges(space: Any) -> set[str]:
    """The searched names whose default range is in units of the target's robust spread (not overridden)."""
    from aloss_tune.factories import get_factory

    out = set()
    for loss in space.losses:
        for spec in get_factory(loss).params:
            if spec.relative and spec.name not in space.loss_params.get(loss, {}):
                out.add(f"loss.{loss}.{spec.name}")
    return out


def _data_summary(data: Any) -> str:
    """Rows per split, features, the task and what describes its target (spread, positive rate, classes)."""
    import numpy as np

    rows = [f"{len(data.x_train)} train", f"{len(data.x_val)} validation"]
    if data.x_test is not None:
        rows.append(f"{len(data.x_test)} test")
    features = int(np.prod(data.x_train.shape[1:]))
    text = f"{', '.join(rows)} rows of {features} feature{'s' if features != 1 else ''}; {data.task}"
    if data.task == "regression":
        return text + f", target median {data.target_center:.4g}, robust spread {data.target_scale:.4g}"
    if data.task == "binary":
        rates = [f"{100 * float(np.mean(y)):.1f} % {split}" for split, y in
                 (("train", data.y_train), ("validation", data.y_val)) if y is not None]
        return text + ", positives " + ", ".join(rates)
    return text + f", {data.n_outputs} classes"


# ---------------------------------------------------------------------------------------------- losses
def _add_losses(sub: Any) -> None:
    p = sub.add_parser("losses", help="list the loss factories with their parameters and default ranges")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_losses)


def _losses(args: argparse.Namespace) -> int:
    from aloss_tune.factories import PENALTY_SPECS, iter_factories

    factories = list(iter_factories())
    if args.format == "json":
        out = {
            f.name: {
                "tasks": list(f.tasks),
                "description": f.description,
                "params": {
                    p.name: {
                        "default": p.default,
                        "domain": p.describe_domain(),
                        "search": None if p.search is None else p.search.to_dict(),
                        "relative": p.relative,
                        "when": None if p.when is None else {p.when[0]: list(p.when[1])},
                    }
                    for p in f.params
                },
            }
            for f in factories
        }
        print(json.dumps(out, indent=2, default=str))
        return 0
    for f in factories:
        print(f"{f.name}  [{', '.join(f.tasks)}]  {f.description}")
        for p in f.params:
            search = "fixed" if p.search is None else str(p.search) + (" x target spread" if p.relative else "")
            when = "" if p.when is None else f"  (only when {p.when[0]} is {', '.join(map(str, p.when[1]))})"
            print(f"    {p.name:<14} default {p.default!s:<10} domain {p.describe_domain():<22} search {search}{when}")
    print("every loss also takes the weight penalty:")
    for p in PENALTY_SPECS:
        print(f"    {p.name:<14} default {p.default!s:<10} domain {p.describe_domain():<22} search {p.search}")
    return 0


COMMANDS: Sequence[Callable[[Any], None]] = (_add_tune, _add_best, _add_validate, _add_losses)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aloss-tune", description="Tune Keras losses jointly with the model; track in MLflow.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in COMMANDS:
        add(sub)
    from aloss_tune.report import add_cli as add_report

    add_report(sub)
    return parser


def _load_keras() -> None:
    """Import Keras (quietly) for a command that builds tensors: ``tune``, ``validate --data``. The others
    (``losses``, ``best``, ``report``, ``validate``) read declarations and stores only, and start at once; a
    step of theirs that needs a loss object loads Keras itself."""
    from aloss_tune import load_keras

    load_keras()


def _version() -> str:
    from aloss_tune import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (2: a usage or configuration error; 141: stdout's reader left)."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # `aloss-tune losses | head -1`: stop quietly, as a Unix tool killed by SIGPIPE does (128 + 13), and
        # keep the interpreter's own flush at exit from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.WARNING, format="aloss-tune: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (ConfigError, UsageError) as exc:
        if debug:
            traceback.print_exc()
        for message in getattr(exc, "messages", None) or [str(exc)]:  # several independent errors: one a line
            print(f"aloss-tune: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_USAGE
    except AlossTuneError as exc:
        if debug:
            traceback.print_exc()
        print(f"aloss-tune: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aloss-tune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line, traceback on --debug
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"aloss-tune: error: {type(exc).__name__}: {_one_line(exc)}{hint}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
