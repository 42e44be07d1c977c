"""Loss value + gradient throughput: Barron's loss, the adaptive loss, every registered factory, Keras's own.

Each row times one compiled step that reads ``y_true`` and ``y_pred`` (``size`` float32 elements each, laid
out as ``(size / 64, 64)``), computes the mean loss and its gradient with respect to ``y_pred`` (and to
alpha and scale where they are learned), and writes the gradient. The ``floor`` row does the least any such
step must do: read both arrays and write one (``y_pred - y_true``); ``copy`` reads one and writes one.
Ratios are measured side by side in the same run: against the floor and against Keras's MSE.

    python benchmarks/loss_speed.py                       # TensorFlow (XLA), 2^22 elements
    KERAS_BACKEND=jax python benchmarks/loss_speed.py     # JAX
    KERAS_BACKEND=jax python benchmarks/loss_speed.py --size 26   # on a GPU: 2^26 elements

Classification factories get labels and probabilities (or logits when their ``from_logits`` is true);
factories that need their model (``adaptive``) are covered by the ``adaptive`` rows instead.
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
from typing import Any

import numpy as np

COLUMNS = 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=22, help="log2 of the number of elements (default 22)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per row; the median is shown")
    parser.add_argument("--no-xla", action="store_true", help="TensorFlow: graph mode without XLA")
    parser.add_argument("--only", default="", help="comma-separated substrings: run matching rows only")
    return parser.parse_args()


class Backend:
    """Compile a value-and-gradient step and time it, on the active Keras backend."""

    def __init__(self, xla: bool) -> None:
        import keras

        self.name = keras.backend.backend()
        self.xla = xla
        if self.name == "tensorflow":
            import tensorflow as tf

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
        return str(gpus[0]) if gpus else "CPU"

    def constant(self, array: np.ndarray) -> Any:
        if self.name == "jax":
            return self.jax.device_put(array)
        return self.tf.constant(array)

    def value_and_grad(self, fn: Callable[..., Any], n_diff: int) -> Callable[..., Any]:
        """``fn(y_true, *diff)`` -> (value, grads of the first ``n_diff`` differentiable arguments)."""
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
        # TensorFlow returns from a tf.function once its outputs are computed.

    def time(self, step: Callable[..., Any], args: tuple[Any, ...], repeats: int) -> float:
        self.sync(step(*args))  # compile
        self.sync(step(*args))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.sync(step(*args))
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3


def rows(backend: Backend, size: int) -> list[tuple[str, Callable[..., Any], tuple[Any, ...], int]]:
    """(name, function or None for raw steps, arguments, number of differentiable arguments)."""
    import keras
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
    onehot_np = np.eye(COLUMNS, dtype="float32")[rng.integers(0, COLUMNS, shape[0])]
    onehot = backend.constant(onehot_np)
    softmax = backend.constant((np.exp(y_true) / np.exp(y_true).sum(-1, keepdims=True)).astype("float32"))

    def loss_row(loss: keras.losses.Loss) -> Callable[..., Any]:
        return lambda t, p: loss(t, p)

    out: list[tuple[str, Callable[..., Any], tuple[Any, ...], int]] = []
    out.append(("floor: read 2, write 1", None, (lambda t, p: p - t, (yt, yp)), 0))
    out.append(("copy: read 1, write 1", None, (lambda p: p + 0.0, (yp,)), 0))
    out.append(("keras MSE", loss_row(keras.losses.MeanSquaredError()), (yt, yp), 1))
    out.append(("keras Huber", loss_row(keras.losses.Huber()), (yt, yp), 1))
    for a in (-math.inf, -2.0, 0.0, 1.0, 1.5, 2.0, 4.0, math.inf):
        out.append((f"RobustLoss(alpha={a:g})", loss_row(RobustLoss(alpha=a, scale=0.7)), (yt, yp), 1))

    # The same formula written by hand in keras.ops, fixed alpha = 1.5 (the general branch), no safety.
    def bare_fixed(t: Any, p: Any) -> Any:
        a, b = 1.5, 0.5
        z = ops.square((p - t) / 0.7)
        return ops.mean((b / a) * ops.expm1((a / 2) * ops.log1p(z / b)))

    out.append(("bare keras.ops, alpha=1.5", bare_fixed, (yt, yp), 1))

    # Tensor alpha and scale (one per column), gradients for y_pred, alpha and scale.
    out.append(("general_loss, learned alpha+scale",
                lambda t, p, a, c: ops.mean(general_loss(p - t, a, c)), (yt, yp, alpha, scale), 3))

    def bare_tensor(t: Any, p: Any, a: Any, c: Any) -> Any:
        b = ops.abs(a - 2.0)
        z = ops.square((p - t) / c)
        return ops.mean((b / a) * ops.expm1((a / 2) * ops.log1p(z / b)))

    out.append(("bare keras.ops, learned alpha+scale", bare_tensor, (yt, yp, alpha, scale), 3))

    # What AdaptiveRobustLoss computes: the NLL with alpha and scale from latents (as AdaptiveRobustState).
    shift = math.log(math.e - 1.0)

    def adaptive(t: Any, p: Any, la: Any, ls: Any) -> Any:
        a = 0.001 + 1.998 * ops.sigmoid(la)
        c = (1.0 - 1e-5) * ops.softplus(ls + shift) + 1e-5
        return ops.mean(robust_nll(p - t, a, c))

    out.append(("adaptive (NLL, learned alpha+scale)", adaptive, (yt, yp, latent, latent), 3))

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
        tasks = factory.tasks
        from_logits = bool(getattr(loss, "from_logits", False) or factory.defaults().get("from_logits", False))
        if "regression" in tasks:
            args = (yt, yp)
        elif "binary" in tasks:
            args = (labels, logits if from_logits else probs)
        else:
            args = (onehot, logits if from_logits else softmax)
        out.append((f"factory {name} ({tasks[0]})", loss_row(loss), args, 1))
    return out


def main() -> int:
    args = parse_args()
    import keras

    backend = Backend(xla=not args.no_xla)
    size = 1 << args.size
    only = [s for s in args.only.split(",") if s]
    table = []
    for name, fn, call, n_diff in rows(backend, size):
        if only and not any(s in name for s in only):
            continue
        try:
            if fn is None:
                raw, raw_args = call
                ms = backend.time(backend.compiled(raw), raw_args, args.repeats)
            else:
                ms = backend.time(backend.value_and_grad(fn, n_diff), call, args.repeats)
        except Exception as err:  # keep going: one broken loss should not hide the others
            print(f"# {name}: failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}", file=sys.stderr)
            continue
        table.append((name, ms))
        print(f"# {name}: {ms:.3f} ms", file=sys.stderr)
    floor = dict(table).get("floor: read 2, write 1")
    mse = dict(table).get("keras MSE")
    mode = "XLA" if backend.xla else ("graph" if backend.name == "tensorflow" else "jit")
    print(f"backend {backend.name} ({mode}), device {backend.device()}, keras {keras.__version__}, "
          f"{size:,} float32 elements (2^{args.size}), median of {args.repeats}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print()
    print("| step | ms | x floor | x MSE |")
    print("|---|---:|---:|---:|")
    for name, ms in table:
        ratio_floor = f"{ms / floor:.2f}" if floor else "-"
        ratio_mse = f"{ms / mse:.2f}" if mse else "-"
        print(f"| {name} | {ms:.2f} | {ratio_floor} | {ratio_mse} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
