"""`python -m imgsim`: parses arguments, calls the core, prints. Bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import typing
from contextlib import contextmanager
from pathlib import Path

from imgsim.core.config import TRAINING_FIELDS, Settings
from imgsim.core.errors import ImgsimError
from imgsim.core.text import one_line, write_csv
from imgsim.storage.engines import CROSSOVER, ENGINES, check_name, engine_choices, engine_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgsim", description="Find similar images in your own collection.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_model_dir(p):
        p.add_argument("--model-dir", type=Path, help="model folder (default: $IMGSIM_MODEL_DIR, else models/ in the data folder)")
        return p

    def with_engine(p, what):
        p.add_argument("--engine", choices=engine_choices(),
                       help=f"vector engine {what} (default: $IMGSIM_ENGINE or auto: exact below "
                            f"{CROSSOVER:,} images, faiss above); " + "; ".join(
                                f"{e.name}: {e.summary}" for e in ENGINES.values()))

    def with_follow_links(p):
        p.add_argument("--follow-links", action="store_true", default=None,
                       help="follow links to folders and links that leave the images folder (default: list them as skipped)")

    p = with_model_dir(sub.add_parser(
        "serve", help="start the dashboard (training a first model in the background when there is none)",
        description="Start the dashboard on http://HOST:PORT. With no model yet, a first one trains in the background "
                    "(on the demo collection unless --images or $IMGSIM_IMAGES names a folder) and its progress "
                    "prints here. Options after -- go to `streamlit run`."))
    p.add_argument("--images", type=Path, help="folder of images (default: $IMGSIM_IMAGES, else the demo collection)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; README, 'Sharing the dashboard')")
    p.add_argument("--port", type=int, help="port (default 8501)")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    p = with_model_dir(sub.add_parser("api", help="serve the HTTP API for other programs (needs imgsim[api])",
                                      description="Search, label and watch the collection over HTTP; OpenAPI docs "
                                                  "at /docs. Beyond 127.0.0.1 it is read-only unless "
                                                  "IMGSIM_API_TOKEN is set (docs/security.md)."))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1; docs/scale.md)")

    p = sub.add_parser("demo", help="build the demo collection from photographs shipped with scikit-image")
    p.add_argument("--out", type=Path, help="folder to write (default: $IMGSIM_IMAGES, else the demo collection in the data folder)")
    p.add_argument("-n", "--count", type=int, default=600, help="number of images (default 600)")
    p.add_argument("--seed", type=int, default=0)

    def with_ray(p):
        p.add_argument("--ray", metavar="HOST:PORT", help="encode on this Ray cluster (ray start --head prints its "
                       "address; the images must be at the same paths on every worker; needs imgsim[ray])")

    p = with_model_dir(sub.add_parser("train", help="train a new model version on a folder of images"))
    with_ray(p)
    p.add_argument("--images", type=Path, help="folder of images (default: $IMGSIM_IMAGES, else the demo collection in the data folder)")
    with_follow_links(p)
    with_engine(p, "for the new version")
    p.add_argument("--background", action="store_true",
                   help="train in a background process (as the dashboard does) and return at once; see `imgsim status`")
    p.add_argument("--demo-first", action="store_true",
                   help="with --background: build the demo collection in the images folder first")
    add_training_flags(p)

    p = with_model_dir(sub.add_parser("index", help="encode added files and drop removed ones, without retraining"))
    p.add_argument("--images", type=Path, help="folder of images (default: the folder the model was trained on)")
    with_ray(p)
    with_follow_links(p)
    with_engine(p, "to move the collection into, without re-encoding (default: keep the version's)")

    p = with_model_dir(sub.add_parser("query", help="find the images most similar to each SOURCE"))
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image path or http(s) URL")
    p.add_argument("-n", type=int, default=8, help="number of results (default 8)")
    p.add_argument("--scope", choices=("cluster", "all"), default="cluster",
                   help="search the query's predicted group (default) or the whole collection")
    p.add_argument("--json", action="store_true", help="one JSON object per source, one per line")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write the query and its results as a picture grid")
    p.add_argument("--engine", choices=engine_names(),
                   help="search with another engine than the version's (its vectors are moved in memory)")

    p = with_model_dir(sub.add_parser("clusters", help="show the groups; --name names one; --export writes path,group,name"))
    p.add_argument("--name", action="append", metavar="G=NAME", default=[],
                   help="name group G (repeatable; an empty NAME removes the name)")
    p.add_argument("--export", type=Path, metavar="FILE.csv")
    p.add_argument("--silhouette", action="store_true", help="silhouette score for k = 2..10, to help choose k")

    p = sub.add_parser("labels", help="label every image from a few: suggest, set, review, export")
    actions = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")

    def labels_action(name, help):
        return with_model_dir(actions.add_parser(name, help=help))

    q = labels_action("suggest", "the images to label next, best first")
    q.add_argument("-n", type=int, default=10, help="how many (default 10)")
    q.add_argument("--json", action="store_true", help="one JSON object a line: path, suggested, confidence, reason")
    q = labels_action("set", "give images a label (yours: propagation never changes it)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("paths", nargs="+", metavar="PATH")
    q = labels_action("clear", "remove your label from images")
    q.add_argument("paths", nargs="+", metavar="PATH")
    q = labels_action("import", "labels from a CSV of path,label rows (an export's CSV too: its own labels only)")
    q.add_argument("file", type=Path, metavar="FILE.csv")
    q = labels_action("review", "likely mistakes (labels the neighbours disagree with) and outliers, worst first")
    q.add_argument("--json", action="store_true")
    q = labels_action("export", "every image's label: JSON lines, CSV, or one folder per label")
    q.add_argument("--json", action="store_true", help="one JSON object a line: path, label, source, confidence")
    q.add_argument("--csv", type=Path, metavar="FILE", help="the same as CSV")
    q.add_argument("--folders", type=Path, metavar="DIR", help="copy each labelled image to DIR/<label>/")
    q.add_argument("--link", action="store_true", help="with --folders: hard links instead of copies")
    q.add_argument("--force", action="store_true", help="with --folders: write into a folder that is not empty")
    q.add_argument("--min-confidence", type=float, default=0.0, metavar="C",
                   help="leave out propagated labels below C (0..1, default 0: every image)")
    q = labels_action("accept", "make every propagated label at or above a confidence your own (undoable)")
    q.add_argument("--min-confidence", type=float, default=0.9, metavar="C", help="0..1 (default 0.9)")
    labels_action("undo", "revert the last labelling change")
    labels_action("status", "how many images are labelled by you, by propagation, and unsure")

    p = with_model_dir(sub.add_parser("duplicates", help="exact and near copies in the collection (nothing is deleted)"))
    p.add_argument("--threshold", type=float, metavar="T",
                   help="cosine similarity above which two images are near copies (default: the version's measured one)")
    p.add_argument("--json", action="store_true", help="one JSON object per group, one per line")
    p.add_argument("--export", type=Path, metavar="FILE.csv", help="group, path, keep/duplicate, score as CSV")

    p = with_model_dir(sub.add_parser("eval", help="precision@k on a labelled folder (sub-folder = label) against baselines"))
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("-k", type=int, default=10)

    p = with_model_dir(sub.add_parser("status", help="the background training run's progress"))
    p.add_argument("--follow", action="store_true", help="print progress until the run ends")
    p.add_argument("--every", type=float, default=5.0, metavar="S", help="with --follow: seconds between lines (default 5)")

    p = with_model_dir(sub.add_parser("versions", help="list model versions; --use ID makes one current"))
    p.add_argument("--use", metavar="ID")

    p = with_model_dir(sub.add_parser("prune", help="remove old model versions and the files only they used"))
    p.add_argument("--keep", type=int, default=2, metavar="N",
                   help="versions to keep, newest first (default 2); the current one is always kept too")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, and remove nothing")
    return parser


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for each training knob of Settings (a field with help text): a new knob needs no edit here."""
    group = parser.add_argument_group("training knobs", "recorded in each version's manifest")
    kinds = typing.get_type_hints(Settings)
    for knob in dataclasses.fields(Settings):
        if knob.name not in TRAINING_FIELDS:
            continue
        flag, kind = "--" + knob.name.replace("_", "-"), kinds[knob.name]
        default = knob.default if knob.default is not dataclasses.MISSING else knob.default_factory()
        shown = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in (
            default if isinstance(default, tuple) else (default,)))
        text = (knob.metadata["help"] + ("" if default is None else f" (default {shown})")).replace("%", "%%")
        parts = [a for a in typing.get_args(kind) if a is not type(None)]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(kind) is tuple:
            nargs = "+" if Ellipsis in parts else len(parts)
            parts = [a for a in parts if a is not Ellipsis]
            group.add_argument(flag, type=parts[0], nargs=nargs, metavar=knob.name.split("_")[-1].upper(), help=text)
        else:
            group.add_argument(flag, type=parts[0] if parts else kind, help=text)


