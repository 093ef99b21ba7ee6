"""Search: the collection images most like an uploaded, linked or chosen image."""

from contextlib import nullcontext
from pathlib import Path

import streamlit as st

from imgsim.core.errors import ImgsimError
from imgsim.core.text import csv_text, one_line, relative_paths
from imgsim.inputs.images import ALLOWED_FORMATS, is_url, read_bytes
from imgsim.inputs.thumbnails import data_url
from imgsim.search import Query, rerank, url_query
from imgsim.storage.group_names import group_name
from pages import common

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
COLUMNS = 4


def prepared_query(data: bytes, image_size: int, name: str) -> Query:
    """An upload or a collection image made ready once for the reruns that follow (refusals are not cached).

    The cache key holds the name's bytes: Streamlit hashes a str as UTF-8, which a file name that is not
    UTF-8 (held as lone surrogates) cannot be.
    """
    return _prepared_query(data, image_size, name.encode("utf-8", "surrogatepass"))


@common.cache_data(max_entries=16, show_spinner=False)
def _prepared_query(data: bytes, image_size: int, name: bytes) -> Query:
    """`prepared_query`'s cached part.

    It is decoded once: the picture shown comes from the model's reduced input (`Query.from_bytes`).
    A URL's image is made ready by `imgsim.search.url_query`, whose cache keeps that and never the
    downloaded bytes.
    """
    return Query.from_bytes(data, image_size, name.decode("utf-8", "surrogatepass"))


@common.cache_data(max_entries=16, show_spinner=False)
def query_vector(_searcher, model_dir: str, version_id: str, sha1: str, _prepared: Query):
    """The query's latent, encoded once for all the reruns that change N or the scope."""
    return _searcher.encode(_prepared.image[None])[0]


def results_csv(result, names, version) -> str:
    """The results as a visitor downloads them: paths relative to the collection folder (the CLI prints them whole)."""
    return csv_text(["rank", "path", "score", "distance", "group", "group_name", "exact"],
                    [[rank, common.short_name(hit.path, version), hit.score, hit.distance, hit.cluster,
                      names.get(hit.cluster, ""), hit.exact] for rank, hit in enumerate(result.results, 1)])


def error_text(exc, cfg, version) -> str:
    """An error for the page: Markdown-safe, and naming files relative to the collection and model folders."""
    return common.md(relative_paths(exc, [version.manifest.get("images_root"), cfg.images, cfg.model_dir]))


def label_ticked(model_dir: str, version_id: str, ticks: dict[str, int]) -> None:
    """Form callback: the picked label for the images whose boxes are ticked (`ticks`: checkbox key -> row)."""
    rows = [row for key, row in ticks.items() if st.session_state.get(key)]
    if rows or not common.can_write():  # label_rows refuses a read-only session in words
        common.label_rows(model_dir, version_id, rows, name_key="label-results-name", where="label-results")
    else:
        st.session_state["notice-label-results"] = ("error", "Tick at least one image first.")


def tick_label(image_id: int, labels: dict) -> str:
    """A result's checkbox: 'Select', and the label a person gave it, if any."""
    given = labels.get(image_id)
    return f"Select · labelled {common.md(common.quoted(given.label, 30))}" if given else "Select"


def recheck_text(result, searcher, cfg) -> str:
    """Whether the top answers were re-checked by geometry (imgsim.search.rerank), in a line, and why not."""
    if result.rechecked:
        same = sum(bool(h.same_scene) for h in result.results)
        return (f"The best {result.rechecked} candidates were re-checked by their keypoints: {same} of these results "
                "show the same scene as the query and come first.")
    if not cfg.recheck:
        why = "the re-check is off"
    elif not rerank.can_describe(searcher.image_size):
        why = f"the model's {searcher.image_size} px pictures are too small for keypoints"
    elif searcher.keypoints is None:
        why = "this version keeps no keypoints (`imgsim index` adds them)"
    else:
        why = "nothing to compare (too few keypoints: a flat, small or blurred picture)"
    return f"Ordered by similarity alone: {why}."


