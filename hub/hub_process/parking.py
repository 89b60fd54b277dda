"""The hub's side of parking (preview; docs/gpus.md, "Parking"): what a person sees of a parked
server, and how it comes back.

gpu-reclaim parks a server (hub/service_process/reclaim/parking.py): its kernels' GPU state moved into host
memory, its container paused (``docker pause``), its GPU given back, a record in
``gpu-parked.json`` beside the GPU intent file (hub/gpus/parked.py). In the hub process, then:

- **the proxy**: a paused server would take a request and never answer it. Its route is removed
  (``sync_routes``: within ``WATCH_S`` of its record being written, a stat of the parked servers'
  file, and every ``SYNC_S`` seconds) and ``Proxy.add_user``
  adds none for a parked server (JupyterHub's route check would put it back), so its requests
  come to the hub;
- **/user/<name>/...** then reaches JupyterHub's ``UserUrlHandler``, which would redirect back to
  a ready server until it gives up ("Redirect loop detected", a 500). For a parked server,
  pages are sent to ``/hub/parked/<server>`` and other requests (API calls, JupyterLab's polling
  in a tab still open) are answered 503 with JSON ``{"status", "message", "parked_since",
  "resume_url"}`` at once; JupyterLab's GPU item shows that as a notice with a Resume button;
- **/hub/parked/<server>**: "Your session is parked since 10:42 (model state kept in memory)"
  with *Resume* and *Start fresh on another GPU*. Both are POSTs with JupyterHub's XSRF token
  (a GET never changes anything). Resume joins the GPU line (hub/gpus/queue.py) for the one
  GPU it was parked on (``ResumeWait``, a task of the hub process): at its first look, that GPU
  free and nobody earlier in line able to take it, it resumes at once (``Parker.take_back``
  under the GPU manager's lock: the record goes, unpaused; then ``Parker.restore`` outside it:
  restored, unlocked), the route comes back, and on to JupyterLab. Held by someone else: it
  stays parked and in line, the page shows its place and who holds the GPU and reloads itself
  every ``REFRESH_S`` seconds (a plain GET); the task resumes it as soon as the GPU is free,
  before anyone behind it in line is given that GPU, the page open or not. *Start fresh* leaves
  the line and stops the parked server (its GPU state is lost, its files kept) and starts a new
  one (with any free GPU, or in the line);
- **the hub's home page** shows the same notice (template variable ``gpuhub_parked``);
- **a hub restart**: the start-up check waits for each running server to answer (a paused one
  never does, and would be stopped): a parked server is taken as up without asking; one that
  waited in line to resume joins it again at its old place (``sync_routes``);
- **a stop** of a parked server (the person, an admin, the idle culler): GPUDockerSpawner.stop
  unpauses it first, so it takes its SIGTERM, and the record goes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jupyterhub import orm
from jupyterhub.app import JupyterHub
from jupyterhub.handlers.base import BaseHandler, UserUrlHandler
from jupyterhub.proxy import Proxy
from jupyterhub.user import User
from jupyterhub.utils import get_accepted_mimetype, url_path_join
from tornado import web

from hub.common.audit import AuditLog
from hub.common.engine import DockerCaller, engine_client
from hub.common.park import ExecCheckpointer, Outcome, ParkSettings, Parker
from hub.gpus.parked import FILE, Parked, ParkedFile
from hub.gpus.queue import Waiter
from hub.hub_process.spawner.process import PROCESS
from hub.settings.table import read

log = logging.getLogger("gpuhub.parking")
SYNC_S = 3.0  # seconds between two checks of the parked servers' routes
WATCH_S = 0.25  # seconds between two looks at the parked servers' file (a stat) for a new park
REFRESH_S = 5  # seconds between two reloads of the page of a resume waiting in line
LOOK_S = 5  # seconds between two looks of a resume waiting in line when nothing woke it
_state: dict[str, Any] = {"task": None, "installed": False, "resumes": {}}


def parked_file_of(spawner: Any) -> ParkedFile | None:
    """The parked servers' file of this spawner's hub (beside its GPU intent file)."""
    intent = getattr(spawner, "gpu_intent_file", "") or ""
    return ParkedFile(Path(intent).with_name(FILE)) if intent else None


def record_of(spawner: Any) -> Parked | None:
    """This server's parked record, if it is parked (blocking: one small file read)."""
    parked = parked_file_of(spawner)
    if parked is None:
        return None
    return parked.get((spawner.user.name, spawner.name or ""))


