"""One contract for every vector engine: exact, faiss (HNSW and IVF segments), Milvus Lite and a real Milvus server."""

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from imgsim.core.errors import BusyError, ModelNotFoundError
from imgsim.storage.engines import (
    CROSSOVER,
    DamagedIndexError,
    choose_engine,
    engine_names,
    load_engine,
    make_engine,
    unreferenced_files,
)
from imgsim.storage.engines import ENGINES as REGISTRY

N, DIM, GROUPS = 4000, 32, 8

# Every registered engine meets this contract under its own name with no options; these add variants
# (faiss with a tiny flat_below so that its indexes, not its exact scan, answer these small sets;
# Milvus Lite and the session's Milvus server). A new engine is tested without editing this file.
VARIANTS = {
    "faiss": {"faiss-hnsw": {"flat_below": 500, "ivf_above": 10**9}, "faiss-ivf": {"flat_below": 500, "ivf_above": 1000}},
    "milvus": {"milvus": {}, "milvus-server": {}},
}
ENGINES = {kind: (name, options) for name in engine_names() for kind, options in VARIANTS.get(name, {name: {}}).items()}
SEGMENT_ENGINES = [kind for kind, (name, _) in ENGINES.items() if REGISTRY[name].segments]


def clustered(n, dim=DIM, clusters=40, seed=0):
    """Seeded clustered vectors (low intrinsic dimension plus noise), like an autoencoder's latents."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    bases = rng.standard_normal((clusters, 8, dim)) * 0.35
    labels = rng.integers(0, clusters, n)
    vectors = centres[labels] + np.einsum("ni,nid->nd", rng.standard_normal((n, 8)), bases[labels])
    vectors += 0.2 * rng.standard_normal((n, dim))
    return vectors.astype(np.float32), labels


@pytest.fixture(scope="module")
def data():
    vectors, labels = clustered(N)
    ids = np.arange(N, dtype=np.int64) * 7 + 1000  # stable ids, not positions
    groups = labels % GROUPS  # each group a union of whole clusters, as KMeans groups are regions
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(N, 60, replace=False)] + 0.3 * rng.standard_normal((60, DIM)).astype(np.float32)
    return ids, vectors, groups, queries


def reference(ids, vectors, groups, query, n, group=None, exclude=()):
    """Brute force in float64: the answer every engine is held to."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit.astype(np.float64) @ (query / np.linalg.norm(query))
    ok = ~np.isin(ids, list(exclude))
    if group is not None:
        ok &= groups == group
    order = [i for i in np.lexsort((ids, -scores)) if ok[i]][:n]
    return [(int(ids[i]), float(scores[i])) for i in order]


def same(found, expected):
    """The same ids in the same order with the same scores (to float32 rounding)."""
    return [[i for i, _ in f] for f in found] == [[i for i, _ in e] for e in expected] and all(
        np.allclose([s for _, s in f], [s for _, s in e], atol=1e-5) for f, e in zip(found, expected)
    )


def recall(found, expected):
    hits = [len({i for i, _ in f} & {i for i, _ in e}) / max(1, len(e)) for f, e in zip(found, expected)]
    return float(np.mean(hits))


@pytest.fixture(params=list(ENGINES))
def kind(request):
    return request.param


def milvus_uri(kind, request, tmp_path, monkeypatch) -> dict:
    """Milvus Lite in the test's folder, or a new collection on the session's server (its password in the environment)."""
    if kind == "milvus-server":
        server = request.getfixturevalue("milvus_server")
        monkeypatch.setenv("IMGSIM_MILVUS_TOKEN", server.token)  # as a user sets it: load_engine finds it there
        return {"uri": server.uri, "collection": f"t_{uuid.uuid4().hex[:16]}"}
    return {"uri": str(tmp_path / "milvus.db")}


@pytest.fixture
def new_engine(kind, tmp_path, request, monkeypatch):
    name, options = ENGINES[kind]
    where = milvus_uri(kind, request, tmp_path, monkeypatch) if name == "milvus" else {}

    def new():
        return make_engine(name, **where, **options)

    return new


