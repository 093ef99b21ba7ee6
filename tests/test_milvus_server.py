"""A real Milvus standalone server shared by processes at once, and what a wrong server address gets.

The engine contract itself runs against the same server in tests/test_engines.py ("milvus-server").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from servers import ROOT

from imgsim.storage.engines import load_engine, make_engine

DIM = 16

READER = """
import json, os, sys, time
import numpy as np
from imgsim.storage.engines import load_engine
store, state, following = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
engine = load_engine(store, state)           # a second client on the same collection, held open
query = np.ones(%d, np.float32)
print("ready", len(engine), flush=True)
answers = 0
while not os.path.exists(following):         # searching all the time the writer writes
    assert len(engine.search(query, 5)) == 5
    answers += 1
engine = load_engine(store, json.load(open(following)))  # the writer's new version, as a page rerun loads it
hits = [i for i, _ in engine.search(np.eye(%d, dtype=np.float32)[3], 1)]
print("switched", len(engine), hits, answers, flush=True)
""" % (DIM, DIM)


def test_two_processes_share_one_collection_at_once(milvus_server, tmp_path, monkeypatch):
    """A reading process (the dashboard's place) keeps answering while this one writes a new version beside it.

    Milvus Lite refuses the second process outright (test_engines: reported busy)."""
    monkeypatch.setenv("IMGSIM_MILVUS_TOKEN", milvus_server.token)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, DIM)).astype(np.float32)
    first = make_engine("milvus", uri=milvus_server.uri, collection="shared").add(np.arange(500), vectors,
                                                                                np.arange(500) % 2)
    state = first.save(tmp_path)
    (tmp_path / "v1.json").write_text(json.dumps(state))
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path), str(tmp_path / "v1.json"),
                               str(tmp_path / "v2.json")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert reader.stdout.readline().split() == ["ready", "500"]
        writer = load_engine(tmp_path, state)  # while the reader is connected and searching
        writer.remove(np.arange(10))
        writer.add([10_000], np.eye(DIM, dtype=np.float32)[3:4], [0])
        (tmp_path / "v2.tmp").write_text(json.dumps(writer.save(tmp_path)))
        assert len(load_engine(tmp_path, state)) == 500  # the old version answers as before
        (tmp_path / "v2.tmp").rename(tmp_path / "v2.json")
        out, err = reader.communicate(timeout=120)
    finally:
        reader.kill()
        reader.wait()
    words = out.split()
    assert words[:3] == ["switched", "491", "[10000]"], (out, err[-2000:])
    assert int(words[3]) >= 5  # it answered while the version was written


def test_a_wrong_or_unreachable_server_is_one_line(milvus_server, http_server, tmp_path):
    cases = [
        (dict(uri="http://127.0.0.1:1"), "cannot connect"),
        (dict(uri=milvus_server.uri, token="root:wrong-password"), "cannot connect"),
        (dict(uri=milvus_server.uri, token=""), "cannot connect"),  # authentication is on
        (dict(uri=http_server.url("/").rstrip("/")), "cannot connect"),  # an HTTP server that is not Milvus
        (dict(uri="127.0.0.1:19530"), "ending in .db"),  # no scheme: read as a local path
    ]
    for options, message in cases:
        started = time.monotonic()
        with pytest.raises(ValueError, match=message) as caught:
            make_engine("milvus", collection="x", **options).add([1], np.ones((1, DIM)), [0])
        assert "\n" not in str(caught.value) and time.monotonic() - started < 30, options


def test_the_cli_says_so_in_one_line_and_writes_nothing(model_copy):
    before = sorted(str(p) for p in model_copy.rglob("*"))
    out = subprocess.run([sys.executable, "-m", "imgsim", "index", "--model-dir", str(model_copy), "--engine", "milvus"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "IMGSIM_MILVUS_URI": "http://127.0.0.1:1"})
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]  # besides the progress bar's
    assert out.returncode == 2 and len(errors) == 1, out.stderr
    assert errors[0].startswith("error: http://127.0.0.1:1: cannot connect to Milvus"), out.stderr
    # the writer's start clears staging/ (an empty folder in the copy): everything else is as it was
    assert [p for p in sorted(str(p) for p in model_copy.rglob("*")) if "/staging" not in p] == [
        p for p in before if "/staging" not in p]
