"""`imgsim serve`: the dashboard in a Streamlit server, started the same way from a checkout or an install.

The dashboard is `app.py` + `pages/`: beside this package in a checkout, installed as
`imgsim_dashboard` otherwise. Its Streamlit options live once, in its `.streamlit/config.toml`,
and are passed on the server's command line, so they hold whichever folder the server is started
from and whichever config file Streamlit would find there: it listens on 127.0.0.1 unless told
otherwise, answers only the Host names `access.allowed_hosts` lists, and never shows a visitor a
traceback. This module does not import Streamlit; `pages/__main__.py` runs the server in its own
process, loading the model from its first second.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from imgsim.core.access import allowed_hosts, is_loopback
from imgsim.core.errors import ImgsimError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # a checkout's root, or site-packages


def dashboard_dir() -> Path:
    """The folder holding the dashboard's app.py, pages/ and .streamlit/config.toml."""
    for folder in (PACKAGE_PARENT / "imgsim_dashboard", PACKAGE_PARENT):
        if (folder / "app.py").is_file() and (folder / "pages" / "__main__.py").is_file():
            return folder
    raise ImgsimError(f"the dashboard is not installed beside imgsim in {PACKAGE_PARENT}: reinstall imgsim")


def _flag_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def streamlit_flags(host: str = "127.0.0.1", port: int | None = None, environ=None) -> list[str]:
    """The dashboard's config.toml as `streamlit run` flags, with the address, port and allowed Host names."""
    config = tomllib.loads((dashboard_dir() / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    config.setdefault("server", {})
    config["server"]["address"] = host
    config["server"]["allowedHosts"] = allowed_hosts(host, environ)
    if port is not None:
        config["server"]["port"] = port
    flags = []
    for section, options in config.items():
        for key, value in options.items():
            for item in value if isinstance(value, list) else [value]:  # a list option: the flag once per item
                flags.append(f"--{section}.{key}={_flag_value(item)}")
    return flags


def exposure_warning(host: str, environ=None) -> str | None:
    """What to tell the person starting a server that other machines can reach; None on loopback."""
    if is_loopback(host):
        return None
    names = ", ".join(allowed_hosts(host, environ))
    return (f"the dashboard listens on {host} and answers only requests addressed to {names}; add the name or "
            "address visitors use with IMGSIM_ALLOWED_HOSTS, and set IMGSIM_PASSWORD or IMGSIM_READONLY=1 "
            "(without either, a shared dashboard refuses every change)")


def check_address(host: str, port: int | None) -> None:
    """Refuse, in one line, an address the server could not listen on: a bad port, an unknown name, a port in use.

    With no port, Streamlit takes 8501 or the next free one itself, so only the name is checked.
    """
    if port is not None and not 1 <= port <= 65535:
        raise ImgsimError(f"the port must be between 1 and 65535, got {port}")
    where = f"{host}:{port}" if port else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
            probe.bind(address)
    except (OSError, UnicodeError) as exc:
        raise ImgsimError(f"cannot listen on {where}: {getattr(exc, 'strerror', None) or exc}") from None


def launch(host: str = "127.0.0.1", port: int | None = None, extra_args=(), environ=None) -> subprocess.Popen:
    """Start the dashboard's server; IMGSIM_* settings reach it through `environ` (default: this process's)."""
    check_address(host, port)
    folder = dashboard_dir()
    environ = dict(os.environ if environ is None else environ)
    # The server imports this very imgsim and the dashboard's own `pages` package, whatever folder it starts in.
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's native INFO lines off the terminal
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), str(PACKAGE_PARENT), environ.get("PYTHONPATH")]))
    command = [sys.executable, str(folder / "pages" / "__main__.py"), *streamlit_flags(host, port, environ), *extra_args]
    try:
        return subprocess.Popen(command, env=environ, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ImgsimError(f"could not start the dashboard: {exc}") from None
