"""The dashboard's server: `streamlit run app.py ARGS`, with the active model loading from its first second.

Streamlit runs a page's script only when a browser opens it, so a model loaded by the pages
arrives with the first visitor, and the first search waits for TensorFlow's import. This starts
the same server as the `streamlit` command (its own entry point, in this process) and loads the
current version into `imgsim.search.shared` in a background thread beside it.

    python scripts/serve.py [streamlit run options, e.g. --server.port 8600]

It also passes the options that keep the dashboard local on its command line, so that they hold
whatever folder it is started from and whichever config.toml is found: `server.allowedHosts`
(the names it answers, `imgsim.access.allowed_hosts`: this machine's, plus IMGSIM_ALLOWED_HOSTS
when shared) and `client.showErrorDetails = none` (visitors never see a traceback). Options
given here come after them: another --server.allowedHosts adds a name, another
--client.showErrorDetails replaces the value.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from imgsim.config import Settings
    from imgsim.search import warm_up
    from imgsim.threads import serialise_ast_parse

    serialise_ast_parse()  # before the warm-up thread reads .npy headers beside Streamlit's page parsing

    try:
        model_dir = Settings.from_env().model_dir
    except ValueError:  # a bad IMGSIM_* value: the pages say what is wrong, in words
        model_dir = None
    if model_dir is not None:
        threading.Thread(target=warm_up, args=(model_dir,), daemon=True, name="imgsim-warm-up").start()
    from streamlit.web.cli import main as streamlit

    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *server_options(sys.argv[1:]), *sys.argv[1:]]
    return streamlit()


def server_options(args: list[str]) -> list[str]:
    """The allowed Host names and the error details, as `streamlit run` flags; says which names when exposed."""
    import os

    from imgsim.access import allowed_hosts, is_loopback

    address = os.environ.get("STREAMLIT_SERVER_ADDRESS")
    for i, arg in enumerate(args):  # `--server.address X` or `--server.address=X`; the last one counts, as in click
        if arg == "--server.address" and i + 1 < len(args):
            address = args[i + 1]
        elif arg.startswith("--server.address="):
            address = arg.split("=", 1)[1]
    names = allowed_hosts(address)
    if address is not None and not is_loopback(address):
        print(f"imgsim: the dashboard answers only requests addressed to {', '.join(names)}; add the name or address "
              "visitors use with IMGSIM_ALLOWED_HOSTS (README, 'Sharing the dashboard safely')", file=sys.stderr)
    return [*(f"--server.allowedHosts={name}" for name in names), "--client.showErrorDetails=none"]


if __name__ == "__main__":
    sys.exit(main())
