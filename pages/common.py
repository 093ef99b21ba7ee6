"""What every page shares: settings, cached loaders, the sidebar and the training progress panel."""

from __future__ import annotations

import math
import os
import threading
import time
from typing import NamedTuple

import streamlit as st

from imgsim.core.access import Access, announce_owner_code, guess_password
from imgsim.core.config import Settings
from imgsim.core.errors import BusyError, ImgsimError
from imgsim.core.text import markdown_text, one_line, path_in_collection, relative_paths
from imgsim.inputs.thumbnails import ThumbnailFolder, data_url, thumbnail_cached
from imgsim.runs import jobs
from imgsim.storage import store
from imgsim.storage.folder import ModelFolder
from imgsim.storage.group_names import load_names
from pages import patches

TRAIN_KEYS = ("image_size", "latent_dim", "epochs", "clusters")

# Streamlit's internals the dashboard changes, each with its reason and guard: pages/patches.py.
# Started from a page URL, Streamlit is in its pages-folder mode: `sidebar` reruns once to leave it.
_folder_mode = patches.pages_folder_mode_off()
patches.keep_keras_session()
patches.metrics_off()  # under a plain `streamlit run app.py`; `imgsim serve` did it before the server started
patches.serialise_ast_parse()  # models load in background threads while Streamlit parses pages


def settings() -> Settings:
    """The environment's settings; a test (or a future settings page) may put its own in the session."""
    return st.session_state.get("settings") or Settings.from_env()


def access() -> Access:
    """This server's write policy: read-only mode, a password, or loopback-only (see imgsim.core.access)."""
    try:
        secret = st.secrets.get("password")
    except Exception:  # no secrets.toml, or one that does not parse: no password from there
        secret = None
    return Access.from_env(st.get_option("server.address"), secret_password=secret)


def can_write() -> bool:
    """Whether this browser session may train, stop, switch versions or rename groups."""
    return access().can_write(bool(st.session_state.get("unlocked")))


def client_address() -> str | None:
    """The browser's address, for the password back-off: the connection's, or behind a proxy on this machine, the one it forwards.

    Streamlit gives None for a loopback connection: a browser on this machine, or a reverse proxy here,
    whose last X-Forwarded-For entry is the address it saw (the entries before it are the client's own
    say). A remote visitor's X-Forwarded-For is ignored.
    """
    address = st.context.ip_address
    if not isinstance(address, str):  # None on loopback (and no real connection under AppTest)
        forwarded = (st.context.headers.get("X-Forwarded-For") or "").split(",")[-1].strip()
        return forwarded or None
    return address


def unlock() -> None:
    """Form callback: a correct password (or the owner code from the server's console) unlocks changes for this browser session only.

    Guesses go through the back-off (imgsim.core.access.guess_password): after a wrong one, no guess from
    the same address is heard for 1 s, then 2, 4 ... 300 s; at most 100 wrong ones an hour are heard in all.
    """
    attempt = st.session_state.pop("password-attempt", "")
    if not attempt:
        st.session_state["notice-sidebar"] = ("error", "Type the password first.")
        return
    guess = guess_password(access(), attempt, client_address())
    if guess.right:
        st.session_state["unlocked"] = True
    elif guess.heard:
        st.session_state["notice-sidebar"] = ("error", f"Wrong password. The next try is heard in {guess.wait:.0f} s.")
    else:
        st.session_state["notice-sidebar"] = ("error", ("Too many wrong passwords were tried: the next try is heard in "
                                                        f"{math.ceil(guess.wait)} s. The owner code printed on the "
                                                        "server's console is accepted meanwhile."))


def access_panel() -> None:
    """The sidebar's lock: a password field while locked, a lock button while unlocked."""
    policy = access()
    if policy.readonly:
        st.caption("Read-only: search and explore only.")
    elif policy.needs_password and not st.session_state.get("unlocked"):
        announce_owner_code()  # on the server's console, once until it is used
        with st.form("unlock", border=False):
            st.text_input("Password to make changes", type="password", key="password-attempt")
            st.form_submit_button("Unlock", on_click=unlock, icon=":material/lock_open:")
    elif policy.needs_password:
        st.button("Lock changes", icon=":material/lock:", key="lock",
                  on_click=lambda: st.session_state.update(unlocked=False))
    elif not policy.can_write():
        st.caption(policy.why_not())


