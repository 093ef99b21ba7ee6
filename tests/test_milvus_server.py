import time, cProfile, pstats, sys
import numpy as np
sys.path.insert(0, "tests")
from imgsim.engines import make_engine, load_engine
from servers import milvus_server  # noqa: F401
from test_engines import clustered, filled

def test_probe(milvus_server, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSIM_MILVUS_TOKEN", milvus_server.token)
    v, l = clustered(4000)
    ids = np.arange(4000)
    e = filled(make_engine("milvus", uri=milvus_server.uri, collection="p"), (ids, v, l % 8, None))
    base = e.save(tmp_path)
    pr = cProfile.Profile(); pr.enable()
    t=time.time(); one = load_engine(tmp_path, base); print("load", time.time()-t)
    t=time.time(); one.remove(ids[:10]); print("remove", time.time()-t)
    t=time.time(); s1 = one.save(tmp_path); print("save", time.time()-t)
    t=time.time(); x = list(load_engine(tmp_path, s1).items()); print("items", time.time()-t)
    pr.disable()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
