"""The MLflow UI as a user sees it: a finished tiny study, served by ``mlflow server`` on loopback and opened
in headless Chromium (Debian's ``chromium`` and ``chromium-driver``; nothing downloads a browser).

Skipped, with the reason, where the browser or its driver is missing (``.ci/run`` installs them). With
``ALOSS_TUNE_SCREENSHOTS=DIR`` the runs-table screenshot is also written to ``DIR/mlflow_runs.png`` (the
README's picture is made that way).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import aloss_tune
from aloss_tune.models import mlp
from aloss_tune.report._plots import PIXELS
from aloss_tune.tracking import runs_url

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PLOT = "optimization_history.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
                              "chromium-driver)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout:.0f} s")


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the server and every worker it started (its own process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


FAILS, PRUNED = 1, 2  # the fixture study's trial that fails, and the one that is pruned


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> dict:
    """A tiny tracked study (four trials: two complete, one failed, one pruned), its stores and its runs."""
    import keras
    import optuna
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("ui")
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    space = {
        "study": "ui_study",
        "data": "contaminated_regression",
        "model": {"builder": "mlp", "params": {"units": 8, "layers": 1}},
        "training": {"epochs": 2, "batch_size": 64},
        "loss": {"choices": ["mse", "huber", "barron"]},
        "search": {"sampler": "random", "pruner": "median", "n_trials": 4, "seed": 0},
    }
    builds = []

    def builder(params: dict, data: object) -> keras.Model:
        """The built-in MLP; the model of trial `FAILS` predicts NaN, so that trial fails in `fit`."""
        builds.append(params["loss"])
        model = mlp(params, data)
        if len(builds) - 2 == FAILS:  # the first build is the check of the space before any trial
            return keras.Model(model.input, keras.layers.Rescaling(float("nan"))(model.output))
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # artifacts go to ./mlruns
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == PRUNED)
        result = aloss_tune.tune(space, build_model=builder, storage=f"sqlite:///{root / 'optuna.db'}",
                                 tracking_uri=tracking)
    assert result.counts == {"complete": 2, "pruned": 1, "failed": 1}
    client = MlflowClient(tracking)
    children = client.search_runs([result.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    return {"root": root, "tracking": tracking, "parent": result.parent_run_id,
            "experiment": result.experiment_id, "client": client,
            "children": {r.info.run_name: r.info.run_id for r in children},
            "losses": {int(r.data.tags["aloss_tune.trial"]): r.data.params["loss"] for r in children}}


@pytest.fixture(scope="module")
def server(finished_study: dict) -> Iterator[str]:
    """``mlflow server`` over the study's store, on a free loopback port, in its own process group."""
    port = free_port()
    root = finished_study["root"]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", finished_study["tracking"],
         "--default-artifact-root", (root / "mlruns").as_uri()],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium driven by selenium, pointed at Debian's binaries (no Selenium Manager download)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="aloss_tune_chromium_")  # fresh: the runs table keeps state in storage
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,760", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_trial_runs_are_named_by_their_loss_and_tagged_with_their_state(finished_study):
    losses, client = finished_study["losses"], finished_study["client"]
    assert sorted(finished_study["children"]) == sorted(f"trial-{n} {loss}" for n, loss in losses.items())
    states = {}
    for run_id in finished_study["children"].values():
        run = client.get_run(run_id)
        states[int(run.data.tags["aloss_tune.trial"])] = (run.data.tags["aloss_tune.state"], run.info.status)
    assert states == {0: ("complete", "FINISHED"), FAILS: ("failed", "FAILED"), PRUNED: ("pruned", "KILLED"),
                      3: ("complete", "FINISHED")}
    experiment = client.get_experiment(finished_study["experiment"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def open_runs_table(browser, server: str, finished_study: dict) -> object:
    """Open the experiment by the link `aloss-tune tune` prints, expand the study's parent run, and wait until
    every trial's row shows; returns the runs table's element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    parent, children = finished_study["parent"], finished_study["children"]
    browser.get(runs_url(server, finished_study["experiment"]))
    wait = WebDriverWait(browser, 60)
    body = browser.find_element(By.TAG_NAME, "body")
    wait.until(lambda _: "5 matching runs" in body.text)  # the parent and its four trials
    assistant = '[data-component-id="mlflow.assistant.chat_panel.close"]'
    for close in browser.find_elements(By.CSS_SELECTOR, assistant):
        close.click()  # the assistant's side panel takes half the page
    # Trials start collapsed under their parent: expand it, as a user would.
    expander = f'div[row-id="{parent}"] button[data-component-id*="runnamecellrenderer"]'
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, expander))).click()
    for name, run_id in children.items():
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'a[href$="/runs/{run_id}"]')))
        wait.until(lambda _, name=name: name in body.text)
    return browser.find_element(By.CSS_SELECTOR, ".ag-root-wrapper")


def test_the_printed_link_opens_the_runs_table_with_loss_state_and_objective(server, browser, finished_study,
                                                                            tmp_path):
    from matplotlib.image import imread

    table = open_runs_table(browser, server, finished_study)
    assert "/runs" in browser.current_url and "workflowType=machine_learning" in browser.current_url
    # The view's columns, and each trial's row: its loss in the name and as a param, its state.
    text = table.text
    for column in ("objective", "loss", "aloss_tune.state"):
        assert column in text
    client = finished_study["client"]
    for name, run_id in finished_study["children"].items():
        row = browser.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText).join(' | ');",
            f'.ag-center-cols-container div[row-id="{run_id}"]')
        run = client.get_run(run_id)
        assert run.data.params["loss"] in row and run.data.tags["aloss_tune.state"] in row, (name, row)
        assert name.endswith(run.data.params["loss"])
    # The screenshot of the table: the element's size, with text and icons on it (not an empty frame).
    shot = tmp_path / "mlflow_runs.png"
    assert table.screenshot(str(shot))
    image = imread(shot, format="png")
    size = table.size
    assert abs(image.shape[1] - size["width"]) <= 2 and abs(image.shape[0] - size["height"]) <= 2
    rgb = image[..., :3]
    assert np.mean(np.any(rgb < 0.6, axis=-1)) > 0.01  # dark pixels: text
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50  # antialiased text, colored state icons
    folder = os.environ.get("ALOSS_TUNE_SCREENSHOTS")
    if folder:
        shutil.copyfile(shot, Path(folder) / shot.name)


def test_parent_run_serves_its_plots(server, browser, finished_study):
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    parent = finished_study["parent"]
    served = f"{server}/get-artifact?path={PLOT}&run_uuid={parent}"
    with urllib.request.urlopen(served, timeout=30) as response:
        assert response.status == 200
        image = imread(io.BytesIO(response.read()), format="png")
    assert (image.shape[1], image.shape[0]) == PIXELS

    browser.get(f"{server}/#/experiments/{finished_study['experiment']}/runs/{parent}/artifacts")
    wait = WebDriverWait(browser, 60)
    wait.until(ec.element_to_be_clickable(
        (By.CSS_SELECTOR, f'[data-testid="artifact-tree-node"][artifact-name="{PLOT}"]'))).click()
    img = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'img[alt="{PLOT}"]')))
    loaded = ("const i = arguments[0];"
              "return i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null;")
    size = wait.until(lambda driver: driver.execute_script(loaded, img))
    assert tuple(size) == PIXELS
