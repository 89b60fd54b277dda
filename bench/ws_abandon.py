"""The websocket-abandonment test: N kernel websockets through the proxy, then every one of them
loses its network at once (a class closing their laptops), and the proxy is watched.

On the real compose stack of the tests (tests/e2e/stack.env; PROXY_IMAGE may be overridden with
--proxy-image): USERS users' servers (profile `cpu`) with one kernel each; N websockets to those
kernels (round robin) straight to the proxy's container address, with the admin's token; one
cell runs over each (so each is known to carry traffic both ways). Then iptables on this host
drops every packet of those N client ports, both ways, and the clients close: the proxy never
sees a FIN or an RST, as with a laptop whose lid closed. The kernels then print one line every
--chatter seconds (a running notebook's output, sent to every websocket of the kernel), so the
proxy has something to write to the dead peers, as it does in a real class.

Recorded: the proxy's node process (its socket fds, /proc) and resident memory, its container's
memory (Docker stats API, one-shot) and its TCP connections on :8000 by state (ss in its
network namespace): before the websockets, with them open, right after the drop, then every 10 s for
--watch seconds (default 300). "recovered_after_s": the first time sockets were back to at most
before + 2 and resident memory to at most before + 5 MB, or null.

Writes bench/results/ws-abandon-<label>.json (label: --label, default from the proxy image) and
prints it. Run under the Docker lock; brings the stack up and removes it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import docker

sys.path[:0] = [str(Path(__file__).resolve().parent)]
from class_rush import (RESULTS, container_id, drop_rules, tcp_states_on, node_pid,  # noqa: E402
                        process_sockets_and_rss, proxy_address)
from hubclient import Hub, Stack  # noqa: E402


def point(client: docker.DockerClient, proxy_id: str, proxy_pid: int, t0: float) -> dict:
    sockets, rss = process_sockets_and_rss(node_pid(proxy_pid))
    mem = client.api.stats(proxy_id, stream=False, one_shot=True).get("memory_stats", {})
    used = mem.get("usage", 0) - mem.get("stats", {}).get("inactive_file", 0)
    return {"t_s": round(time.monotonic() - t0, 1), "sockets": sockets, "rss_mb": rss,
            "container_mem_mb": round(used / 2**20, 1), "tcp_8000": tcp_states_on(proxy_pid, 8000)}


async def open_all(url: str, token: str, kernels: list[tuple[str, str]], n: int) -> list:
    """n websockets (round robin over the kernels), each with one cell run over it."""
    headers = {"Authorization": f"token {token}"}
    sessions, sockets = [], []

    async def one(i: int):
        user, kernel = kernels[i % len(kernels)]
        s = aiohttp.ClientSession()
        sessions.append(s)
        ws = await s.ws_connect(f"{url.replace('http://', 'ws://')}/user/{user}/api/kernels/{kernel}/channels"
                                f"?session_id={uuid.uuid4().hex}", headers=headers, autoping=True,
                                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0))
        msg_id = uuid.uuid4().hex
        await ws.send_str(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": f"print({i})", "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        while True:
            msg = await asyncio.wait_for(ws.receive(), 120)
            data = json.loads(msg.data)
            if (data.get("parent_header", {}).get("msg_id") == msg_id and data["msg_type"] == "status"
                    and data["content"]["execution_state"] == "idle"):
                break
        sockets.append(ws)
    sem = asyncio.Semaphore(20)

    async def limited(i):
        async with sem:
            await one(i)
    await asyncio.gather(*(limited(i) for i in range(n)))
    return sessions, sockets


async def chatter(url: str, token: str, kernels: list[tuple[str, str]], every: float) -> None:
    """Each kernel prints a line every `every` seconds (a background thread in the kernel)."""
    code = (f"import threading, time\n"
            f"def _tick():\n"
            f"    while True:\n"
            f"        time.sleep({every}); print('tick', time.time(), flush=True)\n"
            f"threading.Thread(target=_tick, daemon=True).start()\n")
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as s:
        for user, kernel in kernels:
            ws = await s.ws_connect(f"{url.replace('http://', 'ws://')}/user/{user}/api/kernels/{kernel}/channels"
                                    f"?session_id={uuid.uuid4().hex}")
            await ws.send_str(json.dumps({
                "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": user,
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False}}))
            await asyncio.sleep(1)
            await ws.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--websockets", type=int, default=200)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--watch", type=float, default=300.0)
    parser.add_argument("--chatter", type=float, default=10.0, help="seconds between kernel output lines; 0: none")
    parser.add_argument("--proxy-image", default=None)
    parser.add_argument("--label", default=None)
    args = parser.parse_args()
    stack = Stack()
    overrides = {"PROXY_IMAGE": args.proxy_image} if args.proxy_image else {}
    image = args.proxy_image or stack.env["PROXY_IMAGE"]
    label = args.label or image.split("/")[-1].replace(":", "-")
    stack.down()
    stack.up(**overrides)
    ports, proxy_ip = [], None
    client = docker.from_env(timeout=60)
    result: dict = {"websockets": args.websockets, "users": args.users, "proxy_image": image,
                    "chatter_every_s": args.chatter}
    try:
        proxy_id = container_id(stack, "proxy")
        proxy_pid = stack.inspect(proxy_id)["State"]["Pid"]
        result["proxy_version"] = client.containers.get(proxy_id).exec_run(
            ["sh", "-c", "node --version; configurable-http-proxy --version"]).output.decode().split()
        url = proxy_address(stack, proxy_id)
        proxy_ip = url.split("//")[1].split(":")[0]
        token = stack.admin_token()
        hub = Hub(stack.url, token)
        kernels = []
        for i in range(args.users):
            name = f"abandon-{i}"
            hub.create_user(name)
            hub.start(name, options={"profile": "cpu"})
            r = hub.s.post(f"{stack.url}/user/{name}/api/kernels", json={"name": "python3"}, timeout=60)
            assert r.status_code == 201, r.text
            kernels.append((name, r.json()["id"]))
        t0 = time.monotonic()
        time.sleep(2)
        result["before"] = point(client, proxy_id, proxy_pid, t0)

        async def scenario():
            sessions, sockets = await open_all(url, token, kernels, args.websockets)
            result["open"] = point(client, proxy_id, proxy_pid, t0)
            ports[:] = [ws.get_extra_info("sockname")[1] for ws in sockets]
            await asyncio.to_thread(drop_rules, "-A", proxy_ip, 8000, ports)
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
            if args.chatter:
                await chatter(url, token, kernels, args.chatter)
            result["right_after"] = point(client, proxy_id, proxy_pid, t0)
            series, recovered = [], None
            t_drop = time.monotonic()
            while time.monotonic() - t_drop < args.watch:
                await asyncio.sleep(10)
                p = await asyncio.to_thread(point, client, proxy_id, proxy_pid, t0)
                p["after_drop_s"] = round(time.monotonic() - t_drop, 1)
                series.append(p)
                if (recovered is None and p["sockets"] <= result["before"]["sockets"] + 2
                        and p["rss_mb"] <= result["before"]["rss_mb"] + 5):
                    recovered = p["after_drop_s"]
            result["watch"], result["recovered_after_s"] = series, recovered
            result["at_end"] = series[-1] if series else None
        asyncio.run(scenario())
    finally:
        if ports and proxy_ip:
            drop_rules("-D", proxy_ip, 8000, ports)
        stack.down()
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ws-abandon-{label}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "watch"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
