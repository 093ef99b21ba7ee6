"""Model version ids: what a new version is named, and the only names a version may be looked up by.

Shared by the store (versions/<id>/, CURRENT, `versions --use`) and the group names kept beside it
(labels/<id>.json), so that neither imports the other for it. An id is never a path.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

VERSION_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")


def new_version_id() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def is_version_id(version_id) -> bool:
    return isinstance(version_id, str) and VERSION_ID.fullmatch(version_id) is not None
