"""One error shape for every refusal: `{"error": "<one line>", "code": "<word>"}` with the HTTP status that fits.

Messages are imgsim's own one-line errors with the server's folders cut out (the collection's,
the model folder): a caller sees collection-relative names, never where the server keeps its files.
An unexpected exception is logged here and answered 500 with no detail.
"""

from __future__ import annotations

import logging

from imgsim.api.security import Refused
from imgsim.core.errors import BusyError, ImageError, ImgsimError, ModelNotFoundError, NotFoundError, UrlError
from imgsim.core.text import one_line, relative_paths

log = logging.getLogger("imgsim.api")

# The most specific class first: (class, HTTP status, code)
STATUSES = (
    (UrlError, 422, "bad_url"),
    (ImageError, 422, "bad_image"),
    (NotFoundError, 404, "not_found"),
    (ModelNotFoundError, 503, "no_model"),
    (BusyError, 409, "busy"),
    (ImgsimError, 422, "refused"),
    (ValueError, 422, "bad_request"),
)


def body(message, code: str, folders=()) -> dict:
    return {"error": one_line(relative_paths(message, folders)), "code": code}


def answer(exc: BaseException, folders=()) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) for an exception raised while answering."""
    if isinstance(exc, Refused):
        return exc.status, body(exc, exc.code), exc.headers
    for kind, status, code in STATUSES:
        if isinstance(exc, kind):
            return status, body(exc, code, folders), {}
    log.exception("unexpected error while answering", exc_info=exc)
    return 500, {"error": "unexpected error on the server (its log has the details)", "code": "internal"}, {}


def install(app, folders) -> None:
    """Answer every error of `app` in the one shape; `folders()` names the server folders to cut from messages."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(status: int, content: dict, headers=None) -> JSONResponse:
        return JSONResponse(content, status_code=status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        where = "the request body" if not where or where.isdigit() else where
        return respond(422, body(f"{where}: {first.get('msg', 'invalid')}", "bad_request"))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        return respond(exc.status_code, body(exc.detail, code), getattr(exc, "headers", None))

    async def known(request, exc: Exception):
        return respond(*answer(exc, folders()))

    for kind in (Refused, *(kind for kind, _, _ in STATUSES)):  # answered here, not logged as a crash
        app.add_exception_handler(kind, known)
    app.add_exception_handler(Exception, known)  # anything else: 500, logged, no detail