# The hasher of every cached function here and in the pages: a path or name may hold bytes its file system's
# encoding cannot decode (a folder named on another system; os.fsdecode keeps them as lone surrogates), and
# Streamlit's own hashing of a str cannot encode those: every page failed for `imgsim serve --images` such a folder.
ANY_TEXT = {str: lambda text: text.encode("utf-8", "surrogatepass")}


def cache_data(**options):
    """`st.cache_data` keyed by any path or name (`ANY_TEXT`)."""
    return st.cache_data(hash_funcs=ANY_TEXT, **options)


def cache_resource(**options):
    """`st.cache_resource` keyed by any path or name (`ANY_TEXT`)."""
    return st.cache_resource(hash_funcs=ANY_TEXT, **options)


def md(text) -> str:
    """A user's text (file or group name, label, URL) for a Markdown place: shown as typed, never markup or a link."""
    return markdown_text(text)  # imgsim.core.text: escaped, and no bare URL or address left to auto-link


@cache_resource(max_entries=4, show_spinner=False)
def load_version(model_dir: str, version_id: str) -> store.Version:
    return store.load_version(model_dir, version_id)


def searcher(model_dir: str, version_id: str):
    """The process-wide searcher for a version (`imgsim.search.usable`): the one `imgsim serve` (pages/__main__.py) loaded at
    server start, or the first page view's preload, or loaded now. When the version's model cannot be
    loaded it is the newest intact version's that can, as for the CLI: compare its `version.id`."""
    from imgsim.search import usable  # imports TensorFlow: only pages that search pay for it

    return usable(model_dir, version_id)


_preload_lock = threading.Lock()
_preloaded: set[tuple[str, str]] = set()


def preload(cfg: Settings, version: store.Version) -> None:
    """Load the active version's model in a background thread, once per server and version.

    `imgsim serve` (what run.sh starts) loads it at server start already; under a plain
    `streamlit run app.py`, or after a new version lands, the first page view starts it here, so
    that the first search does not wait for TensorFlow's import and the model's load. A search
    that comes sooner waits for the same load (`imgsim.search.shared` loads a version once).
    """
    key = (str(cfg.model_dir), version.id)
    with _preload_lock:
        if key in _preloaded:
            return
        _preloaded.add(key)

    def load():
        try:
            searcher(*key)
        except Exception:  # the Search page reports a model it cannot load, in words
            pass

    threading.Thread(target=load, daemon=True, name="imgsim-preload").start()


def thumbnail(path: str, px: int = 192, version: store.Version | None = None) -> str:
    """A collection image's thumbnail (WebP) for st.image, as a `data:` URL that the page carries inline.

    Inline, a view asks the server for no media file per image (each one a request through the
    server's middleware, the most of an image page's server CPU) and the session keeps none. With the
    image's `version`, the thumbnail is made once per version and size and kept on disk for every
    process (imgsim.inputs.thumbnails.ThumbnailFolder); without, once per process. Either way the
    newest ones stay in memory, and an edited file (a new modification time) gets a new one. Only a
    regular file inside the active version's images folder is shown (a file swapped for a link to a
    picture elsewhere gets the grey placeholder: `files_root`, set by `page_start`).
    """
    root = st.session_state.get("files-root")
    row = version.records.row_of_path(path) if version is not None else -1
    if row < 0:
        return data_url(thumbnail_cached(path, px, root))
    folder = ThumbnailFolder(ModelFolder(version.model_dir).thumbnail_folder(version.id))
    return data_url(folder.webp(int(version.ids[row]), path, px, root))


def spread(rows: list[int], count: int) -> list[int]:
    """`count` of the rows, evenly spaced, so that a gallery shows a group's variety rather than its first files."""
    if len(rows) <= count:
        return list(rows)
    return [rows[round(i * (len(rows) - 1) / (count - 1))] for i in range(count)]


def page_of(items: list, per_page: int, key: str, what: str = "images") -> list:
    """One page of a long gallery: at most `per_page` items (every page view draws a bounded number of
    thumbnails, however large a group grows), with a page picker when there are more."""
    pages = max(1, math.ceil(len(items) / per_page))
    if pages == 1:
        return list(items)
    page = st.number_input(f"Page (of {pages:,})", 1, pages, 1, key=f"{key}-{pages}")  # a new count starts at 1
    start = (int(page) - 1) * per_page
    st.caption(f"{what.capitalize()} {start + 1:,}–{min(len(items), start + per_page):,} of {len(items):,}.")
    return list(items[start:start + per_page])


