"""The dashboard in a real headless Chromium against a running ``streamlit run`` server.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; the CI script installs it)
and the ``playwright`` Python package; browsers are never downloaded (no ``playwright
install``): Playwright drives ``/usr/bin/chromium``. Skipped with the reason when either
is missing.

Screenshots of every page go to ``test-artifacts/screenshots/`` (git-ignored); with
``TRUSTDYN_DOCS_SCREENSHOTS=1`` they are also written to ``docs/screenshots/`` for the
README.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import build_model, build_tokenizer
from trustdyn.paths import REPO_ROOT
from trustdyn.testing.synthetic import write_synthetic_study

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "screenshots"
DOCS = REPO_ROOT / "docs" / "screenshots"
PAGES = {  # url path -> (file name, a text the page must show when it has rendered)
    "": ("overview", "Build or resume the default study"),
    "probes": ("probes", "Hover a cell"),
    "information": ("information", "Turn test"),
    "steering_results": ("steering-results", "Metric to plot"),
    "story": ("story", "3 · Directions from pre-training checkpoints"),
}
LOAD_TIMEOUT_MS = 120_000  # the shared dev machine is slow; CI is faster

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y "
                "chromium) to run the browser tests", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``streamlit run app.py`` on a free localhost port against a synthetic study.

    With ``TRUSTDYN_DOCS_STUDY=<study file>`` it opens that study instead, with the chat
    models of the current ``TRUSTDYN_HOME`` (how the README's screenshots are taken).
    """
    root = tmp_path_factory.mktemp("browser")
    docs_study = os.environ.get("TRUSTDYN_DOCS_STUDY")
    if docs_study:
        study = Path(docs_study)
        env = dict(os.environ)
    else:
        study = root / "study.duckdb"
        write_synthetic_study(study, n_checkpoints=8, n_layers=3, hidden_size=32, seed=0)
        chat = root / "tiny-chat"
        tokenizer = build_tokenizer()
        build_model("llama", len(tokenizer), seed=0).save_pretrained(chat)
        tokenizer.save_pretrained(chat)
        env = {**os.environ, "TRUSTDYN_HOME": str(root / "home"),
               "TRUSTDYN_CHAT_MODELS": f"tiny={chat}"}
    port = _free_port()
    log = (root / "streamlit.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--", "--db", str(study)],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, timeout_s=120)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # A tall viewport: Streamlit scrolls inside its main block, so a "full page" screenshot
    # is the viewport; this height shows a whole page.
    context = browser.new_context(viewport={"width": 1400, "height": 2200})
    tab = context.new_page()
    tab.set_default_timeout(LOAD_TIMEOUT_MS)
    try:
        yield tab
    finally:
        context.close()


def _settle(tab: Page, quiet_ms: int = 1500) -> None:
    """Wait until Streamlit has drawn everything.

    The script must have finished (``stApp``'s ``data-test-script-state``) with no element
    placeholder left, for a quiet while: plotly charts draw after their element arrives.
    """
    tab.wait_for_selector('[data-testid="stApp"]')
    tab.wait_for_function(
        """(quietMs) => {
            const app = document.querySelector('[data-testid="stApp"]');
            const busy = !app || app.getAttribute('data-test-script-state') !== 'notRunning'
                || document.querySelector('[data-testid="stSkeleton"]');
            if (busy) { window.__trustdynIdle = undefined; return false; }
            window.__trustdynIdle = window.__trustdynIdle || Date.now();
            return Date.now() - window.__trustdynIdle > quietMs;
        }""", arg=quiet_ms, polling=250, timeout=LOAD_TIMEOUT_MS)


def _screenshot(tab: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(target), full_page=True)
    if os.environ.get("TRUSTDYN_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, DOCS / f"{name}.png")


def _assert_no_exception(tab: Page) -> None:
    errors = tab.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


@pytest.mark.parametrize("path", list(PAGES))
def test_page_loads_without_errors(server: str, page: Page, path: str) -> None:
    name, marker = PAGES[path]
    page.goto(f"{server}/{path}")
    page.get_by_text(marker).first.wait_for()
    _settle(page)
    _assert_no_exception(page)
    _screenshot(page, name)


def test_heatmap_is_drawn(server: str, page: Page) -> None:
    page.goto(f"{server}/probes")
    # Plotly draws heatmaps into its SVG layer; the colour bar proves the trace rendered.
    page.locator(".js-plotly-plot .main-svg .heatmaplayer").first.wait_for()
    assert page.locator(".js-plotly-plot .colorbar").count() >= 1
    _assert_no_exception(page)


def test_a_link_opens_its_view_and_the_address_follows(server: str, page: Page) -> None:
    page.goto(f"{server}/probes?dataset=toxigen&view=Directions&layer=1")
    # Shown only in the open tab: the link chose the tab, not just the selectors.
    page.get_by_text("Cosines are signed").first.wait_for()
    _settle(page)
    _assert_no_exception(page)
    assert page.get_by_role("combobox", name="Dataset").input_value().endswith("· toxigen")
    for part in ("dataset=toxigen", "view=Directions", "layer=1", "suite=synthetic"):
        assert part in page.url  # the page wrote the whole view back into the address


def test_chat_gets_a_streamed_answer(server: str, page: Page) -> None:
    page.goto(f"{server}/steering_lab")
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.wait_for()
    _settle(page)
    box.fill("Is the sky blue?")
    box.press("Enter")
    # The clear button appears once both answers have been streamed and stored.
    page.get_by_role("button", name="Clear the chat").wait_for()
    _settle(page)
    messages = page.locator('[data-testid="stChatMessage"]')
    assert messages.count() >= 3  # the question, the unsteered and the steered answer
    assert "unsteered" in messages.nth(1).inner_text()
    assert "steered:" in messages.nth(2).inner_text()
    _assert_no_exception(page)
    _screenshot(page, "steering-lab")
