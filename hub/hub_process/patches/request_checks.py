"""Checks that run before JupyterHub handles a request (before it authenticates: that already
writes to the database), each able to refuse it with a status and message.

JupyterHub has no hook there, so this wraps ``BaseHandler.prepare``, once; the state guard
(hub/hub_process/watchdog.py) and the request-body check (api_body_500.py) register themselves here.
tests/unit/test_patches.py checks that the wrapped method is still there in the pinned
JupyterHub."""
from __future__ import annotations

from typing import Callable, Optional

from hub.hub_process.patches import require

WRITTEN_FOR = ">=6.1,<6.2"  # re-checked against 6.1.1: BaseHandler.prepare is unchanged from 5.x
UPSTREAM = "no hook before a request's authentication in JupyterHub (not reported upstream yet)"

# check(handler) -> None, or (status, message) to refuse the request
Check = Callable[[object], Optional[tuple[int, str]]]
CHECKS: list[Check] = []
_installed = False


def add(check: Check) -> None:
    """Run `check` before every hub request, from now on (once per check)."""
    install()
    if check not in CHECKS:
        CHECKS.append(check)


def install() -> None:
    global _installed
    if _installed:
        return
    require(__name__, WRITTEN_FOR, UPSTREAM)
    # JupyterHub's handlers (and its database layer) load when the check is installed in the hub
    from jupyterhub.handlers.base import BaseHandler
    from tornado import web

    original = BaseHandler.prepare

    async def prepare(self):
        for check in CHECKS:
            refusal = check(self)
            if refusal:
                status, message = refusal
                # Anonymous, as JupyterHub's own prepare leaves a request whose user it could not
                # identify, so that its error page renders.
                self._jupyterhub_user = None
                self._resolve_roles_and_scopes()
                raise web.HTTPError(status, message.replace("%", "%%"))
        return await original(self)

    BaseHandler.prepare = prepare
    _installed = True
