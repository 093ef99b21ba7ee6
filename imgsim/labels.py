"""Names people give to a version's groups, kept beside the version (whose folder is never modified).

Stored as `<model_dir>/labels/<version_id>.json`: {"0": "cats", "3": "scans"}.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

from .text import csv_text

VERSION_ID = re.compile(r"[A-Za-z0-9_.-]+")


def labels_path(model_dir, version_id: str) -> Path:
    if not VERSION_ID.fullmatch(version_id or "") or version_id.startswith("."):
        raise ValueError(f"not a version id: {version_id!r}")
    return Path(model_dir) / "labels" / f"{version_id}.json"


def load_names(model_dir, version_id: str) -> dict[int, str]:
    """Group number -> name; groups never named are absent."""
    try:
        raw = json.loads(labels_path(model_dir, version_id).read_text())
    except (OSError, ValueError):
        return {}
    return {int(k): str(v) for k, v in raw.items() if str(k).lstrip("-").isdigit() and str(v).strip()}


def save_names(model_dir, version_id: str, names: dict[int, str]) -> Path:
    """Write the names whole (temporary file, then rename); blank names are dropped."""
    path = labels_path(model_dir, version_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {str(int(k)): " ".join(str(v).split()) for k, v in sorted(names.items()) if str(v).strip()}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(clean, indent=1, ensure_ascii=False))
    os.replace(tmp, path)
    return path


def group_name(group: int, names: dict[int, str]) -> str:
    """'group 3', or 'group 3 · cats' once named."""
    name = names.get(int(group))
    return f"group {group} · {name}" if name else f"group {group}"


def labels_csv(version, names: dict[int, str]) -> str:
    """CSV of every image: path, group, name (empty for unnamed groups); cells are never formulas."""
    return csv_text(["path", "group", "name"],
                    ([path, group, names.get(int(group), "")] for path, group in zip(version.paths, version.groups.tolist())))
