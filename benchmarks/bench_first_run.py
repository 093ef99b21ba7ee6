"""The newcomer's first run, timed: `scripts/run.sh` in a checkout with no model, until the final model lands.

    git clone -q . /tmp/fresh && .venv/bin/python benchmarks/bench_first_run.py --root /tmp/fresh

Starts `bash scripts/run.sh` in ROOT (which installs what it needs, builds the demo collection and
trains a first model in the background while the dashboard opens), then polls the dashboard's
health endpoint and ROOT/models/versions. Prints when the dashboard first answered, when each
version (the early `preview` one, then the final one) appeared, and each version's precision@10
on the demo collection (its photographs are the labels) beside the colour histogram and PCA of
pixels on the same images. Everything is stopped once the final model is in.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgsim.runs import evaluation, jobs
from imgsim.storage import store  # noqa: E402


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a checkout with no trained model (a fresh clone)")
    parser.add_argument("--port", type=int, default=8611)
    parser.add_argument("--timeout", type=float, default=1200, help="give up after this many seconds")
    args = parser.parse_args(argv)
    model_dir = args.root / "models"
    if store.list_versions(model_dir):
        print(f"{model_dir} already holds a model: use a fresh clone", file=sys.stderr)
        return 1
    log = open(args.root / "first-run.log", "w")
    start = time.monotonic()
    server = subprocess.Popen(["bash", "scripts/run.sh", "--port", str(args.port)],
                              cwd=args.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    answered, seen = None, {}
    try:
        while time.monotonic() - start < args.timeout and server.poll() is None:
            now = time.monotonic() - start
            if answered is None and healthy(args.port):
                answered = now
                print(f"dashboard answering HTTP after {now:.1f} s", flush=True)
            for manifest in store.list_versions(model_dir):
                if manifest["id"] not in seen:
                    seen[manifest["id"]] = (now, manifest.get("kind"))
                    print(f"version {manifest['id']} ({manifest.get('kind')}) after {now:.1f} s", flush=True)
            if any(kind == "train" for _, kind in seen.values()):
                break
            time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        jobs.stop_training(model_dir)  # the training job runs in a session of its own
        log.close()
    if not any(kind == "train" for _, kind in seen.values()):
        print(f"no final model within {args.timeout:.0f} s (log: {log.name})", file=sys.stderr)
        return 1
    for version_id, (seconds, kind) in sorted(seen.items(), key=lambda item: item[1][0]):
        version = store.load_version(model_dir, version_id)
        labels = [Path(p).parent.name for p in version.paths]
        score = evaluation.precision_at_k(version.vectors, labels, 10)
        print(f"{kind:8s} at {seconds:6.1f} s: precision@10 {score:.3f} on {len(labels)} demo images "
              f"(weights of epoch {len(version.history.get('loss', []))})")
    rows = evaluation.evaluate(evaluation.baselines(version.paths), labels, k=10)
    print("baselines on the same images: " + ", ".join(f"{row['name']} {row['precision@10']:.3f}" for row in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
