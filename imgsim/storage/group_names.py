"""Names people give to groups. They belong to the collection, not to one version.

Stored beside the versions (whose folders are never modified) as `<model_dir>/labels/<version_id>.json`:
{"0": {"name": "cats", "carried": false}, ...} (imgsim 0.1 wrote {"0": "cats"}, still read).
A new version gets its parent's names when it is written: `index` keeps the groups, so the names
stay as they are; a retraining makes new groups, so each old name moves to the new group holding
most of that name's images and is marked "carried over" until a person confirms it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgsim.core.files import read_plain, write_atomic
from imgsim.core.text import csv_text
from imgsim.storage.annotations import clean_label
from imgsim.storage.folder import ModelFolder

MAX_FILE_BYTES = 4 * 2**20  # a version's group names: a few KB; a larger file is read as no names


@dataclass(frozen=True)
class Label:
    name: str
    carried: bool = False  # moved over from an earlier training's groups, not yet confirmed
    merged: tuple[str, ...] = ()  # other carried names whose images fell into this same group


def labels_path(model_dir, version_id: str) -> Path:
    return ModelFolder(model_dir).group_names(version_id)


def load_labels(model_dir, version_id: str) -> dict[int, Label]:
    """Group number -> Label; groups never named are absent."""
    try:
        raw = json.loads(read_plain(labels_path(model_dir, version_id), MAX_FILE_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nesting edited deep enough to exhaust the parser
        return {}
    labels = {}
    for key, value in raw.items() if isinstance(raw, dict) else ():
        if isinstance(value, str):
            value = {"name": value}
        if not (key.isascii() and key.isdigit() and len(key) < 10) or not isinstance(value, dict) \
                or not str(value.get("name", "")).strip():
            continue
        merged = value.get("merged") if isinstance(value.get("merged"), list) else []
        labels[int(key)] = Label(" ".join(str(value["name"]).split()), bool(value.get("carried", False)),
                                 tuple(" ".join(str(m).split()) for m in merged if str(m).strip()))
    return labels


def load_names(model_dir, version_id: str) -> dict[int, str]:
    """Group number -> name; groups never named are absent."""
    return {g: label.name for g, label in load_labels(model_dir, version_id).items()}


def save_labels(model_dir, version_id: str, labels: dict[int, Label]) -> Path:
    """Write the labels whole (imgsim.core.files.write_atomic); blank names are dropped."""
    path = labels_path(model_dir, version_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {str(int(g)): {"name": " ".join(label.name.split()), "carried": label.carried,
                           **({"merged": list(label.merged)} if label.merged else {})}
             for g, label in sorted(labels.items()) if label.name.strip()}
    write_atomic(path, json.dumps(clean, indent=1, ensure_ascii=False))
    return path


def typed_name(name) -> str:
    """A group name a person typed: blank un-names; any other keeps the rules of a person's label
    (`imgsim.storage.annotations.clean_label`: no control or unprintable characters, a byte that is not UTF-8
    included), since "Apply" makes it one."""
    return clean_label(name) if str(name).strip() else ""


def save_names(model_dir, version_id: str, names: dict[int, str]) -> Path:
    """Set these groups' names, confirmed (a person typed them); blank names are dropped."""
    return save_labels(model_dir, version_id, {int(g): Label(typed_name(n)) for g, n in names.items()})


def set_name(model_dir, version_id: str, group: int, name: str) -> Path:
    """Name (or rename, or with "" un-name) one group, keeping the others; the name is confirmed."""
    labels = load_labels(model_dir, version_id)
    labels[int(group)] = Label(typed_name(name))
    return save_labels(model_dir, version_id, labels)


def inherit(model_dir, parent_id: str | None, child_id: str, mapping: dict[int, int] | None = None) -> dict[int, Label]:
    """Give a new version its parent's names: as they are (`mapping` None: same groups), or moved old -> new group.

    When several names land on one new group (groups merged), the name with most images there
    keeps it and the others are listed in its `merged`, for the Label page to show.
    """
    labels = load_labels(model_dir, parent_id) if parent_id else {}
    if mapping is not None:
        moved: dict[int, list[Label]] = {}
        for g, new in mapping.items():  # carry_over's order: the name with most images first
            if g in labels:
                moved.setdefault(new, []).append(labels[g])
        labels = {new: Label(names[0].name, carried=True,
                             merged=tuple(dict.fromkeys(n for label in names for n in (label.name, *label.merged)
                                                        if n != names[0].name)))
                  for new, names in moved.items()}
    if labels:
        save_labels(model_dir, child_id, labels)
    return labels


def carry_over(old_ids, old_groups, new_ids, new_groups, named=None) -> dict[int, int]:
    """Old group -> the new group its name moves to, by where its images (stable ids) went.

    Only `named` old groups compete (all of them when None). Pairs are taken by overlap, largest
    first: a name whose best new group went to a name with more images there takes its next best
    new group that still holds some of its images. A name with nowhere else to go shares the new
    group (two old groups map to one): the groups truly merged, and `inherit` records both names.
    The returned dict lists the names in the order they should be kept: by overlap, largest first.
    """
    new_group_of = dict(zip(np.asarray(new_ids).tolist(), np.asarray(new_groups).tolist()))
    named = None if named is None else {int(g) for g in named}
    votes: dict[int, Counter] = {}
    for image, group in zip(np.asarray(old_ids).tolist(), np.asarray(old_groups).tolist()):
        if image in new_group_of and (named is None or int(group) in named):
            votes.setdefault(int(group), Counter())[int(new_group_of[image])] += 1
    pairs = sorted(((count, old, new) for old, counter in votes.items() for new, count in counter.items()),
                   key=lambda item: (-item[0], item[1], item[2]))
    mapping, taken = {}, set()
    for count, old, new in pairs:
        if old not in mapping and new not in taken:
            mapping[old] = new
            taken.add(new)
    for old, counter in sorted(votes.items(), key=lambda item: -max(item[1].values())):
        if old not in mapping:  # every new group holding its images went to a larger name: they merged
            mapping[old] = counter.most_common(1)[0][0]
    return mapping


def group_name(group: int, names: dict[int, str]) -> str:
    """'group 3', or 'group 3 · cats' once named."""
    name = names.get(int(group))
    return f"group {group} · {name}" if name else f"group {group}"


def labels_csv(version, names: dict[int, str]) -> str:
    """CSV of every image: path, group, name (empty for unnamed groups); cells are never formulas."""
    return csv_text(["path", "group", "name"],
                    ([path, group, names.get(int(group), "")] for path, group in zip(version.paths, version.groups.tolist())))
