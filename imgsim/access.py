"""Who may change things through the dashboard: read-only mode, a password, and local-by-default.

Searching and exploring never change the server. Training, stopping a run, switching the active
version, renaming groups and moving files do, so the dashboard offers them only when this policy
says so:

- `IMGSIM_READONLY=1`: nobody may change anything (a shared, public deployment).
- `IMGSIM_PASSWORD` set: a browser session may change things once it has entered that password.
- neither: changes are allowed only while the server listens on a loopback address (the
  default in `.streamlit/config.toml`), i.e. only to people on this machine. A server exposed
  with `--server.address 0.0.0.0` and no password is read-only for everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass

TRUE = ("1", "true", "yes", "on")


def is_loopback(address) -> bool:
    """Whether a server bound to `address` is reachable from this machine only (None/"" means every interface)."""
    if not address:
        return False
    if str(address).strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(address).strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The write policy of one dashboard server."""

    readonly: bool = False
    password: str | None = None
    local_only: bool = True  # the server listens on loopback only

    @classmethod
    def from_env(cls, server_address, environ=None, secret_password: str | None = None) -> "Access":
        environ = os.environ if environ is None else environ
        password = environ.get("IMGSIM_PASSWORD") or secret_password or None
        return cls(readonly=environ.get("IMGSIM_READONLY", "").strip().lower() in TRUE,
                   password=password, local_only=is_loopback(server_address))

    @property
    def needs_password(self) -> bool:
        return not self.readonly and self.password is not None

    def can_write(self, unlocked: bool = False) -> bool:
        """Whether a session may change things; `unlocked` says it has entered the password."""
        if self.readonly:
            return False
        if self.password is not None:
            return unlocked
        return self.local_only

    def check_password(self, attempt: str) -> bool:
        """Constant-time comparison (of digests, so that the lengths do not leak either)."""
        if self.password is None or not attempt:
            return False
        digest = lambda text: hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()  # noqa: E731
        return hmac.compare_digest(digest(attempt), digest(self.password))

    def why_not(self) -> str:
        """One line for a visitor who may not change anything."""
        if self.readonly:
            return "This dashboard is read-only (IMGSIM_READONLY): search and explore only."
        if self.password is not None:
            return "Changes are locked: enter the dashboard password in the sidebar."
        return ("Changes are off: this dashboard is reachable from the network without a password. "
                "Set IMGSIM_PASSWORD to allow them, or run it on 127.0.0.1.")
