"""Who may ask the HTTP API what: the dashboard's policy (imgsim.core.access) for programs.

- `IMGSIM_API_TOKEN` set: every request carries `Authorization: Bearer <token>` (compared in constant
  time), on every address the server listens on: a server on 127.0.0.1 behind a reverse proxy or a
  load balancer is reached from the network all the same.
- no token, the server on a loopback address (the default): everything is allowed, to programs on
  this machine only.
- no token, the server reachable from the network: read-only (searching, listing, exporting);
  a change (labels, training, indexing) is refused.
- `IMGSIM_READONLY=1`: no change for anyone.

Whoever asks, only the names the server is reached by are answered (`allowed_hosts`, as the
dashboard's: this machine's names, the address it listens on, IMGSIM_ALLOWED_HOSTS), so a web page
re-pointed at 127.0.0.1 (DNS rebinding) cannot drive it. Request bodies are bounded
(MAX_BODY_BYTES) before they are read whole; images are then decoded within imgsim.inputs.images'
budgets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from imgsim.core.access import Access, allowed_hosts

TOKEN_ENV = "IMGSIM_API_TOKEN"
MIN_TOKEN_CHARS = 16
# One upload (the dashboard takes 10 MB) or a batch of a few; the decoder caps each image on its own.
MAX_BODY_BYTES = 32 * 2**20
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Routes that change nothing although they are POSTs: a search reads the collection only.
READING_POSTS = ("/search", "/search/batch")


class Refused(Exception):
    """A request the policy refuses: its HTTP status, code and one line."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


@dataclass(frozen=True)
class Policy:
    """The API server's rules, fixed at start from its address and the environment."""

    access: Access
    hosts: tuple[str, ...]

    @classmethod
    def from_env(cls, bind_address, environ=None) -> Policy:
        environ = os.environ if environ is None else environ
        token = environ.get(TOKEN_ENV) or None
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters (a random one: "
                             "python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        base = Access.from_env(bind_address, environ)
        return cls(Access(readonly=base.readonly, password=token, local_only=base.local_only),
                   tuple(allowed_hosts(bind_address, environ)))

    def check(self, method: str, path: str, host: str | None, authorization: str | None) -> None:
        """Raise Refused unless this request may be answered."""
        name = host_name(host)
        if name not in self.hosts:
            raise Refused(400, "host_not_allowed", f"this server does not answer the name {name!r}; "
                          "add it to IMGSIM_ALLOWED_HOSTS on the server")
        if self.access.password is not None:
            scheme, _, token = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not self.access.check_password(token.strip()):
                raise Refused(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is needed "
                              f"({TOKEN_ENV} of the server)", {"WWW-Authenticate": "Bearer"})
        if changes(method, path) and not self.access.can_write(unlocked=self.access.password is not None):
            raise Refused(403, "read_only", self.why_read_only())

    def why_read_only(self) -> str:
        if self.access.readonly:
            return "this server is read-only (IMGSIM_READONLY): search and read only"
        return ("changes are off: this server is reachable from the network without a token; "
                f"set {TOKEN_ENV} on the server to allow them, or run it on 127.0.0.1")


def changes(method: str, path: str) -> bool:
    """Whether a request may change something (and so needs the right to write)."""
    return method.upper() not in SAFE_METHODS and path.rstrip("/") not in READING_POSTS


def host_name(host: str | None) -> str:
    """The name of a Host header without its port: `example.org:8000` -> example.org, `[::1]:80` -> ::1."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host
