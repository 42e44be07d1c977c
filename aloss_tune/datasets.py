"""Small built-in datasets for the embedded default: generated or bundled with scikit-learn, no downloads.

* ``contaminated_regression``: scikit-learn's bundled diabetes data (442 patients, 10 features, disease
  progression after one year). A fraction (default 20%) of the *training and validation* targets are gross
  outliers: replaced by ``y + u * sd(y)`` with ``u ~ Uniform(4, 8)`` (one-sided, as data-entry errors and
  sensor spikes often are). Test targets stay clean, so test RMSE/MAE measure what a robust loss buys.
* ``imbalanced_classification``: ``make_classification`` with 6,000 samples, 20 features, about 8%
  positives and 2% flipped labels, so validation and test each hold about 100 positives (enough that
  PR-AUC does not saturate; the bundled breast-cancer data cut to 8% positives leaves six).

Splits are 60/20/20, stratified for classification, fixed by ``seed``; features are standardised with the
training statistics.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aloss_tune.errors import ConfigError, describe


@dataclass(frozen=True)
class Dataset:
    """Train / validation / (optional) test arrays and what kind of problem they pose."""

    name: str
    task: str  # regression | binary | multiclass
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_outputs(self) -> int:
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[-1])

    @property
    def target_center(self) -> float:
        return float(np.median(self.y_train)) if self.task == "regression" else 0.0

    @property
    def target_scale(self) -> float:
        """The regression target's robust spread (1.4826 x MAD, i.e. sd under normality); 1 otherwise."""
        if self.task != "regression":
            return 1.0
        y = np.asarray(self.y_train, dtype="float64")
        mad = float(np.median(np.abs(y - np.median(y, axis=0)))) * 1.4826
        if not mad > 0:
            mad = float(np.std(y)) or 1.0
        return mad


def _split(n: int, rng: np.random.Generator, labels: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Indices of a 60/20/20 split, stratified on ``labels`` when given."""
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts: list[list[np.ndarray]] = [[], [], []]
    for idx in groups:
        idx = rng.permutation(idx)
        a, b = int(round(0.6 * len(idx))), int(round(0.8 * len(idx)))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:]), strict=True):
            part.append(chunk)
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)


def _standardize(x_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    return tuple(((x - mean) / std).astype("float32") for x in (x_train, *others))


def contaminated_regression(*, seed: int = 0, outlier_fraction: float = 0.2,
                            outlier_low: float = 4.0, outlier_high: float = 8.0) -> Dataset:
    """Diabetes regression with gross one-sided outliers in the training and validation targets."""
    if not 0.0 <= outlier_fraction < 0.5:
        raise ConfigError(
            f"contaminated_regression: `outlier_fraction` must be in [0, 0.5), but got {outlier_fraction!r}."
        )
    if not 0 < outlier_low <= outlier_high:
        raise ConfigError(
            "contaminated_regression: `0 < outlier_low <= outlier_high` must hold, "
            f"but got (outlier_low={outlier_low!r}, outlier_high={outlier_high!r})."
        )
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    rng = np.random.default_rng(seed)
    tr, va, te = _split(len(y), rng)
    sd = float(np.std(y[tr]))
    y = y.astype("float32")
    y_train, y_val = y[tr].copy(), y[va].copy()
    info: dict[str, Any] = {"outlier_fraction": outlier_fraction, "seed": seed}
    for name, target in (("train", y_train), ("val", y_val)):
        k = int(round(outlier_fraction * len(target)))
        hit = rng.choice(len(target), size=k, replace=False)
        target[hit] += rng.uniform(outlier_low, outlier_high, size=k).astype("float32") * sd
        info[f"outliers_{name}"] = int(k)
    x_train, x_val, x_test = _standardize(x[tr], x[va], x[te])
    return Dataset(
        name="contaminated_regression", task="regression",
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y[te],
        description=(f"diabetes progression; {outlier_fraction:.0%} of train/val targets shifted up by "
                     f"{outlier_low:g}-{outlier_high:g} sd; clean test targets"),
        info=info,
    )


def imbalanced_classification(*, seed: int = 0, n_samples: int = 6000, positive_fraction: float = 0.08,
                              label_noise: float = 0.02) -> Dataset:
    """A binary problem with few positives and some flipped labels (generated, no download)."""
    if not 0.0 < positive_fraction < 0.5:
        raise ConfigError(
            f"imbalanced_classification: `positive_fraction` must be in (0, 0.5), but got {positive_fraction!r}."
        )
    if not isinstance(n_samples, int) or n_samples < 200:
        raise ConfigError(f"imbalanced_classification: `n_samples` must be an integer >= 200, but got {n_samples!r}.")
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n_samples, n_features=20, n_informative=8, n_redundant=4, weights=[1 - positive_fraction],
        flip_y=label_noise, class_sep=0.8, random_state=seed,
    )
    rng = np.random.default_rng(seed)
    tr, va, te = _split(len(y), rng, labels=y)
    x_train, x_val, x_test = _standardize(x[tr], x[va], x[te])
    y = y.astype("float32")
    return Dataset(
        name="imbalanced_classification", task="binary",
        x_train=x_train, y_train=y[tr], x_val=x_val, y_val=y[va], x_test=x_test, y_test=y[te],
        description=f"{n_samples} samples, {positive_fraction:.0%} positives, {label_noise:.0%} flipped labels",
        info={"positives_val": int(y[va].sum()), "positives_test": int(y[te].sum()), "seed": seed},
    )


BUILTIN: dict[str, Callable[..., Dataset]] = {
    "contaminated_regression": contaminated_regression,
    "imbalanced_classification": imbalanced_classification,
}


def _import_user_module(name: str) -> Any:
    """Import a user's module, finding it in the working directory too, as ``python -m`` would (the
    ``aloss-tune`` command's own path holds only its script's folder)."""
    cwd = os.getcwd()
    if "" in sys.path or cwd in sys.path:
        return importlib.import_module(name)
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)


def import_object(path: str, what: str) -> Any:
    """``module:attribute`` -> the attribute; `ConfigError` naming ``what`` otherwise."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what}: {path!r} must be a built-in name or an import path 'module:function'.")
    try:
        module = _import_user_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import module {module_name!r} of {path!r} ({exc}).") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{what}: module {module_name!r} has no attribute {attr!r}.") from None
    if not callable(obj):
        raise ConfigError(f"{what}: {path!r} is not callable.")
    return obj


