"""What the route modules share: the collection of the app, and answers as JSON."""

from __future__ import annotations

from typing import Literal

from fastapi import Request
from starlette.responses import JSONResponse

Scope = Literal["cluster", "all"]


def collection(request: Request):
    return request.app.state.collection


def json(answer) -> JSONResponse:
    """An answer (imgsim.api.answers), or a list of them, as JSON."""
    if isinstance(answer, list):
        return JSONResponse([item.to_dict() for item in answer])
    return JSONResponse(answer.to_dict())
