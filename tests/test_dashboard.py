"""The live view: optuna-dashboard, on the study's storage, reads a study while it runs (its API, through the
dashboard's WSGI app: no browser, no server)."""

from __future__ import annotations

import json
import threading
import wsgiref.util
from typing import Any

import numpy as np
import pytest

optuna_dashboard = pytest.importorskip("optuna_dashboard")

from aloss_tune import runner  # noqa: E402
from aloss_tune.api import tune  # noqa: E402


def get(app: Any, path: str, query: str = "") -> dict[str, Any]:
    """``GET path?query`` from the WSGI app ``app``; the JSON it answers."""
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING=query)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:500])
    return json.loads(body)


def tiny_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x.sum(axis=1) + 0.1 * rng.normal(size=n)).astype("float32")
    return x[:90], y[:90], x[90:], y[90:]


def test_the_dashboard_reads_a_running_study_with_its_live_curve(stores, monkeypatch):
    # The first trial pauses after its first epoch, so the dashboard looks at it while it is RUNNING.
    paused, resume = threading.Event(), threading.Event()
    original = runner.EpochReporter.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if not paused.is_set():
            paused.set()
            assert resume.wait(120), "the test never let the trial go on"

    monkeypatch.setattr(runner.EpochReporter, "on_epoch_end", on_epoch_end)
    space = {"study": "live", "model": {"builder": "mlp", "params": {"units": 4, "layers": 1}},
             "objective": {"metric": "val_mae", "direction": "minimize"},
             "training": {"epochs": 3, "batch_size": 32}, "loss": ["mse", "huber"],
             "search": {"sampler": "random", "pruner": "none", "n_trials": 2, "seed": 0,
                        "first_round": False}}  # trial 1 is not queued while trial 0 trains
    outcome: dict[str, Any] = {}

    def study() -> None:
        try:
            outcome["result"] = tune(space, data=tiny_data(), storage=stores["storage"], tracking=False,
                                     progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            outcome["error"] = exc

    worker = threading.Thread(target=study)
    worker.start()
    try:
        assert paused.wait(300), outcome.get("error")
        app = optuna_dashboard.wsgi(stores["storage"])
        (summary,) = get(app, "/api/studies")["study_summaries"]
        assert summary["study_name"] == "live"
        detail = get(app, f"/api/studies/{summary['study_id']}", "after=0")
        (trial,) = detail["trials"]
        assert (trial["number"], trial["state"]) == (0, "Running")
        assert "loss" in {p["name"] for p in trial["params"]}
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        flat = json.loads(attrs["aloss_tune.params"])
        assert flat["loss"] == next(p["param_external_value"] for p in trial["params"] if p["name"] == "loss")
        (live,) = trial["intermediate_values"]  # the first epoch's val_mae, while the trial trains on
        assert live["step"] == 0
        assert detail["best_trials"] == []
    finally:
        resume.set()
        worker.join(300)
    assert "error" not in outcome, outcome.get("error")
    app = optuna_dashboard.wsgi(stores["storage"])  # a fresh cache (the dashboard keeps trials up to 2 s)
    detail = get(app, f"/api/studies/{summary['study_id']}", "after=0")
    assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete"]
    assert [len(t["intermediate_values"]) for t in detail["trials"]] == [3, 3]
    assert detail["best_trials"][0]["number"] == outcome["result"].best_trial
    history = outcome["result"].study.trials[0].user_attrs["aloss_tune.history"]["val_mae"]
    assert live["value"] == pytest.approx(history[0])
