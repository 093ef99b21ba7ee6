"""What the route modules share: the collection of the app, and answers as JSON."""

from __future__ import annotations

from json import dumps
from typing import Literal

from fastapi import Request
from starlette.responses import JSONResponse

Scope = Literal["cluster", "all"]


def collection(request: Request):
    return request.app.state.collection


class Json(JSONResponse):
    """Starlette's JSON, but a file name's byte that no UTF-8 decodes (kept by os.fsdecode as a lone surrogate)
    is written as its `\\udcXX` escape rather than failing the answer: JSON allows the escape, and Python's json
    reads it back as the same str, so `imgsim.Client` gets the path `imgsim.open` has."""

    def render(self, content) -> bytes:
        text = dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")  # only a lone surrogate cannot be encoded: inside a string


def json(answer, status_code: int = 200) -> JSONResponse:
    """An answer (imgsim.api.answers), or a list of them, as JSON."""
    if isinstance(answer, list):
        return Json([item.to_dict() for item in answer], status_code=status_code)
    return Json(answer.to_dict(), status_code=status_code)
