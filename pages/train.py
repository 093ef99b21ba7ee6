"""Train: settings and a background retraining run, the active model's curves and what it finds, its versions."""


import math

import pandas as pd
import streamlit as st

from imgsim.core.errors import BusyError, ImgsimError
from imgsim.runs import jobs
from imgsim.storage import store
from imgsim.storage.prune import prune
from pages import common

SIZES = [32, 48, 64, 96, 128, 160, 192, 256]
LATENTS = [16, 32, 64, 128, 256, 512]
# history key -> (panel, data); panels in this order, two a row, each with a short title (PANELS_HELP says more)
CURVES = {"loss": ("loss", "training"), "val_loss": ("loss", "validation"),
          "reconstruction": ("reconstruction", "training"), "val_reconstruction": ("reconstruction", "validation"),
          "twin_recall@1": ("twin recall@1", "held out"), "twin_mrr": ("twin MRR", "held out")}
COLOURS = {"training": "#2f6fdf", "validation": "#f28e2b", "held out": "#59a14f"}
PANELS_HELP = ("**loss**: what training minimises (reconstruction, the two views' agreement and VICReg's spread terms, "
               "weighted). **reconstruction**: the decoder's mean squared error. **twin recall@1** and **twin MRR** "
               "are label-free: on held-out images, how often a view's nearest neighbour is the other view of the same "
               "image, and the mean reciprocal rank of that twin (higher is better; early stopping watches the MRR).")


def start_from_form(cfg, build_demo_first: bool) -> None:
    if not common.can_write():
        return
    chosen = {key: int(st.session_state[f"train-{key}"]) for key in common.TRAIN_KEYS}
    st.session_state["train_settings"] = chosen
    common.start_training(cfg.replace(**chosen), build_demo_first, "main")


def make_active(model_dir) -> None:
    if not common.can_write():
        return
    try:
        store.set_current(model_dir, st.session_state["use-version"])
    except ImgsimError as exc:
        st.session_state["notice-main"] = ("error", common.md(exc))


@common.cache_data(max_entries=4, show_spinner=False)
def typical_neighbours(model_dir: str, version_id: str, count: int = 5) -> list[tuple[int, list[int]]]:
    """For each group, its most typical image (nearest its centre, found at training) and that image's neighbours."""
    version = common.load_version(model_dir, version_id)
    typical = version.manifest.get("metrics", {}).get("typical") or {}
    ids = [int(typical[g]) for g in sorted(typical, key=int)]
    rows = [int(r) for r in version.records.rows_of(ids) if r >= 0]
    if not rows:
        return []
    engine = version.engine()
    out = []
    for row, hits in zip(rows, engine.search_many(version.vectors[rows], count, exclude={int(version.ids[r]) for r in rows})):
        out.append((row, [int(r) for r in version.records.rows_of([h[0] for h in hits]) if r >= 0]))
    return out


def curves_chart(history: dict, height: int = 150) -> tuple[pd.DataFrame, dict] | None:
    """One panel per measure, two a row, with whole-epoch ticks, as (data, Vega-Lite spec) for st.vega_lite_chart;
    None when the history has no curve.

    Vega-Lite rather than Plotly: Streamlit draws it with a third of the front-end code (a new browser tab
    with one chart: 1.26x an empty page's time to all drawn, against 1.82x with Plotly; benchmarks/bench_pages.py).
    """
    rows = []  # panel, data, epoch, value
    for key, (panel, data) in CURVES.items():
        values = history.get(key)
        if isinstance(values, list):
            rows += [(panel, data, epoch, float(v)) for epoch, v in enumerate(values, 1) if v is not None]
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=["panel", "data", "epoch", "value"])
    panels, shown = list(dict.fromkeys(frame["panel"])), [d for d in COLOURS if d in set(frame["data"])]
    epochs = int(frame["epoch"].max())
    spec = {
        "facet": {"field": "panel", "type": "nominal", "sort": panels, "title": None,
                  "header": {"labelFontSize": 14, "labelColor": "#31333f", "labelFontWeight": "bold"}},
        "columns": 2,
        "spec": {
            "width": 320, "height": height,
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "epoch", "type": "quantitative", "title": "epoch",
                      "scale": {"domain": [0.6, epochs + 0.4], "nice": False},
                      "axis": {"format": "d", "tickMinStep": max(1, math.ceil(epochs / 10))}},
                "y": {"field": "value", "type": "quantitative", "title": None, "scale": {"zero": False},
                      "axis": {"format": ".3~g"}},
                "color": {"field": "data", "type": "nominal", "title": None, "legend": {"orient": "top"},
                          "scale": {"domain": shown, "range": [COLOURS[d] for d in shown]}},
                "tooltip": [{"field": "panel", "type": "nominal"}, {"field": "data", "type": "nominal"},
                            {"field": "epoch", "type": "quantitative"},
                            {"field": "value", "type": "quantitative", "format": ".4g"}],
            },
        },
        "resolve": {"scale": {"y": "independent"}},
    }
    return frame, spec


