"""The faiss engine: the exact engine's segments, each large one with its own faiss ANN index.

Per segment, by its number of rows (benchmarks/engines-results.txt has the measurements):

- under `flat_below` (CROSSOVER, 10K): no index, an exact scan: under 0.3 ms there, and a small
  incremental add costs no index build at all;
- under `ivf_above` (50K): HNSW (`HNSW32,Flat`): no training, so it holds up on segments too small
  to train IVF centroids on, and answers as fast as IVF at these sizes;
- from `ivf_above` up: IVF (`IVF<4*sqrt(n)>,Flat`): builds 2.7x faster than HNSW at 100K (18 s vs
  49 s on two busy cores) and answers as fast or faster (0.14 vs 0.25 ms); its lists are
  memory-mapped on load.

After a build, the search knob (efSearch or nprobe) is calibrated against exact answers on probe
queries (sampled rows moved off the data) to the smallest value reaching `target_recall` + 0.02
recall@10; the value and the recall reached go into the segment's state.

Filters: removed rows and excluded ids are cleared bits of an IDSelectorBitmap. Segments are
sorted by group, so a group is a slice: scanned exactly when under `flat_below` rows or in an HNSW
segment (HNSW under a filter explores the query's neighbourhood and misses a group lying
elsewhere); in an IVF segment the probes go to the nearest lists among those holding the group,
with an IDSelectorRange. A query that the index answers with fewer than n rows while more qualify
is redone exactly, so a small group in a huge segment comes back whole.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from imgsim.core.files import checked_path, write_file

from . import CROSSOVER, DamagedIndexError
from .exact import ExactEngine, scan
from .segments import Segment

IVF_ABOVE = 50_000
CALIBRATION_QUERIES = 300
MARGIN = 0.02
NEARBY_ROWS = 20  # a query is outside a group when its nearest lists hold fewer than this x k of the group's rows
GROUP_PROBES = 2  # a group search probes this many times the calibrated nprobe (its lists hold other groups too)


def pad(scores: np.ndarray, positions: np.ndarray, n: int):
    """(b, n) arrays, filled with -inf / -1 beyond what was found."""
    missing = n - scores.shape[1]
    if missing <= 0:
        return scores, positions
    return (
        np.hstack([scores, np.full((len(scores), missing), -np.inf, np.float32)]),
        np.hstack([positions, np.full((len(scores), missing), -1, np.int64)]),
    )


def exact_neighbours(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Positions of the exact k best rows for each query, best first."""
    seg = Segment(np.zeros(len(vectors), np.int64), np.zeros(len(vectors), np.int64), vectors)
    scores, positions = scan(seg, queries, k, 0, len(vectors), np.zeros(0, np.int64))
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(positions, order, 1)