def infer_task(y: np.ndarray) -> str:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return "multiclass"
    values = np.unique(y)
    if len(values) <= 2 and set(values.tolist()) <= {0, 1}:
        return "binary"
    return "regression"


SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_RETURNS = ("a tuple (x_train, y_train, x_val, y_val[, x_test, y_test]), a dict with those keys or an "
            "aloss_tune.datasets.Dataset")


def as_dataset(data: Any, *, args: dict[str, Any] | None = None, name: str = "user_data") -> Dataset:
    """Resolve a space's ``data`` (a built-in name, ``module:function``, callable, tuple, dict or `Dataset`).

    A data function (``module:function`` or a callable) is called with ``args`` (``data.args``) and returns a
    tuple ``(x_train, y_train, x_val, y_val[, x_test, y_test])``, a dict with those keys, or a `Dataset`;
    anything else, a function that raises, or ``args`` it does not take, is one `ConfigError` (``data: ...``)
    naming the function.
    """
    args = dict(args or {})
    if isinstance(data, Dataset):
        check_dataset(data)
        return data
    source = None  # the data function, for messages
    if isinstance(data, str):
        if data in BUILTIN:
            fn = BUILTIN[data]
            allowed = [p for p in inspect.signature(fn).parameters]
            for key in args:
                if key not in allowed:
                    raise ConfigError(f"data.args.{key}: unknown argument of {data}; allowed: {', '.join(allowed)}.")
            return fn(**args)
        if ":" not in data:
            raise ConfigError(
                f"data: unknown dataset {data!r}; built-ins: {', '.join(BUILTIN)} (or 'module:function')."
            )
        fn = import_object(data, "data")
        name = source = data
        data = _call(fn, source, args)
    elif callable(data):
        name = getattr(data, "__name__", name)
        source = _callable_name(data)
        data = _call(data, source, args)
    returned = f"{source} returned" if source else "got"
    if isinstance(data, Dataset):
        check_dataset(data)
        return data
    if isinstance(data, dict):
        unknown = sorted(str(k) for k in data if k not in SPLITS)
        if unknown:
            raise ConfigError(f"data: {returned} a dict with the key {unknown[0]!r}; its keys are "
                              f"{', '.join(SPLITS)} (the last two optional).")
        data = tuple(data.get(k) for k in SPLITS)
        data = data[:4] if data[4] is None and data[5] is None else data
    if not isinstance(data, (tuple, list)) or len(data) not in (4, 6):
        what = (f"a {type(data).__name__} of {len(data)} items" if isinstance(data, (tuple, list))
                else f"a {type(data).__name__}")
        raise ConfigError(f"data: {returned} {what}; data must be {_RETURNS}.")
    arrays = [None if a is None else _numeric(n, a) for n, a in zip(SPLITS, data, strict=False)]
    x_train, y_train, x_val, y_val = arrays[:4]
    if x_train is None or y_train is None or x_val is None or y_val is None:
        missing = next(n for n, a in zip(SPLITS, arrays, strict=False) if a is None)
        raise ConfigError(f"data: x_train, y_train, x_val and y_val are required, but {returned} no {missing}.")
    x_test, y_test = (arrays[4], arrays[5]) if len(arrays) == 6 else (None, None)
    dataset = Dataset(name=name, task=infer_task(y_train) if y_train.ndim and y_train.size else "regression",
                      x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                      x_test=x_test, y_test=y_test)
    check_dataset(dataset)
    return dataset


