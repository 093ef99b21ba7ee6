"""`imgsim labels ACTION`: the labelling assistant from the command line."""

from __future__ import annotations

import json
import sys

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
        what = f"labelled '{one_line(args.name)}'" if action == "set" else "cleared"
        print(f"{what}: {len(set(rows))} image(s), {changed} changed")
        return 0
    if action == "import":
        from imgsim.labelling.importing import import_labels

        done = import_labels(args.file, version, labels)
        print(f"imported {done.rows} row(s), {done.changed} label(s) changed"
              + (f"; {done.skipped} propagated row(s) skipped" if done.skipped else ""))
        return 0
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
                guess = f"{one_line(suggestion.suggested)} p={suggestion.confidence:.2f}" if suggestion.suggested else "-"
                print(f"{one_line(suggestion.path)}  [{guess}]  {one_line(suggestion.reason)}")
    elif action == "review":
        for finding in labelling.review(version, propagation):
            if args.json:
                print(json.dumps(finding.to_dict()))
            else:
                print(f"{finding.kind:8s} {one_line(finding.path)}  [{one_line(finding.label or '-')}]  {one_line(finding.reason)}")
    elif action == "status":
        sure, half = propagation.counts(0.9), propagation.counts(0.5)
        print(f"{len(version)} images: {sure['person']} labelled by you, {sure['propagated']} propagated at a "
              f"probability of 90% or more ({half['propagated']} at 50% or more), {sure['unsure']} unsure; "
              f"{len(propagation.classes)} label(s)")
        if propagation.classes:
            print(f"probabilities {propagation.calibration.describe()}")
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

