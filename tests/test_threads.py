"""A serving process runs BLAS in the request's own thread (imgsim.core.threads): checked in a new process each,
as the setting is the process's."""

import json
import subprocess
import sys

from tests.helpers import ROOT

BLAS_THREADS = """
import json, numpy as np
from threadpoolctl import threadpool_info
def blas():
    return [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"]
np.ones((3000, 256), np.float32) @ np.ones(256, np.float32)  # numpy's BLAS loaded and used
before = blas()
{serve}
print(json.dumps([before, blas()]))
"""


def blas_threads(serve: str, tmp_path) -> tuple[list, list]:
    done = subprocess.run([sys.executable, "-c", BLAS_THREADS.format(serve=serve)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"IMGSIM_MODEL_DIR": str(tmp_path / "models"),
                                                       "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_serving_leaves_one_blas_thread_and_a_plain_process_keeps_its_own(tmp_path):
    before, after = blas_threads("from imgsim.core import threads; threads.serving(); threads.serving()", tmp_path)
    assert before and after == [1] * len(before)
    untouched_before, untouched = blas_threads("import imgsim.core.threads", tmp_path)  # importing changes nothing
    assert untouched == untouched_before


def test_each_api_worker_serves_with_one_blas_thread(tmp_path):
    serve = ("import asyncio\n"
             "from imgsim.api.app import create_app\n"
             "from imgsim.api.collection import Collection\n"
             f"app = create_app(Collection({str(tmp_path / 'models')!r}), warm=False)\n"
             "async def start():\n"
             "    async with app.router.lifespan_context(app):  # what uvicorn runs as a worker starts\n"
             "        pass\n"
             "asyncio.run(start())")
    before, after = blas_threads(serve, tmp_path)
    assert before and after == [1] * len(before)
