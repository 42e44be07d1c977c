"""One trial, whatever the backend: params -> loss + model -> fit with one reporting callback -> objective.

The backend samples a flat params dict and hands it to `run_trial` together with *reporters*: callables
``report(epoch, metrics)`` invoked once per epoch by the single `EpochReporter` callback. A backend's
reporter feeds its pruner (and may raise to prune); the tracking reporter logs to MLflow. Nothing here knows
which backend runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from aloss_tune.datasets import Dataset, as_dataset
from aloss_tune.distributions import Categorical
from aloss_tune.errors import ConfigError, TrialDead, TrialFailed, describe, located
from aloss_tune.factories import build_loss, get_factory
from aloss_tune.losses import attach, learned_values
from aloss_tune.models import resolve_builder
from aloss_tune.space import Objective, SearchSpace
from aloss_tune.states import should_stop_dead

Reporter = Callable[[int, dict[str, float]], None]
_log = logging.getLogger("aloss_tune")

TASK_METRICS: dict[str, Callable[[], list[keras.metrics.Metric]]] = {
    "regression": lambda: [
        keras.metrics.MeanAbsoluteError(name="mae"),
        keras.metrics.RootMeanSquaredError(name="rmse"),
        keras.metrics.MeanSquaredError(name="mse"),
    ],
    "binary": lambda: [
        keras.metrics.AUC(name="auc"),
        keras.metrics.AUC(curve="PR", name="pr_auc"),
        keras.metrics.BinaryAccuracy(name="accuracy"),
    ],
    "multiclass": lambda: [keras.metrics.CategoricalAccuracy(name="accuracy")],
}


@dataclass
class TrialOutcome:
    """What a finished trial produced."""

    value: float
    history: dict[str, list[float]]
    loss_config: dict[str, Any]
    epochs: int = 0


@dataclass
class TrialContext:
    """Everything a trial needs that does not change between trials of a study (resolved once)."""

    space: SearchSpace
    data: Dataset
    objective: Objective
    build_model: Callable[[Mapping[str, Any], Dataset], keras.Model]

    @property
    def target_scale(self) -> float:
        return self.data.target_scale

    def baseline_value(self) -> float | None:
        """The objective of a constant prediction, the bar a trial must beat not to be dead (`aloss_tune.states`).

        Regression: the training median's error; ROC-AUC: 0.5; PR-AUC: the validation positive rate;
        accuracy: the validation frequency of the training set's most common class. ``None`` for a metric
        without one.
        """
        metric = self.objective.metric.removeprefix("val_")
        y_val = np.asarray(self.data.y_val, dtype="float64")
        if metric == "accuracy" and self.data.task in ("binary", "multiclass"):
            return _majority_accuracy(np.asarray(self.data.y_train, dtype="float64"), y_val)
        if self.data.task == "regression":
            pred = np.median(np.asarray(self.data.y_train, dtype="float64"), axis=0)
            err = y_val - pred
            values = {"mae": np.mean(np.abs(err)), "mse": np.mean(err**2), "rmse": np.sqrt(np.mean(err**2)),
                      "median_ae": np.median(np.abs(err))}
            return float(values[metric]) if metric in values else None
        if self.data.task == "binary" and metric in ("auc",):
            return 0.5
        if self.data.task == "binary" and metric == "pr_auc":
            return float(np.mean(y_val))
        return None


def _majority_accuracy(y_train: np.ndarray, y_val: np.ndarray) -> float:
    """The validation accuracy of always predicting the training set's most common class (one-hot columns or
    one column of 0/1 labels)."""
    if y_train.ndim == 2 and y_train.shape[1] > 1:
        common = int(np.argmax(y_train.sum(axis=0)))
        return float(np.mean(np.argmax(y_val, axis=1) == common))
    common = int(np.mean(y_train.ravel() >= 0.5) > 0.5)
    return float(np.mean((y_val.ravel() >= 0.5) == bool(common)))


def prepare(space: SearchSpace, *, data: Any = None, build_model: Any = None) -> TrialContext:
    """Resolve a space's data, model builder and objective, and check that its losses fit the data.

    Raises `ConfigError` before any training if the objective, a loss or the builder does not fit.
    """
    where = f"{space.source}: " if space.source else ""
    if build_model is None:
        space.check_model_params()  # the built-in mlp's params, before the data loads
    with _located(where):
        dataset = as_dataset(space.data if data is None else data, args=dict(space.data_args))
        builder = resolve_builder(space.model if build_model is None else build_model)
    objective = space.resolve_objective(dataset.task)
    if space.objective is None and dataset.task == "regression":
        share = contaminated_share(dataset)
        if share > CONTAMINATED_SHARE and round(share * np.size(dataset.y_val)) >= CONTAMINATED_MIN:
            objective = Objective("val_median_ae", "minimize")
            _log.warning("objective: val_median_ae, as %.0f%% of the validation targets lie beyond %g robust "
                         "spreads of a linear fit (set `objective:` in the space to choose another).",
                         100 * share, CONTAMINATION_SPREADS)
    for i, name in enumerate(space.losses):
        factory = get_factory(name)
        if dataset.task not in factory.tasks:
            raise ConfigError(
                f"{where}loss.choices[{i}]: {name!r} is for {', '.join(factory.tasks)} data, but "
                f"{dataset.name!r} is {dataset.task}{_why_not_labels(dataset)}."
            )
    _check_per_class(space, dataset, where)
    ctx = TrialContext(space=space, data=dataset, objective=objective, build_model=builder)
    check_model(ctx)
    return ctx


# A regression study without an `objective:` selects on the median absolute validation error when the
# validation targets look contaminated: more than CONTAMINATED_SHARE of the residuals of a least-squares fit
# (on the training rows) lie beyond CONTAMINATION_SPREADS robust spreads of the training residuals. Normal
# noise puts 0.27 % there; `benchmarks/contamination.py` measures the built-in data (3 seeds each): clean
# diabetes 0 %, 20 % outliers 18-19 %, Student-t(1.5) noise 2.8-5.3 %, Student-t(3) noise growing with the
# target 1.5-2.8 %, and scikit-learn's Friedman #1 with Gaussian noise 0.75-1.75 % (its curvature, which a
# linear fit leaves in the residuals): a screen, not a test.
# At least CONTAMINATED_MIN such residuals: in a small validation set one or two are chance.
CONTAMINATION_SPREADS = 3.0
CONTAMINATED_SHARE = 0.0125
CONTAMINATED_MIN = 3


def contaminated_share(data: Dataset) -> float:
    """The share of validation residuals of a least-squares fit beyond `CONTAMINATION_SPREADS` robust spreads.

    The fit (an intercept and one weight per input value, on the training rows) removes the part of the
    targets the inputs explain linearly, so that a skewed but clean target does not look contaminated; its
    residuals' spread is 1.4826 x their median absolute deviation on the training rows.
    """

    def design(x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, dtype="float64").reshape(len(x), -1)
        return np.hstack([flat, np.ones((len(flat), 1))])

    y_train = np.asarray(data.y_train, dtype="float64").reshape(len(data.y_train), -1)
    y_val = np.asarray(data.y_val, dtype="float64").reshape(len(data.y_val), -1)
    weights, *_ = np.linalg.lstsq(design(data.x_train), y_train, rcond=None)
    train_residual = y_train - design(data.x_train) @ weights
    val_residual = y_val - design(data.x_val) @ weights
    center = np.median(train_residual, axis=0)
    # A fit that explains the targets (all but rounding) leaves no spread to measure: residuals a thousandth of
    # the targets' own spread are not outliers.
    floor = 1e-3 * np.std(y_train, axis=0) + 1e-12
    spread = np.maximum(1.4826 * np.median(np.abs(train_residual - center), axis=0), floor)
    return float(np.mean(np.abs(val_residual - center) > CONTAMINATION_SPREADS * spread))


def _why_not_labels(dataset: Dataset) -> str:
    """Why targets that look like class labels were not read as such (``0, 1, 2`` are not binary labels)."""
    if dataset.task != "regression" or dataset.y_train.ndim != 1:
        return ""
    values = np.unique(dataset.y_train)
    if len(values) > 10 or not np.all(values == np.round(values)):
        return ""
    shown = ", ".join(f"{v:g}" for v in values)
    return f" (its targets take the values {shown}: binary labels are 0 or 1, multiclass labels one-hot rows)"


@contextlib.contextmanager
def _located(where: str) -> Iterator[None]:
    """A `ConfigError` raised inside, `located` in the space file."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(located(str(exc), where)) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class FirstSuggester:
    """A space's first sample, without a backend: each range's low end, each categorical's first choice."""

    def suggest(self, name: str, dist: Any) -> Any:
        return dist.choices[0] if isinstance(dist, Categorical) else dist.low

    def conditional(self, parent: str, values: tuple[Any, ...]) -> Any:
        return contextlib.nullcontext()


