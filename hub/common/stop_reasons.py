"""Why a server stopped on its own (out of memory, crashed), or was stopped by a hub service
(its GPU reclaimed for being idle), kept for the user's next page load (the hub's "not running"
page reads it through ``template_vars``)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from hub.files import write_atomic

KEEP = "Your files in work/ are kept; press Start to start it again."


def reason_from_events(events: Iterable[dict], mem_limit: int | None) -> str:
    """The message for a container's engine events ('oom', 'die' with its exit code)."""
    events = list(events)
    if any(e.get("status", e.get("Action")) == "oom" for e in events):
        limit = f" of {mem_limit / 2**30:.3g} GB" if mem_limit else ""
        return ("Your server was stopped because it ran out of memory: it used all its memory"
                f"{limit}, and the system ended it. Use less memory (smaller data or batches, fewer "
                f"DataLoader workers) or a profile with more memory. {KEEP}")
    codes = [e.get("Actor", {}).get("Attributes", {}).get("exitCode") for e in events
             if e.get("status", e.get("Action")) == "die"]
    if codes and codes[-1] not in (None, "0"):
        return f"Your server stopped unexpectedly (exit code {codes[-1]}). {KEEP}"
    return f"Your server stopped. {KEEP}"


def container_events(client: Any, container_id: str) -> list[dict]:
    """The engine's 'oom' and 'die' events of a container over the last day (blocking)."""
    until = int(time.time()) + 1
    return list(client.events(since=until - 24 * 3600, until=until, decode=True,
                              filters={"container": container_id, "event": ["oom", "die"]}))


class ReasonFile:
    """Reasons written by another process (a hub service stops a server through the REST API,
    which the spawner cannot tell from the user's own stop): a small JSON file on the state
    volume, ``{"user\\nserver": {"message", "time"}}``, written before the stop is asked for and
    removed when that server starts again."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict]) -> None:
        write_atomic(self.path, json.dumps(data, indent=1))

    def put(self, key: tuple[str, str], message: str, now: float | None = None) -> None:
        data = self._read()
        data["\n".join(key)] = {"message": message, "time": time.time() if now is None else now}
        self._write(data)

    def get(self, key: tuple[str, str]) -> str:
        return str(self._read().get("\n".join(key), {}).get("message", ""))

    def pop(self, key: tuple[str, str]) -> None:
        data = self._read()
        if data.pop("\n".join(key), None) is not None:
            self._write(data)


class StopReasons:
    """(user, server) -> the reason, set by the poll that noticed the stop and kept through
    the stop that the poll triggers; a stop someone asked for clears it."""

    def __init__(self) -> None:
        self._reasons: dict[tuple[str, str], list] = {}  # key -> [message, set by the poll]

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._reasons

    def noticed(self, key: tuple[str, str], message: str) -> None:
        self._reasons[key] = [message, True]

    def running(self, key: tuple[str, str]) -> None:
        self._reasons.pop(key, None)  # an old reason is stale

    def stopping(self, key: tuple[str, str]) -> None:
        reason = self._reasons.get(key)
        if reason and reason[1]:
            reason[1] = False  # the stop that the poll triggered: keep the reason for the page
        else:
            self._reasons.pop(key, None)  # a stop asked for: nothing to explain

    def for_user(self, user, file: ReasonFile | None = None) -> str:
        """For the hub's pages: why the user's default server stopped on its own, or (from
        ``file``) was stopped by a hub service ("" if neither)."""
        if user is None:
            return ""
        spawner = user.spawners.get("")  # .get: does not create a spawner
        if spawner is not None and spawner.active:
            return ""
        reason = self._reasons.get((user.name, ""))
        if reason:
            return reason[0]
        return file.get((user.name, "")) if file is not None else ""