@contextmanager
def terminal_progress(description: str):
    """A tqdm bar fed by the core's `progress(fraction, message)` calls."""
    from tqdm import tqdm

    with tqdm(total=1000, desc=description, unit="‰", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
              file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.update(max(0, round(fraction * 1000) - bar.n))
            bar.set_postfix_str(str(message), refresh=True)

        yield progress


def cmd_demo(args, settings: Settings) -> None:
    from imgsim.inputs.demo import build_demo

    out = args.out or settings.images
    with terminal_progress("demo") as progress:
        path = build_demo(out, n=args.count, seed=args.seed, progress=progress)
    print(f"demo collection ready: {one_line(path)}")


def join_ray(address: str | None) -> None:
    """Join the Ray cluster before any progress bar: a missing package or a wrong address is the only line."""
    if address:
        from imgsim.runs.distributed import connect

        connect(address)


def cmd_train(args, settings: Settings) -> None:
    settings = settings.replace(images=args.images, follow_links=args.follow_links, engine=args.engine,
                                **{name: getattr(args, name) for name in TRAINING_FIELDS})
    if args.background and args.ray:
        raise ImgsimError("--ray runs in the foreground only (the background job does not take it)")
    if args.background:
        from imgsim.runs import jobs

        pid = jobs.start_training(settings, build_demo_first=args.demo_first)
        print(f"training in the background (pid {pid}); `imgsim status --follow` shows its progress, "
              f"its log is {one_line(jobs.log_path(settings.model_dir))}")
        return
    from imgsim.runs.training import train

    join_ray(args.ray)
    with terminal_progress("train") as progress:
        report = train(settings, progress, ray=args.ray)
    print(report.summary())


def cmd_index(args, settings: Settings) -> None:
    from imgsim.runs.indexing import index
    from imgsim.storage import store

    images = args.images or store.images_root(settings.model_dir)
    join_ray(args.ray)
    with terminal_progress("index") as progress:
        report = index(settings.replace(images=images, follow_links=args.follow_links), progress, engine=args.engine,
                       ray=args.ray)
    print(report.summary())


def cmd_query(args, settings: Settings) -> int:
    """Each source is answered on its own: one bad source prints its error line, the rest still run."""
    from imgsim.inputs.images import describe, open_image, read_bytes
    from imgsim.search import Searcher
    from imgsim.search.plot import grid_path, save_grid

    if args.n < 1:
        raise ImgsimError("-n must be at least 1")
    searcher = Searcher.load(settings.model_dir, engine=args.engine)
    failed = 0
    for number, source in enumerate(args.sources, 1):
        try:
            data = read_bytes(source)
            result = searcher.query(source, args.n, args.scope, data=data)
        except ImgsimError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(result.to_dict()))  # ASCII: names escaped, and kept exactly
        else:  # one name, one line: a name holding a newline cannot forge a result line
            print(f"{one_line(source)}  (group {result.cluster})")
            for rank, hit in enumerate(result.results, 1):
                copy = "  (exact copy)" if hit.exact else ""
                print(f"  {rank:2d}. {hit.score:.4f}  group {hit.cluster}  {one_line(hit.path)}{copy}")
        if args.plot:
            plot = grid_path(args.plot, number, len(args.sources))
            save_grid(plot, open_image(data, describe(source), draft_size=160), result)
            print(f"grid written to {one_line(plot)}", file=sys.stderr)
    return 2 if failed else 0


