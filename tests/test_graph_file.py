"""The kept kNN graph is a derived file outside the version's checksums: checked before use, rebuilt when it does not fit."""

import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from imgsim import labelling
from imgsim.labelling import graph as knn
from imgsim.storage.annotations import graph_path
from tests.helpers import vector_version


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    return vector_version(tmp_path_factory.mktemp("graph") / "models", 300, 6)[0]


@pytest.fixture
def kept(version):
    """The version's graph as computed, and its file (the memory cache emptied before and after)."""
    knn._graphs.clear()
    graph = labelling.neighbour_graph(version)
    knn._graphs.clear()
    yield graph, graph_path(version.model_dir, version.id, labelling.K)
    knn._graphs.clear()


def deflated_npy(archive: zipfile.ZipFile, name: str, dtype: str, shape: tuple) -> None:
    """An .npy member of zeros, deflated: a few hundred KB in the file, shape's bytes once loaded."""
    with archive.open(name, "w", force_zip64=True) as out:
        np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
        left, zeros = int(np.prod(shape)) * 4, bytes(1 << 22)
        while left > 0:
            out.write(zeros[:min(left, len(zeros))])
            left -= len(zeros)


def test_a_compressed_graph_bomb_is_refused_before_it_is_inflated_and_rebuilt(version, kept):
    graph, path = kept
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:  # 200 MB of rows in about 0.2 MB
        deflated_npy(archive, "rows.npy", "<i4", (5_000_000, labelling.K))
        deflated_npy(archive, "sims.npy", "<f4", (len(version), labelling.K))
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        again = labelling.neighbour_graph(version)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB allocated reading a 0.2 MB graph file"
    assert np.array_equal(again.rows, graph.rows)
    assert knn.read_graph(path, len(version), labelling.K) is not None  # rebuilt: the file holds the graph again


def wrong_shape(path, version, graph):
    np.savez(path, rows=graph.rows[:-1].astype(np.int32), sims=graph.sims[:-1])


def out_of_range(path, version, graph):
    rows = graph.rows.astype(np.int32)
    rows[3, 0] = len(version) + 7
    np.savez(path, rows=rows, sims=graph.sims)


def itself(path, version, graph):
    rows = graph.rows.astype(np.int32)
    rows[3, 0] = 3
    np.savez(path, rows=rows, sims=graph.sims)


def not_finite(path, version, graph):
    sims = graph.sims.copy()
    sims[5, 2] = np.nan
    np.savez(path, rows=graph.rows.astype(np.int32), sims=sims)


def truncated(path, version, graph):
    path.write_bytes(path.read_bytes()[:-100])


def not_a_zip(path, version, graph):
    path.write_bytes(b"rows and sims, honestly" * 100)


def pickled(path, version, graph):
    np.savez(path, rows=np.array([object()] * 3, dtype=object), sims=graph.sims)


def extra_member(path, version, graph):
    np.savez(path, rows=graph.rows.astype(np.int32), sims=graph.sims, more=np.zeros(10))


def flags_not_0_or_1(path, version, graph):
    np.savez(path, rows=graph.rows.astype(np.int32), sims=graph.sims, same=np.full(graph.rows.shape, 7, np.uint8))


def a_link(path, version, graph):
    elsewhere = path.parent.parent / "elsewhere.npz"
    os.replace(path, elsewhere)
    path.symlink_to(elsewhere)


@pytest.mark.parametrize("damage", [wrong_shape, out_of_range, itself, not_finite, truncated, not_a_zip, pickled,
                                    extra_member, flags_not_0_or_1, a_link])
def test_a_graph_file_that_does_not_fit_the_version_is_rebuilt_not_trusted(version, kept, damage, monkeypatch):
    graph, path = kept
    assert knn.read_graph(path, len(version), labelling.K) is not None  # control: the file as written is read
    damage(path, version, graph)
    assert knn.read_graph(path, len(version), labelling.K) is None
    computed = []
    monkeypatch.setattr(knn, "compute_graph", lambda *a: computed.append(1) or graph)
    assert labelling.neighbour_graph(version) is graph and computed == [1]
    assert not path.is_symlink() and knn.read_graph(path, len(version), labelling.K) is not None


def test_a_kept_graph_keeps_which_pairs_were_checked_and_an_older_file_reads_as_none(version, kept):
    graph, path = kept
    same = np.zeros(graph.rows.shape, bool)
    same[::7, 0] = True
    knn.keep_graph(version, knn.Graph(graph.rows, graph.sims, same))
    again = knn.read_graph(path, len(version), labelling.K)
    assert np.array_equal(again.same, same) and np.array_equal(again.rows, graph.rows)
    np.savez(path, rows=graph.rows.astype(np.int32), sims=graph.sims)  # as 0.3 kept it
    older = knn.read_graph(path, len(version), labelling.K)
    assert older is not None and not older.same.any() and np.array_equal(older.sims, graph.sims)


def test_a_checked_pair_outweighs_a_closer_look_alike_and_a_graph_of_latents_alone_keeps_its_weights(monkeypatch):
    rows = np.array([[1, 2], [0, 2], [0, 1]])
    sims = np.array([[0.5, 0.9], [0.5, 0.8], [0.9, 0.8]], np.float32)
    plain = knn.affinity(knn.Graph(rows, sims)).toarray()
    assert plain[0, 2] > plain[0, 1]  # the latents alone: the closer one weighs more
    checked = knn.affinity(knn.Graph(rows, sims, np.array([[True, False], [True, False], [False, False]]))).toarray()
    assert checked[0, 1] > checked[0, 2]  # the pair checked weighs more than the closer look-alike
    assert checked[0, 1] == pytest.approx(plain[0, 1] / knn.LOOK_ALIKE) and checked[0, 2] == pytest.approx(plain[0, 2])
    down = knn.Graph(rows, sims).transition().toarray()
    monkeypatch.setattr(knn, "LOOK_ALIKE", 1.0)
    assert np.allclose(down, knn.Graph(rows, sims).transition().toarray())  # a common factor: the same spreading
