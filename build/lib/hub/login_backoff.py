"""Back-off after failed logins (pure: no clock, no I/O; the caller passes ``now``).

Three kinds of keys, so that a storm slows the attacker without locking the real person out:

- ``(user, address)``: a few free tries, then an exponential wait. The one that stops a
  single machine guessing one account's password.
- ``address``: more free tries (one machine may hold many students behind NAT), then waits.
  Stops one machine guessing many accounts.
- ``user``: many free tries, then waits — but an address from which this user has logged in
  successfully before is not held back by it. A distributed guess at the admin's password
  slows down for everyone else, while the admin, from the address they use, still gets in.

A wait is never longer than ``cap`` seconds after the last failure that counted, and a try
refused during a wait is not a failure (it is not even checked): so a storm cannot push a
block into the future for ever, only keep it at ``cap``. Tables are bounded (least recently
used go first), so a flood of made-up names or addresses cannot fill the hub's memory.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class _Bounded(OrderedDict):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def touch(self, key) -> _Failures:
        entry = self.get(key)
        if entry is None:
            entry = self[key] = _Failures()
            while len(self) > self.limit:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return entry


@dataclass(frozen=True)
class Limits:
    pair_free: int = 5       # failures of one user from one address before waits begin
    address_free: int = 30   # failures from one address (any users)
    user_free: int = 20      # failures for one user (any addresses)
    base: float = 1.0        # the first wait (s); each further failure doubles it
    cap: float = 300.0       # the longest wait (s)
    forget_after: float = 3600.0  # failures older than this (since the last one) are forgotten
    known_for: float = 30 * 86400.0  # how long a successful address stays known for its user
    table_size: int = 100_000


class LoginBackoff:
    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self._pairs = _Bounded(limits.table_size)
        self._addresses = _Bounded(limits.table_size)
        self._users = _Bounded(limits.table_size)
        self._known = _Bounded(limits.table_size)  # (user, address) -> last success

    def wait(self, user: str, address: str, now: float) -> float:
        """Seconds this try must wait (0: check the password)."""
        waits = [self._remaining(self._pairs, (user, address), now),
                 self._remaining(self._addresses, address, now)]
        if not self._is_known(user, address, now):
            waits.append(self._remaining(self._users, user, now))
        return max(waits)

    def failed(self, user: str, address: str, now: float) -> None:
        limits = self.limits
        for table, key, free in ((self._pairs, (user, address), limits.pair_free),
                                 (self._addresses, address, limits.address_free),
                                 (self._users, user, limits.user_free)):
            entry = table.touch(key)
            if entry.count and now - entry.last > limits.forget_after:
                entry.count, entry.blocked_until = 0, 0.0
            entry.count += 1
            entry.last = now
            if entry.count >= free:
                delay = min(limits.base * 2 ** (entry.count - free), limits.cap)
                entry.blocked_until = max(entry.blocked_until, now + delay)

    def succeeded(self, user: str, address: str, now: float) -> None:
        """A right password: this pair starts clean and the address is known for this user.
        The user's and the address's counts stay (others may still be guessing)."""
        self._pairs.pop((user, address), None)
        self._known.touch((user, address)).last = now

    def _is_known(self, user: str, address: str, now: float) -> bool:
        entry = self._known.get((user, address))
        return entry is not None and now - entry.last <= self.limits.known_for

    def _remaining(self, table: _Bounded, key, now: float) -> float:
        entry = table.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.blocked_until - now)


def client_address(forwarded_for: str | None, peer: str, trusted: frozenset[str] = frozenset()) -> str:
    """The address a login came from. The proxy appends the address it saw to
    X-Forwarded-For, so the rightmost entry is the one nobody but the proxy wrote; entries
    written by our own hops (Caddy in front of the proxy) are skipped. X-Real-Ip, which
    tornado would prefer, is ignored: the proxy passes a client's own X-Real-Ip through."""
    hops = [part.strip() for part in (forwarded_for or "").split(",") if part.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer
