"""The copies a collection knows without a new scan: what `GET /duplicates` and `Collection.duplicates` answer.

Nobody who asks pays for a scan. Exact copies (the same bytes) come from the version's records
alone; near copies come only from a scan that has already run. Until the background job stores
its scans (the near-copies issue), no near-copy scan is known, and the answer says so (`near`
False) rather than starting one.
"""

from __future__ import annotations

import threading

import numpy as np

from imgsim.api import answers

_known: dict[tuple[str, str], answers.Duplicates] = {}
_lock = threading.Lock()


def known_copies(collection, version) -> answers.Duplicates:
    """The version's exact copies, grouped, the suggested keeper first; worked out once per version and process."""
    from imgsim.duplicates import DuplicateScan

    key = (str(collection.model_dir), version.id)
    with _lock:
        if key in _known:
            return _known[key]
    # A scan with no candidate pairs: its groups are the exact copies alone, and nothing is searched.
    groups = DuplicateScan(version, 1.0, np.zeros((0, 2), np.int64), np.zeros(0)).groups(1.0)
    rows = version.records.rows_of([m.id for g in groups for m in g.images]).tolist()
    found, at = [], 0
    for g in groups:
        members = []
        for m in g.images:
            members.append(answers.Copy(id=str(m.id), path=collection.path(version, rows[at]), score=m.score,
                                        keep=m.keep, match=m.match or None))
            at += 1
        found.append(answers.CopyGroup(group=g.group, exact=g.exact, images=members))
    answer = answers.Duplicates(version=version.id, near=False, threshold=None, groups=found)
    with _lock:
        _known[key] = answer
        while len(_known) > 4:
            _known.pop(next(iter(_known)))
    return answer
