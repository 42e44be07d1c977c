"""Loss value + gradient throughput: every factory against Keras's own loss and the bare formula, Barron's loss.

Each row times one compiled step that reads ``y_true`` and ``y_pred`` (``2^--size`` float32 elements each,
laid out as ``(size / 64, 64)``), computes the loss with Keras's reduction (the mean over the last axis, then
over the batch) and its gradient with respect to ``y_pred`` (and to alpha and scale where they are learned),
and writes the gradient. ``floor`` does the least any such step must do: read both arrays and write one
(``y_pred - y_true``); ``copy`` reads one and writes one.

The rows are timed in turns (one call of each row per round, ``--repeats`` rounds) and each row's median is
shown, so that the machine's other work falls on every row alike; every ratio is between rows of the same run.

* every factory of `aloss_tune.list_losses()` with its default parameters (classification ones get labels and
  probabilities; adaptive ones are the ``adaptive`` row), against Keras's own equivalent (the same loss where
  Keras has it, else the base loss it weights or extends) and against the same formula written by hand in
  ``keras.ops`` (``bare``: what a user would write, wrapped in a plain ``keras.losses.Loss``);
* `RobustLoss` at fixed alphas, and Barron's loss with a learned (per-column) alpha and scale, against the
  fixed-alpha step.

    python benchmarks/loss_speed.py                       # TensorFlow (XLA), 2^22 elements
    KERAS_BACKEND=jax python benchmarks/loss_speed.py     # JAX
    KERAS_BACKEND=jax python benchmarks/loss_speed.py --size 26   # on a GPU: 2^26 elements

JAX on CPU allocates each temporary with ``malloc``, and glibc gives blocks above its mmap threshold back to
the system, so that every call page-faults them in again (thousands of faults a call, several milliseconds,
erratic). The script therefore re-runs itself with glibc's mmap threshold and trim threshold raised, so that
memory is reused from call to call as a GPU allocator does; ``--system-malloc`` keeps the defaults.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

COLUMNS = 64
# Keras's equivalent of each factory: the same loss, or the base loss that the factory weights or extends.
KERAS_EQUIVALENT = {
    "mse": "MSE",
    "mae": "MAE",
    "huber": "Huber",
    "bce": "BCE",
    "cce": "CCE",
    "focal": "focal",
    "class_bce": "BCE",
    "class_cce": "CCE",
    "confidence_bce": "BCE",
    "poly1": "BCE",
    "error_mse": "MSE",
    "dynamic_alpha": "MSE",
    "barron": "Huber",
}
# Factories whose Keras row computes the same function (the others add weights or terms to it).
SAME_AS_KERAS = {"mse", "mae", "huber", "bce", "cce", "focal", "class_bce", "class_cce"}
RATIO_TARGET = 1.3  # every factory against Keras's equivalent and against the bare formula
LEARNED_TARGET = 2.0  # learned alpha and scale against the fixed-alpha step
FLOOR_TARGETS = {"fixed": 1.2, "factory": 1.2, "learned": 1.5}  # against the floor, on a GPU at 2^26
MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=22, help="log2 of the number of elements (default 22)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds; each row's median is shown")
    parser.add_argument("--calls", type=int, default=0,
                        help="calls per timed sample (default: 1 on CPU, 10 on a GPU, where a call is short)")
    parser.add_argument("--no-xla", action="store_true", help="TensorFlow: graph mode without XLA")
    parser.add_argument("--only", default="", help="comma-separated substrings: run matching rows (and floor)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what the ratios compare: wall time (default) or this process's CPU time, steadier "
                             "on a CPU shared with other work")
    parser.add_argument("--system-malloc", action="store_true", help="keep glibc's default allocation thresholds")
    return parser.parse_args(argv)


class Backend:
    """Compile a value-and-gradient step and time it, on the active Keras backend."""

    def __init__(self, xla: bool) -> None:
        import keras

        self.name = keras.backend.backend()
        self.xla = xla
        if self.name == "tensorflow":
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")  # one tf.function per row: its retracing warnings are expected
            self.tf = tf
        elif self.name == "jax":
            import jax

            self.jax = jax
        else:
            raise SystemExit(f"unsupported backend {self.name}")

    def device(self) -> str:
        if self.name == "jax":
            return str(self.jax.devices()[0])
        gpus = self.tf.config.list_physical_devices("GPU")
        return str(gpus[0].name) if gpus else "CPU"

    def on_gpu(self) -> bool:
        if self.name == "jax":
            return self.jax.devices()[0].platform == "gpu"
        return bool(self.tf.config.list_physical_devices("GPU"))

    def constant(self, array: np.ndarray) -> Any:
        if self.name == "jax":
            return self.jax.device_put(array)
        return self.tf.constant(array)

    def value_and_grad(self, fn: Callable[..., Any], n_diff: int) -> Callable[..., Any]:
        """``fn(y_true, *diff)`` -> (value, grads of the ``n_diff`` differentiable arguments)."""
        if self.name == "jax":
            return self.jax.jit(self.jax.value_and_grad(fn, argnums=tuple(range(1, 1 + n_diff))))
        tf = self.tf

        @tf.function(jit_compile=self.xla)
        def step(y_true: Any, *args: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(args)
                value = fn(y_true, *args)
            return value, tape.gradient(value, list(args))

        return step

    def compiled(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if self.name == "jax":
            return self.jax.jit(fn)
        return self.tf.function(fn, jit_compile=self.xla)

    def sync(self, out: Any) -> None:
        if self.name == "jax":
            self.jax.block_until_ready(out)
        elif self.on_gpu():
            self.tf.test.experimental.sync_devices()
        # TensorFlow on CPU returns from a tf.function once its outputs are computed.


@dataclass
class Row:
    name: str
    step: Callable[..., Any]  # compiled
    args: tuple[Any, ...]
    keras: str | None = None  # the row to compare with: Keras's equivalent
    bare: str | None = None  # ... the bare formula
    fixed: str | None = None  # ... the fixed-alpha step (learned rows)
    kind: str | None = None  # floor target: "fixed", "factory" or "learned"


def plain_loss(fn: Callable[..., Any]) -> Any:
    """A hand-written loss function wrapped as Keras wraps a function given to ``compile``."""
    import keras

    class Bare(keras.losses.Loss):
        def call(self, y_true: Any, y_pred: Any) -> Any:
            return fn(y_true, y_pred)

    return Bare(name="bare")


def bare_formulas() -> dict[str, Callable[..., Any]]:
    """The factories' losses (default parameters) as a user would write them in ``keras.ops``: per-sample values."""
    from keras import ops

    eps = 1e-7

    def bce(t: Any, p: Any) -> Any:
        p = ops.clip(p, eps, 1.0 - eps)
        return -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))

    def p_true(t: Any, p: Any) -> Any:
        return t * p + (1.0 - t) * (1.0 - p)

    def cce(t: Any, p: Any) -> Any:
        p = ops.clip(p / ops.sum(p, axis=-1, keepdims=True), eps, 1.0 - eps)
        return -ops.sum(t * ops.log(p), axis=-1)

    def dynamic_alpha(t: Any, p: Any) -> Any:  # sigmoid_snr, temperature 1, on MSE
        e = t - p
        return ops.stop_gradient(ops.sigmoid(ops.mean(e) / (ops.std(e) + eps))) * ops.mean(ops.square(e), axis=-1)

    return {
        "mse": lambda t, p: ops.mean(ops.square(p - t), axis=-1),
        "mae": lambda t, p: ops.mean(ops.abs(p - t), axis=-1),
        "huber": lambda t, p: ops.mean(
            ops.where(ops.abs(p - t) <= 1.0, 0.5 * ops.square(p - t), ops.abs(p - t) - 0.5), axis=-1
        ),
        "bce": lambda t, p: ops.mean(bce(t, p), axis=-1),
        "cce": cce,
        "class_bce": lambda t, p: ops.mean(bce(t, p), axis=-1),
        "class_cce": cce,
        "confidence_bce": lambda t, p: ops.mean(
            ops.stop_gradient(ops.clip(1.0 / ops.clip(p_true(t, p), eps, 1.0 - eps), 1.0, 10.0)) * bce(t, p), axis=-1
        ),
        "focal": lambda t, p: ops.mean(
            (0.25 * t + 0.75 * (1.0 - t)) * ops.square(1.0 - p_true(t, p)) * bce(t, p), axis=-1
        ),
        "poly1": lambda t, p: ops.mean(bce(t, p) + (1.0 - p_true(t, p)), axis=-1),
        "error_mse": lambda t, p: ops.mean(
            ops.stop_gradient(1.0 + ops.clip(ops.abs(t - p), 0.0, 5.0)) * ops.square(t - p), axis=-1
        ),
        "dynamic_alpha": dynamic_alpha,
        "barron": lambda t, p: ops.mean(ops.sqrt(ops.square(p - t) + 1.0) - 1.0, axis=-1),  # alpha 1, scale 1
    }