def first_params(space: SearchSpace, target_scale: float = 1.0) -> dict[str, Any]:
    """The flat params of the space's first sample (see `FirstSuggester`)."""
    return space.sample(FirstSuggester(), target_scale)


def check_model(ctx: TrialContext) -> None:
    """Build the loss, the model and the optimizer of the space's first sample, compile the model and run it
    on two training rows, without fitting: a `ConfigError` naming the file and the key if any of them fails.
    """
    space = ctx.space
    where = f"{space.source}: " if space.source else ""
    params = first_params(space, ctx.target_scale)
    builder_name = space.model if isinstance(space.model, str) else _callable_name(space.model)
    with _located(where):
        loss = build_loss(params)
    try:
        model = ctx.build_model(params, ctx.data)
    except ConfigError as exc:
        text = _one_line(str(exc))
        raise ConfigError(text if where and text.startswith(where) else located(f"model: {text}", where)) from None
    except Exception as exc:  # noqa: BLE001 - a user's builder fails in its own ways
        hint = ""
        if "Dataset" in str(exc):  # a (params, data) builder that took its data for a tuple or a dict
            hint = ("; its second argument is an aloss_tune.datasets.Dataset: read data.x_train, data.y_train, "
                    "data.n_outputs, ...")
        raise ConfigError(f"{where}model.builder: {builder_name} failed to build the space's first "
                          f"sample ({type(exc).__name__}: {_one_line(str(exc))}){hint}.") from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{where}model.builder: must return a keras.Model, but {builder_name} returned "
                          f"a {type(model).__name__}.")
    with _located(where):
        optimizer = make_optimizer(space, params)
        try:
            model = attach(model, loss)
            model.compile(optimizer=optimizer, loss=loss, metrics=TASK_METRICS[ctx.data.task](),
                          jit_compile=space.training.jit_compile)
            predictions = model(ctx.data.x_train[:2])
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - Keras reports shape and type errors in many classes
            raise ConfigError(f"model.builder: the model of {builder_name} does not take the data's rows of "
                              f"shape {tuple(ctx.data.x_train.shape[1:])} ({type(exc).__name__}: "
                              f"{_one_line(str(exc))[:300]}).") from None
        _check_outputs(predictions, ctx.data, builder_name)


