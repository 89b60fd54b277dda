"""Idle-GPU reclaim, the decisions alone (pure: no I/O, the clock is an argument).

A server whose GPU read under ``threshold_pct`` for ``timeout`` seconds is idle, whatever its
browser tab or kernels do. It is first warned (its user sees the time left in JupyterLab);
``grace`` seconds after the warning was due (``idle_since + timeout``; at least half the grace
after a late warning), still idle, it is stopped and its GPU freed. GPU work resuming
(a reading at or over the threshold) cancels the warning. The user's "still working" answer
moves the deadline back by one grace period, once per warning; only GPU work clears it.
Exempt users and groups are never reclaimed; an admin may extend one server until a time.
Servers without a GPU hold none and are never judged.

What "stopped" means is the policy's ``action``: ``stop`` (the default) stops the server;
``park`` parks it instead (hub/common/park.py: its kernels' GPU state moved into host memory,
the container paused, the GPU given back; it falls back to the stop when parking is refused or
fails), and a server parked longer than ``max_parked`` seconds is then stopped.

A profile may carry its own threshold, timeout, grace, action and maximum parked time, or switch reclaim off
(``ReclaimOverride``, from the profiles file); ``PolicyTable`` gives each server the policy of
the profile it was started with. Exemptions stay global.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

Key = tuple[str, str, str]  # (user, server, gpu uuid)


@dataclass(frozen=True)
class ReclaimPolicy:
    threshold_pct: float = 5.0
    timeout: float = 1800.0  # seconds under the threshold before the warning; 0: never reclaim
    grace: float = 600.0  # seconds from the warning to the stop
    exempt_users: frozenset[str] = frozenset()
    exempt_groups: frozenset[str] = frozenset()
    action: str = "stop"  # what reclaiming does: "stop", or "park" (falls back to the stop)
    max_parked: float = 86400.0  # seconds a parked server stays parked, then it is stopped

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    @property
    def parks(self) -> bool:
        return self.action == "park"

    def exempt(self, user: str, groups: Iterable[str]) -> bool:
        return user in self.exempt_users or not self.exempt_groups.isdisjoint(groups)

    def to_json(self) -> dict[str, Any]:
        return {"threshold_pct": self.threshold_pct, "timeout_s": self.timeout, "grace_s": self.grace,
                "action": self.action, "max_parked_s": self.max_parked,
                "exempt_users": sorted(self.exempt_users), "exempt_groups": sorted(self.exempt_groups)}


@dataclass(frozen=True)
class ReclaimOverride:
    """What one profile changes of the hub's policy (None: the setting's value); ``off``: its
    servers are never reclaimed."""
    off: bool = False
    threshold_pct: float | None = None
    timeout: float | None = None
    grace: float | None = None
    action: str | None = None
    max_parked: float | None = None

    def apply(self, policy: ReclaimPolicy) -> ReclaimPolicy:
        if self.off:
            return replace(policy, timeout=0.0)
        changes = {k: v for k in ("threshold_pct", "timeout", "grace", "action", "max_parked")
                   if (v := getattr(self, k)) is not None}
        return replace(policy, **changes)

    def to_json(self) -> Any:
        return "off" if self.off else {k: v for k, v in asdict(self).items() if k != "off" and v is not None}


OVERRIDE_KEYS = {"threshold": "threshold_pct", "timeout": "timeout", "grace": "grace", "action": "action",
                 "max_parked": "max_parked"}
ACTIONS = ("stop", "park")


def parse_override(value: Any, where: str) -> ReclaimOverride:
    """A profile's ``reclaim:``: ``off`` (YAML's off/false too), or a mapping of ``threshold``
    (percent, 1-100), ``timeout`` (seconds, 0: off), ``grace`` (seconds, > 0), ``action``
    (``stop`` or ``park``) and ``max_parked`` (seconds, > 0). A ValueError says what is wrong."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return ReclaimOverride(off=True)
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}: reclaim must be 'off' or a mapping of {sorted(OVERRIDE_KEYS)}, "
                         "e.g. {timeout: 3600, grace: 900}")
    unknown = set(value) - set(OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"{where}: reclaim: unknown key(s) {sorted(unknown)}; allowed: {sorted(OVERRIDE_KEYS)}")
    numbers: dict[str, Any] = {}
    for key, number in value.items():
        if key == "action":
            if number not in ACTIONS:
                raise ValueError(f"{where}: reclaim.action is 'stop' or 'park', got {number!r}")
            numbers["action"] = number
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{where}: reclaim.{key} must be a number, got {number!r}")
        numbers[OVERRIDE_KEYS[key]] = float(number)
    if "threshold_pct" in numbers and not 0 < numbers["threshold_pct"] <= 100:
        raise ValueError(f"{where}: reclaim.threshold is a utilisation in percent, from 1 to 100")
    if "timeout" in numbers and not 0 <= numbers["timeout"] <= 30 * 86400:
        raise ValueError(f"{where}: reclaim.timeout is seconds from 0 (never reclaim) to 2592000 (30 days)")
    if "grace" in numbers and not 0 < numbers["grace"] <= 30 * 86400:
        raise ValueError(f"{where}: reclaim.grace is seconds from 1 to 2592000 (30 days)")
    if "max_parked" in numbers and not 0 < numbers["max_parked"] <= 30 * 86400:
        raise ValueError(f"{where}: reclaim.max_parked is seconds from 1 to 2592000 (30 days)")
    return ReclaimOverride(**numbers)


