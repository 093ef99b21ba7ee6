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
Password guesses are slowed per address under a server-wide ceiling, and a one-time owner code printed
on the server's console always gets its owner in (`PasswordGuesses`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections import deque
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
    right: bool  # the password (or the owner code) was right: the session may unlock
    heard: bool  # it was compared at all (not while its address waits after wrong ones, nor past the ceiling)
    wait: float  # seconds before the next guess from this address is heard (0 when it is heard at once)


def client_key(address) -> str:
    """The address a back-off is kept for: an IPv4 address, an IPv6 /64 (one household or server), or the text given."""
    text = str(address or "local").strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text[:100]
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


@dataclass
class Failures:
    count: int = 0
    heard_at: float = float("-inf")  # when this address's next guess may be compared
    last: float = float("-inf")


class PasswordGuesses:
    """Wrong passwords, per address, under a server-wide ceiling, and an owner code that is never held back.

    - Per address (`client_key`): after a wrong guess, no guess from that address is heard for 1 s,
      then 2, 4, 8 ... up to `longest`; a right password, or `forget` seconds without a wrong one, starts
      again. A guess during the wait is not compared at all, so sessions opened side by side from one
      address get no more guesses than one. A guesser thus holds back its own address only: from any
      other address the right password is heard at once.
    - Server-wide: at most `ceiling` wrong guesses are heard in any `forget` seconds, from all addresses
      together; beyond it no password is compared until the oldest of them is `forget` seconds old
      (many addresses guessing together: a botnet, or everyone behind one proxy that forwards no address).
    - The owner code (`OwnerCode`): a random code the server prints on its console, accepted in the
      password field at any time, whatever the two limits above say (it cannot be guessed: 128 random
      bits), and replaced by a new one once used. It is how the owner gets in from an address a
      guesser shares, or past the ceiling.

    Guesses are compared one at a time (under a lock), so two cannot slip through together.
    """

    def __init__(self, first: float = 1.0, longest: float = 300.0, forget: float = 3600.0, ceiling: int = 100,
                 clock=time.monotonic, code: "OwnerCode | None" = None, addresses: int = 10_000):
        self.first, self.longest, self.forget, self.ceiling, self.clock = first, longest, forget, ceiling, clock
        self.code = code or OwnerCode()
        self.addresses = addresses  # addresses remembered at most (the oldest are forgotten first)
        self.lock = threading.Lock()
        self.failures: dict[str, Failures] = {}
        self.heard_wrong: deque[float] = deque()  # when each wrong guess heard within `forget` seconds was

    def check(self, policy: Access, attempt: str, address=None) -> Guess:
        key = client_key(address)
        if self.code.matches(attempt):
            return Guess(True, True, 0.0)
        with self.lock:
            now = self.clock()
            while self.heard_wrong and now - self.heard_wrong[0] > self.forget:
                self.heard_wrong.popleft()
            mine = self.failures.get(key)
            if mine is not None and now - mine.last > self.forget:
                del self.failures[key]
                mine = None
            if mine is not None and now < mine.heard_at:
                return Guess(False, False, mine.heard_at - now)
            if len(self.heard_wrong) >= self.ceiling:
                return Guess(False, False, self.heard_wrong[0] + self.forget - now)
            if policy.check_password(attempt):
                self.failures.pop(key, None)
                return Guess(True, True, 0.0)
            mine = self.remember(key)
            mine.count += 1
            wait = min(self.longest, self.first * 2.0 ** min(mine.count - 1, 64))
            mine.heard_at, mine.last = now + wait, now
            self.heard_wrong.append(now)
        log.warning("wrong dashboard password from %s (%d in a row); no guess from there is heard for the next %.0f s",
                    key, mine.count, wait)
        return Guess(False, True, wait)

    def remember(self, key: str) -> Failures:
        """The address's failures, making room (forgetting the address that failed longest ago) when full."""
        if key not in self.failures and len(self.failures) >= self.addresses:
            del self.failures[min(self.failures, key=lambda k: self.failures[k].last)]
        return self.failures.setdefault(key, Failures())


class OwnerCode:
    """A one-time code for whoever reads the server's console: it unlocks a session whatever the back-off says.

    Made when first `announce`d (so a process that never shows a password field prints none), compared
    in constant time, and replaced, with the new one printed, once used.
    """

    def __init__(self, say=None):
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.lock = threading.Lock()
        self.code: str | None = None

    def announce(self) -> None:
        """Make and print a code, unless one is waiting already."""
        with self.lock:
            if self.code is None:
                self.renew()

    def renew(self) -> None:
        self.code = secrets.token_urlsafe(16)
        self.say(f"imgsim: owner code for this dashboard: {self.code}  (typed in the password field, it unlocks "
                 "changes once, even while wrong passwords are being held back)")

    def matches(self, attempt: str) -> bool:
        with self.lock:
            if self.code is None or not attempt:
                return False
            right = hmac.compare_digest(attempt.strip().encode("utf-8", "surrogatepass"), self.code.encode())
            if right:
                self.renew()
            return right


GUESSES = PasswordGuesses()  # one per server process: every browser session shares it


def guess_password(policy: Access, attempt: str, address=None) -> Guess:
    """A session's password guess from `address`, through the back-off and the owner code (`PasswordGuesses`)."""
    return GUESSES.check(policy, attempt, address)


def announce_owner_code() -> None:
    """Print this server's owner code on its console, once until it is used (the dashboard calls this with a password field)."""
    GUESSES.code.announce()
