"""Running it: background training and indexing, status, health and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Body, Request
from starlette.responses import JSONResponse, Response

from imgsim.api import answers, metrics
from imgsim.api.routes.common import collection, json
from imgsim.storage import store

router = APIRouter(tags=["operations"])


@router.post("/train", response_model=answers.Status, status_code=202)
def train(request: Request, knobs: dict = Body(default_factory=dict, examples=[{"epochs": 12, "clusters": 6}])):
    """Start training a new version in the background on the server's image folder; training settings optional."""
    return json(collection(request).train(**knobs), status_code=202)


@router.post("/index", response_model=answers.Status, status_code=202)
def index(request: Request):
    """Start indexing in the background: added files are encoded, removed ones dropped, without retraining."""
    return json(collection(request).index(), status_code=202)


@router.get("/status", response_model=answers.Status)
def status(request: Request):
    """The active version, its size, and the last background run."""
    return json(collection(request).status())


@router.get("/health")
def health(request: Request):
    """200 while this process can answer with a model version; 503 before the first is trained."""
    version = store.current_id(collection(request).model_dir)
    if version is None:
        return JSONResponse({"error": "no model version yet", "code": "no_model"}, status_code=503)
    return {"status": "ok", "version": version}


@router.get("/metrics", response_class=Response)
def prometheus():
    """Prometheus text: requests, latency, requests in flight, and the model version each process searches with."""
    data, kind = metrics.text()
    return Response(data, media_type=kind)
