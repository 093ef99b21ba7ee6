"""What a compressed kNN-graph file bomb costs `labels status` before it is refused and rebuilt (issue 28, item 5).

    .venv/bin/python benchmarks/bench_graph_bomb.py           # a table on stdout (~1 minute on 2 cores)

The kept graph (annotations/graphs/<version>-k10.npz) is outside the version's checksums: whoever
can write the model folder can replace it. A 1.9 MB .npz whose rows member is deflated zeros
inflates to about 2 GB when numpy loads it. imgsim.labelling.graph.read_graph checks the file's
size, its members' compression and their .npy headers before reading anything. Each case runs in
a fresh process; measured: wall and CPU seconds of the read, the peak of memory allocated during
it (tracemalloc, which sees numpy's arrays and zlib's buffers; not for the rebuild, which it would
slow by minutes), and the outcome. "old loader" is np.load as imgsim 0.3.0 did it (the control).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BOMB_MB = 1.9
SIZES = (600, 100_000)


def write_bomb(path: Path, rows: int) -> None:
    """An .npz of `rows` x 10 int32 zeros, deflated (about 1,000 to 1), and a right-shaped sims member."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, shape in (("rows.npy", (rows, 10)), ("sims.npy", (rows, 10))):
            with archive.open(name, "w", force_zip64=True) as out:
                np.lib.format.write_array_header_1_0(out, {"descr": "<i4" if name == "rows.npy" else "<f4",
                                                           "fortran_order": False, "shape": shape})
                left, zeros = rows * 10 * 4, bytes(1 << 22)
                while left > 0:
                    out.write(zeros[:min(left, len(zeros))])
                    left -= len(zeros)
            if name == "rows.npy":
                rows = 10  # the sims member stays small: the rows alone make the bomb


def child(case: str, images: int, folder: str) -> dict:
    """Run in a fresh process: build a version of `images` vectors, plant the bomb, time the read."""
    from imgsim import labelling
    from imgsim.labelling import graph as knn
    from imgsim.storage.annotations import graph_path
    from tests.helpers import vector_version

    version, _ = vector_version(Path(folder) / "models", images, 20, dim=32)
    path = graph_path(version.model_dir, version.id, labelling.K)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bomb(path, int(BOMB_MB * 1e6 * 1030 / 40))
    size = path.stat().st_size
    traced = case != "neighbour_graph"  # tracing every allocation of a rebuild would take it minutes longer
    if traced:
        tracemalloc.start()  # numpy's and zlib's buffers are traced too
    wall, cpu = time.perf_counter(), time.process_time()
    if case == "old loader":
        try:
            with np.load(path, allow_pickle=False) as data:
                data["rows"].astype(np.int64)
            outcome = "loaded whole, then its shape checked"
        except (MemoryError, ValueError) as exc:
            outcome = f"failed: {exc}"
    elif case == "read_graph":
        outcome = "refused" if knn.read_graph(path, len(version), labelling.K) is None else "accepted"
    else:
        graph = labelling.neighbour_graph(version)
        outcome = f"rebuilt ({len(graph)} rows); file now {path.stat().st_size / 1e6:.2f} MB"
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    tracemalloc.stop()
    return {"file_mb": size / 1e6, "wall_s": wall, "cpu_s": cpu, "peak_mb": None if peak is None else peak / 1e6,
            "outcome": outcome}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(child(sys.argv[2], int(sys.argv[3]), folder)))
        return
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    print(f"# benchmarks/bench_graph_bomb.py, {date.today()}, {os.cpu_count()} CPU cores, {platform.machine()}, "
          f"Python {platform.python_version()}, numpy {np.__version__}, commit {commit}, load {os.getloadavg()[0]:.1f}")
    print(f"{'images':>8} {'case':24} {'file':>8} {'wall s':>7} {'CPU s':>7} {'peak MB':>9}  outcome")
    for images in SIZES:
        for case in ("read_graph", "neighbour_graph", "old loader"):
            if case == "old loader" and images != SIZES[0]:
                continue  # the same 2 GB either way
            out = subprocess.run([sys.executable, __file__, "--child", case, str(images)], capture_output=True,
                                 text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            r = json.loads(out.stdout.strip().splitlines()[-1])
            label = {"read_graph": "refusal (read_graph)", "neighbour_graph": "refusal + rebuild"}.get(case, case)
            print(f"{images:8,d} {label:24} {r['file_mb']:6.2f}MB {r['wall_s']:7.3f} {r['cpu_s']:7.3f} "
                  f"{'-' if r['peak_mb'] is None else format(r['peak_mb'], '9.1f'):>9}  {r['outcome']}", flush=True)
    print(f"# load average after the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
