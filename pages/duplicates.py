"""Duplicates: exact and near copies in the collection, side by side, with the one to keep suggested.

Nothing is ever deleted. "Move the others" (for sessions that may change things) moves every
image not kept into a folder, writes a log first, and can be undone from this page.
"""

from pathlib import Path

import streamlit as st

from imgsim import duplicates as dup
from imgsim.core.errors import ImgsimError
from imgsim.core.text import one_line, relative_paths
from imgsim.runs import jobs
from pages import common

SHOWN_GROUPS = 10  # groups drawn on one page (each up to 6 thumbnails sent inline); the CSV holds them all
THUMB_PX = 160  # thumbnails drawn at the size they are made: six a row fit the wide layout


def stored(model_dir: str, version_id: str):
    """The version's last finished scan, read once per server while its file stays the same; never a scan."""
    path = dup.results.result_path(model_dir, version_id)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    return stored_at(model_dir, version_id, stamp)


@common.cache_resource(max_entries=4, show_spinner=False)
def stored_at(model_dir: str, version_id: str, stamp: int):
    return dup.load_scan(common.load_version(model_dir, version_id))


@common.cache_data(max_entries=16, show_spinner=False)
def find(model_dir: str, version_id: str, stamp: float, threshold: float) -> list:
    return stored(model_dir, version_id).groups(threshold)


EVIDENCE = {"exact": "same bytes", "latent+hash": "model + hash", "content+hash": "framed picture + hash",
            "latent+geometry": "model + keypoints", "content+geometry": "framed picture + keypoints",
            "keypoints+geometry": "shared keypoints"}  # imgsim.duplicates.MATCHES, in words


def age_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def start_scan(model_dir, version_id: str) -> None:
    """Button callback: scan this version in the background (only for sessions that may change things)."""
    if not common.can_write():
        return
    try:
        jobs.start_scan(model_dir, version_id)
    except ImgsimError as exc:
        st.session_state["notice-duplicates"] = ("error", common.md(exc))
        return
    st.session_state["notice-duplicates"] = ("info", "Looking for copies in the background; this page shows them "
                                                     "when the scan has finished.")


def size_text(member) -> str:
    pixels = f"{member.width}×{member.height}" if member.width else "unreadable"
    return f"{pixels} · {member.bytes / 1e6:.1f} MB" if member.bytes >= 100_000 else f"{pixels} · {member.bytes / 1e3:.0f} kB"


