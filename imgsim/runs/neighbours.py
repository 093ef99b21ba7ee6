"""The labelling graph a run keeps with the version it publishes: each image's neighbours re-checked.

Labelling spreads a person's labels over each image's nearest others (imgsim.labelling.graph). Near in
the latents is not always the same scene (two halves of one photograph look alike to the network), so a
training or indexing run re-checks each image's imgsim.search.rerank.CANDIDATES nearest by geometry, as
a search re-checks a query's answers, and keeps the graph of those found first before the version becomes
current. Versions past rerank.GRAPH_LIMIT images, without features or made before keep the latents' graph,
computed on first use.
"""

from __future__ import annotations

import logging

from imgsim.core.errors import ImgsimError
from imgsim.labelling.graph import K, keep_graph, nearest, verified
from imgsim.runs.report import Progress, no_progress
from imgsim.search import rerank
from imgsim.storage import store

log = logging.getLogger(__name__)


def keep_checked_graph(model_dir, version_id: str, progress: Progress = no_progress, at: float = 0.0) -> bool:
    """Re-check each image's neighbours in a saved version and keep its labelling graph; whether it did.

    Nothing is lost when it cannot: the graph is then the latents', made when labelling first asks."""
    try:
        version = store.load_version(model_dir, version_id)
        if len(version) > rerank.GRAPH_LIMIT or len(version) < 2:
            return False
        progress(at, f"re-checking each image's neighbours for labelling ({len(version)} images)")
        checked = rerank.recheck_neighbours(version, *nearest(version, max(rerank.CANDIDATES, K)))
        if checked is None:
            return False
        keep_graph(version, verified(*checked, K))
        return True
    except (ImgsimError, OSError, ValueError) as exc:
        log.warning("version %s: labelling keeps the latents' graph (%s)", version_id, exc)
        return False
