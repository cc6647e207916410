"""End to end in a real headless Chromium: sign in, upload through the form, wait for scoring, see the rank.

The server is the real ``referee serve`` process (uvicorn on 127.0.0.1, an ephemeral port, background
scoring on). Screenshots of each step are written under /tmp/referee-web-e2e/.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import need, prepare_example

from referee.platform.controller.competitions import load_into_store
from referee.platform.store import Store
from referee.platform.web.auth import create_team_token
from referee.submissions.submit import submit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(tempfile.gettempdir()) / "referee-web-e2e"

pytestmark = pytest.mark.browser


def _serve(workspace: Path) -> tuple[subprocess.Popen, str]:
    """Start ``referee serve --port 0`` and return the process and its base URL."""
    cmd = [sys.executable, "-c", "from referee.platform.cli.main import main; main()", "-w", str(workspace), "serve",
           "--port", "0", "--interval", "0.5", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    found: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # keep draining so the server never blocks on a full pipe
            if not found and "serving" in line and "http://" in line:
                found.append(line.split("http://", 1)[1].split("/", 1)[0])

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not found:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"referee serve did not start (exit code {proc.poll()})")
        time.sleep(0.05)
    return proc, f"http://{found[0]}"


@pytest.fixture
def server(tmp_path):
    root = prepare_example("deepfake", tmp_path)
    store = Store(tmp_path / "ws")
    comp = load_into_store(store, root / "competition.yaml")
    # another team is already on the board (scored by the server's background loop)
    submit(store, comp, "bravo", root / "submissions" / "bravo__mediocre.csv")
    token = create_team_token(store, "deepfake", "alpha", create_team=True)
    store.close()
    proc, url = _serve(tmp_path / "ws")
    yield url, token, root
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_browser_upload_is_scored_and_ranked(server, tmp_path):
    need(os.path.exists(CHROMIUM), f"Chromium ({CHROMIUM})")
    need(importlib.util.find_spec("playwright") is not None, "the playwright python package")
    from playwright.sync_api import sync_playwright

    url, token, root = server
    SHOTS.mkdir(exist_ok=True)
    profile = tmp_path / "chromium-profile"
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                        headless=True, viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.goto(f"{url}/login?next=/c/deepfake/submit")
            page.fill("#token", token)
            page.click("#token-form button[type=submit]")
            page.wait_for_url(f"{url}/c/deepfake/submit")
            assert "Submitting as team" in page.inner_text("#upload-form")
            page.set_input_files("#file", str(root / "submissions" / "alpha__good.csv"))
            page.screenshot(path=str(SHOTS / "1-upload-form.png"), full_page=True)
            page.click("#upload-form button[type=submit]")
            page.wait_for_url(f"{url}/submissions/*")
            # the page reloads itself until the background loop has scored the submission
            page.wait_for_selector(".status-scored", timeout=90_000)
            assert "name:log_loss" in page.inner_text("#scores")
            page.screenshot(path=str(SHOTS / "2-submission.png"), full_page=True)
            sid = page.url.rsplit("/", 1)[1]
            page.goto(f"{url}/c/deepfake")
            page.wait_for_selector("#leaderboard tr[data-team='bravo']", timeout=60_000)
            mine = page.locator("#leaderboard tr[data-team='alpha']")
            assert mine.get_attribute("data-rank") == "1"
            assert page.locator("#leaderboard tr[data-team='bravo']").get_attribute("data-rank") == "2"
            assert mine.locator(f"a[href='/submissions/{sid}']").count() == 1
            assert page.locator("svg.plot circle").count() == 2
            page.screenshot(path=str(SHOTS / "3-leaderboard.png"), full_page=True)
            # the private board is not reachable for a team, not even by URL
            page.goto(f"{url}/c/deepfake?split=private")
            assert "visible to the host only" in page.inner_text("main")
        finally:
            browser.close()
            shutil.rmtree(profile, ignore_errors=True)