@dataclass(frozen=True)
class PolicyTable:
    """The hub's policy (the settings) and each profile's own where it has one."""
    default: ReclaimPolicy
    profiles: Mapping[str, ReclaimOverride] = field(default_factory=dict)

    def of(self, profile: str | None) -> ReclaimPolicy:
        override = self.profiles.get(profile or "")
        return override.apply(self.default) if override else self.default

    @property
    def enabled(self) -> bool:
        return self.default.enabled or any(self.of(p).enabled for p in self.profiles)

    def to_json(self) -> dict[str, Any]:
        return {**self.default.to_json(), "profiles": {p: o.to_json() for p, o in sorted(self.profiles.items())}}


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
    profile: str = ""  # the profile it was started with (its policy: PolicyTable)

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


def decide(policies: ReclaimPolicy | PolicyTable, candidates: Iterable[Candidate], state: ReclaimState,
           now: float) -> list[Decision]:
    """This round's decisions, each server by its profile's policy; ``state`` is updated to
    match them."""
    table = policies if isinstance(policies, PolicyTable) else PolicyTable(policies)
    decisions: list[Decision] = []
    seen: set[Key] = set()
    for c in candidates:
        seen.add(c.key)
        policy = table.of(c.profile)
        warned = state.warned.get(c.key)
        until = state.extended.get((c.user, c.server), 0.0)
        if until and until <= now:
            state.extended.pop((c.user, c.server), None)
            until = 0.0
        if warned and c.idle_since is not None and c.idle_since > warned.idle_since:
            # a new idle period since the warning: a new server under the same name and GPU, or
            # one resumed from parking; the old warning's deadline is not this one's
            decisions.append(Decision("clear", c.key, why="a new idle period"))
            del state.warned[c.key]
            warned = None
        if not policy.enabled or policy.exempt(c.user, c.groups) or until > now or c.idle_since is None:
            if warned:
                why = ("busy again" if c.idle_since is None else "extended by an admin" if until > now
                       else "exempt" if policy.enabled else "reclaim is off")
                decisions.append(Decision("clear", c.key, why=why))
                del state.warned[c.key]
            continue
        if warned is None:
            if now - c.idle_since >= policy.timeout:
                # The grace runs from when the warning was due, not from the round that noticed
                # it (up to one sampling interval later); a warning much later than due (the
                # service was down) still leaves the user half the grace.
                due = c.idle_since + policy.timeout
                deadline = max(due + policy.grace, now + policy.grace / 2)
                warned = Warned(at=now, deadline=deadline, idle_since=c.idle_since)
                state.warned[c.key] = warned
                decisions.append(Decision("warn", c.key, c.idle_since, warned.deadline))
        elif now >= warned.deadline:
            del state.warned[c.key]
            decisions.append(Decision("stop", c.key, c.idle_since, warned.deadline))
    for key in [k for k in state.warned if k not in seen]:  # stopped or moved since
        del state.warned[key]
        decisions.append(Decision("clear", key, why="no longer holds the GPU"))
    return decisions


def next_due(policies: ReclaimPolicy | PolicyTable, candidates: Iterable[Candidate], state: ReclaimState,
             now: float) -> float | None:
    """The next moment, after ``now``, at which ``decide`` would warn or stop someone if the GPUs
    stayed as idle as they are: a round then, not at the next sampling interval, keeps a
    reclaim within T + grace + the first reading's delay (the hub's stop fits in the interval left)."""
    table = policies if isinstance(policies, PolicyTable) else PolicyTable(policies)
    due: list[float] = []
    for c in candidates:
        policy = table.of(c.profile)
        if c.idle_since is None or not policy.enabled or policy.exempt(c.user, c.groups):
            continue
        until = state.extended.get((c.user, c.server), 0.0)
        if until > now:  # an admin's extension: judged again when it runs out
            due.append(until)
            continue
        warned = state.warned.get(c.key)
        due.append(warned.deadline if warned else c.idle_since + policy.timeout)
    later = [t for t in due if t > now]
    return min(later) if later else None


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