def filled(engine, data):
    ids, vectors, groups, _ = data
    engine.add(ids, vectors, groups)
    if engine.name == "milvus":  # seal segments and build their HNSW indexes now (Lite builds them in the background)
        engine.client.flush(engine.collection)
        engine.reload()
    return engine


# Tests with many removals (upserts) fill a server collection of their own: after them, Milvus 2.3.5 once
# counted the shared base version at 4234 rows for 4000 (count(*) during compaction: milvus-io/milvus#38373).
OWN_COLLECTION = {"test_a_crash_before_the_switch_leaves_the_previous_state_answering",
                  "test_milvus_versions_on_two_branches_do_not_see_each_other"}


@pytest.fixture(scope="module")
def server_collection(request, data, tmp_path_factory):
    """One filled collection on the server for the module, saved once: each test opens that state afresh.

    A test's changes go into its own session, which no other test's lineage holds, so the tests
    cannot see each other's rows (the engine's versioning, which the branch test checks by itself).
    """
    server = request.getfixturevalue("milvus_server")
    store = tmp_path_factory.mktemp("server-store")
    engine = filled(make_engine("milvus", uri=server.uri, token=server.token, collection="contract"), data)
    return store, json.loads(json.dumps(engine.save(store)))


@pytest.fixture
def full(new_engine, data, kind, request):
    if kind == "milvus-server" and request.node.originalname not in OWN_COLLECTION:
        # filling a server collection takes ~12 s: once for the module
        store, state = request.getfixturevalue("server_collection")
        new_engine()  # for the password in the environment
        return load_engine(store, state)
    return filled(new_engine(), data)


@pytest.fixture(params=["milvus", "milvus-server"])
def milvus(request, data, tmp_path, monkeypatch):
    where = milvus_uri(request.param, request, tmp_path, monkeypatch)
    if request.param == "milvus-server" and request.node.originalname not in OWN_COLLECTION:
        return load_engine(*request.getfixturevalue("server_collection"))
    return filled(make_engine("milvus", **where), data)


# --- answers -------------------------------------------------------------------------------------


def test_exact_engine_equals_brute_force(data):
    ids, vectors, groups, queries = data
    engine = make_engine("exact").add(ids, vectors, groups)
    for q in queries[:20]:
        for group, exclude in ((None, ()), (3, set(ids[:500].tolist()))):
            got, want = (
                engine.search(q, 10, group=group, exclude=exclude),
                reference(ids, vectors, groups, q, 10, group, exclude),
            )
            assert [i for i, _ in got] == [i for i, _ in want]
            assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_recall_at_10_against_brute_force(full, data, kind):
    ids, vectors, groups, queries = data
    found = full.search_many(queries, 10)
    assert all(len(f) == 10 for f in found)
    assert all([s for _, s in f] == sorted((s for _, s in f), reverse=True) for f in found)
    score = recall(found, [reference(ids, vectors, groups, q, 10) for q in queries])
    assert score >= (1.0 if kind == "exact" else 0.95), score
    scores = dict(reference(ids, vectors, groups, queries[0], N))
    assert all(abs(scores[i] - s) < 1e-4 for i, s in found[0])  # scores are cosine similarities


def test_group_filter_inside_the_engine(full, data):
    ids, vectors, groups, queries = data
    group_of = dict(zip(ids.tolist(), groups.tolist()))
    own = [group_of[reference(ids, vectors, groups, q, 1)[0][0]] for q in queries]  # how imgsim searches a group
    other = [(g + 1 + i % (GROUPS - 1)) % GROUPS for i, g in enumerate(own)]  # a group the query lies outside
    for wanted in (own, other):
        found = full.search_many(queries, 10, group=wanted)
        assert all(group_of[i] == g for f, g in zip(found, wanted) for i, _ in f)
        assert all(len(f) == 10 for f in found)
        assert recall(found, [reference(ids, vectors, groups, q, 10, g) for q, g in zip(queries, wanted)]) >= 0.95
    assert full.search(queries[0], 10, group=GROUPS + 5) == []


