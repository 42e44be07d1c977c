"""Train-step time of a small MLP with each loss, against the same model trained with MSE.

A 32-64-64-8 ReLU MLP, batch 256, compiled with ``jit_compile=True``; one warm-up epoch, then the time per step of
the fastest timed epoch (the least disturbed by the machine's other work). Classification factories get an 8-way
(or one-unit) output with sigmoid/softmax and matching labels; adaptive ones are applied with `aloss_tune.attach`.

    python benchmarks/train_step.py
    KERAS_BACKEND=jax python benchmarks/train_step.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--only", default="", help="comma-separated substrings: run matching rows only")
    return parser.parse_args()


class EpochTimer:
    """Per-epoch wall time (the keras callback is created lazily so that importing this file is cheap)."""

    def __init__(self) -> None:
        import keras

        timer = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                timer.start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                timer.times.append(time.perf_counter() - timer.start)

        self.start = 0.0
        self.times: list[float] = []
        self.callback = _Callback()


def step_ms(loss: Any, task: str, args: argparse.Namespace) -> float:
    import keras

    import aloss_tune

    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    x = rng.normal(size=(n, 32)).astype("float32")
    outputs, activation = 8, None
    if task == "regression":
        y = (x[:, :8] * 2.0 + rng.standard_cauchy((n, 8)) * 0.3).astype("float32")
    elif task == "binary":
        outputs, activation = 1, "sigmoid"
        y = (x[:, :1] + 0.5 * rng.normal(size=(n, 1)) > 0).astype("float32")
    else:
        activation = "softmax"
        y = np.eye(8, dtype="float32")[np.argmax(x[:, :8] + rng.normal(size=(n, 8)), axis=1)]
    if getattr(loss, "from_logits", False):
        activation = None
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(outputs, activation=activation),
        ]
    )
    model = aloss_tune.attach(model, loss)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=True)
    timer = EpochTimer()
    model.fit(x, y, batch_size=args.batch, epochs=1 + args.epochs, shuffle=False, verbose=0,
              callbacks=[timer.callback])
    return min(timer.times[1:]) / args.steps * 1e3  # the least disturbed epoch


def main() -> int:
    args = parse_args()
    import keras

    import aloss_tune
    from aloss_tune.factories import get_factory

    cases: list[tuple[str, Any, str]] = [("keras MSE", keras.losses.MeanSquaredError(), "regression")]
    for name in aloss_tune.list_losses():
        factory = get_factory(name)
        try:
            cases.append((f"factory {name}", factory.build(), factory.tasks[0]))
        except Exception as err:  # a factory without usable defaults: report, go on
            print(f"# skipped factory {name}: {type(err).__name__}: {err}", file=sys.stderr)
    cases.append(("RobustLoss(alpha=0)", aloss_tune.build_loss({"loss": "barron", "loss.alpha": 0.0}), "regression"))
    cases.append(("adaptive_barron + l2", aloss_tune.build_loss({"loss": "adaptive_barron", "loss.l2": 1e-4}),
                  "regression"))
    only = [s for s in args.only.split(",") if s]
    table = []
    for name, loss, task in cases:
        if only and not any(s in name for s in only) and name != "keras MSE":
            continue
        try:
            ms = step_ms(loss, task, args)
        except Exception as err:  # keep going
            print(f"# {name}: failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}", file=sys.stderr)
            continue
        table.append((name, task, ms))
        print(f"# {name}: {ms:.3f} ms/step", file=sys.stderr)
    mse = table[0][2]
    print(f"backend {keras.backend.backend()} (jit_compile=True), keras {keras.__version__}, MLP 32-64-64-out, "
          f"batch {args.batch}, best of {args.epochs} epochs x {args.steps} steps, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print()
    print("| loss | task | ms/step | x MSE |")
    print("|---|---|---:|---:|")
    for name, task, ms in table:
        print(f"| {name} | {task} | {ms:.3f} | {ms / mse:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
