"""The dashboard page in a real browser: Debian's headless Chromium driven by Selenium.

A real embedded Redis gets a run written by RedisMetrics from two rollout workers, a scorer,
the buffer, the learner and the driver; the page must draw every chart with data points,
list both workers, show a point written afterwards without a reload, survive a malformed
entry (skipped and counted on the page) and keep a finished run browsable. A screenshot is
saved to $SHOAL_TEST_ARTIFACTS (default tests/artifacts/) as dashboard.png.
Needs /usr/bin/chromium + chromedriver (deploy/test.sh installs them as root): skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from shoal.services.dashboard import start_dashboard
from shoal.services.metrics import RunRegistry, connect, metrics_key, start_embedded_redis
from tests.integration.dashboard_seed import log_step, seed_run

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RUN = "dash-20250101-120000-002"
TOKEN = "browser-token-1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHARTS_WITH_DATA = [
    "tokens",
    "samples",
    "learner_steps",
    "trained_tokens",
    "reward",
    "gold",
    "gold_vs_kl",
    "rm_disagreement",
    "kl",
    "losses",
    "lag",
    "is_weights",
    "lag_time",
    "buffer_fill",
    "buffer_rate",
    "sync",
    "versions",
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        "Debian chromium + chromium-driver not installed (deploy/test.sh installs them as root)",
        allow_module_level=True,
    )


def artifacts_dir() -> Path:
    d = Path(os.environ.get("SHOAL_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        "--window-size=1440,2300",
    ]:
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    server = start_embedded_redis(tmp_path_factory.mktemp("redis") / "shoal-metrics.rdb")
    yield server
    server.close()


@pytest.fixture(scope="module")
def site(store):
    sinks = seed_run(store.url, RUN)
    server = start_dashboard(store.url, port=0, poll_interval_s=0.3)
    yield server, sinks
    server.stop()


def wait_until(driver, script: str, timeout: float = 20):
    """Poll a JS expression until it is truthy; returns its value."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {script!r} (last value {value!r})")


POINTS = "Object.fromEntries([...document.querySelectorAll('[data-chart]')].map(e => [e.dataset.chart, +(e.dataset.points || 0)]))"


def test_charts_workers_and_live_update(browser, site):
    server, sinks = site
    browser.get(f"{server.url}#run={RUN}")
    wait_until(
        browser,
        "document.querySelector('[data-chart=tokens]') && +document.querySelector('[data-chart=tokens]').dataset.points > 0",
    )
    points = browser.execute_script(f"return {POINTS};")
    assert all(points[c] > 0 for c in CHARTS_WITH_DATA), points
    assert points["tokens"] == 6 * 2 + 6 * 2  # two workers plus their sum, 6 steps each
    paths = browser.execute_script(
        "return [...document.querySelectorAll('[data-chart=tokens] path[data-series]')]"
        ".map(p => [p.dataset.series, +p.dataset.points]);"
    )
    assert paths == [["rollout-0", 6], ["rollout-1", 6], ["sum of workers", 12]]
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#workers tr[data-worker]')]"
        ".map(r => [...r.cells].map(c => c.textContent));"
    )
    assert [r[0] for r in rows] == ["rollout-0", "rollout-1"]
    assert rows[0][2] == "transformers" and rows[0][7] == "ok" and rows[1][3] == "6"
    # workers on two nodes: each node's colour on its workers' lines and on its dot in the table
    colours = browser.execute_script(
        "const ids = ['rollout-0', 'rollout-1'];"
        "return ids.map(w => [document.querySelector(`[data-chart=tokens] path[data-series=\"${w}\"]`).getAttribute('stroke'),"
        " window.ShoalSeries.nodeColor(document.querySelector(`#workers tr[data-worker=${w}] td[title]`).title),"
        " document.querySelector(`#workers tr[data-worker=${w}] .node-dot`).style.background]);"
    )
    assert colours[0][0] == colours[0][1] and colours[1][0] == colours[1][1], colours
    assert colours[0][0] != colours[1][0] and all(c[2] for c in colours), colours

    browser.execute_script("window.__noReload = 42;")
    sinks["rollout-0"].log({"rollout/tokens_per_s": 4321.0}, step=7)
    wait_until(
        browser, "+document.querySelector('[data-chart=tokens] path[data-series=\"rollout-0\"]').dataset.points === 7"
    )
    assert browser.execute_script("return window.__noReload;") == 42  # same page, no reload
    assert "4321" in browser.find_element("css selector", "[data-chart=tokens] .legend").text
    log_step(sinks, 6)
    wait_until(browser, "+document.querySelector('[data-chart=reward]').dataset.points > " + str(points["reward"]))
    shot = artifacts_dir() / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\ndashboard screenshot: {shot}")


