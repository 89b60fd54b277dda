"""The GPU console service: a web page and a JSON REST API for hub admins.

JupyterHub starts it (``python -m hub.console.app``, see hub/configure.py ``configure_console``)
and routes ``/services/gpu-console/`` to it. Every request is authenticated with the hub
(HubOAuth: the browser's cookie, or ``Authorization: token <API token>``) and allowed only with
the scope ``access:services!service=gpu-console``, which JupyterHub's admin role has and normal
users do not: the API answers 403 with JSON, the page with a page saying so.

API (JSON in and out, errors ``{"status", "message"}``; hub/console/openapi.yaml):
    GET    api/gpus               the GPU table: state, holder, usage, last hour's samples
    POST   api/pins               {"user", "gpu"}          pin a user to a GPU
    DELETE api/pins/<user>                                 unpin
    POST   api/drained            {"gpu"}                  drain a GPU
    DELETE api/drained/<uuid>                              undrain
    POST   api/free               {"gpu"} or {"user"[, "server"]}   stop the holder's server
    GET    api/access / PUT api/access {"users", "groups"} who may use GPUs ([] and []: everyone)
    GET    api/audit?limit=N      the audit log, newest first
    GET    api/names              users and groups, for the page's forms
  teaching labs (hub/console/courses.py):
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

import asyncio
import json
import logging
import os
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import PeriodicCallback

from hub.console.core import AuditLog, Console, ConsoleError, HubAPI, parse_object
from hub.console.courses import CourseDesk
from hub.console.usage import UsageSampler

HERE = Path(__file__).parent
log = logging.getLogger("gpu-console")

SERVICE_NAME = "gpu-console"
MAX_BODY = 64 * 1024
MAX_ROSTER_BODY = 2 * 1024 * 1024  # a roster of thousands of rows, JSON-escaped


# ---- the hub's REST API with the service's own token --------------------------------------

class HubClient(HubAPI):
    def __init__(self, api_url: str, token: str, http: AsyncHTTPClient | None = None):
        self.api_url, self.token = api_url.rstrip("/"), token
        self._http = http

    @property
    def http(self) -> AsyncHTTPClient:
        if self._http is None:  # created on the running loop
            self._http = AsyncHTTPClient()
        return self._http

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        req = HTTPRequest(f"{self.api_url}{path}", method=method, request_timeout=30,
                          headers={"Authorization": f"token {self.token}"},
                          body=json.dumps(body) if body is not None else None,
                          allow_nonstandard_methods=True)
        try:
            resp = await self.http.fetch(req, raise_error=False)
        except Exception as exc:  # noqa: BLE001 - connection refused, timeout, ...
            raise ConsoleError(502, f"cannot reach the hub's API: {exc}") from None
        body = resp.body or b""
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if resp.code >= 500 or resp.code == 599:
            raise ConsoleError(502, f"the hub's API answered {resp.code} to {method} {path}")
        if resp.code == 403:
            raise ConsoleError(502, f"the console's own token may not {method} {path} (its role lacks a scope)")
        return resp.code, data

    async def user(self, name: str) -> dict | None:
        code, data = await self._request("GET", f"/users/{quote(name, safe='')}")
        return data if code == 200 and isinstance(data, dict) else None

    async def group_exists(self, name: str) -> bool:
        code, _ = await self._request("GET", f"/groups/{quote(name, safe='')}")
        return code == 200

    async def _all(self, path: str) -> list[dict]:
        items, offset, limit = [], 0, 200
        while offset < 10_000:
            sep = "&" if "?" in path else "?"
            code, data = await self._request("GET", f"{path}{sep}offset={offset}&limit={limit}")
            page = data if isinstance(data, list) else (data or {}).get("items", [])
            items += page
            if code != 200 or len(page) < limit:
                break
            offset += limit
        return items

    async def user_names(self) -> list[str]:
        return sorted(u["name"] for u in await self._all("/users"))

    async def group_names(self) -> list[str]:
        return sorted(g["name"] for g in await self._all("/groups"))

    async def active_servers(self) -> dict[tuple[str, str], dict]:
        servers = {}
        for user in await self._all("/users?state=active"):
            for name, server in (user.get("servers") or {}).items():
                servers[(user["name"], name)] = server
        return servers

    async def stop_server(self, user: str, server: str) -> tuple[int, str]:
        path = f"/users/{quote(user, safe='')}/server"
        if server:
            path = f"/users/{quote(user, safe='')}/servers/{quote(server, safe='')}"
        code, data = await self._request("DELETE", path)
        return code, (data or {}).get("message", "") if isinstance(data, dict) else ""

    async def _change(self, method: str, path: str, body: Any, ok: tuple[int, ...], what: str) -> Any:
        code, data = await self._request(method, path, body)
        if code not in ok:
            message = data.get("message") if isinstance(data, dict) else ""
            raise ConsoleError(502, f"the hub refused to {what} ({code}: {message or 'no message'}); "
                                    "import the roster again to finish")
        return data

    async def group_models(self) -> list[dict]:
        return await self._all("/groups")

    async def create_users(self, names: list[str]) -> None:
        for i in range(0, len(names), 200):  # the hub creates them in one transaction per call
            await self._change("POST", "/users", {"usernames": names[i:i + 200]}, (201,),
                               f"create users {', '.join(names[i:i + 3])}…")

    async def create_group(self, name: str) -> None:
        await self._change("POST", f"/groups/{quote(name, safe='')}", {}, (201, 409), f"create group {name}")

    async def add_group_members(self, group: str, users: list[str]) -> None:
        await self._change("POST", f"/groups/{quote(group, safe='')}/users", {"users": users}, (200,),
                           f"add members to {group}")

    async def remove_group_members(self, group: str, users: list[str]) -> None:
        await self._change("DELETE", f"/groups/{quote(group, safe='')}/users", {"users": users}, (200,),
                           f"remove members from {group}")

    async def group_properties(self, group: str) -> dict:
        code, data = await self._request("GET", f"/groups/{quote(group, safe='')}")
        return (data or {}).get("properties") or {} if code == 200 and isinstance(data, dict) else {}

    async def set_group_properties(self, group: str, properties: dict) -> None:
        await self._change("PUT", f"/groups/{quote(group, safe='')}/properties", properties, (200,),
                           f"set the properties of {group}")


# ---- the engine, through docker-py off the event loop -------------------------------------

class DockerCaller:
    """``await docker("containers", ...)``: docker-py's low-level API on a small thread pool."""

    def __init__(self, client: Any = None, threads: int = 4):
        if client is None:
            import docker
            client = docker.APIClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
                                      version="auto", timeout=30)
        self.client = client
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="console-docker")

    def __call__(self, method: str, *args: Any, **kwargs: Any):
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self.executor, partial(getattr(self.client, method), *args, **kwargs))


