#!/usr/bin/env bash
# The main job: the dashboard on the demo collection (or $IMGSIM_IMAGES), open at once. With no
# model yet, the first one trains in the background (building the demo collection first when
# needed); every page shows its progress and the terminal prints it. Extra arguments go to
# `streamlit run` (e.g. --server.port 8600).
set -euo pipefail
source "$(dirname "$0")/setup.sh" requirements.txt
if ! python -m imgsim versions | grep -q '^\*'; then
  demo=$([ -z "${IMGSIM_IMAGES:-}" ] && echo --demo-first || true)   # the demo build is a no-op once complete
  python -m imgsim train --background $demo || true    # a run already in progress is fine: follow it
  python -m imgsim status --follow --every 10 &        # progress lines here while the dashboard runs
fi
exec python "$(dirname "$0")/serve.py" "$@"   # streamlit run app.py, loading the model at once
