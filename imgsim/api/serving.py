"""`imgsim api`: the HTTP API in uvicorn, with N worker processes over one model folder.

Workers share nothing but the model folder (and a Milvus server, with that engine): each builds
the app (imgsim.api.app.create_app), loads the active version's model, and picks up a new version
by itself. This module imports the web framework only once the server starts, so a missing
`imgsim[api]` is one line.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile

from imgsim.core.access import allowed_hosts, is_loopback
from imgsim.core.errors import ImgsimError

PACKAGES = ("fastapi", "uvicorn", "prometheus_client", "multipart")  # the api extra (multipart: python-multipart)
DEFAULT_PORT = 8000


def check_installed() -> None:
    """One line naming what is missing when the api extra is not installed."""
    missing = []
    for name in PACKAGES:  # found, not imported: prometheus_client must first be imported after its folder is set
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise ImgsimError(f"the HTTP API needs the api extra ({', '.join(missing)} missing): "
                          "pip install 'imgsim[api]'")


def exposure_warning(host: str) -> str | None:
    """What to tell the person starting a server that other machines can reach; None on loopback."""
    from imgsim.api.security import TOKEN_ENV

    if is_loopback(host):
        return None
    names = ", ".join(allowed_hosts(host))
    token = (f"{TOKEN_ENV} is set: every request needs it" if os.environ.get(TOKEN_ENV)
             else f"without {TOKEN_ENV} it is read-only (searches and reads, no changes)")
    return (f"the API listens on {host} and answers only requests addressed to {names} (add names with "
            f"IMGSIM_ALLOWED_HOSTS); {token}")


def run(host: str = "127.0.0.1", port: int = DEFAULT_PORT, model_dir=None, workers: int = 1) -> int:
    """Serve until stopped (Ctrl-C, SIGTERM); returns the exit code."""
    from imgsim.api.security import Policy

    check_installed()
    if not 1 <= workers <= 64:
        raise ImgsimError(f"--workers must be between 1 and 64, got {workers}")
    Policy.from_env(host)  # a token too short to be one: refused before anything starts
    warning = exposure_warning(host)
    if warning:
        print(f"imgsim: {warning}", file=sys.stderr)
    os.environ["IMGSIM_API_BIND"] = host
    if model_dir is not None:
        os.environ["IMGSIM_MODEL_DIR"] = str(model_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # One compute thread a worker's model by default: N workers on N cores, not N x N threads.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    metrics_dir = tempfile.mkdtemp(prefix="imgsim-api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before any worker imports prometheus_client
    try:
        import uvicorn

        from imgsim.api.protocol import NoDelayHTTP

        logging.basicConfig(level=logging.INFO, format="imgsim api: %(message)s")
        uvicorn.run("imgsim.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    access_log=False, log_level="warning", server_header=False, http=NoDelayHTTP)
        return 0
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