# ---- authentication ------------------------------------------------------------------------

class HubAuthenticator:
    """Who is asking, through the hub (HubOAuth); only those with the service's access scope."""

    async def identify(self, handler: BaseHandler) -> tuple[dict | None, bool]:
        from jupyterhub.services.auth import UserNotAllowed

        model = await handler.hub_auth.get_user(handler, sync=False)
        if model is None:
            return None, False
        try:
            return handler.check_hub_user(dict(model)), True
        except UserNotAllowed:
            return model, False

    def has_session_cookie(self, handler: BaseHandler) -> bool:
        return bool(handler.get_cookie(handler.hub_auth.cookie_name))


def _hub_oauthenticated():
    from jupyterhub.services.auth import HubOAuthenticated
    return HubOAuthenticated


class BaseHandler(_hub_oauthenticated(), web.RequestHandler):
    @property
    def console(self) -> Console:
        return self.settings["console"]

    @property
    def desk(self) -> CourseDesk:
        return self.settings["desk"]

    @property
    def via(self) -> str:
        return "token" if getattr(self, "_token_authenticated", False) else "browser"

    @property
    def who(self) -> str:
        return self.current_user["name"]

    def hub_url(self, path: str = "") -> str:
        return f"{self.settings['hub_prefix']}{path}"

    _identified: dict | None = None

    def get_current_user(self):
        return self._identified  # set by prepare(): authenticated once, asynchronously

    async def prepare(self):
        model, allowed = await self.settings["authenticator"].identify(self)
        if model is None:
            return self.unauthenticated()
        if not allowed:
            return self.forbidden(model)
        self._identified = model

    def unauthenticated(self):
        raise NotImplementedError

    def forbidden(self, model: dict):
        raise NotImplementedError