def test_ivf_group_search_holds_for_queries_outside_the_group():
    # more clusters than the shared set: a plain filtered IVF search falls to recall 0.88 here
    vectors, labels = clustered(8000, clusters=80)
    ids, groups = np.arange(8000) + 5, labels % GROUPS
    rng = np.random.default_rng(3)
    queries = vectors[rng.choice(8000, 60, replace=False)] + 0.3 * rng.standard_normal((60, DIM)).astype(np.float32)
    engine = make_engine("faiss", flat_below=500, ivf_above=1000).add(ids, vectors, groups)
    own = [int(groups[reference(ids, vectors, groups, q, 1)[0][0] - 5]) for q in queries]
    for wanted in (own, [(g + 1 + i % (GROUPS - 1)) % GROUPS for i, g in enumerate(own)]):
        expected = [reference(ids, vectors, groups, q, 10, g) for q, g in zip(queries, wanted)]
        assert recall(engine.search_many(queries, 10, group=wanted), expected) >= 0.95


def test_a_small_group_in_a_large_index_comes_back_whole(new_engine, data):
    ids, vectors, groups, queries = data
    small = groups.copy()
    small[[5, 900, 3000]] = 99
    engine = new_engine().add(ids, vectors, small)
    hits = engine.search(queries[0], 10, group=99)
    assert sorted(i for i, _ in hits) == sorted(ids[[5, 900, 3000]].tolist())  # fewer than n: only 3 exist
    assert engine.search(queries[0], 10, group=99, exclude={int(ids[900])}) == [h for h in hits if h[0] != ids[900]]


def test_excluded_ids_never_returned_and_n_still_met(full, data):
    ids, vectors, groups, queries = data
    top = [i for i, _ in full.search(queries[0], 10)]
    hits = full.search(queries[0], 10, exclude=set(top[:5]))
    assert len(hits) == 10 and not set(top[:5]) & {i for i, _ in hits}
    many = set(ids[::2].tolist())  # 2,000 excluded ids: a large filter must still work
    found = full.search_many(queries[:20], 10, exclude=many)
    assert all(len(f) == 10 and not many & {i for i, _ in f} for f in found)
    assert recall(found, [reference(ids, vectors, groups, q, 10, None, many) for q in queries[:20]]) >= 0.95


def test_search_many_agrees_with_search_and_takes_a_group_per_query(full, data):
    queries = data[3][:12]
    per_query = [g % GROUPS for g in range(12)]
    assert same(
        full.search_many(queries, 5, group=per_query), [full.search(q, 5, group=g) for q, g in zip(queries, per_query)]
    )
    assert same(full.search_many(queries[:3], 5), [full.search(q, 5) for q in queries[:3]])


def test_removals_and_replacements(full, data):
    ids, vectors, groups, queries = data
    gone = [i for i, _ in full.search(queries[0], 5)] + [999_999_999]  # one unknown id: ignored
    assert full.remove(gone) == 5
    assert len(full) == N - 5
    assert not set(gone) & {i for f in full.search_many(queries, 10) for i, _ in f}
    # adding an existing id replaces its row: still one row per id
    full.add(ids[:3], vectors[3:6], groups[3:6])
    assert len(full) == N - 5 + len(set(ids[:3].tolist()) & set(gone))
    hit = full.search(vectors[4], 1)[0]
    assert hit[0] in (ids[1], ids[4]) and hit[1] == pytest.approx(1.0, abs=1e-5)


def test_an_empty_engine_answers_nothing(new_engine, tmp_path):
    engine = new_engine()
    assert len(engine) == 0 and engine.search(np.ones(DIM), 5) == [] and engine.remove([1, 2]) == 0


