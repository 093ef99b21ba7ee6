"""The HTTP API's policy, through a real uvicorn server and a real HTTP client (urllib3).

An "exposed" server here is the app built as `imgsim api --host 0.0.0.0` builds it (its policy
knows it listens on every interface) but served on 127.0.0.1: the requests stay on this machine,
and what is checked is the policy of a server others can reach. No model is needed: the versions
are synthetic (tests.helpers.vector_version) and no test here loads TensorFlow.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import urllib3

from tests.helpers import free_port, running_api, vector_version

TOKEN = "t0ken-for-the-tests-0123456789"
HTTP = urllib3.PoolManager(retries=False)


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("api-security") / "models"
    vector_version(model_dir, 60, 3)
    return model_dir


def make_app(model_dir, bind="0.0.0.0", **environ):
    from imgsim.api.app import create_app
    from imgsim.api.collection import Collection

    return create_app(Collection(model_dir), bind_address=bind, environ=environ, warm=False)


def every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, path parameters filled with an id of digits."""
    found = [(method.upper(), path) for path, methods in app.openapi()["paths"].items() for method in methods]
    found += [(method, route.path) for route in app.routes if getattr(route, "methods", None)
              for method in sorted(route.methods) if method != "HEAD"]  # /docs, /openapi.json, ...
    return [(method, re.sub(r"\{[^}]+\}", "1", path)) for method, path in found]


def ask(url, method, path, token=None, scheme="Bearer", **options):
    headers = options.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    return HTTP.request(method, url + path, headers=headers, **options)


def error_of(response) -> dict:
    body = json.loads(response.data)
    assert set(body) == {"error", "code"} and "\n" not in body["error"], body
    return body


def test_every_route_refuses_a_missing_or_wrong_token_beyond_loopback(version_dir):
    app = make_app(version_dir, IMGSIM_API_TOKEN=TOKEN)
    routes = every_route(app)
    assert {("POST", "/search"), ("GET", "/images/1/similar"), ("PUT", "/labels"), ("POST", "/train"),
            ("GET", "/metrics"), ("GET", "/health"), ("GET", "/docs")} <= set(routes)
    with running_api(app) as url:
        for method, path in routes:
            for token, scheme in ((None, "Bearer"), ("wrong-" + TOKEN, "Bearer"), (TOKEN[:-1], "Bearer"),
                                  (TOKEN, "Basic"), ("", "Bearer")):
                response = ask(url, method, path, token, scheme)
                assert response.status == 401, (method, path, token, scheme, response.status)
                assert error_of(response)["code"] == "unauthorized"
                assert response.headers["WWW-Authenticate"] == "Bearer"
        assert ask(url, "GET", "/groups", TOKEN).status == 200
        change = ask(url, "PUT", "/labels", TOKEN, body=json.dumps({"labels": []}),
                     headers={"Content-Type": "application/json"})
        assert change.status == 200 and json.loads(change.data)["changed"] == 0


def test_a_token_is_needed_on_loopback_too_behind_a_proxy(version_dir):
    """A server on 127.0.0.1 behind a reverse proxy or load balancer is reached from the network all the same."""
    with running_api(make_app(version_dir, bind="127.0.0.1", IMGSIM_API_TOKEN=TOKEN)) as url:
        assert ask(url, "GET", "/groups").status == 401
        assert ask(url, "GET", "/groups", TOKEN).status == 200


def test_without_a_token_an_exposed_server_reads_but_never_changes(version_dir):
    app = make_app(version_dir)
    with running_api(app) as url:
        assert ask(url, "GET", "/groups").status == 200
        assert ask(url, "GET", "/labels/export").status == 200
        for method, path in (("PUT", "/labels"), ("POST", "/labels/undo"), ("POST", "/train"), ("POST", "/index")):
            response = ask(url, method, path, body=b"{}", headers={"Content-Type": "application/json"})
            assert response.status == 403 and error_of(response)["code"] == "read_only", (method, path)
            assert "IMGSIM_API_TOKEN" in error_of(response)["error"]
        # a search changes nothing: the policy lets it through (this one is refused for its missing image)
        search = ask(url, "POST", "/search", body=b"{}", headers={"Content-Type": "application/json"})
        assert search.status == 422 and error_of(search)["code"] == "bad_request"


