"""Browser end to end: a real `prefect server start` on loopback, the flow run against it
(data half of dvc.yaml on the tiny fixture), then headless Debian Chromium (Selenium +
/usr/bin/chromedriver, no browser download) on the flow-run page.

Chromium comes from Debian (`make test` installs it; see the Makefile's `chromium` target).
The screenshot lands in the test's tmp dir, and in docs/prefect-ui.png (the README's) when
LLMREC_UPDATE_SCREENSHOT=1."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import DATA_STAGES, REPO, tiny_dvc_project

# the flow runs check_params (every stage depends on it) before whatever is selected
TASKS = ["check_params", *DATA_STAGES]

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,860"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_API_URL=api, DVC_NO_ANALYTICS="1")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("prefect server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"api": api, "ui": f"http://127.0.0.1:{port}", "env": {**env, "PREFECT_API_URL": api}}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the services it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing: `make chromium` (as root) or "
                    "`sudo apt-get install -y chromium chromium-driver`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver, wanted: list[str], timeout: float = 90) -> str:
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if all(w in text for w in wanted):
            return text
        time.sleep(0.5)
    raise AssertionError(f"page never showed {wanted}; it shows:\n{text[:2000]}")


def test_flow_run_shows_in_the_ui(tmp_path, server, browser):
    project = tiny_dvc_project(tmp_path / "project")
    res = subprocess.run([sys.executable, "-m", "pipeline.orchestration.flow", "--root", str(project), "--stages", *DATA_STAGES],
                         cwd=REPO, env=server["env"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_id = re.search(r"flow run ([0-9a-f-]{36}): ", res.stdout).group(1)

    run = httpx.get(f"{server['api']}/flow_runs/{run_id}").json()
    assert run["state_type"] == "COMPLETED"
    tasks = httpx.post(f"{server['api']}/task_runs/filter",
                       json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    assert sorted(t["name"] for t in tasks) == sorted(TASKS)
    assert all(t["state_type"] == "COMPLETED" and "cpu" in t["tags"] for t in tasks)

    browser.get(f"{server['ui']}/runs/flow-run/{run_id}")
    assert browser.current_url.startswith("http://127.0.0.1:")
    text = wait_for_text(browser, ["Completed", run["name"], f"{len(TASKS)} Task runs", *TASKS])
    assert "Can't connect to Server API" not in text
    time.sleep(1)  # let the timeline finish drawing
    browser.save_screenshot(str(tmp_path / "prefect-ui.png"))
    if os.environ.get("LLMREC_UPDATE_SCREENSHOT"):  # refresh the README's picture on request only
        shutil.copy(tmp_path / "prefect-ui.png", REPO / "docs/prefect-ui.png")

    # The Task Runs tab lists one task run per stage.
    browser.find_element("xpath", "//*[text()[normalize-space(.)='Task Runs']]").click()
    text = wait_for_text(browser, [f"{len(TASKS)} Task runs", f"({len(TASKS)} Completed)"], timeout=30)
    listed = [line for line in text.splitlines() if line in TASKS]
    assert listed == TASKS[::-1]  # newest first: one row per stage
