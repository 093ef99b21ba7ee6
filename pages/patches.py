"""Every change the dashboard makes to a library's internals, in one place, each behind a guard.

Only the dashboard's process needs them, so only it applies them: pages/common.py at import, and the
server launcher (`serialise_ast_parse`, before its model-loading thread starts). A patch whose target
has moved in the installed library is skipped with a warning (the dashboard still works, with the
cost the patch avoided), and tests/test_patches.py fails on that library version, so it is noticed.

- Streamlit's old pages-folder mode (PagesManager.uses_pages_directory), which a first visitor
  opening a page URL turns on: `pages_folder_mode_off`.
- Streamlit's Keras session clearing after every script run (script_runner._clean_problem_modules):
  `keep_keras_session`.
- Streamlit's `/_stcore/metrics` (StatsManager), which answers any Host name and would show a
  stranger the open sessions, upload sizes and cache use: `metrics_off`.
- `ast.parse` (the standard library's, so also `ast.literal_eval`), made to hold a process-wide lock:
  `serialise_ast_parse`. Here rather than in the core: the core parses in one thread, and only the
  dashboard runs Streamlit's page parsing beside imgsim's loading threads.
"""

from __future__ import annotations

import ast
import logging
import threading

log = logging.getLogger("imgsim.patches")


def skipped(target: str) -> bool:
    import streamlit

    log.warning("imgsim: %s is not in Streamlit %s; not patched (see pages/patches.py)", target, streamlit.__version__)
    return False


def pages_folder_mode_off() -> bool:
    """Turn Streamlit's pages-folder mode off; returns whether it was on.

    Streamlit starts in that mode when a new server's first visitor opens a page URL (/explore): it runs
    pages/explore.py alone and lists every file in pages/ (common.py included) as a page. st.navigation
    turns it off for good; until then the caller turns it off here and reruns once, which runs app.py
    and lands on the page that was asked for.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if "uses_pages_directory" not in vars(PagesManager):
        return skipped("PagesManager.uses_pages_directory")
    was_on = bool(PagesManager.uses_pages_directory)
    PagesManager.uses_pages_directory = False
    return was_on


def keep_keras_session() -> bool:
    """Stop Streamlit from calling keras.backend.clear_session() after every script run; whether it was stopped.

    Streamlit does that whenever Keras is imported (for apps that build a model per run). imgsim loads
    each model once and shares it between sessions (cache_resource): clearing cost 0.06-0.4 s of server
    CPU per page view (benchmarks/bench_pages.py --profile) and resets Keras' global state under searches
    running in other threads. imgsim draws no matplotlib figures, the function's other concern.
    """
    from streamlit.runtime.scriptrunner import script_runner

    if not callable(getattr(script_runner, "_clean_problem_modules", None)):
        return skipped("streamlit.runtime.scriptrunner.script_runner._clean_problem_modules")
    script_runner._clean_problem_modules = no_cleanup
    return True


def no_cleanup() -> None:
    """What Streamlit's per-run module cleanup does in imgsim's dashboard: nothing."""


def metrics_off() -> bool:
    """Make Streamlit's `/_stcore/metrics` answer an empty set; returns whether it was patched.

    The endpoint has no setting to turn it off and no Host check (the allowed-hosts list guards the
    WebSocket only), so a visitor, or a page rebound to this machine's address, could read how many
    sessions are open, the sizes of their uploads and the caches' use. The statistics manager the
    endpoint reads is patched to hold none; nothing else in Streamlit reads it. `imgsim serve` patches
    it before the server starts; a plain `streamlit run app.py` at its first page view.
    """
    from streamlit.runtime.stats import StatsManager

    if not all(callable(getattr(StatsManager, name, None)) for name in ("get_stats", "registered_families")):
        return skipped("streamlit.runtime.stats.StatsManager.get_stats")
    if StatsManager.get_stats is not no_stats:
        STATS_METHODS.update(get_stats=StatsManager.get_stats, registered_families=StatsManager.registered_families)
    StatsManager.get_stats = no_stats
    StatsManager.registered_families = no_families
    return True


STATS_METHODS: dict = {}  # Streamlit's own, as they were before `metrics_off`


def no_stats(self, family_names=None) -> dict:
    """What /_stcore/metrics reports in imgsim's dashboard: nothing."""
    return {}


def no_families(self) -> list:
    return []


def serialise_ast_parse() -> None:
    """Make `ast.parse` (and so `ast.literal_eval`) hold one process-wide lock; calling it again does nothing.

    CPython 3.11 keeps the AST converter's recursion depth in state that every thread shares: two
    `ast.parse` calls whose conversions interleave (a garbage collection inside one can hand the GIL
    to the other) fail with "SystemError: AST constructor recursion depth mismatch". The dashboard
    has two such parsers: Streamlit compiles each page with `ast.parse` in its script thread, while
    the model loads in a background thread, and NumPy reads every .npy header with
    `ast.literal_eval`. CI failed on it twice.
    """
    if getattr(ast.parse, "serialised", False):
        return
    original, lock = ast.parse, threading.RLock()

    def parse(*args, **kwargs):
        with lock:
            return original(*args, **kwargs)

    parse.serialised = True
    parse.__doc__ = original.__doc__
    parse.__wrapped__ = original
    ast.parse = parse
