"""Answering queries with one model version: encode the query, predict its group, find its neighbours."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from imgsim.core.batching import Batches
from imgsim.core.cache import ByteBudgetCache
from imgsim.core.errors import ModelNotFoundError
from imgsim.features.local import QueryFeatures
from imgsim.inputs.images import decode, decode_with_picture, describe, is_url, read_bytes
from imgsim.learning.encoding import encode_files
from imgsim.learning.groups import predict_groups
from imgsim.search import rerank
from imgsim.storage import store

SCOPES = ("cluster", "all")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    path: str
    score: float  # cosine similarity, higher is more similar
    distance: float  # cosine distance, 1 - score
    cluster: int
    exact: bool = False  # the same bytes as the query: a copy of it in the collection
    # keypoints of the query (or its mirror image) agreeing with this image on one similarity transform, and
    # whether that makes it the same scene (imgsim.search.rerank.same_scene): None where it was not re-checked
    inliers: int | None = None
    same_scene: bool | None = None


@dataclass(frozen=True)
class Query:
    """A query image made ready once: what the model reads, its bytes' hash (for exact copies) and its picture.

    Its bytes are not kept: a 20 MB download becomes the model's input (size x size x 3 bytes) and a
    256 px JPEG, which is what the dashboard caches for URL queries.
    """

    name: str
    sha1: str
    pixels: np.ndarray  # (size, size, 3) uint8: `decode`'s input to the model, exactly (x 1/255 gives it back)
    thumbnail: bytes  # a JPEG at most THUMBNAIL_PX on its longer side
    features: QueryFeatures | None = None  # its local features for re-checking results (imgsim.search.rerank)

    @property
    def nbytes(self) -> int:
        found = 0 if self.features is None else self.features.nbytes
        return self.pixels.nbytes + len(self.thumbnail) + len(self.name) + len(self.sha1) + found + 200

    @property
    def image(self) -> np.ndarray:
        """The model's input, (size, size, 3) float32 in [0, 1], as `decode` made it."""
        return self.pixels.astype(np.float32) * np.float32(1 / 255)

    @classmethod
    def from_bytes(cls, data: bytes, image_size: int, name: str = "image") -> Query:
        from imgsim.inputs.thumbnails import encode_jpeg

        image, picture = decode_with_picture(data, image_size, name, THUMBNAIL_PX)  # one decode for both
        pixels = np.rint(image * 255).astype(np.uint8)  # decode scaled uint8 pixels by 1/255: exact both ways
        return cls(name, hashlib.sha1(data).hexdigest(), pixels, encode_jpeg(picture),
                   rerank.query_features(image) if rerank.can_describe(image_size) else None)


THUMBNAIL_PX = 256
# URL queries a process keeps ready, for the reruns that follow a query (N, scope, another page and back):
# their decoded input and picture, never the downloaded bytes (a 20 MB URL is a 49 KB entry at 128 px,
# 3 MB at 512 px), together at most this many bytes, each for 10 minutes.
URL_QUERY_BYTES = 64 * 2**20
url_queries = ByteBudgetCache(URL_QUERY_BYTES, ttl=600)


def url_query(url: str, image_size: int) -> Query:
    """An http(s) URL's image made ready for a model of `image_size` px: fetched and decoded once per process
    (`url_queries`); a refusal (the fetcher's, the decoder's) is raised and not kept."""
    from imgsim.inputs.fetch import fetch_url

    return url_queries.get((url, int(image_size)), lambda: Query.from_bytes(fetch_url(url), image_size, url))


@dataclass(frozen=True)
class QueryResult:
    query: str
    cluster: int
    results: list[Hit]
    # how many of the best candidates were re-checked by geometry (imgsim.search.rerank); 0: the latents alone
    # ordered them (the check off, a version without local features, a query without keypoints)
    rechecked: int = 0

    def to_dict(self) -> dict:
        return {"query": self.query, "cluster": self.cluster, "results": [asdict(h) for h in self.results],
                "rechecked": self.rechecked}


