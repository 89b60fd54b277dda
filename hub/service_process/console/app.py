"""The GPU console service's main: wiring (make_app, build_console) and ``main``.

The service is a web page and a JSON REST API for hub admins (docs/console.md).

JupyterHub starts it (``python -m hub.service_process.console.app``, see hub/hub_process/config/configure.py ``configure_console``)
and routes ``/services/gpu-console/`` to it. The same process runs the gpu-reclaim service
(hub/service_process/reclaim/service.py) with gpu-reclaim's own token, URL and app (``main``).

Every request is authenticated with the hub (HubOAuth: the browser's cookie, or
``Authorization: token <API token>``) and allowed only with the scope
``access:services!service=gpu-console``, which JupyterHub's admin role has and normal users do
not: the API answers 403 with JSON, the page with a page saying so.

API (JSON in and out, errors ``{"status", "message"}``; hub/service_process/console/openapi.yaml):
    GET    api/gpus               the GPU table: state, holder, usage, last hour's samples
    POST   api/pins               {"user", "gpu"}          pin a user to a GPU
    DELETE api/pins/<user>                                 unpin
    POST   api/drained            {"gpu"}                  drain a GPU
    DELETE api/drained/<uuid>                              undrain
    POST   api/free               {"gpu"} or {"user"[, "server"]}   stop the holder's server
    GET    api/access / PUT api/access {"users", "groups"} who may use GPUs ([] and []: everyone)
    GET    api/audit?limit=N      the audit log, newest first
    GET    api/names              users and groups, for the page's forms
  teaching labs (hub/service_process/console/course_actions.py):
    GET    api/courses            courses: teachers, TAs, students, settings, running servers
    POST   api/courses/roster     {"roster": CSV or YAML text[, "dry_run", "skip_bad_rows"]}
    PATCH  api/courses/<course>   {"title", "max_session_hours", "materials"}
    POST   api/courses/<course>/stop   [{"include_staff": true}]   stop its students' servers
    POST   api/courses/<course>/reset  {"user"}   fresh container next start, files untouched
    GET    api/reservations / POST {"course", "gpus": N or [uuid], "start", "end"}
    DELETE api/reservations/<id>
    PUT    api/shared             {"gpu", "capacity"}   up to capacity servers share a GPU
    DELETE api/shared/<uuid>                            exclusive again
"""
from __future__ import annotations

if __name__ == "__main__":  # the service's own process: before handlers.py imports HubOAuth
    from hub.common.lean_imports import defer_hub_database
    defer_hub_database()

import asyncio
import logging
import os
import secrets
import threading
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from tornado import web

from hub.settings.gpu_settings import GPUSettings
from hub.settings.table import read
from hub.common.audit import AuditLog
from hub.service_process.console.auth import HubAuthenticator
from hub.service_process.console.course_actions import CourseDesk
from hub.common.engine import DockerCaller, engine_client
from hub.service_process.console.gpu_actions import GPUDesk
from hub.service_process.console.handlers import MetricsHandler, PageHandler, api_routes, server_limits
from hub.common.hubapi import HubAPI, HubClient
from hub.service_process.console.state import Console
from hub.usage import metrics as usage_metrics
from hub.usage.reconcile import UsageKeeper
from hub.service_process.console.usage_api import UsageDesk
from hub.gpus.parked import FILE as PARKED_FILE
from hub.gpus.prestart import FILE as PRESTART_FILE
from hub.gpus.activity import ActivitySampler
from hub.common.services import every
from hub.gpus.inventory import discover
from hub.gpus.manager import GPUManager, SwarmGPUManager
from hub.usage import quota
from hub.usage.reconcile import SwarmUsageKeeper, docker_events
from hub.usage.store import UsageStore
from hub.usage.reconcile import watch_events
from hub.settings import RECLAIM_TOKEN_ENV
from hub.service_process.reclaim import service as reclaim
from hub.common.services import serve

HERE = Path(__file__).parent
log = logging.getLogger("gpu-console")

SERVICE_NAME = "gpu-console"


