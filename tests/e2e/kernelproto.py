"""Run code in a Jupyter kernel over its open websocket (the kernel protocol's execute_request)
and return what it printed: the one loop that tests/e2e/hubclient.py, test_upgrade.py,
test_reliability_faults.py and tests/gpu_host/stack.py share. Standard library only (the socket
is any object with send and recv, e.g. websocket-client's), so the GPU host's stack.py can use it
before its packages are unpacked."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any


def channels_url(base: str, kernel_id: str) -> str:
    """The kernel's websocket URL under a server's base URL (http -> ws, https -> wss)."""
    return base.replace("http", "ws", 1) + f"api/kernels/{kernel_id}/channels"


def run_code(ws: Any, code: str, timeout: float, username: str = "test", session: str | None = None,
             error: type[Exception] = AssertionError, who: str = "kernel") -> str:
    """Send ``code`` as an execute_request and collect its stream output until the kernel is idle
    again. A kernel error raises ``error`` with the traceback; no idle within ``timeout`` seconds
    raises TimeoutError with the output so far."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": username,
                   "session": session or uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False}}))
    output, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            output.append(msg["content"]["text"])
        elif kind == "error":
            raise error(f"{who} error: " + "\n".join(msg["content"]["traceback"]))
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(output)
    raise TimeoutError(f"{who} did not finish within {timeout}s; output so far: {output}")
