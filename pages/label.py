"""Label: name each group while looking at its images, one group after another; export the names."""

import numpy as np
import pandas as pd
import streamlit as st

from imgsim.labels import group_name, labels_csv, load_labels, set_name
from imgsim.text import one_line
from pages import common

SHOWN = 48


def save_and_move(model_dir, version_id: str, group: int, groups: list[int], step: int) -> None:
    """Form callback: store the typed name (blank clears it), then show the next or previous group."""
    if not common.can_write():  # the form is not drawn then; this guards the callback itself too
        return
    set_name(model_dir, version_id, group, st.session_state.get(f"name-{version_id}-{group}", "").strip())
    st.session_state["label_group"] = groups[(groups.index(group) + step) % len(groups)]


cfg, version = common.page_start()
labels = load_labels(cfg.model_dir, version.id)
names = {g: label.name for g, label in labels.items()}
counts = {int(g): int(c) for g, c in zip(*np.unique(version.groups, return_counts=True))}
groups = sorted(counts)
if st.session_state.get("label_group") not in groups:
    st.session_state["label_group"] = groups[0]

st.title("Label")
writable = common.can_write()
st.caption("Give each group a name. Type it and press Enter: the name is saved and the next group appears."
           if writable else common.access().why_not())
group = st.selectbox("Group", groups, key="label_group",
                     format_func=lambda g: f"{one_line(group_name(g, names))} ({counts[g]} images)"
                                           + (" · carried over" if g in labels and labels[g].carried else ""))
if group in labels and labels[group].carried:
    st.info("This name was carried over from the groups of the previous training: most of the images that had it "
            "are in this group now. Save it to confirm, or type a better one.")

if writable:
    with st.form(f"form-{version.id}-{group}", border=False):
        st.text_input(f"Name for group {group}", value=names.get(group, ""), key=f"name-{version.id}-{group}",
                      placeholder="e.g. cats, receipts, beach", max_chars=80)
        left, right, _ = st.columns([1, 1, 4])
        args = (str(cfg.model_dir), version.id, group, groups)
        left.form_submit_button("Save and next", type="primary", on_click=save_and_move, args=(*args, 1),
                                width="stretch")
        right.form_submit_button("Previous", on_click=save_and_move, args=(*args, -1), width="stretch")

rows = np.flatnonzero(version.groups == group).tolist()
shown = rows if len(rows) <= SHOWN or st.toggle(f"Show all {len(rows)}", key=f"all-{group}") else common.spread(rows, SHOWN)
st.image([common.thumbnail(version.paths[i], 128) for i in shown], width=128)

st.subheader("All groups")
st.dataframe(pd.DataFrame({"group": groups, "images": [counts[g] for g in groups],
                           "name": [names.get(g, "") for g in groups],
                           "carried over": [g in labels and labels[g].carried for g in groups]}), hide_index=True)
# data as a callable: the CSV of every image is written when someone clicks, not on every view
st.download_button("Export labels (CSV: path, group, name)", lambda names=dict(names): labels_csv(version, names),
                   on_click="ignore",
                   file_name=f"imgsim-labels-{version.id}.csv", mime="text/csv", icon=":material/download:")
