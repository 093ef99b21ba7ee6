"""`imgsim.open(model_dir)`: a model folder's collection as one object a notebook, a program or the HTTP API uses.

    import imgsim
    photos = imgsim.open("models")
    result = photos.search("holiday.jpg", n=8)          # a path, an http(s) URL or bytes
    photos.similar(result.hits[0].id)                   # the images most like a collection image
    photos.labels.set([h.id for h in result.hits], "beach")
    photos.labels.suggestions(5)                        # what to label next
    photos.duplicates()                                 # the copies known without a new scan

Every call reads the model folder's CURRENT, so a version published meanwhile answers the next
call; nothing here holds a version open. Answers are the shapes of imgsim.api.answers, the same
that `imgsim.Client` returns over HTTP. Importing this module imports neither TensorFlow nor a web
framework: the model loads at the first search.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from imgsim.api import answers
from imgsim.core.config import Settings
from imgsim.core.errors import ImgsimError, ModelNotFoundError, NotFoundError
from imgsim.core.text import path_in_collection
from imgsim.storage import store

MAX_RESULTS = 1000  # n of one search: a page of results, not a dump of the collection
MAX_BATCH = 64  # images of one batch search
MAX_PAGE = 1000  # images of one listing page
THUMBNAIL_SIZES = (16, 512)
SWITCHES = ("wait", "background")


def image_id(value) -> int:
    """An image id given as a number or its decimal digits; anything else is refused in one line."""
    value = getattr(value, "id", value)  # an answer holding an id (a Hit, an ImageInfo ...)
    text = str(value).strip() if not isinstance(value, bool) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) >= 2**63:
        raise NotFoundError(f"'{str(value)[:40]}' is not an image id (a number of up to 19 digits)")
    return int(text)


class _Versions:
    """The versions a process has read, newest use last: a version is immutable, so reading it once is enough."""

    def __init__(self, size: int = 4):
        self.size, self.lock, self.items = size, threading.Lock(), OrderedDict()

    def get(self, model_dir: Path, version_id: str) -> store.Version:
        key = (str(model_dir), version_id)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        version = store.load_version(model_dir, version_id)
        with self.lock:
            self.items[key] = version
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return version


VERSIONS = _Versions()


class Collection:
    """A model folder opened for questions: search, similar images, listing, labels, copies, background runs.

    `version` pins one version (default: whatever CURRENT names at each call). `switch` says what a
    search does when a new version has just been published: "wait" loads its model first (a
    notebook), "background" keeps answering with the version already loaded until the new one is
    ready (a server, so that no request waits seconds for a model to load).
    """

    def __init__(self, model_dir=None, version: str | None = None, switch: str = "wait", settings: Settings | None = None):
        if switch not in SWITCHES:
            raise ValueError(f"switch must be one of {SWITCHES}, got {switch!r}")
        self.settings = settings or Settings.from_env(model_dir=model_dir)
        if model_dir is not None:
            self.settings = self.settings.replace(model_dir=Path(model_dir))
        self.model_dir = Path(self.settings.model_dir)
        self.pinned, self.switch = version, switch
        self.labels = Labels(self)
        self._serving = None  # the searcher answering while a newer version loads (switch="background")
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"imgsim.open({str(self.model_dir)!r})"

    # --- versions ------------------------------------------------------------------------------

    def version(self) -> store.Version:
        """The version that answers now: the pinned one, else CURRENT's, else the newest intact one."""
        if self.pinned:
            return VERSIONS.get(self.model_dir, self.pinned)
        wanted = store.current_id(self.model_dir)
        if wanted is not None:
            try:
                return VERSIONS.get(self.model_dir, wanted)
            except ImgsimError:
                pass  # damaged: the newest intact one answers, as for the CLI and the dashboard
        for candidate in store.candidates(self.model_dir):
            try:
                return VERSIONS.get(self.model_dir, candidate)
            except ImgsimError:
                continue
        raise store.no_model(self.model_dir)

    def searcher(self):
        """The loaded model of the version that answers (imgsim.search.usable), as `switch` says."""
        from imgsim import search

        version_id = self.version().id
        if self.switch == "wait":
            return search.usable(self.model_dir, version_id)
        ready = search.loaded(self.model_dir, version_id)
        with self._lock:
            serving = ready or self._serving
            if ready is not None:
                self._serving = ready
            elif serving is not None and version_id not in self._loading:
                self._loading.add(version_id)
                threading.Thread(target=self._load, args=(version_id,), daemon=True, name="imgsim-switch").start()
        if serving is None:  # nothing loaded yet: this call waits for the model
            serving = search.usable(self.model_dir, version_id)
            with self._lock:
                self._serving = serving
        return serving

    def _load(self, version_id: str) -> None:
        from imgsim import search

        try:
            searcher = search.usable(self.model_dir, version_id)
            with self._lock:
                self._serving = searcher
        except Exception:  # noqa: BLE001 - the old version goes on answering; the next call tries again
            pass
        finally:
            with self._lock:
                self._loading.discard(version_id)

    def versions(self) -> list[answers.VersionInfo]:
        return [answers.VersionInfo(id=str(row["id"]), active=row["active"], kind=str(row["kind"]),
                                    created=row["created"], images=row["images"], groups=row["groups"],
                                    engine=row["engine"], damaged=row["damaged"])
                for row in store.version_table(self.model_dir)]

    # --- answers from a version ------------------------------------------------------------------

    def path(self, version: store.Version, row: int) -> str:
        return path_in_collection(version.paths[row], version.manifest.get("images_root"))

    def hits(self, searcher, result) -> answers.SearchResult:
        records = searcher.records
        hits = []
        for hit in result.results:
            row = records.row_of_path(hit.path)
            hits.append(answers.Hit(id=str(int(records.ids[row])), path=self.path(searcher.version, row),
                                    score=hit.score, group=hit.cluster, exact=hit.exact, inliers=hit.inliers,
                                    same_scene=hit.same_scene))
        return answers.SearchResult(query=result.query, version=searcher.version.id, group=result.cluster, hits=hits,
                                     rechecked=result.rechecked)

    def file(self, image) -> Path:
        """The file of a collection image (an id, or a Hit/ImageInfo), on this machine."""
        version = self.version()
        return Path(version.paths[self.row(version, getattr(image, "id", image))])

    def row(self, version: store.Version, image) -> int:
        row = int(version.records.rows_of([image_id(image)])[0])
        if row < 0:
            raise NotFoundError(f"no image {image_id(image)} in version {version.id}")
        return row

    # --- search ----------------------------------------------------------------------------------

    def search(self, image, n: int = 8, scope: str = "cluster", group: int | None = None) -> answers.SearchResult:
        """The n collection images most like `image` (a path, an http(s) URL through the safe fetcher, or bytes).

        scope "cluster" searches the query's predicted group first, "all" the whole collection;
        `group` searches that group only. A path of a collection file never finds itself.
        """
        from imgsim.inputs.images import is_url, read_bytes
        from imgsim.search import url_query

        n, group = checked(n, scope, group)
        searcher = self.searcher()
        if is_url(image):
            ready = url_query(image, searcher.image_size)
            result = searcher.query(image, n, scope, name=image, vector=searcher.encode(ready.image[None])[0],
                                    sha1=ready.sha1, group=group, features=ready.features)
        elif isinstance(image, (bytes, bytearray, memoryview)):
            result = searcher.query(None, n, scope, name="upload", data=bytes(image), group=group)
        else:
            result = searcher.query(image, n, scope, name=Path(image).name, data=read_bytes(image), group=group)
        return self.hits(searcher, result)

    query = search  # issue 26's name for the same question

    def search_many(self, images, n: int = 8, scope: str = "cluster", group: int | None = None) -> list:
        """`search` for each of several images, encoded in one batch; an image that cannot be read gets its
        exception (an ImgsimError) in its place."""
        from imgsim.inputs.images import decode, describe, read_bytes

        images = list(images)
        if not 1 <= len(images) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} images, got {len(images)}")
        n, group = checked(n, scope, group)
        searcher = self.searcher()
        ready, out = {}, [None] * len(images)
        for i, image in enumerate(images):
            try:
                data = read_bytes(image)
                ready[i] = (data, decode(data, searcher.image_size, describe(image)))
            except ImgsimError as exc:
                out[i] = exc
        if ready:
            vectors = searcher.encode(np.stack([pixels for _, pixels in ready.values()]))
            for (i, (data, _)), vector in zip(ready.items(), vectors):
                name = "upload" if isinstance(images[i], (bytes, bytearray, memoryview)) else Path(str(images[i])).name
                result = searcher.query(images[i] if not isinstance(images[i], bytes) else None, n, scope, name=name,
                                        data=data, vector=vector, group=group,
                                        features=searcher.query_features(ready[i][1]))  # decoded once
                out[i] = self.hits(searcher, result)
        return out

    def similar(self, image, n: int = 8, scope: str = "cluster", group: int | None = None) -> answers.SearchResult:
        """The n images most like a collection image (its id), from its stored vector: nothing is decoded."""
        n, group = checked(n, scope, group)
        searcher = self.searcher()
        row = self.row(searcher.version, image)
        records = searcher.records
        vector = searcher.engine.vectors_of(records.ids[[row]])[0]
        if not np.isfinite(vector).all():
            raise NotFoundError(f"image {image_id(image)} has no vector in version {searcher.version.id}")
        copies = [r for r in records.rows_with_sha1(records.sha1[row].decode()).tolist() if r != row]
        result = searcher.search_vector(vector, n, scope, exclude=[row], name=str(image_id(image)), copies=copies,
                                        group=group, features=searcher.stored_features(row))
        return self.hits(searcher, result)

    # --- the collection ------------------------------------------------------------------------

    def image(self, image) -> answers.ImageInfo:
        version = self.version()
        return self._info(version, self.row(version, image))

    def _info(self, version: store.Version, row: int) -> answers.ImageInfo:
        r = version.records
        return answers.ImageInfo(id=str(int(r.ids[row])), path=self.path(version, row), group=int(r.groups[row]),
                                 bytes=int(r.sizes[row]), modified_ns=int(r.mtimes[row]), sha1=r.sha1[row].decode())

    def images(self, offset: int = 0, limit: int = 100, group: int | None = None) -> answers.Page:
        """A page of the collection's images (in one group, with `group`)."""
        if not 0 <= int(offset) or not 1 <= int(limit) <= MAX_PAGE:
            raise ValueError(f"offset must be 0 or more and limit between 1 and {MAX_PAGE}")
        version = self.version()
        rows = np.arange(len(version)) if group is None else np.flatnonzero(version.groups == int(group))
        chosen = rows[int(offset):int(offset) + int(limit)]
        return answers.Page(version=version.id, total=len(rows), offset=int(offset),
                            images=[self._info(version, int(row)) for row in chosen])

    def thumbnail(self, image, px: int = 256) -> bytes:
        """A JPEG of the image at most `px` on its longer side (a grey square when its file cannot be read now)."""
        from imgsim.inputs.thumbnails import thumbnail_or_placeholder

        if not THUMBNAIL_SIZES[0] <= int(px) <= THUMBNAIL_SIZES[1]:
            raise ValueError(f"px must be between {THUMBNAIL_SIZES[0]} and {THUMBNAIL_SIZES[1]}, got {px}")
        # only a regular file inside the version's folder: one swapped for a link out is not shown (issue 28)
        return thumbnail_or_placeholder(self.file(image), int(px), self.version().files_root)

    def groups(self) -> list[answers.Group]:
        from imgsim.storage.group_names import load_names

        version = self.version()
        names = load_names(self.model_dir, version.id)
        counts = np.bincount(version.groups, minlength=len(version.centres))
        return [answers.Group(group=g, name=names.get(g), images=int(c)) for g, c in enumerate(counts.tolist())]

    def duplicates(self) -> answers.Duplicates:
        """The copies known for the version without scanning it: its last stored scan, else its exact copies."""
        from imgsim.api.copies import known_copies

        return known_copies(self, self.version())

    # --- background runs -------------------------------------------------------------------------

    def status(self) -> answers.Status:
        from imgsim.api.jobs import job_status

        wanted = store.current_id(self.model_dir)
        images = len(self.version()) if wanted else 0
        return answers.Status(version=wanted, images=images, job=job_status(self))

    def train(self, **knobs) -> answers.Status:
        """Start training a new version in the background, on the folder the server was given (`Settings.images`)."""
        from imgsim.api.jobs import start

        start(self, "train", knobs)
        return self.status()

    def index(self) -> answers.Status:
        """Start indexing in the background: encode added files, drop removed ones, without retraining."""
        from imgsim.api.jobs import start

        start(self, "index", {})
        return self.status()