def active_version(cfg: Settings, quiet: bool = False) -> store.Version | None:
    """The current version (None before the first one); if it is damaged, say so and use the newest intact one."""
    version_id = store.current_id(cfg.model_dir)
    for candidate in store.candidates(cfg.model_dir):
        try:
            return load_version(str(cfg.model_dir), candidate)
        except ImgsimError as exc:
            if candidate == version_id and not quiet:
                st.error(f"The active model cannot be used: {md(relative_paths(exc, [cfg.images, cfg.model_dir]))}")
    return None


def group_names(cfg: Settings, version: store.Version) -> dict[int, str]:
    return load_names(cfg.model_dir, version.id)


def short_name(path: str, version: store.Version) -> str:
    """A collection path relative to the folder it was trained on."""
    return path_in_collection(path, version.manifest.get("images_root"))


def train_settings(cfg: Settings, version: store.Version | None) -> Settings:
    """Settings for the next run: chosen on the Train page, else the active version's, else the defaults."""
    chosen = dict(version.manifest.get("settings", {})) if version else {}
    chosen = {k: v for k, v in chosen.items() if k in TRAIN_KEYS}
    chosen.update(st.session_state.get("train_settings", {}))
    return cfg.replace(**chosen)


def collection_size(folder) -> int:
    """How many images the folder holds (what a Train button offers); rescanned at most every 30 s."""
    return _collection_size(str(folder))


@cache_data(ttl=30, max_entries=8, show_spinner=False)
def _collection_size(folder: str) -> int:
    from imgsim.inputs.collection import scan_folder  # reads every file's header: 0.5 s for 5,000 files

    try:
        return len(scan_folder(folder))
    except ImgsimError:
        return 0


def start_training(run_settings: Settings, build_demo_first: bool = False, where: str = "main") -> None:
    """Button callback: launch a run, or leave a plain-words notice for `training_progress` to show."""
    if not can_write():  # the button is not drawn then; this guards the callback itself too
        st.session_state[f"notice-{where}"] = ("error", access().why_not())
        return
    try:
        jobs.start_training(run_settings, build_demo_first=build_demo_first)
    except BusyError:
        notice = ("warning", "A training run is already in progress; wait for it to finish.")
    except (ImgsimError, ValueError, OSError) as exc:
        notice = ("error", md(exc))
    else:
        notice = ("info", "Training started. Searches use the current model until the new one is ready.")
    st.session_state[f"notice-{where}"] = notice


def training_progress(cfg: Settings, detailed: bool = False, where: str = "main", curves=None) -> None:
    """The current run's progress, refreshed every two seconds while it runs, and any notice for `where`.

    `curves(status, box)`, when given, draws more of the running job's status (the Train page: its epochs' measures).
    """
    kind, message = st.session_state.pop(f"notice-{where}", (None, None))
    if kind:
        getattr(st, kind)(message)
    running = jobs.is_running(cfg.model_dir)
    drawn = store.current_id(cfg.model_dir)
    st.fragment(_training_progress, run_every=2 if running else None)(cfg, detailed, running, drawn, curves)


def _training_progress(cfg: Settings, detailed: bool, was_running: bool, drawn: str | None = None, curves=None) -> None:
    status = jobs.training_status(cfg.model_dir)
    state = status.get("state") if status else None
    if was_running and (state != "running" or store.current_id(cfg.model_dir) != drawn):
        # the run ended, or published a first model, while this part refreshed alone: rerun the app,
        # which loads the new version
        st.rerun()
    if state == "running":
        elapsed = time.time() - status.get("started", time.time())
        label = f"Training… {status.get('fraction', 0):.0%} · {elapsed:.0f} s elapsed"
        box = st.status(label, state="running", expanded=detailed)  # not `with`: leaving it would mark it complete
        box.progress(status["fraction"], text=md(status["message"]))  # the file is data: its message is text
        if detailed and status.get("curve"):  # Vega-Lite, not Plotly: a third of the front-end code (pages/train.py)
            box.vega_lite_chart({"progress": [p[0] * 100 for p in status["curve"]], "loss": [p[1] for p in status["curve"]]},
                                {"mark": "line", "height": 200, "encoding": {
                                    "x": {"field": "progress", "type": "quantitative", "title": "progress (%)",
                                          "scale": {"zero": False}},
                                    "y": {"field": "loss", "type": "quantitative", "title": "training loss",
                                          "scale": {"zero": False}}}}, key="live-loss")
        if detailed and curves is not None:
            curves(status, box)
    elif detailed and state == "failed" and status.get("stopped"):
        st.info("The last training run was stopped; the active model is unchanged.")
    elif detailed and state == "failed":
        st.error(f"The last training run failed: {md(relative_paths(status.get('error'), [cfg.images, cfg.model_dir]))}")
    elif detailed and state == "finished":
        st.success(f"The last training run finished: {md(status.get('message'))}")


