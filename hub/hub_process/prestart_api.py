"""A route of the hub's own API for the GPU console's reservation pre-start (hub/gpus/prestart.py):
start one course member's server for a reservation whose pre-start window is open, with the
course's profile, and nothing else, under a scope of its own.

JupyterHub starts a server for another user only with ``servers`` on that user, which also
stops it and reads it, for every user (a role's filters are fixed when the hub starts, courses
are made at run time). With this route the console's token has ``custom:gpuhub-prestart:start``
instead (docs/security.md, "Console input and tokens"), and the hub itself checks:

    POST /hub/api/gpuhub/prestart  {"user": "alice", "reservation": "r-1a2b3c4d"}

- the reservation is in the admin's intent and holds its GPUs now (its pre-start has begun, its
  end has not come: ``Reservation.holds``), and has a pre-start;
- the user is a member of the reservation's course (the group);
- a profile names the course (``profiles.course_profile``): the server gets it, exactly as if
  the user had chosen it (the spawner checks it against their groups again);
- the user's default server is not running or starting (409).

The server's spare kernel starts with the server (``GPUHUB_WARM_START=server``), not after the
first JupyterLab page as for a server started on the click: it is ready when the person comes.

Answers 201 (started within JupyterHub's slow-spawn wait) or 202 (still starting), ``{"status",
"message"}`` otherwise. It runs in the hub's process (``install``: JupyterHub.extra_handlers).
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from hub.common import profiles
from hub.gpus.manager import load_intent
from hub.hub_process.roster_api import require_custom_scope
from hub.settings import PROFILES_FILE
from hub.settings.gpu_settings import GPUSettings

SCOPE = "custom:gpuhub-prestart:start"
PATH = "/api/gpuhub/prestart"  # under the hub's prefix: /hub/api/gpuhub/prestart


def install(c, intent_file: str = GPUSettings.intent_file, profiles_file: str = PROFILES_FILE) -> None:
    """Register the route and its scope in the hub's configuration ``c``."""
    c.JupyterHub.custom_scopes = {**c.JupyterHub.get("custom_scopes", {}), SCOPE: {
        "description": "Start a course member's server, with the course's profile, while a reservation "
                       "of the course is in its pre-start (never stop, read or start anything else)"}}
    handlers = [h for h in c.JupyterHub.get("extra_handlers", []) if h[0] != PATH]
    c.JupyterHub.extra_handlers = [*handlers, (PATH, PrestartAPIHandler(), {"intent_file": intent_file,
                                                                           "profiles_file": profiles_file})]


def PrestartAPIHandler():  # noqa: N802 - the class, made in the hub's process (JupyterHub imported)
    # made in the hub's process only: JupyterHub's API handlers and database layer
    from jupyterhub.apihandlers.base import APIHandler
    from tornado import web

    class Handler(APIHandler):
        def initialize(self, intent_file: str, profiles_file: str) -> None:
            self.intent_file, self.profiles_file = Path(intent_file), Path(profiles_file)

        async def post(self) -> None:
            require_custom_scope(self, SCOPE)
            data = self.get_json_body()
            if (not isinstance(data, dict) or set(data) != {"user", "reservation"}
                    or not all(isinstance(v, str) and v for v in data.values())):
                raise web.HTTPError(400, 'the body must be {"user": name, "reservation": id}')
            try:
                intent = await asyncio.to_thread(load_intent, self.intent_file)
            except ValueError as exc:
                raise web.HTTPError(409, f"the admin intent cannot be read: {exc}") from None
            found = [r for r in intent.reservations if r.id == data["reservation"]]
            if not found:
                raise web.HTTPError(404, f"no reservation {data['reservation'][:40]!r}")
            r = found[0]
            if not r.prestart or not r.holds(time.time()):
                raise web.HTTPError(409, f"reservation {r.id} is not in its pre-start or its session now")
            user = self.find_user(data["user"])
            if user is None or r.course not in {g.name for g in user.groups}:
                raise web.HTTPError(409, f"{data['user'][:80]!r} is not a member of course {r.course!r}")
            try:
                text = await asyncio.to_thread(self.profiles_file.read_text)
                profile = profiles.course_profile(profiles.load_profiles(text, "-", 0, 0), r.course)
            except (OSError, ValueError):
                profile = None
            if profile is None:
                raise web.HTTPError(409, f"no profile in the profiles file names course {r.course!r}")
            spawner = user.spawners[""]
            if spawner.active or spawner.pending:
                raise web.HTTPError(409, f"{user.name}'s server is already running or starting")
            self.log.info("pre-start: starting %s's server (profile %s) for reservation %s of %s (by %s)",
                          user.name, profile.slug, r.id, r.course, self.current_user.name)
            spawner.started_ahead = True  # its warm kernel starts with it (GPUDockerSpawner.warm_env)
            await self.spawn_single_user(user, "", options={"profile": profile.slug})
            ready = spawner.ready
            self.set_status(201 if ready else 202)
            self.write(json.dumps({"status": 201 if ready else 202, "message": "started" if ready else "starting",
                                   "profile": profile.slug}))

    return Handler
