"""gpuhub's "My GPU" in JupyterLab: a Jupyter server extension and a small prebuilt
JupyterLab extension (labextension/, plain JavaScript: no Node build).

The server side answers ``GET <base>/gpuhub/gpu`` (this server's GPU: name, utilisation, memory,
idle for how long, the reclaim warning; and the user's GPU-hours against their quota) and ``POST <base>/gpuhub/gpu/still-working`` by asking
the hub's gpu-reclaim service (``GPUHUB_GPU_SERVICE_URL``) with this server's own API token;
the service answers for the token's owner only. Nothing runs unless JupyterLab's page asks:
the page asks every 15 s while it is visible, to show the status-bar item and the warning.
"""
from __future__ import annotations

import json
import os
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

NO_SERVICE = "this hub does not report GPU usage (no GPUHUB_GPU_SERVICE_URL)"


def this_server(answer: dict[str, Any], server_name: str) -> dict[str, Any]:
    """The service's answer for the user, narrowed to this server."""
    mine = [s for s in answer.get("servers") or [] if s.get("server", "") == server_name]
    return {"gpu": mine[0] if mine else None, "policy": answer.get("policy"),
            "enabled": bool(answer.get("enabled")), "exempt": bool(answer.get("exempt")),
            "usage": answer.get("usage")}


class ServiceHandler(APIHandler):
    async def _service(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        base = os.environ.get("GPUHUB_GPU_SERVICE_URL", "")
        if not base:
            raise web.HTTPError(404, NO_SERVICE)
        request = HTTPRequest(url_path_join(base, path), method=method, request_timeout=10,
                              headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}"},
                              body=json.dumps(body) if body is not None else None)
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
            data = json.loads(response.body or b"{}")
        except Exception as exc:  # noqa: BLE001 - the hub restarting, ...
            raise web.HTTPError(502, f"the hub's GPU service did not answer ({exc})") from None
        return response.code, data


class GPUHandler(ServiceHandler):
    @web.authenticated
    async def get(self) -> None:
        code, data = await self._service("GET", "api/me")
        if code != 200:
            raise web.HTTPError(502, f"the hub's GPU service answered {code}: {data.get('message', '')}")
        self.finish(json.dumps(this_server(data, os.environ.get("JUPYTERHUB_SERVER_NAME", ""))))


class StillWorkingHandler(ServiceHandler):
    @web.authenticated
    async def post(self) -> None:
        code, data = await self._service("POST", "api/me/still-working",
                                         {"server": os.environ.get("JUPYTERHUB_SERVER_NAME", "")})
        self.set_status(code if code < 500 else 502)
        self.finish(json.dumps(data))


def _jupyter_server_extension_points():
    return [{"module": "gpuhub_gpu"}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "gpuhub-gpu"}]


def _load_jupyter_server_extension(server_app) -> None:
    web_app = server_app.web_app
    base = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base, "gpuhub/gpu"), GPUHandler),
                                 (url_path_join(base, "gpuhub/gpu/still-working"), StillWorkingHandler)])
