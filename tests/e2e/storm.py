"""The GPU storm: N users press Start at once on a host with G GPUs.

    make storm      # brings up the test stack, runs 12 users on the engine's GPUs, prints JSON

Prints one JSON line: requested, gpus, gpu_containers, duplicate_gpus, refused_with_message,
free_after_stop. Also used by tests/e2e/test_gpus.py.
"""
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from hubclient import Hub, Stack

from hub.gpus.inventory import discover


def start_outcome(hub: Hub, name: str, timeout: float = 180) -> tuple[str, str]:
    """('ready', '') or ('refused', message) for one user's start, through the REST API."""
    hub.create_user(name)
    r = hub.api("POST", f"/users/{quote(name, safe='')}/server")
    if r.status_code >= 400:
        return "refused", r.json().get("message", "")
    for event in hub.progress(name, timeout=timeout):
        if event.get("ready"):
            return "ready", ""
        if event.get("failed"):
            return "refused", event.get("message", "")
    return "unknown", "progress stream ended without ready or failed"


def gpu_holdings(stack: Stack) -> dict[str, str]:
    """container name -> the GPU uuid it holds, from the engine (label and device request)."""
    holdings = {}
    for name in stack.user_containers():
        info = stack.inspect(name)
        label = info["Config"]["Labels"].get("gpuhub.gpu.uuid")
        requests = info["HostConfig"].get("DeviceRequests") or []
        ids = [i.split("=", 1)[-1] for r in requests for i in r.get("DeviceIDs") or []]
        if label or ids:
            assert ids == [label], f"{name}: label {label} but device request {ids}"
            holdings[name] = label
    return holdings


def run_storm(stack: Stack, hub: Hub, users: int, gpus: int, prefix: str = "storm") -> dict:
    names = [f"{prefix}{i:02d}" for i in range(users)]
    with ThreadPoolExecutor(users) as pool:
        outcomes = dict(zip(names, pool.map(lambda n: start_outcome(hub, n), names)))
    holdings = gpu_holdings(stack)
    duplicates = sum(n - 1 for n in Counter(holdings.values()).values() if n > 1)
    refused = [m for kind, m in outcomes.values() if kind == "refused"]
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(lambda n: hub.stop(n), [n for n, (kind, _) in outcomes.items() if kind == "ready"]))
    # After every stop, the next GPU users must be able to take all GPUs again.
    after = [f"{prefix}-after{i}" for i in range(gpus)]
    with ThreadPoolExecutor(gpus) as pool:
        after_outcomes = list(pool.map(lambda n: start_outcome(hub, n), after))
    free_after_stop = len(set(gpu_holdings(stack).values()))
    with ThreadPoolExecutor(gpus) as pool:
        list(pool.map(lambda n: hub.stop(n), [n for n, (kind, _) in zip(after, after_outcomes) if kind == "ready"]))
    return {
        "requested": users,
        "gpus": gpus,
        "gpu_containers": len(holdings),
        "duplicate_gpus": duplicates,
        "refused_with_message": sum(1 for m in refused if "No GPU" in m),
        "free_after_stop": free_after_stop,
        "refusal_example": refused[0] if refused else None,
    }


def main() -> int:
    stack = Stack()
    gpus = len(discover()[0])  # what the hub will find: NVML, else the host's CDI specs
    stack.down()
    stack.up()
    try:
        result = run_storm(stack, Hub(stack.url, stack.admin_token()), users=12, gpus=gpus)
    finally:
        stack.down()
    print(json.dumps(result))
    return 0 if result["duplicate_gpus"] == 0 and result["free_after_stop"] == gpus else 1


if __name__ == "__main__":
    sys.exit(main())