class Searcher:
    """A loaded model version: its encoder and its vector engine. Safe to share between threads.

    Construction loads (the model, the engine's memory-mapped segments); searching is all that
    happens afterwards. `engine` names another engine than the one the version was saved with
    (its vectors are moved there in memory, without re-encoding).
    """

    def __init__(self, version: store.Version, engine: str | None = None):
        from imgsim.learning.model import compile_encoder, load_encoder

        self.version = version
        self.encoder = load_encoder(version.model_path)
        self.encode_batch = compile_encoder(self.encoder)
        # Concurrent searches are encoded together, one batch at a time (TensorFlow models are not promised
        # to be thread-safe): 16 images cost ~2.7 ms of CPU each, one alone 5.5 ms (benchmarks/bench_api.py).
        self.batches = Batches(self._encode_now)
        self.engine = version.engine(engine)
        self.records = version.records
        self.paths = version.paths
        self._keypoints = None  # the version's stored local features, opened at the first re-check
        self._keypoints_opened = False
        self._keypoints_lock = threading.Lock()  # opening verifies the files' checksums: once, by one thread

    @property
    def keypoints(self):
        """The version's local features (imgsim.storage.keypoints), or None when it has none usable."""
        with self._keypoints_lock:
            if not self._keypoints_opened:
                self._keypoints = rerank.open_features(self.version) if rerank.can_describe(self.image_size) else None
                self._keypoints_opened = True
            return self._keypoints

    @classmethod
    def load(cls, model_dir, version_id: str | None = None, engine: str | None = None) -> Searcher:
        """The given version, or the current one; a version whose model cannot be loaded falls back like a damaged one."""
        if version_id:
            return cls(store.load_version(model_dir, version_id), engine)
        for candidate in store.candidates(model_dir):
            try:
                return cls(store.load_version(model_dir, candidate), engine)
            except ModelNotFoundError as exc:
                log.warning("version %s cannot be used (%s); trying the next intact one", candidate, exc)
        raise store.no_model(model_dir)

    @property
    def image_size(self) -> int:
        return self.version.image_size

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) float32 images -> (n, D) L2-normalised latents; joined with other threads' calls."""
        return self.batches(np.asarray(images, np.float32))

    def _encode_now(self, images: np.ndarray) -> np.ndarray:
        from imgsim.storage.engines import normalise

        return normalise(self.encode_batch(images))

    def encode_files(self, paths, workers: int = 2, progress=None):
        """Encode files with this version's model: (positions kept, vectors, hashes, failures)."""
        return encode_files(self.encode, list(paths), self.image_size, workers, progress)

    def itself(self, source) -> set[int]:
        """The collection row that is the query itself: the same file (same path, links resolved), if any."""
        if not isinstance(source, (str, Path)) or is_url(source):
            return set()
        path = Path(source).expanduser()
        rows = {self.records.row_of_path(candidate) for candidate in {str(path.absolute()), str(path.resolve())}}
        return rows - {-1}

    def copies(self, data: bytes) -> list[int]:
        """Collection rows holding exactly these bytes (found by hash, without the model)."""
        return self.records.rows_with_sha1(hashlib.sha1(data).hexdigest()).tolist()

    def stored_features(self, row: int) -> QueryFeatures | None:
        """A collection image's own stored features as a query's (nothing decoded: without its mirror image's)."""
        kept = self.keypoints
        return None if kept is None else rerank.stored_query(kept, self.records.ids[row])

    def prepare(self, data: bytes, name: str = "image", recheck: bool = True):
        """An image's latent and, with `recheck`, its local features (None without): decoded once."""
        image = decode(data, self.image_size, name)
        return self.encode(image[None])[0], self.query_features(image) if recheck else None

    def query_features(self, image: np.ndarray) -> QueryFeatures | None:
        """A decoded model input's local features for the re-check; None where this version has none to compare."""
        return rerank.query_features(image) if self.keypoints is not None else None

    def query(self, source, n: int = 8, scope: str = "cluster", name: str | None = None, data: bytes | None = None,
              vector: np.ndarray | None = None, sha1: str | None = None, group: int | None = None,
              features: QueryFeatures | None = None, recheck: bool = True) -> QueryResult:
        """The n most similar collection images to a path, URL or bytes, best first.

        scope "cluster" searches the query's predicted group first and tops up from the rest of
        the collection when the group holds fewer than n other images; "all" searches everything.
        The query itself (the same file) is never returned; other files with the same bytes come
        first, with score 1.0 and `exact` set. `data`, when given, is the source's bytes already
        read (so a URL is fetched once); `vector`, their latent already encoded (`prepare`), so a
        page that reruns decodes a query once; with `sha1` (a `Query`'s) too, the bytes are not needed,
        and with `features` (a `Query`'s) neither for the re-check. `group` searches that group only,
        whatever the query's predicted one. `recheck` re-checks the top answers by geometry where the
        version keeps local features (imgsim.search.rerank); off, the latents alone order them.
        """
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        name = name or describe(source)
        recheck = recheck and self.keypoints is not None
        if vector is None or sha1 is None or (recheck and features is None):
            data = read_bytes(source) if data is None else data
        if vector is None:
            vector, found = self.prepare(data, name, recheck and features is None)
            features = features if features is not None else found
        elif recheck and features is None:
            features = rerank.query_features(decode(data, self.image_size, name))
        itself = self.itself(source)
        sha1 = sha1 or hashlib.sha1(data).hexdigest()
        copies = [row for row in self.records.rows_with_sha1(sha1).tolist() if row not in itself]
        return self.search_vector(vector, n, scope, exclude=itself, name=name, copies=copies, group=group,
                                  features=features if recheck else None)

    def search_vector(self, vector: np.ndarray, n: int, scope: str = "cluster", exclude=(), name: str = "query",
                      copies=(), group: int | None = None, features: QueryFeatures | None = None) -> QueryResult:
        """The n nearest collection images to a latent, inside its predicted group first.

        `exclude` holds rows never returned; `copies` rows returned first as exact copies; `group`
        restricts the answer (copies too) to that group, with no top-up from the others. With the
        query's `features`, the best rerank.CANDIDATES (of the group searched first, with scope
        "cluster") are re-checked by geometry, and the same scene comes first.
        """
        only = group
        group = int(predict_groups(vector[None], self.version.centres)[0])
        copies = [r for r in copies if only is None or int(self.records.groups[r]) == only][:n]
        exact = [Hit(self.paths[r], 1.0, 0.0, int(self.records.groups[r]), exact=True) for r in copies]
        n -= len(exact)
        excluded = set(self.records.ids[list(exclude) + list(copies)].tolist()) if (exclude or copies) else set()
        if n <= 0:
            return QueryResult(name, group, exact)
        kept = self.keypoints if features is not None and len(features.plain) else None
        wanted = max(n, rerank.CANDIDATES) if kept is not None else n
        hits = []
        if only is not None or scope == "cluster":
            hits = self.engine.search(vector, wanted, group=group if only is None else only, exclude=excluded)
        if len(hits) < n and only is None:  # "all", or a group with fewer than n others
            hits += self.engine.search(vector, (wanted if scope == "all" else n) - len(hits),
                                       exclude=excluded | {i for i, _ in hits})
        checked = [(None, None)] * len(hits)
        if kept is not None:
            hits, checked = rerank.recheck(kept, features, hits, vector, self.engine.vectors_of)
        rows = self.records.rows_of([i for i, _ in hits[:n]])
        results = [Hit(self.paths[r], round(score, 6), round(1.0 - score, 6), int(self.records.groups[r]),
                       inliers=count, same_scene=same)
                   for r, (_, score), (count, same) in zip(rows.tolist(), hits, checked) if r >= 0]
        return QueryResult(name, group, exact + results, sum(count is not None for count, _ in checked))


