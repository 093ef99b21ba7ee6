"""Every dashboard page through Streamlit's AppTest: no model, a small trained model, search, labels, retraining.

AppTest runs app.py only on the first run; later runs and `switch_page` run the page file alone.
That is one reason each page draws the shared sidebar itself rather than app.py.
"""

import json
import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from imgsim import Settings
from imgsim.core.text import markdown_text
from imgsim.duplicates import scan_and_save
from imgsim.runs import jobs
from imgsim.storage import store
from imgsim.storage.group_names import load_names
from tests.helpers import TINY

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ("pages/search.py", "pages/explore.py", "pages/label.py", "pages/duplicates.py", "pages/train.py")


def open_app(settings: Settings) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)  # the first search imports TensorFlow
    at.session_state["settings"] = settings
    return at.run()


def visit(at: AppTest, page: str) -> AppTest:
    if page != PAGES[0]:
        at.switch_page(page).run()
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    return at


def stop_when_reporting(model_dir) -> None:
    """Stop the run once its process reports (so it records the stop), and wait for it to end."""
    deadline = time.monotonic() + 240  # a loaded machine can take minutes to start TensorFlow in the run
    while "curve" not in (jobs.read_status(model_dir) or {}) and time.monotonic() < deadline:
        time.sleep(0.05)
    jobs.stop_training(model_dir)
    while jobs.is_running(model_dir) and time.monotonic() < deadline + 30:
        time.sleep(0.2)
    assert not jobs.is_running(model_dir)


def texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("title", "info", "error", "warning", "success", "markdown", "caption")
                    for e in getattr(at, kind))


@pytest.fixture
def model_settings(model_copy, tiny_collection) -> Settings:
    return Settings(model_dir=model_copy, images=tiny_collection, **TINY)


def test_every_page_renders_without_a_model_and_says_so(tmp_path):
    at = open_app(Settings(model_dir=tmp_path / "models", images=tmp_path / "photos"))
    for page in PAGES:
        visit(at, page)
        assert "No model yet" in [e.value for e in at.sidebar.markdown]
        assert "no trained model" in texts(at).lower() or "no model has been trained" in texts(at).lower(), page
        assert not at.error, page
        if page != "pages/train.py":
            assert [b.label for b in at.button] == ["Build the demo collection and train"]
    assert not (tmp_path / "models").exists()  # looking starts nothing


def test_the_first_run_builds_the_demo_and_trains_with_progress(tmp_path):
    settings = Settings(model_dir=tmp_path / "models", images=tmp_path / "photos")
    at = open_app(settings)
    try:
        at.button(key="first-run").click().run()
        assert jobs.is_running(settings.model_dir) and jobs.read_status(settings.model_dir)["demo"]
        assert at.status and at.status[0].state == "running"
        assert "being trained" in texts(at)
        assert not [b for b in at.button if b.key == "first-run"]  # one run at a time: no second button
    finally:
        stop_when_reporting(settings.model_dir)
    at.run()
    assert not at.exception and store.current_id(settings.model_dir) is None
    assert "was stopped" in texts(at) and [b for b in at.button if b.key == "first-run"]  # offered again


def test_every_page_renders_with_a_trained_model(model_settings):
    version = store.load_version(model_settings.model_dir)
    at = open_app(model_settings)
    for page in PAGES:
        visit(at, page)
        assert version.id in " ".join(e.value for e in at.sidebar.text)
        assert [b.label for b in at.sidebar.button] == ["Retrain"]
        assert not any("Early model" in e.value for e in at.sidebar.caption)
        assert not at.error, f"{page}: {[e.value for e in at.error]}"
        assert at.title[0].value == Path(page).stem.title()

        if page == "pages/explore.py":
            assert len(at.get("plotly_chart")) == 2  # the map and the silhouette by k
            assert len(at.image[0].value) == int((version.groups == 0).sum())  # group 0's gallery

        if page == "pages/label.py":  # name a group, press Enter: saved, and the next group is shown
            at.session_state["label-tab"] = "Groups"  # a click on its tab: only the open tab is drawn
            at.run()
            at.text_input[0].input("brick walls")
            at.button(key="FormSubmitter:form-%s-0-Save and next" % version.id).click().run()
            assert load_names(model_settings.model_dir, version.id) == {0: "brick walls"}
            assert at.selectbox(key="label_group").value == 1
            assert at.get("download_button"), "the labels CSV"

        if page == "pages/train.py":
            assert len(at.table[0].value) == 1  # the versions table
            assert at.image, "typical images and their neighbours"
            assert not charts(at)  # the curves are Vega-Lite: no Plotly code for the browser to load
            [curves] = vega_charts(at)
            titles = curves["facet"]["sort"]
            assert titles == [t for t in ("loss", "reconstruction", "twin recall@1", "twin MRR") if t in titles]
            assert len(titles) >= 3 and all(len(t) <= 16 for t in titles)  # short titles: they cannot run together
            assert curves["columns"] == 2  # two a row
            axis = curves["spec"]["encoding"]["x"]["axis"]
            assert axis["format"] == "d" and axis["tickMinStep"] >= 1  # whole epochs