def test_on_loopback_without_a_token_changes_are_allowed(version_dir):
    from imgsim.storage import store

    version = store.load_version(version_dir)
    image = str(int(version.ids[0]))
    with running_api(make_app(version_dir, bind="127.0.0.1")) as url:
        response = ask(url, "PUT", "/labels", body=json.dumps({"labels": [{"id": image, "label": "cat"}]}),
                       headers={"Content-Type": "application/json"})
        assert response.status == 200 and json.loads(response.data)["changed"] == 1
        assert json.loads(ask(url, "POST", "/labels/undo").data) == {"changed": 1, "action": "set"}


def test_readonly_refuses_changes_even_with_the_token(version_dir):
    with running_api(make_app(version_dir, IMGSIM_API_TOKEN=TOKEN, IMGSIM_READONLY="1")) as url:
        response = ask(url, "POST", "/labels/undo", TOKEN)
        assert response.status == 403 and "IMGSIM_READONLY" in error_of(response)["error"]


@pytest.mark.parametrize("host, allowed", [
    ("rebind.attacker.example", False), ("127.0.0.1.attacker.example", False), ("localhost.", False),
    ("localhost:8000", True), ("127.0.0.1", True), ("[::1]:80", True), ("photos.example:8000", True),
])
def test_only_the_names_the_server_is_reached_by_are_answered(version_dir, host, allowed):
    """DNS rebinding: a page whose own name points at 127.0.0.1 sends that name, and is refused."""
    with running_api(make_app(version_dir, bind="127.0.0.1", IMGSIM_ALLOWED_HOSTS="photos.example")) as url:
        response = ask(url, "GET", "/groups", headers={"Host": host})
        if allowed:
            assert response.status == 200
        else:
            assert response.status == 400 and error_of(response)["code"] == "host_not_allowed"


def test_a_body_over_the_limit_is_refused_before_and_while_it_is_read(version_dir):
    from imgsim.api.app import create_app
    from imgsim.api.collection import Collection

    app = create_app(Collection(version_dir), bind_address="127.0.0.1", environ={}, warm=False, max_body=1000)
    with running_api(app) as url:
        said = ask(url, "POST", "/search", body=b"x" * 2000, headers={"Content-Type": "image/jpeg"})
        assert said.status == 413 and error_of(said)["code"] == "too_large"

        def chunks():
            for _ in range(40):
                yield b"x" * 100

        streamed = ask(url, "POST", "/search", body=chunks(), chunked=True, headers={"Content-Type": "image/jpeg"})
        assert streamed.status == 413 and error_of(streamed)["code"] == "too_large"


def test_cors_is_off_unless_origins_are_configured(version_dir):
    origin = {"Origin": "https://app.example"}
    with running_api(make_app(version_dir, bind="127.0.0.1")) as url:
        assert "Access-Control-Allow-Origin" not in ask(url, "GET", "/groups", headers=origin).headers
    with running_api(make_app(version_dir, bind="127.0.0.1", IMGSIM_API_CORS_ORIGINS="https://app.example")) as url:
        assert ask(url, "GET", "/groups", headers=origin).headers["Access-Control-Allow-Origin"] == "https://app.example"
        preflight = ask(url, "OPTIONS", "/labels", headers={**origin, "Access-Control-Request-Method": "PUT"})
        assert preflight.status == 200


def test_a_token_too_short_to_be_one_stops_the_server_before_it_starts(version_dir):
    with pytest.raises(ValueError, match="at least 16 characters"):
        make_app(version_dir, IMGSIM_API_TOKEN="secret")


def test_imgsim_api_says_in_one_line_when_the_api_extra_is_missing(tmp_path):
    """The extra's absence, simulated by a module finder that hides fastapi from a fresh interpreter."""
    import subprocess

    hide = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] == 'fastapi': raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from imgsim.cli import main; sys.exit(main(['api', '--model-dir', sys.argv[1], '--port', sys.argv[2]]))\n")
    done = subprocess.run([sys.executable, "-c", hide, str(tmp_path), str(free_port())], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: the HTTP API needs the api extra (fastapi missing): pip install 'imgsim[api]'"]
