"""`make bench` (part): what the users' network rules (hub/netguard.py) cost, and whether they
hold with many servers, on the real compose stack of the tests (tests/e2e/stack.env).

1. Spawn cost: ROUNDS rounds; in each, the stack with USER_NETWORK_ISOLATION=true and =false (the
   order alternating between rounds), SPAWNS CPU servers started through the hub's API one after
   the other, each timed from the request until the hub reports it ready, then stopped.
   Reports the p50 of each and their ratio.
2. Many servers: N stand-in servers (containers of the hub's image answering HTTP on
   8888, on the deployment's network, as users' servers are) next to the stack; then the
   rules' count, and from one stand-in, SAMPLE others are tried (all must be unreachable),
   and from the proxy the same ones (all must answer).

Writes bench/results/isolation-latest.json and prints it as one JSON line.
`--servers N` (default 200), `--rounds R` (4), `--spawns S` (3).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests/e2e")]
from hubclient import Hub, Stack  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def docker(*args, check=True, timeout=300):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def spawn_times(stack: Stack, isolation: bool, spawns: int, tag: str) -> list[float]:
    stack.up(USER_NETWORK_ISOLATION="true" if isolation else "false")
    hub = Hub(stack.url, stack.admin_token())
    times = []
    for i in range(spawns):
        name = f"iso-{tag}-{i}"
        hub.create_user(name)
        t0 = time.monotonic()
        hub.start(name, options={"profile": "cpu"})
        times.append(time.monotonic() - t0)
        hub.stop(name)
    return times


def remove_stand_ins() -> None:
    found = docker("ps", "-aq", "--filter", "label=gpuhub.bench=standin").stdout.split()
    if found:
        docker("rm", "-f", *found, check=False)


def many_servers(stack: Stack, n: int, sample: int) -> dict:
    stack.up(USER_NETWORK_ISOLATION="true")
    network = f"{stack.prefix}-net"
    names = [f"{stack.prefix}-standin-{i:03d}" for i in range(n)]
    remove_stand_ins()  # an interrupted run's
    t0 = time.monotonic()
    for name in names:  # the hub's image has Python; anything answering HTTP would do
        docker("run", "-d", "--name", name, "--network", network, "--label", "gpuhub.bench=standin",
               "--memory", "64m", "--entrypoint", "python", stack.env["HUB_IMAGE"], "-m", "http.server", "8888")
    started_s = time.monotonic() - t0
    try:
        time.sleep(6)  # one check interval of netguard's, and the servers' start
        ips = {name: json.loads(docker("inspect", name).stdout)[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
               for name in names}
        rules = subprocess.run(["iptables", "-S", "GPUHUB-FWD"], capture_output=True, text=True).stdout.count("-A ")
        rules += subprocess.run(["iptables", "-S", "GPUHUB-IN"], capture_output=True, text=True).stdout.count("-A ")
        targets = random.Random(1).sample(names[1:], min(sample, n - 1))
        probe = ("import socket, json, sys\nres = []\nfor ip in sys.argv[1:]:\n"
                 "    try:\n        socket.create_connection((ip, 8888), 2).close(); res.append(True)\n"
                 "    except OSError:\n        res.append(False)\nprint(json.dumps(res))")
        from_user = json.loads(docker("exec", names[0], "python", "-c", probe, *(ips[t] for t in targets)).stdout)
        node = ("const net=require('net');let left=%d,open=0;for(const ip of %s){const s=net.connect(8888,ip);"
                "s.setTimeout(2000);s.on('connect',()=>{open++;s.destroy();if(--left==0)console.log(open)});"
                "s.on('error',()=>{if(--left==0)console.log(open)});s.on('timeout',()=>{s.destroy()})}"
                % (len(targets), json.dumps([ips[t] for t in targets])))
        from_proxy = int(stack.compose("exec", "-T", "proxy", "node", "-e", node).stdout.strip() or 0)
        subnet = json.loads(docker("network", "inspect", network).stdout)[0]["IPAM"]["Config"][0]["Subnet"]
    finally:
        remove_stand_ins()
    return {"servers": n, "started_s": round(started_s, 1), "rules": rules, "subnet": subnet,
            "sampled": len(targets), "reachable_from_a_user": sum(from_user), "reachable_from_the_proxy": from_proxy}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--spawns", type=int, default=3)
    parser.add_argument("--sample", type=int, default=20)
    args = parser.parse_args()
    stack = Stack()
    stack.down()
    result: dict = {}
    try:
        times = {True: [], False: []}
        for r in range(args.rounds):
            for isolation in ((True, False) if r % 2 == 0 else (False, True)):
                times[isolation] += spawn_times(stack, isolation, args.spawns, f"{r}{'on' if isolation else 'off'}")
        on, off = statistics.median(times[True]), statistics.median(times[False])
        result["spawn"] = {"with_isolation_p50_s": round(on, 3), "without_p50_s": round(off, 3),
                           "ratio": round(on / off, 3), "samples_each": len(times[True]),
                           "with": [round(t, 3) for t in times[True]], "without": [round(t, 3) for t in times[False]]}
        result["many"] = many_servers(stack, args.servers, args.sample)
    finally:
        stack.down()
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "isolation-latest.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    many = result["many"]
    return 0 if many["reachable_from_a_user"] == 0 and many["reachable_from_the_proxy"] == many["sampled"] else 1


if __name__ == "__main__":
    sys.exit(main())
