"""Tiny study files for the tests that run whole studies through the command line."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_space(folder: Path, study: str = "s", *, epochs: int = 2, n_trials: int = 4, sampler: str = "random",
                units: int = 8, **more) -> str:
    """A tiny regression study (120 rows, a one-layer MLP, two losses, a continuous learning rate) written
    to ``folder/<study>.yaml``; ``more`` adds or replaces top-level keys. Trials are never stopped as dead
    (``stop_dead: false``: these studies test workers and stores, with budgets too small to learn much), but
    a trial no better than the baseline still counts as dead (see `helpers.processes.study_counts`)."""
    raw = {
        "study": study,
        "data": "helpers.user_side:tiny_regression",
        "model": {"builder": "mlp", "params": {"units": units, "layers": 1}},
        "optimizer": {"name": "adam",
                      "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
        "objective": {"metric": "val_mae", "direction": "minimize"},
        "training": {"epochs": epochs, "batch_size": 64, "stop_dead": False},
        "loss": ["mse", "huber"],
        "search": {"sampler": sampler, "pruner": "none", "n_trials": n_trials, "seed": 0},
        **more,
    }
    path = folder / f"{study}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)
