"""HubAuthenticator: who is asking, through the hub (HubOAuth), and whether they may."""
from __future__ import annotations

from typing import Any


class HubAuthenticator:
    """Who is asking, through the hub (HubOAuth); only those with the service's access scope.

    ``identify`` answers (model, allowed): (None, False) for a stranger, (model, False) for a
    user without the scope. Tests put a stand-in with the same two methods in its place."""

    async def identify(self, handler: Any) -> tuple[dict | None, bool]:
        # after defer_hub_database() (hub/common/lean_imports.py): no hub database layer in this process
        from jupyterhub.services.auth import UserNotAllowed

        model = await handler.hub_auth.get_user(handler, sync=False)
        if model is None:
            return None, False
        try:
            return handler.check_hub_user(dict(model)), True
        except UserNotAllowed:
            return model, False

    def has_session_cookie(self, handler: Any) -> bool:
        return bool(handler.get_cookie(handler.hub_auth.cookie_name))
