"""gpuhub_warm: a warm kernel in each user's server (README, "Performance"; docs/performance.md,
"Instant start").

- ``gpuhub_warm.manager.WarmKernelManager`` (``ServerApp.kernel_manager_class`` in this image's
  jupyter_server_config.json) keeps one spare kernel, imports done, for the first notebook;
- this server extension tells it when the first JupyterLab page has been served (so a server
  nobody opens, e.g. one started through the API, starts no spare) and when each request is
  done (the spare waits for a quiet moment: JupyterLab's assets and first API calls served), and answers
  GET {base_url}api/gpuhub/warm-kernel with the spare's state (for tests and admins).
"""
from __future__ import annotations

import json
import re

LAB_PAGE = r"lab(/(tree|workspaces)/.*)?/?"


def _jupyter_server_extension_points():
    return [{"module": "gpuhub_warm"}]


def _load_jupyter_server_extension(server_app) -> None:
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join
    from tornado import web
    from tornado.ioloop import IOLoop

    manager = server_app.kernel_manager
    if not hasattr(manager, "warm_up"):
        server_app.log.info("gpuhub_warm: the kernel manager is %s, no warm kernel", type(manager).__name__)
        return
    web_app = server_app.web_app
    base = web_app.settings["base_url"]
    lab_page = re.compile("^" + re.escape(base) + LAB_PAGE + "$")

    class LabServed(web.OutputTransform):
        """Passes every response through unchanged; a JupyterLab page served starts the spare."""

        def __init__(self, request):
            self._lab = request.method == "GET" and bool(lab_page.match(request.path))

        def transform_first_chunk(self, status_code, headers, chunk, finishing):
            if self._lab and status_code == 200 and headers.get("Content-Type", "").startswith("text/html"):
                IOLoop.current().add_callback(manager.warm_up)
            return status_code, headers, chunk

    class WarmKernelHandler(APIHandler):
        auth_resource = "kernels"
        _track_activity = False  # asking about the spare is no activity of the user's (idle culler)

        @web.authenticated
        def get(self):
            self.finish(json.dumps(manager.spare_status()))

    log_request = web_app.settings.get("log_function")

    def log_and_tell(handler):
        """jupyter_server's request log, and the manager told that a request is done."""
        if log_request is not None:
            log_request(handler)
        manager.request_served()

    web_app.settings["log_function"] = log_and_tell
    web_app.add_transform(LabServed)
    web_app.add_handlers(".*$", [(url_path_join(base, "api/gpuhub/warm-kernel"), WarmKernelHandler)])
    if manager.start_after == "server":  # a server started ahead of its user: the spare at once
        IOLoop.current().add_callback(manager.warm_up)
    when = {"quiet": "once quiet after the first JupyterLab page", "lab": "at the first JupyterLab page",
            "server": "at once"}[manager.start_after]
    server_app.log.info("gpuhub_warm: %s", "a spare kernel with %s, started %s"
                        % (" ".join(manager.warm_imports) or "no imports", when) if manager.warm_kernel else "off")