def charts(at: AppTest) -> list[dict]:
    """The page's Plotly figures, as the browser gets them."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def vega_charts(at: AppTest) -> list[dict]:
    """The page's Vega-Lite specs, as the browser gets them, each with its data's rows as `rows`."""
    import pyarrow as pa

    def rows(chart) -> list[dict]:
        data = chart.proto.data.data or (chart.proto.datasets[0].data.data if chart.proto.datasets else b"")
        return pa.ipc.open_stream(data).read_pandas().to_dict("records") if data else []

    return [{**json.loads(chart.proto.spec), "rows": rows(chart)} for chart in at.get("vega_lite_chart")]


def test_a_running_job_s_epochs_are_drawn_from_its_status_as_data(model_settings):
    """The Train page plots the measures the job keeps in its status (imgsim.runs.jobs), not numbers read from its text."""
    import subprocess
    import sys

    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "imgsim.runs.jobs"], start_new_session=True)
    while not jobs.pid_alive(run.pid):  # a run's own process, as far as any check can tell, once it has exec'd
        time.sleep(0.01)
    try:
        jobs.write_status(model_settings.model_dir, {
            "state": "running", "pid": run.pid, "pid_start": jobs.process_start(run.pid), "started": time.time(),
            "fraction": 0.5, "message": "epoch 7/9 · loss 9.0000", "curve": [[0.1, 2.5], [0.3, 1.6]],
            "measures": [{"epoch": 2, "loss": 1.5, "twin_mrr": 0.4}, {"epoch": 1, "loss": 2.0, "twin_mrr": 0.3},
                         {"epoch": 4, "loss": 1.0}]})  # out of order, and epoch 3 never reported
        at = visit(open_app(model_settings), "pages/train.py")
        live = [c for c in vega_charts(at) if "facet" in c and any(r["value"] == 1.5 for r in c["rows"])]
        assert len(live) == 1, "the running job's epochs"
        lines = {}
        for row in live[0]["rows"]:
            lines.setdefault((row["panel"], row["data"]), []).append((row["epoch"], row["value"]))
        assert lines == {("loss", "training"): [(1, 2.0), (2, 1.5), (4, 1.0)], ("twin MRR", "held out"): [(1, 0.3), (2, 0.4)]}
        assert live[0]["facet"]["sort"] == ["loss", "twin MRR"]
        [loss] = [c for c in vega_charts(at) if "facet" not in c]  # the run's loss by progress, from its status too
        assert [(r["progress"], r["loss"]) for r in loss["rows"]] == [pytest.approx((10, 2.5)), pytest.approx((30, 1.6))]
    finally:
        run.kill()
        run.wait()


def test_the_sidebar_says_when_the_active_model_is_the_early_one(model_settings):
    manifest_path = model_settings.model_dir / "versions" / store.current_id(model_settings.model_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "kind": "preview"}))
    at = open_app(model_settings)
    for page in PAGES:
        visit(at, page)
        assert any("Early model" in e.value for e in at.sidebar.caption), page


def test_a_damaged_model_is_reported_in_plain_words(model_settings):
    version_id = store.current_id(model_settings.model_dir)
    (model_settings.model_dir / "versions" / version_id / "centres.npy").write_bytes(b"damaged")
    at = open_app(model_settings)
    for page in PAGES:
        visit(at, page)
        assert any(markdown_text("centres.npy is missing or damaged") in e.value for e in at.error), page


def version_whose_model_will_not_load(model_dir) -> str:
    """A copy of the current version whose model.keras was edited by hand (checksums updated): intact, but Keras refuses it."""
    import zipfile

    first = store.current_id(model_dir)
    second = first[:-4] + "beef"
    folder = Path(shutil.copytree(model_dir / "versions" / first, model_dir / "versions" / second))
    with zipfile.ZipFile(folder / "model.keras") as zf:
        parts = {name: zf.read(name) for name in zf.namelist()}
    parts["config.json"] = parts["config.json"].replace(b'"encoder"', b'"encodr"')
    with zipfile.ZipFile(folder / "model.keras", "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["id"], manifest["checksums"]["model.keras"] = second, store.sha256_of(folder / "model.keras")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    store.set_current(model_dir, second)
    return second


def test_a_model_that_will_not_load_falls_back_to_the_newest_that_does(model_settings, tiny_collection, monkeypatch):
    from imgsim.storage.group_names import save_names

    intact = store.current_id(model_settings.model_dir)
    save_names(model_settings.model_dir, intact, {g: f"intact-{g}" for g in range(TINY["clusters"])})
    broken = version_whose_model_will_not_load(model_settings.model_dir)
    monkeypatch.setenv("IMGSIM_READONLY", "1")  # a visitor: told without server paths
    query = sorted(tiny_collection.rglob("*.jpg"))[0]
    at = open_app(model_settings)
    at.file_uploader(key="upload").set_value((query.name, query.read_bytes(), "image/jpeg")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.image) == 1 + 8  # the query, then 8 results from the version that loads
    [warning] = at.warning
    assert broken in warning.value and intact in warning.value
    assert str(model_settings.model_dir) not in warning.value and "model.keras" not in warning.value
    assert all(markdown_text("intact-") in c.value for c in at.main.caption[-8:])  # that version's group names


def test_searching_with_an_uploaded_image_shows_n_results(model_settings, tiny_collection, monkeypatch):
    from imgsim.inputs import images

    query = sorted(tiny_collection.rglob("*.jpg"))[0]
    decodes = []
    real_opened = images.opened  # every decode goes through it: open_image, and decode_with_picture (a query's)
    monkeypatch.setattr(images, "opened", lambda data, name, draft_size, stretch: (
        decodes.append(data == query.read_bytes() and stretch), real_opened(data, name, draft_size, stretch))[1])
    st.cache_data.clear()  # an earlier test may have made this upload ready already: decoded queries are cached by bytes
    at = open_app(model_settings)
    at.file_uploader(key="upload").set_value((query.name, query.read_bytes(), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert len(at.image) == 1 + 8  # the query, then N = 8 results
    assert all("group" in c.value for c in at.main.caption[-8:])
    assert any("Ordered by similarity alone" in c.value and "too small for keypoints" in c.value
               for c in at.main.caption)  # a tiny model's 32 px: the page says why nothing was re-checked
    shown = markdown_text(query.stem)  # captions show names escaped for Markdown
    # the upload is a collection file's bytes: that file comes back first, as an exact copy, and only once
    assert "exact copy" in at.main.caption[-8].value and shown in at.main.caption[-8].value
    assert shown not in " ".join(c.value for c in at.main.caption[-7:])
    assert any("is in your collection as" in e.value and shown in e.value for e in at.info)

    at.slider(key="n").set_value(3).run()
    assert len(at.image) == 1 + 3
    at.segmented_control(key="scope").set_value("all").run()
    assert len(at.image) == 1 + 3 and not at.exception
    assert decodes.count(True) == 1  # the upload is decoded for the model once, whatever N and scope

    at.file_uploader(key="upload").set_value(("notes.png", b"these are not pixels", "image/png")).run()
    assert "not an image" in at.error[0].value and not at.exception


def test_searching_by_url_and_by_a_collection_image(model_settings, tiny_collection, http_server, monkeypatch):
    query = sorted(tiny_collection.rglob("*.jpg"))[5]
    url = http_server.serve("/query.jpg", query.read_bytes(), content_type="image/jpeg")
    at = open_app(model_settings)
    at.segmented_control(key="how").set_value("URL").run()

    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS", raising=False)
    at.text_input(key="url").input(url).run()
    assert at.error and markdown_text("127.0.0.1") in at.error[0].value and not at.exception  # refused, in words
    assert len(at.image) == 0

    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    at.text_input(key="url").input(url + "?again").run()
    assert not at.error and len(at.image) == 1 + 8

    at.segmented_control(key="how").set_value("Collection").run()
    at.selectbox(key="pick").select(str(query)).run()
    assert not at.error and len(at.image) == 1 + 8
    assert markdown_text(query.stem) not in " ".join(c.value for c in at.main.caption[-8:])  # picked: the file itself


def test_another_version_can_be_made_active_on_the_train_page(model_settings):
    model_dir = model_settings.model_dir
    first = store.current_id(model_dir)
    second = first[:-4] + "beef"  # a copy of the version under another id: versions are plain folders
    shutil.copytree(model_dir / "versions" / first, model_dir / "versions" / second)
    manifest = json.loads((model_dir / "versions" / second / "manifest.json").read_text())
    (model_dir / "versions" / second / "manifest.json").write_text(json.dumps({**manifest, "id": second}))

    at = open_app(model_settings)
    visit(at, "pages/train.py")
    assert len(at.table[0].value) == 2
    at.selectbox(key="use-version").select(second).run()
    [button] = [b for b in at.button if b.label == "Make active"]
    button.click().run()
    assert store.current_id(model_dir) == second and not at.exception
    assert second in " ".join(e.value for e in at.sidebar.text)


def test_old_versions_can_be_pruned_on_the_train_page(model_settings):
    model_dir = model_settings.model_dir
    first = store.current_id(model_dir)
    copies = [first[:-4] + suffix for suffix in ("fffe", "ffff")]  # newer copies of the version: plain folders
    for copy in copies:
        shutil.copytree(model_dir / "versions" / first, model_dir / "versions" / copy)
        manifest = json.loads((model_dir / "versions" / copy / "manifest.json").read_text())
        (model_dir / "versions" / copy / "manifest.json").write_text(json.dumps({**manifest, "id": copy}))

    at = open_app(model_settings)
    visit(at, "pages/train.py")
    at.number_input(key="prune-keep").set_value(1).run()
    [button] = [b for b in at.button if b.label == "Remove old versions"]
    button.click().run()
    assert not at.exception and any("Removed 1 version(s)" in e.value for e in at.success), texts(at)
    assert sorted(p.name for p in (model_dir / "versions").iterdir()) == [first, copies[1]]  # the active one stays
    assert len(at.table[0].value) == 2 and store.load_version(model_dir).id == first


def test_retraining_from_the_sidebar_starts_a_run_and_the_pages_report_it(model_settings):
    at = open_app(model_settings)
    at.session_state["train_settings"] = {"epochs": 30}  # the tiny model's 1 epoch: its first report was its last,
    at.run()  # and a stop sent then could come after the run had ended (failed once, on a loaded machine)
    assert "30 epochs" in at.button(key="sidebar-retrain").help
    try:
        at.button(key="sidebar-retrain").click().run()
        assert jobs.is_running(model_settings.model_dir)
        assert any("Training started" in e.value for e in at.sidebar.info), texts(at)
        assert at.sidebar.status and at.sidebar.status[0].label.startswith("Training")

        at.button(key="sidebar-retrain").click().run()  # a second trigger is told, not started
        assert any("already in progress" in e.value for e in at.sidebar.warning)

        visit(at, "pages/train.py")
        assert at.status and at.status[0].state == "running"
        assert [b for b in at.button if b.label == "Stop training"]
    finally:
        stop_when_reporting(model_settings.model_dir)
    at.run()
    assert not at.exception and jobs.training_status(model_settings.model_dir)["stopped"]
    assert "was stopped" in texts(at)


@pytest.mark.parametrize("parent", ["", "caf\udce9"], ids=["typed-folder", "default-folder-not-utf8"])
def test_duplicates_page_finds_copies_and_moves_and_undoes_them(model_settings, tiny_collection, tmp_path, parent):
    """Into a typed folder, or into the one offered beside the collection, whose folder's name holds a byte that
    is not UTF-8 (the offered path could not be sent to the browser, nor the undo button's key hashed)."""
    from imgsim.runs.indexing import index

    photos = shutil.copytree(tiny_collection, tmp_path / parent / "photos")
    original = sorted(photos.rglob("*.jpg"))[0]
    copy = photos / "copy-of-it.jpg"
    shutil.copy(original, copy)
    settings = model_settings.replace(images=photos)
    index(settings)
    scan_and_save(store.load_version(settings.model_dir))  # what the background job does for a new version
    at = open_app(settings)
    visit(at, "pages/duplicates.py")
    assert not at.error
    assert any("exact copies" in e.value for e in at.markdown)
    assert at.get("download_button")
    [move] = [b for b in at.button if b.label == "Move the others"]
    assert move.disabled  # nothing moves before the confirmation is ticked
    target = tmp_path / "moved" if not parent else photos.with_name("imgsim-duplicates")
    if not parent:
        at.text_input(key="dup-target").input(str(target))
    at.checkbox(key="dup-sure").check().run()
    [move] = [b for b in at.button if b.label == "Move the others"]
    move.click().run()
    assert not at.exception and any("Moved" in e.value for e in at.success), [e.value for e in at.error]
    assert original.exists() != copy.exists()  # exactly one of the pair moved, the other kept
    assert any(target.rglob("*.jpg"))
    [undo] = [b for b in at.button if b.label.startswith("Undo the move")]
    undo.click().run()
    assert original.exists() and copy.exists() and original.read_bytes() == copy.read_bytes()
    assert any("back" in e.value for e in at.success)


def test_urls_in_file_and_group_names_never_become_links(model_settings, tiny_collection, tmp_path):
    """GitHub's Markdown links bare URLs after unescaping: names holding https://... or www.... must not become links."""
    from imgsim.runs.indexing import index
    from imgsim.storage.group_names import save_names

    photos = shutil.copytree(tiny_collection, tmp_path / "photos")
    original = min(photos.rglob("*.jpg"))
    shutil.copy(original, photos / "www.x.example.jpg")  # an exact copy: on the Search and Duplicates pages
    settings = model_settings.replace(images=photos)
    index(settings)
    version = store.load_version(settings.model_dir)
    save_names(settings.model_dir, version.id, {g: "see https://x.example or www.x.example" for g in range(TINY["clusters"])})
    scan_and_save(version)

    def linkable(text: str) -> bool:
        plain = text.replace("\\", "")
        return "://" in plain or "www." in plain.lower()

    at = open_app(settings)
    at.file_uploader(key="upload").set_value(("https://x.example www.x.example.jpg", original.read_bytes(), "image/jpeg")).run()
    shown = [e.value for e in (*at.main.caption, *at.main.markdown, *at.info)]
    assert any("x\\.example\\.jpg" in text for text in shown) and any("x\\.example or" in text for text in shown)
    assert not [text for text in shown if linkable(text)]
    visit(at, "pages/duplicates.py")
    options = [option for box in at.main.selectbox for option in box.options]  # a drop-down shows text, not Markdown
    captions = [picture.caption for image in at.main.image for picture in image.proto.imgs]
    shown = [e.value for e in (*at.main.caption, *at.main.markdown)] + captions
    assert "www.x.example.jpg" in options and any("x\\.example\\.jpg" in text for text in captions)
    assert not [text for text in shown if linkable(text)]


def test_a_file_name_that_is_not_utf8_is_shown_escaped_on_every_page(model_settings, tiny_collection, tmp_path):
    import os

    from imgsim.runs.indexing import index

    photos = shutil.copytree(tiny_collection, tmp_path / "photos")
    bad = os.path.join(os.fsencode(photos), b"caf\xe9\n-x.jpg")
    shutil.copy(os.fsencode(sorted(photos.rglob("*.jpg"))[0]), bad)
    settings = model_settings.replace(images=photos)
    index(settings)
    assert os.fsdecode(bad) in store.load_version(settings.model_dir).paths  # stored exactly
    at = open_app(settings)
    for page in PAGES:
        visit(at, page)  # thumbnails of that file are cached by its bytes, never hashed as UTF-8
        assert not at.error, page
    at.switch_page("pages/search.py").run()
    at.segmented_control(key="how").set_value("Collection").run()
    [shown] = [o for o in at.selectbox(key="pick").options if "caf" in o]
    assert shown == "caf\\xe9\\n-x.jpg"
    at.selectbox(key="pick").select(os.fsdecode(bad)).run()
    assert not at.exception and not at.error and len(at.image) == 1 + 8


def test_folders_named_with_bytes_that_are_not_utf8_serve_every_page(trained_model_dir, tiny_collection, tmp_path):
    """`imgsim serve` over folders named on another system: every page draws, before and after a model, and the
    sidebar shows the folder's name escaped. Streamlit's caches hash a str as UTF-8, which such a name cannot be,
    and its text element cannot send one: every page failed on them."""
    from imgsim.inputs.collection import scan_folder

    odd = tmp_path / "<b>caf\udce9</b>"  # os.fsdecode(b"caf\xe9"): the byte kept as a lone surrogate
    settings = Settings(model_dir=odd / "models\udcff", images=Path(shutil.copytree(tiny_collection, odd / "photos")))
    shown = f"{tmp_path}/<b>caf\\xe9</b>/photos"
    at = open_app(settings)
    for page in PAGES:
        visit(at, page)
        assert not at.error, page
        assert [e.value for e in at.sidebar.text] == [shown]
        if page != "pages/train.py":  # the other pages count the folder and offer to train on it
            assert f"Train one on the {len(scan_folder(settings.images))} images in" in texts(at), page

    shutil.copytree(trained_model_dir, settings.model_dir)
    version = store.load_version(settings.model_dir)
    at.switch_page(PAGES[0]).run()
    for page in PAGES:
        visit(at, page)
        assert not at.error, page
        assert [e.value for e in at.sidebar.text] == [shown, version.id]
    at.switch_page("pages/search.py").run()
    at.segmented_control(key="how").set_value("Collection").run()
    at.selectbox(key="pick").select(version.paths[0]).run()
    assert not at.exception and not at.error and len(at.image) == 1 + 8