def test_bad_input_is_refused_in_plain_words(new_engine, data):
    ids, vectors, groups, _ = data
    engine = new_engine().add(ids[:10], vectors[:10], groups[:10])
    with pytest.raises(ValueError, match="dimensions"):
        engine.add([1], np.ones((1, DIM + 1)), [0])
    with pytest.raises(ValueError, match="NaN"):
        engine.add([1], np.full((1, DIM), np.nan), [0])
    with pytest.raises(ValueError, match="twice"):
        engine.add([1, 1], np.ones((2, DIM)), [0, 0])
    with pytest.raises(ValueError, match="lengths"):
        engine.add([1, 2], np.ones((3, DIM)), [0, 0])


def test_vectors_of_gives_each_ids_vector_and_nan_for_one_not_there(full, data):
    from imgsim.storage.engines import VectorEngine

    ids, vectors, groups, _ = data
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    asked = [ids[5], ids[100], 12345, ids[5]]  # an unknown id, one asked twice
    found = full.vectors_of(asked)
    assert found.shape == (4, DIM) and found.dtype == np.float32
    assert np.allclose(found[[0, 1, 3]], unit[[5, 100, 5]], atol=1e-5) and np.isnan(found[2]).all()
    assert np.allclose(VectorEngine.vectors_of(full, asked), found, atol=1e-6, equal_nan=True)  # the streaming default
    full.remove([ids[100]])
    assert np.isnan(full.vectors_of([ids[100]])).all() and np.allclose(full.vectors_of([ids[5]]), unit[[5]], atol=1e-5)


# --- persistence ---------------------------------------------------------------------------------


def test_save_then_load_in_a_fresh_object_gives_the_same_answers(full, data, tmp_path):
    queries = data[3]
    before = full.search_many(queries, 10, group=[int(g) % GROUPS for g in range(len(queries))])
    state = full.save(tmp_path / "store")
    state = json.loads(json.dumps(state))  # it must survive a manifest
    again = load_engine(tmp_path / "store", state)
    assert len(again) == N and again.params == full.params
    assert same(again.search_many(queries, 10, group=[int(g) % GROUPS for g in range(len(queries))]), before)


def files(store):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (store / "segments").iterdir()}


@pytest.mark.parametrize("kind", SEGMENT_ENGINES)
def test_adding_after_load_writes_only_the_new_rows(full, data, tmp_path, kind):
    ids = data[0]
    store = tmp_path / "store"
    state = full.save(store)
    old = files(store)
    engine = load_engine(store, state)
    more, _ = clustered(100, seed=7)
    engine.add(np.arange(100) + 10**9, more, np.arange(100) % GROUPS)
    engine.remove(ids[:3])
    state2 = engine.save(store)
    new = files(store)
    assert all(new[name] == old[name] for name in old)  # nothing rewritten
    created = set(new) - set(old)
    # one small segment (ids, groups, vectors; too small for an index) and one tombstone file
    assert len(created) == 4 and sum(n.endswith(".dead.npy") for n in created) == 1
    assert sum((store / "segments" / n).stat().st_size for n in created) < 0.05 * sum(
        (store / "segments" / n).stat().st_size for n in old
    )
    assert len(load_engine(store, state2)) == N + 100 - 3
    assert engine.save(store) == state2 and files(store) == new  # nothing changed: nothing written


def test_milvus_adds_only_the_new_rows(milvus, tmp_path):
    state = milvus.save(tmp_path)
    engine = load_engine(tmp_path, state)

    def rows() -> int:
        # Every live row of the collection, other sessions' included, counted exactly. (The collection's statistics
        # may count deleted rows until a compaction drops them: a fresh clone's run read 6 fewer than expected.)
        return engine.client.query(engine.collection, filter="", output_fields=["count(*)"],
                                   consistency_level="Strong")[0]["count(*)"]

    before = rows()
    more, _ = clustered(100, seed=7)
    state2 = engine.add(np.arange(100) + 10**9, more, np.arange(100) % GROUPS).save(tmp_path)
    assert rows() == before + 100
    assert state2["sessions"][:-1] == state["sessions"] and state2["version"] == state["version"] + 1


