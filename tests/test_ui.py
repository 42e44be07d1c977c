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


FAILS, PRUNED = 1, 3  # the fixture study's trial that fails, and the one that is pruned


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> dict:
    """A tiny tracked study, its stores and its runs: four trials, one failed, one pruned, and two that ran
    their 2 epochs (with these seeds, trial 0 beats the baseline, trial 2 does not: one complete, one dead)."""
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
        "optimizer": {"name": "adam", "learning_rate": 0.03},
        "training": {"epochs": 2, "batch_size": 64},
        "loss": {"choices": ["mse", "huber", "barron"]},
        # The pruner is asked from its warm-up on: none, so that trial PRUNED is pruned at its first epoch.
        "search": {"sampler": "random", "pruner": {"name": "median", "n_warmup_steps": 0}, "n_trials": 4, "seed": 0},
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
    assert result.counts["complete"] + result.counts["dead"] == 2
    assert (result.counts["pruned"], result.counts["failed"]) == (1, 1)
    client = MlflowClient(tracking)
    children = client.search_runs([result.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    return {"root": root, "tracking": tracking, "parent": result.parent_run_id, "result": result,
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
    study = finished_study["result"].study
    baseline = study.user_attrs["aloss_tune.baseline"]  # a complete trial no better than it is dead
    done = {n: ("dead" if study.trials[n].value >= baseline else "complete", "FINISHED")
            for n in range(4) if n not in (FAILS, PRUNED)}
    assert states == {**done, FAILS: ("failed", "FAILED"), PRUNED: ("pruned", "KILLED")}
    experiment = client.get_experiment(finished_study["experiment"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def open_runs_table(browser, server: str, finished_study: dict) -> object:
    """Open the experiment by the link `aloss-tune tune` prints and wait until every run's row shows (sorted
    by a metric, MLflow lists the runs flat, the parent among them); returns the runs table's element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    children = finished_study["children"]
    browser.get(runs_url(server, finished_study["experiment"]))
    wait = WebDriverWait(browser, 60)
    body = browser.find_element(By.TAG_NAME, "body")
    wait.until(lambda _: "5 matching runs" in body.text)  # the parent and its four trials
    assistant = '[data-component-id="mlflow.assistant.chat_panel.close"]'
    for close in browser.find_elements(By.CSS_SELECTOR, assistant):
        close.click()  # the assistant's side panel takes half the page
    for name, run_id in children.items():
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'a[href$="/runs/{run_id}"]')))
        wait.until(lambda _, name=name: name in body.text)
    return browser.find_element(By.CSS_SELECTOR, ".ag-root-wrapper")


ROWS = """return Array.from(document.querySelectorAll('.ag-center-cols-container div[row-id]'))
  .sort((a, b) => Number(a.getAttribute('row-index')) - Number(b.getAttribute('row-index')))
  .map(row => [row.getAttribute('row-id'), Array.from(row.querySelectorAll('[col-id]'))
    .map(cell => [cell.getAttribute('col-id'), cell.innerText.trim(), cell.scrollWidth <= cell.clientWidth])]);"""


def test_the_printed_link_opens_the_runs_table_with_loss_state_and_objective(server, browser, finished_study,
                                                                            tmp_path):
    from matplotlib.image import imread

    table = open_runs_table(browser, server, finished_study)
    assert "/runs" in browser.current_url and "workflowType=machine_learning" in browser.current_url
    # The view's columns, and each trial's row: its loss in the name and in the loss column, its state.
    text = table.text
    for column in ("objective", "aloss_tune.loss", "aloss_tune.state"):
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


def test_the_runs_table_shows_the_winner_on_the_parent_row_best_first(server, browser, finished_study):
    open_runs_table(browser, server, finished_study)
    result, client = finished_study["result"], finished_study["client"]
    rows = browser.execute_script(ROWS)
    cells = [{col: (text, whole) for col, text, whole in row} for _, row in rows]
    order = [run_id for run_id, _ in rows]
    # On top, the parent and the best trial (MLflow lists runs of equal objective newest first): the parent's
    # row shows the winner, its objective and loss, and the study's counts.
    best_run = finished_study["children"][f"trial-{result.best_trial} {result.best_params['loss']}"]
    assert order[:2] == [best_run, finished_study["parent"]]
    parent = cells[1]
    assert float(parent["metrics.`objective`"][0]) == pytest.approx(result.best_value, rel=1e-6)
    assert parent["tags.`aloss_tune.loss`"][0] == result.best_params["loss"]
    counts = result.counts
    assert parent["tags.`aloss_tune.state`"][0] == (
        f"{counts['complete']} complete, {counts['dead']} dead, {counts['pruned']} pruned, {counts['failed']} failed")
    # Then the trials, best objective first (runs without one, pruned and failed, last).
    objectives = [client.get_run(run_id).data.metrics.get("objective") for run_id in order]
    scored = [v for v in objectives if v is not None]
    assert scored == sorted(scored) and objectives[:len(scored)] == scored and len(scored) == 3
    # Every value shows whole in its column (no cell cut short).
    for row in cells:
        for column in ("metrics.`objective`", "tags.`aloss_tune.loss`", "tags.`aloss_tune.state`"):
            assert row[column][1], (column, row[column])


def test_a_run_opens_in_model_training_mode_once_the_switch_is_set(server, browser, finished_study):
    """A run's page follows the GenAI / Model training switch, which MLflow keeps in the browser: switched
    once, every run page opened from the table stays in model training (as the README says)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    experiment, run_id = finished_study["experiment"], next(iter(finished_study["children"].values()))
    wait = WebDriverWait(browser, 60)

    def run_page_mode(table) -> str:
        """Open the trial's run from the runs ``table``; the mode its page is in, read off its breadcrumb (the
        experiment, then ``Runs`` in model training, ``Evaluations`` in GenAI), once the table has left the page
        (the address changes first, and the table's page has words of either mode)."""
        browser.find_element(By.CSS_SELECTOR, f'a[href$="/runs/{run_id}"]').click()
        wait.until(lambda _: browser.current_url.split("?")[0].endswith(f"/experiments/{experiment}/runs/{run_id}"))
        wait.until(ec.staleness_of(table))
        crumb = '//*[normalize-space(text())="{}"]'
        found = wait.until(lambda d: [mode for mode, text in (("GenAI", "Evaluations"), ("Model training", "Runs"))
                                      if d.find_elements(By.XPATH, crumb.format(text))])
        return found[0]

    browser.execute_script("window.localStorage.clear();")
    assert run_page_mode(open_runs_table(browser, server, finished_study)) == "GenAI"  # MLflow's default, whatever the mode of the page the link came from
    open_runs_table(browser, server, finished_study)
    for mode in ("GenAI", "Model training"):  # the switch at the top of the sidebar
        button = wait.until(lambda d, mode=mode: d.find_element(
            By.XPATH, f'//div[@role="button"][normalize-space(.)="{mode}"]'))
        browser.execute_script("arguments[0].click();", button)
        wait.until(lambda _, mode=mode: ("machine_learning" if mode == "Model training" else "genai")
                   in browser.current_url)
    assert run_page_mode(open_runs_table(browser, server, finished_study)) == "Model training"
    assert browser.execute_script("return window.localStorage.getItem('mlflow.workflowType_v1');") == (
        '"machine_learning"')
