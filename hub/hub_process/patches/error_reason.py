"""JupyterHub 6 answers an error raised without a message (``raise web.HTTPError(404)``, or
Tornado's own 405) with ``{"status": 404, "message": null}`` from the REST API, and an error
page titled "404 : None": its write_error (6.0, with SpawnException) takes the status message
from the error's reason or message, and such an error has neither. JupyterHub 5.5 answered
"Not Found". Found by make reliability (a username like ".." reaches the API root: a 405).

Here such an error gets the status's standard reason phrase before JupyterHub writes it.
Checked against JupyterHub 6.1.1's apihandlers/base.py and handlers/base.py."""
from __future__ import annotations

from http.client import responses

from hub.hub_process.patches import require
from tornado import web

WRITTEN_FOR = ">=6.1,<6.2"
UPSTREAM = "write_error gives a null message for an HTTPError without message or reason (not reported upstream yet)"

_installed = False


def give_reason(status_code: int, exception) -> None:
    """Give an HTTPError that has neither a message nor a reason the status's reason phrase."""

    if isinstance(exception, web.HTTPError) and not exception.reason and not exception.get_message():
        exception.reason = responses.get(status_code, "Unknown Error")


def install() -> None:
    global _installed
    if _installed:
        return
    require(__name__, WRITTEN_FOR, UPSTREAM)
    # JupyterHub's handlers (and its database layer) load when the patch is installed in the hub
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.handlers.base import BaseHandler

    def wrap(original):
        def write_error(self, status_code, **kwargs):
            exc_info = kwargs.get("exc_info")
            if exc_info:
                give_reason(status_code, exc_info[1])
            return original(self, status_code, **kwargs)
        return write_error

    for cls in (BaseHandler, APIHandler):  # APIHandler writes JSON with its own write_error
        cls.write_error = wrap(cls.__dict__["write_error"])
    _installed = True