@common.cache_data(max_entries=4, show_spinner=False)
def version_curves(model_dir: str, version_id: str):
    """The version's training curves (`curves_chart`); built once per version."""
    return curves_chart(common.load_version(model_dir, version_id).history)


def history_of(measures: list[dict]) -> dict:
    """A running job's per-epoch measures (imgsim.runs.jobs status) as a history: key -> values by epoch (None: not measured)."""
    by_epoch = {int(m["epoch"]): m for m in measures if 1 <= m["epoch"] <= 10_000}  # an epoch told twice: its last word
    epochs = range(1, max(by_epoch, default=0) + 1)
    return {key: [by_epoch.get(e, {}).get(key) for e in epochs] for key in CURVES
            if any(key in m for m in by_epoch.values())}


def live_curves(status: dict, box) -> None:
    """The running job's finished epochs, drawn from its status as data (imgsim.runs.jobs keeps them as `measures`)."""
    chart = curves_chart(history_of(status.get("measures") or []))
    if chart is not None:
        box.markdown("**Curves by epoch, so far**", help=PANELS_HELP)
        box.vega_lite_chart(*chart, width="content", key="live-curves")


def prune_versions(model_dir) -> None:
    """Button callback: remove all but the newest versions (imgsim.storage.prune.prune) and say what it freed."""
    if not common.can_write():
        return
    try:
        report = prune(model_dir, keep=int(st.session_state.get("prune-keep", 2)))
    except BusyError:
        st.session_state["notice-main"] = ("warning", "A training or indexing run is in progress; prune when it ends.")
    except (ImgsimError, ValueError, OSError) as exc:
        st.session_state["notice-main"] = ("error", common.md(exc))
    else:
        st.session_state["notice-main"] = ("success", (f"Removed {len(report.removed)} version(s) and {report.files} "
                                                       f"file(s) only they used: {report.before / 1e6:,.1f} MB -> "
                                                       f"{report.after / 1e6:,.1f} MB."))


def settings_form(cfg, run, demo: bool) -> None:
    """The next run's settings and the button that starts it (drawn only for sessions that may write)."""
    with st.form("train-settings"):
        st.markdown(f"Train a new version on {common.md(cfg.images)}"
                    + (", after building the demo collection there" if demo else ""))
        size, latent, epochs, k = st.columns(4)
        size.select_slider("Image size (px)", option_list(SIZES, run.image_size), value=run.image_size,
                           key="train-image_size",
                           help="Larger sees more detail; training time grows with the square of the size.")
        latent.select_slider("Latent size", option_list(LATENTS, run.latent_dim), value=run.latent_dim,
                             key="train-latent_dim", help="Length of the vector each image is compared by.")
        epochs.number_input("Epochs (at most)", 1, 500, run.epochs, key="train-epochs",
                            help="Training stops earlier when the validation loss stops improving.")
        k.number_input("Groups (k)", 1, 100, run.clusters, key="train-clusters",
                       help="Number of KMeans groups; the silhouette chart on the Explore page helps choose it.")
        st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:",
                              on_click=start_from_form, args=(cfg, demo))


def stop_training(model_dir) -> None:
    if common.can_write():
        jobs.stop_training(model_dir)


