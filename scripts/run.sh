#!/usr/bin/env bash
# The main job: the dashboard on the demo collection (or $IMGSIM_IMAGES), training a first model
# with a progress bar if none exists yet. Extra arguments go to `streamlit run`.
set -euo pipefail
source "$(dirname "$0")/setup.sh" requirements.txt
if [ -z "${IMGSIM_IMAGES:-}" ]; then
  python -m imgsim demo            # builds data/demo once; a no-op when it is complete
fi
if ! python -m imgsim versions | grep -q '^\*'; then
  python -m imgsim train           # first model: a few minutes on 2 CPU cores
fi
exec streamlit run app.py "$@"
