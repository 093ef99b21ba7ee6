"""What `GET /duplicates` and `Collection.duplicates` answer: the stored scan once there is one, and never a new scan."""

import time

import numpy as np
import pytest

import imgsim
from imgsim.duplicates import finding, results
from imgsim.duplicates.finding import DuplicateScan
from imgsim.storage import store
from imgsim.storage.manifest import Manifest
from imgsim.storage.records import Records


@pytest.fixture
def version_with_a_copy(tmp_path):
    """Six images (synthetic vectors, no model), two of them the same bytes."""
    n, model_dir = 6, tmp_path / "models"
    sha1 = [f"{i:040x}" for i in range(n)]
    sha1[4] = sha1[1]  # a copy of image 1
    records = Records.build([f"{tmp_path}/photos/{i}.jpg" for i in range(n)], [1] * n, [0] * n, sha1,
                            np.zeros(n, int), np.zeros((n, 2), np.float32))
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    with store.writer_lock(model_dir):
        entries, state = store.save_collection(model_dir, "exact", records, vectors)
        store.write_version(model_dir, manifest=Manifest(kind="train", settings={"image_size": 32},
                                                         images_root=str(tmp_path / "photos")),
                            records=entries, engine=state, centres=np.zeros((1, 8), np.float32), history={},
                            save_model=lambda p: p.write_bytes(b""))
    return model_dir


def test_exact_copies_first_then_the_stored_scan_and_never_a_scan_of_its_own(version_with_a_copy, monkeypatch):
    monkeypatch.setattr(finding, "scan_duplicates", lambda *a, **k: pytest.fail("a question started a scan"))
    collection = imgsim.open(version_with_a_copy)
    before = collection.duplicates()
    assert not before.near and before.threshold is None
    assert [(g.exact, sorted(m.path for m in g.images)) for g in before.groups] == [(True, ["1.jpg", "4.jpg"])]

    version = store.load_version(version_with_a_copy)
    results.result_path(version.model_dir, version.id).parent.mkdir(parents=True)  # what scan_and_save's lock makes
    results.save(version, DuplicateScan.exact_only(version), started=time.time())  # as the background job stores one
    after = collection.duplicates()
    assert after.near and after.threshold == 1.0  # the stored scan's floor, above the default threshold
    assert [(g.exact, sorted(m.path for m in g.images)) for g in after.groups] == [(True, ["1.jpg", "4.jpg"])]