class APIHandler(BaseHandler):
    def set_default_headers(self):
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def unauthenticated(self):
        if self.settings["authenticator"].has_session_cookie(self):
            # HubOAuth ignores a session cookie whose request lacks the page's XSRF token
            self.fail(403, "missing or wrong XSRF token (send the X-XSRFToken header the page "
                           "has); reload the console page")
        self.fail(401, "not logged in: send 'Authorization: token <token>' with an admin's API "
                       "token (the hub's Token page, /hub/token)")

    def forbidden(self, model: dict):
        self.fail(403, f"{model.get('kind', 'user')} {model.get('name')!r} may not use the GPU console: "
                       "it is for hub admins only")

    def fail(self, status: int, message: str):
        raise ConsoleError(status, message)

    def body(self) -> dict:
        if len(self.request.body) > MAX_BODY:
            raise ConsoleError(413, f"the request body is larger than {MAX_BODY} bytes")
        return parse_object(self.request.body)

    def optional_body(self) -> dict:
        return self.body() if self.request.body.strip() else {}

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ConsoleError):
            if self._finished:
                return
            self.clear()
            self.set_default_headers()
            self.set_status(e.status)
            self.finish(json.dumps({"status": e.status, "message": e.message, **e.extra}))
            return
        super()._handle_request_exception(e)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = self._reason
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code >= 500:
            message = "internal error in the GPU console: see the hub's log"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def get_login_url(self):  # no redirects for the API
        raise ConsoleError(401, "not logged in")


class GPUsHandler(APIHandler):
    async def get(self):
        self.reply(await self.console.state(fresh=self.get_argument("fresh", "") in ("1", "true")))


class PinsHandler(APIHandler):
    async def get(self):
        self.reply({"pins": (await self.console.state())["pins"]})

    async def post(self):
        self.reply(await self.console.pin(self.body(), self.who, self.via))


class PinHandler(APIHandler):
    async def delete(self, user: str):
        self.reply(await self.console.unpin(user, self.optional_body(), self.who, self.via))


class DrainedHandler(APIHandler):
    async def get(self):
        gpus = (await self.console.state())["gpus"]
        self.reply({"drained": [g["uuid"] for g in gpus if g["drained"]]})

    async def post(self):
        self.reply(await self.console.drain(self.body(), self.who, self.via))


class DrainHandler(APIHandler):
    async def delete(self, uuid: str):
        self.reply(await self.console.undrain(uuid, self.optional_body(), self.who, self.via))


class FreeHandler(APIHandler):
    async def post(self):
        result = await self.console.free(self.body(), self.who, self.via)
        self.reply(result, status=200 if result["result"] == "stopped" else 202)


class AccessHandler(APIHandler):
    async def get(self):
        self.reply((await self.console.state())["access"])

    async def put(self):
        self.reply(await self.console.set_access(self.body(), self.who, self.via))


