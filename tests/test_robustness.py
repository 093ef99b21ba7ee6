"""A retraining killed at any point leaves the previous version answering; queries during a
retraining are answered wholly by one version."""

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from imgsim.search import Searcher
from imgsim.storage import store
from tests.helpers import TINY

ROOT = Path(__file__).resolve().parent.parent

# A child that trains the tiny model and stops (touches `marker`, then sleeps) at one point.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from imgsim import Settings
    from imgsim.storage import store
    from imgsim.runs import training
    point, marker, model_dir, images = sys.argv[1:5]

    def pause():
        Path(marker).touch()
        time.sleep(600)

    if point == "epoch":
        progress = lambda fraction, message: pause() if str(message).startswith("epoch 1/") else None
    else:
        progress = lambda fraction, message: None
    if point == "saving":  # model saved, arrays half written into staging/
        real_save = store.np.save
        def save(path, *a, **k):
            real_save(path, *a, **k)
            pause()
        store.np.save = save
    if point == "pointer":  # version complete in versions/, CURRENT not yet switched
        store.set_current = lambda *a: pause()
    from tests.helpers import TINY
    settings = Settings(model_dir=model_dir, images=images, **{**TINY, "epochs": 2})
    training.train(settings, progress)
""")


@pytest.mark.parametrize("point", ["epoch", "saving", "pointer"])
def test_sigkill_during_training_leaves_previous_version_answering(point, model_copy, tiny_collection, tmp_path):
    before = store.current_id(model_copy)
    query = sorted(tiny_collection.rglob("*.jpg"))[0]
    expected = Searcher.load(model_copy).query(query, n=3).to_dict()
    marker = tmp_path / "reached"
    child = subprocess.Popen([sys.executable, "-c", CHILD, point, str(marker), str(model_copy), str(tiny_collection)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "child never reached the kill point"
        time.sleep(0.1)
    assert store.is_busy(model_copy)  # the run holds the lock while it works
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

    assert store.current_id(model_copy) == before
    assert Searcher.load(model_copy).query(query, n=3).to_dict() == expected
    assert not store.is_busy(model_copy)  # the kernel released the dead run's lock
    with store.writer_lock(model_copy):
        store.clear_staging(model_copy)
    assert not (model_copy / "staging").exists() or not any((model_copy / "staging").iterdir())


def same_answer(one: dict, other: dict) -> bool:
    """The same images, in the same order, with the same groups, from the same query; scores equal to 1e-4
    (a query encoded while other threads share the cores can differ from one encoded alone in the 6th decimal)."""
    def without_scores(answer):
        return {**answer, "results": [{k: v for k, v in r.items() if k not in ("score", "distance")}
                                      for r in answer["results"]]}

    scores = [[r["score"] for r in answer["results"]] for answer in (one, other)]
    return without_scores(one) == without_scores(other) and np.allclose(*scores, atol=1e-4)


def test_queries_during_a_retraining_each_come_from_one_whole_version(model_copy, tiny_collection):
    from imgsim import Settings
    from imgsim.runs.training import train

    queries = sorted(tiny_collection.rglob("*.jpg"))[:4]
    cache, cache_lock = {}, threading.Lock()

    def current_searcher():
        # What the dashboard does: resolve CURRENT once, then use that version's cached searcher.
        vid = store.current_id(model_copy)
        with cache_lock:
            if vid not in cache:
                cache[vid] = Searcher.load(model_copy, vid)
            return cache[vid]

    first = current_searcher().version.id
    answers, errors, done, switched = [], [], threading.Event(), threading.Event()

    def client(k):
        while not done.is_set() or len(answers) < 40:
            try:
                searcher = current_searcher()
                if searcher.version.id != first:
                    switched.set()
                q = queries[k % len(queries)]
                answers.append((searcher.version.id, str(q), searcher.query(q, n=3, scope="all").to_dict()))
            except Exception as exc:  # noqa: BLE001 - any error at all fails the test
                errors.append(repr(exc))
                return

    # 4 clients keep the searcher busy (the cores and the GIL bound the queries a second, not the threads) and
    # leave the retraining's Python (tracing its fit) about a fifth of the GIL, where 20 left it a 21st
    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    new = train(Settings(model_dir=model_copy, images=tiny_collection, **{**TINY, "seed": 5})).version
    switched.wait(120)  # a client has answered from the new version
    done.set()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    versions = {vid for vid, _, _ in answers}
    assert new in versions and len(versions) == 2
    asked_again = {}  # each (version, query) asked once more, alone: every answer given under load must equal it
    for vid, q, answer in answers:
        if (vid, q) not in asked_again:
            again = Searcher.load(model_copy, vid) if vid not in cache else cache[vid]
            asked_again[vid, q] = again.query(q, n=3, scope="all").to_dict(), set(again.paths)
        expected, paths = asked_again[vid, q]
        assert same_answer(expected, answer)
        assert set(r["path"] for r in answer["results"]) <= paths
        assert np.isfinite([r["score"] for r in answer["results"]]).all()


def test_training_on_a_collection_a_stranger_arranged_finishes_and_says_what_it_left_out(tmp_path, tiny_collection):
    """Undecodable and multi-line names are trained on; link loops, links to nothing and links leaving the
    folder are listed, not fatal (a loop used to abort the run; a non-UTF-8 name crashed it after training)."""
    import os
    import shutil

    from PIL import Image

    from imgsim import Settings
    from imgsim.runs.training import train
    from tests.helpers import TINY

    images = Path(shutil.copytree(tiny_collection, tmp_path / "images"))
    sample = Image.open(sorted(images.rglob("*.jpg"))[0])
    odd = [b"caf\xe9.jpg", b"two\nlines.jpg", b"-rf.jpg"]
    for turn, raw in enumerate(odd, 1):
        with open(os.path.join(os.fsencode(images), raw), "wb") as fh:
            sample.rotate(turn * 11).save(fh, "JPEG")
    (tmp_path / "outside").mkdir()
    sample.save(tmp_path / "outside" / "secret.jpg")
    os.symlink(tmp_path / "outside" / "secret.jpg", images / "secret.jpg")
    os.symlink(tmp_path / "outside", images / "elsewhere")
    os.symlink("loop.jpg", images / "loop.jpg")
    os.symlink("nowhere.jpg", images / "gone.jpg")
    os.symlink("..", images / "astronaut" / "up")
    (images / "notes.txt").write_text("not an image")

    report = train(Settings(model_dir=tmp_path / "models", images=images, **TINY))
    version = store.load_version(tmp_path / "models")
    assert report.version == version.id and report.images == len(version) == 24 + len(odd)
    for raw in odd:
        assert os.path.join(str(images), os.fsdecode(raw)) in version.paths
    assert not [p for p in version.paths if "secret" in p or "elsewhere" in p or "loop" in p or "gone" in p]
    assert sorted(os.path.relpath(p, images) for p in report.skipped.reasons) == [
        "astronaut/up", "elsewhere", "gone.jpg", "loop.jpg", "secret.jpg"]
    summary = report.summary()
    assert "\n" not in summary and "skipped 5 file(s)" in summary and "1 file(s) are not images" in summary
    assert store.current_id(tmp_path / "models") == version.id
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["secret.jpg"]  # nothing written there
