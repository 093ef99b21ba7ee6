"""End to end in a real browser: the dashboard as run.sh starts it (`imgsim serve`), driven by Playwright on Debian's Chromium.

Screenshots of every page go to the test's temporary folder, or to $IMGSIM_SCREENSHOTS (e.g. docs/).
$IMGSIM_SCREENSHOT_MODEL_DIR and $IMGSIM_SCREENSHOT_IMAGES, when set, replace the tiny fixture model
so that the pictures show a real one (the model folder is only read); $IMGSIM_SCREENSHOT_QUERY picks
the image searched with.
"""

import os
from pathlib import Path

import pytest

from tests.helpers import running_dashboard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
EXCEPTION = '[data-testid="stException"]'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium); Playwright cannot download one here"),
]


@pytest.fixture
def dashboard(model_copy, tiny_collection, tmp_path):
    """The dashboard served as run.sh serves it (`imgsim serve`) on the tiny model (or the screenshot model); yields (url, images)."""
    model_dir = os.environ.get("IMGSIM_SCREENSHOT_MODEL_DIR") or model_copy
    images = Path(os.environ.get("IMGSIM_SCREENSHOT_IMAGES") or tiny_collection)
    yield from serve(model_dir, images, tmp_path, {})


@pytest.fixture
def shared_dashboard(model_copy, tiny_collection, tmp_path):
    """The dashboard exposed with a password, as the README's "Sharing the dashboard safely" runs it."""
    yield from serve(model_copy, tiny_collection, tmp_path, {"IMGSIM_PASSWORD": "correct horse battery"})


def serve(model_dir, images, tmp_path, extra_env):
    env = {"IMGSIM_MODEL_DIR": str(model_dir), "IMGSIM_IMAGES": str(images), **extra_env}
    with running_dashboard(tmp_path / "streamlit.log", env) as (url, _):
        yield url, images


def settle(page, heading: str) -> None:
    """Wait for the page's title, then for its script run to end."""
    page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=120_000)
    page.wait_for_selector(IDLE, timeout=120_000)
    page.wait_for_timeout(500)  # images and charts paint after the run ends


def check_and_shoot(page, name: str, shots: Path) -> None:
    assert page.locator(EXCEPTION).count() == 0, f"{name}: {page.locator(EXCEPTION).first.inner_text()}"
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def test_search_and_every_page_in_a_real_browser(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    url, images = dashboard
    shots = Path(os.environ.get("IMGSIM_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    photos = sorted(images.rglob("*.jpg"))
    query = Path(os.environ.get("IMGSIM_SCREENSHOT_QUERY") or photos[len(photos) // 3])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(url)
            settle(page, "Search")
            page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(query))
            grid = page.locator('.st-key-results [data-testid="stImage"]')
            grid.nth(7).wait_for(timeout=120_000)
            page.wait_for_selector(IDLE, timeout=60_000)
            assert grid.count() == 8
            assert page.locator(".st-key-results").get_by_text("group").count() >= 8
            check_and_shoot(page, "search", shots)

            page.get_by_role("link", name="Explore").click()
            settle(page, "Explore")
            plot = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
            # A lasso round the left 45% of the map: the axes fit the data, so the leftmost image is in it.
            page.mouse.move(plot["x"] + 2, plot["y"] + 2)
            page.mouse.down()
            for fx, fy in ((0.45, 0.0), (0.45, 0.99), (0.0, 0.99), (0.0, 0.01)):
                page.mouse.move(plot["x"] + fx * plot["width"], plot["y"] + fy * plot["height"], steps=8)
            page.mouse.up()
            page.get_by_role("heading", name="selected").wait_for(timeout=60_000)
            page.wait_for_selector(IDLE, timeout=60_000)
            assert page.get_by_role("heading", name="selected").inner_text().split()[0].isdigit()
            page.wait_for_timeout(500)
            check_and_shoot(page, "explore", shots)

            for name in ("Label", "Train"):
                page.get_by_role("link", name=name).click()
                settle(page, name)
                check_and_shoot(page, name.lower(), shots)
            assert page.locator('[data-testid="stSidebarUserContent"]').get_by_role("button", name="Retrain").count() == 1
        finally:
            browser.close()


def test_a_shared_dashboard_shows_names_as_text_and_locks_changes(shared_dashboard, model_copy, http_server, tmp_path):
    """A hostile group name fetches nothing and renders as typed; a visitor without the password cannot train."""
    from playwright.sync_api import sync_playwright

    from imgsim.runs import jobs
    from imgsim.storage import store
    from imgsim.storage.group_names import Label, save_labels

    tracker = http_server.serve("/track.png", b"\x89PNG", content_type="image/png")
    hostile = f"![x]({tracker}) <img src={tracker}?html> **bold** :red[red]"
    # written as a file could hold it (over the 100 characters a typed name may have since group names keep a
    # label's rules): what the dashboard must draw as text whatever made it
    save_labels(model_copy, store.current_id(model_copy), {0: Label(hostile)})
    url, _ = shared_dashboard
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(f"{url}/explore")
            settle(page, "Explore")
            shown = hostile.replace("://", ":\u2060//")  # as typed, with the invisible word joiner that stops auto-links
            page.get_by_text(f"group 0 · {shown}", exact=False).first.wait_for(timeout=60_000)  # the group picker
            page.get_by_role("link", name="Label").click()
            settle(page, "Label")
            page.get_by_role("link", name="Train").click()
            settle(page, "Train")
            assert page.get_by_role("button", name="Start training").count() == 0
            assert page.get_by_role("button", name="Retrain").count() == 0
            page.get_by_label("Password to make changes").fill("wrong")
            page.get_by_role("button", name="Unlock").click()
            page.get_by_text("Wrong password.").wait_for(timeout=30_000)
            assert page.get_by_role("button", name="Start training").count() == 0
            assert not jobs.is_running(model_copy) and jobs.read_status(model_copy) is None
            page.wait_for_timeout(1100)  # after a wrong guess the server hears none for a second
            page.get_by_label("Password to make changes").fill("correct horse battery")
            page.get_by_role("button", name="Unlock").click()
            page.get_by_role("button", name="Start training").wait_for(timeout=30_000)
            check_and_shoot(page, "train-unlocked", tmp_path)
        finally:
            browser.close()
    assert "/track.png" not in http_server.paths()  # no visitor's browser fetched the name's image
