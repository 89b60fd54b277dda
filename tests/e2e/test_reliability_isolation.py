"""Isolation, seen from inside: a user's own kernel (the code a semi-trusted user runs) looks
at its privileges and tries to reach the engine, the hub's state, the proxy's API, another
user's server and a GPU it was not given. Each check counts as passed or failed."""
import json

import pytest
import requests

import reliability
from hub.gpus.inventory import discover
from consoleclient import user_token
from hubclient import UserServer
from storm import gpu_holdings

PROBE = r'''
import json, os, re, socket, urllib.request, urllib.error
def status(url, token=None):
    headers = {"Authorization": "token " + token} if token else {}
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return "unreachable"
def tcp(host, port):
    try:
        socket.create_connection((host, port), 2).close(); return True
    except OSError:
        return False
def first(*paths):  # cgroup v2, else v1
    return next(open(p).read().strip() for p in paths if os.path.exists(p))
proc = open("/proc/self/status").read()
field = lambda k: re.search(k + r":\s+(\S+)", proc).group(1)
route = [l.split() for l in open("/proc/net/route").read().splitlines()[1:]]
gateway = next(socket.inet_ntoa(bytes.fromhex(r[2])[::-1]) for r in route if r[1] == "00000000")
own = os.environ["JUPYTERHUB_API_TOKEN"]
print(json.dumps({
  "uid": os.getuid(), "gid": os.getgid(), "no_new_privs": field("NoNewPrivs"),
  "cap_eff": field("CapEff"), "cap_bnd": field("CapBnd"), "cap_prm": field("CapPrm"),
  "pids_max": first("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
  "memory_max": first("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
  "docker_socket": [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/var/run/docker", "/run/containerd")
                    if os.path.exists(p)],
  "docker_tcp": [f"{h}:{p}" for h in (gateway, "hub", "proxy") for p in (2375, 2376) if tcp(h, p)],
  "state_visible": os.path.exists("/srv/jupyterhub/state"),
  "hub_users_with_own_token": status("http://hub:8081/hub/api/users", own),
  "proxy_api_with_own_token": status("http://proxy:8001/api/routes", own),
  "proxy_api_without_token": status("http://proxy:8001/api/routes"),
  "other_server_without_token": status(OTHER + "api/contents"),
  "other_server_with_own_token": status(OTHER + "api/contents", own),
  "gpu_nodes": sorted(n for n in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", n)),
  "gpu_env": os.environ.get("FAKE_GPU_UUID"),
  "sudo": [p for p in ("/usr/bin/sudo", "/bin/su", "/usr/bin/su") if os.path.exists(p) and os.stat(p).st_mode & 0o4000],
}))
'''


def probe(server: UserServer, other_url: str) -> dict:
    return json.loads(server.execute(f"OTHER = {other_url!r}\n" + PROBE).strip().splitlines()[-1])


@pytest.mark.needs_gpus(1)
def test_user_containers_are_isolated(stack, hub):
    gpu_user, cpu_user = "iso-gpu", "iso-cpu"
    servers = {}
    for name, profile in ((gpu_user, "gpu"), (cpu_user, "cpu")):
        token = user_token(hub, name)
        servers[name] = UserServer(stack.url, hub.start(name, options={"profile": profile})["url"], token)
    containers = {n: stack.container_of(n) for n in servers}
    ips = {n: next(iter(stack.inspect(c)["NetworkSettings"]["Networks"].values()))["IPAddress"]
           for n, c in containers.items()}
    direct = {n: f"http://{ips[n]}:8888/user/{n}/" for n in servers}
    seen = {gpu_user: probe(servers[gpu_user], direct[cpu_user]), cpu_user: probe(servers[cpu_user], direct[gpu_user])}
    limits = {n: stack.inspect(c)["HostConfig"] for n, c in containers.items()}
    held = gpu_holdings(stack)[containers[gpu_user]]
    results = []

    def check(name, passed, evidence):
        results.append((name, reliability.isolation(name, bool(passed), json.dumps(evidence))))

    for n, s in seen.items():
        check(f"{n}: runs as a non-root user", s["uid"] != 0 and s["gid"] != 0, [s["uid"], s["gid"]])
        check(f"{n}: no-new-privileges", s["no_new_privs"] == "1", s["no_new_privs"])
        check(f"{n}: no capabilities", {s["cap_eff"], s["cap_bnd"], s["cap_prm"]} == {"0000000000000000"},
              [s["cap_eff"], s["cap_bnd"]])
        check(f"{n}: no setuid sudo/su to become root", not s["sudo"], s["sudo"])
        check(f"{n}: pids limit", s["pids_max"] == str(limits[n]["PidsLimit"]) and s["pids_max"] != "max", s["pids_max"])
        check(f"{n}: memory limit", s["memory_max"] == str(limits[n]["Memory"]) and s["memory_max"] != "max",
              s["memory_max"])
        check(f"{n}: no Docker socket", not s["docker_socket"], s["docker_socket"])
        check(f"{n}: no Docker API over TCP", not s["docker_tcp"], s["docker_tcp"])
        check(f"{n}: hub database not visible", not s["state_visible"], s["state_visible"])
        check(f"{n}: own token cannot list users", s["hub_users_with_own_token"] == 403, s["hub_users_with_own_token"])
        # the network rules (hub/netguard.py) drop these before any answer; with
        # USER_NETWORK_ISOLATION=false the servers themselves refuse (403)
        refused = (401, 403, 302, "unreachable")
        check(f"{n}: proxy API refused", s["proxy_api_with_own_token"] in refused
              and s["proxy_api_without_token"] in refused,
              [s["proxy_api_with_own_token"], s["proxy_api_without_token"]])
        check(f"{n}: other user's server refused without auth",
              s["other_server_without_token"] in refused, s["other_server_without_token"])
        check(f"{n}: other user's server refused with own token",
              s["other_server_with_own_token"] in refused, s["other_server_with_own_token"])
    # Through the proxy from outside, with one user's token, the other's server: refused.
    through = requests.get(f"{stack.url}/user/{cpu_user}/api/status", timeout=10, allow_redirects=False,
                           headers={"Authorization": f"token {servers[gpu_user].token}"}).status_code
    check("other user's server through the proxy with a user's token", through in (401, 403, 302), through)
    index = next(g.index for g in discover()[0] if g.uuid == held)
    check("GPU container sees exactly its GPU", seen[gpu_user]["gpu_nodes"] == [f"nvidia{index}"]
          and seen[gpu_user]["gpu_env"] == held, [seen[gpu_user]["gpu_nodes"], held])
    check("CPU container sees no GPU", seen[cpu_user]["gpu_nodes"] == [] and not seen[cpu_user]["gpu_env"],
          seen[cpu_user]["gpu_nodes"])
    hub_info = stack.inspect(f"{stack.prefix}-hub-1")
    secret = stack.compose("exec", "-T", "hub", "sh", "-c",
                           "stat -c '%a %U' /srv/jupyterhub/state/jupyterhub_cookie_secret; "
                           "wc -c < /srv/jupyterhub/state/jupyterhub_cookie_secret").stdout.split()
    check("cookie secret persisted on the state volume, private", secret[:2] == ["600", "jupyterhub"]
          and int(secret[2]) >= 64 and not any("COOKIE_SECRET" in e for e in hub_info["Config"]["Env"]), secret)
    for name in servers:
        hub.stop(name)
    failed = [n for n, ok in results if not ok]
    assert not failed, failed
