"""A person's labels per image: kept by stable id, changed whole under one lock, undoable, never lost."""

import json
import multiprocessing
import os
import time

import pytest

from imgsim.core.errors import ImgsimError
from imgsim.storage.annotations import MAX_LABEL_CHARS, LabelStore, clean_label


def test_set_clear_and_undo_round_trip(tmp_path):
    labels = LabelStore(tmp_path)
    assert labels.load() == {} and labels.undo() is None
    assert labels.set([1, 2, 3], "  cats  ", {1: "/a/1.jpg"}) == 3
    assert labels.set([3, 4], "dogs") == 2
    assert {i: label.label for i, label in labels.load().items()} == {1: "cats", 2: "cats", 3: "dogs", 4: "dogs"}
    assert labels.load()[1].path == "/a/1.jpg" and labels.load()[1].via == "set"
    assert labels.undoable()["label"] == "dogs" and labels.undoable()["count"] == 2

    labels.undo()  # the dogs: 3 is a cat again, 4 has no label
    assert {i: label.label for i, label in labels.load().items()} == {1: "cats", 2: "cats", 3: "cats"}
    assert labels.undoable()["label"] == "cats"
    labels.clear([2, 99])
    assert sorted(labels.load()) == [1, 3]
    labels.undo()
    labels.undo()
    assert labels.load() == {} and labels.undoable() is None


def test_setting_the_same_label_again_changes_and_logs_nothing(tmp_path):
    labels = LabelStore(tmp_path)
    labels.set([1, 2], "cats")
    lines = labels.log_path.read_text().count("\n")
    assert labels.set([1, 2], "cats") == 0
    assert labels.log_path.read_text().count("\n") == lines


@pytest.mark.parametrize("bad", ["", "   ", "x" * (MAX_LABEL_CHARS + 1), "bell\x07", "rtl\u202eevil"])
def test_a_bad_label_is_refused_and_changes_nothing(tmp_path, bad):
    labels = LabelStore(tmp_path)
    labels.set([1], "cats")
    with pytest.raises(ImgsimError):
        labels.set([1, 2], bad)
    assert {i: label.label for i, label in labels.load().items()} == {1: "cats"}


def test_names_are_kept_as_typed_text():
    for name in ("=HYPERLINK(\"http://x\")", "<b>bold</b>", "[link](http://evil)", "$x^2$", "日本 ✓", "a/b/../c"):
        assert clean_label(name) == name
    assert clean_label("two\nlines\tand  tabs") == "two lines and tabs"


def test_ten_thousand_images_in_one_call(tmp_path):
    labels = LabelStore(tmp_path)
    assert labels.set(range(10_000), "bulk") == 10_000
    assert len(labels.load()) == 10_000
    labels.undo()
    assert labels.load() == {}


def test_a_kill_during_the_write_leaves_the_last_complete_labels(tmp_path, monkeypatch):
    labels = LabelStore(tmp_path)
    labels.set([1], "cats")

    def killed(*args):
        raise KeyboardInterrupt  # the process dies before the new labels replace the old ones

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        labels.set([1, 2], "dogs")
    monkeypatch.undo()
    assert {i: label.label for i, label in labels.load().items()} == {1: "cats"}
    assert [p.name for p in labels.folder.iterdir() if p.name.startswith(".labels")] == []  # no temporary left
    labels.undo()  # the logged change never landed: undoing it restores what is there, the cats
    assert {i: label.label for i, label in labels.load().items()} == {1: "cats"}


def test_a_torn_log_line_is_skipped(tmp_path):
    labels = LabelStore(tmp_path)
    labels.set([1], "cats")
    with open(labels.log_path, "a") as fh:
        fh.write('{"op": "x", "action": "set", "bef')  # a kill mid-append
    labels.set([2], "dogs")
    assert len(labels.history()) == 2
    labels.undo()
    assert sorted(labels.load()) == [1]


def test_a_hand_edited_labels_file_is_read_as_data(tmp_path):
    labels = LabelStore(tmp_path)
    labels.folder.mkdir()
    labels.labels_path.write_text(json.dumps({"labels": {"1": {"label": "ok"}, "x": {"label": "no id"},
                                                         "2": {"label": "\x1b[31m"}, "3": "not a mapping",
                                                         "4": {"label": "fine", "via": "rm -rf"}}}))
    assert {i: (label.label, label.via) for i, label in labels.load().items()} == {1: ("ok", "set"), 4: ("fine", "set")}
    labels.labels_path.write_text("{not json")
    with pytest.raises(ImgsimError, match="labels.json: unreadable"):
        labels.load()


def label_many(folder, start, count, name, ready, locked):
    """Label `count` images one at a time, from the moment both writers are ready; a read takes 5 ms longer,
    so that a writer without the lock is sure to read what the other is about to replace."""
    import contextlib

    labels = LabelStore(folder)
    read = labels._read
    labels._read = lambda: (read(), time.sleep(0.005))[0]
    if not locked:
        labels._locked = contextlib.nullcontext
    ready.wait(60)
    for i in range(start, start + count):
        labels.set([i], name)