_shared: dict[tuple[str, str], Searcher] = {}
_guard = threading.Lock()  # the dict
_loading = threading.Lock()  # one load at a time: Keras does not promise that two threads may load at once
SHARED_VERSIONS = 2  # searchers a process keeps (the active version and the one before a switch)


def shared(model_dir, version_id: str) -> Searcher:
    """One Searcher per model folder and version for the whole process, loaded once.

    A caller that comes while another thread loads waits for that load instead of starting its
    own; the encoder is traced on a dummy batch before the searcher is handed out, so the first
    real query pays neither the load nor the tracing.
    """
    key = (str(model_dir), version_id)
    with _guard:
        if key in _shared:
            return _shared[key]
    with _loading:
        with _guard:
            if key in _shared:
                return _shared[key]
        searcher = Searcher(store.load_version(model_dir, version_id))
        try:
            searcher.encode(np.zeros((1, searcher.image_size, searcher.image_size, 3), np.float32))
        except Exception as exc:  # noqa: BLE001 - a model edited by hand that loads but does not take these images
            raise ModelNotFoundError(f"{searcher.version.path}: its model cannot encode "
                                     f"{searcher.image_size} px images ({type(exc).__name__})") from None
        with _guard:
            _shared[key] = searcher
            while len(_shared) > SHARED_VERSIONS:
                _shared.pop(next(iter(_shared)))
        return searcher