def _check_outputs(predictions: Any, data: Dataset, builder_name: str) -> None:
    """The model must predict one row like a target row (a 1-D target and an output of one unit match): a
    model of 3 units for a scalar target, or a softmax over 2 classes for binary labels, would otherwise
    train on broadcast nonsense or fail in every trial."""
    shape = getattr(predictions, "shape", None)
    if shape is None:  # several outputs: the loss and Keras decide
        return
    output, target = tuple(int(d) for d in shape[1:]), tuple(int(d) for d in data.y_train.shape[1:])
    if output == target or {output, target} == {(), (1,)}:
        return
    rows = {(): "one value", (1,): "one value"}
    raise ConfigError(
        f"model.builder: the model of {builder_name} predicts rows of shape {output} "
        f"({rows.get(output, f'{int(np.prod(output))} values')}), but the targets have rows of shape {target} "
        f"({rows.get(target, f'{int(np.prod(target))} values')}): its last layer must give one output per "
        f"target value ({data.task} data{'; binary labels take one sigmoid unit' if data.task == 'binary' else ''}).")


def _callable_name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def _check_per_class(space: SearchSpace, dataset: Dataset, where: str) -> None:
    """One class weight (or range) per class of the data."""
    classes = dataset.y_train.shape[-1] if dataset.task == "multiclass" and dataset.y_train.ndim == 2 else None
    for loss, params in space.loss_params.items():
        for name, value in params.items():
            if isinstance(value, tuple) and classes is not None and len(value) != classes:
                raise ConfigError(f"{where}loss.params.{loss}.{name}: must give one value per class: "
                                  f"{dataset.name!r} has {classes} classes, but got {len(value)}.")


def make_optimizer(space: SearchSpace, params: Mapping[str, Any]) -> keras.optimizers.Optimizer:
    config = {k[len("optimizer."):]: v for k, v in params.items() if k.startswith("optimizer.")}
    config.setdefault("learning_rate", 1e-3)
    for key, value in config.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise ConfigError(f"optimizer: `optimizer.{key}` must be a number >= 0, but got {describe(value)}.")
    try:
        return keras.optimizers.get({"class_name": space.optimizer, "config": config})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer: {space.optimizer} does not take {sorted(config)} ({exc}).") from None


