"""The dashboard's server: `streamlit run app.py ARGS`, with the active model loading from its first second.

Streamlit runs a page's script only when a browser opens it, so a model loaded by the pages
arrives with the first visitor, and the first search waits for TensorFlow's import. This starts
the same server as the `streamlit` command (its own entry point, in this process) and loads the
current version into `imgsim.search.shared` in a background thread beside it.

    python scripts/serve.py [streamlit run options, e.g. --server.port 8600]
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

    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *sys.argv[1:]]
    return streamlit()


if __name__ == "__main__":
    sys.exit(main())
