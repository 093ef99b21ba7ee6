# Sourced by run.sh and test.sh: make .venv with what imgsim needs (imgsim itself installed
# editable from this checkout), then put it first on PATH. Reinstalls only when a requirements
# file, constraints.txt or pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REQUIREMENTS=${1:-requirements.txt}
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setting up .venv (first run: TensorFlow and friends, a few minutes) ..."
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.imgsim-installed-$(cat requirements*.txt constraints.txt pyproject.toml | sha256sum | cut -c1-16)-$(basename "$REQUIREMENTS" .txt)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet --progress-bar off -r "$REQUIREMENTS"
  # UMAP's numba code compiled once into its on-disk cache, as pip compiles the packages' Python: otherwise the
  # first processes to draw a latent map (the first training's, the first tests') each compile it (~45 CPU s).
  echo "compiling UMAP's numba code once (about a minute) ..."
  .venv/bin/python -c "from imgsim.learning.projection import warm_up; warm_up(100)" \
    || echo "UMAP's code was not compiled now (above): the first map will compile it" >&2
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