def checked(n, scope, group) -> tuple[int, int | None]:
    from imgsim.search import SCOPES

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_RESULTS:
        raise ValueError(f"n must be a whole number between 1 and {MAX_RESULTS}, got {n}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    if group is not None and (isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 0):
        raise ValueError(f"group must be a group number, got '{group}'")
    return int(n), None if group is None else int(group)


class Labels:
    """A person's labels and the assistant's help: set, clear, undo, suggestions, export."""

    def __init__(self, collection: Collection):
        self.collection = collection
        self._lock = threading.Lock()
        self._propagations: OrderedDict = OrderedDict()

    def store(self):
        from imgsim.storage.annotations import LabelStore

        return LabelStore(self.collection.model_dir)

    def propagation(self, version: store.Version):
        """Every image's label from the person's, once per version and labels (kept for the next call)."""
        from imgsim.labelling import propagate, state_key

        given = self.store().load()
        key = state_key(version, given)
        with self._lock:
            if key not in self._propagations:
                self._propagations[key] = propagate(version, given)
                while len(self._propagations) > 2:
                    self._propagations.popitem(last=False)
            return self._propagations[key]

    def change(self, changes: dict) -> answers.LabelChange:
        """Set (a label) or clear (None) each image's label, in one undoable step; an unknown id changes nothing."""
        version = self.collection.version()
        rows = {image_id(i): self.collection.row(version, i) for i in changes}
        wanted = {image_id(i): label for i, label in changes.items()}
        paths = {i: version.paths[r] for i, r in rows.items()}
        return answers.LabelChange(changed=self.store().change(wanted, "set", paths))

    def set(self, images, label: str) -> answers.LabelChange:
        return self.change({i: label for i in images})

    def clear(self, images) -> answers.LabelChange:
        return self.change({i: None for i in images})

    def undo(self) -> answers.LabelChange:
        entry = self.store().undo()
        return answers.LabelChange(changed=int(entry.get("count") or 0) if entry else 0,
                                   action=str(entry.get("action")) if entry else None)

    def suggestions(self, n: int = 10) -> list[answers.Suggestion]:
        """The n images whose labels would help most, best first (imgsim.labelling.suggest)."""
        from imgsim.labelling import suggest

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_RESULTS:
            raise ValueError(f"n must be a whole number between 1 and {MAX_RESULTS}, got {n}")
        version = self.collection.version()
        found = suggest(version, int(n), self.propagation(version))
        return [answers.Suggestion(id=str(int(version.ids[s.row])), path=self.collection.path(version, s.row),
                                   suggested=s.suggested, confidence=round(float(s.confidence), 4), reason=s.reason)
                for s in found]

    def export(self, min_confidence: float = 0.0) -> list[answers.LabelRow]:
        """Every image's label: the person's, else the propagated one at `min_confidence` or more, else none."""
        from imgsim.labelling import export

        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence}")
        version = self.collection.version()
        rows = export.rows(version, self.propagation(version), float(min_confidence))
        return [answers.LabelRow(id=str(int(version.ids[row])), path=self.collection.path(version, row),
                                 label=item["label"], source=item["source"], confidence=item["confidence"])
                for row, item in enumerate(rows)]


def open(model_dir=None, version: str | None = None) -> Collection:  # noqa: A001 - imgsim.open, as io.open
    """A model folder's collection (default: $IMGSIM_MODEL_DIR, else models/ in the data folder); nothing loads yet."""
    collection = Collection(model_dir, version)
    if not (collection.model_dir / "versions").is_dir() and store.current_id(collection.model_dir) is None:
        raise ModelNotFoundError(f"no trained model in {collection.model_dir} yet: imgsim.train(images, model_dir) first")
    return collection


def train(images=None, model_dir=None, progress=None, **knobs) -> Collection:
    """Train a new version on a folder of images (here, until it is done), make it current, and open it.

    `knobs` are Settings' training fields (image_size, epochs, clusters, ...); `progress(fraction,
    message)` is called as the run goes.
    """
    from imgsim.runs.training import train as run

    settings = Settings.from_env(model_dir=model_dir, images=images, **knobs)
    run(settings, progress or (lambda fraction, message: None))
    return Collection(settings.model_dir)
