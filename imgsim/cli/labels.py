"""`imgsim labels ACTION`: the labelling assistant from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from imgsim.core.config import Settings
from imgsim.core.errors import ImgsimError
from imgsim.core.text import one_line, write_csv


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