def cmd_clusters(args, settings: Settings) -> None:
    from collections import Counter

    from imgsim.learning.groups import silhouette_by_k
    from imgsim.storage import store
    from imgsim.storage.group_names import load_labels, set_name

    version = store.load_version(settings.model_dir)
    for spec in args.name:
        group, sep, name = spec.partition("=")
        if not sep or not group.strip().isdigit() or not 0 <= int(group) < len(version.centres):
            raise ImgsimError(f"--name {one_line(spec)}: expected G=NAME with G a group from 0 to {len(version.centres) - 1}")
        set_name(settings.model_dir, version.id, int(group), name)
    labels = load_labels(settings.model_dir, version.id)
    counts = Counter(version.groups.tolist())
    print(f"version {one_line(version.id)}: {len(version)} images in {len(version.centres)} groups")
    for group in range(len(version.centres)):
        label = labels.get(group)
        named = f"  {one_line(label.name)}" + (" (carried over, unconfirmed)" if label.carried else "") if label else ""
        print(f"  group {group}: {counts.get(group, 0)} images{named}")
    if args.silhouette:
        for k, score in silhouette_by_k(version.vectors).items():
            print(f"  k={k:2d}  silhouette {score:.3f}")
    if args.export:
        names = {g: label.name for g, label in labels.items()}
        write_csv(args.export, ["path", "group", "name"],
                  ((p, g, names.get(g, "")) for p, g in zip(version.paths, version.groups.tolist())))
        print(f"wrote {one_line(args.export)}")


