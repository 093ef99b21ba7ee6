#!/usr/bin/env bash
# Every check, from a fresh machine: Python packages into .venv, Debian's Chromium for the browser
# tests, ruff (lint and import order), then pytest. Extra arguments go to pytest.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the browser test ..."
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
source "$(dirname "$0")/setup.sh" requirements-dev.txt
ruff check --quiet . || { echo "ruff found the problems above ('ruff check --fix .' mends import order)" >&2; exit 1; }
lint-imports --no-cache --no-logo || { echo "an import breaks the layers above (pyproject.toml, [tool.importlinter])" >&2; exit 1; }
# Python keeps its compiled files (__pycache__, ignored by git) even where the environment turned that off
# (PYTHONDONTWRITEBYTECODE): otherwise every pytest worker rewrote the asserts of 187 modules again, and every
# process a test starts compiled imgsim again (a fresh clone's collection: 17-20 s a worker, 12 s with them).
unset PYTHONDONTWRITEBYTECODE
# pytest-xdist: a worker a core (IMGSIM_TEST_WORKERS=0 runs in one process); the real servers' tests share
# one worker (tests/conftest.py groups them), which starts the servers while the others run the rest.
python -m pytest -n "${IMGSIM_TEST_WORKERS:-auto}" --dist loadgroup "$@"
# The model under JAX as well (issue 20), in a second pass (one backend a process): the model, the views,
# a fit, and a tiny model trained by imgsim.runs.training then searched; the longer fits (early stopping, 15
# epochs on one batch) are left to the first pass (JAX on a CPU trains ~5x slower than TensorFlow).
# The time budget's and the per-epoch callbacks' fits are left to the first pass as well: what they check is
# Keras callbacks around the step, the same on every backend (about 55 CPU s under JAX); so is the schedule of
# smaller early views (which epochs train which size: the fit's own bookkeeping, 38-40 s under JAX), whose steps
# at a smaller size and with local crops the JAX pass still runs (test_model's smaller-views and multi-crop tests).
# Only for the whole suite: arguments select tests of the first pass alone. On every core too (its fits are
# independent; the tiny JAX model is trained once for both workers). Run beside the first pass at a lower
# priority it was no faster (both passes 11 min 36 s and 12 min 58 s, against 12 min 21 s to 12 min 50 s one
# after the other on the same host): the first pass leaves the cores little idle time to take.
# Its workers share one folder of JAX's compiled programs (each process's own otherwise: a test's data folder),
# so a program one worker compiled, the other reads (the pass took 144 s against 153 s without, one run each;
# most of the rest is XLA compiling what no process compiled before: a fresh clone has no programs kept).
if [ $# -eq 0 ]; then
  programs=$(mktemp -d)
  trap 'rm -rf "$programs"' EXIT
  JAX_COMPILATION_CACHE_DIR=$programs KERAS_BACKEND=jax python -m pytest -n "${IMGSIM_TEST_WORKERS:-auto}" --dist loadgroup tests/test_model.py tests/test_fit.py tests/test_search.py \
    tests/test_training.py::test_a_version_records_its_backend_and_every_training_knob \
    --deselect tests/test_fit.py::test_early_stopping_watches_only_the_second_half_of_the_budget \
    --deselect tests/test_model.py::test_a_training_step_lowers_the_loss_on_a_fixed_batch \
    --deselect tests/test_fit.py::test_a_time_budget_trains_its_floor_when_time_is_short_and_its_cap_when_long \
    --deselect tests/test_fit.py::test_a_callback_given_to_the_fit_sees_one_run_whatever_the_fit_calls_per_epoch \
    --deselect tests/test_fit.py::test_early_epochs_train_smaller_views_and_early_stopping_waits_for_the_full_size
fi
