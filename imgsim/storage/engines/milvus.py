"""The Milvus engine through pymilvus' MilvusClient: a local `*.db` path is Milvus Lite, `http://host:19530` a server.

All versions share one collection. Each writing session (the changes between a load and a save)
gets a random 62-bit session id; every row records the session that added it (`added`) and the
one that removed it (`removed`, 0 while none has). A version's state lists its lineage of
sessions, and a search filters

    added in [lineage] and removed not in [lineage]

so rows written by a session that never reached a recorded state (a crash before the version was
switched in, or a version later dropped) are invisible to every other version, and switching a
version is nothing more than recording its state. Removal upserts the row with `removed` set;
nothing is ever deleted, so older versions keep answering. Session ids rather than a counter
(`added <= S and removed > S`), because versions branch (a new version can be made from an older
active one) and a crashed session's rows must never match a later version's number.

A row already removed on another branch cannot take a second session in its one `removed` field;
such rare removals are kept in the state (`conflicts`, primary keys) and filtered with
`pk not in [...]`. (An array of removing sessions would need `array_contains_any`, which Milvus
Lite evaluates row by row in Python: 450 ms a search over 20,000 rows.)

Each group's rows live in their own partition (`group_<g>`), and a group search names it besides
filtering `group_id == g`: Milvus' HNSW under a filter passing one group in eight walks the
query's neighbourhood and misses a group lying elsewhere (recall@10 0.79 on Milvus Lite in
tests/test_engines.py's set), while inside its partition the group is the whole graph.
Milvus allows 1,024 partitions per collection by default, so at most about a thousand groups.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from imgsim.core.errors import BusyError

from . import DamagedIndexError, VectorEngine, check_rows, id_array, normalise, per_group

FORMAT = 1
BATCH = 1000  # rows per insert/upsert request and ids per `in [...]` query
MAX_LIMIT = 16_384  # Milvus' largest top-k
MILVUS_TOKEN_ENV = "IMGSIM_MILVUS_TOKEN"
FIELDS = ("pk", "image_id", "group_id", "added", "removed", "vector")
PK = re.compile(r"^[0-9a-f]+\.[0-9]+$")
# Searches of a published version (MilvusEngine.consistency): Strong waits for the server's next time tick
# (~200 ms on Milvus 2.3.5); Bounded reads what the server holds, at most a few seconds old, which is every
# row of a version recorded before it was loaded. docs/scale.md has the measured figures.
READ_CONSISTENCY = "Bounded"
LOAD_TRIES, LOAD_PAUSE = 4, 0.5  # a Lite index file still being written: 0.5 + 1 + 2 s of pauses at most


def is_local(uri: str) -> bool:
    return "://" not in uri and not uri.startswith("unix:")


def checked_uri(uri: str) -> str:
    """`uri`, unless it carries a user name or password (`http://user:password@host`), which is refused.

    Credentials in the URI would be repeated in every error that names the server (some shown to
    dashboard visitors) and saved in each version's engine state; they belong in IMGSIM_MILVUS_TOKEN.
    The refusal shows the URI without them.
    """
    if not is_local(uri) and "@" in urlsplit(uri).netloc:
        parts = urlsplit(uri)
        shown = f"{parts.scheme}://…@{parts.netloc.rsplit('@', 1)[1]}{parts.path}"
        raise ValueError(f"{shown}: a Milvus URI with a user name or password is refused (errors would show it and "
                         f"versions would keep it); set {MILVUS_TOKEN_ENV}=user:password instead")
    return uri


def lite_is_locked(uri: str) -> bool:
    """Whether another process holds Milvus Lite's lock on this database folder."""
    import fcntl

    lock = Path(uri) / "LOCK"
    if not lock.is_file():
        return False
    with open(lock, "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def ints(values) -> str:
    """A Milvus filter list literal: only integers ever reach an expression, so nothing needs quoting."""
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


class MilvusEngine(VectorEngine):
    """Vectors in a Milvus collection, versions as session lineages, filters as Milvus expressions."""

    OPTIONS = ("collection", "index_type", "M", "ef_construction", "ef")

    def __init__(
        self,
        uri: str | None = None,
        collection: str = "imgsim",
        index_type: str = "HNSW",
        M: int = 16,
        ef_construction: int = 128,
        ef: int = 64,
        token: str | None = None,
    ):
        if not uri:
            raise ValueError(
                "the milvus engine needs a URI: a local path ending in .db (Milvus Lite) or "
                "http://host:19530 (set IMGSIM_MILVUS_URI)"
            )
        uri = checked_uri(str(uri))
        if is_local(uri) and not uri.endswith(".db"):
            raise ValueError(f"{uri}: a local Milvus Lite URI must be a path ending in .db")
        # a server's credentials ("user:password" or an API key) never go into a manifest: from here or the environment
        token = os.environ.get(MILVUS_TOKEN_ENV, "") if token is None else token
        self.uri, self.collection, self.token = uri, collection, token
        self.index_type, self.M, self.ef_construction, self.ef = index_type, M, ef_construction, ef
        self.sessions_: list[int] = []  # the lineage this engine was loaded at
        self.conflicts_: list[str] = []  # rows removed here after another branch had removed them
        self.session_: int | None = None  # this writer's session, claimed at its first change
        self.rows_ = 0
        self.dim_: int | None = None
        self.client_ = None
        self.partitions_: set[str] | None = None

    # --- connection and schema ---------------------------------------------------------------

    @property
    def client(self):
        if self.client_ is None:
            from pymilvus import MilvusClient
            from pymilvus.exceptions import MilvusException

            if is_local(self.uri):
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.client_ = MilvusClient(uri=self.uri, token=self.token)
            except MilvusException as exc:
                if is_local(self.uri) and lite_is_locked(self.uri):
                    raise BusyError(
                        f"{self.uri}: another process has this Milvus Lite database open "
                        "(Milvus Lite serves one process at a time; use a Milvus server to share it)"
                    ) from None
                raise ValueError(f"{self.uri}: cannot connect to Milvus ({str(exc).splitlines()[0][:200]})") from None
        return self.client_

    def close(self) -> None:
        if self.client_ is not None:
            self.client_.close()
            self.client_ = None

    def _collection_dim(self) -> int | None:
        if not self.client.has_collection(self.collection):
            return None
        for field in self.client.describe_collection(self.collection)["fields"]:
            if field["name"] == "vector":
                return int(field["params"]["dim"])
        raise DamagedIndexError(f"{self.uri}: collection {self.collection!r} has no vector field")

    def _ensure_collection(self, dim: int) -> None:
        existing = self._collection_dim()
        if existing is None:
            from pymilvus import DataType

            schema = self.client.create_schema(auto_id=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=40)
            schema.add_field("image_id", DataType.INT64)
            schema.add_field("group_id", DataType.INT64)
            schema.add_field("added", DataType.INT64)
            schema.add_field("removed", DataType.INT64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            index = self.client.prepare_index_params()
            index.add_index(
                "vector",
                index_type=self.index_type,
                metric_type="COSINE",
                params={"M": self.M, "efConstruction": self.ef_construction},
            )
            self.client.create_collection(
                self.collection, schema=schema, index_params=index, consistency_level="Strong"
            )
        elif existing != dim:
            raise ValueError(f"{self.uri}: collection {self.collection!r} holds {existing}-d vectors, not {dim}-d")
        self.dim_ = dim

    @staticmethod
    def partition(group: int) -> str:
        return f"group_{group}" if group >= 0 else f"group_m{-group}"

    def _has_partition(self, name: str) -> bool:
        if self.partitions_ is None:
            self.partitions_ = set(self.client.list_partitions(self.collection))
        return name in self.partitions_

    def _ensure_partition(self, name: str) -> None:
        if not self._has_partition(name):
            self.client.create_partition(self.collection, name)
            self.partitions_.add(name)

    def _claim(self) -> int:
        if self.session_ is None:
            self.session_ = secrets.randbits(62) + 1
            self.next_row_ = 0
        return self.session_

    @property
    def lineage(self) -> list[int]:
        return self.sessions_ + ([self.session_] if self.session_ else [])

    def _visible(self) -> str:
        lineage = ints(self.lineage)
        expression = f"added in {lineage} and removed not in {lineage}"
        if self.conflicts_:
            expression += " and pk not in [" + ", ".join(f'"{pk}"' for pk in self.conflicts_) + "]"
        return expression

    @property
    def consistency(self) -> str:
        """The consistency level of a read: Strong while this engine writes (it must read its own rows), else
        READ_CONSISTENCY. A published version never changes: its rows were flushed before its state was
        recorded, and `load` counted them at Strong, so its searches need not wait for newer writes."""
        return "Strong" if self.session_ is not None else READ_CONSISTENCY

    # --- rows --------------------------------------------------------------------------------

    def add(self, ids, vectors, groups) -> MilvusEngine:
        ids, vectors, groups = check_rows(ids, vectors, groups, self.dim_)
        if not len(ids):
            return self
        self._ensure_collection(vectors.shape[1])
        session = self._claim()
        if self.rows_:
            self.remove(ids)  # an id already here is replaced
        for group in np.unique(groups):
            name = self.partition(int(group))
            self._ensure_partition(name)
            rows = np.flatnonzero(groups == group)
            for start in range(0, len(rows), BATCH):
                part = rows[start : start + BATCH]
                self.client.insert(
                    self.collection,
                    [
                        {
                            "pk": f"{session:x}.{self.next_row_ + i}",
                            "image_id": int(ids[r]),
                            "group_id": int(group),
                            "added": session,
                            "removed": 0,
                            "vector": vectors[r].tolist(),
                        }
                        for i, r in enumerate(part)
                    ],
                    partition_name=name,
                )
                self.next_row_ += len(part)
        self.rows_ += len(ids)
        return self

    def remove(self, ids) -> int:
        ids = np.unique(id_array(ids))
        if not len(ids) or self.dim_ is None or not self.lineage:
            return 0
        removed = 0
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            rows = self.client.query(
                self.collection,
                filter=f"image_id in {ints(chunk)} and {self._visible()}",
                output_fields=list(FIELDS),
                limit=len(chunk),
                consistency_level="Strong",
            )
            if rows:
                session = self._claim()
                self.conflicts_ += [row["pk"] for row in rows if row["removed"]]  # removed on another branch
                for group in {row["group_id"] for row in rows if not row["removed"]}:
                    self.client.upsert(
                        self.collection,
                        [
                            {**{k: row[k] for k in FIELDS}, "removed": session}
                            for row in rows
                            if row["group_id"] == group and not row["removed"]
                        ],
                        partition_name=self.partition(group),
                    )
            removed += len(rows)
        self.rows_ -= removed
        return removed

    def __len__(self) -> int:
        return self.rows_

    def items(self, batch: int = 10_000):
        if self.dim_ is None or not self.lineage:
            return
        iterator = self.client.query_iterator(
            self.collection,
            batch_size=min(batch, MAX_LIMIT),
            filter=self._visible(),
            output_fields=["image_id", "vector", "group_id"],
        )
        try:
            while rows := iterator.next():
                yield (
                    np.array([r["image_id"] for r in rows], np.int64),
                    np.array([r["vector"] for r in rows], np.float32),
                    np.array([r["group_id"] for r in rows], np.int64),
                )
        finally:
            iterator.close()

    def vectors_of(self, ids) -> np.ndarray:
        """The ids' rows of this version, by one query."""
        ids = id_array(ids)
        out = np.full((len(ids), self.dim_ or 0), np.nan, np.float32)
        if not len(ids) or self.dim_ is None or not self.lineage:
            return out
        for start in range(0, len(ids), BATCH):
            chunk = np.unique(ids[start : start + BATCH])
            rows = self.client.query(
                self.collection,
                filter=f"image_id in {ints(chunk)} and {self._visible()}",
                output_fields=["image_id", "vector"],
                limit=len(chunk),
                consistency_level=self.consistency,
            )
            for row in rows:
                out[ids == int(row["image_id"])] = np.asarray(row["vector"], np.float32)
        return out

    # --- search ------------------------------------------------------------------------------

    def search_many(self, vectors, n: int, group=None, exclude=()) -> list[list[tuple[int, float]]]:
        queries = np.asarray(vectors, dtype=np.float32)
        queries = queries.reshape(1, -1) if queries.ndim == 1 else queries
        if self.dim_ is None or not self.lineage or n <= 0 or not len(queries):
            return [[] for _ in range(len(queries))]
        if n > MAX_LIMIT:
            raise ValueError(f"Milvus returns at most {MAX_LIMIT} neighbours per query, {n} asked")
        queries = normalise(queries, self.dim_)
        exclude = np.unique(id_array(exclude))
        return per_group(queries, n, group, exclude, self._search)

    def _search(self, queries, n, group, exclude) -> list[list[tuple[int, float]]]:
        expression, partitions = self._visible(), None
        if group is not None:
            partitions = [self.partition(int(group))]
            if not self._has_partition(partitions[0]):
                return [[] for _ in range(len(queries))]
            expression += f" and group_id == {int(group)}"
        if len(exclude):
            expression += f" and image_id not in {ints(exclude)}"
        results = []
        for start in range(0, len(queries), 256):
            answer = self.client.search(
                self.collection,
                data=queries[start : start + 256].tolist(),
                limit=n,
                filter=expression,
                output_fields=["image_id"],
                consistency_level=self.consistency,
                partition_names=partitions,
                search_params={"metric_type": "COSINE", "params": {"ef": max(self.ef, n)}},
            )
            for hits in answer:
                pairs = sorted(
                    ((int(h["entity"]["image_id"]), float(h["distance"])) for h in hits), key=lambda p: (-p[1], p[0])
                )
                results.append(pairs[:n])
        return results

    # --- persistence -------------------------------------------------------------------------

    @property
    def params(self) -> dict:
        import pymilvus

        return {
            "engine": self.name,
            **{k: getattr(self, k) for k in self.OPTIONS},
            "metric": "COSINE",
            "pymilvus": pymilvus.__version__,
        }

    def save(self, store_dir) -> dict:
        """Flush this session's rows; the returned state makes them visible once recorded."""
        if self.session_ is not None:
            self.client.flush(self.collection)
            self.sessions_, self.session_ = self.lineage, None
        uri = self.uri
        if is_local(uri):
            path, store = Path(uri).resolve(), Path(store_dir).resolve()
            uri = str(path.relative_to(store)) if path.is_relative_to(store) else str(path)
        return {
            "engine": self.name,
            "format": FORMAT,
            "uri": uri,
            "collection": self.collection,
            "dim": self.dim_,
            "sessions": list(self.sessions_),
            "version": len(self.sessions_),
            "conflicts": list(self.conflicts_),
            "rows": self.rows_,
            "params": self.params,
        }

    def reload(self, release: bool = True) -> MilvusEngine:
        """Load the collection (after releasing it: searches then use the indexes built since).

        Milvus Lite writes a segment's HNSW index file in the background after a flush; a load that
        reads the file mid-write fails with a faiss read error (seen once in CI, 2026-12-07). Such a
        load is tried again after a pause; a file that stays unreadable is a damaged index.
        """
        from pymilvus.exceptions import MilvusException

        if release:
            self.client.release_collection(self.collection)
        for attempt in range(LOAD_TRIES):
            try:
                self.client.load_collection(self.collection)
                return self
            except MilvusException as exc:
                message = str(exc)
                if "read error" not in message or attempt == LOAD_TRIES - 1:
                    raise DamagedIndexError(
                        f"{self.uri}: cannot load collection {self.collection!r} ({message.splitlines()[0][:300]})"
                    ) from None
                time.sleep(LOAD_PAUSE * 2**attempt)  # the last try returns or raises

    @classmethod
    def load(cls, store_dir, state: dict, verify: bool = True, **options) -> MilvusEngine:
        """Open a saved state; with verify, count its visible rows against the state's count."""
        if state.get("format") != FORMAT or not state.get("uri"):
            raise DamagedIndexError(f"{store_dir}: the milvus engine state is incomplete or of an unknown format")
        try:
            uri = checked_uri(str(state["uri"]))  # a state saved by 0.3.0 may hold them
        except ValueError as exc:
            raise DamagedIndexError(f"the version's milvus engine state: {exc}") from None
        if is_local(uri) and not Path(uri).is_absolute():
            uri = str(Path(store_dir) / uri)
            if not Path(uri).exists():
                raise DamagedIndexError(f"{uri}: the Milvus Lite database is missing")
        saved = {k: v for k, v in (state.get("params") or {}).items() if k in cls.OPTIONS}
        engine = cls(uri=uri, **{**saved, "collection": state["collection"], **options})
        engine.sessions_ = [int(s) for s in state.get("sessions") or []]
        engine.rows_ = int(state.get("rows") or 0)
        engine.conflicts_ = [str(pk) for pk in state.get("conflicts") or []]
        if not all(PK.match(pk) for pk in engine.conflicts_):
            raise DamagedIndexError(f"{store_dir}: the milvus engine state holds a malformed row key")
        if state.get("dim") is None:
            return engine
        dim = engine._collection_dim()
        if dim != state["dim"]:
            raise DamagedIndexError(f"{uri}: collection {engine.collection!r} is missing or holds other vectors")
        engine.dim_ = dim
        engine.reload(release=False)
        if verify and engine.sessions_:
            count = engine.client.query(
                engine.collection, filter=engine._visible(), output_fields=["count(*)"], consistency_level="Strong"
            )[0]["count(*)"]
            if count != engine.rows_:
                raise DamagedIndexError(
                    f"{uri}: collection {engine.collection!r} holds {count} rows for this version, "
                    f"its state says {engine.rows_}"
                )
        return engine