def cmd_labels(args, settings: Settings) -> int:
    from imgsim import labelling
    from imgsim.storage import store
    from imgsim.storage.annotations import LabelStore

    action = args.labels_command
    version = store.load_version(settings.model_dir)
    labels = LabelStore(settings.model_dir)
    if action in ("set", "clear"):
        rows = labelling.rows_for_paths(version, args.paths)
        ids = version.ids[rows].tolist()
        paths = {int(i): version.paths[r] for i, r in zip(ids, rows)}
        changed = labels.set(ids, args.name, paths) if action == "set" else labels.clear(ids)
        what = f"labelled {one_line(args.name)!r}" if action == "set" else "cleared"
        print(f"{what}: {len(set(rows))} image(s), {changed} changed")
        return 0
    if action == "import":
        return import_labels(args.file, version, labels)
    if action == "undo":
        entry = labels.undo()
        print(f"undone: {one_line(entry.get('action'))} of {entry.get('count')} image(s)" if entry else "nothing to undo")
        return 0
    propagation = labelling.propagate(version, labels.load())
    if action == "suggest":
        for suggestion in labelling.suggest(version, args.n, propagation):
            if args.json:
                print(json.dumps(suggestion.to_dict()))
            else:
                guess = f"{one_line(suggestion.suggested)} {suggestion.confidence:.0%}" if suggestion.suggested else "-"
                print(f"{one_line(suggestion.path)}  [{guess}]  {one_line(suggestion.reason)}")
    elif action == "review":
        for finding in labelling.review(version, propagation):
            if args.json:
                print(json.dumps(finding.to_dict()))
            else:
                print(f"{finding.kind:8s} {one_line(finding.path)}  [{one_line(finding.label or '-')}]  {one_line(finding.reason)}")
    elif action == "status":
        sure, half = propagation.counts(0.9), propagation.counts(0.5)
        print(f"{len(version)} images: {sure['person']} labelled by you, {sure['propagated']} propagated at 90% "
              f"confidence or more ({half['propagated']} at 50% or more), {sure['unsure']} unsure; "
              f"{len(propagation.classes)} label(s)")
    elif action == "export":
        return export_labels(args, version, propagation)
    elif action == "accept":
        if not 0.0 <= args.min_confidence <= 1.0:
            raise ImgsimError(f"--min-confidence must be between 0 and 1, got {args.min_confidence}")
        rows = propagation.sure(args.min_confidence).tolist()
        changed = labels.change({int(version.ids[r]): propagation.name(r) for r in rows}, "accept",
                                {int(version.ids[r]): version.paths[r] for r in rows}, unlabelled_only=True)
        print(f"accepted {changed} propagated label(s) at {args.min_confidence:.0%} or more")
    return 0


