"""Dashboard page speed in a real browser, against a reference Streamlit page measured in the same run; prints figures.

    .venv/bin/python benchmarks/bench_pages.py                       # demo model (200 images), ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_pages.py --rounds 3 --users 5  # a quicker look
    .venv/bin/python benchmarks/bench_pages.py --model-dir M --images I   # an existing model, e.g. 5,000 images
    .venv/bin/python benchmarks/bench_pages.py --pages duplicates explore --first-rounds 0 --burst-rounds 0
    .venv/bin/python benchmarks/bench_pages.py --profile             # where imgsim's server CPU goes, per page (cProfile)
    .venv/bin/python benchmarks/bench_pages.py --warm-browser        # new tabs of one browser (its cache kept)

Serves imgsim as run.sh does (`imgsim serve`: `streamlit run app.py` plus the model warm-up; IMGSIM_MODEL_DIR/IMGSIM_IMAGES set) and benchmarks/reference_app.py (an
empty page with an uploader that shows the upload nine times) on free loopback ports, and drives Debian's Chromium
with Playwright. Every page view is a new browser context (no cache shared; with --warm-browser a new tab of one
context, whose cache every view shares, as a person's browser), and the reference is measured before each imgsim
page, so both see the same machine load. Measured:

  ref+plotly the reference page with a three-point Plotly chart: what any page drawing a Plotly chart pays in a new
            browser context (the chart's 4.7 MB of front-end code fetched and compiled), the floor for Explore's map
  ref+vega  the same with a three-point st.line_chart (Vega-Lite, 1.1 MB): the floor for Train's curves
  page      navigation -> the page's title heading (reference: its uploader) drawn and the script run ended
            ("main"); "all drawn": then no element waiting for its code, every <img> loaded, every chart drawn
  CPU       the server's utime+stime (every thread of its process tree: `imgsim serve` starts the server as a
            child) over one view, read when it is quiet
  sent      what one view brought to the browser: WebSocket frames from the server (kB) and media files
            (thumbnails; count and kB)
  upload    file chosen on Search -> the 8 results drawn (reference: the nine images), images loaded, run ended
  first     a fresh server: start -> healthy, navigation -> uploader present, then upload at once -> results
  burst     USERS new contexts at once, each opening the page and searching: errors, p95 page and search times

Targets (issues 12 and 31): page all drawn <= 1.5x the reference, upload -> results <= 2x, server CPU per view
<= 2x, burst p95 <= 3x with no errors, first search <= 2 s. Ratios are imgsim / reference, p50 against p50 and p95 against p95; p95 is
the nearest rank, i.e. the maximum below 20 samples.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "pages"
REFERENCE = ROOT / "benchmarks" / "reference_app.py"
SERVE = Path("imgsim serve")  # how run.sh starts the dashboard (a marker, not a file)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
EXCEPTION = '[data-testid="stException"]'
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
PAGES = {"search": ("/", "Search"), "explore": ("/explore", "Explore"), "label": ("/label", "Label"),
         "duplicates": ("/duplicates", "Duplicates"), "train": ("/train", "Train")}
BEFORE = "@compared"  # the suffix of a page served from --compare-tree
PROFILED = Path("imgsim serve under cProfile")  # benchmarks/profile_server.py (a marker, not a file)
TICK = os.sysconf("SC_CLK_TCK")
WAIT_MS = 180_000
WARM_MS = 1_800_000  # the first view of a page may do the work later views find cached (main's Duplicates: a scan)
VIEWPORT = {"width": 1400, "height": 1200}

# What "all drawn" waits for after the run ends: no element still waiting for its code (Streamlit loads each kind of
# element's JavaScript when a page first shows one, drawing a skeleton meanwhile), every <img> loaded, every Plotly
# and Vega-Lite chart drawn.
DRAWN_JS = """() => !document.querySelector('[data-testid="stSkeleton"]')
  && Array.from(document.images).every(i => i.complete)
  && Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]')).every(c => c.querySelector('.main-svg'))
  && Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]')).every(c => c.querySelector('canvas, svg'))"""