class FaissEngine(ExactEngine):
    """Approximate cosine search with faiss (HNSW or IVF per segment), exact on small slices."""

    OPTIONS = ExactEngine.OPTIONS + (
        "flat_below",
        "ivf_above",
        "hnsw_m",
        "hnsw_ef_construction",
        "target_recall",
        "seed",
    )

    def __init__(
        self,
        flat_below: int = CROSSOVER,
        ivf_above: int = IVF_ABOVE,
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 40,
        target_recall: float = 0.95,
        seed: int = 0,
        **options,
    ):
        super().__init__(**options)
        self.flat_below = flat_below
        self.ivf_above = ivf_above
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.target_recall = target_recall
        self.seed = seed

    @property
    def params(self) -> dict:
        return {**super().params, **{k: getattr(self, k) for k in self.OPTIONS}, "faiss": faiss.__version__}

    # --- building ---------------------------------------------------------------------------

    def _index(self, seg: Segment) -> None:
        if seg.rows < max(self.flat_below, 2):
            return
        vectors = np.ascontiguousarray(seg.vectors)
        d, rows = vectors.shape[1], len(vectors)
        rng = np.random.default_rng(self.seed)
        if rows < self.ivf_above:
            index = faiss.index_factory(d, f"HNSW{self.hnsw_m},Flat", faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.hnsw_ef_construction
            index.add(vectors)
            info = {"type": "hnsw", "M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction}
            knob, ladder = "efSearch", [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
        else:
            nlist = max(1, min(int(4 * np.sqrt(rows)), rows // 39))  # faiss wants >= 39 training rows per list
            index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = self.seed
            sample = np.sort(rng.choice(rows, min(rows, 40 * nlist), replace=False))
            index.train(vectors[sample])
            index.add(vectors)
            info = {"type": "ivf", "nlist": nlist}
            knob, ladder = "nprobe", [p for p in (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256) if p < nlist] + [nlist]
        info[knob], info["recall_at_10"] = self._calibrate(index, vectors, info["type"], ladder, rng)
        seg.index, seg.index_info = index, info
        if info["type"] == "ivf":
            self._ivf_lists(seg)  # now, not in the first group search

    def _calibrate(self, index, vectors, kind, ladder, rng) -> tuple[int, float]:
        """The first knob value whose recall@10 reaches target_recall + MARGIN on probe queries.

        The probes are sampled rows moved, in a random direction, by half the typical distance from
        a row to its 10th neighbour, as a new image near known ones would be: stored rows as probes
        overstated HNSW's recall by 0.03 to 0.08 on the benchmark's set (HNSW starts next to them),
        and a whole 10th-neighbour distance asked for 4x more probing than new queries need.
        """
        sample = rng.choice(len(vectors), min(CALIBRATION_QUERIES, len(vectors)), replace=False)
        k = min(10, len(vectors) - 1)
        if k < 1:
            return int(ladder[0]), 1.0
        rows = vectors[sample]
        nearest = exact_neighbours(rows, vectors, k + 1)[:, -1]
        radius = float(np.median(np.linalg.norm(vectors[nearest] - rows, axis=1)))
        noise = rng.standard_normal(rows.shape).astype(np.float32)
        queries = rows + 0.5 * radius * noise / np.linalg.norm(noise, axis=1, keepdims=True)
        queries = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True), dtype=np.float32)
        truth = exact_neighbours(queries, vectors, k)
        recall = 0.0
        for value in ladder:
            _, found = index.search(queries, k, params=self._search_params(kind, value, None, k))
            recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
            if recall >= self.target_recall + MARGIN:
                break
        return int(value), round(recall, 4)

    @staticmethod
    def _search_params(kind: str, value: int, sel, n: int):
        """Per-call search parameters (thread-safe: the index itself is never changed)."""
        extra = {"sel": sel} if sel is not None else {}
        if kind == "ivf":
            return faiss.SearchParametersIVF(nprobe=int(value), **extra)
        return faiss.SearchParametersHNSW(efSearch=max(int(value), n), **extra)

    # --- searching --------------------------------------------------------------------------

    def _search_segment(self, seg, queries, n, lo, hi, excluded):
        filtered = (lo, hi) != (0, seg.rows)
        if seg.index is None or hi - lo < self.flat_below or (filtered and seg.index_info["type"] == "hnsw"):
            # HNSW under a group filter walks the query's neighbourhood and misses a group lying
            # elsewhere; an HNSW segment is under ivf_above rows, so its group slice is cheap to scan.
            return pad(*scan(seg, queries, n, lo, hi, excluded), n)
        k = min(n, seg.live_in(lo, hi) - len(excluded))
        if k <= 0:
            return pad(np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64), n)
        sel, keep_alive = self._selector(seg, lo, hi, excluded)
        queries = np.ascontiguousarray(queries)
        info = seg.index_info
        if info["type"] == "hnsw":
            scores, positions = seg.index.search(
                queries, k, params=self._search_params("hnsw", info["efSearch"], sel, k)
            )
        elif filtered:
            scores, positions, outside = self._search_group_lists(seg, queries, k, int(seg.groups[lo]), sel)
        else:
            scores, positions = seg.index.search(queries, k, params=self._search_params("ivf", info["nprobe"], sel, k))
        del keep_alive
        scores = np.where(positions >= 0, scores, -np.inf).astype(np.float32)
        redo = (positions >= 0).sum(axis=1) < k  # the index ran out (a narrow filter)
        if filtered and info["type"] == "ivf":
            redo |= outside
        scores, positions = pad(scores, positions.astype(np.int64), n)
        if redo.any():
            scores[redo], positions[redo] = pad(*scan(seg, queries[redo], n, lo, hi, excluded), n)
        return scores, positions

    def _search_group_lists(self, seg, queries, k, group, sel):
        """IVF search inside one group: probe the nearest lists among those holding that group's rows.

        Returns scores, positions and which queries lie outside the group (the nprobe lists
        nearest to them hold fewer than NEARBY_ROWS * k of its rows): their neighbours in the group
        are far, near-ties spread over many lists, which probing finds badly (recall@10 0.81 at
        200K rows in 16 groups), so the caller scans the group's slice for them. Inside its group
        (how imgsim searches) a query gets 0.999 from the group's nearest lists, against 0.98 from
        the nearest lists overall.
        """
        centroids, lists_of = self._ivf_lists(seg)
        lists, counts = lists_of[group]
        nprobe = min(len(lists), GROUP_PROBES * seg.index_info["nprobe"])
        every = queries @ centroids.T
        rows_here = np.zeros(len(centroids), np.int64)
        rows_here[lists] = counts
        top = min(seg.index_info["nprobe"], len(centroids))
        nearest = np.argpartition(-every, top - 1, axis=1)[:, :top]
        outside = rows_here[nearest].sum(axis=1) < NEARBY_ROWS * k
        coarse = every[:, lists]
        pick = (
            np.argpartition(-coarse, nprobe - 1, axis=1)[:, :nprobe]
            if nprobe < len(lists)
            else np.broadcast_to(np.arange(len(lists)), coarse.shape)
        )
        assign = np.ascontiguousarray(lists[pick], dtype=np.int64)
        distances = np.ascontiguousarray(np.take_along_axis(coarse, pick, 1), dtype=np.float32)
        params = self._search_params("ivf", nprobe, sel, k)
        scores, positions = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
        # the C++ call: faiss' Python wrapper of search_preassigned does not pass search parameters on
        seg.index.search_preassigned_c(
            len(queries),
            faiss.swig_ptr(queries),
            k,
            faiss.swig_ptr(assign),
            faiss.swig_ptr(distances),
            faiss.swig_ptr(scores),
            faiss.swig_ptr(positions),
            False,
            params,
        )
        return scores, positions, outside

    @staticmethod
    def _ivf_lists(seg):
        """The IVF centroids and, per group, the lists holding its rows and how many (once per segment)."""
        if getattr(seg, "ivf_lists", None) is None:
            index = seg.index
            centroids = index.quantizer.reconstruct_n(0, index.nlist)
            invlists, holders = index.invlists, {}
            for number in range(index.nlist):
                size = invlists.list_size(number)
                if not size:
                    continue
                pointer = invlists.get_ids(number)
                positions = faiss.rev_swig_ptr(pointer, size).copy()
                invlists.release_ids(number, pointer)
                found, counts = np.unique(seg.groups[positions], return_counts=True)
                for group, count in zip(found.tolist(), counts.tolist()):
                    holders.setdefault(group, []).append((number, count))
            seg.ivf_lists = (centroids, {g: tuple(np.array(c, np.int64) for c in zip(*v)) for g, v in holders.items()})
        return seg.ivf_lists

    @staticmethod
    def _selector(seg: Segment, lo: int, hi: int, excluded: np.ndarray):
        """An IDSelector for live, non-excluded rows in lo..hi (None when all qualify), and what it points into."""
        parts = []
        if (lo, hi) != (0, seg.rows):
            parts.append(faiss.IDSelectorRange(lo, hi))
        bits = None
        if seg.dead_count or len(excluded):
            if "live_bits" not in seg.cache:
                seg.cache["live_bits"] = np.packbits(~seg.dead, bitorder="little")
            bits = seg.cache["live_bits"]
            if len(excluded):
                bits = bits.copy()
                np.bitwise_and.at(bits, excluded >> 3, ~(np.left_shift(1, excluded & 7)).astype(np.uint8))
            parts.append(faiss.IDSelectorBitmap(seg.rows, faiss.swig_ptr(bits)))
        if not parts:
            return None, None
        sel = parts[0] if len(parts) == 1 else faiss.IDSelectorAnd(parts[0], parts[1])
        return sel, (parts, bits)

    # --- files ------------------------------------------------------------------------------

    def _write_index(self, seg: Segment, folder: Path) -> str:
        return write_file(
            folder, f".{seg.index_info['type']}.faiss", lambda path: faiss.write_index(seg.index, str(path))
        )

    def _open_index(self, seg: Segment, folder: Path) -> None:
        name = (seg.files or {}).get("index")
        info = seg.index_info or {}
        if not name:
            self._index(seg)  # a segment saved without one (by the exact engine): build it now
            return
        path = checked_path(folder, name, verify=False)  # verified with the segment's other files
        flag = faiss.IO_FLAG_MMAP if info.get("type") == "ivf" else faiss.IO_FLAG_MMAP_IFC
        try:
            index = faiss.read_index(str(path), flag)
        except RuntimeError as exc:
            raise DamagedIndexError(f"{path}: not a readable faiss index ({str(exc).splitlines()[0]})") from None
        if info.get("type") == "ivf":
            # memory-mapped lists: faiss would start 32 prefetch threads per search (10x the latency)
            faiss.downcast_InvertedLists(index.invlists).prefetch_nthread = 0
        if index.ntotal != seg.rows or index.d != seg.vectors.shape[1] or info.get("type") not in ("ivf", "hnsw"):
            raise DamagedIndexError(f"{path}: the index does not match its segment")
        seg.index = index
        if info["type"] == "ivf":
            self._ivf_lists(seg)
