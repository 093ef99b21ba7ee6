"""Moving through the dashboard's sidebar in one browser tab: seconds from a click on a page's link to that page
all drawn, per page (issue 31's "done when"). Prints figures; a benchmark, not a test.

    .venv/bin/python benchmarks/bench_sidebar.py --model /path/to/models --images /path/to/images [--laps 4]

Serves the model as `imgsim serve` does, opens Search in Debian's Chromium, then clicks Explore, Label,
Duplicates, Train and Search in turn, `--laps` times. Each click is timed to the new page's heading, the
script run ended and everything drawn (benchmarks/bench_pages.py's test: no element waiting for its code,
every image loaded, every chart drawn). The first lap is left out: it loads each page's code once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_label_keys import ARGS, CHROMIUM, IDLE, serve, settle  # noqa: E402
from bench_pages import DRAWN_JS  # noqa: E402

ORDER = ["Explore", "Label", "Duplicates", "Train", "Search"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--laps", type=int, default=4, help="laps through the sidebar, the first left out (default 4)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    print(f"# bench_sidebar.py, model {args.model}, {args.laps - 1} laps counted, load {os.getloadavg()}")
    times = {name: [] for name in ORDER}
    with tempfile.TemporaryDirectory() as work, open(Path(work) / "serve.log", "wb") as log:
        server, url = serve(ROOT, args.model, args.images, log)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1200})
                page.goto(url)
                page.get_by_role("heading", name="Search", exact=True).wait_for(timeout=120_000)
                settle(page)
                for lap in range(args.laps):
                    for name in ORDER:
                        link = page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name)
                        began = time.monotonic()
                        link.click()
                        page.get_by_role("heading", name=name, exact=True).wait_for(timeout=60_000)
                        page.wait_for_selector(IDLE, timeout=60_000)
                        page.wait_for_function(DRAWN_JS, timeout=60_000)
                        if lap:
                            times[name].append(time.monotonic() - began)
                browser.close()
        finally:
            server.terminate()
            server.wait()
    for name in ORDER:
        print(f"{name:<11} median {statistics.median(times[name]):.2f} s  ({', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
