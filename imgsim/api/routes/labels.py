"""A person's labels over HTTP: suggestions, changes (set/clear many, undoable), undo, export."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from imgsim.api import answers
from imgsim.api.collection import MAX_RESULTS
from imgsim.api.routes.common import collection, json
from imgsim.core.text import csv_text

router = APIRouter(prefix="/labels", tags=["labels"])


class LabelItem(BaseModel):
    id: str = Field(max_length=40)
    label: str | None = Field(description="the label to give; null clears the person's label")


class LabelChanges(BaseModel):
    labels: list[LabelItem] = Field(max_length=100_000)


@router.get("/suggestions", response_model=list[answers.Suggestion])
def suggestions(request: Request, n: int = Query(10, ge=1, le=MAX_RESULTS)):
    """The images whose labels would help most, best first, with the assistant's guess."""
    return json(collection(request).labels.suggestions(n))


@router.put("", response_model=answers.LabelChange)
def change(request: Request, body: LabelChanges):
    """Set or clear the labels of many images in one undoable change; an unknown id changes nothing."""
    changes = {}
    for item in body.labels:
        changes[item.id] = item.label
    return json(collection(request).labels.change(changes))


@router.post("/undo", response_model=answers.LabelChange)
def undo(request: Request):
    """Revert the last labelling change (from any client, the CLI or the dashboard)."""
    return json(collection(request).labels.undo())


@router.get("/export", response_model=list[answers.LabelRow])
def export(request: Request, min_confidence: float = Query(0.0, ge=0.0, le=1.0),
           format: Literal["json", "csv"] = "json"):
    """Every image's label: the person's, else the propagated one at `min_confidence` or more."""
    rows = collection(request).labels.export(min_confidence)
    if format == "csv":
        text = csv_text(["id", "path", "label", "source", "confidence"],
                        ([r.id, r.path, r.label, r.source, r.confidence] for r in rows))
        return Response(text, media_type="text/csv; charset=utf-8")
    return json(rows)