def test_a_crash_before_the_switch_leaves_the_previous_state_answering(full, data, tmp_path):
    ids, queries = data[0], data[3]
    store = tmp_path / "store"
    state = json.loads(json.dumps(full.save(store)))
    before = full.search_many(queries, 10)
    writer = load_engine(store, state)
    more, _ = clustered(600, seed=9)
    writer.add(np.arange(600) + 10**9, more, np.arange(600) % GROUPS)
    writer.remove(ids[:2000])
    writer.compact()
    writer.save(store)  # segments written and fsynced, then the process dies: the state is never recorded
    if (store / "segments").is_dir():
        (store / "segments" / ".tmp-0123.vectors.npy").write_bytes(b"half a file")  # a write cut short
    reader = load_engine(store, state)
    assert len(reader) == N
    assert same(reader.search_many(queries, 10), before)
    if (store / "segments").is_dir():
        orphans = unreferenced_files(store, [state])
        assert orphans and all(p.name not in json.dumps(state) for p in orphans)


@pytest.mark.parametrize("kind", SEGMENT_ENGINES)
def test_a_damaged_or_missing_segment_file_is_refused(full, tmp_path, kind):
    store = tmp_path / "store"
    state = full.save(store)
    vectors = store / "segments" / state["segments"][0]["vectors"]
    data = bytearray(vectors.read_bytes())
    data[-5] ^= 0xFF
    vectors.chmod(0o644)
    vectors.write_bytes(bytes(data))
    with pytest.raises(DamagedIndexError, match="damaged"):
        load_engine(store, state)
    assert issubclass(DamagedIndexError, ModelNotFoundError)  # the store's fallback to an intact version catches it
    vectors.unlink()
    with pytest.raises(DamagedIndexError, match="missing"):
        load_engine(store, state)
    bad = {**state, "segments": [{**state["segments"][0], "ids": "../../etc/passwd"}]}
    with pytest.raises(DamagedIndexError, match="not a segment file name"):
        load_engine(store, bad)


def test_a_damaged_faiss_index_is_refused(data, tmp_path):
    ids, vectors, groups, _ = data
    engine = make_engine("faiss", flat_below=500).add(ids, vectors, groups)
    state = engine.save(tmp_path)
    index = tmp_path / "segments" / state["segments"][0]["index"]
    index.chmod(0o644)
    index.write_bytes(index.read_bytes()[:100])
    with pytest.raises(DamagedIndexError):
        load_engine(tmp_path, state)


def test_milvus_refuses_a_state_its_collection_does_not_match(milvus, tmp_path):
    state = milvus.save(tmp_path)
    with pytest.raises(DamagedIndexError, match="rows"):
        load_engine(tmp_path, {**state, "rows": state["rows"] + 1})
    with pytest.raises(DamagedIndexError):
        load_engine(tmp_path, {**state, "collection": "other"})