def first_run(cfg: Settings) -> None:
    """What a page shows before any model exists: plain words and one button."""
    st.title("No model yet")
    training_progress(cfg, detailed=True)
    if jobs.is_running(cfg.model_dir):
        st.info("The first model is being trained. This page will show it as soon as it is ready.")
        return
    if not can_write():
        st.info(f"There is no trained model yet. {access().why_not()}")
        return
    count = collection_size(cfg.images)
    if count >= 2:
        st.info(f"There is no trained model in {md(cfg.model_dir)} yet. "
                f"Train one on the {count} images in {md(cfg.images)} to start searching.")
        label, demo = f"Train on {count} images", False
    else:
        st.info(f"There is no trained model in {md(cfg.model_dir)} yet, and no images in {md(cfg.images)}. "
                "Build the demo collection (600 pictures made from the photographs that ship with "
                "scikit-image) and train a model on it: a few minutes on a laptop CPU.")
        label, demo = "Build the demo collection and train", True
    st.button(label, type="primary", key="first-run", on_click=start_training,
              args=(train_settings(cfg, None), demo))


def page_start() -> tuple[Settings, store.Version]:
    """Every page that needs a model begins here: the sidebar, then the active version or the first-run panel."""
    cfg = settings()
    sidebar(cfg)
    version = active_version(cfg)
    if version is None:
        first_run(cfg)
        st.stop()
    st.session_state["files-root"] = version.files_root  # where `thumbnail` reads
    preload(cfg, version)
    return cfg, version


def sidebar(cfg: Settings) -> None:
    """Collection, active version and its metrics, and the retrain trigger; every page draws it first."""
    global _folder_mode
    if _folder_mode:
        _folder_mode = False
        st.rerun()
    with st.sidebar:
        version = active_version(cfg, quiet=True)  # the page itself says what is wrong
        st.caption("COLLECTION")
        st.text(one_line(cfg.images if can_write() else cfg.images.name))  # no server paths for visitors
        st.caption("ACTIVE MODEL")
        if version is None:
            st.markdown("No model yet")
        else:
            metrics = version.manifest.get("metrics", {})
            st.text(version.id)
            if version.manifest.get("kind") == "preview":
                st.caption("Early model: published during the first training, which replaces it when it ends.")
            a, b = st.columns(2)
            a.metric("Images", metrics.get("images", len(version)))
            b.metric("Groups", len(version.centres))
            twin, silhouette = metrics.get("twin_recall@1"), metrics.get("silhouette")
            a.metric("Twin recall@1", f"{twin:.2f}" if twin is not None else "–",
                     help="Label-free check: how often a held-out image's augmented view finds its twin first")
            b.metric("Silhouette", f"{silhouette:.3f}" if silhouette is not None else "–")
        training_progress(cfg, where="sidebar")
        access_panel()
        if version is not None and can_write():
            run = train_settings(cfg, version)
            st.button("Retrain", key="sidebar-retrain", width="stretch", on_click=start_training,
                      args=(run, False, "sidebar"),
                      help=f"{run.image_size} px, latent {run.latent_dim}, {run.epochs} epochs, "
                           f"{run.clusters} groups (change them on the Train page)")


# --- labels: what the Label and Explore pages share ----------------------------------------------

def show_notice(where: str) -> None:
    """What a callback left for this part of the page (an error in plain words), shown once."""
    kind, message = st.session_state.pop(f"notice-{where}", (None, None))
    if kind:
        getattr(st, kind)(message)


class LabellingState(NamedTuple):
    labels: dict  # image id -> a person's ImageLabel
    key: str  # imgsim.labelling.state_key of the version and labels: for caches
    last_change: dict | None  # what an undo would revert (LabelStore.undoable)


def labelling_state(model_dir, version: store.Version) -> LabellingState:
    """The person's labels (imgsim.storage.annotations), their state key and the last change, read and hashed again only
    when the labels file changes. Shared by every session: never change what it returns.

    An unreadable file is said in words (naming it to a writer only: a server path) and read as no labels.
    """
    from imgsim.storage.annotations import LabelStore

    try:
        return _labelling_state(str(model_dir), version.id, _stamp(LabelStore(model_dir).labels_path))
    except ImgsimError as exc:
        st.error(md(exc) if can_write() else "The labels file cannot be read; the labels are not shown.")
        from imgsim.labelling import state_key

        return LabellingState({}, state_key(version, {}), None)


