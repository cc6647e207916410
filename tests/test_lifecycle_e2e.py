"""A public two-phase competition end to end in a real headless Chromium, against ``referee serve``.

Two participants sign up, one creates a team and the other joins it with the invitation link; both
accept the rules and download the data; they submit in the development phase; the phase closes
(the host moves the phases' dates and reloads the competition: time is driven by dates the test
controls, nothing sleeps); they submit in the final phase with a fresh quota and pick their final
submission; the host publishes the private leaderboard on the Organise page; the team sees its
private rank. Screenshots of each step go to /tmp/referee-lifecycle-e2e/.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest
from conftest import need
from phase_support import challenge, set_phases
from test_web_e2e import CHROMIUM, CHROMIUM_ARGS, _serve

from referee.platform.controller.competitions import load
from referee.platform.controller.participation import host_create_team
from referee.platform.store import Store
from referee.platform.web.auth import create_host_token
from referee.submissions.submit import submit

pytestmark = [pytest.mark.lifecycle, pytest.mark.browser]
SHOTS = Path(tempfile.gettempdir()) / "referee-lifecycle-e2e"
PASSWORD = "a long enough pass phrase"
WAIT_MS = 60_000


@pytest.fixture
def site(tmp_path):
    root = challenge(tmp_path)
    store = Store(tmp_path / "ws")
    load(store, root)
    host = create_host_token(store)
    proc, url = _serve(tmp_path / "ws")
    yield url, host, root, store
    store.close()
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_up(page, url: str, name: str) -> None:
    page.goto(f"{url}/signup?next=/c/challenge/team")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("#signup-form button[type=submit]")
    page.wait_for_url(f"{url}/c/challenge/team")
    page.click("#register-form button[type=submit]")
    page.wait_for_selector("#create-team-form")


def accept_rules_and_download(page, url: str, saved: Path) -> None:
    page.goto(f"{url}/c/challenge/data")
    assert "Accept the rules" in page.inner_text("#accept-first")
    page.goto(f"{url}/c/challenge/rules")
    page.click("#accept-form button[type=submit]")
    page.wait_for_url(f"{url}/c/challenge/data")
    with page.expect_download() as info:
        page.click("tr[data-file='challenge-dev-input.zip'] a.download")
    assert info.value.suggested_filename == "challenge-dev-input.zip"
    info.value.save_as(str(saved))
    assert zipfile.ZipFile(saved).namelist() == ["input/features.csv"]


def upload(page, url: str, path: Path, description: str) -> str:
    page.goto(f"{url}/c/challenge/submit")
    page.set_input_files("#file", str(path))
    page.fill("#description", description)
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(f"{url}/submissions/*")
    page.wait_for_selector(".status-scored", timeout=WAIT_MS)  # the page reloads itself until scored
    return page.url.rsplit("/", 1)[1]


def test_a_public_competition_from_sign_up_to_the_private_rank(site, tmp_path):
    need(os.path.exists(CHROMIUM), f"Chromium ({CHROMIUM})")
    need(importlib.util.find_spec("playwright") is not None, "the playwright python package")
    from playwright.sync_api import sync_playwright

    url, host_token, root, store = site
    subs = root / "submissions"
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            ada = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
            bob = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
            host = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

            # ada signs up, registers and creates a team; bob joins it with the invitation link
            sign_up(ada, url, "ada")
            ada.fill("#team-name", "Owls")
            ada.click("#create-team-form button[type=submit]")
            code = ada.inner_text("#invite-code")
            sign_up(bob, url, "bob")
            bob.goto(f"{url}/c/challenge/join?code={code}")
            assert bob.input_value("#invite") == code
            bob.click("#join-team-form button[type=submit]")
            bob.wait_for_selector("#members li[data-user='bob']")
            ada.reload()
            assert ada.locator("#members li").count() == 2
            shot(bob, "1-team")

            # both accept the rules, then download the development inputs
            accept_rules_and_download(ada, url, tmp_path / "ada-input.zip")
            accept_rules_and_download(bob, url, tmp_path / "bob-input.zip")
            shot(bob, "2-data")

            # the development phase: its own data; its leaderboard is public
            upload(ada, url, subs / "dev" / "fair.csv", "first try")
            ada.goto(f"{url}/c/challenge")
            assert ada.locator("#phase-tabs a.active").get_attribute("data-phase") == "dev"
            assert ada.get_attribute("#my-rank strong[data-rank]", "data-rank") == "1"
            shot(ada, "3-dev-leaderboard")

            # the development phase closes, the final phase opens (the host moves the dates)
            now = dt.datetime.now(dt.timezone.utc)
            set_phases(root, dev_end=now - dt.timedelta(seconds=1), final_end=now + dt.timedelta(days=1))
            comp = load(store, root).competition
            host_create_team(store, "challenge", "rivals")
            submit(store, comp, "rivals", subs / "final" / "fair.csv")  # another team on the final board

            # a fresh quota in the final phase: 3 a day, whatever the development phase took
            bob.goto(f"{url}/c/challenge/submissions")
            assert bob.get_attribute("#quota .card[data-phase='final']", "data-remaining") == "3"
            good = upload(bob, url, subs / "final" / "good.csv", "tuned on dev")
            upload(ada, url, subs / "final" / "poor.csv", "a risky idea")
            bob.goto(f"{url}/c/challenge/submissions")
            assert bob.get_attribute("#quota .card[data-phase='final']", "data-remaining") == "1"
            bob.click(f"tr[data-id='{good}'] td.pick button")  # pick the final submission
            bob.wait_for_selector(f"tr[data-id='{good}'].picked")
            shot(bob, "4-picked")

            # the private leaderboard stays the host's until it is published
            bob.goto(f"{url}/c/challenge?phase=final&split=private")
            assert "visible to the host only" in bob.inner_text("main")
            host.goto(f"{url}/login?next=/c/challenge/host")
            host.fill("#token", host_token)
            host.click("#token-form button[type=submit]")
            host.wait_for_url(f"{url}/c/challenge/host")
            publish = "tr[data-phase='final'][data-split='private'] button[data-action='public']"
            host.click(publish)
            assert "is now public" in host.inner_text("#host-notice")
            shot(host, "5-published")

            # the team sees the private leaderboard and its private rank
            bob.goto(f"{url}/c/challenge?phase=final&split=private")
            bob.wait_for_selector("#my-rank")
            assert bob.get_attribute("#my-rank strong[data-rank]", "data-rank") == "1"
            mine = bob.locator("#leaderboard tr[data-team='Owls']")
            assert mine.get_attribute("data-rank") == "1"
            assert mine.locator(f"a[href='/submissions/{good}']").count() == 1  # the picked one
            assert bob.locator("#leaderboard tr[data-team='rivals']").get_attribute("data-rank") == "2"
            shot(bob, "6-private-rank")
        finally:
            browser.close()