def make_app(console: Console, service_prefix: str = "/services/gpu-console/", base_url: str = "/",
             authenticator: Any = None, cookie_secret: bytes | None = None,
             roster_max_bytes: int = GPUSettings.roster_max_bytes, prestart: dict | None = None) -> web.Application:
    """The console's tornado app; serve it with ``app.settings["server_limits"]`` as the HTTP
    server's options (its body limits)."""
    # after defer_hub_database() (hub/common/lean_imports.py): no hub database layer in this process
    from jupyterhub.services.auth import HubOAuthCallbackHandler

    p = service_prefix
    handlers = [
        (p, PageHandler),
        (f"{p}oauth_callback", HubOAuthCallbackHandler),
        (f"{p}metrics", MetricsHandler),
        *api_routes(f"{p}api/"),
    ]
    keeper = getattr(console, "usage", None)
    return web.Application(
        handlers,
        console=console,
        gpu_desk=GPUDesk(console),
        course_desk=CourseDesk(console, roster_max_bytes, **(prestart or {})),
        roster_max_bytes=roster_max_bytes,
        server_limits=server_limits(roster_max_bytes),
        usage_keeper=keeper,
        usage_desk=UsageDesk(console, keeper) if keeper is not None else None,
        authenticator=authenticator or HubAuthenticator(),
        service_prefix=p,
        base_url=base_url,
        hub_prefix=f"{base_url}hub/",
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        static_url_prefix=f"{p}static/",
        cookie_secret=cookie_secret or secrets.token_bytes(32),
        xsrf_cookies=False,  # HubOAuth checks XSRF on cookie-authenticated requests itself
    )


