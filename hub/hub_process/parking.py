"""The hub's side of parking (preview; docs/gpus.md, "Parking"): what a person sees of a parked
server, and how it comes back.

gpu-reclaim parks a server (hub/service_process/reclaim/parking.py): its kernels' GPU state moved into host
memory, its container paused (``docker pause``), its GPU given back, a record in
``gpu-parked.json`` beside the GPU intent file (hub/gpus/parked.py). In the hub process, then:

- **the proxy**: a paused server would take a request and never answer it. Its route is removed
  (``sync_routes``, every ``SYNC_S`` seconds while something is parked) and ``Proxy.add_user``
  adds none for a parked server (JupyterHub's route check would put it back), so its requests
  come to the hub;
- **/user/<name>/...** then reaches JupyterHub's ``UserUrlHandler``, which would redirect back to
  a ready server until it gives up ("Redirect loop detected", a 500). For a parked server,
  pages are sent to ``/hub/parked/<server>`` and other requests (API calls, JupyterLab's polling
  in a tab still open) are answered 503 with JSON ``{"status", "message", "parked_since",
  "resume_url"}`` at once; JupyterLab's GPU item shows that as a notice with a Resume button;
- **/hub/parked/<server>**: "Your session is parked since 10:42 (model state kept in memory)"
  with *Resume* and *Start fresh*. Resume (``Parker.resume`` under the GPU manager's lock): the
  GPU free: unpaused, restored, the route back, and on to JupyterLab; the GPU held by someone
  else: it stays parked, the page says by whom and retries on its own every ``RETRY_S``
  seconds, so the person gets that GPU as soon as it is free; *Start fresh* stops the parked
  server (its GPU state is lost, its files kept) and starts a new one (with any free GPU, or in
  the line);
- **the hub's home page** shows the same notice (template variable ``gpuhub_parked``);
- **a hub restart**: the start-up check waits for each running server to answer (a paused one
  never does, and would be stopped): a parked server is taken as up without asking;
- **a stop** of a parked server (the person, an admin, the idle culler): GPUDockerSpawner.stop
  unpauses it first, so it takes its SIGTERM, and the record goes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
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
from hub.common.park import ExecCheckpointer, ParkSettings, Parker
from hub.gpus.parked import FILE, Parked, ParkedFile
from hub.settings.table import read

log = logging.getLogger("gpuhub.parking")
SYNC_S = 3.0  # seconds between two checks of the parked servers' routes
RETRY_S = 15  # seconds between two resume tries of a page whose GPU is held
_state: dict[str, Any] = {"task": None, "installed": False}


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


def parked_of(user: Any) -> list[dict]:
    """Template variable ``gpuhub_parked``: the user's parked servers, for the home page."""
    out = []
    for name, spawner in sorted(getattr(user, "spawners", {}).items()):
        try:
            record = record_of(spawner)
        except Exception:  # noqa: BLE001 - a page never fails for this notice
            record = None
        if record is not None:
            out.append({"server": name, "since": record.since, "message": notice(record),
                        "url": f"parked/{name}"})
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
            if await asyncio.to_thread(record_of, spawner) is None:
                continue
            if routes is None:
                routes = await app.proxy.get_all_routes()
            if spawner.proxy_spec in routes:
                log.info("%s is parked: its route goes, its requests come to the hub", spawner._log_name)
                await app.proxy.delete_user(user, spawner.name)
    except Exception as exc:  # noqa: BLE001 - the next round tries again
        log.warning("parked servers' routes: %s", exc)


async def _sync_forever() -> None:
    while True:
        await asyncio.sleep(SYNC_S)
        if JupyterHub.initialized():
            await sync_routes(JupyterHub.instance())


