"""A hub killed while servers were starting: JupyterHub (5.5, and still 6.1) leaves those users "pending" for
up to ``Spawner.http_timeout`` (120 s here) after it is back, and their Stop is a 500.

Why: at start, JupyterHub checks every server its database says exists (``init_spawners`` →
``check_spawner``): the spawner's poll, then a wait until the server answers at
``spawner.get_url()``, for up to ``http_timeout``. A start the hub died in the middle of has a
database row without the server's address (JupyterHub records it when ``start()`` returns), so
the wait asks a made-up address until it gives up and stops the server. Meanwhile the server is
"pending check": JupyterHub's ``stop_single_user`` raises ``RuntimeError: <user> pending check``
(a 500 from DELETE /users/{name}/server) and a Start is a 400 "pending check".

Three parts fix it:

- ``GPUDockerSpawner.get_url`` (hub/hub_process/spawner/spawner.py) answers with the container's real
  address, so a start whose container runs completes at the check (not a workaround:
  ``get_url`` is JupyterHub's hook for this);
- here, the check's wait is bounded by ``CHECK_TIMEOUT`` instead of ``http_timeout``: a server
  that has not answered by then is not going to (a running server answers in milliseconds, a
  starting one within its start time), and JupyterHub then stops and cleans it up as before;
- here, a Stop that arrives during any pending state waits (up to ``STOP_WAIT`` seconds) for it
  to end, then stops the server or, if the check stopped it (JupyterHub then removes the
  spawner: ``stop_single_user`` raised KeyError, another 500), answers 204; if it is still
  pending then, the answer is a 409 saying to try again, never a 500.
"""
from __future__ import annotations

import asyncio
import time

from hub.hub_process.patches import require

# Written for 5.5; re-checked against 6.1.1: app.init_spawners' check_spawner still awaits
# User._wait_up (bounded by spawner.http_timeout), and BaseHandler.stop_single_user still raises
# KeyError for a removed spawner and RuntimeError for a pending one.
WRITTEN_FOR = ">=6.1,<6.2"
UPSTREAM = ("check_spawner waits http_timeout on an address never recorded, and stop_single_user "
            "raises RuntimeError while a server is pending (not reported upstream yet)")

CHECK_TIMEOUT = 10.0  # seconds a restarted hub waits for a server it found running to answer
STOP_WAIT = 15.0  # seconds a Stop waits for a pending check/start to end before a 409

_installed = False


def check_timeout(http_timeout: float, checking: bool) -> float:
    """How long _wait_up may wait: bounded at the hub's start-up check, unchanged otherwise."""
    return min(http_timeout, CHECK_TIMEOUT) if checking else http_timeout


async def wait_not_pending(spawner, limit: float, step: float = 0.1) -> str | None:
    """Wait up to `limit` seconds for the spawner to leave its pending state (other than a
    stop, which the caller handles); what it still is after that, or None."""
    deadline = time.monotonic() + limit
    while spawner.pending and spawner.pending != "stop" and time.monotonic() < deadline:
        await asyncio.sleep(step)
    pending = spawner.pending
    return pending if pending and pending != "stop" else None


def install() -> None:
    global _installed
    if _installed:
        return
    require(__name__, WRITTEN_FOR, UPSTREAM)
    # JupyterHub's handlers load after require(): only the version this was written for is patched
    from jupyterhub.handlers.base import BaseHandler
    from jupyterhub.user import User
    from tornado import web

    original_wait_up = User._wait_up
    original_stop = BaseHandler.stop_single_user

    async def _wait_up(self, spawner):
        if not getattr(spawner, "_check_pending", False):
            return await original_wait_up(self, spawner)
        saved = spawner.http_timeout
        spawner.http_timeout = check_timeout(saved, True)
        try:
            return await original_wait_up(self, spawner)
        finally:
            spawner.http_timeout = saved

    async def stop_single_user(self, user, server_name=""):
        if server_name not in user.spawners:  # the restart check already stopped and removed it
            return None
        spawner = user.spawners[server_name]
        if spawner.pending and spawner.pending != "stop":
            self.log.info("Stop of %s waits for its pending %s", spawner._log_name, spawner.pending)
            still = await wait_not_pending(spawner, STOP_WAIT)
            if still:
                raise web.HTTPError(409, f"{user.name}'s server is busy ({still}); try the stop "
                                         "again in a few seconds")
            # The check gave up on the server and is stopping it, or already has: that stop
            # stands (JupyterHub would raise RuntimeError "pending stop", a 500; its handler
            # answers 202 while the stop is under way, 204 once done).
            if spawner.pending == "stop" or not spawner.active:
                return None
        return await original_stop(self, user, server_name)

    User._wait_up = _wait_up
    BaseHandler.stop_single_user = stop_single_user
    _installed = True
