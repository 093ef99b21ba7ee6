"""Label: the images worth labelling next, a key or a click each, or a page at once; accept what the assistant is
sure of; review; name groups."""

import numpy as np
import pandas as pd
import streamlit as st
from threadpoolctl import threadpool_limits

from imgsim import labelling
from imgsim.core.errors import ImgsimError
from imgsim.core.text import csv_text, one_line
from imgsim.labelling import export as dataset
from imgsim.storage.annotations import LabelStore
from imgsim.storage.group_names import group_name, load_labels, set_name
from pages import common, label_queue

LISTED = 12  # findings shown per review list
SHOWN = 24  # thumbnails of a group before "show all"
TABS = ("Next to label", label_queue.TAB, "Review", "Groups")  # st.session_state["label-tab"] holds the open one
ACTIONS = {"set": "labelling", "import": "the import of", "accept": "accepting", "group": "the group name on",
           "clear": "clearing the labels of"}


@common.cache_resource(max_entries=4, show_spinner="Looking for likely mistakes…")
def findings(model_dir: str, version_id: str, key: str, _labels: dict) -> list:
    """Likely mistakes and outliers (imgsim.labelling.review), once per version and labels."""
    version = common.load_version(model_dir, version_id)
    with threadpool_limits(1):
        return labelling.review(version, common.propagation(model_dir, version, _labels, key))


def accept(model_dir: str, version_id: str, min_confidence: float) -> None:
    """Button callback: every propagated label at or above the confidence becomes a person's (undoable)."""
    if not common.can_write():
        st.session_state["notice-label"] = ("error", common.access().why_not())
        return
    try:
        version = common.load_version(model_dir, version_id)
        propagation = common.propagation(model_dir, version, LabelStore(model_dir).load())
        rows = propagation.sure(min_confidence).tolist()
        changed = LabelStore(model_dir).change({int(version.ids[r]): propagation.name(r) for r in rows}, via="accept",
                                               unlabelled_only=True,
                                               paths={int(version.ids[r]): version.paths[r] for r in rows})
    except ImgsimError as exc:
        st.session_state["notice-label"] = ("error", common.md(exc))
        return
    st.toast(f"Accepted {changed:,} propagated labels. Undo takes them back.", icon=":material/done_all:")


def undo(model_dir: str) -> None:
    """Button callback: revert the last labelling change, whoever made it (the dashboard or the command line)."""
    if not common.can_write():
        st.session_state["notice-label"] = ("error", common.access().why_not())
        return
    try:
        entry = LabelStore(model_dir).undo()
    except ImgsimError as exc:
        st.session_state["notice-label"] = ("error", common.md(exc))
        return
    st.toast(f"Undone: {common.md(undo_text(entry).removeprefix('Undo '))}" if entry else "Nothing to undo.",
             icon=":material/undo:")


def undo_text(change: dict) -> str:
    """'Undo labelling 3 images “cats”', from LabelStore.undoable()'s summary; plain text (pass through `md`)."""
    count = int(change.get("count") or 0)
    images = f"{count:,} image{'s' if count != 1 else ''}"
    label = f" {common.quoted(change['label'])}" if change.get("label") else ""
    if change.get("action") == "accept":
        return f"Undo accepting {count:,} propagated label{'s' if count != 1 else ''}"
    return f"Undo {ACTIONS.get(change.get('action'), 'the last change to')} {images}{label}"


def keep(image_id: int) -> None:
    """Button callback: a likely mistake the person has looked at and keeps; not listed again in this session."""
    st.session_state.setdefault("label-kept", set()).add(int(image_id))


def save_and_move(model_dir, version_id: str, group: int, groups: list[int], step: int) -> None:
    """Form callback: store the typed name (blank clears it), then show the next or previous group."""
    if not common.can_write():  # the form is not drawn then; this guards the callback itself too
        return
    try:
        set_name(model_dir, version_id, group, st.session_state.get(f"name-{version_id}-{group}", "").strip())
    except ImgsimError as exc:  # a name with a control character: said, and the group stays open to mend it
        st.session_state["notice-label"] = ("error", common.md(exc))
        return
    st.session_state["label_group"] = groups[(groups.index(group) + step) % len(groups)]


