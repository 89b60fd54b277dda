"""PRESTART_AT_LOGIN: a user with exactly one server profile gets their server started as they
log in, so that it is starting or up by the time they land on the hub, wherever the login sends
them (a course's nbgitpuller link, ``/hub/home``, their server's URL).

JupyterHub's default after a login without ``next`` is its spawn page, which starts a server
that has no options form, one redirect later; with a ``next`` (the common case for a link) it
starts nothing and the person presses Start. Its hooks do not fit: ``Authenticator.post_auth_hook``
runs before the user exists in the hub's database and has no handler to spawn with, and
``Spawner.pre_spawn_hook`` runs only once a start has been asked for. So this wraps
``BaseHandler.login_user``, which both the login form (LoginHandler.post) and every OAuth
callback (oauthenticator's handlers) call once the person is authenticated: after it returns a
user, their default server's start is begun in the background with JupyterHub's own
``spawn_single_user`` (exactly what the spawn page would call), and the login's redirect goes out
at once. Checked against JupyterHub 6.1.1's handlers/base.py and handlers/login.py."""
from __future__ import annotations

import asyncio

from hub.hub_process.patches import require

WRITTEN_FOR = ">=6.1,<6.2"
UPSTREAM = "no hook after login that may start the user's server (not reported upstream)"

_installed = False
_starting: set = set()  # the tasks of starts begun at login (kept until they end)


async def single_choice(spawner) -> bool:
    """Whether Start would start this spawner at once: for the hub's profile spawner, exactly one
    profile offered to the user, with one image (read from the profiles file: rendering the form
    would ask the engine for the free GPUs at every login); for another spawner, no options form."""
    if getattr(spawner, "profiles_file", "") and hasattr(spawner, "load_profiles"):
        offered = await asyncio.to_thread(spawner.load_profiles)
        visible = [p for p in offered if p.visible_to(spawner.user_groups(), spawner.is_admin)]
        return len(visible) == 1 and len(visible[0].images) == 1
    return not await spawner.get_options_form()


async def start_at_login(handler, user) -> None:
    spawner = user.spawner
    if spawner.active or spawner.pending:
        return
    if not await single_choice(spawner) or spawner.active or spawner.pending:  # the spawn page may have begun it
        return
    handler.log.info("PRESTART_AT_LOGIN: starting %s's server as they log in", user.name)
    await handler.spawn_single_user(user)


def install(c) -> None:
    """Wrap login_user where the configuration ``c`` turns it on (GPUDockerSpawner.start_at_login)."""
    global _installed
    if _installed or not c.GPUDockerSpawner.get("start_at_login", False):
        return
    require(__name__, WRITTEN_FOR, UPSTREAM)
    # JupyterHub's handlers (and its database layer) load when the patch is installed in the hub
    from jupyterhub.handlers.base import BaseHandler

    original = BaseHandler.__dict__["login_user"]

    async def login_user(self, data=None):
        user = await original(self, data)
        if user is not None:
            task = asyncio.ensure_future(start_at_login(self, user))
            _starting.add(task)
            task.add_done_callback(_done(self.log, user.name))
        return user

    BaseHandler.login_user = login_user
    _installed = True


def _done(log, name: str):
    def done(task) -> None:
        _starting.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the spawn page shows it; the log says so
            log.warning("PRESTART_AT_LOGIN: the start of %s's server failed: %s", name, task.exception())
    return done
