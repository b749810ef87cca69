"""The live dashboard in a real browser (Debian's headless Chromium, driven by Selenium)
while a history is replayed through the broker."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ROOT
from tests.stream.conftest import produce
from tests.stream.helpers import raw_messages, wait_ready
from topics.specs import EVENTS

pytestmark = pytest.mark.kafka

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def browser(tmp_path: Path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "Debian's chromium and chromium-driver are missing: `make install` installs them (deploy/setup-system.sh)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1700",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_dashboard_shows_live_shifts_and_a_drill_down(
    kafka_bootstrap, worker_factory, stream_log, browser, tmp_path
) -> None:
    categories = sorted({c for user in stream_log.users for c in user.categories})
    names = tmp_path / "names.csv"
    names.write_text("id,name\n" + "".join(f"{c},Aisle {c}\n" for c in categories))
    worker = worker_factory(batch_size="16", category_names=str(names)).start()
    wait_ready(worker.web_port)
    browser.get(f"http://127.0.0.1:{worker.web_port}/dashboard")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "connection").text == "feed: live")
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.shift-row"), "nothing before the replay"

    produce(kafka_bootstrap, EVENTS.name, raw_messages(stream_log))
    WebDriverWait(browser, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.shift-row")) >= 5)
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#flow-matrix td.cell"))
    users = {link.get_attribute("data-user") for link in browser.find_elements(By.CSS_SELECTOR, "a.user")}
    assert users <= {u.user_id for u in stream_log.users}
    assert "Aisle " in browser.find_element(By.CSS_SELECTOR, "#flow-matrix").text, "categories by name"

    link = browser.find_elements(By.CSS_SELECTOR, "a.user")[-1]  # the oldest shift in the feed
    user = link.get_attribute("data-user")
    browser.execute_script("arguments[0].click()", link)  # the feed is still moving: click this very link
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#drilldown polyline.series"))
    assert browser.find_element(By.ID, "drill-user").text == user
    # the row that holds the shift is written just after the shift is published; the chart refreshes
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#drilldown line.shift-marker"))
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "throughput-value").text not in ("", "-"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#drilldown text.axis")) >= 7, "both axes, ticked and titled"

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000

    # A page opened later back-fills the latest shifts with the time each was published, not its own.
    browser.refresh()
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.shift-row")) >= 5)
    shown, newest, loaded, page = browser.execute_script(
        "const row = document.querySelector('tr.shift-row'); const shift = shifts[shifts.length - 1];"
        "return [row.cells[0].textContent, new Date(shift.published_at).toLocaleTimeString(), performance.timeOrigin,"
        " shifts.map(s => [s.shift_id, s.published_at])];"
    )
    assert shown == newest
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/shifts/recent?limit=200", timeout=5) as response:
        served = {s["shift_id"]: s["published_at"] for s in json.loads(response.read())["shifts"]}
    assert all(served.get(shift, at) == at for shift, at in page), "the worker's publish times"
    assert min(at for _, at in page) < loaded, "shifts published before the page loaded keep their own times"
