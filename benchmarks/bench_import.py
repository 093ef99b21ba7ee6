"""Importing labels from a large CSV: time, CPU and peak memory of `imgsim labels import` on 200,000 rows.

    .venv/bin/python benchmarks/bench_import.py                 # 200,000 rows, a table on stdout
    .venv/bin/python benchmarks/bench_import.py --rows 50000

Builds once, under benchmarks/out/import/, a version of ROWS images from synthetic vectors
(tests/helpers.vector_version: no model, no image files) and a CSV labelling every one of them
(path,label,source, as `labels export --csv` writes it), then imports it in a fresh process and
measures the wall and CPU seconds and the resident memory above the process's baseline (VmHWM
after a reset, minus VmRSS before), the labels file written included. Issue 28's probe: 200,000
rows took 14 s and 150 MB (then `imgsim.cli.import_labels`, which read the file whole).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "import"


def build(rows: int) -> tuple[Path, Path]:
    """The model folder and the CSV for `rows` images (made once)."""
    from imgsim.core.text import write_csv
    from tests.helpers import vector_version

    models, sheet = OUT / f"models-{rows}", OUT / f"labels-{rows}.csv"
    if not sheet.exists():
        shutil.rmtree(models, ignore_errors=True)
        version, truth = vector_version(models, rows, 8, folder="/collection")
        names = ["cats", "dogs", "=1+1", "'90s", "boats", "bricks", "leaves", "clouds"]
        write_csv(sheet.with_suffix(".part"), ["path", "label", "source"],
                  ((path, names[t], "person") for path, t in zip(version.paths, truth.tolist())))
        sheet.with_suffix(".part").rename(sheet)
    return models, sheet


def status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def child(models: str, sheet: str, code: str) -> dict:
    """In a fresh process: import the sheet with the imgsim of checkout `code` (this one, or an older one)."""
    sys.path.insert(0, code)
    from imgsim.storage import store
    from imgsim.storage.annotations import LabelStore

    shutil.rmtree(Path(models) / "annotations", ignore_errors=True)
    version = store.load_version(models)
    version.records.row_of_path(version.paths[0])  # the path index, built once per loaded version: not the import's
    try:
        from imgsim.labelling.importing import import_labels

        def run():
            return import_labels(Path(sheet), version, LabelStore(models)).rows
    except ImportError:  # the code before issue 28: the command line's own function, which prints its count
        from imgsim.cli import import_labels

        def run():
            return import_labels(Path(sheet), version, LabelStore(models))
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = status_kb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    labelled = len(LabelStore(models).load())
    return {"seconds": seconds, "cpu": cpu, "peak_mb": (status_kb("VmHWM") - base) / 1024, "labelled": labelled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose imgsim runs the import (default: this one)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    models, sheet = build(args.rows)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, __file__, "--child", str(models), str(sheet), args.code],
                          env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"import {args.rows:,} rows ({sheet.stat().st_size / 2**20:.1f} MB CSV) with {args.code}: "
          f"{result['seconds']:.1f} s, {result['cpu']:.1f} s CPU, peak +{result['peak_mb']:.0f} MB, "
          f"{result['labelled']:,} labelled (load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
