"""The console's web handlers: the page, the JSON API (one handler per path of openapi.yaml,
its request bodies checked against the spec) and their base classes (hub login, errors as JSON).
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import re
from typing import Any

from tornado import web

from hub.console import openapi
from hub.console.course_actions import CourseDesk
from hub.console.errors import ConsoleError
from hub.console.gpu_actions import GPUDesk
from hub.console.state import Console

MAX_BODY = 64 * 1024
MAX_ROSTER_BODY = 2 * 1024 * 1024  # a roster of thousands of rows, JSON-escaped


def _hub_oauthenticated():
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


class APIHandler(BaseHandler):
    """A path of the API: ``spec_path`` is its template in openapi.yaml, whose operations' schemas
    check the request body and path parameters (``body()``)."""
    spec_path = ""
    max_body = MAX_BODY

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
        if len(self.request.body) > self.max_body:
            raise ConsoleError(413, f"the request body is larger than {self.max_body} bytes")
        operation = openapi.operation(self.spec_path, self.request.method)
        body = operation.check_body(self.request.body)
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
        raw = self.get_argument("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise ConsoleError(400, f"limit={raw!r}: use a whole number from 1 to 1000")
        self.reply({"entries": self.console.audit_tail(int(raw))})


class HealthHandler(APIHandler):
    """The host's health (hub/gpus/health.py): the checks `gpuhub-gpus doctor` runs."""
    spec_path = "/health"

    async def get(self):
        from hub.gpus import doctor
        client = getattr(self.console.docker, "client", None)
        result = await asyncio.to_thread(doctor.from_env, dict(os.environ), client)
        self.reply({**result.to_json(), "time": time.time()})


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
    max_body = MAX_ROSTER_BODY

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


# ---- GPU usage and quotas (hub/console/usage_api.py) ------------------------------------------

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
        from hub.console.usage_api import to_csv
        args = {k: self.get_argument(k) for k in ("since", "until", "by", "bucket", "user", "format")
                if self.get_argument(k, None) is not None}
        fmt = args.pop("format", "json")
        if fmt not in ("json", "csv"):
            raise ConsoleError(400, f"format={fmt!r}: use json or csv")
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
        from hub.usage.metrics import SCOPE
        model, allowed = await self.settings["authenticator"].identify(self)
        if model is None:
            raise web.HTTPError(401, "send 'Authorization: Bearer <token>' with a token that has the scope " + SCOPE)
        if not allowed and SCOPE not in (model.get("scopes") or []):
            raise web.HTTPError(403, f"{model.get('kind', 'user')} {model.get('name')!r} lacks the scope {SCOPE}")
        self._identified = model

    async def get(self):
        from hub.usage.metrics import CONTENT_TYPE, exposition
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
                QueueHandler, QueueEntryHandler, QueueMoveHandler, OpenAPIHandler)


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