def version_frame(rows: list[dict]) -> pd.DataFrame:
    """The versions table as text (st.table's cells are Markdown): scores to three decimals, a manifest's words escaped."""
    def cell(key: str, value) -> str:
        if value is None:
            return "–"
        if key in ("twin recall@1", "silhouette") and isinstance(value, (int, float)):
            return f"{value:.3f}"
        return "✓" if value is True else "" if value is False else common.md(value)

    return pd.DataFrame([{k: cell(k, v) for k, v in row.items() if k != "damaged"} for row in rows])


def option_list(options: list[int], value: int) -> list[int]:
    return sorted(set(options) | {int(value)})


cfg = common.settings()
common.sidebar(cfg)
version = common.active_version(cfg)
st.title("Train")
common.training_progress(cfg, detailed=True, curves=live_curves)
writable = common.can_write()
if not writable:
    st.info(common.access().why_not())
if jobs.is_running(cfg.model_dir) and writable:
    st.button("Stop training", icon=":material/stop:", on_click=stop_training, args=(cfg.model_dir,))

if writable:
    settings_form(cfg, common.train_settings(cfg, version), version is None and common.collection_size(cfg.images) < 2)
st.caption("Training runs in the background: search keeps using the active version until the new one is ready, "
           "then the new one becomes active.")

if version is None:
    st.info("No model has been trained yet.")
    st.stop()

metrics = version.manifest.get("metrics", {})
st.subheader(f"Active version `{version.id}`")
cells = st.columns(5)
cells[0].metric("Images", metrics.get("images", len(version)))
cells[1].metric("Groups", len(version.centres))
cells[2].metric("Epochs run", metrics.get("epochs_run", "–"))
cells[3].metric("Twin recall@1", f"{metrics['twin_recall@1']:.2f}" if metrics.get("twin_recall@1") is not None else "–")
cells[4].metric("Training time", f"{metrics['train_seconds']:.0f} s" if metrics.get("train_seconds") else "–")

st.markdown("**Curves by epoch**", help=PANELS_HELP)
chart = version_curves(str(cfg.model_dir), version.id)
if chart is None:
    st.caption("This version has no training history.")
else:
    st.vega_lite_chart(*chart, width="content", key="loss")
st.markdown("**What the model finds** · each group's most typical image, then its nearest neighbours")
strips = typical_neighbours(str(cfg.model_dir), version.id)
for cell, (row, neighbours) in zip(st.columns(2) * math.ceil(len(strips) / 2), strips):
    cell.image([common.thumbnail(version.paths[i], 72, version) for i in [row, *neighbours]], width=72,
               caption=[f"group {version.groups[row]}"] + [""] * len(neighbours))
twin = {k: metrics.get(k) for k in ("twin_recall@1", "twin_recall@10")}
if twin["twin_recall@1"] is not None:
    st.caption(f"Label-free check on held-out images: a view's own twin is its nearest neighbour "
               f"{twin['twin_recall@1']:.0%} of the time, among its 10 nearest {twin['twin_recall@10']:.0%}.")

st.subheader("Versions")
current = store.current_id(cfg.model_dir)
rows = store.version_table(cfg.model_dir)
st.table(version_frame(rows), hide_index=True)  # static: no data grid to load for a few rows
usable = [row["id"] for row in rows if not row["damaged"]]
if not writable:
    st.stop()
choice, button = st.columns([3, 1], vertical_alignment="bottom")
choice.selectbox("Version", usable, index=usable.index(current) if current in usable else 0, key="use-version")
button.button("Make active", on_click=make_active, args=(cfg.model_dir,), width="stretch",
              disabled=st.session_state.get("use-version") == current)
with st.expander("Free disk space: remove old versions"):
    st.caption("Removes every version but the newest ones, and the files only they used. The active version, a "
               "version whose group names were not carried over yet, group names and your labels are always kept.")
    keep, remove = st.columns([3, 1], vertical_alignment="bottom")
    keep.number_input("Versions to keep", 1, 100, 2, key="prune-keep")
    remove.button("Remove old versions", on_click=prune_versions, args=(cfg.model_dir,), width="stretch",
                  disabled=len(rows) <= st.session_state.get("prune-keep", 2))
