"""The labelling graph a run keeps with the version it publishes: each image's neighbours re-checked.

Labelling spreads a person's labels over each image's nearest others (imgsim.labelling.graph). Near in
the latents is not always the same scene (two halves of one photograph look alike to the network), so a
training or indexing run decodes each image again, re-checks its imgsim.search.rerank.CANDIDATES nearest
by geometry as a search re-checks a query's answers (its keypoints and its mirror image's), and keeps a
graph of its LEAD nearest and then those the check called the same scene (imgsim.labelling.graph.verified)
before the version becomes current. Versions past rerank.GRAPH_LIMIT images, previews, versions without
keypoints or made before keep the latents' graph, computed on first use.
"""

from __future__ import annotations

import logging

from imgsim.core.errors import ImgsimError
from imgsim.inputs.collection import iter_decoded
from imgsim.labelling.graph import K, keep_graph, nearest, verified
from imgsim.runs.report import Progress, no_progress
from imgsim.search import rerank
from imgsim.storage import store

log = logging.getLogger(__name__)

# The latents' nearest that stay in an image's K neighbours whatever the check says; pairs it called the same
# scene fill the rest. benchmarks/bench_labelling.py, 2026-12-07 (photos / photos-hard-12 at 1 and 2 labels a
# class): with none kept, the checked pairs (often near-identical views) crowded out close views the check
# cannot match (grey, turned): photos at 1 a class 0.715 (0.903 over the latents alone); all K kept (flags
# only): photos-hard-12 at 2 a class 0.873; half: 0.903 and 0.940 (docs/results.md, issue 32).
LEAD = K // 2


def pixel_queries(version: store.Version, workers: int = 2):
    """(row, its features and its mirror image's) for each image of the version that decodes, as a query's.

    The stored features are the image's alone; views of a scene are often mirrored, which a query's check
    sees (imgsim.features.local.describe_query) and the stored features cannot. Measured
    (benchmarks/bench_labelling.py, 2 labels a class): photos-hard-12 0.982 with these, 0.940 with the
    stored ones; photos at 1 a class 0.952 and 0.903 (docs/results.md, issue 32). An image that no longer
    decodes is left out: its stored features stand in."""
    for indices, images, _, _ in iter_decoded(list(version.paths), version.image_size, 64, workers):
        for row, image in zip(indices, images):
            yield row, rerank.query_features(image)


def keep_checked_graph(model_dir, version_id: str, progress: Progress = no_progress, at: float = 0.0,
                       workers: int = 2) -> bool:
    """Re-check each image's neighbours in a saved version and keep its labelling graph; whether it did.

    Nothing is lost when it cannot: the graph is then the latents', made when labelling first asks."""
    try:
        version = store.load_version(model_dir, version_id)
        if len(version) > rerank.GRAPH_LIMIT or len(version) < 2:
            return False
        progress(at, f"re-checking each image's neighbours for labelling ({len(version)} images)")
        checked = rerank.recheck_neighbours(version, *nearest(version, max(rerank.CANDIDATES, K)), keep=LEAD,
                                            queries=pixel_queries(version, workers))
        if checked is None:
            return False
        keep_graph(version, verified(*checked, K))
        return True
    except Exception as exc:  # noqa: BLE001 - a derived file is never worth the finished version it belongs to
        log.warning("version %s: labelling keeps the latents' graph (%s)", version_id, exc,
                    exc_info=not isinstance(exc, (ImgsimError, OSError)))
        return False
