"""One guard for a process that parses Python in more than one thread (the dashboard).

CPython 3.11 keeps the AST converter's recursion depth in state that every thread shares: two
`ast.parse` calls whose conversions interleave (a garbage collection inside one can hand the GIL
to the other) fail with "SystemError: AST constructor recursion depth mismatch". The dashboard
has two such parsers: Streamlit compiles each page with `ast.parse` in its script thread, while
the model loads in a background thread, and NumPy reads every .npy header with
`ast.literal_eval`. CI failed on it twice.
"""

from __future__ import annotations

import ast
import threading


def serialise_ast_parse() -> None:
    """Make `ast.parse` (and so `ast.literal_eval`) hold one process-wide lock; calling it again does nothing."""
    if getattr(ast.parse, "serialised", False):
        return
    original, lock = ast.parse, threading.RLock()

    def parse(*args, **kwargs):
        with lock:
            return original(*args, **kwargs)

    parse.serialised = True
    parse.__doc__ = original.__doc__
    ast.parse = parse