_unusable: dict[tuple[str, str, tuple], ModelNotFoundError] = {}  # versions whose model failed to load, and why


def loaded(model_dir, version_id: str) -> Searcher | None:
    """The process's Searcher of this version when `shared` has loaded it already, else None (nothing is loaded)."""
    with _guard:
        return _shared.get((str(model_dir), version_id))


def usable(model_dir, version_id: str) -> Searcher:
    """`shared(model_dir, version_id)`, or, when that version's model cannot be loaded, the newest intact
    version's whose model does: the fallback `Searcher.load` makes for the CLI, for the dashboard.

    The caller compares `.version.id` with the one it asked for. A model that failed is not loaded
    again on every search (it is retried once its files change); when no version's model loads,
    the first failure is raised.
    """
    def attempts():  # the others (every manifest read) only once the asked-for one has failed
        yield version_id
        yield from (c for c in store.candidates(model_dir) if c != version_id)

    first = None
    for candidate in attempts():
        key = (str(model_dir), candidate, _stamp(model_dir, candidate))
        if key not in _unusable:
            try:
                return shared(model_dir, candidate)
            except ModelNotFoundError as exc:
                log.warning("version %s cannot be used (%s); trying the next intact one", candidate, exc)
                with _guard:
                    _unusable[key] = exc
        first = first or _unusable[key]
    raise first


def _stamp(model_dir, version_id: str) -> tuple:
    """What changes when a version's files are replaced by hand (their sizes and times)."""
    try:
        folder = store.version_folder(model_dir, version_id)
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()))
    except (OSError, ModelNotFoundError):
        return ()


def warm_up(model_dir) -> str | None:
    """Import TensorFlow and load the current version into `shared`, for a server that has just started.

    Returns the version loaded, or None when there is none yet (TensorFlow is imported all the
    same) or it cannot be loaded (whoever searches first is told why, in words).
    """
    from imgsim.learning import model  # noqa: F401  (the import is most of the wait

    try:
        version_id = store.current_id(model_dir)
        return usable(model_dir, version_id).version.id if version_id is not None else None
    except Exception as exc:  # reported to the user by the page that searches, not by a background thread
        log.info("warm-up did not load a model from %s: %s", model_dir, exc)
        return None
