#!/usr/bin/env bash
# The main job: the dashboard on the demo collection (or $IMGSIM_IMAGES), open at once. With no
# model yet, the first one trains in the background (building the demo collection first when
# needed); every page shows its progress and the terminal prints it. A checkout keeps its data
# beside the code (models/ and demo/, IMGSIM_HOME=the checkout) unless IMGSIM_HOME says otherwise.
# Extra arguments go to `imgsim serve` (e.g. --port 8600; --images DIR; -- then streamlit options).
set -euo pipefail
source "$(dirname "$0")/setup.sh" requirements.txt
export IMGSIM_HOME=${IMGSIM_HOME:-$PWD}
exec imgsim serve "$@"
