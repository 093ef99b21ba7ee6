"""POST /search and POST /search/batch: an uploaded image, or a URL fetched by the safe fetcher."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from imgsim.api import answers, errors, metrics
from imgsim.api.collection import MAX_BATCH, MAX_RESULTS
from imgsim.api.routes.common import Scope, collection, json
from imgsim.inputs.images import is_url

router = APIRouter(tags=["search"])

BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary", "description": "an image file"},
        "url": {"type": "string", "description": "or an http(s) URL of an image"}}}},
    "application/json": {"schema": {"type": "object", "properties": {"url": {"type": "string"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}, "description": "an image's bytes"}}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "url": {"type": "array", "items": {"type": "string"}}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "urls": {"type": "array", "items": {"type": "string"}}}}}}}}


def checked_url(url) -> str:
    """Only http(s) URLs: a path or any other scheme would name something on the server."""
    if not isinstance(url, str) or not is_url(url.strip()):
        raise ValueError("url must be an http:// or https:// address of an image")
    return url.strip()


async def images_of(request: Request, many: bool) -> list:
    """The images a search request carries: uploaded bytes and checked URLs, in order."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=MAX_BATCH if many else 1, max_fields=MAX_BATCH if many else 4) as form:
            found = [await item.read() if hasattr(item, "read") else checked_url(item)
                     for key, item in form.multi_items() if key in ("image", "url")]
    elif kind == "application/json":
        try:
            data = await request.json()
        except ValueError:
            raise ValueError("the body is not JSON") from None
        items = data.get("urls" if many else "url") if isinstance(data, dict) else None
        items = items if many else [items]
        if not isinstance(items, list):
            raise ValueError('the JSON body needs {"urls": [...]}' if many else 'the JSON body needs {"url": ...}')
        found = [checked_url(url) for url in items]
    elif kind.startswith("image/") or kind == "application/octet-stream":
        found = [await request.body()]
    else:
        raise ValueError("send the image as multipart/form-data (field 'image' or 'url'), as JSON "
                         '{"url": ...}, or as the body with an image/* content type')
    if not found or (not many and len(found) != 1):
        raise ValueError("send one image: a file in the field 'image' or an address in 'url'" if not many
                         else f"send 1 to {MAX_BATCH} images")
    return found


@router.post("/search", response_model=answers.SearchResult, openapi_extra=BODY)
async def search(request: Request, n: int = Query(8, ge=1, le=MAX_RESULTS), scope: Scope = "cluster",
                 group: int | None = Query(None, ge=0)):
    """The n collection images most like the image sent, best first, with scores, groups and exact copies."""
    [image] = await images_of(request, many=False)
    result = await run_in_threadpool(collection(request).search, image, n, scope, group)
    metrics.serving(result.version)
    return json(result)


@router.post("/search/batch", openapi_extra=BATCH_BODY)
async def search_batch(request: Request, n: int = Query(8, ge=1, le=MAX_RESULTS), scope: Scope = "cluster",
                       group: int | None = Query(None, ge=0)):
    """`/search` for up to 64 images at once, encoded together: one entry per image, a result or an error."""
    images = await images_of(request, many=True)
    results = await run_in_threadpool(collection(request).search_many, images, n, scope, group)
    from imgsim.api.app import folders

    shown = folders(collection(request))
    return [{"result": r.to_dict()} if isinstance(r, answers.SearchResult) else errors.answer(r, shown)[1]
            for r in results]
