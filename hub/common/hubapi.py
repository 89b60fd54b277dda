"""The hub's REST API as the console calls it with its own token: HubAPI (what the console
needs) and HubClient (those calls over HTTP)."""
from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from hub.common.errors import ConsoleError


class HubAPI(Protocol):
    """The few calls the console makes with its own token (see configure_console's role)."""

    async def user(self, name: str) -> dict | None: ...  # the model (with "groups"), None if unknown
    async def group_exists(self, name: str) -> bool: ...
    async def user_names(self) -> list[str]: ...
    async def group_names(self) -> list[str]: ...
    async def active_servers(self) -> dict[tuple[str, str], dict]: ...
    async def stop_server(self, user: str, server: str) -> tuple[int, str]: ...
    async def prestart_server(self, user: str, reservation: str) -> tuple[int, str]: ...
    # courses (course_actions.py)
    async def group_models(self) -> list[dict]: ...  # with "users" and "properties"
    async def create_users(self, names: list[str]) -> None: ...
    async def create_group(self, name: str) -> None: ...
    async def add_group_members(self, group: str, users: list[str]) -> None: ...
    async def remove_group_members(self, group: str, users: list[str]) -> None: ...
    async def group_properties(self, group: str) -> dict: ...
    async def set_group_properties(self, group: str, properties: dict) -> None: ...


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

    async def prestart_server(self, user: str, reservation: str) -> tuple[int, str]:
        """Ask the hub to start a course member's server for a reservation's pre-start (the hub's
        own route, hub/hub_process/prestart_api.py: 201 started, 202 starting)."""
        code, data = await self._request("POST", "/gpuhub/prestart", {"user": user, "reservation": reservation})
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

    # Users and course groups are created through the hub's roster route (hub/hub_process/roster_api.py),
    # for which the console's token has a scope of its own instead of admin:users/admin:groups.
    async def create_users(self, names: list[str]) -> None:
        for i in range(0, len(names), 200):  # the route's limit per request
            await self._change("POST", "/gpuhub/roster", {"users": names[i:i + 200]}, (201,),
                               f"create users {', '.join(names[i:i + 3])}…")

    async def create_group(self, name: str) -> None:
        await self._change("POST", "/gpuhub/roster", {"groups": [name]}, (201,), f"create group {name}")

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