def _callable_name(fn: Any) -> str:
    qualname = getattr(fn, "__qualname__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None)
    return f"{module}:{qualname}" if module and module != "__main__" else qualname


def _call(fn: Any, source: str, args: dict[str, Any]) -> Any:
    """``fn(**args)``; `ConfigError` naming ``source`` for arguments it does not take or needs, or whatever it
    raises (a `ConfigError` of its own passes through)."""
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: let the call say
        signature = None
    if signature is not None:
        params = signature.parameters.values()
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in args if k not in names and not takes_any]
        if unknown:
            raise ConfigError(f"data.args.{unknown[0]}: {source} takes no argument {unknown[0]!r} (its arguments: "
                              f"{', '.join(names) or 'none'}).")
        needed = [p.name for p in params if p.default is p.empty and p.name not in args
                  and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if needed:
            raise ConfigError(f"data: {source} needs the argument {needed[0]!r}; give it in data.args "
                              f"(data: {{name: {source}, args: {{{needed[0]}: ...}}}}).")
    try:
        return fn(**args)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's data function fails in its own ways
        text = " ".join(str(exc).split())
        raise ConfigError(f"data: {source} raised {type(exc).__name__}" + (f": {text[:300]}" if text else "")
                          + ".") from None


def _numeric(name: str, array: Any) -> np.ndarray:
    """``array`` as float32; `ConfigError` naming it when it holds anything but numbers."""
    try:
        values = np.asarray(array)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        reason = " ".join(str(exc).split())
        raise ConfigError(f"data: {name} is not an array of numbers ({reason}).") from None
    if values.dtype.kind == "c":  # casting would silently drop the imaginary parts
        example = next((v for v in values.ravel() if v.imag != 0), values.ravel()[0] if values.size else 0j)
        raise ConfigError(f"data: {name} holds complex numbers such as {describe(complex(example))}; a model trains "
                          "on real numbers: give the real and imaginary parts as separate features.")
    if values.dtype.kind not in "biuf":
        try:
            return values.astype("float32")
        except (TypeError, ValueError):
            example = next((v for v in values.ravel() if not isinstance(v, (int, float))), values.ravel()[0])
            raise ConfigError(f"data: {name} must be numeric, but holds {values.dtype} values such as "
                              f"{describe(example)}.") from None
    return values.astype("float32")


def check_dataset(data: Dataset) -> None:
    """`ConfigError` (``data: ...``) unless the arrays can train a model: numeric, finite, non-empty, rows of
    x and y paired, and the same shape per row in train, validation and test."""
    pairs = [("x_train", data.x_train, "y_train", data.y_train), ("x_val", data.x_val, "y_val", data.y_val)]
    if data.x_test is not None and data.y_test is not None:
        pairs.append(("x_test", data.x_test, "y_test", data.y_test))
    for xn, x, yn, y in pairs:
        for name, array in ((xn, x), (yn, y)):
            dtype = np.asarray(array).dtype
            if dtype.kind not in "biuf":
                raise ConfigError(f"data: {name} must be numeric, but holds {dtype} values.")
            if np.ndim(array) == 0:
                raise ConfigError(f"data: {name} must be an array of rows, but is a scalar "
                                  f"({describe(np.asarray(array).item())}).")
            if len(array) == 0:
                raise ConfigError(f"data: {name} is empty (shape {tuple(np.shape(array))}); it needs rows.")
        if len(x) != len(y):
            raise ConfigError(f"data: {xn} has {len(x)} rows but {yn} has {len(y)}.")
        if xn != "x_train":
            if np.shape(x)[1:] != np.shape(data.x_train)[1:]:
                raise ConfigError(
                    f"data: {xn} has rows of shape {np.shape(x)[1:]} but x_train has "
                    f"{np.shape(data.x_train)[1:]} "
                    f"(features per row: {_features(x)} against {_features(data.x_train)}).")
            if np.shape(y)[1:] != np.shape(data.y_train)[1:]:
                raise ConfigError(
                    f"data: {yn} has shape {np.shape(y)} but y_train has {np.shape(data.y_train)}: the "
                    "targets of every split must have the same shape per row.")
        for name, array in ((xn, x), (yn, y)):
            values = np.asarray(array)
            if not np.isfinite(values).all():
                n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
                raise ConfigError(f"data: {name} holds NaN or infinite values ({n_nan} NaN, {n_inf} inf "
                                  f"among {values.size}); drop or impute them before tuning.")
        _check_labels(yn, np.asarray(y), data.task)


def _check_labels(name: str, y: np.ndarray, task: str) -> None:
    """Labels of a classification task lie in [0, 1] (binary: 0 or 1, or a soft label; multiclass: one-hot
    rows); a 2 among binary labels would be trained on and scored without a word."""
    if task not in ("binary", "multiclass"):
        if task != "regression":
            raise ConfigError(f"data: the task must be regression, binary or multiclass, but got {task!r}.")
        return
    outside = (y < 0) | (y > 1)
    if outside.any():
        raise ConfigError(f"data: {name} holds {int(outside.sum())} labels outside [0, 1] (such as "
                          f"{float(y[outside].ravel()[0]):g}), but the task is {task}: "
                          + ("labels are 0 or 1." if task == "binary" else "labels are one-hot rows."))


def _features(x: Any) -> int:
    shape = np.shape(x)[1:]
    return int(np.prod(shape)) if shape else 1


__all__ = ["Dataset", "BUILTIN", "as_dataset", "check_dataset", "contaminated_regression",
           "imbalanced_classification"]
