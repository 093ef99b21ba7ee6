"""The dashboard's server (as `imgsim serve` starts it) with every thread under cProfile, for bench_pages.py --profile.

    python benchmarks/profile_server.py OUT_FILE STREAMLIT_FLAGS...

Each thread gets its own profiler on a per-thread CPU clock (time.thread_time), so a thread waiting for a
core on a loaded machine costs nothing here, unlike a wall-clock sampler. SIGUSR1 starts a window (what
was profiled before is dropped); SIGUSR2 ends it and writes the window's merged pstats to OUT_FILE (to a
new name, then renamed): the main thread (the server's event loop: WebSocket messages, media and static
files) and every thread that ended inside the window (Streamlit runs each script run in a thread of its
own). Long-lived worker threads that are still alive when the window ends are not in it.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_lock = threading.Lock()
_ended: list[cProfile.Profile] = []
_main = cProfile.Profile(time.thread_time)
_run = threading.Thread.run


def _profiled_run(self) -> None:
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    try:
        _run(self)
    finally:
        profile.disable()
        with _lock:
            _ended.append(profile)


def _start(*_) -> None:
    global _main
    _main.disable()
    with _lock:
        _ended.clear()
    _main = cProfile.Profile(time.thread_time)
    _main.enable()


def _dump(out: Path) -> None:
    _main.disable()
    with _lock:
        ended = list(_ended)
        _ended.clear()
    stats = pstats.Stats(_main)
    for profile in ended:
        stats.add(profile)
    partial = out.with_name(out.name + ".part")
    stats.dump_stats(partial)
    os.replace(partial, out)
    _start()


def main() -> int:
    out, flags = Path(sys.argv[1]), sys.argv[2:]
    threading.Thread.run = _profiled_run
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, lambda *_: _dump(out))
    _main.enable()
    from pages.__main__ import main as serve

    return serve(flags)


if __name__ == "__main__":
    sys.exit(main())
