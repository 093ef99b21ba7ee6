"""Explore: the collection's map coloured by group or label, what a selection holds (label it), each group's images, and k."""

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from threadpoolctl import threadpool_limits

from imgsim.core.text import html_text
from imgsim.learning.groups import silhouette_by_k
from imgsim.storage.group_names import group_name
from pages import common

SHOWN = 60  # thumbnails per gallery before "show more"
MAX_POINTS = 20_000  # drawn on the map; a larger collection is shown as an even sample (the page says so)
WEBGL_ABOVE = 3_000  # points: WebGL (Scattergl) draws many points fast; SVG is sharper and needs no GPU for few
SURE = 0.9  # a propagated label less likely right than this is drawn as "unsure" when the map is coloured by label
UNSURE = "unsure"


@common.cache_data(max_entries=4, show_spinner="Scoring k = 2 … 12…")
def silhouettes(model_dir: str, version_id: str) -> dict[int, float]:
    """Silhouette by k: computed at training time since imgsim 0.2; older versions compute it once here."""
    version = common.load_version(model_dir, version_id)
    saved = version.manifest.get("metrics", {}).get("silhouette_by_k")
    if isinstance(saved, dict):
        return {int(k): float(saved[k]) for k in sorted(saved, key=int)}
    # One thread: KMeans' OpenMP threads spin against a training run on the same cores (seconds per k, not ms).
    with threadpool_limits(1):
        return silhouette_by_k(version.vectors, range(2, 13), int(version.manifest["settings"].get("seed", 0)))


@common.cache_data(max_entries=4, show_spinner=False)
def map_frame(model_dir: str, version_id: str, names: dict[int, str]) -> tuple[pd.DataFrame, list[str]]:
    """The map's points (at most MAX_POINTS, an even sample beyond) and the legend's order, once per version and names."""
    version = common.load_version(model_dir, version_id)
    rows = np.arange(len(version))
    if len(rows) > MAX_POINTS:
        rows = np.sort(np.random.default_rng(0).choice(len(rows), MAX_POINTS, replace=False))
    frame = pd.DataFrame({
        # float32: Plotly sends arrays as binary, 4 bytes a coordinate is finer than the map's pixels
        "x": version.map2d[rows, 0].astype(np.float32), "y": version.map2d[rows, 1].astype(np.float32), "row": rows,
        "group": [html_text(group_name(g, names)) for g in version.groups[rows].tolist()],  # Plotly reads some HTML
        "file": [html_text(common.short_name(version.paths[i], version)) for i in rows.tolist()],
    })
    return frame, [html_text(group_name(g, names)) for g in sorted(set(version.groups.tolist()))]


@common.cache_data(max_entries=4, show_spinner=False)
def silhouette_figure(model_dir: str, version_id: str):
    """The silhouette by k, this model's k marked; built once per version (Plotly Express costs CPU); None below two k."""
    scores = silhouettes(model_dir, version_id)
    if len(scores) < 2:
        return None
    k = len(common.load_version(model_dir, version_id).centres)
    fig = px.line(x=list(scores), y=list(scores.values()), markers=True, height=280,
                  labels={"x": "number of groups (k)", "y": "silhouette score"})
    fig.add_vline(x=k, line_dash="dot", annotation_text=f"this model: k = {k}")
    fig.update_layout(margin=dict(l=0, r=0, t=30, b=0))
    return fig


def label_colours(frame: pd.DataFrame, propagation) -> tuple[pd.DataFrame, list[str]]:
    """The frame with each point's label (a person's, or propagated at SURE or more; else "unsure") and the legend's order."""
    rows = frame["row"].to_numpy()
    names = np.array([html_text(c) for c in propagation.classes] + [UNSURE], dtype=object)
    label, confidence = propagation.label[rows], propagation.confidence[rows]
    sure = (label >= 0) & (confidence >= SURE)
    return frame.assign(label=names[np.where(sure, label, -1)]), [*names[:-1].tolist(), UNSURE]