def _start_sync() -> None:
    task = _state["task"]
    if task is None or task.done():
        try:
            _state["task"] = asyncio.get_running_loop().create_task(_sync_forever())
        except RuntimeError:  # no loop yet
            pass


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
        _start_sync()
        spawner = user.spawners[server_name]
        if await asyncio.to_thread(record_of, spawner) is not None:
            self.log.info("%s is parked: no route (its requests go to the hub)", spawner._log_name)
            return
        return await original_add_user(self, user, server_name)

    async def _redirect_to_user_server(self, user, spawner):
        _start_sync()
        record = await asyncio.to_thread(record_of, spawner)
        if record is None:
            return await original_redirect(self, user, spawner)
        page = url_path_join(self.hub.base_url, "parked", spawner.name or "")
        if _is_api(self, self.request.path.split(f"/user/{user.escaped_name}", 1)[-1]):
            self.set_status(503)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": 503, "message": f"{notice(record)} Resume it at {page}",
                                    "parked_since": record.since, "resume_url": page}))
            return
        # back to where the person was, at the server's own path (/user/..., not the hub's /hub/user/...)
        back = self.request.uri.replace(url_path_join(self.hub.base_url, "user/"), url_path_join(self.base_url, "user/"), 1)
        self.redirect(f"{page}?next={_quote(back)}", status=303)

    async def _wait_up(self, spawner):
        record = await asyncio.to_thread(record_of, spawner)
        if record is not None:  # paused: it would never answer, and the check would stop it
            self.log.info("%s is parked (since %s): taken as up", spawner._log_name, clock_time(record.since))
            _start_sync()
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
    """A Parker for resumes in the hub process: gpu-park by docker exec (a whole GPU's restore
    takes seconds, at most minutes), the GPU manager's lock (a resume and a start never take the
    same GPU). GPUHUB_PARK_FAKE=1 in the hub's environment: gpu-park's driver stand-in (fake GPUs)."""
    if _state.get("docker") is None:  # one engine client for every resume of this hub process
        _state["docker"] = DockerCaller(engine_client(timeout=900))
    docker = _state["docker"]

    async def no_stop(user: str, server: str) -> None:  # stops go through the hub (Start fresh)
        return None

    return Parker(docker, ExecCheckpointer(docker, fake=read(os.environ, "GPUHUB_PARK_FAKE")),
                  parked_file_of(spawner), lambda uuid: None, no_stop, ParkSettings(label_prefix=spawner.label_prefix),
                  lock=lock, audit=AuditLog(spawner.gpu_audit_file), person_resumes=True)  # resumes in the audit log, with their timings


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
            user, server, spawner = await self._target(server)
            record = await asyncio.to_thread(record_of, spawner) if spawner is not None else None
            if record is None:  # not (or no longer) parked: to the server or the home page
                self.redirect(_next_url(self, user, server) if spawner is not None and spawner.ready
                              else self.hub.base_url + "home")
                return
            held = self.get_argument("held", "")
            if held and self.get_argument("retry", "") == "1":  # the held page's own retry
                await self._resume(user, server, spawner, record)
                return
            await self._page(user, server, record, held)

        async def _page(self, user, server: str, record: Parked, held: str = ""):
            nxt = self.get_argument("next", "") or ""
            html = await self.render_template(
                "gpuhub_parked.html", user=user, server_name=server, notice=notice(record), record=record,
                held_by=held, retry_s=RETRY_S, next_url=nxt, xsrf_form=self.xsrf_form_html(),
                retry_url=f"?retry=1&held={_quote(held)}&next={_quote(nxt)}")
            self.finish(html)

        @web.authenticated
        async def post(self, server: str | None = None):
            user, server, spawner = await self._target(server)
            record = await asyncio.to_thread(record_of, spawner) if spawner is not None else None
            if record is None:
                self.redirect(self.hub.base_url + "home")
                return
            action = self.get_argument("action", "resume")
            if action == "fresh":
                await self._fresh(user, server, spawner)
            else:
                await self._resume(user, server, spawner, record)

        async def _resume(self, user, server: str, spawner, record: Parked):
            manager = await spawner.gpu_manager()
            parker = build_parker(spawner, manager.lock)
            out = await parker.resume(user.name, server)
            self.log.info("%s: %s (%s)", spawner._log_name, out.action, out.detail)
            if out.action == "held":
                held_by = out.detail.rsplit(" by ", 1)[-1]
                await self._page(user, server, record, held_by)
                return
            if out.action in ("resumed", "resume-failed", "gone", "not-parked"):
                if out.action == "resume-failed":
                    self.log.warning("%s: %s", spawner._log_name, out.detail)
                if spawner.ready:
                    await self.proxy.add_user(user, server)
                self.redirect(_next_url(self, user, server) if spawner.ready else self.hub.base_url + "home")
                return
            raise web.HTTPError(500, out.detail)

        async def _fresh(self, user, server: str, spawner):
            # the stop unpauses it and drops the record (GPUDockerSpawner.stop)
            await self.stop_single_user(user, server)
            self.redirect(url_path_join(self.hub.base_url, "spawn", user.escaped_name, server))

    return Handler
