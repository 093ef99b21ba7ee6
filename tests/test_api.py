"""The HTTP API over the tiny trained model: `imgsim api` as a real server process, asked by a real HTTP client.

One server process serves the whole module (its model loads once); the in-process object
(`imgsim.open`) and the client (`imgsim.Client`) are asked the same questions and must agree; the
dashboard's bad inputs get a 4xx JSON error, never a 500; a version published while the server
runs answers without a restart.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import urllib3
from PIL import Image

from tests.helpers import ROOT, free_port

HTTP = urllib3.PoolManager(retries=False)


ODD_NAME = os.fsdecode(b"caf\xe9.jpg")  # a name made on another system: a byte no UTF-8 decodes


@pytest.fixture(scope="module")
def api_model_dir(tmp_path_factory, trained_model_dir, tiny_collection) -> Path:
    """The tiny model, indexed again over a copy of its collection with one more image named `ODD_NAME`."""
    from imgsim import Settings
    from imgsim.runs.indexing import index
    from tests.helpers import TINY

    root = tmp_path_factory.mktemp("api")
    photos = Path(shutil.copytree(tiny_collection, root / "photos"))
    Image.open(sorted(photos.rglob("*.jpg"))[0]).transpose(Image.Transpose.ROTATE_90).save(photos / ODD_NAME)
    models = Path(shutil.copytree(trained_model_dir, root / "models"))
    index(Settings(model_dir=models, images=photos, **TINY))
    return models


@pytest.fixture(scope="module")
def api_server(api_model_dir, tmp_path_factory):
    """`imgsim api` on a free loopback port (private URLs allowed, for the test's own HTTP server); yields its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("api-log") / "api.log"
    env = {**os.environ, "IMGSIM_ALLOW_PRIVATE_URLS": "1"}
    env.pop("IMGSIM_API_TOKEN", None)
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "imgsim", "api", "--port", str(port), "--model-dir",
                                   str(api_model_dir)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, server, log_path)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_for_health(url: str, server: subprocess.Popen, log_path: Path, seconds: float = 180) -> None:
    """Return once /health answers 200 (the server loads its model before it listens); fail if it exits."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            if HTTP.request("GET", url + "/health", timeout=2).status == 200:
                return
        except urllib3.exceptions.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"imgsim api did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture
def private_urls(monkeypatch):
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")


def plain(answer):
    """An answer as plain data, floats to 4 places (two processes' encoders may differ in the last bits)."""
    if isinstance(answer, Exception):
        return (type(answer).__name__, re.sub(r"/\S+/", "", str(answer)))
    if dataclasses.is_dataclass(answer):
        answer = answer.to_dict()
    if isinstance(answer, dict):
        return {k: plain(v) for k, v in answer.items()}
    if isinstance(answer, (list, tuple)):
        return [plain(v) for v in answer]
    return round(answer, 4) if isinstance(answer, float) else answer


def outcome(call):
    try:
        return plain(call())
    except Exception as exc:  # noqa: BLE001 - the comparison is of what each side raises
        return (type(exc).__name__, getattr(exc, "code", None))


def test_the_client_and_the_in_process_object_give_the_same_answers(api_server, api_model_dir, tiny_collection,
                                                                    http_server, private_urls):
    import imgsim

    local, client = imgsim.open(api_model_dir), imgsim.Client(api_server)
    files = sorted(tiny_collection.rglob("*.jpg"))
    first, second = files[0].read_bytes(), files[5].read_bytes()
    url = http_server.serve("/api-query.jpg", files[3].read_bytes(), content_type="image/jpeg")
    some = local.images(limit=3).images[1].id
    questions = [
        lambda side: side.search(first, n=5),
        lambda side: side.search(first, n=4, scope="all"),
        lambda side: side.search(second, n=3, group=0),
        lambda side: side.search(url, n=5),
        lambda side: side.search_many([first, url], n=3),
        lambda side: side.similar(some, n=6),
        lambda side: side.similar(some, n=2, scope="all"),
        lambda side: side.images(offset=2, limit=5),
        lambda side: side.images(group=1, limit=3),
        lambda side: side.image(some),
        lambda side: side.thumbnail(some, px=64),
        lambda side: side.groups(),
        lambda side: side.versions(),
        lambda side: side.duplicates(),
        lambda side: side.status(),
        lambda side: side.labels.suggestions(4),
        lambda side: side.labels.export(),
        lambda side: side.images(limit=100),
    ]
    for number, question in enumerate(questions):
        assert plain(question(local)) == plain(question(client)), f"question {number}"
    odd = [i for i in client.images(limit=100).images if i.path == ODD_NAME]  # its answers could not be encoded
    assert odd and client.image(odd[0].id).path == ODD_NAME
    assert client.search((api_model_dir.parent / "photos" / ODD_NAME).read_bytes(), n=1).hits[0].path == ODD_NAME
    # errors: the same class on both sides
    for question in (lambda side: side.search(b"not an image"), lambda side: side.similar("123"),
                     lambda side: side.similar("not-an-id"), lambda side: side.search(first, n=0),
                     lambda side: side.search(first, scope="everywhere")):
        assert outcome(lambda: question(local))[0] == outcome(lambda: question(client))[0]
    # a change through one side is what the other reads
    hits = client.search(first, n=3).hits
    assert client.labels.set(hits, "cat").changed == 3
    assert plain(local.labels.export()) == plain(client.labels.export())
    assert plain(local.labels.suggestions(3)) == plain(client.labels.suggestions(3))
    assert {r.label for r in local.labels.export() if r.source == "person"} == {"cat"}
    assert local.labels.undo().changed == 3
    assert [r for r in client.labels.export() if r.source == "person"] == []


def bad_inputs(http_server, model_id):
    """(method, path, request options) the dashboard's tests try, each of which must be refused with a 4xx."""
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")  # 40 MB of pixels from a file of a few kB
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(jpeg, "JPEG")
    html = http_server.serve("/api-page.jpg", b"<html>not an image</html>", content_type="image/jpeg")
    missing = http_server.url("/api-no-such-image.jpg")
    js = {"Content-Type": "application/json"}

    def upload(data, name="x.jpg", path="/search"):
        body, kind = urllib3.encode_multipart_formdata([("image", (name, data, "image/jpeg"))])
        return ("POST", path, {"body": body, "headers": {"Content-Type": kind}})

    def post_json(path, value, method="POST"):
        return (method, path, {"body": value if isinstance(value, bytes) else json.dumps(value).encode(), "headers": js})

    return [
        upload(b"not an image"), upload(jpeg.getvalue()[:100]), upload(bomb.getvalue()), upload(svg, "x.svg"),
        upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 64), upload(b""),
        ("POST", "/search", {"body": b"", "headers": {"Content-Type": "image/jpeg"}}),
        ("POST", "/search", {"body": b"hello", "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/search", {"body": b"x" * (33 * 2**20), "headers": {"Content-Type": "image/jpeg"}}),
        post_json("/search", {"url": "file:///etc/passwd"}), post_json("/search", {"url": "/etc/passwd"}),
        post_json("/search", {"url": "ftp://example.org/a.jpg"}), post_json("/search", {"url": 5}),
        post_json("/search", {"url": html}), post_json("/search", {"url": missing}),
        post_json("/search", {"url": "http://169.254.169.254/latest/meta-data/"}),
        post_json("/search", {"url": "http://[::1]:1/x.jpg"}), post_json("/search", b"{not json"),
        post_json("/search", ["a"]), post_json("/search/batch", {"urls": [missing] * 65}),
        post_json("/search/batch", {"urls": []}), post_json("/search/batch", {"urls": "x"}),
        ("POST", "/search?n=0", {}), ("POST", "/search?n=100000", {}), ("POST", "/search?n=abc", {}),
        ("POST", "/search?scope=everywhere", {}), ("POST", "/search?group=-1", {}),
        ("GET", "/images/abc", {}), ("GET", "/images/-1", {}), ("GET", "/images/99999999999999999999999", {}),
        ("GET", "/images/1", {}), ("GET", "/images/%00", {}), ("GET", "/images/..%2f..%2fetc%2fpasswd", {}),
        ("GET", f"/images/{model_id}/similar?n=0", {}), ("GET", "/images/1/similar", {}),
        ("GET", f"/images/{model_id}/thumbnail?px=0", {}), ("GET", f"/images/{model_id}/thumbnail?px=100000", {}),
        ("GET", "/images?limit=0", {}), ("GET", "/images?offset=-1", {}), ("GET", "/images?limit=1000000", {}),
        post_json("/labels", b"not json", "PUT"), post_json("/labels", {"labels": "x"}, "PUT"),
        post_json("/labels", {"labels": [{"id": "1", "label": "cat"}]}, "PUT"),
        post_json("/labels", {"labels": [{"id": model_id, "label": ""}]}, "PUT"),
        post_json("/labels", {"labels": [{"id": model_id, "label": " \n "}]}, "PUT"),
        post_json("/labels", {"labels": [{"id": model_id, "label": "x" * 101}]}, "PUT"),
        post_json("/labels", {"labels": [{"id": model_id, "label": 7}]}, "PUT"),
        ("GET", "/labels/export?min_confidence=2", {}), ("GET", "/labels/export?format=xml", {}),
        ("GET", "/labels/suggestions?n=0", {}),
        post_json("/train", {"epochs": 0}), post_json("/train", {"bogus": 1}), post_json("/train", {"epochs": "many"}),
        post_json("/train", {"image_size": 17}), post_json("/train", ["epochs"]), post_json("/train", {"model_dir": "/"}),
        ("GET", "/no-such-route", {}), ("DELETE", "/labels", {}),
    ]


def test_bad_inputs_get_a_4xx_json_error_and_never_a_500(api_server, api_model_dir, http_server):
    import imgsim

    model_id = imgsim.open(api_model_dir).images(limit=1).images[0].id
    for method, path, options in bad_inputs(http_server, model_id):
        response = HTTP.request(method, api_server + path, timeout=60, **options)
        what = f"{method} {path} {str(options.get('body'))[:80]}"
        assert 400 <= response.status < 500, (what, response.status, response.data[:300])
        body = json.loads(response.data)
        assert set(body) == {"error", "code"}, (what, body)
        assert body["error"] and "\n" not in body["error"], what
        assert str(api_model_dir) not in body["error"] and "/tmp" not in body["error"], (what, body)
    assert HTTP.request("GET", api_server + "/health").status == 200  # and the server is still there


def test_search_answers_a_url_and_an_upload_with_ids_and_collection_relative_paths(api_server, tiny_collection):
    import imgsim

    client = imgsim.Client(api_server)
    image = sorted(tiny_collection.rglob("*.jpg"))[0]
    result = client.search(image, n=4)  # a local file: uploaded as its bytes
    assert result.hits[0].exact and result.hits[0].score == 1.0  # the same bytes: an exact copy, first
    assert result.hits[0].path == str(image.relative_to(tiny_collection))
    assert all(h.id.isdigit() and not h.path.startswith("/") for h in result.hits)
    raw = HTTP.request("POST", api_server + "/search?n=2", body=image.read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert raw.status == 200 and [h["id"] for h in json.loads(raw.data)["hits"]] == [h.id for h in result.hits[:2]]
    assert HTTP.request("GET", api_server + "/docs").status == 200  # OpenAPI docs
    metrics = HTTP.request("GET", api_server + "/metrics").data.decode()
    assert 'imgsim_api_requests_total{method="POST",route="/search",status="200"}' in metrics
    assert "imgsim_api_request_seconds_bucket" in metrics and "imgsim_api_requests_in_flight" in metrics
    version = client.status().version
    assert re.search(rf'imgsim_api_model_version{{.*version="{version}".*}} 1\.0', metrics)


def test_a_version_published_while_the_server_runs_answers_without_a_restart(api_server, api_model_dir,
                                                                             tiny_collection):
    """A new CURRENT is picked up by the running server: no request fails, and the new version soon answers."""
    import time

    import imgsim
    from imgsim.core.ids import new_version_id
    from imgsim.storage import store

    client = imgsim.Client(api_server)
    old = store.current_id(api_model_dir)
    new = new_version_id()
    shutil.copytree(api_model_dir / "versions" / old, api_model_dir / "versions" / new)
    manifest = json.loads((api_model_dir / "versions" / new / "manifest.json").read_text())
    (api_model_dir / "versions" / new / "manifest.json").write_text(json.dumps({**manifest, "id": new}))
    query = sorted(tiny_collection.rglob("*.jpg"))[2].read_bytes()
    assert client.search(query, n=2).version == old
    store.set_current(api_model_dir, new)
    assert client.status().version == new  # what is current: read at once
    seen, deadline = [], time.monotonic() + 120
    while (not seen or seen[-1] != new) and time.monotonic() < deadline:
        seen.append(client.search(query, n=2).version)  # every one answers: from the old model until the new loads
    assert seen[-1] == new and set(seen) <= {old, new}
    store.set_current(api_model_dir, old)


def test_the_notebook_example_in_the_architecture_document_runs(model_copy, tiny_collection, monkeypatch):
    """docs/architecture.md's example, run as written in a folder holding `models` and `holiday.jpg`."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    example = re.search(r"<!-- the notebook example: tests/test_api.py runs it -->\n```python\n(.*?)```", text, re.S)
    assert example, "the example is missing from docs/architecture.md"
    code = example.group(1)
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(model_copy.parent)
    shutil.copy(sorted(tiny_collection.rglob("*.jpg"))[0], "holiday.jpg")
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", printed)
    exec(compile(code, "architecture.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert len(lines) >= 8 and all(re.fullmatch(r"\d\.\d{3}  \S.*", line) for line in lines[:8]), lines
