"""The exact engine: numpy dot products over memory-mapped segments; needs nothing, answers exactly.

Rows arrive through `add` into a pending buffer, become one segment (sorted by group, so a group
filter is a slice) at the next read or save, and are written as immutable files by `save`.
Removals are tombstones (a dead mask per segment) applied at search time. `compact` rewrites a
segment once more than `max_dead_share` of it is dead, and merges segments of similar size once
`merge_factor` of them pile up (size tiers), so incremental adds stay cheap and searches touch few
segments.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from imgsim.core.files import fsync_path
from imgsim.storage.folder import ModelFolder

from . import DamagedIndexError, VectorEngine, check_rows, id_array, normalise, per_group
from .segments import FORMAT, Segment, merge

SCORES_BUDGET = 1 << 22  # floats in one (queries x rows) block of scores: 16 MB


def top(scores: np.ndarray, positions: np.ndarray, n: int):
    """The n best (scores, positions) per row of two aligned (b, m) arrays, unordered."""
    if scores.shape[1] <= n:
        return scores, positions
    pick = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    return np.take_along_axis(scores, pick, 1), np.take_along_axis(positions, pick, 1)


def scan(seg: Segment, queries: np.ndarray, n: int, lo: int, hi: int, excluded: np.ndarray):
    """Exact best n (scores, positions) per query among rows lo..hi of a segment, -inf where none."""
    b = len(queries)
    best_s, best_p = np.full((b, 0), -np.inf, np.float32), np.zeros((b, 0), np.int64)
    step = max(1024, SCORES_BUDGET // max(b, 1))
    for start in range(lo, hi, step):
        stop = min(hi, start + step)
        block = np.asarray(seg.vectors[start:stop])
        # one query: a matrix-vector product over the C-ordered rows (BLAS gemv), steadier than a 1-row gemm
        scores = (block @ queries[0])[None, :] if b == 1 else queries @ block.T
        dead = seg.dead[start:stop]
        if dead.any():
            scores[:, dead] = -np.inf
        out = excluded[(excluded >= start) & (excluded < stop)]
        if len(out):
            scores[:, out - start] = -np.inf
        positions = np.broadcast_to(np.arange(start, stop, dtype=np.int64), scores.shape)
        scores, positions = top(scores, positions, n)
        best_s, best_p = top(np.hstack([best_s, scores]), np.hstack([best_p, positions]), n)
    return best_s, best_p


class ExactEngine(VectorEngine):
    """Brute-force cosine search over segments: exact answers, memory-mapped vectors."""

    OPTIONS = ("max_dead_share", "merge_factor")

    def __init__(self, max_dead_share: float = 0.2, merge_factor: int = 4):
        self.max_dead_share = max_dead_share
        self.merge_factor = merge_factor
        self.segments_: list[Segment] = []
        self.pending_: list[tuple] = []
        self.dim_: int | None = None

    # --- rows -----------------------------------------------------------------------------

    def add(self, ids, vectors, groups) -> ExactEngine:
        ids, vectors, groups = check_rows(ids, vectors, groups, self.dim_)
        if len(ids):
            self.dim_ = vectors.shape[1]
            self._kill(ids)
            self.pending_.append((ids, vectors, groups))
        return self

    def remove(self, ids) -> int:
        self._seal()
        return self._kill(id_array(ids))

    def _kill(self, ids: np.ndarray) -> int:
        removed = 0
        for seg in self.segments_:
            positions = seg.positions(ids)
            seg.kill(positions)
            removed += len(positions)
        return removed

    def _seal(self) -> None:
        """Turn the pending rows into one segment (the last add of an id wins)."""
        if not self.pending_:
            return
        pending, self.pending_ = self.pending_, []
        ids, vectors, groups = (
            np.concatenate([p[i] for p in pending]) if len(pending) > 1 else pending[0][i] for i in range(3)
        )
        del pending  # the batches' memory goes before the sorted copy is made
        _, last = np.unique(ids[::-1], return_index=True)
        keep = None if len(last) == len(ids) else np.sort(len(ids) - 1 - last)
        self._append(Segment.build(ids, vectors, groups, keep))

    def _append(self, seg: Segment) -> None:
        self._index(seg)
        self.segments_.append(seg)

    def _index(self, seg: Segment) -> None:
        """Build an ANN structure for a new segment (none here: every search is a scan)."""

    def __len__(self) -> int:
        self._seal()
        return sum(seg.live for seg in self.segments_)

    def items(self, batch: int = 65_536):
        self._seal()
        for seg in self.segments_:
            yield from seg.live_rows(batch)

    def vectors_of(self, ids) -> np.ndarray:
        """Each id looked up in the segments' sorted ids: no scan."""
        self._seal()
        ids = id_array(ids)
        out = np.full((len(ids), self.dim_ or 0), np.nan, np.float32)
        for seg in self.segments_:
            for position in seg.positions(ids).tolist():
                out[ids == seg.ids[position]] = seg.vectors[position]
        return out

    # --- search ---------------------------------------------------------------------------

    def search_many(self, vectors, n: int, group=None, exclude=()) -> list[list[tuple[int, float]]]:
        self._seal()
        queries = np.asarray(vectors, dtype=np.float32)
        queries = queries.reshape(1, -1) if queries.ndim == 1 else queries
        if self.dim_ is None or n <= 0 or not len(queries):
            return [[] for _ in range(len(queries))]
        queries = normalise(queries, self.dim_)
        exclude = np.unique(id_array(exclude))
        return per_group(queries, n, group, exclude, self._search_group)

    def _search_group(self, queries, n, group, exclude) -> list[list[tuple[int, float]]]:
        scores, ids = [], []
        for seg in self.segments_:
            lo, hi = seg.span(group)
            if hi == lo or not seg.live_in(lo, hi):
                continue
            excluded = seg.positions(exclude)
            excluded = excluded[(excluded >= lo) & (excluded < hi)]
            s, p = self._search_segment(seg, queries, n, lo, hi, excluded)
            scores.append(s)
            ids.append(np.where(p >= 0, seg.ids[np.maximum(p, 0)], -1))
        if not scores:
            return [[] for _ in range(len(queries))]
        scores, ids = np.hstack(scores), np.hstack(ids)
        results = []
        for s, i in zip(scores, ids):
            ok = np.isfinite(s) & (i >= 0)
            s, i = s[ok], i[ok]
            order = np.lexsort((i, -s))[:n]
            results.append([(int(i[j]), float(s[j])) for j in order])
        return results

    def _search_segment(self, seg, queries, n, lo, hi, excluded):
        return scan(seg, queries, n, lo, hi, excluded)

    # --- persistence ----------------------------------------------------------------------

    @property
    def params(self) -> dict:
        return {"engine": self.name, "max_dead_share": self.max_dead_share, "merge_factor": self.merge_factor}

    def save(self, store_dir) -> dict:
        self._seal()
        folder = ModelFolder(store_dir).segments
        folder.mkdir(parents=True, exist_ok=True)
        for seg in self.segments_:
            seg.save(folder, self._write_index)
        fsync_path(folder)
        fsync_path(folder.parent)
        return {
            "engine": self.name,
            "format": FORMAT,
            "dim": self.dim_,
            "rows": len(self),
            "params": self.params,
            "segments": [seg.state() for seg in self.segments_],
        }

    _write_index = None  # engines with per-segment indexes write them here: (segment, folder) -> name

    @classmethod
    def load(cls, store_dir, state: dict, verify: bool = True, **options) -> ExactEngine:
        """Open a state saved by the exact or the faiss engine; checksums verified unless verify=False."""
        folder = ModelFolder(store_dir).segments
        from imgsim.storage.engines import ENGINES

        saved_by = ENGINES.get(state.get("engine")) if isinstance(state.get("engine"), str) else None
        if state.get("format") != FORMAT or saved_by is None or not saved_by.segments:
            raise DamagedIndexError(
                f"{store_dir}: engine state {state.get('engine')!r} format "
                f"{state.get('format')!r} is not a segment state this version reads"
            )
        saved = {k: v for k, v in (state.get("params") or {}).items() if k in cls.OPTIONS}
        engine = cls(**{**saved, **options})
        engine.dim_ = state.get("dim")
        for entry in state.get("segments") or []:
            seg = Segment.open(folder, entry, engine.dim_, verify)
            engine._open_index(seg, folder)
            engine.segments_.append(seg)
        if state.get("rows") is not None and state["rows"] != len(engine):
            raise DamagedIndexError(
                f"{store_dir}: the state counts {state['rows']} vectors, its segments hold {len(engine)}"
            )
        return engine

    def _open_index(self, seg: Segment, folder: Path) -> None:
        """Open a segment's saved ANN structure (nothing to open here)."""

    def compact(self) -> bool:
        """Rewrite segments over `max_dead_share` dead, merge size tiers holding `merge_factor` segments.

        A segment's tier is floor(log_merge_factor(live rows)). Everything chosen is merged into one
        new segment; segments already written stay on disk for the versions that use them.
        """
        self._seal()
        chosen, kept = [], []
        for seg in self.segments_:
            if not seg.live or seg.dead_count > self.max_dead_share * seg.rows:
                chosen.append(seg)
            else:
                kept.append(seg)
        tiers = defaultdict(list)
        for seg in kept:
            tiers[int(math.log(seg.live, self.merge_factor))].append(seg)
        for tier in tiers.values():
            if len(tier) >= self.merge_factor:
                chosen.extend(tier)
        if not chosen:
            return False
        self.segments_ = [seg for seg in self.segments_ if all(seg is not c for c in chosen)]
        if any(seg.live for seg in chosen):
            self._append(merge(chosen))
        return True