@common.cache_data(max_entries=64, show_spinner=False)
def shown_names(model_dir: str, version_id: str, paths: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """Each path's name in the collection, as plain text (the drop-down) and as Markdown (a caption); once per group."""
    version = common.load_version(model_dir, version_id)
    names = {p: common.short_name(p, version) for p in paths}
    return {p: (one_line(name), common.md(name)) for p, name in names.items()}


def caption(member, choice: str, name: str) -> str:
    mark = ":green-badge[keep] " if member.path == choice else ""
    why = EVIDENCE.get(member.match, member.match)  # one of our own names, never a user's text
    return f"{mark}**{member.score:.3f}** · {why} · {size_text(member)}  \n{name}"


def move(groups, target: str, keep: dict[int, str], root) -> None:
    """Button callback: move every image not kept into `target`, after the confirmation box was ticked."""
    if not common.can_write():
        return
    try:
        # never into the collection, never a file outside it (links followed), exact copies re-checked
        log = dup.move_duplicates(groups, Path(target).expanduser(), keep=keep, root=root)
    except (ImgsimError, OSError, ValueError) as exc:
        st.session_state["notice-duplicates"] = ("error", common.md(relative_paths(exc, [root])))
        return
    st.session_state["notice-duplicates"] = ("success", f"Moved. The log is {common.md(log)}; undo below puts every "
                                                        "file back. Run `imgsim index` (or retrain) to drop the moved "
                                                        "files from the model.")
    st.session_state.setdefault("move-logs", []).append(str(log))


def undo(log: str, root) -> None:
    if not common.can_write():
        return
    try:
        count = dup.undo_moves(Path(log), root)
    except (ImgsimError, OSError, ValueError) as exc:
        st.session_state["notice-duplicates"] = ("error", common.md(exc))
        return
    st.session_state["notice-duplicates"] = ("success", f"Put {count} file(s) back.")
    st.session_state["move-logs"].remove(log)


cfg, version = common.page_start()
st.title("Duplicates")
st.caption("Exact copies (the same bytes) are found by hash; near copies (resized, re-compressed, cropped, turned, "
           "framed, captioned, screenshotted or recoloured) are proposed by the model, by the picture inside its frame "
           "and by shared keypoints, then confirmed by a perceptual hash or by keypoints that agree; each image says "
           "why. Nothing is deleted: pick what to keep, export the list, or move the others to a folder (undoable).")
kind, message = st.session_state.pop("notice-duplicates", (None, None))
if kind:
    getattr(st, kind)(message)
scan = stored(str(cfg.model_dir), version.id)
busy = dup.scanning(cfg.model_dir, version.id)
writer = common.can_write()
if scan is None:
    if busy:
        st.info("Looking for copies in this version now (in the background); they appear here when the scan has "
                "finished.")
    elif writer:
        st.info("This version has not been scanned for copies yet (a scan runs after each training).")
        st.button("Look for copies", type="primary", key="dup-scan", on_click=start_scan,
                  args=(cfg.model_dir, version.id))
    else:
        st.info("This version has not been scanned for copies yet; a scan runs after each training, or when someone "
                "who may change things starts one here.")
    st.stop()

stats = scan.stats
left = (f" The CPU budget for checking ({stats.budget_s:.0f} s) ran out: {stats.unchecked:,} candidate pair(s) were left "
        "unchecked and are not shown." if stats.unchecked else "")
st.caption(f"Scanned {age_text(scan.age())}: {stats.images:,} images, {stats.checked:,} candidate pairs checked in "
           f"{stats.cpu_s:.0f} s of CPU.{left}")
if writer and not busy:
    st.button("Scan again", key="dup-rescan", on_click=start_scan, args=(cfg.model_dir, version.id),
              icon=":material/refresh:")
saved = (version.manifest.get("metrics") or {}).get("duplicate_threshold")
saved = float(saved) if type(saved) in (int, float) else dup.DEFAULT_THRESHOLD  # a manifest edited by hand
saved = min(1.0, max(scan.floor, saved))
threshold = st.slider("Similarity threshold", float(scan.floor), 1.0, float(saved), 0.005, key="dup-threshold",
                      format="%.3f", help=f"Pairs the model proposes above this cosine similarity are near copies "
                                          f"once confirmed; {saved:.3f} was measured (README, Near-duplicates). "
                                          "Pairs proposed by the pictures themselves count at any threshold.")
groups = find(str(cfg.model_dir), version.id, scan.finished, float(threshold))

copies = sum(len(g.images) - 1 for g in groups)
st.markdown(f"**{len(groups)}** group(s): **{copies}** image(s) that another one could replace "
            f"({sum(g.exact for g in groups)} group(s) of exact copies).")
st.download_button("Export (CSV: group, path, keep or duplicate, score, exact, match)",
                   lambda groups=groups: dup.duplicates_csv(groups, name=lambda p: common.short_name(p, version)),
                   on_click="ignore",  # written when clicked; paths relative to the collection, as shown
                   file_name=f"imgsim-duplicates-{version.id}.csv", mime="text/csv", icon=":material/download:")

keep: dict[int, str] = {}
shown = common.page_of(groups, SHOWN_GROUPS, key=f"dup-page-{version.id}", what="groups")
for g in shown:
    paths = [m.path for m in g.images]
    names = shown_names(str(cfg.model_dir), version.id, tuple(paths))
    with st.container(border=True):
        st.markdown(f"**Group {g.group}** · {'exact copies' if g.exact else 'near copies'} · {len(g.images)} images")
        # a drop-down, not radio buttons: a group of 20 draws one box, not 20 Markdown labels
        choice = st.selectbox("Keep", paths, index=paths.index(next(m.path for m in g.images if m.keep)),
                              key=f"keep-{version.id}-{g.group}", format_func=lambda p, names=names: names[p][0])
        keep[g.group] = choice
        # one element for the group's pictures and their captions, not six columns of two elements each
        st.image([common.thumbnail(m.path, THUMB_PX, version) for m in g.images[:6]], width=THUMB_PX,
                 caption=[caption(m, choice, names[m.path][1]) for m in g.images[:6]])

if groups and common.can_write():
    st.subheader("Move the others")
    default = str(Path(version.manifest.get("images_root") or cfg.images).with_name("imgsim-duplicates"))
    offered = one_line(default)  # a browser's text is UTF-8: the default shown escaped, and used as it is
    typed = st.text_input("Folder to move them into", offered, key="dup-target")
    target = default if typed == offered else typed
    moving = sum(len(g.images) - 1 for g in shown)
    sure = st.checkbox(f"Move the {moving} image(s) not kept in the groups on this page out of the collection into this "
                       "folder (a log allows undo)", key="dup-sure")
    st.button("Move the others", type="primary", disabled=not sure, on_click=move,
              args=(shown, target, keep, version.manifest.get("images_root") or cfg.images))
for log in st.session_state.get("move-logs", []):
    st.button(f"Undo the move logged in {one_line(Path(log).name)}", key=f"undo-{one_line(log)}", on_click=undo,
              args=(log, version.manifest.get("images_root") or cfg.images), icon=":material/undo:")
