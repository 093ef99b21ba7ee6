"""pages/patches.py: each patch's target is where the installed libraries have it, and a moved one is skipped."""

import ast
import gc
import inspect
import logging
import re
import time

import pytest
from streamlit.runtime import pages_manager
from streamlit.runtime.scriptrunner import script_runner

from pages import patches
from tests.helpers import in_threads


def parse_in_two_threads(source: str, rounds: int, until_first_error: bool = False) -> tuple[list[str], int]:
    """Two threads parsing at once, with every garbage collection handing the GIL over mid-conversion: (the errors
    seen, the parses made); both threads stop at the first error when `until_first_error`."""
    errors, parses = [], []

    def hand_over(phase, info):
        time.sleep(0)

    def work():
        for _ in range(rounds):
            if until_first_error and errors:
                return
            parses.append(1)
            try:
                ast.parse(source)
            except SystemError as exc:  # CPython 3.11: "AST constructor recursion depth mismatch"
                errors.append(str(exc))

    threshold = gc.get_threshold()
    gc.callbacks.append(hand_over)
    gc.set_threshold(20)
    try:
        in_threads(work, 2)
    finally:
        gc.callbacks.remove(hand_over)
        gc.set_threshold(*threshold)
    return errors, len(parses)


def test_parsing_in_two_threads_at_once_is_safe_once_serialised(monkeypatch):
    """The control run shows the race with the unguarded parser; the guarded one never loses it."""
    patches.serialise_ast_parse()
    guarded = ast.parse
    patches.serialise_ast_parse()
    assert ast.parse is guarded and guarded.serialised  # twice is once: no lock around a lock
    # 80 lines: store.py's 441 took 21 s; 20 lines showed the race in 9 runs of 10 under coverage's tracer, 80 in 10
    source = "def f(x, *, y=None):\n    return [x, {'a': (1, y)}, f'{x!r}']\n" * 40
    with monkeypatch.context() as unguarded:
        unguarded.setattr(ast, "parse", guarded.__wrapped__)
        control, _ = parse_in_two_threads(source, 150, until_first_error=True)  # one error shows the race
    if not control:
        pytest.skip("this Python's parser shows no race between threads: nothing for the lock to prevent")
    errors, parses = parse_in_two_threads(source, 150)  # every parse the control could make, none failing
    assert ast.parse is guarded and errors == [] and parses == 300
    assert ast.literal_eval("{'descr': '<f4', 'shape': (3,)}") == {"descr": "<f4", "shape": (3,)}  # numpy's .npy header


def test_every_patched_streamlit_attribute_is_where_the_patches_expect_it():
    """Fails on a Streamlit version that moved or renamed one: the patch would then be skipped (or do nothing)."""
    assert "uses_pages_directory" in vars(pages_manager.PagesManager)
    assert "PagesManager.uses_pages_directory" in inspect.getsource(pages_manager)  # read where it decides the mode
    assert callable(getattr(script_runner, "_clean_problem_modules", None))
    # called by name from the module's globals after each run, so that replacing it there takes effect
    assert re.search(r"\b_clean_problem_modules\b", inspect.getsource(script_runner.ScriptRunner))
    assert "clear_session" in inspect.getsource(script_runner._clean_problem_modules) \
        or script_runner._clean_problem_modules is patches.no_cleanup


def test_a_patch_whose_target_is_gone_is_skipped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(script_runner, "_clean_problem_modules", script_runner._clean_problem_modules)  # restored after
    monkeypatch.delattr(script_runner, "_clean_problem_modules")
    monkeypatch.delattr(pages_manager.PagesManager, "uses_pages_directory")
    with caplog.at_level(logging.WARNING, logger="imgsim.patches"):
        assert patches.keep_keras_session() is False
        assert patches.pages_folder_mode_off() is False
    assert not hasattr(script_runner, "_clean_problem_modules")
    assert "_clean_problem_modules is not in Streamlit" in caplog.text and "uses_pages_directory" in caplog.text


def test_the_patches_apply(monkeypatch):
    monkeypatch.setattr(script_runner, "_clean_problem_modules", script_runner._clean_problem_modules)
    monkeypatch.setattr(pages_manager.PagesManager, "uses_pages_directory", True)
    assert patches.keep_keras_session() and script_runner._clean_problem_modules is patches.no_cleanup
    assert patches.pages_folder_mode_off() is True and pages_manager.PagesManager.uses_pages_directory is False


def test_metrics_off_empties_what_the_metrics_endpoint_reads(monkeypatch):
    from streamlit.runtime.stats import CacheStat, StatsManager
    from streamlit.web.server.starlette import starlette_routes

    class Sessions:  # a provider as Streamlit's session manager registers one
        stats_families = ("active_sessions",)

        def get_stats(self, family_names=None):
            return {"active_sessions": [CacheStat("sessions", "open", 3)]}

    for name in ("get_stats", "registered_families"):  # Streamlit's own (another test may have patched them already)
        monkeypatch.setattr(StatsManager, name, patches.STATS_METHODS.get(name, getattr(StatsManager, name)))
    manager = StatsManager()
    manager.register_provider(Sessions())
    assert manager.registered_families() == ["active_sessions"] and manager.get_stats()  # the control
    assert patches.metrics_off() is True
    assert manager.registered_families() == [] and manager.get_stats() == {} and manager.get_stats(["active_sessions"]) == {}
    # the endpoint reads exactly these two, from the runtime's manager
    source = inspect.getsource(starlette_routes.create_metrics_routes)
    assert "stats_mgr.registered_families()" in source and "stats_mgr.get_stats" in source
