"""The collection: its images (metadata, thumbnails, similar images), groups, versions and known copies."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from imgsim.api import answers, metrics
from imgsim.api.collection import MAX_PAGE, MAX_RESULTS, THUMBNAIL_SIZES
from imgsim.api.routes.common import Scope, collection, json

router = APIRouter(tags=["collection"])


@router.get("/images", response_model=answers.Page)
def images(request: Request, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=MAX_PAGE),
           group: int | None = Query(None, ge=0)):
    """A page of the collection's images (of one group, with `group`)."""
    return json(collection(request).images(offset, limit, group))


@router.get("/images/{image_id}", response_model=answers.ImageInfo)
def image(request: Request, image_id: str):
    """One image's metadata; its picture is at /images/{id}/thumbnail."""
    return json(collection(request).image(image_id))


@router.get("/images/{image_id}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def thumbnail(request: Request, image_id: str, px: int = Query(256, ge=THUMBNAIL_SIZES[0], le=THUMBNAIL_SIZES[1])):
    """A JPEG at most `px` on its longer side."""
    return Response(collection(request).thumbnail(image_id, px), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/images/{image_id}/similar", response_model=answers.SearchResult)
def similar(request: Request, image_id: str, n: int = Query(8, ge=1, le=MAX_RESULTS), scope: Scope = "cluster",
            group: int | None = Query(None, ge=0)):
    """The n images most like a collection image, from its stored vector (nothing is decoded)."""
    result = collection(request).similar(image_id, n, scope, group)
    metrics.serving(result.version)
    return json(result)


@router.get("/groups", response_model=list[answers.Group])
def groups(request: Request):
    """The groups of the active version, with their names and sizes."""
    return json(collection(request).groups())


@router.get("/versions", response_model=list[answers.VersionInfo])
def versions(request: Request):
    """Every model version, newest first; `active` marks the one that answers."""
    return json(collection(request).versions())


@router.get("/duplicates", response_model=answers.Duplicates)
def duplicates(request: Request):
    """The copies known for the active version; never starts a scan (`near` says whether near copies were scanned)."""
    return json(collection(request).duplicates())
