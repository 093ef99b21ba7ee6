#!/usr/bin/env bash
# The GPU check (issue 20): imgsim trained on a GPU under JAX with mixed precision, beside the same
# machine's CPU, on a machine that has Python 3.12, JAX (CUDA), PyTorch, scikit-learn, scikit-image,
# pillow and numba but no network and no TensorFlow.
#
#   benchmarks/gpu_check.sh --prepare        here, with network: the wheels imgsim needs beyond
#                                            those (keras, umap-learn, faiss-cpu, ...) into
#                                            benchmarks/out/gpu-wheels (git-ignored, < 64 MiB)
#   benchmarks/gpu_check.sh [--small] [--cpu] [--torch]
#                                            there: installs the wheels offline into a venv that sees
#                                            the system's packages, builds the demo (600), a 5,000-image
#                                            collection and the photos eval set, then prints images/s of
#                                            training and encoding, the first model's time and
#                                            precision@k on the photos set, on the GPU and on the CPU.
#   --small   120 and 300 images at 32 px, 2 epochs, fewer timed steps: a rehearsal of every step on a CPU
#   --cpu     no GPU run (this machine has none); the CPU rows alone
#   --torch   also PyTorch on the GPU, on the demo
# Planned to finish in under 8 minutes on an H200 with 16 cores (the CPU side trains the demo only;
# the 5,000-image collection on the CPU would take longer than the whole budget).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/out/gpu-wheels
# Pinned to what the tests ran with (.venv); --no-deps: the rest is on the GPU machine already.
PACKAGES=(keras==3.15.1 absl-py==2.5.1 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0
          namex==0.1.0 h5py==3.14.0 optree==0.20.0 umap-learn==0.5.12 pynndescent==0.7.0 faiss-cpu==1.15.1
          filelock==4.3.1 tqdm==4.70.1 urllib3==2.8.0 platformdirs==4.14.9 imagehash==4.3.2 pywavelets==1.9.0)

if [ "${1:-}" = "--prepare" ]; then
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$WHEELS" "${PACKAGES[@]}"
  du -sh "$WHEELS"
  exit 0
fi

SMALL=0 CPU_ONLY=0 TORCH=0
for arg in "$@"; do
  case "$arg" in
    --small) SMALL=1 ;; --cpu) CPU_ONLY=1 ;; --torch) TORCH=1 ;;
    *) echo "gpu_check.sh: unknown option $arg (--prepare, --small, --cpu, --torch)" >&2; exit 2 ;;
  esac
done
[ -d "$WHEELS" ] || { echo "gpu_check.sh: no $WHEELS; run benchmarks/gpu_check.sh --prepare first (with network)" >&2; exit 2; }

WORK=${IMGSIM_GPU_CHECK_DIR:-/tmp/imgsim-gpu-check}
OUT=${OUT:-$WORK}
mkdir -p "$WORK" "$OUT"
START=$(date +%s)
if [ -n "${VIRTUAL_ENV:-}" ] && python -c "import keras, umap" 2>/dev/null; then
  PY=python  # a venv that has them already (this checkout's .venv, for a rehearsal)
else
  python3 -m venv --system-site-packages "$WORK/venv"
  "$WORK/venv/bin/pip" install --quiet --no-index --no-deps "$WHEELS"/*.whl
  PY="$WORK/venv/bin/python"
fi
export IMGSIM_HOME="$WORK/home" KERAS_BACKEND=jax
echo "== $(hostname) · $(nproc) cores · $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo 'no nvidia-smi')"
"$PY" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), '· keras', keras.__version__)"

if [ "$SMALL" = 1 ]; then DEMO_N=120 BIG_N=300 STEPS=5 ENC=256 SIZE=(--image-size 32 --epochs 2)
else DEMO_N=600 BIG_N=5000 STEPS=40 ENC=4096 SIZE=(); fi
"$PY" - "$WORK" "$DEMO_N" "$BIG_N" <<'EOF'
import sys, time
from pathlib import Path
from imgsim.inputs.demo import build_demo
work, demo_n, big_n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
build_demo(work / "demo", n=demo_n, seed=0)               # the demo collection (imgsim demo)
build_demo(work / "big", n=big_n, size=256, seed=2)       # the 5,000-image collection
build_demo(work / "photos", n=600, size=256, seed=1)      # the photos eval set (make_eval_sets.py)
print(f"collections built in {time.perf_counter() - start:.0f} s", flush=True)
EOF

bench() {  # device tasks
  "$PY" benchmarks/bench_backends.py --backends "${BACKENDS:-jax}" --device "$1" --tasks "$2" --steps "$STEPS" \
    --encode-images "$ENC" "${SIZE[@]}" --quality-set "$WORK/photos" --out "$WORK" --json "$OUT/gpu-check.jsonl"
}
if [ "$CPU_ONLY" = 0 ]; then
  bench default "speed,train:$WORK/demo,train:$WORK/big"
  [ "$TORCH" = 1 ] && BACKENDS=torch bench default "speed,train:$WORK/demo"
fi
bench cpu "speed,train:$WORK/demo"
"$PY" - "$OUT/gpu-check.jsonl" <<'PYTHON'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("\n== summary (targets: training >= 20x the 2-core build machine's 56.7 images/s = 1,134; 5,000 images "
      "<= 60 s; encoding >= 5,000 images/s)")
print(f"{'backend':8} {'device':8} {'train img/s':>11} {'encode img/s':>12} {'images':>7} {'first model s':>13} "
      f"{'total s':>8} {'precision@k (photos)':>20}")
for speed in (r for r in rows if r.get("task") == "speed"):
    print(f"{speed['backend']:8} {speed['device']:8} {speed['train_images_per_s']:>11} {speed['encode_images_per_s']:>12}")
    for run in (r for r in rows if str(r.get("task", "")).startswith("train:") and r["backend"] == speed["backend"]
                and r["device"] == speed["device"]):
        p = next((f"{v} (k={k.split('@')[1]})" for k, v in run.items() if k.startswith("precision@")), "-")
        print(f"{'':8} {'':8} {'':>11} {'':>12} {run['images']:>7} {run['first_model_s']:>13} {run['total_s']:>8} {p:>20}")
PYTHON
echo "== done in $(( $(date +%s) - START )) s; results: $OUT/gpu-check.jsonl"
