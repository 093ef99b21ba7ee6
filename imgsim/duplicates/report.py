"""The copies as a CSV a spreadsheet opens safely: one row per member, with why it is a copy."""

from __future__ import annotations

from imgsim.core.text import csv_text
from imgsim.duplicates.groups import DuplicateGroup


def duplicates_csv(groups: list[DuplicateGroup], name=str) -> str:
    """One row per member: group, path, role ("keep" or "duplicate"), score, exact, match (why: MATCHES); safe for
    spreadsheets.

    `name` turns a path into what the CSV shows: the CLI writes it whole, the dashboard relative to the collection.
    """
    rows = ([g.group, name(m.path), "keep" if m.keep else "duplicate", m.score, "true" if g.exact else "false", m.match]
            for g in groups for m in g.images)
    return csv_text(["group", "path", "role", "score", "exact", "match"], rows)