def export_labels(args, version, propagation) -> int:
    from imgsim.labelling import export as dataset

    if not 0.0 <= args.min_confidence <= 1.0:
        raise ImgsimError(f"--min-confidence must be between 0 and 1, got {args.min_confidence}")
    if (args.link or args.force) and not args.folders:
        raise ImgsimError("--link and --force go with --folders DIR")
    if not (args.json or args.csv or args.folders):
        args.json = True
    if args.folders:  # first: a refused folder stops the export before anything is written
        report = dataset.export_folders(version, propagation, args.folders, link=args.link, force=args.force,
                                        min_confidence=args.min_confidence)
        for path, why in report.failed.items():
            print(f"error: {one_line(path)}: {one_line(why)}", file=sys.stderr)
        print(f"wrote {report.files} image(s) in {report.labels} label folder(s) under {one_line(report.folder)}"
              f"{'' if not report.unlabelled else f'; {report.unlabelled} without a label left out'}", file=sys.stderr)
    items = dataset.rows(version, propagation, args.min_confidence)
    if args.csv:
        write_csv(args.csv, ["path", "label", "source", "confidence"],
                  ((r["path"], r["label"], r["source"], r["confidence"]) for r in items))
        print(f"wrote {one_line(args.csv)}", file=sys.stderr)
    elif args.json:
        for item in items:
            print(json.dumps(item))
    return 2 if args.folders and report.failed else 0


def import_labels(file: Path, version, labels) -> int:
    """Rows of path,label (a header naming them is optional; an export's CSV imports its own labels only).

    Paths are read as typed, relative to the CSV's folder or the collection's; a bad row stops the
    import before anything changes. An empty label clears the image's label.
    """
    import csv

    from imgsim import labelling
    from imgsim.storage.annotations import clean_label

    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImgsimError(f"{file}: cannot be read ({type(exc).__name__})") from None
    table = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    columns = {"path": 0, "label": 1}
    if table and {"path", "label"} <= {c.strip().lower() for c in table[0]}:
        header = [c.strip().lower() for c in table.pop(0)]
        columns = {name: header.index(name) for name in ("path", "label", "source") if name in header}
    changes, paths, skipped = {}, {}, 0
    for number, row in enumerate(table, 1):
        if len(row) <= max(columns["path"], columns["label"]):
            raise ImgsimError(f"{file}: row {number} has no label column (expected path,label)")
        if "source" in columns and row[columns["source"]].strip() not in ("person", ""):
            skipped += 1  # an export's propagated rows are the assistant's guesses, not labels to import
            continue
        path, name = row[columns["path"]].lstrip("'"), row[columns["label"]].lstrip("'")  # our CSVs' formula guard
        try:
            [r] = labelling.rows_for_paths(version, [path], base=file.parent)
            label = clean_label(name) if name.strip() else None
        except ImgsimError as exc:
            raise ImgsimError(f"{file}: row {number}: {exc}") from None
        changes[int(version.ids[r])], paths[int(version.ids[r])] = label, version.paths[r]
    changed = labels.change(changes, "import", paths)
    print(f"imported {len(changes)} row(s), {changed} label(s) changed"
          + (f"; {skipped} propagated row(s) skipped" if skipped else ""))
    return 0