@st.fragment
def results(searcher, prepared: Query, source, names: dict, cfg) -> None:
    """N, scope and what they find; changing either reruns only this part of the page.

    A writer also gets a checkbox on each result (and on the query when it is a collection image) and one
    label for the ticked ones: a form, so ticking reruns nothing, and sending it reruns only this part.
    """
    left, right = st.columns([2, 1])
    n = left.slider("Number of results", 1, 48, 8, key="n")
    scope = right.segmented_control("Search in", ["cluster", "all"], default="cluster", required=True, key="scope",
                                    format_func={"cluster": "Same group", "all": "Whole collection"}.get)
    try:
        vector = query_vector(searcher, str(searcher.version.model_dir), searcher.version.id, prepared.sha1, prepared)
        result = searcher.query(source, n, scope, name=prepared.name, vector=vector, sha1=prepared.sha1,
                                features=prepared.features, recheck=cfg.recheck)
    except (ImgsimError, ValueError) as exc:
        st.error(error_text(exc, cfg, searcher.version))
        return
    version = searcher.version
    with st.container(key="query"):
        picture, about = st.columns([1, 3], vertical_alignment="center")
        picture.image(data_url(prepared.thumbnail), width="stretch")
        about.markdown(f"**{common.md(prepared.name)}**  \nPredicted **{common.md(group_name(result.cluster, names))}**  \n"
                       f"{len(result.results)} most similar images "
                       f"{'in its group' if scope == 'cluster' else 'in the whole collection'}")
        about.caption(recheck_text(result, searcher, cfg))
        copies = [common.short_name(h.path, version) for h in result.results if h.exact]
        if copies:
            about.info("This image is in your collection as " + ", ".join(common.md(c) for c in copies[:5])
                       + (f" and {len(copies) - 5} more" if len(copies) > 5 else "") + ".", icon=":material/content_copy:")
        about.download_button("Download results (CSV)", results_csv(result, names, version), file_name="imgsim-results.csv",
                              mime="text/csv", icon=":material/download:", on_click="ignore")
    writable = common.can_write()
    labels = common.person_labels(cfg.model_dir, version) if writable else {}
    query = prepared.sha1[:16]  # a new query's boxes start ticked
    ticks = {}  # checkbox key -> collection row
    with st.container(key="results"), (st.form("label-results", border=False, enter_to_submit=True) if writable
                                       else nullcontext()):
        for start in range(0, len(result.results), COLUMNS):
            for column, hit in zip(st.columns(COLUMNS), result.results[start:start + COLUMNS]):
                column.image(common.thumbnail(hit.path, 256, version), width="stretch")
                badge = ":blue-badge[exact copy] " if hit.exact else (
                    ":green-badge[same scene] " if hit.same_scene else "")
                column.caption(f"{badge}**{hit.score:.3f}** · {common.md(group_name(hit.cluster, names))}  \n"
                               f"{common.md(common.short_name(hit.path, version))}")
                row = version.records.row_of_path(hit.path)
                if writable and row >= 0:
                    key = f"tick-{query}-{int(version.ids[row])}"
                    ticks[key] = row
                    column.checkbox(tick_label(int(version.ids[row]), labels), value=True, key=key)
        if writable:
            for row in sorted(searcher.itself(source))[:1] if source is not None else ():  # a collection image
                key = f"tick-{query}-query"
                ticks[key] = row
                st.checkbox(f"And the query image, {common.md(common.short_name(version.paths[row], version))}"
                            + tick_label(int(version.ids[row]), labels).removeprefix("Select"), value=True, key=key)
            left, right = st.columns([3, 1], vertical_alignment="bottom")
            with left:
                common.label_picker("Label for the selected images", sorted({v.label for v in labels.values()},
                                                                            key=str.casefold), key="label-results-name")
            right.form_submit_button("Label the selected images", type="primary", width="stretch",
                                     on_click=label_ticked, args=(str(cfg.model_dir), version.id, ticks))
    common.show_notice("label-results")


cfg, version = common.page_start()

st.title("Search")
names = common.group_names(cfg, version)

how = st.segmented_control("Query by", ["Upload", "URL", "Collection"], default="Upload", required=True, key="how")
data = name = source = url = None
if how == "Upload":
    uploaded = st.file_uploader("Image to search with", type=UPLOAD_TYPES, key="upload",
                                help=f"{', '.join(ALLOWED_FORMATS)}; up to 10 MB")
    if uploaded is not None:
        data, name = uploaded.getvalue(), uploaded.name
elif how == "URL":
    typed = st.text_input("Image URL", placeholder="https://example.org/picture.jpg", key="url", max_chars=2048).strip()
    if typed and not is_url(typed):
        st.error("Enter the http:// or https:// address of an image. To search with a file, upload it.")
    elif typed:
        url = typed  # fetched below, once the model (and so the size it reads) is known
else:
    path = st.selectbox("Image from the collection", version.paths, key="pick",
                        format_func=lambda p: one_line(common.short_name(p, version)))
    try:
        data, name, source = read_bytes(path, root=version.files_root), Path(path).name, path
    except ImgsimError as exc:
        st.error(error_text(exc, cfg, version))

if data is None and url is None:
    st.caption("Upload an image, paste its URL or pick one from the collection to see the most similar images.")
else:
    try:  # loading began in the background at the first page view; a query that comes sooner waits for it
        with st.spinner("Loading the model…"):
            searcher = common.searcher(str(cfg.model_dir), version.id)
    except Exception as exc:  # a model file Keras cannot read raises assorted types; say so, no traceback
        why = error_text(f"{type(exc).__name__}: {exc}", cfg, version)
        st.error(f"The model of version {version.id} cannot be loaded ({why}). "
                 "Make another version active or retrain on the Train page.")
        st.stop()
    if searcher.version.id != version.id:  # the active version's model would not load: the CLI's fallback
        st.warning(f"The model of the active version {version.id} cannot be loaded, so this search uses version "
                   f"{searcher.version.id}, the newest one whose model loads. Make a version active or retrain on "
                   "the Train page.", icon=":material/history:")
        names = common.group_names(cfg, searcher.version)
    try:
        with st.spinner("Fetching the image…") if url else nullcontext():
            prepared = url_query(url, searcher.image_size) if url else prepared_query(data, searcher.image_size, name)
    except (ImgsimError, ValueError) as exc:
        st.error(error_text(exc, cfg, version))
        st.stop()
    results(searcher, prepared, source, names, cfg)
