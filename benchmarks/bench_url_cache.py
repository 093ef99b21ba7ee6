"""What many large URLs cost the dashboard's process: the URL query cache (`imgsim.search.url_queries`) and RSS.

    .venv/bin/python benchmarks/bench_url_cache.py      # a table on stdout (~1 minute on 2 cores)

A real HTTP server on 127.0.0.1 serves what one visitor might send, and each URL goes through
`imgsim.search.url_query`, the Search page's path for a URL: 12 distinct 20 MB bodies that are not
images (the probe's case; they were cached whole for 10 minutes), then 120 distinct URLs of a
24-megapixel JPEG at the model sizes 128 and 512 px. Reported: the cache's bytes (its budget is
URL_QUERY_BYTES) and the growth of the process's resident memory (VmRSS, after each batch).
"""

from __future__ import annotations

import http.server
import io
import os
import platform
import socketserver
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import imgsim  # noqa: E402
from imgsim import search  # noqa: E402
from imgsim.core.errors import ImgsimError  # noqa: E402

MB = 2**20


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def serve(bodies: dict[str, bytes]) -> tuple[http.server.HTTPServer, int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = bodies[self.path.split("?", 1)[0]]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def server_bind(self):
            socketserver.TCPServer.server_bind(self)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def main() -> None:
    os.environ["IMGSIM_ALLOW_PRIVATE_URLS"] = "1"
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:4000, 0:6000]
    photo = io.BytesIO()
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(photo, "JPEG", quality=90)
    bodies = {"/junk": rng.bytes(20 * MB), "/photo.jpg": photo.getvalue()}
    server, port = serve(bodies)
    base = rss()
    print(f"# imgsim {imgsim.__version__}, {date.today()}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"budget {search.URL_QUERY_BYTES / MB:.0f} MiB, photo {len(bodies['/photo.jpg']) / MB:.1f} MB 6000x4000")
    print("| batch | URLs | refused | cache entries | cache MB | RSS growth MB | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    batches = [("20 MB not images", "/junk", 12, 128), ("24 MP JPEG at 128 px", "/photo.jpg", 120, 128),
               ("24 MP JPEG at 512 px", "/photo.jpg", 120, 512)]
    for what, path, count, size in batches:
        start, refused = time.monotonic(), 0
        for i in range(count):
            try:
                search.url_query(f"http://127.0.0.1:{port}{path}?{what[:2]}{size}-{i}", size)
            except ImgsimError:
                refused += 1
        print(f"| {what} | {count} | {refused} | {len(search.url_queries)} | {search.url_queries.nbytes / MB:.1f} | "
              f"{(rss() - base) / MB:.0f} | {time.monotonic() - start:.1f} |")
    server.shutdown()


if __name__ == "__main__":
    main()
