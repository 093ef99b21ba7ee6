"""The copies a collection knows without a new scan: what `GET /duplicates` and `Collection.duplicates` answer.

Nobody who asks pays for a scan. Near copies come from the version's last finished scan, which
the background job stores after training or indexing (imgsim.duplicates.results); until one is
stored, the exact copies (the same bytes) come from the version's records alone, and the answer
says so (`near` False) rather than starting a scan.
"""

from __future__ import annotations

import threading

from imgsim.api import answers

_known: dict[tuple[str, str], answers.Duplicates] = {}
_lock = threading.Lock()


def known_copies(collection, version) -> answers.Duplicates:
    """The version's copies, grouped, the suggested keeper first; worked out once per stored scan and process."""
    from imgsim.duplicates import DuplicateScan, results
    from imgsim.duplicates.finding import DEFAULT_THRESHOLD, MANIFEST_KEY

    try:
        stamp = results.result_path(version.model_dir, version.id).stat().st_mtime_ns
    except OSError:
        stamp = None
    key = (str(collection.model_dir), version.id, stamp)
    with _lock:
        if key in _known:
            return _known[key]
    stored = results.load(version) if stamp is not None else None
    if stored is not None:
        threshold = max(float((version.manifest.get("metrics") or {}).get(MANIFEST_KEY) or DEFAULT_THRESHOLD),
                        stored.floor)
        groups = stored.groups(threshold)
    else:
        threshold = None
        groups = DuplicateScan.exact_only(version).groups(1.0)
    answer = answers.Duplicates(version=version.id, near=stored is not None, threshold=threshold,
                                groups=copy_groups(collection, version, groups))
    with _lock:
        _known[key] = answer
        while len(_known) > 4:
            _known.pop(next(iter(_known)))
    return answer


def copy_groups(collection, version, groups) -> list[answers.CopyGroup]:
    rows = version.records.rows_of([m.id for g in groups for m in g.images]).tolist()
    found, at = [], 0
    for g in groups:
        members = []
        for m in g.images:
            members.append(answers.Copy(id=str(m.id), path=collection.path(version, rows[at]), score=m.score,
                                        keep=m.keep, match=m.match or None))
            at += 1
        found.append(answers.CopyGroup(group=g.group, exact=g.exact, images=members))
    return found