def map_figure(frame: pd.DataFrame, order: list[str], by: str = "group"):
    """The map, one trace per group (or label); WebGL (Scattergl) for many points. Built each run: a cached figure loses selections.

    Traces straight from the frame's arrays: Plotly Express's grouping and its object-typed custom
    data cost a 5,000-image map a tenth of a second a view. The custom data is each point's row, one
    number (a one-column 2-D array, binary-encoded by Plotly, came back missing from selections).
    """
    trace = go.Scattergl if len(frame) > WEBGL_ABOVE else go.Scatter
    colours = px.colors.qualitative.T10 + px.colors.qualitative.Alphabet
    fig = go.Figure()
    for i, name in enumerate(order):
        part = frame[frame[by] == name]
        colour = "#c8c8c8" if by == "label" and name == UNSURE else colours[i % len(colours)]
        fig.add_trace(trace(x=part["x"].to_numpy(), y=part["y"].to_numpy(), mode="markers", name=name,
                            customdata=part["row"].to_numpy(), hovertext=part["file"].to_numpy(),
                            hovertemplate="%{hovertext}<extra>%{fullData.name}</extra>",
                            marker=dict(size=7 if len(frame) < 5000 else 4, opacity=0.85,
                                        color=colour)))
    fig.update_layout(height=560, dragmode="lasso", margin=dict(l=0, r=0, t=30, b=0), legend_title_text="",
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def gallery(rows, version, key: str, px: int = 128) -> None:
    """Thumbnails of the given collection rows: SHOWN of them spread over the list, or every one a page at a time."""
    rows = list(rows)
    if len(rows) > SHOWN:
        browse = st.toggle(f"Browse all {len(rows):,}", key=f"all-{key}")
        rows = common.page_of(rows, SHOWN, f"page-{key}") if browse else common.spread(rows, SHOWN)
    paths = [version.paths[i] for i in rows]
    st.image([common.thumbnail(p, px, version) for p in paths], width=px,
             caption=[common.md(Path(p).stem) for p in paths])


cfg, version = common.page_start()
names = common.group_names(cfg, version)
writable = common.can_write()
st.title("Explore")

frame, order = map_frame(str(cfg.model_dir), version.id, names)
st.caption("Each point is an image, placed by UMAP so that similar images sit close together. "
           "Click a point, or drag a lasso or box, to see the images below"
           + (" and label them together." if writable else ".")
           + (f" The collection holds {len(version):,} images; the map shows an even sample of {len(frame):,} of them."
              if len(frame) < len(version) else ""))
by = "label" if st.toggle("Colour by label", key="colour-by-label",
                          help=f"A person's label, or one the assistant propagated with a probability of at least "
                               f"{SURE:.0%} of being right (Label page); the others are grey") else "group"
labels = common.person_labels(cfg.model_dir, version) if by == "label" or writable else {}
if by == "label":
    frame, order = label_colours(frame, common.propagation(cfg.model_dir, version, labels))
fig = map_figure(frame, order, by)
event = st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key=f"map-{version.id}")

# read as a mapping: what st.plotly_chart returns, and what a test puts in the session state
points = ((event or {}).get("selection") or {}).get("points") or []
chosen = sorted({int(p["customdata"]) for p in points if p.get("customdata") is not None})
classes = sorted({label.label for label in labels.values()}, key=str.casefold)
if chosen:
    st.subheader(f"{len(chosen)} selected")
    if writable:
        common.label_form(cfg.model_dir, version, chosen, "label-selection", classes, f"these {len(chosen)} images")
    gallery(chosen, version, "selection")

st.subheader("Groups")
counts = {int(g): int(c) for g, c in zip(*np.unique(version.groups, return_counts=True))}
group = st.segmented_control("Group", list(counts), default=next(iter(counts)), required=True, key="group",
                             format_func=lambda g: f"{common.md(group_name(g, names))} ({counts[g]})",
                             label_visibility="collapsed")
rows = np.flatnonzero(version.groups == group).tolist()
if writable:
    common.label_form(cfg.model_dir, version, rows, f"label-group-{group}", classes,
                      f"all {len(rows)} images of group {group}", default=names.get(group))
gallery(rows, version, f"group-{group}")

st.subheader("Choosing k")
figure = silhouette_figure(str(cfg.model_dir), version.id)
if figure is None:
    st.caption("Too few images to compare numbers of groups.")
else:
    st.plotly_chart(figure, key="silhouette")
    st.caption("Higher is better separated. Pick k on the Train page and retrain to regroup.")