class AuditHandler(APIHandler):
    async def get(self):
        raw = self.get_argument("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise ConsoleError(400, f"limit={raw!r}: use a whole number from 1 to 1000")
        self.reply({"entries": self.console.audit_tail(int(raw))})


class NamesHandler(APIHandler):
    async def get(self):
        self.reply(await self.console.names())


class CoursesHandler(APIHandler):
    async def get(self):
        self.reply(await self.desk.listing())


class RosterHandler(APIHandler):
    async def post(self):
        if len(self.request.body) > MAX_ROSTER_BODY:
            raise ConsoleError(413, f"the request body is larger than {MAX_ROSTER_BODY} bytes")
        self.reply(await self.desk.import_roster(parse_object(self.request.body), self.who, self.via))


class CourseHandler(APIHandler):
    async def patch(self, course: str):
        self.reply(await self.desk.update(course, self.body(), self.who, self.via))


class CourseStopHandler(APIHandler):
    async def post(self, course: str):
        self.reply(await self.desk.stop_all(course, self.optional_body(), self.who, self.via))


class CourseResetHandler(APIHandler):
    async def post(self, course: str):
        self.reply(await self.desk.reset(course, self.body(), self.who, self.via))


class ReservationsHandler(APIHandler):
    async def get(self):
        self.reply({"reservations": (await self.console.state())["reservations"]})

    async def post(self):
        self.reply(await self.desk.reserve(self.body(), self.who, self.via), status=201)


class ReservationHandler(APIHandler):
    async def delete(self, rid: str):
        self.reply(await self.desk.cancel(rid, self.optional_body(), self.who, self.via))


class SharedHandler(APIHandler):
    async def get(self):
        self.reply({"shared": (await self.console.state())["shared"]})

    async def put(self):
        self.reply(await self.desk.share(self.body(), self.who, self.via))


class ShareHandler(APIHandler):
    async def delete(self, uuid: str):
        self.reply(await self.desk.unshare(uuid, self.optional_body(), self.who, self.via))


class NotFoundAPIHandler(APIHandler):
    async def prepare(self):
        await super().prepare()
        raise ConsoleError(404, f"no such API endpoint: {self.request.method} {self.request.path}")


class OpenAPIHandler(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.finish((HERE / "openapi.yaml").read_bytes())


class PageHandler(BaseHandler):
    def unauthenticated(self):
        self.redirect(self.get_login_url())
        self._page_done = True

    def forbidden(self, model: dict):
        self.set_status(403)
        self.render("error.html", status=403, title="Admins only",
                    message=(f"You are logged in as {model.get('name')}, and the GPU console is "
                             "for the hub's admins only. Ask an admin if you need a GPU "
                             "assigned, or go back to your server."),
                    user_name=model.get("name"), **self.template_vars())
        self._page_done = True

    def template_vars(self) -> dict:
        return {"prefix": self.settings["service_prefix"], "hub_prefix": self.settings["hub_prefix"],
                "base_url": self.settings["base_url"]}

    async def get(self):
        if getattr(self, "_page_done", False):
            return
        xsrf = self.xsrf_token
        self.render("console.html", user_name=self.who,
                    xsrf_token_value=xsrf.decode() if isinstance(xsrf, bytes) else xsrf,
                    **self.template_vars())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = exc.message if isinstance(exc, ConsoleError) else self._reason
        self.render("error.html", status=status_code, title=self._reason, message=message,
                    user_name=None, **self.template_vars())


# ---- wiring --------------------------------------------------------------------------------

def make_app(console: Console, service_prefix: str = "/services/gpu-console/", base_url: str = "/",
             authenticator: Any = None, cookie_secret: bytes | None = None, extra_handlers=()) -> web.Application:
    from jupyterhub.services.auth import HubOAuthCallbackHandler

    p = service_prefix
    api = f"{p}api/"
    handlers = [
        (p, PageHandler),
        (f"{p}oauth_callback", HubOAuthCallbackHandler),
        (f"{api}gpus", GPUsHandler),
        (f"{api}pins", PinsHandler),
        (f"{api}pins/([^/]+)", PinHandler),
        (f"{api}drained", DrainedHandler),
        (f"{api}drained/([^/]+)", DrainHandler),
        (f"{api}free", FreeHandler),
        (f"{api}access", AccessHandler),
        (f"{api}audit", AuditHandler),
        (f"{api}names", NamesHandler),
        (f"{api}courses", CoursesHandler),
        (f"{api}courses/roster", RosterHandler),
        (f"{api}courses/([^/]+)", CourseHandler),
        (f"{api}courses/([^/]+)/stop", CourseStopHandler),
        (f"{api}courses/([^/]+)/reset", CourseResetHandler),
        (f"{api}reservations", ReservationsHandler),
        (f"{api}reservations/([^/]+)", ReservationHandler),
        (f"{api}shared", SharedHandler),
        (f"{api}shared/([^/]+)", ShareHandler),
        (f"{api}openapi.yaml", OpenAPIHandler),
        *extra_handlers,
        (f"{api}.*", NotFoundAPIHandler),
    ]
    return web.Application(
        handlers,
        console=console,
        desk=CourseDesk(console),
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
                  sampler: UsageSampler | None = None) -> Console:
    """The console as the service runs it, from the environment configure_console sets."""
    from hub.gpus.inventory import discover
    from hub.gpus.manager import GPUManager

    static_file = env.get("GPUHUB_GPU_INVENTORY_FILE", "")
    static = Path(static_file).read_text() if static_file else None
    cdi_dirs = [d for d in env.get("GPUHUB_GPU_CDI_DIRS", "/etc/cdi:/var/run/cdi").split(":") if d]
    gpus, source = discover(static, cdi_dirs)
    manager = GPUManager(gpus, source, env.get("GPUHUB_GPU_REQUEST_STYLE", "auto"),
                         env.get("GPUHUB_GPU_INTENT_FILE", "/srv/jupyterhub/state/gpu-intent.json"),
                         env.get("GPUHUB_LABEL_PREFIX", "gpuhub"))
    hub = hub or HubClient(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"])
    return Console(manager, docker or DockerCaller(), hub,
                   sampler or UsageSampler(interval=float(env.get("GPUHUB_USAGE_INTERVAL", "10"))),
                   AuditLog(env.get("GPUHUB_GPU_AUDIT_FILE", "/srv/jupyterhub/state/gpu-audit.jsonl")),
                   instance=env.get("HUB_NAME_PREFIX", "gpuhub"),
                   base_url=env.get("JUPYTERHUB_BASE_URL", "/"))


def main() -> None:
    logging.basicConfig(level=os.environ.get("GPUHUB_CONSOLE_LOG_LEVEL", "INFO"),
                        format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")
    env = dict(os.environ)
    console = build_console(env)
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
    url = urlsplit(env.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    sampler = console.sampler

    async def sample():
        await asyncio.to_thread(sampler.sample)

    async def run():
        app = make_app(console, prefix, env.get("JUPYTERHUB_BASE_URL", "/"))
        # The proxy reaches the service by the hub's name on the compose network: listen on all
        # of the container's addresses (every request is still authenticated with the hub).
        app.listen(url.port or 80, address=env.get("GPUHUB_CONSOLE_BIND", "0.0.0.0"), xheaders=True)
        log.info("GPU console at %s (%s), %d GPUs from %s; usage every %gs", prefix, url.geturl(),
                 len(console.manager.inventory), console.manager.source, sampler.interval)
        await sample()
        if sampler.source != "nvml":
            log.info("GPU usage: n/a (%s)", sampler.reason)
        PeriodicCallback(sample, sampler.interval * 1000).start()
        desk = app.settings["desk"]

        async def course_schedule():
            # Courses' max session lengths; reservations long over are forgotten (audited).
            try:
                for stopped in await desk.enforce_session_limits():
                    log.info("max session: stopped %(user)s's server (course %(course)s)", stopped)
                await desk.prune_reservations()
            except Exception:  # noqa: BLE001 - the hub may be restarting: try again next time
                log.exception("course schedule")

        PeriodicCallback(course_schedule, float(env.get("GPUHUB_COURSE_CHECK_INTERVAL", "60")) * 1000).start()
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
