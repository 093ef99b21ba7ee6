"""Decisions a minute on the Label page for a scripted person in Chromium: today's clicks against keys and a grid.

    .venv/bin/python benchmarks/bench_label_keys.py --model /work/data/models-29/photos-hard-8 \
        --images /work/data/eval/photos-hard-8 [--baseline /path/to/a/checkout/of/0.3.0] [--seconds 90] \
        [--modes clicks keys grid]

The person knows every image's true label (its sub-folder) and labels the suggestion queue:

- clicks: the first suggestion's button with its label if there is one, else types it in the
  card's box (what the page offered before issue 29; run against `--baseline`, today's checkout,
  and against this one);
- keys: on the highlighted suggestion, Enter when the best guess is right, else the key of the
  button with the right label, else types it;
- grid: a page of look-alikes: unticks the ones whose label is not the page's, presses Enter.

Each mode starts from the same copy of the model folder with the same labels (the first image of
each class), runs for `--seconds` after the page is ready, and counts the labels stored (a grid's
unticked exceptions are not counted). A benchmark, not a test: the figure depends on the machine's
load, which is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgsim.storage import store  # noqa: E402
from imgsim.storage.annotations import LabelStore  # noqa: E402
from tests.helpers import free_port, wait_until_healthy  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def truth(short_name: str) -> str:
    return short_name.strip().split("/")[0]


def settle(page) -> None:
    page.wait_for_timeout(250)
    page.wait_for_selector(IDLE, timeout=120_000)


def type_label(page, card, name: str) -> None:
    card.locator('[class*="st-key-q-"][class*="-new"]').click()
    page.keyboard.type(name)
    page.keyboard.press("Enter")


def stable(page, read):
    """`read()` again every 0.3 s until two reads agree: buttons and captions can paint after the run ends."""
    before = read()
    while True:
        page.wait_for_timeout(300)
        after = read()
        if after == before:
            return after
        before = after


def card_state(page, card) -> tuple:
    """(the card's true label, the labels on its buttons in order, its best guess or None)."""
    picker = card.locator('[class*="st-key-q-"][class*="-new"]')
    picker.wait_for(timeout=60_000)
    image_id = picker.get_attribute("class").split("st-key-q-")[1].split("-")[0]
    names = []
    while card.locator(f".st-key-q-{image_id}-{len(names)} button").count():
        names.append(card.locator(f".st-key-q-{image_id}-{len(names)} button").first.inner_text().split("\n")[0])
    guess = card.locator(f".st-key-guess-{image_id} button")
    guessed = guess.first.inner_text().split("“", 1)[-1].split("”")[0].strip() if guess.count() else None
    return truth(card.locator('[data-testid="stCaptionContainer"]').first.inner_text()), names, guessed, image_id


def click_one(page) -> None:
    """Today's way: the first card's button with the right label, else typed."""
    picker = page.locator('[class*="st-key-q-"][class*="-new"]').first  # the first card's box, then the card
    card = picker.locator("xpath=ancestor::div[@data-testid='stVerticalBlock'][1]")
    name, names, _, image_id = stable(page, lambda: card_state(page, card))
    if name in names:
        card.locator(f".st-key-q-{image_id}-{names.index(name)} button").first.click()
    else:
        type_label(page, card, name)


def key_one(page) -> None:
    """Keys on the highlighted card: Enter for a right guess, the label's key, else typed."""
    card = page.locator(".st-key-card-focus")
    name, names, guess, _ = stable(page, lambda: card_state(page, card))
    if guess == name:
        page.keyboard.press("Enter")
    elif name in names:
        page.keyboard.press("123456789ABDEFHIJKLMNOPQTUVWXY"[names.index(name)].lower())
    else:
        type_label(page, card, name)


def grid_page(page) -> None:
    """A page of look-alikes: untick the wrong ones, Enter."""
    if not page.get_by_role("tab", name="A page at once", selected=True).count():
        page.get_by_role("tab", name="A page at once").click()
        settle(page)
    tiles = page.locator('[class*="st-key-look-"]')
    captions = page.locator('[data-testid="stForm"] [data-testid="stImageCaption"]')

    def read():
        label = page.locator('[class*="st-key-grid-label-"] input').input_value().rsplit(" (", 1)[0]
        return label, tiles.count(), [captions.nth(i).inner_text() for i in range(captions.count())]

    label, count, names = stable(page, read)
    for i, caption in enumerate(names[:count]):
        if truth(caption) != label:
            tiles.nth(i).locator("label").click()
    page.keyboard.press("Enter")


STEPS = {"clicks": click_one, "keys": key_one, "grid": grid_page}  # one decision (or a page of them) per mode


def serve(checkout: Path, model_dir: Path, images: Path, log, startup: float = 600):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(checkout), "IMGSIM_MODEL_DIR": str(model_dir), "IMGSIM_IMAGES": str(images)}
    server = subprocess.Popen([sys.executable, "-m", "imgsim", "serve", "--port", str(port), "--",
                               "--server.fileWatcherType=none"], cwd=checkout, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, server, lambda: Path(log.name).read_text(errors="replace")[-3000:], seconds=startup)
    return server, url


def run_mode(mode: str, checkout: Path, model: Path, images: Path, seconds: float, work: Path) -> tuple[int, float]:
    """Decisions stored and minutes spent by the scripted person in one mode, on a fresh copy of the model."""
    from playwright.sync_api import sync_playwright

    model_dir = Path(shutil.copytree(model, work / f"{mode}-{checkout.name}"))
    start_labels = seed_labels(model_dir, images)
    with open(work / f"{mode}.log", "wb") as log:
        server, url = serve(checkout, model_dir, images, log)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(180_000)  # a loaded machine: the first page view can take minutes
            page.goto(f"{url}/label")
            page.get_by_role("heading", name="Label", exact=True).wait_for(timeout=120_000)
            settle(page)
            step = STEPS[mode]
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                step(page)
                settle(page)
            spent = (time.monotonic() - began) / 60
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=300)  # a loaded machine: shutting down can take minutes
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return len(LabelStore(model_dir).load()) - start_labels, spent


def seed_labels(model_dir: Path, images: Path) -> int:
    """The first image of each class labelled, as a person starting out would have: returns how many."""
    version = store.load_version(model_dir)
    first = {}
    for row, path in enumerate(version.paths):
        first.setdefault(Path(path).relative_to(images).parts[0], row)
    for name, row in first.items():
        LabelStore(model_dir).set([int(version.ids[row])], name)
    return len(first)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, help="a checkout of the code before issue 29, for today's clicks")
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--modes", nargs="+", choices=list(STEPS), default=list(STEPS), help="this checkout's modes to run")
    args = parser.parse_args(argv)
    runs = ([("clicks", args.baseline)] if args.baseline else []) + [(mode, ROOT) for mode in args.modes]
    print(f"# bench_label_keys.py, model {args.model}, {args.seconds:.0f} s a mode, load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        for mode, checkout in runs:
            decided, minutes = run_mode(mode, checkout.resolve(), args.model, args.images.resolve(), args.seconds,
                                        Path(tmp))
            which = "today (baseline checkout)" if checkout == args.baseline else "this checkout"
            print(f"{mode:7s} {which:28s} {decided:4d} decisions in {minutes:.2f} min: "
                  f"{decided / minutes:6.1f} a minute  (load {os.getloadavg()[0]:.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
