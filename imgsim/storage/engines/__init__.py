"""Vector engines: one interface for nearest-neighbour search over image vectors, chosen by name.

Every engine keeps L2-normalised float32 vectors under stable int64 image ids, each row in one
group, and answers cosine searches best first, optionally inside one group and never returning an
excluded id. Persistence is incremental: `save(store_dir)` writes only what changed since `load`
and returns a small JSON state for the model version's manifest; `load(store_dir, state)` opens
exactly that state, so a version whose state was never recorded leaves the previous one intact.

    engine = make_engine(choose_engine("auto", n_vectors))
    engine.add(ids, vectors, groups)
    engine.compact()
    state = engine.save(model_dir)          # -> manifest["engine"]
    engine = load_engine(model_dir, state)  # in another process, later
    engine.search(vector, 10, group=3, exclude={42})

Engines are looked up by name in one registry, `ENGINES`, which the command line, `Settings`
and the background job read; `register` adds one. Built in: "exact" (numpy, needs nothing, the
default for small collections), "faiss" (ANN indexes per segment), "milvus" (Milvus Lite for a
local `*.db` path, a Milvus server for `http://...`). "auto" is not an engine: `choose_engine`
picks exact or faiss by the collection's size.
"""

from __future__ import annotations

import abc
import importlib
import os
from dataclasses import dataclass, field

import numpy as np

from imgsim.core.errors import DamagedIndexError

AUTO = "auto"

# `auto` uses exact below this many vectors, faiss from it on. Measured by benchmarks/bench_engines.py
# (benchmarks/engines-results.txt; 2 shared CPU cores, 128-d clustered vectors, one query at a
# time): faiss at recall@10 >= 0.95 is faster than exact numpy at every size tested, but only by
# 0.01 ms at 1K and under 2x below 10K, where exact answers in under 0.3 ms, exactly, with no index
# to build; from 10K on it is 2.5x faster (0.11 vs 0.27 ms), 50x at 300K.
CROSSOVER = 10_000


class VectorEngine(abc.ABC):
    """Nearest neighbours by cosine similarity over vectors with stable ids and one group per row."""

    name = ""  # the name it is registered under: stamped by make_engine and load_engine, saved in its state

    @abc.abstractmethod
    def add(self, ids, vectors, groups) -> VectorEngine:
        """Add (n,) int64 ids with (n, d) vectors (normalised here) and (n,) int groups.

        An id already present is replaced: its old row is removed. Returns self.
        """

    @abc.abstractmethod
    def remove(self, ids) -> int:
        """Remove these ids (unknown ones are ignored); returns how many rows were removed."""

    def search(self, vector, n: int, group: int | None = None, exclude=()) -> list[tuple[int, float]]:
        """The n ids most similar to `vector` with their cosine similarity, best first.

        `group` restricts the answer to that group; an id in `exclude` is never returned. Fewer
        than n come back only when fewer rows qualify.
        """
        return self.search_many(np.asarray(vector, dtype=np.float32).reshape(1, -1), n, group, exclude)[0]

    @abc.abstractmethod
    def search_many(self, vectors, n: int, group=None, exclude=()) -> list[list[tuple[int, float]]]:
        """`search` for each row of (b, d) `vectors`; `group` is None, one int, or one per row."""

    def vectors_of(self, ids) -> np.ndarray:
        """(n, d) float32 vectors of these ids, in their order; a row of NaN for an id not here.

        This default streams every row (`items`); engines that can look an id up do so.
        """
        ids = id_array(ids)
        out = None
        for batch_ids, vectors, _ in self.items():
            if out is None:
                out = np.full((len(ids), np.shape(vectors)[1]), np.nan, np.float32)
            found = np.isin(batch_ids, ids)
            for i, vector in zip(batch_ids[found].tolist(), np.asarray(vectors)[found]):
                out[ids == i] = vector
        return np.zeros((len(ids), 0), np.float32) if out is None else out

    @abc.abstractmethod
    def __len__(self) -> int:
        """Live vectors (added and not removed)."""

    @property
    @abc.abstractmethod
    def params(self) -> dict:
        """Build and search parameters, JSON-able, for the model version's manifest."""

    @abc.abstractmethod
    def items(self, batch: int = 65_536):
        """Yield (ids, vectors, groups) arrays over the live rows, `batch` rows at a time."""

    @abc.abstractmethod
    def save(self, store_dir) -> dict:
        """Persist what changed since load into `store_dir`; return the JSON state that reopens it."""

    @classmethod
    @abc.abstractmethod
    def load(cls, store_dir, state: dict, **options) -> VectorEngine:
        """Open a saved state, verifying its data; raises DamagedIndexError when it is not intact."""

    def compact(self) -> bool:
        """Merge segments and drop removed rows where worthwhile; True when something changed."""
        return False


