"""Idle-GPU reclaim, the decisions alone (pure: no I/O, the clock is an argument).

A server whose GPU read under ``threshold_pct`` for ``timeout`` seconds is idle, whatever its
browser tab or kernels do. It is first warned (its user sees the time left in JupyterLab);
``grace`` seconds later, still idle, it is stopped and its GPU freed. GPU work resuming
(a reading at or over the threshold) cancels the warning. The user's "still working" answer
moves the deadline back by one grace period, once per warning; only GPU work clears it.
Exempt users and groups are never reclaimed; an admin may extend one server until a time.
Servers without a GPU hold none and are never judged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable

Key = tuple[str, str, str]  # (user, server, gpu uuid)


@dataclass(frozen=True)
class ReclaimPolicy:
    threshold_pct: float = 5.0
    timeout: float = 1800.0  # seconds under the threshold before the warning; 0: never reclaim
    grace: float = 600.0  # seconds from the warning to the stop
    exempt_users: frozenset[str] = frozenset()
    exempt_groups: frozenset[str] = frozenset()

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    def exempt(self, user: str, groups: Iterable[str]) -> bool:
        return user in self.exempt_users or not self.exempt_groups.isdisjoint(groups)

    def to_json(self) -> dict[str, Any]:
        return {"threshold_pct": self.threshold_pct, "timeout_s": self.timeout, "grace_s": self.grace,
                "exempt_users": sorted(self.exempt_users), "exempt_groups": sorted(self.exempt_groups)}


@dataclass(frozen=True)
class Warned:
    """A server told that its GPU will be reclaimed at ``deadline``."""
    at: float
    deadline: float
    idle_since: float
    still_working: bool = False  # the user answered "still working" (once per warning)


@dataclass
class ReclaimState:
    """What the decisions remember between rounds (kept on the state volume)."""
    warned: dict[Key, Warned] = field(default_factory=dict)
    extended: dict[tuple[str, str], float] = field(default_factory=dict)  # (user, server) -> until

    def to_json(self) -> dict[str, Any]:
        return {"warned": [{"user": k[0], "server": k[1], "uuid": k[2], **asdict(w)} for k, w in self.warned.items()],
                "extended": [{"user": u, "server": s, "until": t} for (u, s), t in self.extended.items()]}

    @classmethod
    def from_json(cls, data: Any) -> "ReclaimState":
        state = cls()
        for w in (data or {}).get("warned", []):
            state.warned[(w["user"], w["server"], w["uuid"])] = Warned(
                float(w["at"]), float(w["deadline"]), float(w["idle_since"]), bool(w.get("still_working")))
        for e in (data or {}).get("extended", []):
            state.extended[(e["user"], e["server"])] = float(e["until"])
        return state

    def still_working(self, key: Key, grace: float) -> Warned | None:
        """The user's answer: one more grace period, once per warning; None if not warned.
        Raises ValueError if already answered."""
        warned = self.warned.get(key)
        if warned is None:
            return None
        if warned.still_working:
            raise ValueError("already answered: the GPU must be busy again to keep the server")
        self.warned[key] = replace(warned, deadline=warned.deadline + grace, still_working=True)
        return self.warned[key]


@dataclass(frozen=True)
class Candidate:
    """A server holding a GPU, as the sampler judged it."""
    user: str
    server: str
    uuid: str
    idle_since: float | None  # None: busy now, or nothing to judge by
    groups: frozenset[str] = frozenset()

    @property
    def key(self) -> Key:
        return (self.user, self.server, self.uuid)


@dataclass(frozen=True)
class Decision:
    action: str  # "warn", "stop", "clear" (the warning is over: busy again, exempt, extended, gone)
    key: Key
    idle_since: float | None = None
    deadline: float | None = None
    why: str = ""


def decide(policy: ReclaimPolicy, candidates: Iterable[Candidate], state: ReclaimState, now: float) -> list[Decision]:
    """This round's decisions; ``state`` is updated to match them."""
    decisions: list[Decision] = []
    seen: set[Key] = set()
    for c in candidates:
        seen.add(c.key)
        warned = state.warned.get(c.key)
        until = state.extended.get((c.user, c.server), 0.0)
        if until and until <= now:
            state.extended.pop((c.user, c.server), None)
            until = 0.0
        if not policy.enabled or policy.exempt(c.user, c.groups) or until > now or c.idle_since is None:
            if warned:
                why = ("busy again" if c.idle_since is None else "extended by an admin" if until > now
                       else "exempt" if policy.enabled else "reclaim is off")
                decisions.append(Decision("clear", c.key, why=why))
                del state.warned[c.key]
            continue
        if warned is None:
            if now - c.idle_since >= policy.timeout:
                warned = Warned(at=now, deadline=now + policy.grace, idle_since=c.idle_since)
                state.warned[c.key] = warned
                decisions.append(Decision("warn", c.key, c.idle_since, warned.deadline))
        elif now >= warned.deadline:
            del state.warned[c.key]
            decisions.append(Decision("stop", c.key, c.idle_since, warned.deadline))
    for key in [k for k in state.warned if k not in seen]:  # stopped or moved since
        del state.warned[key]
        decisions.append(Decision("clear", key, why="no longer holds the GPU"))
    return decisions


def stop_message(gpu_name: str, policy: ReclaimPolicy, idle_since: float, now: float) -> str:
    """What the user reads on their next page load."""
    seconds = max(0, round(now - idle_since))
    minutes = round(seconds / 60)
    idle = (f"{seconds} second{'s' if seconds != 1 else ''}" if seconds < 60
            else f"{minutes} minute{'s' if minutes != 1 else ''}")
    return (f"Your server was stopped to give its GPU ({gpu_name}) to others: the GPU had been idle "
            f"(under {policy.threshold_pct:g} % utilisation) for {idle}, "
            "and the warning in JupyterLab ran out. Your files in work/ are kept; press Start to "
            "start it again (with a GPU when one is free).")