def cmd_duplicates(args, settings: Settings) -> None:
    from imgsim.duplicates import DEFAULT_THRESHOLD, duplicates_csv, find_duplicates
    from imgsim.storage import store

    version = store.load_version(settings.model_dir)
    threshold = args.threshold
    if threshold is None:
        threshold = version.manifest.get("metrics", {}).get("duplicate_threshold") or DEFAULT_THRESHOLD
    if not -1.0 <= threshold <= 1.0:
        raise ImgsimError(f"--threshold must be a cosine similarity between -1 and 1, got {threshold}")
    groups = find_duplicates(version, threshold)
    for group in groups:
        if args.json:
            print(json.dumps(group.to_dict()))  # ASCII: names escaped, and kept exactly
            continue
        print(f"group {group.group}: {len(group.images)} {'exact copies' if group.exact else 'near copies'}")
        for m in group.images:
            size = f"{m.width}x{m.height}" if m.width else "?x?"
            print(f"  {'keep' if m.keep else '    '}  {m.score:.4f}  {m.match:16}  {size:>11}  {m.bytes:>10,} B  "
                  f"{one_line(m.path)}")  # match: why it is a copy (imgsim.duplicates.MATCHES)
    if not args.json:
        spare = sum(len(g.images) - 1 for g in groups)
        print(f"{len(groups)} group(s), {spare} image(s) another one could replace (threshold {threshold:.3f}); "
              "nothing was changed", file=sys.stderr)
    if args.export:
        args.export.write_text(duplicates_csv(groups), encoding="utf-8")
        print(f"wrote {one_line(args.export)}", file=sys.stderr)


def cmd_eval(args, settings: Settings) -> None:
    from imgsim.runs.evaluation import run_evaluation

    print(run_evaluation(args.images, settings.model_dir, k=args.k))


def status_line(status) -> str:
    """One line on a background training run, as `imgsim status` and `imgsim serve` print it."""
    import time

    if status is None:
        return "no training run has been started here"
    state = status.get("state")
    if state == "running":
        elapsed = time.time() - status.get("started", time.time())
        return f"training: {status.get('fraction', 0):.0%} · {one_line(status.get('message', ''))} · {elapsed:.0f} s elapsed"
    if state == "finished":
        return f"training finished: {one_line(status.get('message', ''))}"
    return f"training {'stopped' if status.get('stopped') else 'failed'}: {one_line(status.get('error', ''))}"


def follow_status(model_dir, follow: bool, every: float, stop=lambda: False) -> dict | None:
    """Print the run's line, and with `follow` a new line whenever it changes until the run (or `stop()`) ends."""
    import time

    from imgsim.runs import jobs

    status, last = jobs.training_status(model_dir), None
    while True:
        text = status_line(status)
        if text != last:
            print(text, flush=True)
            last = text
        if not follow or not status or status.get("state") != "running" or stop():
            return status
        time.sleep(max(0.5, every))
        status = jobs.training_status(model_dir)


def cmd_status(args, settings: Settings) -> int:
    """One line for the last background run; with --follow, a line every few seconds until it ends."""
    status = follow_status(settings.model_dir, args.follow, args.every)
    return 0 if not status or status.get("state") != "failed" else 2


def cmd_serve(args, settings: Settings) -> int:
    """The dashboard, with a first model training in the background when there is none; its progress prints here."""
    from imgsim import serve
    from imgsim.core.errors import BusyError
    from imgsim.runs import jobs
    from imgsim.storage import store

    images_given = args.images is not None or bool(os.environ.get("IMGSIM_IMAGES"))
    settings = settings.replace(images=args.images)
    environ = {**os.environ, "IMGSIM_MODEL_DIR": str(settings.model_dir), "IMGSIM_IMAGES": str(settings.images)}
    serve.check_address(args.host, args.port)  # before anything starts: a bad address is one line, nothing else
    warning = serve.exposure_warning(args.host)
    if warning:
        print(f"imgsim: {warning}", file=sys.stderr)
    if store.current_id(settings.model_dir) is None:
        try:  # the demo build is a no-op once complete
            jobs.start_training(settings, build_demo_first=not images_given)
        except BusyError:
            pass  # a run already in progress: follow it
    extra = [arg for arg in args.streamlit_args if arg != "--"]
    server = serve.launch(args.host, args.port, ["--server.headless=true", *extra], environ=environ)
    # Stopped (kill, a service manager): the server goes too, never left running on its own.
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        if jobs.is_running(settings.model_dir):
            follow_status(settings.model_dir, True, 10, stop=lambda: server.poll() is not None)
        return server.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the server too (same process group); let it finish its own way
        try:
            return server.wait(timeout=15)
        except (KeyboardInterrupt, Exception):
            server.kill()
            return 130