def build_console(env: dict[str, str], hub: HubAPI | None = None, docker: Any = None,
                  sampler: ActivitySampler | None = None, events: Any = None) -> Console:
    """The console as the service runs it, from the environment configure_console sets."""

    settings = GPUSettings.from_env(env)
    if settings.backend == "swarm":  # the swarm's GPUs, re-read from its nodes at each view
        manager = SwarmGPUManager(settings.intent_file, settings.label_prefix, constraints=settings.swarm_constraints)
    else:
        static = Path(settings.inventory_file).read_text() if settings.inventory_file else None
        gpus, source = discover(static, list(settings.cdi_dirs))
        # the console never creates containers: the request style is the spawner's business
        manager = GPUManager(gpus, source, settings.request_style, settings.intent_file, settings.label_prefix)
    hub = hub or HubClient(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"])
    docker = docker or DockerCaller()
    console = Console(manager, docker, hub, sampler or ActivitySampler(interval=settings.usage_interval),
                      AuditLog(settings.audit_file), instance=settings.name_prefix,
                      base_url=env.get("JUPYTERHUB_BASE_URL", "/"))
    console.usage = usage_keeper(console, settings, events)
    return console


def usage_keeper(console: Console, settings: GPUSettings, events: Any = None) -> UsageKeeper:
    """The usage store and its sync (hub/usage/): held time from the engine, used time from the
    console's sampler; quota stops audited like any admin action."""

    async def audit(record: dict) -> None:
        detail = record.pop("detail")
        await console.commit(None, record, "", detail, "gpu-console", "quota")

    default = quota.parse_spec(settings.quota_default) if settings.quota_default else None
    keeper = UsageKeeper
    if settings.backend == "swarm":  # users' services on the swarm's nodes: their tasks, no container events
        keeper, events = SwarmUsageKeeper, _no_events
    elif events is None:
        client = getattr(console.docker, "client", None)
        events = docker_events(client) if client is not None else _no_events
    return keeper(UsageStore(settings.usage_db), lambda: console.manager.inventory, console.docker,
                  events, console.hub, settings.name_prefix,
                  settings.label_prefix, util=console.sampler, default_quota=default, audit=audit,
                  parked_file=Path(settings.intent_file).with_name(PARKED_FILE),  # parked time is not GPU time
                  prestart_file=Path(settings.intent_file).with_name(PRESTART_FILE))  # nor unclaimed pre-starts


async def _no_events(since: float, until: float, filters: dict) -> list:
    return []


PRESTART_CHECK_INTERVAL = 10.0  # seconds: a pre-start window opens or closes at most this late (reads two small files)
EVENT_SYNC_DELAY = 1.0  # seconds from a server's start or die event to the sync it brings


def watch_engine_events(console: Console, usage_sync: Callable[[], Awaitable[None]]) -> threading.Event | None:
    """A sync ``EVENT_SYNC_DELAY`` after this hub's containers start or die (one for a burst),
    from a thread that streams the engine's events (hub.usage.reconcile.watch_events) on a
    docker-py client of its own. Returns the thread's stop flag (None without an engine client)."""

    if getattr(console.docker, "client", None) is None:  # a stand-in engine (tests)
        return None
    loop = asyncio.get_running_loop()
    scheduled: list[int] = []  # events waiting for the sync due soon (one sync for a burst)
    running: set = set()  # syncs under way (UsageKeeper.sync serialises them)

    def sync() -> None:
        log.info("usage: sync after %d engine event(s) of this hub's containers", scheduled[0])
        scheduled.clear()
        task = loop.create_task(usage_sync())
        running.add(task)
        task.add_done_callback(running.discard)

    def soon() -> None:  # on the event loop
        if scheduled:
            scheduled[0] += 1
        else:
            scheduled.append(1)
            loop.call_later(EVENT_SYNC_DELAY, sync)

    stop = threading.Event()
    # A client of its own: its stream holds a connection for as long as it runs.
    threading.Thread(target=watch_events, args=(engine_client, console.usage.event_filter,
                                                lambda _event: loop.call_soon_threadsafe(soon), stop),
                     name="usage-events", daemon=True).start()
    return stop


async def start(console: Console, settings: GPUSettings, env: dict[str, str], samples: bool = True) -> None:
    """The console's component: its page and API, then its periodic work (each guarded:
    hub.common.services.every). ``samples`` false: another component (gpu-reclaim) samples the GPUs
    into the console's sampler."""
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
    url = urlsplit(env.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    sampler = console.sampler
    app = make_app(console, prefix, env.get("JUPYTERHUB_BASE_URL", "/"), roster_max_bytes=settings.roster_max_bytes,
                   prestart={"prestart_minutes": read(env, "RESERVATION_PRESTART_MINUTES"),
                             "prestart_grace_minutes": read(env, "RESERVATION_PRESTART_GRACE_MINUTES"),
                             "profiles_file": settings.profiles_file})
    # The proxy reaches the service by the hub's name on the compose network: listen on all
    # of the container's addresses (every request is still authenticated with the hub).
    app.listen(url.port or 80, address=settings.bind, xheaders=True, **app.settings["server_limits"])
    log.info("GPU console at %s (%s), %d GPUs from %s; usage every %gs", prefix, url.geturl(),
             len(console.manager.inventory), console.manager.source, sampler.interval)

    async def sample():
        await asyncio.to_thread(sampler.sample)

    if samples:
        await every(sampler.interval, sample, "GPU usage sample", log)
        if sampler.source != "nvml":
            log.info("GPU usage: n/a (%s)", sampler.reason)
    desk = app.settings["course_desk"]

    async def course_schedule():
        # Courses' max session lengths; reservations long over are forgotten (audited).
        for stopped in await desk.enforce_session_limits():
            log.info("max session: stopped %(user)s's server (course %(course)s)", stopped)
        await desk.prune_reservations()

    await every(settings.course_check_interval, course_schedule, "course schedule", log, now=False)

    async def prestart_round():
        # Reservations' pre-starts due now, and unused pre-started servers past their window
        done = await desk.prestart_round()
        if done["started"] or done["stopped"]:
            log.info("pre-start: reservations %s started, %d unused servers stopped", done["started"], len(done["stopped"]))

    await every(PRESTART_CHECK_INTERVAL, prestart_round, "reservation pre-start", log, now=False)

    async def usage_sync():
        # GPU-seconds from the engine into the store, then quotas on running servers.
        await console.usage.sync()
        await console.usage.enforce()
        await asyncio.to_thread(usage_metrics.warm, console.usage)  # scrapes find them ready

    watch_engine_events(console, await every(settings.usage_sync_interval, usage_sync, "usage sync", log))


def components(env: dict[str, str], hub: HubAPI | None = None, docker: Any = None, reclaim_hub: Any = None):
    """The console, gpu-reclaim where configure_reclaim handed the console its token (else None),
    and their starts for hub.common.services.serve."""

    settings = GPUSettings.from_env(env)
    if not read(env, RECLAIM_TOKEN_ENV):
        console = build_console(env, hub=hub, docker=docker)
        return console, None, [partial(start, console, settings, env)]

    reclaim_env = reclaim.env_in_console(env)
    reclaimer = reclaim.build(reclaim_env, docker=docker, hub=reclaim_hub)
    # One reading of the GPUs for both: gpu-reclaim's rounds sample (with each reading's
    # holder), and the console's rows, sparklines and used GPU-hours read the same sampler.
    console = build_console(env, hub=hub, docker=docker, sampler=reclaimer.sampler)
    return console, reclaimer, [partial(start, console, settings, env, samples=False),
                                partial(reclaim.start, reclaimer, reclaim_env)]


def main() -> None:
    """The service's process: the console, and gpu-reclaim beside it where configure_reclaim
    handed the console gpu-reclaim's token (one process for both: docs/performance.md, "Memory
    of the hub side"); each keeps its own HTTP app, hub token and role."""

    env = dict(os.environ)
    GPUSettings.from_env(env).configure_logging()
    serve(*components(env)[2])

if __name__ == "__main__":
    main()