def flatten_learned(values: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``{"alpha": [a]}`` -> ``{"alpha": a}``; several dimensions -> ``alpha.0``, ``alpha.1``, ..."""
    out: dict[str, float] = {}
    for name, array in values.items():
        flat = np.asarray(array, dtype="float64").ravel()
        if flat.size == 1:
            out[name] = float(flat[0])
        else:
            out.update({f"{name}.{i}": float(v) for i, v in enumerate(flat)})
    return out


def median_absolute_error(y_true: Any, y_pred: Any) -> float:
    """The median of ``|y_true - y_pred|`` over every sample and output (``(n,)`` against ``(n, 1)`` aligned)."""
    y_true = np.asarray(y_true, dtype="float64")
    y_pred = np.asarray(y_pred, dtype="float64")
    if y_true.ndim == 1 and y_pred.ndim == 2 and y_pred.shape[1] == 1:
        y_pred = y_pred[:, 0]
    return float(np.median(np.abs(y_true - y_pred)))


VALIDATION_METRICS: dict[str, Callable[[Any, Any], float]] = {"median_ae": median_absolute_error}


class EpochReporter(keras.callbacks.Callback):
    """The one callback of a trial: per epoch, gathers metrics and learned loss parameters, checks that
    the loss is finite, records the history and hands the metrics to every reporter.

    ``validation`` (``(x_val, y_val, names, batch_size)``) adds the named `VALIDATION_METRICS`, computed
    from the epoch's validation predictions, as ``val_<name>`` to the epoch's logs (so the callbacks after
    this one, early stopping included, see them too).
    """

    def __init__(self, reporters: Sequence[Reporter] = (),
                 validation: tuple[Any, Any, Sequence[str], int] | None = None,
                 dead: DeadCheck | None = None):
        super().__init__()
        self.reporters = list(reporters)
        self.validation = validation
        self.dead = dead
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.validation is not None:
            x_val, y_val, names, batch_size = self.validation
            predictions = self.model.predict(x_val, batch_size=batch_size, verbose=0)
            logs = {} if logs is None else logs
            logs.update({f"val_{name}": VALIDATION_METRICS[name](y_val, predictions) for name in names})
        metrics = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        metrics.update(flatten_learned(learned_values(self.model)))
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
        loss = metrics.get("loss")
        for reporter in self.reporters:
            reporter(epoch, metrics)
        if loss is not None and not math.isfinite(loss):
            raise TrialFailed(f"the training loss is {loss} at epoch {epoch}")
        if self.dead is not None:
            self.dead.check(epoch, metrics.get(self.dead.metric), int(self.params.get("epochs") or 0),
                            self.history)


@dataclass
class DeadCheck:
    """Stops a trial that is not learning (`aloss_tune.states.should_stop_dead`) by raising `TrialDead`.

    A trial is never stopped at its last epoch: it completes, and counts as dead if its objective is no
    better than the baseline.
    """

    metric: str
    direction: str
    baseline: float
    warmup: int
    initial_epoch: int = 0
    best: float | None = None

    def check(self, epoch: int, value: float | None, last_epoch: int, history: Mapping[str, list[float]]) -> None:
        if value is not None and math.isfinite(value) and (
                self.best is None or (value < self.best if self.direction == "minimize" else value > self.best)):
            self.best = value
        done = epoch + 1 - self.initial_epoch
        if epoch + 1 >= last_epoch or not should_stop_dead(self.best, done, self.warmup, self.baseline,
                                                           self.direction):
            return
        best = "none finite" if self.best is None else f"{self.best:.6g}"
        raise TrialDead(f"not learning: after {done} epochs the best {self.metric} ({best}) is no better than "
                        f"the baseline {self.baseline:.6g} (a constant prediction); stopped as dead",
                        epochs=done, best=self.best, baseline=self.baseline,
                        history={k: list(v) for k, v in history.items()})


def build_trial_model(ctx: TrialContext, params: Mapping[str, Any]) -> tuple[keras.Model, keras.losses.Loss]:
    """The trial's loss and its compiled model (the loss attached when it needs the model)."""
    loss = build_loss(params)
    model = ctx.build_model(params, ctx.data)
    if not isinstance(model, keras.Model):
        raise ConfigError(f"model: the builder must return a keras.Model, but returned {type(model).__name__}.")
    model = attach(model, loss)
    model.compile(
        optimizer=make_optimizer(ctx.space, params),
        loss=loss,
        metrics=TASK_METRICS[ctx.data.task](),
        jit_compile=ctx.space.training.jit_compile,
    )
    return model, loss


def run_trial(ctx: TrialContext, params: Mapping[str, Any], *, seed: int,
              reporters: Sequence[Reporter] = (), epochs: int | None = None, initial_epoch: int = 0,
              callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrialOutcome:
    """Train one model with the trial's loss and return its objective (the best epoch's value).

    Args:
        ctx: the study's resolved context.
        params: the trial's flat params dict.
        seed: seeds Keras (weights, dropout, shuffling).
        reporters: called as ``report(epoch, metrics)`` after each epoch.
        epochs: train until this epoch (Keras's ``fit(epochs=...)``); default ``training.epochs`` of the space.
            A search backend with its own schedule (KerasTuner's Hyperband) sets it.
        initial_epoch: the epoch to start at, when a backend continues an earlier trial's model (its weights
            restored by one of ``callbacks``); epochs are numbered from it in reports and history.
        callbacks: extra Keras callbacks, run after the reporting callback (checkpoints, weight restoring).

    Raises `TrialFailed` if the loss becomes non-finite or the objective metric is missing, and `TrialDead`
    when the trial is stopped because it is not learning (``training.stop_dead``: after the warm-up, its best
    objective is no better than `TrialContext.baseline_value`); any exception a reporter raises (a
    backend's prune signal) propagates unchanged.
    """
    return train(ctx, params, seed=seed, reporters=reporters, epochs=epochs, initial_epoch=initial_epoch,
                 callbacks=callbacks)[1]


def train(ctx: TrialContext, params: Mapping[str, Any], *, seed: int,
          reporters: Sequence[Reporter] = (), epochs: int | None = None, initial_epoch: int = 0,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> tuple[keras.Model, TrialOutcome]:
    """`run_trial`, also returning the trained model (with early stopping, its best epoch's weights).

    With a trial's params and seed (``seed + trial number``) this retrains that trial's model, e.g. to
    evaluate a study's best trial on held-out test data::

        model, outcome = train(ctx, best_params, seed=best_seed)
        predictions = model.predict(ctx.data.x_test)
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model, loss = build_trial_model(ctx, params)
    training = ctx.space.training
    wanted = [name for name in VALIDATION_METRICS if ctx.objective.metric == f"val_{name}"]
    validation = (ctx.data.x_val, ctx.data.y_val, wanted, training.batch_size) if wanted else None
    baseline = ctx.baseline_value() if training.dead_warmup is not None else None
    dead = None
    if baseline is not None and math.isfinite(baseline):
        dead = DeadCheck(ctx.objective.metric, ctx.objective.direction, baseline, training.dead_warmup or 0,
                         initial_epoch=initial_epoch)
    reporter = EpochReporter(reporters, validation=validation, dead=dead)
    fit_callbacks: list[keras.callbacks.Callback] = [reporter, *callbacks]
    mode = "min" if ctx.objective.direction == "minimize" else "max"
    if training.early_stopping:
        fit_callbacks.append(keras.callbacks.EarlyStopping(
            monitor=ctx.objective.metric, mode=mode, patience=training.early_stopping, restore_best_weights=True))
    data = ctx.data
    model.fit(
        data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
        epochs=training.epochs if epochs is None else epochs, initial_epoch=initial_epoch,
        batch_size=training.batch_size, callbacks=fit_callbacks, verbose=training.verbose,
    )
    history = reporter.history
    series = history.get(ctx.objective.metric)
    if not series:
        raise TrialFailed(f"the objective metric {ctx.objective.metric!r} was not logged; logged metrics: "
                          f"{', '.join(sorted(history))}")
    finite = [v for v in series if math.isfinite(v)]
    if not finite:
        raise TrialFailed(f"the objective metric {ctx.objective.metric!r} was never finite")
    value = min(finite) if mode == "min" else max(finite)
    outcome = TrialOutcome(value=float(value), history=history, loss_config=loss_config(params, loss),
                           epochs=len(series))
    return model, outcome


def loss_config(params: Mapping[str, Any], loss: keras.losses.Loss | None = None) -> dict[str, Any]:
    """The loss config artifact: the flat loss params and the Keras serialization of the loss."""
    loss = build_loss(params) if loss is None else loss
    flat = {k: v for k, v in params.items() if k == "loss" or k.startswith("loss.")}
    return {"params": _jsonable(flat), "keras": _jsonable(keras.saving.serialize_keras_object(loss))}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