def apply_group(model_dir: str, version_id: str, group: int) -> None:
    """Button callback: the group's name becomes the label of each of its images that a person has not labelled."""
    if not common.can_write():
        st.session_state["notice-label"] = ("error", common.access().why_not())
        return
    name = load_labels(model_dir, version_id).get(group)
    if name is None:
        st.session_state["notice-label"] = ("error", "Name the group first.")
        return
    version = common.load_version(model_dir, version_id)
    labelled = set(LabelStore(model_dir).load())
    rows = [r for r in np.flatnonzero(version.groups == group).tolist() if int(version.ids[r]) not in labelled]
    common.label_rows(model_dir, version_id, rows, name=name.name, via="group", where="label")


def labels_csv(version, propagation, min_confidence: float, names: dict[int, str]) -> str:
    """Every image's label, where it comes from and its group, paths relative to the collection's folder."""
    groups = version.groups.tolist()
    return csv_text(["path", "label", "source", "confidence", "group", "group_name"],
                    ([common.short_name(item["path"], version), item["label"], item["source"], item["confidence"],
                      group, names.get(group, "")]
                     for item, group in zip(dataset.rows(version, propagation, min_confidence), groups)))


def review_tab(cfg, version, labels, key: str, writable: bool) -> None:
    found = findings(str(cfg.model_dir), version.id, key, labels)
    kept = st.session_state.get("label-kept", set())
    mistakes = [f for f in found if f.kind == "mistake" and int(version.ids[f.row]) not in kept]
    outliers = [f for f in found if f.kind == "outlier"]
    st.subheader("Likely mistakes")
    if not mistakes:
        st.caption("None: every label you gave agrees with the images nearest to it." if labels else
                   "Label some images first: a label is checked against the labels of the images nearest to it.")
    for f in mistakes[:LISTED]:
        with st.container(border=True, horizontal=True, vertical_alignment="center"):
            st.image(common.thumbnail(f.path, 96, version), width=96)
            with st.container():
                st.markdown(f"{common.md(common.short_name(f.path, version))}: labelled **{common.md(f.label)}**")
                st.caption(common.md(f.reason))
            if writable:
                st.button(f"Relabel as {common.md(common.quoted(f.suggested, 30))}", type="primary",
                          key=f"fix-{int(version.ids[f.row])}", on_click=common.label_rows,
                          args=(str(cfg.model_dir), version.id, (f.row,)), kwargs={"name": f.suggested, "where": "label"})
                st.button(f"Keep {common.md(common.quoted(f.label, 30))}", key=f"keep-{int(version.ids[f.row])}",
                          on_click=keep, args=(int(version.ids[f.row]),))
    if len(mistakes) > LISTED:
        st.caption(f"… and {len(mistakes) - LISTED} more; fix these first (the list is recomputed after each change).")
    st.subheader("Outliers")
    if not outliers:
        st.caption("None: every image has a close neighbour.")
        return
    st.caption("Images with no close neighbour: labels spread to them least well. Check their label on the map, or "
               "leave them out of a dataset.")
    shown = outliers[:LISTED]
    st.image([common.thumbnail(f.path, 128, version) for f in shown], width=128,
             caption=[common.md(common.short_name(f.path, version)) for f in shown])