def normalise(vectors, dim: int | None = None) -> np.ndarray:
    """(n, d) float32 rows scaled to unit length; refuses non-finite values and a wrong width."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, d), got shape {vectors.shape}")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"vectors have {vectors.shape[1]} dimensions, this index holds {dim}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def check_rows(ids, vectors, groups, dim: int | None):
    """Validated (ids int64, unit vectors float32, groups int64) for `add`."""
    ids = np.asarray(ids).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    vectors = normalise(vectors, dim) if len(ids) else np.zeros((0, dim or 1), np.float32)
    if not (len(ids) == len(vectors) == len(groups)):
        raise ValueError(f"{len(ids)} ids, {len(vectors)} vectors and {len(groups)} groups: lengths differ")
    for name, values in (("ids", ids), ("groups", groups)):
        if len(values) and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got {values.dtype}")
    ids, groups = ids.astype(np.int64), groups.astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("the same id appears twice in one add")
    return ids, vectors, groups


def per_group(queries: np.ndarray, n: int, group, exclude, search) -> list:
    """Answer `search(queries, n, group, exclude)` for one group (or None), or row by row for one group per row."""
    if group is None or np.ndim(group) == 0:
        return search(queries, int(n), None if group is None else int(group), exclude)
    group = np.asarray(group).reshape(-1)
    if len(group) != len(queries):
        raise ValueError(f"{len(group)} groups for {len(queries)} query vectors")
    results = [None] * len(queries)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        for row, hits in zip(rows, search(queries[rows], int(n), int(g), exclude)):
            results[row] = hits
    return results


def id_array(ids) -> np.ndarray:
    """Any iterable of ids (set, list, array) as a 1-D int64 array."""
    if isinstance(ids, (set, frozenset)) or not hasattr(ids, "__len__"):
        ids = list(ids)
    ids = np.asarray(ids).reshape(-1)
    return ids.astype(np.int64) if len(ids) else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Engine:
    """A registered engine: its name, where its class is, and what it needs."""

    name: str
    target: str  # "module:Class", imported only when the engine is built or opened
    summary: str  # one line for --help
    segments: bool = False  # keeps its vectors in the shared segment files: any such engine opens its state
    server: bool = False  # its data lives in a server (or its file) outside the model folder, not in segments/
    environ: dict = field(default_factory=dict)  # option -> environment variable giving its default

    def load_class(self) -> type[VectorEngine]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module, __name__), name)


ENGINES: dict[str, Engine] = {}


def register(name: str, target: str, summary: str, segments: bool = False, server: bool = False,
             environ: dict | None = None) -> Engine:
    """Add an engine to the registry (or replace one of that name): `target` is "module:Class".

    The registry is the one list of engines: the command line's choices, `Settings.engine`, the
    background job and the shared contract tests (tests/test_engines.py) all read it, and an
    engine's instances carry the name they were made under.
    """
    if name == AUTO or not name.isidentifier():
        raise ValueError(f"{name!r} cannot name an engine")
    ENGINES[name] = Engine(name, target, summary, segments, server, dict(environ or {}))
    return ENGINES[name]


# The built-in engines are declared here rather than by their own modules: importing faiss takes
# about a second, and the names are needed to parse any command line.
register("exact", ".exact:ExactEngine", "exact numpy search; needs nothing", segments=True)
register("faiss", ".faiss:FaissEngine", "faiss ANN indexes (HNSW, IVF) per segment", segments=True)
register("milvus", ".milvus:MilvusEngine", "Milvus Lite (a local .db path) or a Milvus server (http://...), "
         "at $IMGSIM_MILVUS_URI", server=True, environ={"uri": "IMGSIM_MILVUS_URI"})


def engine_names() -> tuple[str, ...]:
    """The registered engines' names."""
    return tuple(ENGINES)


