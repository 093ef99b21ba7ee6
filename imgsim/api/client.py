"""`imgsim.Client(url, token)`: the questions of `imgsim.open` asked of an `imgsim api` server over HTTP.

    client = imgsim.Client("http://photos.example:8000", token=os.environ["IMGSIM_API_TOKEN"])
    result = client.search("holiday.jpg", n=8)      # a local file is uploaded; a URL is fetched by the server
    client.labels.set([h.id for h in result.hits], "beach")

Answers are the dataclasses of imgsim.api.answers, as in process; errors are imgsim's own classes
(ImageError, UrlError, NotFoundError, ModelNotFoundError, BusyError; ValueError for a bad argument;
ApiError for a refusal such as a missing token), each carrying the server's `status` and `code`.
One difference: a local file is sent as its bytes, so a collection file finds itself as an exact
copy, where in process its path says it is the query. Needs only urllib3 (a core dependency).
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from urllib.parse import urlencode

import urllib3

from imgsim.api import answers
from imgsim.core.errors import BusyError, ImageError, ImgsimError, ModelNotFoundError, NotFoundError, UrlError
from imgsim.inputs.images import is_url, read_bytes

ERRORS = {"bad_image": ImageError, "bad_url": UrlError, "not_found": NotFoundError, "no_model": ModelNotFoundError,
          "busy": BusyError, "bad_request": ValueError}


class ApiError(ImgsimError):
    """A refusal with no closer imgsim error: unauthorized, read-only, host not allowed, too large, internal."""


def error(status: int, payload) -> Exception:
    """The exception for an error answer: imgsim's class for its code, with the status and code attached."""
    message = payload.get("error") if isinstance(payload, dict) else None
    code = payload.get("code") if isinstance(payload, dict) else None
    exc = ERRORS.get(code, ApiError)(message or f"HTTP {status}")
    exc.status, exc.code = status, code or "http_error"
    return exc


