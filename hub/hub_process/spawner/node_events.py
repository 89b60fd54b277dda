"""A lost Swarm node, acted on when the manager says so (docs/swarm.md, "A node dies").

Without this, the hub learns that a node went down at the next poll of each of its servers
(JupyterHub polls every ``poll_interval``, 30 s): until then its users see a server that does
not answer and its GPUs count as held. The manager's engine streams node events (``docker
events --filter type=node``): the moment Swarm marks a node down (it missed its heartbeats),
disconnected, drained or removed, ``NodeEvents`` hands the change to the event loop, and
``NodeLoss`` polls the servers that ran there at once: each poll finds its task gone
(``service_state``), JupyterHub stops the server, the user reads why on their next page, the
GPUs are free for the next decision (and the line for GPUs is woken), and the GPU console's
audit log says what happened.

The stream runs on a thread of its own (a blocking HTTP stream on its own client, never on the
shared Docker pool), reconnecting with a growing pause; a change missed while it reconnects is
still found by the regular poll.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from hub.gpus.swarm import NodeChange, node_change

log = logging.getLogger("gpuhub.swarm")


class NodeEvents:
    """The engine's node events on a daemon thread; each change that ends a node's servers goes
    to ``on_change`` on the event loop."""

    def __init__(self, make_client: Callable[[], Any], on_change: Callable[[NodeChange], None],
                 max_pause: float = 30.0):
        self.make_client, self.on_change, self.max_pause = make_client, on_change, max_pause
        self.connected = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, args=(loop,), name="swarm-node-events", daemon=True)
        self._thread.start()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        pause = 1.0
        while not loop.is_closed():
            try:
                client = self.make_client()
                stream = client.events(filters={"type": ["node"]}, decode=True)
                self.connected.set()
                log.info("Listening to the swarm's node events")
                for event in stream:
                    pause = 1.0
                    change = node_change(event)
                    if change is not None:
                        loop.call_soon_threadsafe(self.on_change, change)
                log.warning("The swarm's node event stream ended; reconnecting")
            except Exception as exc:  # noqa: BLE001 - the poll still finds lost nodes meanwhile
                log.warning("No node events from the engine (%s); retrying in %.0f s", exc, pause)
            self.connected.clear()
            time.sleep(pause)
            pause = min(pause * 2, self.max_pause)


class NodeLoss:
    """What the hub does when a node is lost: poll its servers now, and say so."""

    def __init__(self, engine: Callable[..., Awaitable], audit_file: str = "", wake: Callable[[], None] = lambda: None):
        self.engine, self.audit_file, self.wake = engine, audit_file, wake
        self.spawners: weakref.WeakSet = weakref.WeakSet()  # spawners whose server runs (or ran)
        self.handled: list[tuple[NodeChange, list[str]]] = []  # (change, users stopped): for tests

    def track(self, spawner) -> None:
        self.spawners.add(spawner)

    def forget(self, spawner) -> None:
        self.spawners.discard(spawner)

    def changed(self, change: NodeChange) -> None:
        """On the event loop, from NodeEvents."""
        asyncio.ensure_future(self.act(change))

    async def act(self, change: NodeChange) -> list[str]:
        """Poll, now, every tracked server with a task on the node; the polls that find it gone
        stop it as JupyterHub's own poll would (its callbacks), with the user's reason."""
        try:
            tasks = await self.engine("tasks", filters={"node": change.node_id})
        except Exception as exc:  # noqa: BLE001 - the regular poll remains
            log.warning("Node %s %s, but its tasks could not be read: %s", change.hostname, change.what, exc)
            return []
        services = {t.get("ServiceID") for t in tasks}
        hit = [s for s in list(self.spawners)
               if s.object_id and s.object_id in services and getattr(s, "_callbacks", None)]
        gpus = {id(s): getattr(s, "gpu_uuid", None) for s in hit}  # before the stop clears them
        log.warning("Node %s %s: polling the servers of %s now", change.hostname, change.what,
                    ", ".join(sorted(s.user.name for s in hit)) or "nobody")
        results = await asyncio.gather(*(s.poll_and_notify() for s in hit), return_exceptions=True)
        done = [s for s, r in zip(hit, results) if r is not None and not isinstance(r, BaseException)]
        stopped = sorted(s.user.name for s in done)
        for s, r in zip(hit, results):
            if isinstance(r, BaseException):
                log.warning("Poll of %s after node %s %s failed: %s", s.user.name, change.hostname, change.what, r)
        self.wake()
        self.handled.append((change, stopped))
        self.audit(change, stopped, sorted(g for g in (gpus[id(s)] for s in done) if g))
        return stopped

    def audit(self, change: NodeChange, stopped: list[str], gpus: list[str]) -> None:
        """An entry in the GPU console's audit log (what the console shows as actions)."""
        if not self.audit_file:
            return
        now = time.time()
        servers = f"the servers of {', '.join(stopped)} stopped" if stopped else "no server of this hub stopped"
        freed = f", GPUs {', '.join(gpus)} free" if gpus else ""
        entry = {"time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                 "epoch": round(now, 3), "who": "hub", "via": "swarm node events", "action": f"node {change.what}",
                 "node": change.hostname, "users": stopped, "detail": f"node {change.hostname} {change.what}: {servers}{freed}"}
        try:
            with open(Path(self.audit_file), "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            log.warning("Audit log %s: %s", self.audit_file, exc)