def engine_choices() -> tuple[str, ...]:
    """What a setting may name: "auto" and every registered engine."""
    return (AUTO, *ENGINES)


def check_name(name, choices=None) -> str:
    """`name` when it is one of `choices` (default: engine_choices()), else a ValueError listing them."""
    choices = engine_choices() if choices is None else choices
    if name not in choices:
        raise ValueError(f"unknown vector engine {name!r}: choose one of {', '.join(choices)}")
    return name


def make_engine(name: str = "exact", **options) -> VectorEngine:
    """A new, empty engine by name ("auto" means exact: it is empty)."""
    entry = ENGINES["exact" if name == AUTO else check_name(name)]
    for option, variable in entry.environ.items():
        options.setdefault(option, os.environ.get(variable) or None)
    engine = entry.load_class()(**options)
    engine.name = entry.name
    return engine


def choose_engine(name: str, n_vectors: int) -> str:
    """The engine to use for a collection of n_vectors: `auto` is exact below CROSSOVER, faiss above."""
    if check_name(name) != AUTO:
        return name
    if n_vectors < CROSSOVER:
        return "exact"
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "exact"
    return "faiss"


def can_open(name: str, state) -> bool:
    """Whether engine `name` opens a state saved by another directly: both keep the shared segment files."""
    saved = ENGINES.get(state.get("engine")) if isinstance(state, dict) and isinstance(state.get("engine"), str) else None
    return saved is not None and name in ENGINES and (name == saved.name or ENGINES[name].segments and saved.segments)


def load_engine(store_dir, state: dict, name: str | None = None, **options) -> VectorEngine:
    """Reopen a saved engine state. `name` may switch between engines that share the segment files (exact, faiss)."""
    if not isinstance(state, dict) or "engine" not in state:
        raise DamagedIndexError(f"{store_dir}: the engine state is missing or not a mapping")
    saved = ENGINES.get(state["engine"]) if isinstance(state["engine"], str) else None
    if saved is None:
        raise DamagedIndexError(f"{store_dir}: unknown vector engine {state['engine']!r} in the engine state")
    entry = ENGINES[check_name(name, engine_names())] if name else saved
    if not can_open(entry.name, state):
        raise ValueError(f"a {saved.name} state cannot be opened with the {entry.name} engine")
    engine = entry.load_class().load(store_dir, state, **options)
    engine.name = entry.name
    return engine


def unreferenced_files(store_dir, states) -> list:
    """Segment files no state in `states` refers to (left by crashes or dropped versions).

    The caller deletes them, holding the store's writer lock, after choosing which versions to keep.
    """
    from .segments import unreferenced_files as _unreferenced

    return _unreferenced(store_dir, states)


__all__ = [
    "AUTO",
    "CROSSOVER",
    "ENGINES",
    "DamagedIndexError",
    "Engine",
    "VectorEngine",
    "can_open",
    "choose_engine",
    "engine_choices",
    "engine_names",
    "load_engine",
    "make_engine",
    "register",
    "unreferenced_files",
]