class Client:
    """An `imgsim api` server at `url`; `token` is its IMGSIM_API_TOKEN (needed where the server sets one)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, retries: int = 2):
        if not is_url(url):
            raise ValueError(f"the server's address must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout),
                                        retries=urllib3.Retry(total=retries, connect=retries, read=0, status=0))
        self.labels = ClientLabels(self)

    def __repr__(self) -> str:
        return f"imgsim.Client({self.url!r})"

    def call(self, method: str, path: str, fields: dict | None = None, **options):
        """One request; the decoded JSON answer (bytes for a non-JSON one), or the error's exception."""
        query = {k: v for k, v in (fields or {}).items() if v is not None}
        response = self.http.request(method, self.url + path, fields=query or None,
                                     headers={**self.headers, **options.pop("headers", {})}, **options)
        kind = response.headers.get("content-type", "")
        payload = response.json() if kind.startswith("application/json") else response.data
        if response.status >= 400:
            raise error(response.status, payload)
        return payload

    def post_json(self, path: str, body, fields: dict | None = None, method: str = "POST"):
        suffix = urlencode({k: v for k, v in (fields or {}).items() if v is not None})
        return self.call(method, path + (f"?{suffix}" if suffix else ""), body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})

    # --- search ----------------------------------------------------------------------------------

    def _upload(self, path: str, images: list, fields: dict):
        """POST images: URLs as JSON for the server to fetch, files and bytes as a multipart upload."""
        suffix = "?" + urlencode({k: v for k, v in fields.items() if v is not None})
        if all(is_url(i) for i in images):
            key = "urls" if path.endswith("batch") else "url"
            return self.post_json(path + suffix, {key: images if key == "urls" else images[0]})
        parts = []
        for image in images:
            if is_url(image):
                parts.append(("url", image))
            else:
                name = Path(image).name if isinstance(image, (str, Path)) else "upload"
                parts.append(("image", (name, read_bytes(image), mimetypes.guess_type(name)[0] or "image/jpeg")))
        return self.call("POST", path + suffix, **_multipart(parts))

    def search(self, image, n: int = 8, scope: str = "cluster", group: int | None = None) -> answers.SearchResult:
        """The n collection images most like `image` (a local path or bytes, uploaded; an http(s) URL, fetched
        by the server)."""
        answer = self._upload("/search", [image], {"n": n, "scope": scope, "group": group})
        return answers.SearchResult.from_dict(answer)

    query = search

    def search_many(self, images, n: int = 8, scope: str = "cluster", group: int | None = None) -> list:
        """`search` for several images; an image the server refused gets its exception in its place."""
        entries = self._upload("/search/batch", list(images), {"n": n, "scope": scope, "group": group})
        return [answers.SearchResult.from_dict(e["result"]) if "result" in e else error(422, e) for e in entries]

    def similar(self, image, n: int = 8, scope: str = "cluster", group: int | None = None) -> answers.SearchResult:
        answer = self.call("GET", f"/images/{_id(image)}/similar", {"n": n, "scope": scope, "group": group})
        return answers.SearchResult.from_dict(answer)

    # --- the collection ------------------------------------------------------------------------

    def image(self, image) -> answers.ImageInfo:
        return answers.ImageInfo.from_dict(self.call("GET", f"/images/{_id(image)}"))

    def images(self, offset: int = 0, limit: int = 100, group: int | None = None) -> answers.Page:
        return answers.Page.from_dict(self.call("GET", "/images", {"offset": offset, "limit": limit, "group": group}))

    def thumbnail(self, image, px: int = 256) -> bytes:
        return self.call("GET", f"/images/{_id(image)}/thumbnail", {"px": px})

    def groups(self) -> list[answers.Group]:
        return [answers.Group.from_dict(g) for g in self.call("GET", "/groups")]

    def versions(self) -> list[answers.VersionInfo]:
        return [answers.VersionInfo.from_dict(v) for v in self.call("GET", "/versions")]

    def duplicates(self) -> answers.Duplicates:
        return answers.Duplicates.from_dict(self.call("GET", "/duplicates"))

    def status(self) -> answers.Status:
        return answers.Status.from_dict(self.call("GET", "/status"))

    def train(self, **knobs) -> answers.Status:
        return answers.Status.from_dict(self.post_json("/train", knobs))

    def index(self) -> answers.Status:
        return answers.Status.from_dict(self.call("POST", "/index"))

    def health(self) -> dict:
        return self.call("GET", "/health")


class ClientLabels:
    """`Collection.labels` over HTTP."""

    def __init__(self, client: Client):
        self.client = client

    def change(self, changes: dict) -> answers.LabelChange:
        body = {"labels": [{"id": _id(i), "label": label} for i, label in changes.items()]}
        return answers.LabelChange.from_dict(self.client.post_json("/labels", body, method="PUT"))

    def set(self, images, label: str) -> answers.LabelChange:
        return self.change({i: label for i in images})

    def clear(self, images) -> answers.LabelChange:
        return self.change({i: None for i in images})

    def undo(self) -> answers.LabelChange:
        return answers.LabelChange.from_dict(self.client.call("POST", "/labels/undo"))

    def suggestions(self, n: int = 10) -> list[answers.Suggestion]:
        return [answers.Suggestion.from_dict(s) for s in self.client.call("GET", "/labels/suggestions", {"n": n})]

    def export(self, min_confidence: float = 0.0) -> list[answers.LabelRow]:
        rows = self.client.call("GET", "/labels/export", {"min_confidence": min_confidence})
        return [answers.LabelRow.from_dict(r) for r in rows]


def _id(image) -> str:
    """An image id from a number, its digits or an answer holding one (a Hit, an ImageInfo ...)."""
    return str(getattr(image, "id", image))


def _multipart(parts: list) -> dict:
    body, kind = urllib3.encode_multipart_formdata(parts)
    return {"body": body, "headers": {"Content-Type": kind}}