def test_a_milvus_lite_file_open_in_another_process_is_reported_busy(tmp_path):
    code = (
        "import json, sys, time, numpy as np; from imgsim.storage.engines import make_engine;"
        f"e = make_engine('milvus', uri={str(tmp_path / 'm.db')!r}).add([1, 2], np.eye(2, {DIM}), [0, 0]);"
        f"open({str(tmp_path / 'state.json')!r}, 'w').write(json.dumps(e.save({str(tmp_path)!r})));"
        "print('ready', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__))
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(BusyError, match="another process"):
            load_engine(tmp_path, json.loads((tmp_path / "state.json").read_text()))
    finally:
        holder.kill()
        holder.wait()
    assert len(load_engine(tmp_path, json.loads((tmp_path / "state.json").read_text()))) == 2  # free again


class LoadingClient:
    """Stands in for a MilvusClient whose load_collection fails `failures` times with `message`."""

    def __init__(self, failures, message):
        self.failures, self.message, self.loads, self.releases = failures, message, 0, 0

    def release_collection(self, name):
        self.releases += 1

    def load_collection(self, name):
        from pymilvus.exceptions import MilvusException

        self.loads += 1
        if self.loads <= self.failures:
            raise MilvusException(code=1, message=self.message)


# as CI saw it once: Lite still writing a segment's index file when the collection was loaded again
MID_WRITE = "Error in void faiss::read_HNSW(HNSW&, IOReader*): 'ret == (size)' failed: read error in x.hnsw.idx: 244 != 493"


def test_a_lite_index_file_read_mid_write_is_loaded_on_a_later_try(tmp_path, monkeypatch):
    from imgsim.storage.engines import milvus

    monkeypatch.setattr(milvus, "LOAD_PAUSE", 0.0)
    engine = make_engine("milvus", uri=str(tmp_path / "m.db"))
    engine.client_ = client = LoadingClient(2, MID_WRITE)
    assert engine.reload() is engine
    assert (client.releases, client.loads) == (1, 3)

    engine.client_ = client = LoadingClient(99, MID_WRITE)  # a file that stays unreadable is a damaged index
    with pytest.raises(DamagedIndexError, match="cannot load collection 'imgsim'.*read error"):
        engine.reload()
    assert client.loads == milvus.LOAD_TRIES

    engine.client_ = client = LoadingClient(1, "collection not found")  # any other error is not tried again
    with pytest.raises(DamagedIndexError, match="collection not found"):
        engine.reload()
    assert client.loads == 1


def test_milvus_versions_on_two_branches_do_not_see_each_other(milvus, data, tmp_path):
    ids, vectors, _, _ = data
    base = milvus.save(tmp_path)
    one = load_engine(tmp_path, base)
    one.remove(ids[:10])
    state_one = one.save(tmp_path)
    two = load_engine(tmp_path, base)  # a second version made from the same parent
    two.remove(ids[5:15])
    two.add([7], vectors[600:601], [0])
    state_two = two.save(tmp_path)
    seen = {
        name: {int(i) for chunk, _, _ in load_engine(tmp_path, state).items() for i in chunk}
        for name, state in (("base", base), ("one", state_one), ("two", state_two))
    }
    everything = set(ids.tolist())
    assert seen["base"] == everything
    assert seen["one"] == everything - set(ids[:10].tolist())
    assert seen["two"] == (everything - set(ids[5:15].tolist())) | {7}


@pytest.mark.parametrize("kind", SEGMENT_ENGINES)  # Milvus compacts its own segments
def test_compaction_merges_segments_and_drops_removed_rows(new_engine, data, kind, tmp_path):
    ids, vectors, groups, queries = data
    engine = new_engine()
    for part in np.array_split(np.arange(N), 4):  # four saves: four segments of one size tier
        engine.add(ids[part], vectors[part], groups[part]).save(tmp_path)
    assert len(engine.segments_) == 4
    engine.remove(ids[::2])  # every segment half dead: all rewritten into one
    before = engine.search_many(queries, 10)
    assert engine.compact() is True
    assert len(engine.segments_) == 1 and engine.segments_[0].rows == N // 2 and len(engine) == N // 2
    assert recall(engine.search_many(queries, 10), before) >= (1.0 if kind == "exact" else 0.95)
    assert engine.compact() is False
    assert len(load_engine(tmp_path, engine.save(tmp_path))) == N // 2


def test_exact_and_faiss_open_each_others_states(data, tmp_path):
    ids, vectors, groups, queries = data
    exact_state = make_engine("exact").add(ids, vectors, groups).save(tmp_path)
    faiss_engine = load_engine(tmp_path, exact_state, name="faiss", flat_below=500)
    assert faiss_engine.segments_[0].index is not None  # built at load for a segment saved without one
    faiss_state = faiss_engine.save(tmp_path)
    assert faiss_state["segments"][0]["vectors"] == exact_state["segments"][0]["vectors"]  # vectors not rewritten
    exact = load_engine(tmp_path, faiss_state, name="exact")
    assert exact.search_many(queries, 10) == make_engine("exact").add(ids, vectors, groups).search_many(queries, 10)


# --- choosing ------------------------------------------------------------------------------------


def test_auto_is_exact_below_the_crossover_and_faiss_above():
    assert choose_engine("auto", CROSSOVER - 1) == "exact"
    assert choose_engine("auto", CROSSOVER) == "faiss"
    assert choose_engine("milvus", 10) == "milvus"
    with pytest.raises(ValueError, match="unknown vector engine"):
        choose_engine("annoy", 10)


def test_an_engine_registered_once_is_offered_by_the_command_line_the_settings_and_the_loader(monkeypatch, tmp_path):
    from imgsim import Settings
    from imgsim.cli import build_parser
    from imgsim.storage import engines

    monkeypatch.setitem(engines.ENGINES, "probe", engines.Engine("probe", ".exact:ExactEngine", "a test's", segments=True))
    assert build_parser().parse_args(["train", "--engine", "probe"]).engine == "probe"
    assert build_parser().parse_args(["query", "a.png", "--engine", "probe"]).engine == "probe"
    assert Settings(engine="probe").engine == "probe"
    with pytest.raises(ValueError, match="choose one of auto, exact, faiss, milvus, probe"):
        engines.check_name(Settings(engine="annoy").engine)
    rng = np.random.default_rng(0)
    state = make_engine("probe").add(np.arange(5), rng.normal(size=(5, 4)), np.zeros(5, int)).save(tmp_path)
    assert state["engine"] == "probe"  # its own name, not the name of the class it shares with exact
    assert load_engine(tmp_path, state).name == "probe" and len(load_engine(tmp_path, state)) == 5
    assert load_engine(tmp_path, state, "faiss").name == "faiss" and len(load_engine(tmp_path, state, "faiss")) == 5
    with pytest.raises(ValueError, match="a exact state cannot be opened with the milvus engine"):
        load_engine(tmp_path, {**state, "engine": "exact"}, "milvus")
    assert [engines.can_open(name, state) for name in ("probe", "faiss", "milvus", "annoy")] == [True, True, False, False]


def test_milvus_uri_comes_from_the_environment_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("IMGSIM_MILVUS_URI", raising=False)
    with pytest.raises(ValueError, match="IMGSIM_MILVUS_URI"):
        make_engine("milvus")
    with pytest.raises(ValueError, match="ending in .db"):
        make_engine("milvus", uri=str(tmp_path / "folder"))
    monkeypatch.setenv("IMGSIM_MILVUS_URI", str(tmp_path / "env.db"))
    assert make_engine("milvus").uri == str(tmp_path / "env.db")


def test_engines_never_import_tensorflow_or_streamlit():
    code = (
        "import sys, imgsim.storage.engines.exact, imgsim.storage.engines.faiss, imgsim.storage.engines.milvus;"
        "print([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'streamlit')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.stdout.strip() == "[]"


def test_a_milvus_uri_with_a_password_is_refused_without_repeating_it(tmp_path, monkeypatch):
    """Issue 28: IMGSIM_MILVUS_URI=http://user:pass@host was repeated in errors shown to visitors and saved in versions."""
    from imgsim.storage.engines import make_engine
    from imgsim.storage.engines.milvus import MilvusEngine

    uri = "http://root:s3cretpw@127.0.0.1:1/"
    monkeypatch.setenv("IMGSIM_MILVUS_URI", uri)
    for make in (lambda: make_engine("milvus"), lambda: MilvusEngine(uri=uri)):
        with pytest.raises(ValueError) as refused:
            make()
        assert "s3cretpw" not in str(refused.value) and "root" not in str(refused.value)
        assert "IMGSIM_MILVUS_TOKEN" in str(refused.value) and "127.0.0.1:1" in str(refused.value)
    saved = {"engine": "milvus", "format": 1, "uri": uri, "collection": "imgsim", "dim": 4, "sessions": [1]}
    with pytest.raises(ModelNotFoundError) as damaged:  # a version saved with one (0.3.0): damaged, and not repeated
        MilvusEngine.load(tmp_path, saved)
    assert "s3cretpw" not in str(damaged.value)
