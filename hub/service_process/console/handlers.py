"""The console's web handlers: the page, the JSON API (one handler per path of openapi.yaml,
its request bodies checked against the spec) and their base classes (hub login, errors as JSON).
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import re
from pathlib import Path
from typing import Any

from tornado import web

from hub.service_process.console import openapi
from hub.service_process.console.course_actions import CourseDesk
from hub.common.errors import ConsoleError, shown
from hub.service_process.console.gpu_actions import GPUDesk
from hub.service_process.console.state import Console
from hub import memory
from hub.gpus import doctor
from hub.settings import HOST_MEMORY_STATE_FILE
from hub.settings.table import read
from hub.service_process.console.usage_api import to_csv
from hub.usage.metrics import CONTENT_TYPE, SCOPE, exposition

MAX_BODY = 64 * 1024  # every route but the roster's: the largest valid body is a few KiB


def roster_body_limit(roster_max_bytes: int) -> int:
    """The roster route's body limit: the roster's text JSON-escaped (quotes, and non-ASCII
    as \\uXXXX, about doubles it) plus the other fields."""
    return 2 * roster_max_bytes + MAX_BODY


def server_limits(roster_max_bytes: int) -> dict[str, int]:
    """The HTTP server's own limits (HTTPServer's max_body_size and max_buffer_size, 100 MB by
    default): no body larger than the largest route's is read, on any route, authenticated or
    not (tornado answers a bare 400 and closes). The API's routes refuse smaller ones
    themselves, with a 413 in JSON, before authentication (APIHandler.prepare)."""
    largest = roster_body_limit(roster_max_bytes)
    return {"max_body_size": largest, "max_buffer_size": largest + MAX_BODY}


def whole_number(raw: str, name: str, low: int, high: int) -> int:
    """A query parameter as a whole number from low to high, or a 400 naming it. ASCII digits
    only: str.isdigit() also accepts '²' and other digits int() refuses, and a number of
    thousands of digits makes int() raise (Python's limit on integer strings)."""
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not low <= int(raw) <= high:
        raise ConsoleError(400, f"{name}={shown(raw)}: use a whole number from {low} to {high}")
    return int(raw)


def _hub_oauthenticated():
    # after defer_hub_database() (hub/common/lean_imports.py): no hub database layer in this process
    from jupyterhub.services.auth import HubOAuthenticated
    return HubOAuthenticated


class BaseHandler(_hub_oauthenticated(), web.RequestHandler):
    """Every request is authenticated once, in ``prepare``, by the app's authenticator."""

    def set_default_headers(self):
        # No page may frame the console: without per-user origins a user's server shares its
        # origin, and a frame would hand that page the admin's console (docs/security.md#origins).
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")

    @property
    def console(self) -> Console:
        return self.settings["console"]

    @property
    def gpu_desk(self) -> GPUDesk:
        return self.settings["gpu_desk"]

    @property
    def course_desk(self) -> CourseDesk:
        return self.settings["course_desk"]

    @property
    def via(self) -> str:
        return "token" if getattr(self, "_token_authenticated", False) else "browser"

    @property
    def who(self) -> str:
        return self.current_user["name"]

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


@web.stream_request_body
class APIHandler(BaseHandler):
    """A path of the API: ``spec_path`` is its template in openapi.yaml, whose operations' schemas
    check the request body and path parameters (``body()``).

    The body is streamed (``data_received``) so that ``prepare`` runs before any of it is read:
    a body over the route's limit (``body_limit``) is refused there with a 413, before
    authentication. One announced with a Content-Length up to the server's own limit is read
    and dropped first, so that the client, still sending it, reads the answer (a server that
    closes on unread data makes the client's kernel drop it); a larger one is answered at once
    and the connection closed. A chunked body is cut at the limit by the connection itself."""
    spec_path = ""
    _refusal: ConsoleError | None = None  # a body too large, answered once it is drained

    def body_limit(self) -> int:
        return MAX_BODY

    async def prepare(self):
        self._chunks: list[bytes] = []
        limit = self.body_limit()
        self.request.connection.set_max_body_size(limit)
        length = self.request.headers.get("Content-Length", "0").strip()
        if re.fullmatch(r"[0-9]{1,18}", length) and int(length) > limit:
            refusal = ConsoleError(413, f"the request body ({int(length)} bytes) is larger than this request's limit "
                                        f"of {limit} bytes" + self.limit_hint())
            if int(length) > self.settings["server_limits"]["max_body_size"]:
                raise refusal
            self.request.connection.set_max_body_size(int(length))
            self._refusal = refusal

            def refuse(*_args):  # in place of the method tornado calls once the body is in
                raise refusal
            setattr(self, self.request.method.lower(), refuse)
            return
        try:
            await super().prepare()
        except (web.HTTPError, ConsoleError) as exc:
            # Answered once the (bounded) body is in, as above: raised here, before tornado has read
            # the body, the answer closes the connection without saying so, and a proxy that
            # reuses it gets a reset (a 503 for the next request on it).
            def refuse_after_body(*_args, error=exc):  # (the name exc ends with the except block)
                raise error
            setattr(self, self.request.method.lower(), refuse_after_body)

    def data_received(self, chunk: bytes) -> None:
        if self._refusal is None:
            self._chunks.append(chunk)

    def limit_hint(self) -> str:
        return ""

    @property
    def request_body(self) -> bytes:
        return b"".join(self._chunks)

    def set_default_headers(self):
        super().set_default_headers()
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

    def body(self) -> dict[str, Any]:
        """The JSON body, then the path parameters, checked against this operation in the spec
        ({} for an optional body that was not sent); a 400 or 413 saying what is wrong."""
        raw = self.request_body
        if len(raw) > self.body_limit():  # a chunked body the connection let through to the limit
            raise ConsoleError(413, f"the request body is larger than this request's limit of {self.body_limit()} bytes")
        operation = openapi.operation(self.spec_path, self.request.method)
        body = operation.check_body(raw)
        operation.check_params(dict(zip(re.findall(r"\{([^}]+)\}", self.spec_path), self.path_args)))
        return body

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


# ---- GPUs ----------------------------------------------------------------------------------

class GPUsHandler(APIHandler):
    spec_path = "/gpus"

    async def get(self):
        self.reply(await self.console.state(fresh=self.get_argument("fresh", "") in ("1", "true")))


class PinsHandler(APIHandler):
    spec_path = "/pins"

    async def get(self):
        self.reply({"pins": (await self.console.state())["pins"]})

    async def post(self):
        self.reply(await self.gpu_desk.pin(self.body(), self.who, self.via))


class PinHandler(APIHandler):
    spec_path = "/pins/{user}"

    async def delete(self, user: str):
        self.reply(await self.gpu_desk.unpin(user, self.body(), self.who, self.via))


class DrainedHandler(APIHandler):
    spec_path = "/drained"

    async def get(self):
        gpus = (await self.console.state())["gpus"]
        self.reply({"drained": [g["uuid"] for g in gpus if g["drained"]]})

    async def post(self):
        self.reply(await self.gpu_desk.drain(self.body(), self.who, self.via))


class DrainHandler(APIHandler):
    spec_path = "/drained/{uuid}"

    async def delete(self, uuid: str):
        self.reply(await self.gpu_desk.undrain(uuid, self.body(), self.who, self.via))


class FreeHandler(APIHandler):
    spec_path = "/free"

    async def post(self):
        result = await self.gpu_desk.free(self.body(), self.who, self.via)
        self.reply(result, status=200 if result["result"] == "stopped" else 202)


class AccessHandler(APIHandler):
    spec_path = "/access"

    async def get(self):
        self.reply((await self.console.state())["access"])

    async def put(self):
        self.reply(await self.gpu_desk.set_access(self.body(), self.who, self.via))


class AuditHandler(APIHandler):
    spec_path = "/audit"

    async def get(self):
        limit = whole_number(self.get_argument("limit", "50"), "limit", 1, 1000)
        self.reply({"entries": self.console.audit_tail(limit)})


class HealthHandler(APIHandler):
    """The host's health (hub/gpus/health.py): the checks `gpuhub-gpus doctor` runs."""
    spec_path = "/health"

    async def get(self):
        client = getattr(self.console.docker, "client", None)
        result = (await asyncio.to_thread(doctor.from_env, dict(os.environ), client)).to_json()
        memory = await asyncio.to_thread(host_memory_check, dict(os.environ))
        if memory is not None:
            result["checks"].append(memory)
            if memory["status"] == "warn" and result["status"] == "ok":
                result["status"] = "warn"
        self.reply({**result, "time": time.time()})


def host_memory_check(env: dict) -> dict | None:
    """The host's memory and the hub's memory line (hub/memory.py), where the hub checks it."""
    if read(env, "HOST_MEMORY_WHEN_FULL") == "off" or read(env, "HUB_BACKEND") == "swarm":
        return None
    try:
        total, available = memory.parse_meminfo(Path(read(env, "HOST_MEMINFO_FILE")).read_text())
    except (OSError, ValueError):
        return None
    try:
        state = json.loads(Path(HOST_MEMORY_STATE_FILE).read_text())
    except (OSError, ValueError):
        state = {}
    return memory.check(total, available, state if isinstance(state, dict) else {}, read(env, "HOST_MEMORY_RESERVE"))


class NamesHandler(APIHandler):
    spec_path = "/names"

    async def get(self):
        self.reply(await self.console.names())


# ---- courses ---------------------------------------------------------------------------------

class CoursesHandler(APIHandler):
    spec_path = "/courses"

    async def get(self):
        self.reply(await self.course_desk.listing())


class RosterHandler(APIHandler):
    spec_path = "/courses/roster"

    def body_limit(self) -> int:
        return roster_body_limit(self.settings["roster_max_bytes"])

    def limit_hint(self) -> str:
        return (f": a roster may be up to {self.settings['roster_max_bytes']} bytes (CONSOLE_ROSTER_MAX_SIZE); "
                "split it by course")

    async def post(self):
        self.reply(await self.course_desk.import_roster(self.body(), self.who, self.via))


class CourseHandler(APIHandler):
    spec_path = "/courses/{course}"

    async def patch(self, course: str):
        self.reply(await self.course_desk.update(course, self.body(), self.who, self.via))


class CourseStopHandler(APIHandler):
    spec_path = "/courses/{course}/stop"

    async def post(self, course: str):
        self.reply(await self.course_desk.stop_all(course, self.body(), self.who, self.via))


class CourseResetHandler(APIHandler):
    spec_path = "/courses/{course}/reset"

    async def post(self, course: str):
        self.reply(await self.course_desk.reset(course, self.body(), self.who, self.via))


class ReservationsHandler(APIHandler):
    spec_path = "/reservations"

    async def get(self):
        self.reply({"reservations": (await self.console.state())["reservations"]})

    async def post(self):
        self.reply(await self.course_desk.reserve(self.body(), self.who, self.via), status=201)


class ReservationHandler(APIHandler):
    spec_path = "/reservations/{id}"

    async def delete(self, rid: str):
        self.reply(await self.course_desk.cancel(rid, self.body(), self.who, self.via))


class SharedHandler(APIHandler):
    spec_path = "/shared"

    async def get(self):
        self.reply({"shared": (await self.console.state())["shared"]})

    async def put(self):
        self.reply(await self.course_desk.share(self.body(), self.who, self.via))


class ShareHandler(APIHandler):
    spec_path = "/shared/{uuid}"

    async def delete(self, uuid: str):
        self.reply(await self.course_desk.unshare(uuid, self.body(), self.who, self.via))


# ---- GPU usage and quotas (hub/service_process/console/usage_api.py) ------------------------------------------

class _UsageHandler(APIHandler):
    @property
    def usage_desk(self):
        desk = self.settings.get("usage_desk")
        if desk is None:
            raise ConsoleError(503, "GPU usage is not recorded by this console (no usage store)")
        return desk


class UsageHandler(_UsageHandler):
    spec_path = "/usage"

    async def get(self):
        args = {k: self.get_argument(k) for k in ("since", "until", "by", "bucket", "user", "format")
                if self.get_argument(k, None) is not None}
        fmt = args.pop("format", "json")
        if fmt not in ("json", "csv"):
            raise ConsoleError(400, f"format={shown(fmt)}: use json or csv")
        data = await self.usage_desk.report(args)
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.finish(to_csv(data))
        else:
            self.reply(data)


class UserUsageHandler(_UsageHandler):
    spec_path = "/usage/users/{user}"

    async def get(self, user: str):
        self.body()  # checks the path parameter
        self.reply(await self.usage_desk.user_usage(user))


class QuotasHandler(_UsageHandler):
    spec_path = "/quotas"

    async def get(self):
        self.reply(await self.usage_desk.listing())

    async def put(self):
        self.reply(await self.usage_desk.set_quota(self.body(), self.who, self.via))


class QuotaHandler(_UsageHandler):
    spec_path = "/quotas/{scope}/{name}"

    async def delete(self, scope: str, name: str):
        self.reply(await self.usage_desk.delete_quota(scope, name, self.body(), self.who, self.via))


class MetricsHandler(BaseHandler):
    """Prometheus' scrape (hub/usage/metrics.py): a token with the scope
    ``custom:gpuhub-metrics:read`` (the hub's ``prometheus`` service has it and nothing more), or
    an admin's. Plain-text errors, as a scraper shows them."""

    async def prepare(self):
        model, allowed = await self.settings["authenticator"].identify(self)
        if model is None:
            raise web.HTTPError(401, "send 'Authorization: Bearer <token>' with a token that has the scope " + SCOPE)
        if not allowed and SCOPE not in (model.get("scopes") or []):
            raise web.HTTPError(403, f"{model.get('kind', 'user')} {model.get('name')!r} lacks the scope {SCOPE}")
        self._identified = model

    async def get(self):
        keeper = self.settings.get("usage_keeper")
        if keeper is None:
            raise web.HTTPError(503, "GPU usage is not recorded by this console")
        console = self.console
        body = await asyncio.to_thread(exposition, keeper, console.manager.inventory, console.sampler, console.queue)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason}\n")