def groups_tab(cfg, version, propagation, writable: bool) -> None:
    labels = load_labels(cfg.model_dir, version.id)
    names = {g: label.name for g, label in labels.items()}
    counts = {int(g): int(c) for g, c in zip(*np.unique(version.groups, return_counts=True))}
    groups = sorted(counts)
    if st.session_state.get("label_group") not in groups:
        st.session_state["label_group"] = groups[0]
    st.caption("The model's groups of similar images. Give each a name: type it and press Enter, the next group "
               "appears. A group's name can then label all its images at once." if writable else
               "The model's groups of similar images and their names.")
    group = st.selectbox("Group", groups, key="label_group",
                         format_func=lambda g: f"{one_line(group_name(g, names))} ({counts[g]} images)"
                                               + (" · carried over" if g in labels and labels[g].carried else ""))
    label = labels.get(group)
    if label and label.merged:
        both = " and ".join(common.md(common.quoted(n, 60)) for n in (label.name, *label.merged))
        st.warning(f"After retraining, most images named {both} are in this group; pick one name or type another.")
    elif label and label.carried:
        st.info("This name was carried over from the groups of the previous training: most of the images that had it "
                "are in this group now. Save it to confirm, or type a better one.")

    rows = np.flatnonzero(version.groups == group).tolist()
    if writable:
        with st.form(f"form-{version.id}-{group}", border=False):
            st.text_input(f"Name for group {group}", value=names.get(group, ""), key=f"name-{version.id}-{group}",
                          placeholder="e.g. cats, receipts, beach", max_chars=80)
            left, right, _ = st.columns([1, 1, 4])
            args = (str(cfg.model_dir), version.id, group, groups)
            left.form_submit_button("Save and next", type="primary", on_click=save_and_move, args=(*args, 1),
                                    width="stretch")
            right.form_submit_button("Previous", on_click=save_and_move, args=(*args, -1), width="stretch")
        if group in names:
            mine = int(propagation.person[rows].sum())
            st.button(f"Apply this group's name to its {len(rows) - mine:,} images" if mine else
                      f"Apply this group's name to all its {len(rows):,} images",
                      key=f"apply-{version.id}-{group}", disabled=mine == len(rows), on_click=apply_group,
                      args=(str(cfg.model_dir), version.id, group), icon=":material/label:",
                      help=f"Labels them {common.md(common.quoted(names[group], 60))}; undo takes it back."
                           + (f" The {mine:,} you labelled yourself keep their labels." if mine else ""))

    shown = rows
    if len(rows) > SHOWN:  # a bounded number of thumbnails a view, however large the group
        browse = st.toggle(f"Browse all {len(rows):,}", key=f"all-{group}")
        shown = common.page_of(rows, SHOWN, f"page-{group}") if browse else common.spread(rows, SHOWN)
    st.image([common.thumbnail(version.paths[i], 128, version) for i in shown], width=128)
    st.subheader("All groups")
    st.dataframe(pd.DataFrame({"group": groups, "images": [counts[g] for g in groups],
                               "name": [names.get(g, "") for g in groups],
                               "carried over": [g in labels and labels[g].carried for g in groups]}), hide_index=True)


cfg, version = common.page_start()
model_dir = str(cfg.model_dir)
st.title("Label")
writable = common.can_write()
labels, key, last_change = common.labelling_state(cfg.model_dir, version)
propagation = common.propagation(model_dir, version, labels, key)
st.caption("Label a few images; the assistant spreads your labels to similar ones and says how sure it is."
           if writable else common.access().why_not())
common.show_notice("label")

left, right = st.columns([3, 2], vertical_alignment="bottom")
confidence = right.slider("Probability that counts as sure", 0.5, 1.0, 0.9, 0.01, key="label-confidence",
                          help="A propagated label at least this likely right counts as labelled: in the progress, "
                               "in 'Accept' and in the download. The probability is fitted on your own labels, each "
                               "checked against the others")
counts = propagation.counts(confidence)
left.markdown(f"**{counts['person']:,}** labelled by you · **{counts['propagated']:,}** propagated at "
              f"{confidence:.0%} or more · **{counts['unsure']:,}** unsure")
left.progress((counts["person"] + counts["propagated"]) / max(1, len(version)))
if propagation.classes:
    left.caption(f"Probabilities {common.md(propagation.calibration.describe())}.")

with st.container(horizontal=True, vertical_alignment="center"):
    if writable:
        st.button(f"Accept {counts['propagated']:,} propagated labels at {confidence:.0%} or more",
                  key="accept", type="primary", disabled=not counts["propagated"], on_click=accept,
                  args=(model_dir, version.id, confidence), icon=":material/done_all:",
                  help="They become your labels, as if you had clicked each one; undo takes them back")
        if last_change:
            st.button(common.md(undo_text(last_change)), key="undo", on_click=undo, args=(model_dir,),
                      icon=":material/undo:", shortcut="Z")
    group_names = common.group_names(cfg, version)
    # data as a callable: the CSV of every image is written when someone clicks, not on every view
    st.download_button("Download labels (CSV)",
                       lambda: labels_csv(version, propagation, confidence, group_names), on_click="ignore",
                       file_name=f"imgsim-labels-{version.id}.csv", mime="text/csv", icon=":material/download:",
                       help=f"Every image: path, label, source (person, propagated, or none below "
                            f"{confidence:.0%}), confidence, group, group name")

# Tabs that rerun on a switch and draw only the open one: drawing all three cost every view twice an
# empty page's server CPU (benchmarks/pages-results.txt).
queue, grid, review, groups = st.tabs(TABS, key="label-tab", on_change="rerun")
if queue.open:
    with queue:
        label_queue.queue_tab(cfg, version, propagation, labels, key, writable)
elif grid.open:
    with grid:
        label_queue.grid_tab(cfg, version, propagation, writable)
elif review.open:
    with review:
        review_tab(cfg, version, labels, key, writable)
else:
    with groups:
        groups_tab(cfg, version, propagation, writable)