def test_malformed_entry_is_skipped_and_counted(browser, site, store):
    server, sinks = site
    browser.get(f"{server.url}#run={RUN}")
    wait_until(browser, "+document.body.dataset.entries > 0")
    before = browser.execute_script(f"return {POINTS};")["losses"]
    raw = connect(store.url)
    raw.xadd(metrics_key(RUN), {"source": "learner", "t": "not-a-time", "data": '{"learner/policy_loss": '})
    sinks["learner"].log({"learner/policy_loss": 0.5, "learner/value_loss": 0.5, "learner/entropy": 2.0}, step=9)
    wait_until(browser, "document.body.dataset.skipped === '1'")
    wait_until(browser, f"{POINTS}.losses > {before}")
    assert browser.find_element("css selector", "#skipped").text == "1 malformed entry skipped"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_finished_run_stays_browsable(browser, site, store):
    server, _ = site
    browser.get(f"{server.url}#run={RUN}")
    wait_until(browser, "+document.body.dataset.entries > 0")
    RunRegistry(store.url).finish_run(RUN, "finished", {"learner_steps": 7, "before": {"gold_reward": 0.1}})
    wait_until(browser, "document.querySelector('#run-title .badge').textContent === 'finished'", timeout=30)
    wait_until(browser, "!document.querySelector('#summary-box').hidden", timeout=30)
    assert browser.execute_script(f"return {POINTS};")["tokens"] > 0
    assert browser.find_element("css selector", "#workers tr[data-worker=rollout-0] .badge").text == "stopped"


def test_token_page_asks_for_the_token(browser, store):
    server = start_dashboard(store.url, port=0, token=TOKEN, poll_interval_s=0.3)
    try:
        browser.get(f"http://127.0.0.1:{server.port}/#run={RUN}")
        browser.execute_script("sessionStorage.clear();")
        browser.refresh()
        wait_until(browser, "!document.querySelector('#token-box').hidden")
        browser.find_element("css selector", "#token-input").send_keys(TOKEN)
        browser.find_element("css selector", "#token-form button").click()
        wait_until(browser, "+(document.querySelector('[data-chart=tokens]') || {dataset: {}}).dataset.points > 0")
        browser.get(f"http://127.0.0.1:{server.port}/?token={TOKEN}#run={RUN}")
        wait_until(browser, "!location.search.includes('token')")  # taken out of the address bar
    finally:
        server.stop()


def test_multiturn_charts_draw_an_r2d2_run(browser, store):
    """A run written the way EpisodeActors and the R2D2 learner write it: the multi-turn charts fill."""
    from shoal.services.metrics import RedisMetrics

    run = "r2d2-20250101-120000-003"
    RunRegistry(store.url).start_run(run, "r2d2", "{}")
    workers = {f"rollout-{i}": RedisMetrics(store.url, run, f"rollout-{i}") for i in range(2)}
    learner = RedisMetrics(store.url, run, "learner")
    for step in range(1, 5):
        for i, sink in enumerate(workers.values()):
            sink.log(
                {
                    "rollout/turns_per_s": 100.0 + i,
                    "rollout/episode_return_mean": -1.0 + 0.2 * step,
                    "rollout/success_rate": 0.1 * step,
                },
                step=step,
            )
        learner.log(
            {"learner/q_loss": 1.0 / step, "learner/td_abs_mean": 0.5 / step, "learner/policy_version": float(step)},
            step=step,
        )
        learner.log({"dq/zero": 1.5, "dq/zero_burn_in": 0.9, "dq/stored": 0.1, "dq/stored_burn_in": 0.03}, step=step)
    server = start_dashboard(store.url, port=0, poll_interval_s=0.3)
    try:
        browser.get(f"{server.url}#run={run}")
        wait_until(browser, "+(document.querySelector('[data-chart=dq]') || {dataset: {}}).dataset.points > 0")
        points = browser.execute_script(f"return {POINTS};")
        assert (
            points["turns"] == 4 * 2 + 8
            and points["episodes"] == 4 * 4
            and points["q_losses"] == 8
            and points["dq"] == 16
        ), points
        shot = artifacts_dir() / "dashboard-r2d2.png"
        assert browser.save_screenshot(str(shot))
    finally:
        server.stop()


def test_preference_charts_draw_a_dpo_run(browser, store):
    """A run written the way the DPO learner writes it: the implicit-reward and accuracy charts fill."""
    from shoal.services.metrics import RedisMetrics

    run = "dpo-20250101-120000-004"
    RunRegistry(store.url).start_run(run, "dpo", "{}")
    learner = RedisMetrics(store.url, run, "learner")
    for step in range(1, 6):
        learner.log(
            {
                "learner/dpo_loss": 0.69 - 0.05 * step,
                "learner/rewards_chosen": 0.1 * step,
                "learner/rewards_rejected": -0.1 * step,
                "learner/reward_margin": 0.2 * step,
                "learner/preference_accuracy": 0.5 + 0.08 * step,
                "learner/kl_ref": 0.3 * step,
                "learner/policy_version": float(step),
            },
            step=step,
        )
    server = start_dashboard(store.url, port=0, poll_interval_s=0.3)
    try:
        browser.get(f"{server.url}#run={run}")
        wait_until(
            browser, "+(document.querySelector('[data-chart=preference_accuracy]') || {dataset: {}}).dataset.points > 0"
        )
        points = browser.execute_script(f"return {POINTS};")
        assert points["implicit_rewards"] == 3 * 5 and points["preference_accuracy"] == 5, points
        assert points["losses"] == 5 and points["kl"] == 5, points
        assert browser.save_screenshot(str(artifacts_dir() / "dashboard-dpo.png"))
    finally:
        server.stop()
