"""Re-checking a query's top answers by geometry: other views of the same scene above look-alikes.

The latents find candidates that look alike; many wrong ones are another picture with the same texture
or tones (grass and gravel, a page of text and grass). For the CANDIDATES best, the query's local
features (imgsim.features.local, found once per query) are matched with each candidate's (found once
per version at training or indexing, imgsim.storage.keypoints), and a candidate on which at least
MIN_AGREEING keypoints agree on one similarity transform (imgsim.features.matching) shows the same
scene: those move to the top, most agreeing first. The rest keep the latents' order, as everything does
where there is nothing to compare: a query or a candidate without features (a small, flat or blurred
picture, a version made before features), or a version whose features cannot be read.

The work per query is bounded whatever the collection's size and n: one query's features, then at
most CANDIDATES x KEYPOINTS x KEYPOINTS descriptor comparisons and as many small geometric fits.
"""

from __future__ import annotations

import logging

import numpy as np

from imgsim.core.errors import ModelNotFoundError
from imgsim.features import local
from imgsim.features.matching import agreeing
from imgsim.storage.keypoints import KeypointStore, Layout, manifest_value, open_store, save_segment

log = logging.getLogger(__name__)

# Pairs of images (150-200 of each collection, every pair; the pair counts below), 2026-12-06: views of one
# photograph keep 8 or more agreeing keypoints in 79 % of pairs on photos-hard-8 and 73 % on photos-hard-12;
# of 26,880 and 38,912 pairs of distinct photographs none does (5 at most on photos-hard-8). 50 candidates: the
# check's most work stays near 10 ms of CPU a query (benchmarks/bench_rerank.py; docs/results.md, issue 32).
CANDIDATES = 50
MIN_AGREEING = 8
# ... and more than this share of the keypoints matched at all (same_scene): scanned digits (8 x 8 pixels, few
# distinct patterns) put 1,223 of 19,982 pairs of different digits past 8 alone, 147 past both; photos-hard-8
# keeps 71 % of its pairs of views (79 % before).
MATCHED_SHARE = 0.1
# The answers that show the query's scene also say what else to look for: the rest are ordered by their
# latents' cosine to the query's plus these answers' latents, each of this weight (average query expansion
# over the verified answers only). photos-hard-8: precision@7 0.851 without (EXPANSION 0), 0.872 with;
# photos-hard-12 p@10 0.690 and 0.713 (docs/results.md, issue 32).
EXPANSION = 1.0
# A view that shares too little with the query may share much with a view that does (the other half of a
# photograph, after a crop of its middle): the candidates not called the same scene are also compared with
# the stored features of the best HOPS answers that are, and those showing that answer's scene follow the
# answers verified directly (transitive verification: Chum et al., "Total Recall", ICCV 2007). Bounded: HOPS
# more comparisons of at most CANDIDATES candidates each, only when an answer was verified.
HOPS = 1
LAYOUT = Layout(local.FORMAT, local.SIDE, local.KEYPOINTS, local.DESCRIPTOR_BYTES)


def can_describe(image_size: int) -> bool:
    """Whether a model of this input size gets features at all (tiny inputs have too few corners)."""
    return image_size >= local.MIN_IMAGE_SIZE


def query_features(image: np.ndarray) -> local.QueryFeatures:
    """A query's features, plain and mirrored, from the model's input (none for a flat or tiny picture)."""
    return local.describe_query(image)


def save_features(model_dir, ids, features: list[local.LocalFeatures]) -> dict:
    """One segment of these images' features (one LocalFeatures per id); returns its entry."""
    return save_segment(model_dir, LAYOUT, {"ids": np.asarray(ids, np.int64).reshape(-1), **local.stack(features)})


def manifest_entry(segments: list) -> dict:
    """What a version's manifest keeps under imgsim.storage.keypoints.MANIFEST_KEY."""
    return manifest_value(LAYOUT, segments)


def open_features(version) -> KeypointStore | None:
    """The version's features; None when it has none this imgsim can use, or they are damaged (logged)."""
    try:
        return open_store(version.model_dir, version.manifest, LAYOUT)
    except ModelNotFoundError as exc:
        log.warning("version %s: its keypoints cannot be used (%s); results keep the latents' order", version.id, exc)
        return None