def person_labels(model_dir, version: store.Version) -> dict:
    """Image id -> a person's label (see `labelling_state`)."""
    return labelling_state(model_dir, version).labels


def _stamp(path) -> tuple | None:
    """What changes whenever a file is replaced (labels.json is: a new file renamed over it), or None if absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino, stat.st_size


@cache_resource(max_entries=4, show_spinner=False)
def _labelling_state(model_dir: str, version_id: str, stamp: tuple | None) -> LabellingState:
    from imgsim.labelling import state_key
    from imgsim.storage.annotations import LabelStore

    label_store = LabelStore(model_dir)
    labels = label_store.load()
    return LabellingState(labels, state_key(load_version(model_dir, version_id), labels), label_store.undoable())


@cache_resource(max_entries=4, show_spinner="Spreading your labels over the collection…")
def _propagation(model_dir: str, version_id: str, key: str, _labels: dict):
    from imgsim.labelling import propagate

    return propagate(load_version(model_dir, version_id), _labels)


def propagation(model_dir, version: store.Version, labels: dict, key: str | None = None):
    """Every image's label and confidence from the person's (imgsim.labelling.propagate), once per version and labels.

    `key` is `imgsim.labelling.state_key(version, labels)` where the caller has it already. Shared by
    every session: never change what it returns.
    """
    from imgsim.labelling import state_key

    return _propagation(str(model_dir), version.id, key or state_key(version, labels), labels)


def label_rows(model_dir: str, version_id: str, rows, name: str | None = None, name_key: str | None = None,
               via: str = "set", where: str = "labels") -> None:
    """Button, picker or form callback: a person's label for these rows of a version.

    The label is `name`, or what the widget `name_key` holds; a refusal (read-only, a bad name,
    the labels file busy) is left as a notice for `show_notice(where)`.
    """
    from imgsim.storage.annotations import LabelStore

    if not can_write():  # the controls are not drawn then; this guards the callback itself too
        st.session_state[f"notice-{where}"] = ("error", access().why_not())
        return
    if name_key is not None:
        name = st.session_state.get(name_key)
    if name is None or not str(name).strip():
        st.session_state[f"notice-{where}"] = ("error", "Type a label, or pick one, first.")
        return
    try:
        version = load_version(model_dir, version_id)
        rows = [int(r) for r in rows]
        ids = [int(i) for i in version.ids[rows]]
        changed = LabelStore(model_dir).set(ids, name, paths={i: version.paths[r] for i, r in zip(ids, rows)}, via=via)
    except ImgsimError as exc:
        st.session_state[f"notice-{where}"] = ("error", md(exc))
        return
    images = "image" if len(rows) == 1 else f"{len(rows):,} images"
    st.toast(f"Labelled {images} {md(quoted(name))}" + ("" if changed == len(rows) else f" ({changed:,} changed)"),
             icon=":material/label:")


def quoted(name, limit: int = 40) -> str:
    """A label in quotes, cut to `limit` characters: for buttons and notices (pass the result through `md`)."""
    text = " ".join(str(name).split())
    return f"“{text if len(text) <= limit else text[:limit - 1] + '…'}”"


def label_picker(label: str, classes, key: str, **options) -> None:
    """A box offering the labels given so far that also takes a new one (typed, then Enter); `options` go to st.selectbox."""
    options = {"placeholder": "Pick a label or type a new one", **options}
    st.selectbox(label, list(classes), index=None, key=key, accept_new_options=True, format_func=one_line, **options)


def label_form(model_dir, version: store.Version, rows, key: str, classes, what: str, default: str | None = None) -> None:
    """A label for many images at once (a map selection, a group): a picker and one button."""
    classes = list(classes)
    if default and default not in classes:
        classes.append(default)
    with st.form(key, border=False, enter_to_submit=True):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        with left:
            st.selectbox(f"Label {what}", classes, index=classes.index(default) if default else None,
                         key=f"{key}-name", accept_new_options=True, placeholder="Pick a label or type a new one",
                         format_func=one_line)
        right.form_submit_button(f"Label {len(rows):,} image{'s' if len(rows) != 1 else ''}", type="primary",
                                 width="stretch", on_click=label_rows, args=(str(model_dir), version.id, tuple(rows)),
                                 kwargs={"name_key": f"{key}-name", "where": key})
    show_notice(key)