# ---- the rest ----------------------------------------------------------------------------

class QueueHandler(APIHandler):
    spec_path = "/queue"

    async def get(self):
        self.reply({"waiting": self.console.queue()})


class ParkedHandler(APIHandler):
    spec_path = "/parked"

    async def get(self):
        self.reply({"parked": await self.console.parked()})


class QueueEntryHandler(APIHandler):
    spec_path = "/queue/{user}"

    async def delete(self, user: str):
        self.reply(await self.gpu_desk.unqueue(user, self.body(), self.who, self.via))


class QueueMoveHandler(APIHandler):
    spec_path = "/queue/{user}/move"

    async def post(self, user: str):
        self.reply(await self.gpu_desk.move_in_line(user, self.body(), self.who, self.via))


class OpenAPIHandler(web.RequestHandler):
    """The spec itself, for anyone (no login): it holds no data."""
    spec_path = "/openapi.yaml"

    def get(self):
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.finish(openapi.SPEC_FILE.read_bytes())


class NotFoundAPIHandler(APIHandler):
    async def prepare(self):
        await super().prepare()
        raise ConsoleError(404, f"no such API endpoint: {self.request.method} {self.request.path}")


# The API's handlers in the order their routes are tried; each serves its ``spec_path`` of the spec.
API_HANDLERS = (GPUsHandler, PinsHandler, PinHandler, DrainedHandler, DrainHandler, FreeHandler, AccessHandler,
                AuditHandler, HealthHandler, NamesHandler, CoursesHandler, RosterHandler, CourseHandler, CourseStopHandler,
                CourseResetHandler, ReservationsHandler, ReservationHandler, SharedHandler, ShareHandler,
                UsageHandler, UserUsageHandler, QuotasHandler, QuotaHandler,
                QueueHandler, QueueEntryHandler, QueueMoveHandler, ParkedHandler, OpenAPIHandler)


def api_routes(api_prefix: str) -> list[tuple[str, type]]:
    """(URL pattern, handler) for every path of the spec, then a JSON 404 for the rest."""
    routes = [(api_prefix + re.sub(r"\{[^}]+\}", "([^/]+)", h.spec_path.lstrip("/")), h) for h in API_HANDLERS]
    return [*routes, (f"{api_prefix}.*", NotFoundAPIHandler)]


class PageHandler(BaseHandler):
    """The console's page, in the hub's look; a page saying so for non-admins."""

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