# At least n images in the results container, all loaded.
RESULTS_JS = """n => { const imgs = document.querySelectorAll('.st-key-results [data-testid="stImage"] img');
  return imgs.length >= n && Array.from(imgs).every(i => i.complete && i.naturalWidth > 0); }"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- setup -------------------------------------------------------------------------------------------------------

def demo_model(count: int, image_size: int, epochs: int) -> tuple[Path, Path]:
    """A demo collection, a quick model on it and its scan for copies, built once under benchmarks/out/pages/ and reused."""
    from imgsim.storage import store

    folder = OUT / f"demo-{count}-{image_size}px-{epochs}ep"
    photos, models = folder / "photos", folder / "models"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.log", "ab") as out:
        if not (models.exists() and store.current_id(models)):
            if not any(photos.glob("**/*.jpg")):
                log(f"building a demo collection of {count} images in {photos}")
                subprocess.run([sys.executable, "-m", "imgsim", "demo", "--out", str(photos), "-n", str(count)],
                               cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)
            log(f"training a quick model ({image_size} px, {epochs} epoch) in {models}")
            subprocess.run([sys.executable, "-m", "imgsim", "train", "--images", str(photos), "--model-dir", str(models),
                            "--epochs", str(epochs), "--image-size", str(image_size)],
                           cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)
        scanned(models, out)
    return models, photos


def scanned(models: Path, out) -> None:
    """The version's scan for copies, kept as the background job keeps it after training (the Duplicates page shows it)."""
    from imgsim.duplicates.results import result_path
    from imgsim.storage import store

    if not result_path(models, store.current_id(models)).exists():
        log(f"scanning {models} for copies (the background job does it after training)")
        subprocess.run([sys.executable, "-m", "imgsim", "duplicates", "--model-dir", str(models)],
                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out, check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`streamlit run SCRIPT` on a free loopback port, headless, no file watcher; its log in benchmarks/out/pages/."""

    def __init__(self, name: str, script: Path, env: dict, tree: Path = ROOT):
        """`script` is a Streamlit script, or SERVE (imgsim as run.sh starts it: `imgsim serve`, app.py plus the warm-up);
        `tree` the checkout it runs from (another one: --compare-tree)."""
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = OUT / f"{name}-{self.port}.log"
        OUT.mkdir(parents=True, exist_ok=True)
        self.profile_out = OUT / f"{name}-{self.port}.pstats"
        if script == SERVE:
            command = [sys.executable, "-m", "imgsim", "serve", "--port", str(self.port), "--",
                       "--server.fileWatcherType=none"]
        elif script == PROFILED:
            from imgsim.serve import streamlit_flags

            command = [sys.executable, str(ROOT / "benchmarks" / "profile_server.py"), str(self.profile_out),
                       *streamlit_flags("127.0.0.1", self.port, env), "--server.headless=true",
                       "--server.fileWatcherType=none"]
        else:
            command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless=true",
                       f"--server.port={self.port}", "--server.address=127.0.0.1", "--server.fileWatcherType=none",
                       "--browser.gatherUsageStats=false"]
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 180) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            try:
                if opener.open(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)

    def cpu(self) -> float:
        """CPU seconds (user + system) of the server's process tree, all their threads, dead ones included.

        A tree: `imgsim serve` is a launcher whose child process is the Streamlit server.
        """
        import psutil

        root = psutil.Process(self.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    async def quiet(self, window: float = 0.3, timeout: float = 8.0) -> float:
        """Wait until the server uses at most one clock tick in `window` seconds; return its CPU seconds then."""
        last, deadline = self.cpu(), time.monotonic() + timeout
        while True:
            await asyncio.sleep(window)
            now = self.cpu()
            if now - last <= 1.01 / TICK or time.monotonic() > deadline:
                return now
            last = now

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Target:
    """One thing to open: a server, a path on it, the element that says the page is drawn, and results to expect."""

    def __init__(self, label: str, server: Server, path: str, ready: str, results: int):
        self.label, self.server, self.path, self.ready, self.results = label, server, path, ready, results

    def ready_locator(self, page):
        if self.ready.startswith("heading:"):
            return page.get_by_role("heading", name=self.ready.split(":", 1)[1], exact=True)
        return page.locator(self.ready).first


def imgsim_target(server: Server, name: str, suffix: str = "") -> Target:
    path, title = PAGES[name]
    return Target(name + suffix, server, path, f"heading:{title}", 8)


def reference_target(server: Server) -> Target:
    return Target("reference", server, "/", '[data-testid="stFileUploader"]', 9)


FLOOR_CHARTS = ("plotly", "vega")  # the reference page with a chart of each library Streamlit draws with


def chart_reference_target(server: Server, chart: str) -> Target:
    """The reference page with a three-point chart (Plotly, or Vega-Lite as st.line_chart draws): the floor for a
    page that draws any chart of that library."""
    return Target(f"ref+{chart}", server, f"/?chart={chart}", '[data-testid="stFileUploader"]', 9)


# --- measurements -------------------------------------------------------------------------------------------------

async def check(page, label: str) -> None:
    if await page.locator(EXCEPTION).count():
        raise RuntimeError(f"{label}: {await page.locator(EXCEPTION).first.inner_text()}")


def count_sent(page, sent: dict) -> None:
    """Add what the server sends this tab to `sent`: WebSocket frames' bytes, media files' count and bytes, static files' bytes."""
    def frame(payload) -> None:
        sent["ws"] += len(payload)

    def response(reply) -> None:
        path = urllib.parse.urlsplit(reply.url).path
        if path.startswith("/media/"):  # not /static/media/: the fonts
            sent["media"] += 1
            sent["media_bytes"] += int(reply.headers.get("content-length") or 0)
        elif path.startswith("/static/"):  # the front end's code (each kind of element its own chunk) and fonts
            sent["static_bytes"] += int(reply.headers.get("content-length") or 0)

    page.on("websocket", lambda ws: ws.on("framereceived", frame))
    page.on("response", response)


# --warm-browser: every view a new tab of one browser context, as a person opens pages in new tabs of the browser
# they use (its cache and compiled front-end code kept between tabs); by default each view gets a new context,
# as a first visit does (nothing cached).
SHARED: dict = {}


class Tab:
    """A new tab, in a new context unless --warm-browser shares one; close() closes what was opened for it."""

    def __init__(self, context, page, own: bool):
        self.context, self.page, self.own = context, page, own

    async def close(self) -> None:
        await (self.context.close() if self.own else self.page.close())


async def new_tab(browser) -> Tab:
    shared = SHARED.get("context")
    if shared is not None:
        return Tab(shared, await shared.new_page(), False)
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        return Tab(context, await context.new_page(), True)
    except BaseException:
        await context.close()
        raise


async def open_page(browser, target: Target, sent: dict | None = None, timeout_ms: int = WAIT_MS):
    """A new tab on the target (`new_tab`); returns (tab, page, seconds until drawn and the run ended)."""
    tab = await new_tab(browser)
    try:
        page = tab.page
        if sent is not None:
            count_sent(page, sent)
        start = time.perf_counter()
        await page.goto(target.server.url + target.path, wait_until="commit")
        await target.ready_locator(page).wait_for(timeout=timeout_ms)
        await page.wait_for_selector(IDLE, timeout=timeout_ms)
        return tab, page, time.perf_counter() - start
    except BaseException:
        await tab.close()
        raise


async def upload(page, target: Target, query: Path) -> float:
    start = time.perf_counter()
    await page.set_input_files(UPLOAD_INPUT, str(query))
    await page.wait_for_function(RESULTS_JS, arg=target.results, timeout=WAIT_MS, polling=20)
    await page.wait_for_selector(IDLE, timeout=WAIT_MS)
    return time.perf_counter() - start


async def page_view(browser, target: Target, timeout_ms: int = WAIT_MS) -> dict:
    """One page view in a new tab (`new_tab`): time to the main element, time until everything is drawn, server CPU."""
    before = await target.server.quiet()
    sent = {"ws": 0, "media": 0, "media_bytes": 0, "static_bytes": 0}
    tab, page, main = await open_page(browser, target, sent, timeout_ms)
    try:
        start = time.perf_counter()
        await page.wait_for_function(DRAWN_JS, timeout=timeout_ms, polling=20)
        full = main + time.perf_counter() - start
        await check(page, target.label)
        cpu = await target.server.quiet() - before
    finally:
        await tab.close()
    return {"main": main, "full": full, "cpu": cpu, **sent}


async def search_view(browser, target: Target, query: Path) -> dict:
    """A settled page in a new tab, then one upload: seconds and server CPU from the upload to the results."""
    tab, page, _ = await open_page(browser, target)
    try:
        before = await target.server.quiet()
        seconds = await upload(page, target, query)
        await check(page, target.label)
        cpu = await target.server.quiet() - before
    finally:
        await tab.close()
    return {"upload": seconds, "upload_cpu": cpu}


async def first_search(browser, make_server, path: str, ready: str, results: int, query: Path) -> dict:
    """A fresh server: seconds to healthy, to the uploader, and from an immediate upload to the results."""
    start = time.perf_counter()
    server = make_server()
    try:
        await asyncio.to_thread(server.wait_ready)
        healthy = time.perf_counter() - start
        target = Target(server.name, server, path, ready, results)
        context = await browser.new_context(viewport=VIEWPORT)
        try:
            page = await context.new_page()
            opened = time.perf_counter()
            await page.goto(server.url + path, wait_until="commit")
            await page.wait_for_selector(UPLOAD_INPUT, state="attached", timeout=WAIT_MS)
            uploader = time.perf_counter() - opened
            seconds = await upload(page, target, query)
            await check(page, target.label)
            total = time.perf_counter() - opened
        finally:
            await context.close()
        return {"healthy": healthy, "uploader": uploader, "upload": seconds, "total": total, "cpu": server.cpu()}
    finally:
        server.stop()


async def burst(browser, target: Target, query: Path, users: int) -> list[dict]:
    """`users` new tabs at once (`new_tab`: new contexts unless --warm-browser), each opening the page and searching."""
    async def one() -> dict:
        tab = None
        try:
            tab, page, opened = await open_page(browser, target)
            searched = await upload(page, target, query)
            await check(page, target.label)
            return {"page": opened, "search": searched, "error": None}
        except Exception as exc:  # noqa: BLE001 - counted, not raised: errors under load are a result
            return {"page": None, "search": None, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
        finally:
            if tab is not None:
                await tab.close()

    return list(await asyncio.gather(*(one() for _ in range(users))))


# --- figures ------------------------------------------------------------------------------------------------------

def p50(values) -> float:
    return statistics.median(values) if values else math.nan


def p95(values) -> float:
    """Nearest rank: the smallest value with at least 95% of the samples at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def verdict(value: float, limit: float) -> str:
    return "n/a" if math.isnan(value) else ("met" if value <= limit else "MISSED")


def report(views: dict, searches: dict, firsts: dict, bursts: dict, users: int) -> None:
    ref = views["reference"]
    ref_main, ref_full, ref_cpu = ([v[key] for v in ref] for key in ("main", "full", "cpu"))
    print("\nPage view, new browser context (seconds; CPU = server CPU seconds per view; sent per view: WebSocket kB,"
          " media files and their kB, static files' kB: the front end's code, which a new context fetches again)")
    print(f"{'page':<19} {'n':>3} {'main p50':>9} {'x ref':>6} {'all drawn p50':>13} {'p95':>7} {'x ref p50':>9}"
          f" {'x ref p95':>9} {'CPU p50':>8} {'CPU p95':>8} {'CPU x ref':>9} {'WS kB':>7} {'media':>5} {'kB':>6}"
          f" {'static kB':>9}"
          "  targets: all drawn <= 1.5x, CPU <= 2x")
    for label, rows in views.items():
        main, full, cpu = ([v[key] for v in rows] for key in ("main", "full", "cpu"))
        f_ratio, c_ratio = ratio(p50(full), p50(ref_full)), ratio(p50(cpu), p50(ref_cpu))
        verdicts = "" if label == "reference" or label.startswith("ref+") else f"  drawn {verdict(f_ratio, 1.5)}, CPU {verdict(c_ratio, 2)}"
        print(f"{label:<19} {len(rows):>3} {p50(main):>9.3f} {ratio(p50(main), p50(ref_main)):>6.2f}"
              f" {p50(full):>13.3f} {p95(full):>7.3f} {f_ratio:>9.2f} {ratio(p95(full), p95(ref_full)):>9.2f}"
              f" {p50(cpu):>8.3f} {p95(cpu):>8.3f} {c_ratio:>9.2f} {p50([v['ws'] for v in rows]) / 1e3:>7.1f}"
              f" {p50([v['media'] for v in rows]):>5.0f} {p50([v['media_bytes'] for v in rows]) / 1e3:>6.1f}"
              f" {p50([v['static_bytes'] for v in rows]) / 1e3:>9.0f}"
              f"{verdicts}")

    print("\nUpload -> results drawn (imgsim Search: 8 results; reference: the nine images), settled page, new context")
    print(f"{'app':<10} {'n':>3} {'p50':>7} {'p95':>7} {'x ref p50':>9} {'CPU p50':>8} {'CPU x ref':>9}  target <= 2x")
    ref_up = [v["upload"] for v in searches["reference"]]
    ref_up_cpu = [v["upload_cpu"] for v in searches["reference"]]
    for label, rows in searches.items():
        up, cpu = [v["upload"] for v in rows], [v["upload_cpu"] for v in rows]
        r = ratio(p50(up), p50(ref_up))
        print(f"{label:<10} {len(rows):>3} {p50(up):>7.3f} {p95(up):>7.3f} {r:>9.2f} {p50(cpu):>8.3f}"
              f" {ratio(p50(cpu), p50(ref_up_cpu)):>9.2f}" + ("" if label == "reference" else f"  {verdict(r, 2)}"))

    print("\nFirst search after server start (fresh server; upload as soon as the uploader exists)")
    print(f"{'app':<10} {'healthy':>8} {'->uploader':>11} {'upload->results':>16} {'nav->results':>13}"
          f" {'server CPU':>11}  target: upload->results <= 2 s")
    for label, rows in firsts.items():
        for row in rows:
            print(f"{label:<10} {row['healthy']:>8.2f} {row['uploader']:>11.2f} {row['upload']:>16.2f}"
                  f" {row['total']:>13.2f} {row['cpu']:>11.2f}"
                  + ("" if label == "reference" else f"  {verdict(row['upload'], 2.0)}"))

    print(f"\nBurst: {users} new contexts at once, each opening the page and searching")
    print(f"{'app':<10} {'n':>3} {'errors':>6} {'page p50':>9} {'page p95':>9} {'x ref p95':>9} {'search p95':>10}"
          f" {'x ref p95':>9}  target: page p95 <= 3x, no errors")
    ref_ok = [r for r in bursts["reference"] if not r["error"]]
    for label, rows in bursts.items():
        ok = [r for r in rows if not r["error"]]
        errors = len(rows) - len(ok)
        page, search = [r["page"] for r in ok], [r["search"] for r in ok]
        r = ratio(p95(page), p95([x["page"] for x in ref_ok]))
        print(f"{label:<10} {len(rows):>3} {errors:>6} {p50(page):>9.3f} {p95(page):>9.3f} {r:>9.2f}"
              f" {p95(search):>10.3f} {ratio(p95(search), p95([x['search'] for x in ref_ok])):>9.2f}"
              + ("" if label == "reference" else f"  {verdict(r, 3) if not errors else 'MISSED'}"))
        for message, count in Counter(r["error"] for r in rows if r["error"]).most_common(3):
            print(f"    {count} x {message}")


# --- profile ------------------------------------------------------------------------------------------------------

# Frames every stack passes through on its way to real work: left out of the cumulative list.
PLUMBING = ("threading.py", "tornado/", "asyncio/", "concurrent/futures", "anyio/", "click/", "<frozen runpy>",
            "streamlit/__main__.py", "streamlit/web/cli.py", "uvicorn/", "selectors.py", "profile_server.py")


def short_path(path: str) -> str:
    """A source path as 'package/module.py' (site-packages and the standard library cut off), or the project's own."""
    for marker in ("site-packages/", "/lib/python3.", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            return path.split("/", 1)[1] if marker == "/lib/python3." else path
    return path


def package_of(path: str) -> str:
    if is_project(path):
        return path.split("/")[0] if "/" in path else path
    top = path.split("/")[0]
    return top.removesuffix(".py") if top else "?"


def is_project(path: str) -> bool:
    return path.startswith(("pages/", "imgsim/")) or path == "app.py"


def print_profile(label: str, path: Path, views: int, cpu: float, top: int) -> None:
    """Shares of the profiled CPU time, turned into seconds per view by scaling them to the CPU /proc measured.

    cProfile's own bookkeeping slows every call; the shares hold up, /proc gives the seconds.
    """
    import pstats

    entries = pstats.Stats(str(path)).stats  # (file, line, function) -> (primitive calls, calls, self, cumulative, callers)
    total = sum(e[2] for e in entries.values())
    if not total:
        print(f"\n== {label}: no samples")
        return
    per_view = cpu / views / total  # seconds per view that one profiled second stands for
    print(f"\n== {label}: {cpu / views:.3f} s of server CPU per view (/proc, {views} views); {total:.2f} s profiled")
    by_package, functions = Counter(), []
    for (file, line, function), (_, calls, own, cumulative, _) in entries.items():
        where = short_path(file)
        by_package[package_of(where)] += own
        functions.append((function, where, line, calls, own, cumulative))
    print("  self time by package (s/view): " + ", ".join(
        f"{name} {seconds * per_view:.3f}" for name, seconds in by_package.most_common(8)))
    print("  self time by function (s/view, calls/view):")
    for function, where, line, calls, own, _ in sorted(functions, key=lambda f: -f[4])[:top]:
        print(f"    {own * per_view:7.3f}  {calls / views:8.0f}  {function} ({where}:{line})")
    print("  cumulative (s/view; thread, event-loop and CLI frames left out):")
    shown = [f for f in sorted(functions, key=lambda f: -f[5])
             if not any(p in f[1] for p in PLUMBING) and f[5] < 0.98 * total]
    for function, where, line, calls, _, cumulative in shown[:top]:
        print(f"    {cumulative * per_view:7.3f}  {100 * cumulative / total:4.1f}%  {function} ({where}:{line})")
    print("  imgsim's own functions (cumulative, s/view):")
    for function, where, line, calls, _, cumulative in [f for f in shown if is_project(f[1])][:top]:
        print(f"    {cumulative * per_view:7.3f}  {100 * cumulative / total:4.1f}%  {function} ({where}:{line})")


async def profiled(server: Server, views: int, job) -> tuple[float, Path]:
    """Run `job` `views` times inside one profiling window of the server; its CPU seconds and the window's pstats."""
    server.profile_out.unlink(missing_ok=True)
    before = await server.quiet()
    server.process.send_signal(signal.SIGUSR1)  # the window starts: what came before is dropped
    for _ in range(views):
        await job()
    cpu = await server.quiet() - before
    server.process.send_signal(signal.SIGUSR2)  # the window ends: its stats are written
    deadline = time.monotonic() + 60
    while not server.profile_out.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the profiled server wrote no {server.profile_out} (see {server.log_path})")
        await asyncio.sleep(0.1)
    return cpu, server.profile_out


async def profile(browser, server: Server, ref_server: Server, query: Path, views: int, top: int,
                  pages: list[str]) -> None:
    """Each page (and one upload) viewed `views` times on a server whose every thread runs under cProfile."""
    print(f"Profile: benchmarks/profile_server.py (cProfile in every thread of the server, per-thread CPU clock),\n"
          f"{views} new-context views of each page ('+ upload': the page, then one search). Each row is a share of\n"
          "the profiled time times the CPU /proc measured. Native work outside Python calls (TensorFlow ops inside\n"
          "one call, image decoding) is counted in the call that made it. The reference is not profiled: its CPU\n"
          "per view is for comparison.")
    cpu = 0.0
    for _ in range(views):
        cpu += (await page_view(browser, reference_target(ref_server)))["cpu"]
    print(f"\n== reference: {cpu / views:.3f} s of server CPU per view (/proc, {views} views, not profiled)")
    jobs = [(name, lambda n=name: page_view(browser, imgsim_target(server, n))) for name in pages]
    jobs.append(("search + upload", lambda: search_view(browser, imgsim_target(server, "search"), query)))
    for name, job in jobs:
        cpu, stats = await profiled(server, views, job)
        print_profile(name, stats, views, cpu, top)


# --- main ---------------------------------------------------------------------------------------------------------

def server_env(model_dir: Path, images: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("IMGSIM_PASSWORD", "IMGSIM_READONLY")}
    return {**env, "IMGSIM_MODEL_DIR": str(model_dir), "IMGSIM_IMAGES": str(images)}


async def run(args, model_dir: Path, images: Path, query: Path) -> None:
    from playwright.async_api import async_playwright

    env = server_env(model_dir, images)
    servers = [Server("imgsim", PROFILED if args.profile else SERVE, env), Server("reference", REFERENCE, dict(os.environ))]
    if args.compare_tree:  # the same pages served from another checkout, measured in the same rounds
        tree = args.compare_tree.resolve()
        servers.append(Server("compared", SERVE, {**env, "PYTHONPATH": str(tree)}, tree))
    pages = args.pages or list(PAGES)
    try:
        for server in servers:
            await asyncio.to_thread(server.wait_ready)
        app, ref_server, *compared = servers
        reference = reference_target(ref_server)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            if args.warm_browser:
                SHARED["context"] = await browser.new_context(viewport=VIEWPORT)
                log("warm browser: every view a new tab of one context (its cache kept)")
            try:
                log("warming up: every page once, one search on each app (not counted)")
                for name in pages:
                    await page_view(browser, imgsim_target(app, name), timeout_ms=WARM_MS)
                    for other in compared:
                        await page_view(browser, imgsim_target(other, name, BEFORE), timeout_ms=WARM_MS)
                await search_view(browser, imgsim_target(app, "search"), query)
                await page_view(browser, reference)
                await search_view(browser, reference, query)
                for chart in FLOOR_CHARTS if args.plotly_floor else ():
                    await page_view(browser, chart_reference_target(ref_server, chart))  # the reference imports it
                if args.profile:
                    await profile(browser, app, ref_server, query, args.profile_views, args.top, pages)
                    return

                views = {"reference": [], **{f"ref+{c}": [] for c in (FLOOR_CHARTS if args.plotly_floor else ())},
                         **{name + suffix: [] for name in pages for suffix in ["", *(BEFORE for _ in compared)]}}
                searches = {"reference": [], "search": []}
                for round_ in range(args.rounds):
                    log(f"page views, round {round_ + 1}/{args.rounds}")
                    for name in pages:  # the reference just before each page, so both see the same load
                        views["reference"].append(await page_view(browser, reference))
                        views[name].append(await page_view(browser, imgsim_target(app, name)))
                        for other in compared:  # the reference again just before it
                            views["reference"].append(await page_view(browser, reference))
                            views[name + BEFORE].append(await page_view(browser, imgsim_target(other, name, BEFORE)))
                    for chart in FLOOR_CHARTS if args.plotly_floor else ():
                        views["reference"].append(await page_view(browser, reference))
                        views[f"ref+{chart}"].append(await page_view(browser, chart_reference_target(ref_server, chart)))
                    order = [reference, imgsim_target(app, "search")]
                    for target in order if round_ % 2 == 0 else order[::-1]:
                        searches[target.label].append(await search_view(browser, target, query))

                bursts = {"reference": [], "search": []}
                for round_ in range(args.burst_rounds):
                    log(f"burst of {args.users}, round {round_ + 1}/{args.burst_rounds}")
                    order = [imgsim_target(app, "search"), reference]
                    for target in order if round_ % 2 == 0 else order[::-1]:
                        await target.server.quiet()
                        bursts[target.label] += await burst(browser, target, query, args.users)

                firsts = {"reference": [], "search": []}
                for round_ in range(args.first_rounds):
                    log(f"first search on a fresh server, round {round_ + 1}/{args.first_rounds}")
                    await ref_server.quiet()
                    await app.quiet()
                    firsts["reference"].append(await first_search(
                        browser, lambda: Server("reference-fresh", REFERENCE, dict(os.environ)), "/",
                        reference.ready, 9, query))
                    firsts["search"].append(await first_search(
                        browser, lambda: Server("imgsim-fresh", SERVE, env), "/", "heading:Search", 8,
                        query))
            finally:
                await browser.close()
        report(views, searches, firsts, bursts, args.users)
    finally:
        for server in servers:
            server.stop()


def describe(model_dir: Path, images: Path, query: Path) -> None:
    import streamlit

    from imgsim.storage import store

    version = store.load_version(model_dir)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    print(f"bench_pages {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {commit.strip()}"
          f"{' + uncommitted changes' if dirty else ''}; Streamlit {streamlit.__version__}; Python "
          f"{platform.python_version()}; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"model {model_dir} (version {version.id}, {len(version)} images, "
          f"{version.manifest.get('settings', {}).get('image_size', '?')} px); query {query.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, help="an existing model folder (default: build a demo one)")
    parser.add_argument("--images", type=Path, help="its images folder (with --model-dir)")
    parser.add_argument("--count", type=int, default=200, help="demo collection size (default 200)")
    parser.add_argument("--image-size", type=int, default=64, help="demo model input size (default 64)")
    parser.add_argument("--epochs", type=int, default=1, help="demo model epochs (default 1)")
    parser.add_argument("--query", type=Path, help="image to search with (default: one from the collection)")
    parser.add_argument("--rounds", type=int, default=5, help="page views of each page and searches (default 5)")
    parser.add_argument("--users", type=int, default=10, help="contexts opened at once in a burst (default 10)")
    parser.add_argument("--burst-rounds", type=int, default=2, help="bursts on each app (default 2)")
    parser.add_argument("--first-rounds", type=int, default=1, help="fresh-server first searches (default 1)")
    parser.add_argument("--compare-tree", type=Path,
                        help="another checkout (e.g. main before a change): its pages measured too, in the same rounds")
    parser.add_argument("--no-plotly-floor", dest="plotly_floor", action="store_false",
                        help="skip the reference page with a Plotly chart and with a Vega-Lite one (measured by "
                             "default, each as a row of its own)")
    parser.add_argument("--pages", nargs="+", choices=list(PAGES), help="the pages to open (default: all)")
    parser.add_argument("--warm-browser", action="store_true",
                        help="each view a new tab of one browser context (cache kept), not a new context")
    parser.add_argument("--profile", action="store_true", help="only profile imgsim's server per page (cProfile)")
    parser.add_argument("--profile-views", type=int, default=5, help="views of each page profiled (default 5)")
    parser.add_argument("--top", type=int, default=10, help="rows of each profile list (default 10)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"no Chromium at {CHROMIUM} (apt-get install chromium); Playwright cannot download one here")
    if args.model_dir:
        if not args.images:
            from imgsim.storage import store

            args.images = store.images_root(args.model_dir)
        model_dir, images = args.model_dir.resolve(), args.images.resolve()
        OUT.mkdir(parents=True, exist_ok=True)
        with open(OUT / "scan.log", "ab") as out:
            scanned(model_dir, out)
    else:
        model_dir, images = demo_model(args.count, args.image_size, args.epochs)
    from imgsim.inputs.collection import scan_folder

    files = scan_folder(images)  # sorted by path
    query = args.query or Path(files[len(files) // 3].path)
    describe(model_dir, images, query)
    if args.compare_tree:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.compare_tree, capture_output=True,
                                text=True, check=False).stdout.strip()
        print(f"compared with {args.compare_tree} (commit {commit}): its pages are the rows marked {BEFORE}")
    started = time.monotonic()
    asyncio.run(run(args, model_dir, images, query))
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