def clock_time(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


def notice(record: Parked) -> str:
    gib = record.gpu_mib / 1024
    kept = f"{gib:.1f} GB of GPU state" if gib >= 0.1 else "model state"
    return f"Your session is parked since {clock_time(record.since)} ({kept} kept in memory)."


def waiting_of(user_name: str, server: str) -> "ResumeWait | None":
    """The resume of this server waiting in the GPU line, if one is."""
    wait = _state["resumes"].get((user_name, server or ""))
    return wait if wait is not None and not wait.finished.done() else None


def parked_of(user: Any) -> list[dict]:
    """Template variable ``gpuhub_parked``: the user's parked servers, for the home page."""
    out = []
    for name, spawner in sorted(getattr(user, "spawners", {}).items()):
        try:
            record = record_of(spawner)
        except Exception:  # noqa: BLE001 - a page never fails for this notice
            record = None
        if record is not None:
            wait = waiting_of(user.name, name)
            out.append({"server": name, "since": record.since, "message": notice(record),
                        "url": f"parked/{name}", "position": wait.position if wait else 0})
    return out


# -- the proxy's routes ------------------------------------------------------------------------

async def sync_routes(app: Any) -> None:
    """Remove the routes of parked servers that still have one (parked by gpu-reclaim, in
    another process); a resumed server's route is added by its resume."""
    try:
        routes = None
        for orm_spawner in app.db.query(orm.Spawner).filter(orm.Spawner.server != None):  # noqa: E711
            user = app.users[orm_spawner.user]
            spawner = user.spawners.get(orm_spawner.name)
            if spawner is None or not spawner.ready:
                continue
            record = await asyncio.to_thread(record_of, spawner)
            if record is None:
                continue
            if PROCESS.gpu_queue.previous_resumes.pop((user.name, spawner.name or ""), None):
                # it waited in line to resume when the last hub process ended: back at its place
                log.info("%s waited in line to resume: in line again", spawner._log_name)
                start_resume(spawner, app.proxy)
            if routes is None:
                routes = await app.proxy.get_all_routes()
            if spawner.proxy_spec in routes:
                log.info("%s is parked: its route goes, its requests come to the hub", spawner._log_name)
                await app.proxy.delete_user(user, spawner.name)
    except Exception as exc:  # noqa: BLE001 - the next round tries again
        log.warning("parked servers' routes: %s", exc)


def _file_stamp(path: Path | None) -> tuple | None:
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return st and (st.st_mtime_ns, st.st_size, st.st_ino)


async def _sync_forever() -> None:
    """A round every SYNC_S seconds, and at once (within WATCH_S) when the parked servers' file
    changes: a park by gpu-reclaim (another process) loses its route a fraction of a second after
    its record is written, not up to SYNC_S later."""
    stamp, last = None, 0.0
    while True:
        await asyncio.sleep(WATCH_S)
        path = _state.get("file")
        now_stamp = await asyncio.to_thread(_file_stamp, path)
        now = time.monotonic()
        if now_stamp == stamp and now - last < SYNC_S:
            continue
        stamp, last = now_stamp, now
        if JupyterHub.initialized():
            await sync_routes(JupyterHub.instance())


def _start_sync(spawner: Any) -> None:
    """The sync task, if it is not running, watching the parked servers' file of ``spawner``
    (the same for every spawner of a hub)."""
    if _state.get("file") is None:
        parked = parked_file_of(spawner)
        if parked is not None:
            _state["file"] = parked.path
    task = _state["task"]
    if task is None or task.done():
        try:
            _state["task"] = asyncio.get_running_loop().create_task(_sync_forever())
        except RuntimeError:  # no loop yet
            pass


# -- resuming, in the GPU line -----------------------------------------------------------------

@dataclass
class ResumeWait:
    """A parked server's resume in the GPU line (hub/gpus/queue.py, ``Waiter.gpu``): its place
    and who holds its GPU at the last look; ``first`` is set after the first look, ``finished``
    with the Outcome (None: it was no longer parked: resumed or stopped some other way)."""
    user: str
    server: str
    uuid: str = ""
    position: int = 0
    held_by: str = ""
    waiter: Waiter | None = None
    task: asyncio.Task | None = None
    first: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def finish(self, outcome: Outcome | None) -> None:
        if not self.finished.done():
            self.finished.set_result(outcome)
        self.first.set()

    async def first_look(self) -> Outcome | None:
        """After the first look: the Outcome if it is over (resumed, failed, no longer parked),
        else None (it waits in line)."""
        await self.first.wait()
        return self.finished.result() if self.finished.done() else None

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


def start_resume(spawner: Any, proxy: Any) -> ResumeWait:
    """Resume this parked server, waiting in the GPU line for its GPU if that is held (one
    ResumeWait per server: a second Resume finds the first one)."""
    key = (spawner.user.name, spawner.name or "")
    wait = waiting_of(*key)
    if wait is None:
        wait = _state["resumes"][key] = ResumeWait(*key)
        wait.task = asyncio.get_running_loop().create_task(_resume_in_line(spawner, proxy, wait))
    return wait


async def _resume_in_line(spawner: Any, proxy: Any, wait: ResumeWait) -> None:
    queue = PROCESS.gpu_queue
    t0 = woken = time.monotonic()
    try:
        manager = await spawner.gpu_manager()
        parker = build_parker(spawner, manager.lock)
        while True:
            taken: Outcome | dict | None = None
            async with manager.lock:
                if manager.reconciled_at <= woken:  # one engine read serves every waiter of one wake
                    await manager.reconcile(spawner.engine)
                record = await asyncio.to_thread(record_of, spawner)
                if record is None:  # resumed, stopped or expired some other way
                    wait.finish(None)
                    return
                wait.uuid = record.uuid
                if wait.waiter is None:
                    wait.waiter = queue.join(wait.user, wait.server, frozenset(spawner.user_groups()), gpu=record.uuid)
                queue.apply_moves()
                if queue.may_resume(manager.allocator, wait.waiter):
                    t0 = time.monotonic()  # the resume's own time, not the wait's
                    taken = await parker.take_back(record)
                    if not isinstance(taken, Outcome):  # it holds its GPU again: out of the line
                        manager.reconciled_at = 0.0  # the allocator does not know yet: the next look reads the engine
                        queue.done(wait.waiter)
                        wait.waiter = None
                if wait.waiter is not None:
                    wait.waiter.event.clear()
                    wait.waiter.waited = True
                    wait.position = queue.position(wait.waiter)
                    wait.held_by = ", ".join(sorted({h.user for h in manager.allocator.holders_of(record.uuid)}))
            if isinstance(taken, dict):
                out = await parker.restore(record, taken, t0)
                spawner.log.info("%s: %s (%s)", spawner._log_name, out.action, out.detail)
                await _route_back(spawner, proxy)
                wait.finish(out)
                return
            if isinstance(taken, Outcome) and taken.action != "held":  # gone, unpause failed
                spawner.log.warning("%s: %s (%s)", spawner._log_name, taken.action, taken.detail)
                await _route_back(spawner, proxy)
                wait.finish(taken)
                return
            if not wait.first.is_set():
                spawner.log.info("%s waits in line to resume on GPU %s (held by %s): number %d",
                                 spawner._log_name, wait.uuid, wait.held_by or "a start", wait.position)
            wait.first.set()
            try:
                await asyncio.wait_for(wait.waiter.event.wait(), LOOK_S)
                woken = wait.waiter.woken_at
            except asyncio.TimeoutError:
                woken = time.monotonic()
    except asyncio.CancelledError:
        wait.finish(None)
        raise
    except Exception as exc:  # noqa: BLE001 - the page says so; the server stays parked
        spawner.log.exception("%s: resume in line failed", spawner._log_name)
        wait.finish(Outcome("resume-failed", wait.user, wait.server, f"{type(exc).__name__}: {exc}"))
    finally:
        if wait.waiter is not None:
            queue.leave(wait.waiter)
            wait.waiter = None
        if _state["resumes"].get((wait.user, wait.server)) is wait:
            del _state["resumes"][(wait.user, wait.server)]


async def _route_back(spawner: Any, proxy: Any) -> None:
    if spawner.ready:
        try:
            await proxy.add_user(spawner.user, spawner.name or "")
        except Exception as exc:  # noqa: BLE001 - JupyterHub's route check adds it within a minute
            spawner.log.warning("%s: its route after the resume: %s", spawner._log_name, exc)


# -- the pieces of JupyterHub it changes ----------------------------------------------------------

def _is_api(handler: Any, user_path: str) -> bool:
    accept = get_accepted_mimetype(handler.request.headers.get("Accept", ""),
                                   choices=["application/json", "text/html"])
    # a browser's page load asks for text/html; fetch() (JupyterLab's GPU item) for */*
    return accept != "text/html" or "api" in (user_path or "").split("/")


def install(c: Any) -> None:
    """Patch the proxy, the /user/ redirect and the start-up check; add /hub/parked."""
    handlers = [h for h in c.JupyterHub.get("extra_handlers", []) if h[0] != r"/parked(?:/(?P<server>[^/]*))?/?"]
    c.JupyterHub.extra_handlers = [*handlers, (r"/parked(?:/(?P<server>[^/]*))?/?", ParkedHandler())]
    c.JupyterHub.template_vars = {**c.JupyterHub.get("template_vars", {}), "gpuhub_parked": parked_of}
    if _state["installed"]:
        return
    original_add_user = Proxy.add_user
    original_redirect = UserUrlHandler._redirect_to_user_server
    original_wait_up = User._wait_up

    async def add_user(self, user, server_name=""):
        spawner = user.spawners[server_name]
        _start_sync(spawner)
        if await asyncio.to_thread(record_of, spawner) is not None:
            self.log.info("%s is parked: no route (its requests go to the hub)", spawner._log_name)
            return
        return await original_add_user(self, user, server_name)

    async def _redirect_to_user_server(self, user, spawner):
        _start_sync(spawner)
        record = await asyncio.to_thread(record_of, spawner)
        if record is None:
            return await original_redirect(self, user, spawner)
        page = url_path_join(self.hub.base_url, "parked", spawner.name or "")
        if _is_api(self, self.request.path.split(f"/user/{user.escaped_name}", 1)[-1]):
            self.set_status(503)
            self.set_header("Content-Type", "application/json")
            wait = waiting_of(user.name, spawner.name or "")
            where = (f" It waits in line for its GPU (number {wait.position}) and resumes by itself when that is free."
                     if wait else f" Resume it at {page}")
            self.finish(json.dumps({"status": 503, "message": notice(record) + where, "parked_since": record.since,
                                    "resume_url": page, "in_line": wait.position if wait else 0}))
            return
        # back to where the person was, at the server's own path (/user/..., not the hub's /hub/user/...)
        back = self.request.uri.replace(url_path_join(self.hub.base_url, "user/"), url_path_join(self.base_url, "user/"), 1)
        self.redirect(f"{page}?next={_quote(back)}", status=303)

    async def _wait_up(self, spawner):
        record = await asyncio.to_thread(record_of, spawner)
        if record is not None:  # paused: it would never answer, and the check would stop it
            self.log.info("%s is parked (since %s): taken as up", spawner._log_name, clock_time(record.since))
            _start_sync(spawner)
            return spawner.server.url if spawner.server else None
        return await original_wait_up(self, spawner)

    Proxy.add_user = add_user
    UserUrlHandler._redirect_to_user_server = _redirect_to_user_server
    User._wait_up = _wait_up
    _state["installed"] = True


def _quote(value: str) -> str:
    return quote(value, safe="")


def _next_url(handler: Any, user: Any, server: str) -> str:
    """Where to go after a resume: ``next`` if it is this user's server's own path."""
    own = url_path_join(user.url, server or "", "/") if server else user.url
    wanted = handler.get_argument("next", "") or ""
    return wanted if wanted.startswith(own) else own


def build_parker(spawner: Any, lock: Any) -> Any:
    """A Parker for resumes in the hub process (its audit entries the person's, via "hub"): gpu-park by docker exec (a whole GPU's restore
    takes seconds, at most minutes), the GPU manager's lock (a resume and a start never take the
    same GPU). GPUHUB_PARK_FAKE=1 in the hub's environment: gpu-park's driver stand-in (fake GPUs)."""
    if _state.get("docker") is None:  # one engine client for every resume of this hub process
        _state["docker"] = DockerCaller(engine_client(timeout=900))
    docker = _state["docker"]

    async def no_stop(user: str, server: str) -> None:  # stops go through the hub (Start fresh)
        return None

    audit_file = getattr(spawner, "gpu_audit_file", "") or ""
    return Parker(docker, ExecCheckpointer(docker, fake=read(os.environ, "GPUHUB_PARK_FAKE")),
                  parked_file_of(spawner), lambda uuid: None, no_stop, ParkSettings(label_prefix=spawner.label_prefix),
                  audit=AuditLog(audit_file) if audit_file else None, lock=lock, actor=(spawner.user.name, "hub"))


def ParkedHandler():  # noqa: N802 - the class, made in the hub's process (JupyterHub imported)
    class Handler(BaseHandler):
        # as /user/ (UserUrlHandler): a person's own token works here too (scripts, JupyterLab)
        _accept_token_auth = True

        async def _target(self, server: str | None):
            user = self.current_user
            if user is None:
                raise web.HTTPError(403)
            server = server or ""
            spawner = user.spawners.get(server) if server in user.orm_user.orm_spawners else None
            return user, server, spawner

        @web.authenticated
        async def get(self, server: str | None = None):
            """The page only: nothing changes on a GET (resuming is the form's POST)."""
            user, server, spawner = await self._target(server)
            record = await asyncio.to_thread(record_of, spawner) if spawner is not None else None
            if record is None:  # not (or no longer) parked: to the server or the home page
                self.redirect(_next_url(self, user, server) if spawner is not None and spawner.ready
                              else self.hub.base_url + "home")
                return
            await self._page(user, server, record, waiting_of(user.name, server))

        async def _page(self, user, server: str, record: Parked, wait: "ResumeWait | None" = None,
                        failed: str = ""):
            nxt = self.get_argument("next", "") or ""
            html = await self.render_template(
                "gpuhub_parked.html", user=user, server_name=server, notice=notice(record), record=record,
                wait=wait, failed=failed, refresh_s=REFRESH_S, next_url=nxt, xsrf_form=self.xsrf_form_html())
            self.finish(html)

        @web.authenticated
        async def post(self, server: str | None = None):
            user, server, spawner = await self._target(server)
            record = await asyncio.to_thread(record_of, spawner) if spawner is not None else None
            if record is None:
                self.redirect(_next_url(self, user, server) if spawner is not None and spawner.ready
                              else self.hub.base_url + "home")
                return
            action = self.get_argument("action", "resume")
            if action == "fresh":
                await self._fresh(user, server, spawner)
            else:
                await self._resume(user, server, spawner, record)

        async def _resume(self, user, server: str, spawner, record: Parked):
            wait = start_resume(spawner, self.proxy)
            out = await wait.first_look()
            if out is None and not wait.finished.done():  # in line: the page shows its place
                here = url_path_join(self.hub.base_url, "parked", server)
                nxt = self.get_argument("next", "") or ""
                self.redirect(f"{here}?next={_quote(nxt)}" if nxt else here, status=303)
                return
            if out is not None and out.action not in ("resumed", "gone", "not-parked"):
                self.log.warning("%s: %s", spawner._log_name, out.detail)
                still = await asyncio.to_thread(record_of, spawner)
                if still is not None:  # still parked: say why on its page
                    await self._page(user, server, still, None, out.detail)
                    return
            self.redirect(_next_url(self, user, server) if spawner.ready else self.hub.base_url + "home",
                          status=303)

        async def _fresh(self, user, server: str, spawner):
            wait = waiting_of(user.name, server)
            if wait is not None:  # out of the line first: it must not resume while being stopped
                wait.cancel()
                await asyncio.wait([wait.finished])
            # the stop unpauses it and drops the record (GPUDockerSpawner.stop)
            await self.stop_single_user(user, server)
            self.redirect(url_path_join(self.hub.base_url, "spawn", user.escaped_name, server), status=303)

    return Handler
