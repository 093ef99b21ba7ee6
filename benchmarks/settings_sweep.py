"""Does the label-free measure choose between settings as precision@k does? One collection, several settings.

Each setting trains a model with benchmarks/quality.py (in its own process, so that module
overrides never leak into the next) and reports precision@k on the labels and the label-free
twin-retrieval measure the run computed without them. The table ends with the Spearman
correlation, across settings, of each label-free value with precision@k: a measure a user can
trust to pick settings ranks them as the labels do.

    .venv/bin/python benchmarks/settings_sweep.py --only photos \\
        --try "default" --try "batch 16: --setting batch_size=16" --try "300 steps: --set fit.MIN_STEPS=300 --set fit.MAX_STEPS=300"

A setting that changes the views themselves (model.VIEWS) changes what the measure asks, so its
label-free values are not comparable with the others'; the table marks such rows.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWIN = ("twin_recall@1", "twin_recall@10", "twin_mrr")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", required=True, help="the evaluation collection (a folder of --eval)")
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "eval")
    parser.add_argument("--try", dest="tries", action="append", required=True,
                        help="LABEL[: quality.py options], e.g. 'batch 16: --setting batch_size=16'")
    args = parser.parse_args(argv)
    results = []
    for spec in args.tries:
        label, _, options = spec.partition(":")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "figures.jsonl"
            command = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--eval", str(args.eval),
                       "--only", args.only, "--json", str(out), *shlex.split(options)]
            print(f"-- {label.strip()}: {' '.join(shlex.split(options)) or 'defaults'}", flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            record = json.loads(out.read_text().splitlines()[-1])
        record["label"] = label.strip()
        record["views_changed"] = any("VIEWS" in o or "view_" in o for o in record["overrides"])
        results.append(record)
        print(row(record), flush=True)
    print(f"\n{args.only}: {len(results)} settings")
    for record in results:
        print(row(record))
    comparable = [r for r in results if not r["views_changed"]]
    if len(comparable) >= 3:
        from scipy.stats import spearmanr

        k = comparable[0]["k"]
        precision = [r["rows"][0][f"precision@{k}"] for r in comparable]
        parts = [f"{name} {spearmanr([r['best_' + name] for r in comparable], precision).statistic:+.2f}"
                 for name in TWIN]
        print(f"across {len(comparable)} settings (views unchanged), Spearman with precision@{k}: " + ", ".join(parts))
    return 0


def row(record: dict) -> str:
    k = record["k"]
    ours = record["rows"][0]
    twin = "  ".join(f"{name} {record.get('best_' + name) or float('nan'):.3f}" for name in TWIN)
    mark = "  (views changed: measure not comparable)" if record.get("views_changed") else ""
    return (f"{record['label']:28s} precision@{k} {ours[f'precision@{k}']:.3f}  mAP {ours['mAP']:.3f}  {twin}  "
            f"{record['steps']} steps, fit {record.get('fit_seconds') or float('nan'):.0f} s{mark}")


if __name__ == "__main__":
    sys.exit(main())