def two_writers(folder, locked: bool) -> list[int]:
    LabelStore(folder).folder.mkdir(parents=True)  # the lock would make it; the control run has none
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(2)
    workers = [context.Process(target=label_many, args=(folder, start, 40, name, ready, locked))
               for start, name in ((0, "left"), (1000, "right"))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    return sorted(LabelStore(folder).load())


def test_two_writers_at_once_lose_no_label(tmp_path):
    control = two_writers(tmp_path / "without the lock", locked=False)
    assert len(control) < 80  # the race is real: one writer's labels replaced the other's
    assert two_writers(tmp_path / "with it", locked=True) == list(range(40)) + list(range(1000, 1040))


def test_unlabelled_only_never_overwrites_a_label_given_meanwhile(tmp_path):
    labels = LabelStore(tmp_path)
    labels.set([2], "given by the command line")  # after the page read the labels, before its accept landed
    assert labels.change({1: "cats", 2: "cats"}, via="accept", unlabelled_only=True) == 1
    assert {i: (label.label, label.via) for i, label in labels.load().items()} == {
        1: ("cats", "accept"), 2: ("given by the command line", "set")}


def test_kill_9_mid_write_leaves_a_complete_state(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys; from imgsim.storage.annotations import LabelStore\n"
              "labels = LabelStore(sys.argv[1])\n"
              "for step in range(1000):\n"
              "    labels.set(range(step * 500, step * 500 + 500), f'batch {step}')\n"
              "    print(step, flush=True)\n")
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for _ in range(3):  # a few complete writes, then a kill somewhere inside the next ones
        writer.stdout.readline()
    time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    labels = LabelStore(tmp_path).load()  # whole, never torn
    assert len(labels) % 500 == 0 and len(labels) >= 1500
    assert {label.label for label in labels.values()} == {f"batch {step}" for step in range(len(labels) // 500)}


def test_a_file_name_that_is_not_utf8_is_kept_exactly(tmp_path):
    path = os.fsdecode(b"/photos/caf\xe9 =1+1.jpg")  # a lone surrogate in the str
    labels = LabelStore(tmp_path)
    labels.set([7], "caf\u00e9", {7: path})
    assert labels.load()[7].path == path and labels.load()[7].label == "café"
    labels.undo()
    assert labels.load() == {}


DEEP = "[" * 200_000 + "]" * 200_000  # nesting that exhausts json's recursion


@pytest.mark.parametrize("body", [
    {"labels": {"²": {"label": "superscript two"}, "1": {"label": "ok"}}},  # "²".isdigit() is True, int("²") fails
    {"labels": {"1": {"label": "ok"}}, "undoable": {"op": ["x"], "action": {"a": 1}, "label": 5, "count": 3, "at": 1}},
    {"labels": {"1": {"label": "ok"}}, "undoable": {"count": True, "action": "set"}},
], ids=["superscript-key", "summary-of-wrong-types", "count-true"])
def test_a_hand_edited_labels_file_with_hostile_keys_or_summary_is_read_as_data(tmp_path, body):
    labels = LabelStore(tmp_path)
    labels.folder.mkdir()
    labels.labels_path.write_text(json.dumps(body))
    assert {i: label.label for i, label in labels.load().items()} == {1: "ok"}
    summary = labels.undoable()
    assert summary is None or all(v is None or isinstance(v, str) for k, v in summary.items() if k != "count")
    assert labels.set([2], "dogs") == 1 and labels.undo() is not None  # the store still works


def test_a_labels_file_nested_too_deep_is_one_clear_error(tmp_path):
    labels = LabelStore(tmp_path)
    labels.folder.mkdir()
    labels.labels_path.write_text(DEEP)
    for call in (labels.load, labels.undoable, lambda: labels.set([1], "cats")):
        with pytest.raises(ImgsimError, match=r"labels.json: unreadable \(RecursionError\)"):
            call()


@pytest.mark.parametrize("line", [
    '{"op": ["a list"], "action": "set", "count": 1, "before": {"1": null}}',
    '{"op": "u1", "action": "undo", "undoes": ["a list"], "count": 1, "before": {}}',
    '{"op": "x2", "action": "set", "count": 1, "before": {"²": null, "7": null}}',
    DEEP,
], ids=["list-op", "list-undoes", "superscript-key", "deep"])
def test_a_hand_edited_log_line_is_skipped_or_read_as_data_and_undo_still_works(tmp_path, line):
    labels = LabelStore(tmp_path)
    labels.set([1], "cats")
    with open(labels.log_path, "a") as fh:
        fh.write("\n" + line + "\n")
    labels.set([2], "dogs")
    assert all(isinstance(entry["op"], str) for entry in labels.history())
    assert labels.undoable_changes()[0]["action"] == "set"
    assert labels.undo() is not None and sorted(labels.load()) == [1]  # the dogs undone
    labels.undo()  # and the cats, or the hand-edited line (which names no real label): never a crash
    assert set(labels.load()) <= {1}


def test_group_names_files_with_hostile_keys_or_nesting_read_as_data(tmp_path):
    from imgsim.storage.group_names import labels_path, load_names

    version = "20260101-000000-abcd"
    path = labels_path(tmp_path, version)
    path.parent.mkdir()
    path.write_text(json.dumps({"²": "superscript", "1": "cats"}))
    assert load_names(tmp_path, version) == {1: "cats"}
    path.write_text(DEEP)
    assert load_names(tmp_path, version) == {}
