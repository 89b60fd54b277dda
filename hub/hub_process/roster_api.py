"""A route of the hub's own API for the GPU console's roster imports: create the users and the
course groups a roster names, and nothing else, under a scope of its own.

JupyterHub creates users only for ``admin:users`` (which also deletes and renames users and
reads their auth state: "tantamount to superuser", JupyterHub's own words) and groups only for
``admin:groups`` (which also deletes them). A roster needs neither power: with this route the
console's token has ``custom:gpuhub-roster:create`` instead (docs/security.md, "Console input
and tokens").

    POST /hub/api/gpuhub/roster  {"users": [...], "groups": [...]}   (either may be left out)

creates those of them that do not exist yet, each user as POST /users would (the
authenticator's normalize/validate/add_user, JupyterHub's default roles; never an admin), each
group as a course's (a name hub/courses.py accepts), at most 200 of each per request, and
answers 201 ``{"users_created": [...], "groups_created": [...]}``. It runs in the hub's
process (``install`` registers it: JupyterHub.extra_handlers).
"""
from __future__ import annotations

import json
from typing import Any
from hub import courses

SCOPE = "custom:gpuhub-roster:create"
PATH = "/api/gpuhub/roster"  # under the hub's prefix: /hub/api/gpuhub/roster
MAX_NAMES = 200


def install(c) -> None:
    """Register the route and its scope in the hub's configuration ``c``."""
    c.JupyterHub.custom_scopes = {**c.JupyterHub.get("custom_scopes", {}), SCOPE: {
        "description": "Create the users and course groups a roster names (never delete, rename or "
                       "make admins)"}}
    # extra_handlers is deprecated since JupyterHub 3.1 in favour of services, and a service
    # cannot create a user without admin:users: that is the point of this route.
    handlers = [h for h in c.JupyterHub.get("extra_handlers", []) if h[0] != PATH]
    c.JupyterHub.extra_handlers = [*handlers, (PATH, RosterAPIHandler())]


def require_custom_scope(handler: Any, scope: str) -> None:
    """403 unless the caller's token has ``scope``. JupyterHub's ``needs_scope()`` cannot name a
    custom scope: it checks names when its module loads, before the custom ones are defined."""
    # in the hub's process only: JupyterHub's scopes and tornado, imported by the handler's call
    from jupyterhub.scopes import has_scope
    from tornado import web

    if not handler.current_user:
        raise web.HTTPError(403, "Missing or invalid credentials.")
    if not has_scope(scope, handler.parsed_scopes, db=handler.db):
        raise web.HTTPError(403, f"this needs the scope {scope} (the GPU console's role has it)")


def names(data: Any, key: str) -> list[str]:
    """The body's list ``key`` (absent: []), or a ValueError saying what is wrong with it."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(n, str) and n.strip() for n in value):
        raise ValueError(f"'{key}' must be a list of names")
    if len(value) > MAX_NAMES:
        raise ValueError(f"'{key}' lists more than {MAX_NAMES} names: send them in several requests")
    return value


def RosterAPIHandler():  # noqa: N802 - the class, made in the hub's process (JupyterHub imported)
    # made in the hub's process only: JupyterHub's API handlers and database layer
    from jupyterhub import orm
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.roles import assign_default_roles
    from jupyterhub.utils import maybe_future
    from tornado import web


    class Handler(APIHandler):
        async def post(self) -> None:
            require_custom_scope(self, SCOPE)
            data = self.get_json_body()
            if not isinstance(data, dict) or not set(data) <= {"users", "groups"}:
                raise web.HTTPError(400, 'the body must be {"users": [...], "groups": [...]}')
            try:
                users, groups = names(data, "users"), names(data, "groups")
                for name in groups:
                    courses.check_course_name(name)
            except ValueError as exc:
                raise web.HTTPError(400, str(exc)) from None
            to_create = []
            for name in users:
                name = self.authenticator.normalize_username(name)
                if not self.authenticator.validate_username(name):
                    raise web.HTTPError(400, f"Invalid username: {name}")
                if self.find_user(name) is None and name not in to_create:
                    to_create.append(name)
            created_groups = []
            for name in groups:
                if orm.Group.find(self.db, name=name) is None:
                    self.db.add(orm.Group(name=name))
                    created_groups.append(name)
            self.db.commit()
            for name in to_create:  # as JupyterHub's POST /users does, without its admin flag
                user = self.user_from_username(name)
                assign_default_roles(self.db, entity=user)
                self.db.commit()
                try:
                    await maybe_future(self.authenticator.add_user(user))
                except Exception as exc:  # noqa: BLE001 - the authenticator refused it
                    self.log.error("roster: failed to create user %s", name, exc_info=True)
                    self.users.delete(user)
                    raise web.HTTPError(400, f"Failed to create user {name}: {exc}") from None
            self.log.info("roster: created users %s, groups %s (by %s)", to_create, created_groups,
                          self.current_user.name)
            self.set_status(201)
            self.write(json.dumps({"users_created": to_create, "groups_created": created_groups}))

    return Handler