def keras_losses() -> dict[str, Any]:
    import keras

    return {
        "MSE": keras.losses.MeanSquaredError(),
        "MAE": keras.losses.MeanAbsoluteError(),
        "Huber": keras.losses.Huber(),
        "BCE": keras.losses.BinaryCrossentropy(),
        "CCE": keras.losses.CategoricalCrossentropy(),
        "focal": keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=2.0),
    }


def rows(backend: Backend, size: int) -> list[Row]:
    """Every row (compiled lazily, at its first call)."""
    from keras import ops

    import aloss_tune
    from aloss_tune.factories import get_factory
    from aloss_tune.losses import RobustLoss, general_loss, needs_model, robust_nll

    rng = np.random.default_rng(0)
    shape = (size // COLUMNS, COLUMNS)
    y_true = rng.normal(size=shape).astype("float32")
    y_pred = (y_true + rng.standard_cauchy(size=shape) * 0.5).astype("float32")
    yt, yp = backend.constant(y_true), backend.constant(y_pred)
    alpha = backend.constant(np.linspace(0.1, 1.9, COLUMNS).astype("float32"))
    scale = backend.constant(np.full(COLUMNS, 0.7, "float32"))
    latent = backend.constant(np.zeros(COLUMNS, "float32"))
    labels = backend.constant((rng.uniform(size=shape) < 0.3).astype("float32"))
    probs = backend.constant(rng.uniform(0.01, 0.99, size=shape).astype("float32"))
    logits = backend.constant(rng.normal(size=shape).astype("float32"))
    onehot = backend.constant(np.eye(COLUMNS, dtype="float32")[rng.integers(0, COLUMNS, shape[0])])
    softmax = backend.constant((np.exp(y_true) / np.exp(y_true).sum(-1, keepdims=True)).astype("float32"))
    task_args = {"regression": (yt, yp), "binary": (labels, probs), "multiclass": (onehot, softmax)}

    out: list[Row] = []

    def add(name: str, fn: Callable[..., Any], args: tuple[Any, ...], n_diff: int = 1, **refs: Any) -> None:
        out.append(Row(name, backend.value_and_grad(fn, n_diff), args, **refs))

    def loss_fn(loss: Any) -> Callable[..., Any]:
        return lambda t, p: loss(t, p)

    out.append(Row("floor: read 2, write 1", backend.compiled(lambda t, p: p - t), (yt, yp)))
    out.append(Row("copy: read 1, write 1", backend.compiled(lambda p: p + 0.0), (yp,)))
    keras_rows = keras_losses()
    keras_task = {"BCE": "binary", "focal": "binary", "CCE": "multiclass"}
    for key, loss in keras_rows.items():
        add(f"keras {key}", loss_fn(loss), task_args[keras_task.get(key, "regression")])

    bare = bare_formulas()
    for name in aloss_tune.list_losses():
        factory = get_factory(name)
        if factory.adaptive:
            continue
        try:
            loss = factory.build()
        except Exception as err:  # a factory without usable defaults: report, go on
            print(f"# skipped factory {name}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        if needs_model(loss):
            print(f"# skipped factory {name}: needs its model", file=sys.stderr)
            continue
        task = factory.tasks[0]
        args = task_args[task]
        if getattr(loss, "from_logits", False) and task == "binary":
            args = (labels, logits)
        keras_ref = f"keras {KERAS_EQUIVALENT[name]}" if name in KERAS_EQUIVALENT else None
        bare_ref = f"bare {name}" if name in bare and not getattr(loss, "from_logits", False) else None
        if bare_ref:
            add(bare_ref, loss_fn(plain_loss(bare[name])), args)
        add(f"factory {name}", loss_fn(loss), args, keras=keras_ref, bare=bare_ref, kind="factory")

    # Barron's loss with a fixed alpha: the formula is chosen when tracing.
    for a in (-math.inf, -2.0, 0.0, 1.0, 1.5, 2.0, 4.0, math.inf):
        bare_ref = "bare alpha=1.5" if a == 1.5 else None
        if bare_ref:
            def bare_fixed(t: Any, p: Any) -> Any:  # the general branch, no safety
                z = ops.square((p - t) / 0.7)
                return ops.mean((0.5 / 1.5) * ops.expm1(0.75 * ops.log1p(z / 0.5)), axis=-1)

            add(bare_ref, loss_fn(plain_loss(bare_fixed)), (yt, yp))
        add(f"RobustLoss(alpha={a:g})", loss_fn(RobustLoss(alpha=a, scale=0.7)), (yt, yp), bare=bare_ref, kind="fixed")

    # A learned alpha and scale (one per column): gradients for y_pred, alpha and scale.
    fixed = "RobustLoss(alpha=1.5)"

    def learned(t: Any, p: Any, a: Any, c: Any) -> Any:
        return ops.mean(ops.mean(general_loss(p - t, a, c), axis=-1))

    def bare_learned(t: Any, p: Any, a: Any, c: Any) -> Any:
        b = ops.abs(a - 2.0)
        z = ops.square((p - t) / c)
        return ops.mean(ops.mean((b / a) * ops.expm1((a / 2) * ops.log1p(z / b)), axis=-1))

    add("bare keras.ops, learned alpha+scale", bare_learned, (yt, yp, alpha, scale), 3, fixed=fixed)
    add("general_loss, learned alpha+scale", learned, (yt, yp, alpha, scale), 3, fixed=fixed,
        bare="bare keras.ops, learned alpha+scale", kind="learned")

    # What AdaptiveRobustLoss computes: the NLL with alpha and scale from latents (as AdaptiveRobustState).
    shift = math.log(math.e - 1.0)

    def adaptive(t: Any, p: Any, la: Any, ls: Any) -> Any:
        a = 0.001 + 1.998 * ops.sigmoid(la)
        c = (1.0 - 1e-5) * ops.softplus(ls + shift) + 1e-5
        return ops.mean(ops.mean(robust_nll(p - t, a, c), axis=-1))

    add("adaptive (NLL, learned alpha+scale)", adaptive, (yt, yp, latent, latent), 3, fixed=fixed, kind="learned")
    return out


def select(table: list[Row], only: list[str]) -> list[Row]:
    """The rows matching ``only`` (all if empty), the rows they are compared with, and the floor."""
    if not only:
        return table
    names = {row.name for row in table if any(s in row.name for s in only)} | {"floor: read 2, write 1"}
    names |= {ref for row in table if row.name in names for ref in (row.keras, row.bare, row.fixed) if ref}
    return [row for row in table if row.name in names]


def measure(backend: Backend, table: list[Row], repeats: int, calls: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and process CPU milliseconds per call of each row, the rows timed in turns."""
    for row in list(table):
        try:
            backend.sync(row.step(*row.args))  # compile
            backend.sync(row.step(*row.args))
        except Exception as err:  # keep going: one broken loss should not hide the others
            print(f"# {row.name}: failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}", file=sys.stderr)
            table.remove(row)
    wall: dict[str, list[float]] = {row.name: [] for row in table}
    cpu: dict[str, list[float]] = {row.name: [] for row in table}
    for _ in range(repeats):
        for row in table:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                out = row.step(*row.args)
            backend.sync(out)
            wall[row.name].append((time.perf_counter() - start) / calls)
            cpu[row.name].append((time.process_time() - start_cpu) / calls)
    return (
        {name: statistics.median(times) * 1e3 for name, times in wall.items()},
        {name: statistics.median(times) * 1e3 for name, times in cpu.items()},
    )


def ratio(ms: dict[str, float], name: str, ref: str | None) -> float | None:
    return ms[name] / ms[ref] if ref and ref in ms and name in ms else None


def report(
    backend: Backend, table: list[Row], wall: dict[str, float], cpu: dict[str, float], args: argparse.Namespace,
    calls: int,
) -> None:
    import keras

    ms = cpu if args.clock == "cpu" else wall
    floor = ms.get("floor: read 2, write 1")
    mode = "XLA" if backend.xla else "graph"
    print(f"backend {backend.name} ({mode}), device {backend.device()}, keras {keras.__version__}, "
          f"{1 << args.size:,} float32 elements (2^{args.size}), median of {args.repeats} rounds x {calls} call(s), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
          + ("" if args.system_malloc else ", glibc mmap/trim thresholds raised")
          + f"; ratios of {args.clock} time")
    print()
    print("| step | ms | CPU ms | x floor | x Keras | x bare | x fixed alpha |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def fmt_ms(value: float) -> str:  # three significant digits at least: a GPU step takes a fraction of 1 ms
        return f"{value:.{max(1, 2 - math.floor(math.log10(max(value, 1e-9))))}f}"

    for row in table:
        if row.name not in ms:
            continue
        keras_ratio = ratio(ms, row.name, row.keras)
        if keras_ratio is not None and row.name.removeprefix("factory ") not in SAME_AS_KERAS:
            keras_text = f"({keras_ratio:.2f})"  # Keras's base loss, which does less
        else:
            keras_text = fmt(keras_ratio)
        print(f"| {row.name} | {fmt_ms(wall[row.name])} | {fmt_ms(cpu[row.name])} | "
              f"{fmt(ratio(ms, row.name, 'floor: read 2, write 1'))} | "
              f"{keras_text} | {fmt(ratio(ms, row.name, row.bare))} | {fmt(ratio(ms, row.name, row.fixed))} |")
    print()
    print("Targets (ratios of this run; x Keras in parentheses: Keras's base loss, which does less, not a target):")
    print()
    print("| check | ratio | target | |")
    print("|---|---:|---:|---|")
    for row in table:
        checks = []
        if row.keras and row.name.removeprefix("factory ") in SAME_AS_KERAS:
            checks.append((f"{row.name} / {row.keras}", ratio(ms, row.name, row.keras), RATIO_TARGET))
        if row.bare and row.kind != "learned":
            checks.append((f"{row.name} / {row.bare}", ratio(ms, row.name, row.bare), RATIO_TARGET))
        if row.fixed and row.kind == "learned":
            checks.append((f"{row.name} / {row.fixed}", ratio(ms, row.name, row.fixed), LEARNED_TARGET))
        if row.kind and floor:
            checks.append((f"{row.name} / floor", ratio(ms, row.name, "floor: read 2, write 1"),
                           FLOOR_TARGETS[row.kind]))
        for text, value, target in checks:
            if value is not None:
                print(f"| {text} | {value:.2f} | {target:g} | {'met' if value <= target else 'missed'} |")


def reexec_with_steady_malloc(argv: list[str]) -> None:
    """Run this script again with glibc's thresholds raised (see the module docstring), once."""
    if all(os.environ.get(key) == value for key, value in MALLOC_ENV.items()):
        return
    env = {**os.environ, **MALLOC_ENV}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.system_malloc and platform.system() == "Linux":
        reexec_with_steady_malloc(argv)
    backend = Backend(xla=not args.no_xla)
    calls = args.calls or (10 if backend.on_gpu() else 1)
    table = select(rows(backend, 1 << args.size), [s for s in args.only.split(",") if s])
    wall, cpu = measure(backend, table, args.repeats, calls)
    report(backend, table, wall, cpu, args, calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
