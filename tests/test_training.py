from pathlib import Path

from imgsim import Settings
from imgsim.runs import training
from imgsim.search import Searcher
from imgsim.storage import store
from tests.helpers import TINY


def test_a_first_model_is_published_during_a_long_fit_and_the_final_one_descends_from_it(tiny_collection, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setattr(training, "PREVIEW_AFTER_S", 0.0)  # every fit counts as long
    model_dir = tmp_path / "models"
    current_when_ready = []

    def progress(fraction, message):
        if "training goes on" in str(message):  # the announcement, once the preview is current
            current_when_ready.append(store.current_id(model_dir))

    report = training.train(Settings(model_dir=model_dir, images=tiny_collection, **{**TINY, "epochs": 4}), progress)
    assert len(current_when_ready) == 1, "one preview, announced once it was current"
    preview_id = current_when_ready[0]
    assert preview_id != report.version and store.current_id(model_dir) == report.version
    manifests = {m["id"]: m for m in store.list_versions(model_dir)}
    assert set(manifests) == {preview_id, report.version}
    assert manifests[preview_id]["kind"] == "preview" and manifests[preview_id]["parent"] is None
    assert manifests[report.version]["kind"] == "train" and manifests[report.version]["parent"] == preview_id
    assert manifests[preview_id]["metrics"]["twin_mrr"] is not None  # the published epoch's measure
    query = sorted(Path(tiny_collection).rglob("*.jpg"))[0]
    assert len(Searcher.load(model_dir, preview_id).query(query, n=3).results) == 3


def test_a_retraining_or_a_short_fit_publishes_no_preview(model_copy, tiny_collection, monkeypatch):
    before = {m["id"] for m in store.list_versions(model_copy)}
    monkeypatch.setattr(training, "PREVIEW_AFTER_S", 0.0)
    report = training.train(Settings(model_dir=model_copy, images=tiny_collection, **{**TINY, "epochs": 4}))
    assert {m["id"] for m in store.list_versions(model_copy)} - before == {report.version}, "a model was current"
    monkeypatch.setattr(training, "PREVIEW_AFTER_S", 3600.0)
    before = {m["id"] for m in store.list_versions(model_copy)}
    report = training.train(Settings(model_dir=model_copy, images=tiny_collection, **{**TINY, "epochs": 4}),
                            preview=True)
    assert {m["id"] for m in store.list_versions(model_copy)} - before == {report.version}, "the fit was short"


def test_a_version_records_its_backend_and_every_training_knob(trained_model_dir):
    """The manifest names the Keras backend and its version, and holds every Settings field that shapes a model,
    so that Settings(**manifest['settings']) retrains it."""
    import keras

    manifest = store.load_version(trained_model_dir).manifest
    name = keras.backend.backend()
    assert manifest["libraries"]["keras_backend"] == name
    assert manifest["libraries"][name] == __import__(name).__version__
    again = Settings(**manifest["settings"])
    assert again.training_dict() == manifest["settings"]
    assert {"learning_rate", "stage_filters", "view_area", "loss_covariance"} <= set(manifest["settings"])
    assert again.replace(**{k: v for k, v in TINY.items() if k != "workers"}).training_dict() == manifest["settings"]


def test_importing_indexing_loads_neither_the_trainer_nor_a_keras_backend():
    """indexing shares RunReport and friends through imgsim.runs: importing it costs no TensorFlow (issue 19)."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = ("import sys, imgsim.runs.indexing; "
            "print(sorted(m for m in ('imgsim.runs.training', 'imgsim.learning.fit', 'keras', 'tensorflow', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