def agreement(store: KeypointStore, query: local.QueryFeatures, ids) -> tuple[np.ndarray, np.ndarray]:
    """(counts, same): the keypoints agreeing on one similarity between the query (or its mirror image) and each
    of these ids, -1 for an id not compared (no stored features, or past the first CANDIDATES); and whether that
    is the same scene (`same_scene`)."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    counts, matches = np.full(len(ids), -1, np.int64), np.zeros(len(ids), np.int64)
    stacked = store.gather(ids[:CANDIDATES])
    has = np.flatnonzero(stacked["counts"] > 0)
    if len(has):
        columns = (stacked["points"][has], stacked["angles"][has], local.scales_of(stacked["levels"][has]),
                   stacked["descriptors"][has], stacked["counts"][has])
        counts[has], matches[has] = agreeing([query.plain, query.mirrored], *columns)  # the better orientation's
    return counts, same_scene(counts, matches)


def same_scene(counts: np.ndarray, matches: np.ndarray) -> np.ndarray:
    """Whether the agreeing keypoints say "the same scene": at least MIN_AGREEING, and more than a share of the
    matched ones (Brown and Lowe's test for panoramas, n_inliers > alpha + beta n_matches, IJCV 2007). A
    picture of few distinct patterns (a digit upscaled from 8 x 8 pixels) matches many keypoints anywhere,
    of which a few agree by chance; two views of one photograph agree on most of theirs."""
    return np.asarray(counts) >= np.maximum(MIN_AGREEING, MIN_AGREEING + MATCHED_SHARE * np.asarray(matches))


def reorder(counts: np.ndarray, same: np.ndarray, scores: np.ndarray | None = None,
            then: np.ndarray | None = None) -> np.ndarray:
    """Positions in their new order: the same scene first (`same`), most agreeing keypoints first (ties in the
    given order), then those `then` marks (the same scene through an answer, `through_answers`) in the given
    order, then the others in the given order, or by `scores` (highest first) if given."""
    counts, same = np.asarray(counts, np.int64), np.asarray(same, bool)
    then = np.zeros(len(same), bool) if then is None else np.asarray(then, bool) & ~same
    first = np.flatnonzero(same)
    first = first[np.argsort(-counts[first], kind="stable")]
    rest = np.flatnonzero(~same & ~then)
    if scores is not None:
        rest = rest[np.argsort(-np.asarray(scores)[rest], kind="stable")]
    return np.concatenate([first, np.flatnonzero(then), rest])


def through_answers(store: KeypointStore, ids, counts: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Whether each candidate compared and not called the same scene shows the scene of one of the best HOPS
    answers that are (their stored features as the query; `agreement`'s rule)."""
    ids, found = np.asarray(ids, np.int64).reshape(-1), np.zeros(len(counts), bool)
    left = np.flatnonzero((np.asarray(counts) >= 0) & ~same)
    verified = np.flatnonzero(same)
    for best in verified[np.argsort(-np.asarray(counts)[verified], kind="stable")][:HOPS]:
        query = stored_query(store, int(ids[best]))
        if query is None or not len(left):
            continue
        _, hop = agreement(store, query, ids[left])
        found[left[hop]] = True
        left = left[~hop]
    return found


def expanded_scores(vector: np.ndarray, vectors: np.ndarray, same: np.ndarray) -> np.ndarray | None:
    """Each candidate's cosine to the query's latent plus those of the answers showing its scene (`same`):
    the rest are ordered by that, so a view like the ones found, not only like the query, comes next.
    None when no answer shows the same scene, or a candidate's latent is unknown."""
    if not same.any() or not np.isfinite(vectors).all():
        return None
    expanded = vector + EXPANSION * vectors[same].sum(0)
    return vectors @ (expanded / max(float(np.linalg.norm(expanded)), 1e-12))


# --- keeping features at training and indexing --------------------------------------------------

def describing(encode, found: list):
    """`encode` (a batch of model inputs -> latents) that also appends each image's features to `found`."""
    def encode_and_describe(images):
        found.extend(local.describe_many(images))
        return encode(images)

    return encode_and_describe


def describe_files(paths, image_size: int, workers: int = 2) -> list[local.LocalFeatures]:
    """Each file's features from its model input (decoded as training decodes it); none for an unreadable one."""
    from imgsim.inputs.collection import iter_decoded

    found = [local.LocalFeatures.empty()] * len(paths)
    for indices, images, _, _ in iter_decoded(list(paths), image_size, 64, workers):
        for i, image in zip(indices, images):
            found[i] = local.describe(image)
    return found


def manifest_part(model_dir, segments: list, ids=(), found=()) -> dict:
    """A version's manifest value for its features (imgsim.storage.keypoints): these segments, plus one for
    `found` (features of `ids`) if any; empty when there are none."""
    segments = list(segments) + ([save_features(model_dir, ids, list(found))] if len(found) else [])
    return manifest_entry(segments) if segments else {}



def recheck(store: KeypointStore, query: local.QueryFeatures, hits: list, vector: np.ndarray | None = None,
            vectors_of=None) -> tuple[list, list]:
    """Search hits ((id, score), best first) re-ordered by `agreement` and `reorder`, and each one's (agreeing
    keypoints, same scene), (None, None) where it was not compared. With the query's latent `vector` and `vectors_of` (ids -> their
    latents, a vector engine's), the answers that do not show the same scene follow by `expanded_scores`.
    Those showing the scene of a verified answer (`through_answers`) come right after the verified ones and are
    reported as the same scene, with their own agreeing keypoints with the query."""
    ids = [i for i, _ in hits]
    counts, same = agreement(store, query, ids)
    through = through_answers(store, ids, counts, same) if same.any() else np.zeros(len(ids), bool)
    scores = None
    if vector is not None and vectors_of is not None and same.any():
        scores = expanded_scores(vector, np.asarray(vectors_of(ids), np.float32), same | through)
    order = reorder(counts, same, scores, through)
    return [hits[i] for i in order], [(int(counts[i]), bool(same[i] or through[i])) if counts[i] >= 0 else (None, None)
                                      for i in order]


def stored_query(store: KeypointStore, image_id: int) -> local.QueryFeatures | None:
    """A collection image's stored features as a query's: its mirror image's are not stored, so none."""
    stacked = store.gather([image_id])
    count = int(stacked["counts"][0])
    if not count:
        return None
    plain = local.LocalFeatures(stacked["points"][0, :count], stacked["angles"][0, :count],
                                local.scales_of(stacked["levels"][0, :count]), stacked["descriptors"][0, :count])
    return local.QueryFeatures(plain, local.LocalFeatures.empty())


# --- a collection's own images as queries: the labelling graph ----------------------------------

# The most images whose neighbours a training or indexing run re-checks (imgsim.runs.neighbours): each image is
# decoded again and checked as a query is, 23-27 s for 600 images and 67 s for 1,797 digits at load 3-4 on 2
# cores (2026-12-07), so this many take about 3-4 minutes; a larger collection keeps the latents' graph.
GRAPH_LIMIT = 5_000


def recheck_neighbours(version, rows: np.ndarray, sims: np.ndarray, keep: int = 0, queries=()
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Each image's candidates (rows (n, c) of `version`, -1 where none, best first; their cosine) re-checked as
    a search re-checks a query's answers (`recheck`): (rows, sims, same) in a new order, `same` whether the
    check called the pair the same scene. The `keep` nearest stay first whatever the check says, then those it
    called the same scene by their cosine, then the others in `recheck`'s order.

    `queries` yields (row, its query's features: plain and mirrored, from its pixels); a row it does not
    give is queried by its stored features (no mirror image's: a mirrored view is then found only through
    an answer, `through_answers`). None when the version has no features this imgsim can use. An image
    without features keeps its order, nothing called the same scene."""
    kept = open_features(version)
    if kept is None:
        return None
    records, vectors = version.records, version.vectors
    rows, sims = rows.copy(), sims.copy()
    same = np.zeros(rows.shape, bool)
    done = np.zeros(len(rows), bool)

    def vectors_of(ids):
        return vectors[records.rows_of(ids)]

    def check(row: int, query: local.QueryFeatures | None) -> None:
        done[row] = True
        valid = np.flatnonzero(rows[row] >= 0)
        if query is None or not len(query.plain) or not len(valid):
            return
        hits = list(zip(records.ids[rows[row, valid]].tolist(), sims[row, valid].tolist()))
        hits, checked = recheck(kept, query, hits, vectors[row], vectors_of)
        found = np.array([bool(s) for _, s in checked])
        scores = np.array([score for _, score in hits], np.float32)
        lead = np.argsort(-scores, kind="stable")[:keep]
        verified = np.setdiff1d(np.flatnonzero(found), lead)
        verified = verified[np.argsort(-scores[verified], kind="stable")]
        rest = np.setdiff1d(np.flatnonzero(~found), lead)  # recheck's order is the positions' order
        order = np.concatenate([lead, verified, rest]).astype(np.int64)
        rows[row, valid] = records.rows_of([hits[i][0] for i in order])
        sims[row, valid], same[row, valid] = scores[order], found[order]

    for row, query in queries:
        check(int(row), query if query is not None and len(query.plain) else stored_query(kept, int(records.ids[row])))
    for row in np.flatnonzero(~done).tolist():
        check(row, stored_query(kept, int(records.ids[row])))
    return rows, sims, same