def cmd_api(args, settings: Settings) -> int:
    """The HTTP API (imgsim.api); a bad address or a missing extra is one line before anything starts."""
    from imgsim import serve
    from imgsim.api import serving

    serving.check_installed()
    serve.check_address(args.host, args.port)
    return serving.run(args.host, args.port, settings.model_dir, args.workers)


def cmd_versions(args, settings: Settings) -> None:
    from imgsim.storage import store

    if args.use:
        store.set_current(settings.model_dir, args.use)
    rows = store.version_table(settings.model_dir)
    if not rows:
        print(f"no model versions in {one_line(settings.model_dir)}")
    for row in rows:  # a manifest may have been edited by hand: its fields are shown escaped
        twin = row["twin recall@1"]
        print(one_line(f"{'*' if row['active'] else ' '} {row['id']}  {row['kind']}  {row['images'] or '?'} images  "
                       f"{row['groups'] or '?'} groups  engine {row['engine'] or '?'}  "
                       f"twin recall@1 {f'{twin:.3f}' if isinstance(twin, (int, float)) else '-'}"))


def cmd_prune(args, settings: Settings) -> None:
    from imgsim.storage import store

    report = store.prune(settings.model_dir, keep=args.keep, dry_run=args.dry_run)

    def mb(n: int) -> str:
        return f"{n / 1e6:,.1f} MB"

    what = (f"{len(report.removed)} version(s) ({', '.join(report.removed) or 'none'}) and {report.files} file(s) "
            "no kept version uses")
    if args.dry_run:
        print(f"would remove {what}; kept: {', '.join(report.kept) or 'none'} ({mb(report.before)} in "
              f"{one_line(settings.model_dir)} now)")
    else:
        print(f"removed {what}; kept: {', '.join(report.kept) or 'none'}; {one_line(settings.model_dir)}: "
              f"{mb(report.before)} -> {mb(report.after)}")


COMMANDS = {"serve": cmd_serve, "api": cmd_api, "demo": cmd_demo, "train": cmd_train, "index": cmd_index, "query": cmd_query,
            "clusters": cmd_clusters, "labels": cmd_labels, "duplicates": cmd_duplicates, "eval": cmd_eval, "status": cmd_status, "versions": cmd_versions,
            "prune": cmd_prune}


# The commands that run the model (their Keras backend is imported up front, quietly).
MODEL_COMMANDS = ("train", "index", "query", "duplicates", "eval")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(model_dir=getattr(args, "model_dir", None))
        check_name(settings.engine)  # a bad IMGSIM_ENGINE: one line before anything runs
        if args.command in MODEL_COMMANDS and not getattr(args, "background", False):
            from imgsim.learning.backend import import_keras

            import_keras(quiet=True)  # TensorFlow's native start-up lines off the terminal; a bad KERAS_BACKEND: one line
        code = COMMANDS[args.command](args, settings) or 0
    except (ImgsimError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)  # one line, whatever names the message holds
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`imgsim labels review | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 0
    except Exception as exc:  # never a traceback for a user; IMGSIM_DEBUG=1 shows it
        if os.environ.get("IMGSIM_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (set IMGSIM_DEBUG=1 for details)",
              file=sys.stderr)
        return 1
    return code
