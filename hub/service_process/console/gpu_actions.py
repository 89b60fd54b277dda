"""GPUDesk: the admin's GPU actions (pin, unpin, drain, undrain, who may use GPUs, free a GPU).

Request bodies arrive checked against openapi.yaml (handlers.py); each action checks what the
schema cannot (users, groups and GPUs that exist, conflicts with the current state) and only
then commits through the Console: the intent, then one audit line.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from hub.common.errors import ConsoleError
from hub.service_process.console.state import Console, gpu_label
from hub.gpus.model import GPU, Access
from hub.gpus.queue import move_outcome, request_move, withdraw_move


class GPUDesk:
    move_timeout = 12.0  # seconds for the hub to apply a move (its waiters look every 5 s)

    def __init__(self, console: Console):
        self.console = console

    async def pin(self, body: dict[str, Any], who: str, via: str) -> dict:
        name = body["user"]
        async with self.console.lock:
            view = await self.console.view()
            gpu = view.gpu(body["gpu"])
            user = await self.console.known_user(name)
            if gpu.uuid in view.intent.drained:
                raise ConsoleError(409, f"{gpu_label(gpu)} is drained: undrain it before pinning anyone to it")
            if not view.intent.allows(name, user.get("groups") or []):
                raise ConsoleError(409, f"{name!r} may not use GPUs (see 'Who may use GPUs'): allow them first")
            before = view.intent.pins.get(name)
            if before == gpu.uuid:
                raise ConsoleError(409, f"{name!r} is already pinned to {gpu_label(gpu)}")
            detail = f"pinned {name} to {gpu_label(gpu)}"
            if before:
                detail += f" (was {before})"
            held = [u for u, h in view.holders.items() if h.user == name and u != gpu.uuid]
            if held:
                detail += f"; their running server keeps {held[0]} until it stops"
            return await self.console.commit(
                view.intent.with_pin(name, gpu.uuid),
                {"action": "pin", "user": name, "gpu": gpu.uuid, "index": gpu.index, "previous": before},
                body.get("note", ""), detail, who, via)

    async def unpin(self, user: str, body: dict[str, Any], who: str, via: str) -> dict:
        async with self.console.lock:
            view = await self.console.view()
            uuid = view.intent.pins.get(user)
            if uuid is None:
                raise ConsoleError(404, f"{user!r} is not pinned to any GPU")
            gpu = view.gpus.get(uuid)
            detail = f"unpinned {user} from {gpu_label(gpu) if gpu else uuid}"
            return await self.console.commit(
                view.intent.without_pin(user),
                {"action": "unpin", "user": user, "gpu": uuid, "index": gpu.index if gpu else None},
                body.get("note", ""), detail, who, via)

    async def drain(self, body: dict[str, Any], who: str, via: str) -> dict:
        async with self.console.lock:
            view = await self.console.view()
            gpu = view.gpu(body["gpu"])
            if gpu.uuid in view.intent.drained:
                raise ConsoleError(409, f"{gpu_label(gpu)} is already drained")
            holder = view.holders.get(gpu.uuid)
            detail = f"drained {gpu_label(gpu)}"
            if holder:
                detail += f"; {holder.user} keeps it until their server stops"
            return await self.console.commit(
                view.intent.with_drained(gpu.uuid), {"action": "drain", "gpu": gpu.uuid, "index": gpu.index},
                body.get("note", ""), detail, who, via)

    async def undrain(self, uuid: str, body: dict[str, Any], who: str, via: str) -> dict:
        async with self.console.lock:
            view = await self.console.view()
            if uuid not in view.intent.drained:
                raise ConsoleError(409, f"{gpu_label(view.gpu(uuid, status=404))} is not drained")
            gpu = view.gpus.get(uuid)
            detail = f"undrained {gpu_label(gpu) if gpu else uuid}"
            return await self.console.commit(
                view.intent.without_drained(uuid),
                {"action": "undrain", "gpu": uuid, "index": gpu.index if gpu else None},
                body.get("note", ""), detail, who, via)

    async def set_access(self, body: dict[str, Any], who: str, via: str) -> dict:
        users, groups = sorted(set(body["users"])), sorted(set(body["groups"]))
        async with self.console.lock:
            view = await self.console.view()
            for user in users:
                await self.console.known_user(user)
            for group in groups:
                if not await self.console.hub.group_exists(group):
                    raise ConsoleError(400, f"no group {group!r} on this hub")
            access = Access(frozenset(users), frozenset(groups))
            if access == view.intent.access:
                return {"message": "Unchanged", "unchanged": True, "access": access.to_json()}
            if access.everyone:
                detail = "GPUs may be used by everyone"
            else:
                who_may = [*(f"user {u}" for u in users), *(f"group {g}" for g in groups)]
                detail = "GPUs may be used only by " + ", ".join(who_may)
            reply = await self.console.commit(
                view.intent.with_access(access),
                {"action": "access", "users": users, "groups": groups, "previous": view.intent.access.to_json()},
                body.get("note", ""), detail, who, via)
        return {**reply, "access": access.to_json()}

    async def free(self, body: dict[str, Any], who: str, via: str) -> dict:
        """Stop the server that holds a GPU (named by "gpu", or by "user" and "server")."""
        if ("gpu" in body) == ("user" in body):
            raise ConsoleError(400, "name either 'gpu' (the GPU to free) or 'user' (whose server to stop)")
        if "server" in body and "user" not in body:
            raise ConsoleError(400, "'server' goes with 'user'")
        async with self.console.lock:
            view = await self.console.view()
            if "gpu" in body:
                gpu = view.gpu(body["gpu"])
                uuid = gpu.uuid
                holder = view.holders.get(uuid)
                if holder is None:
                    raise ConsoleError(409, f"{gpu_label(gpu)} is free already: no server holds it")
            else:
                user, server = body["user"], body.get("server", "")
                held = sorted(u for u, h in view.holders.items() if (h.user, h.server) == (user, server))
                if not held:
                    await self.console.known_user(user)
                    name = f"{user}'s server" + (f" {server!r}" if server else "")
                    raise ConsoleError(409, f"{name} holds no GPU")
                uuid, holder = held[0], view.holders[held[0]]
                gpu = view.gpus.get(uuid) or GPU(uuid, -1, "unknown")
            container = self.console.container(view, uuid)
            if not container["this_hub"]:
                raise ConsoleError(409, f"{gpu_label(gpu)} is held by container {container['name']!r}, which "
                                        "this hub did not start; stop it with docker on the host")
            status, message = await self.console.hub.stop_server(holder.user, holder.server)
            if status not in (202, 204):
                raise ConsoleError(409, f"the hub did not stop {holder.user}'s server: {message}")
            state = "stopped" if status == 204 else "stopping"
            server_name = f" {holder.server!r}" if holder.server else ""
            detail = f"stopped {holder.user}'s server{server_name} to free {gpu_label(gpu)}"
            reply = await self.console.commit(
                None, {"action": "free", "user": holder.user, "server": holder.server, "gpu": uuid,
                       "index": gpu.index, "container": container["name"], "result": state},
                body.get("note", ""), detail, who, via)
        return {**reply, "result": state}

    async def unqueue(self, user: str, body: dict[str, Any], who: str, via: str) -> dict:
        """Take a user's waiting starts out of the line: the hub cancels them (its REST API's
        stop of a pending start, as the user's own Cancel)."""
        async with self.console.lock:
            entries = [e for e in self.console.queue() if e.get("user") == user]
            if not entries:
                await self.console.known_user(user)
                raise ConsoleError(404, f"{user} is not waiting in line for a GPU")
            if any(e.get("resume_gpu") for e in entries):  # the hub's cancel would stop a parked server
                raise ConsoleError(409, f"{user}'s parked server waits in line to resume: taking it out would stop "
                                        "it and lose its kernels' state; stop the server itself if that is meant")
            for entry in entries:
                status, message = await self.console.hub.stop_server(user, entry.get("server", ""))
                if status not in (202, 204):
                    raise ConsoleError(409, f"the hub did not cancel {user}'s start: {message}")
            places = ", ".join(str(e.get("position")) for e in entries)
            detail = f"took {user} out of the line for a GPU (place {places})"
            return await self.console.commit(
                None, {"action": "unqueue", "user": user, "servers": [e.get("server", "") for e in entries]},
                body.get("note", ""), detail, who, via)

    async def move_in_line(self, user: str, body: dict[str, Any], who: str, via: str) -> dict:
        """Put a user's waiting start at another place in the line. The hub holds the line: the
        move is asked of it through a file on the state volume (hub/gpus/queue.py) and this
        answers once the hub has applied it (or says why not)."""
        position = body["position"]
        async with self.console.lock:
            line = self.console.queue()
            entries = [e for e in line if e.get("user") == user]
            if "server" in body:
                entries = [e for e in entries if e.get("server", "") == body["server"]]
            if not entries:
                await self.console.known_user(user)
                raise ConsoleError(404, f"{user} is not waiting in line for a GPU"
                                   + (f" with server {body['server']!r}" if body.get("server") else ""))
            if len(entries) > 1:
                raise ConsoleError(400, f"{user} waits with {len(entries)} servers: name one with 'server' "
                                        f"({', '.join(repr(e.get('server', '')) for e in entries)})")
            entry = entries[0]
            if position > len(line):
                raise ConsoleError(400, f"the line has {len(line)} place{'s' if len(line) != 1 else ''}: "
                                        f"'position' must be from 1 to {len(line)}")
            if entry.get("starting"):
                raise ConsoleError(409, f"{user}'s server is starting already: it has its GPU")
            if entry.get("position") == position:
                raise ConsoleError(409, f"{user} is number {position} in line already")
            server = entry.get("server", "")
            path = self.console.queue_file
            move_id = await asyncio.to_thread(request_move, path, user, server, position, time.time())
            outcome = None
            deadline = time.monotonic() + self.move_timeout
            while outcome is None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                outcome = await asyncio.to_thread(move_outcome, path, move_id)
            if outcome is None:
                await asyncio.to_thread(withdraw_move, path, move_id)
                outcome = await asyncio.to_thread(move_outcome, path, move_id)  # applied meanwhile?
            if outcome is None:
                raise ConsoleError(503, f"the hub did not apply the move within {self.move_timeout:g} s "
                                        "(is it running?); nothing changed")
            if outcome != "moved":
                raise ConsoleError(409, f"{user} could not be moved: {outcome} any more")
            name = f"{user}'s server {server!r}" if server else user
            detail = f"moved {name} in the line for a GPU from place {entry.get('position')} to {position}"
            reply = await self.console.commit(
                None, {"action": "queue-move", "user": user, "server": server, "from": entry.get("position"),
                       "to": position}, body.get("note", ""), detail, who, via)
        return {**reply, "waiting": self.console.queue()}
