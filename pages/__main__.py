"""The dashboard's server: `streamlit run app.py FLAGS`, with the active model loading from its first second.

`imgsim serve` starts this file with the flags it builds from `.streamlit/config.toml`
(`imgsim.serve.streamlit_flags`). Streamlit runs a page only when a browser opens it, so a model
loaded by the pages would arrive with the first visitor, and the first search would wait for the
Keras backend's import. This starts the same server as the `streamlit` command, in this process,
and loads the current version into `imgsim.search.shared` in a background thread beside it.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent  # app.py's folder; `pages` is imported from there
if str(DASHBOARD) not in sys.path[:1]:
    sys.path.insert(0, str(DASHBOARD))


def main(args: list[str]) -> int:
    from imgsim.core.config import Settings
    from imgsim.search import warm_up
    from pages.patches import metrics_off, serialise_ast_parse

    serialise_ast_parse()  # before the warm-up thread reads .npy headers beside Streamlit's page parsing
    metrics_off()  # before the server answers anyone

    try:
        model_dir = Settings.from_env().model_dir
    except ValueError:  # a bad IMGSIM_* value: the pages say what is wrong, in words
        model_dir = None
    if model_dir is not None:
        threading.Thread(target=warm_up, args=(model_dir,), daemon=True, name="imgsim-warm-up").start()
    from streamlit.web.cli import main as streamlit

    sys.argv = ["streamlit", "run", str(DASHBOARD / "app.py"), *args]
    return streamlit()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
