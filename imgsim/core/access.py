"""Who may change things through the dashboard: read-only mode, a password, and local-by-default.

Searching and exploring never change the server. Training, stopping a run, switching the active
version, renaming groups and moving files do, so the dashboard offers them only when this policy
says so:

- `IMGSIM_READONLY=1`: nobody may change anything (a shared, public deployment).
- `IMGSIM_PASSWORD` set: a browser session may change things once it has entered that password.
- neither: changes are allowed only while the server listens on a loopback address (the
  default in `.streamlit/config.toml`), i.e. only to people on this machine. A server exposed
  with `--server.address 0.0.0.0` and no password is read-only for everyone.

Whoever may write, the dashboard answers only the names it is reached by (`allowed_hosts`), so
a web page whose own name an attacker re-points at 127.0.0.1 (DNS rebinding) cannot drive it.
Password guesses are slowed for the whole server, not per browser session (`guess_password`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

log = logging.getLogger(__name__)

TRUE = ("1", "true", "yes", "on")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


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


def allowed_hosts(server_address=None, environ=None) -> list[str]:
    """The names (Host headers, any port) the dashboard answers: this machine's, the address it listens on, and the names shared.

    A browser sends the name it was pointed at. Refusing every other name is what stops DNS
    rebinding: a page at `rebind.attacker.example`, re-pointed at 127.0.0.1, sends that name.
    `IMGSIM_ALLOWED_HOSTS` (commas or spaces) adds the names a shared dashboard is reached by;
    Streamlit's own STREAMLIT_SERVER_ALLOWED_HOSTS counts too, as `streamlit run` would read it.
    """
    environ = os.environ if environ is None else environ
    names = list(LOOPBACK_NAMES)
    address = str(server_address or "").strip().strip("[]")
    if address not in WILDCARD_ADDRESSES:
        names.append(address)
    for variable in ("IMGSIM_ALLOWED_HOSTS", "STREAMLIT_SERVER_ALLOWED_HOSTS"):
        names += re.split(r"[,\s]+", environ.get(variable, ""))
    names = [name.strip("[]").lower() for name in names]
    return list(dict.fromkeys(name for name in names if name))


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


class Guess(NamedTuple):
    right: bool  # the password was right: the session may unlock
    heard: bool  # it was compared at all (not while the server waits after wrong ones)
    wait: float  # seconds before the next guess is heard (0 when it is heard at once)


class PasswordGuesses:
    """Wrong passwords for the whole server: after each one, no guess from any session is heard for twice as long.

    1 s after the first, then 2, 4, 8 ... up to `longest`; a right password, or `forget` seconds without a
    wrong one, starts again from 1 s. A guess that comes during the wait is not compared at all, so 40
    browser sessions guessing at once get no more guesses than one: at most one per second, and then
    fewer and fewer. Guesses are compared one at a time (under a lock), so two cannot slip through together.
    """

    def __init__(self, first: float = 1.0, longest: float = 300.0, forget: float = 3600.0, clock=time.monotonic):
        self.first, self.longest, self.forget, self.clock = first, longest, forget, clock
        self.lock = threading.Lock()
        self.failures = 0
        self.heard_at = float("-inf")  # when the next guess may be compared
        self.last_failure = float("-inf")

    def check(self, policy: Access, attempt: str) -> Guess:
        with self.lock:
            now = self.clock()
            if now - self.last_failure > self.forget:
                self.failures = 0
            if now < self.heard_at:
                return Guess(False, False, self.heard_at - now)
            if policy.check_password(attempt):
                self.failures, self.heard_at = 0, float("-inf")
                return Guess(True, True, 0.0)
            self.failures += 1
            wait = min(self.longest, self.first * 2.0 ** min(self.failures - 1, 64))
            self.heard_at, self.last_failure = now + wait, now
        log.warning("wrong dashboard password (%d in a row); no guess is heard for the next %.0f s", self.failures, wait)
        return Guess(False, True, wait)


GUESSES = PasswordGuesses()  # one per server process: every browser session shares it


def guess_password(policy: Access, attempt: str) -> Guess:
    """A session's password guess, through the server-wide back-off (`PasswordGuesses`)."""
    return GUESSES.check(policy, attempt)
