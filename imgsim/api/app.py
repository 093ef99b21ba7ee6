"""The HTTP API's application: `create_app()` builds it from the environment `imgsim api` sets.

Each worker process builds its own (uvicorn's factory mode) over the same model folder: nothing
is shared between them but the files and, with the Milvus engine, the Milvus server. Every request
passes `Guard` first (Host names, the token, the write policy, the body's size; imgsim.api.security),
is timed for /metrics, and any error becomes one JSON shape (imgsim.api.errors).
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from imgsim import __version__
from imgsim.api import errors, metrics
from imgsim.api.collection import Collection
from imgsim.api.security import MAX_BODY_BYTES, Policy, Refused
from imgsim.core import threads

BIND_ENV = "IMGSIM_API_BIND"  # the address the server listens on (set by `imgsim api` for its workers)
CORS_ENV = "IMGSIM_API_CORS_ORIGINS"  # origins a browser page may call from (commas); none by default
log = logging.getLogger("imgsim.api")


class Guard:
    """ASGI middleware: the policy, the body limit and the metrics, before any route runs."""

    def __init__(self, app, policy: Policy, max_body: int = MAX_BODY_BYTES):
        self.app, self.policy, self.max_body = app, policy, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        timer, status = metrics.Timer(scope["method"]), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            headers = Headers(scope=scope)
            self.policy.check(scope["method"], scope["path"], headers.get("host"), headers.get("authorization"))
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                raise Refused(413, "too_large", f"the request body is over {self.max_body // 2**20} MB")
            await self.app(scope, self.limited(receive), sending)
        except Refused as exc:  # before any route: answered here
            status_code, content, extra = errors.answer(exc)
            await JSONResponse(content, status_code=status_code, headers=extra or None)(scope, receive, sending)
        finally:
            route = scope.get("route")
            timer.done(getattr(route, "path", "unmatched"), status[0])

    def limited(self, receive):
        """`receive` that refuses a body (chunked, or longer than it said) once it passes the limit."""
        seen = [0]

        async def counting():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise Refused(413, "too_large", f"the request body is over {self.max_body // 2**20} MB")
            return message

        return counting


def create_app(collection: Collection | None = None, bind_address: str | None = None, environ=None,
               warm: bool = True, max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The API over `collection` (default: the model folder IMGSIM_MODEL_DIR names), for a server on `bind_address`.

    `warm` loads the model before the first request is taken (what a server wants; a test of the
    policy alone needs no model); `max_body` bounds a request's body in bytes.
    """
    from imgsim.api.routes import collection as collection_routes
    from imgsim.api.routes import labels, operations, search

    environ = os.environ if environ is None else environ
    bind_address = bind_address if bind_address is not None else environ.get(BIND_ENV, "127.0.0.1")
    policy = Policy.from_env(bind_address, environ)
    collection = collection or Collection(switch="background")

    @asynccontextmanager
    async def lifespan(app):
        from starlette.concurrency import run_in_threadpool

        threads.serving()  # each worker process: BLAS in the request's own thread (imgsim.core.threads)
        if warm:
            await run_in_threadpool(warm_up, collection)  # a worker answers once its model is loaded
        yield

    app = FastAPI(title="imgsim", version=__version__, lifespan=lifespan,
                  description="Search, label and watch an image collection (imgsim). Errors are "
                              '`{"error": ..., "code": ...}`; ids are strings of digits; paths are relative '
                              "to the collection's folder.")
    app.state.collection = collection
    for module in (search, collection_routes, labels, operations):
        app.include_router(module.router)
    errors.install(app, lambda: folders(collection))
    app.add_middleware(Guard, policy=policy, max_body=max_body)  # before every route
    origins = [o.strip() for o in environ.get(CORS_ENV, "").split(",") if o.strip()]
    if origins:  # outside the guard: a browser's preflight request carries no token
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "PUT"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def folders(collection: Collection) -> list:
    """The server's folders, cut from any message a caller sees."""
    found = [collection.model_dir, collection.settings.images]
    try:
        found.append(collection.version().manifest.get("images_root"))
    except Exception:  # noqa: BLE001 - no version: nothing more to cut
        pass
    return found


def warm_up(collection: Collection) -> None:
    """Load the current version's model before the first request (a server with no model yet still starts)."""
    try:
        searcher = collection.searcher()
        metrics.serving(searcher.version.id)
    except Exception as exc:  # noqa: BLE001 - reported by each request that needs the model, in words
        log.warning("no model loaded at start: %s", exc)
