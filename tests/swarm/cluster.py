"""A Docker Swarm of test hosts on one machine (test scaffolding for the multi-node tests).

Three docker-in-docker nodes (tests/swarm/node/: the host's Docker 26 bundle, bind-mounted,
in a privileged container from the local Debian base) on their own bridge network; node 1 is
the manager, 2 and 3 join as workers. Each node's daemon.json lists its fake GPUs as Swarm
generic resources, one kind per GPU (hub/gpus/swarm.py's node_config, the lines an admin
writes), and makes the fake NVIDIA runtime (tests/swarm/node/fake-nvidia-runtime) the default
runtime, so that `DOCKER_RESOURCE_<KIND>` decides what a container sees, as with the real one.

Images reach the nodes without a registry: `docker save | docker exec -i node docker load`,
skipped when the node already holds the same image id.

    python tests/swarm/cluster.py up|deploy|logs|down|purge|status   # by hand; the tests use these classes

Everything it creates is named gpuhubswarm-*: the network, the node containers and their
volumes (each node's /var/lib/docker, kept by `down` as an image cache, removed by `purge`; and
one volume all nodes mount at /srv/shared: the test stand-in for an NFS export every GPU server
mounts, as SWARM_VOLUME_ROOT; this sandbox's kernel has no NFS).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

PREFIX = "gpuhubswarm"
NETWORK = f"{PREFIX}-net"
NODE_IMAGE = f"{PREFIX}/node:test"
SHARED_VOLUME = f"{PREFIX}-shared"
SHARED_MOUNT = "/srv/shared"
ENGINE_BUNDLE = "/opt/docker-engine/root"  # ../shared/engine/install-docker.sh
GPUS_PER_NODE = 2


def fake_uuid(node: int, gpu: int) -> str:
    """Distinct per node and GPU, recognisable in logs: GPU-5a4b0000-0000-4000-8000-00000000NN0G."""
    return f"GPU-5a4b0000-0000-4000-8000-{node:010d}{gpu:02d}"


def run(*args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(args)[:300]}: exit {out.returncode}: {out.stderr.strip()[-2000:]}")
    return out


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run("docker", *args, **kwargs)


@dataclass
class Node:
    index: int

    @property
    def name(self) -> str:
        return f"{PREFIX}-node{self.index}"

    @property
    def volume(self) -> str:
        return f"{self.name}-data"

    @property
    def gpus(self) -> list[str]:
        return [fake_uuid(self.index, g) for g in range(GPUS_PER_NODE)]

    @property
    def manager(self) -> bool:
        return self.index == 1

    def daemon_json(self) -> dict:
        from hub.gpus.swarm import node_config  # what docs/swarm.md tells an admin to write
        config = node_config(SimpleNamespace(uuid=u) for u in self.gpus)
        return {
            "node-generic-resources": config["node-generic-resources"],
            "default-runtime": "nvidia",
            "runtimes": {"nvidia": {"path": "/usr/local/bin/fake-nvidia-runtime"}},
            # overlay2 on the node's own volume; no userland proxy, iptables for published ports
            "storage-driver": "overlay2",
            "userland-proxy": False,
            "log-driver": "json-file",
            "log-opts": {"max-size": "5m"},
            # CDI on, with cdi_spec()'s fake GPUs: a single-host hub against this engine
            # (swarm-storm's reference) requests them by CDI, as on this machine's engine
            "features": {"cdi": True},
        }, config["swarm-resource"]

    def cdi_spec(self) -> str:
        """This node's fake GPUs as a CDI spec in the form of this machine's /etc/cdi (index
        and UUID names, a harmless /dev/null as the device): a compose hub on this node's
        engine finds them there. Swarm ignores it (its GPUs are the generic resources)."""
        lines = ['cdiVersion: "0.6.0"', "kind: nvidia.com/gpu", "devices:"]
        for i, uuid in enumerate(self.gpus):
            for name in (f'"{i}"', uuid):
                lines += [f"- name: {name}", "  containerEdits:", f"    env: [FAKE_GPU_UUID={uuid}]",
                          f"    deviceNodes: [{{path: /dev/nvidia{i}, hostPath: /dev/null}}]"]
        lines += ["containerEdits:", "  env: [NVIDIA_VISIBLE_DEVICES=void]"]
        return "\n".join(lines) + "\n"

    def running(self) -> bool:
        out = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return out.returncode == 0 and out.stdout.strip() == "true"

    def exists(self) -> bool:
        return docker("inspect", self.name, check=False).returncode == 0

    def ip(self) -> str:
        return docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}',
                      self.name).stdout.strip()

    def sh(self, script: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
        """A shell command inside the node (its own docker CLI talks to its own engine)."""
        return docker("exec", "-i", self.name, "sh", "-c", script, check=check, timeout=timeout, input=input)

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return docker("exec", self.name, "docker", *args, check=check, timeout=timeout)

    def engine_ok(self) -> bool:
        if not self.running():
            return False
        out = self.docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
        return out.returncode == 0 and bool(out.stdout.strip())

    def create(self) -> None:
        config, swarm_resource = self.daemon_json()
        docker("run", "-d", "--privileged", "--name", self.name, "--hostname", self.name,
               "--network", NETWORK, "--label", f"{PREFIX}.node={self.index}",
               "-v", f"{self.volume}:/var/lib/docker",
               "-v", f"{ENGINE_BUNDLE}:{ENGINE_BUNDLE}:ro",
               "-v", f"{SHARED_VOLUME}:{SHARED_MOUNT}",
               # the checkout at its own path, read-only: compose run against a node's engine
               # (swarm-storm's single-host reference) bind-mounts the hub's config from it
               "-v", f"{ROOT}:{ROOT}:ro",
               "-e", f"NODE_DAEMON_JSON={json.dumps(config)}",
               "-e", f"NODE_FAKE_GPUS={','.join(self.gpus)}",
               "-e", f"NODE_SWARM_RESOURCE={swarm_resource}",
               "-e", f"NODE_CDI_SPEC={self.cdi_spec()}",
               NODE_IMAGE)

    def image_id(self, image: str) -> str | None:
        out = self.docker("image", "inspect", "-f", "{{.Id}}", image, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    def logs(self, tail: int = 200) -> str:
        out = self.sh(f"tail -n {tail} /var/log/dockerd.log; echo '--- fake-nvidia-runtime ---';"
                      " tail -n 50 /var/log/fake-nvidia-runtime.log 2>/dev/null", check=False)
        return out.stdout + out.stderr


SLIM_NOTEBOOK = f"{PREFIX}/notebook-slim:test"
# What the slim image drops: PyTorch (CPU build) and what only it needs; ~1.3 GB of 1.8 GB.
SLIM_DROPS = ("torch", "sympy", "mpmath", "networkx")
PYTHON_BASE = "local/python:3.11-bookworm"
SLIM_SOURCE = "gpuhub/pytorch-notebook:test"  # `make test-images`


def slim_dockerfile(source: str, config: dict, source_id: str) -> str:
    """The single-user test image without PyTorch, for three nodes to load quickly: the
    source image's files minus SLIM_DROPS, squashed into one layer, and its own settings
    (environment, labels, user, entrypoint, command), so the spawner starts it exactly as the
    full one."""
    lines = [f"FROM {source} AS full", "USER root",
             f"RUN pip uninstall -y -q {' '.join(SLIM_DROPS)} && rm -rf /root/.cache",
             "FROM scratch", "COPY --from=full / /"]
    lines += [f"ENV {json.dumps(k)}={json.dumps(v)}" for k, v in
              (e.split("=", 1) for e in config.get("Env") or [])]
    labels = {**(config.get("Labels") or {}), f"{PREFIX}.source": source_id}
    lines += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()]
    lines += [f"EXPOSE {port}" for port in config.get("ExposedPorts") or {}]
    if config.get("WorkingDir"):
        lines.append(f"WORKDIR {config['WorkingDir']}")
    if config.get("User"):
        lines.append(f"USER {config['User']}")
    if config.get("Entrypoint"):
        lines.append(f"ENTRYPOINT {json.dumps(config['Entrypoint'])}")
    if config.get("Cmd"):
        lines.append(f"CMD {json.dumps(config['Cmd'])}")
    return "\n".join(lines) + "\n"


class Cluster:
    def __init__(self, nodes: int = 3):
        self.nodes = [Node(i) for i in range(1, nodes + 1)]

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def node(self, name_or_hostname: str) -> Node:
        for n in self.nodes:
            if name_or_hostname in (n.name, str(n.index)):
                return n
        raise KeyError(name_or_hostname)

    # ---- life cycle ----------------------------------------------------------------------------

    @staticmethod
    def node_source() -> str:
        """A digest of tests/swarm/node/ (the node image's label): a changed entrypoint or
        runtime rebuilds the image, and nodes of an older image are replaced."""
        import hashlib
        digest = hashlib.sha256()
        for f in sorted((HERE / "node").iterdir()):
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
        return digest.hexdigest()[:16]

    def build(self) -> None:
        docker("build", "-q", "--label", f"{PREFIX}.node-source={self.node_source()}", "-t", NODE_IMAGE,
               str(HERE / "node"), timeout=600)

    def image_current(self) -> bool:
        out = docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{PREFIX}.node-source"}}}}', NODE_IMAGE,
                     check=False)
        return out.returncode == 0 and out.stdout.strip() == self.node_source()

    def nodes_current(self) -> bool:
        """Every node runs the current node image, with the current settings (its CDI spec)."""
        want = docker("image", "inspect", "-f", "{{.Id}}", NODE_IMAGE, check=False).stdout.strip()
        for n in self.nodes:
            out = docker("inspect", "-f", "{{.Image}}|{{range .Config.Env}}{{println .}}{{end}}", n.name, check=False)
            if out.returncode or out.stdout.split("|", 1)[0] != want or "NODE_CDI_SPEC=" not in out.stdout:
                return False
        return True

    def healthy(self) -> bool:
        """Every node's engine answers and the manager sees every node Ready and active."""
        if not all(n.engine_ok() for n in self.nodes):
            return False
        out = self.manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}", check=False)
        if out.returncode:
            return False
        ready = {line.split()[0] for line in out.stdout.splitlines() if line.split()[1:] == ["Ready", "Active"]}
        return {n.name for n in self.nodes} <= ready

    def up(self) -> None:
        """Bring the nodes up and form the swarm; reuses a healthy one."""
        if not self.image_current():
            self.build()
        if self.healthy() and self.nodes_current():
            self.set_heartbeat()
            return
        self.down()
        docker("network", "create", NETWORK)
        for n in self.nodes:
            n.create()
        for n in self.nodes:
            self._wait(n.engine_ok, f"{n.name}'s engine", 90)
        mip = self.manager.ip()
        self.manager.docker("swarm", "init", "--advertise-addr", mip)
        token = self.manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for n in self.nodes[1:]:
            n.docker("swarm", "join", "--token", token, f"{mip}:2377", timeout=60)
        self._wait(self.healthy, "every node Ready", 60)
        self.set_heartbeat()

    def set_heartbeat(self) -> None:
        """The dispatcher heartbeat period (`docker swarm update --dispatcher-heartbeat`) from
        GPUHUB_SWARM_DISPATCHER_HEARTBEAT (e.g. 2s); unset: Swarm's default, 5 s. A node is
        marked down about 3 periods after its last heartbeat (docs/swarm.md)."""
        period = os.environ.get("GPUHUB_SWARM_DISPATCHER_HEARTBEAT", "5s")
        self.manager.docker("swarm", "update", "--dispatcher-heartbeat", period)

    def heartbeat_s(self) -> float:
        """The swarm's dispatcher heartbeat period now, in seconds."""
        out = self.manager.docker("info", "--format", "{{json .Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}")
        return int(out.stdout.strip() or 0) / 1e9  # JSON: nanoseconds

    def node_state(self, node: Node) -> str:
        out = self.manager.docker("node", "inspect", "-f", "{{.Status.State}}", node.name, check=False, timeout=20)
        return out.stdout.strip()

    def down(self, purge: bool = False) -> None:
        """Remove the nodes and their network. Each node's /var/lib/docker volume stays (after
        the node leaves the swarm), as a cache of images and build layers for the next run,
        unless purge; the shared directory's volume goes."""
        for n in self.nodes:
            if n.running():
                n.docker("swarm", "leave", "--force", check=False, timeout=60)
        docker("rm", "-f", "-v", *[n.name for n in self.nodes], check=False)
        docker("volume", "rm", "-f", SHARED_VOLUME, *([n.volume for n in self.nodes] if purge else []), check=False)
        docker("network", "rm", NETWORK, check=False)

    def kill(self, node: Node) -> None:
        """A node dies: its engine and every container on it stop at once (no graceful leave)."""
        docker("kill", node.name)

    def revive(self, node: Node, timeout: float = 90) -> None:
        docker("start", node.name)
        self._wait(node.engine_ok, f"{node.name}'s engine", timeout)

    @staticmethod
    def _wait(predicate, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not after {timeout}s")
            time.sleep(1)

    # ---- images ----------------------------------------------------------------------------

    def load(self, image: str, nodes: list[Node] | None = None, source: Node | None = None) -> list[str]:
        """Copy an image to the nodes that lack it (from this machine's engine, or from another
        node); returns their names."""
        read = ["docker", "exec", source.name, "docker"] if source else ["docker"]
        want = run(*read, "image", "inspect", "-f", "{{.Id}}", image).stdout.strip()
        todo = [n for n in (nodes or self.nodes) if n.image_id(image) != want]
        for n in todo:
            with subprocess.Popen([*read, "save", image], stdout=subprocess.PIPE) as save:
                subprocess.run(["docker", "exec", "-i", n.name, "docker", "load", "-q"], stdin=save.stdout,
                               check=True, capture_output=True, timeout=600)
            if n.image_id(image) != want:
                raise RuntimeError(f"{image} did not arrive on {n.name}")
        return [n.name for n in todo]

    def logs(self) -> str:
        parts = []
        for n in self.nodes:
            parts.append(f"===== {n.name} =====\n{n.logs() if n.running() else '(not running)'}")
        if self.manager.running():
            parts.append("===== services =====\n" + self.manager.docker(
                "service", "ls", check=False).stdout)
            parts.append(self.manager.sh("for s in $(docker service ls -q); do docker service ps --no-trunc $s; done",
                                         check=False).stdout)
        return "\n".join(parts)


# ---- the hub on the swarm ------------------------------------------------------------------

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from hubclient import Stack, read_env_file  # noqa: E402  (tests/e2e's client: login, tokens)


STACK_ENV = HERE / "stack.env"


@dataclass(frozen=True)
class Holding:
    """A running task of one of the hub's user services, as the engine reports it."""
    user: str
    service: str
    node: str  # hostname
    gpus: tuple[str, ...]  # the units Swarm assigned
    container: str
    label_gpu: str  # the service's gpuhub.gpu.uuid label


class SwarmStack(Stack):
    """The hub and proxy deployed with swarm/stack.yml on the cluster's manager (what
    `make swarm-up` does on a real manager), reached on the manager's published port."""

    def __init__(self, cluster: Cluster, env_file: Path = STACK_ENV):
        self.cluster = cluster
        self.env_file = env_file
        self.env = read_env_file(env_file)
        self.prefix = self.env["HUB_NAME_PREFIX"]
        self.manager_ip = cluster.manager.ip()
        self.url = f"http://{self.manager_ip}:{self.env['HUB_PUBLISH'].rsplit(':', 1)[-1]}"
        self.engine_url = f"tcp://{self.manager_ip}:2375"

    # the manager's engine, from this machine's docker CLI and docker-py
    def docker(self, *args: str, check: bool = True, timeout: float = 120, env: dict | None = None,
               **kwargs) -> subprocess.CompletedProcess:
        return run("docker", "-H", self.engine_url, *args, check=check, timeout=timeout,
                   env={**os.environ, **(env or {})}, **kwargs)

    @property
    def api(self):
        import docker as docker_py
        if not hasattr(self, "_api"):
            self._api = docker_py.APIClient(base_url=self.engine_url, version="auto", timeout=60)
        return self._api

    def images(self) -> dict[str, list[str]]:
        """The stack's images on the nodes, built by the manager's own engine rather than this
        machine's (shared by several users, its builds queue behind one lock): the hub image
        from this checkout (the build cache makes an unchanged checkout quick); the proxy image
        and the full single-user test image copied from this machine (`make test-images`); the
        slim single-user image made from that on the manager and copied node to node."""
        m = self.cluster.manager
        missing = [i for i in (PYTHON_BASE, self.env["PROXY_IMAGE"], SLIM_SOURCE)
                   if docker("image", "inspect", i, check=False).returncode]
        if missing:
            raise RuntimeError(f"images {missing} are missing on this machine: build them with `make test-images`")
        loaded = {i: self.cluster.load(i, [m]) for i in (PYTHON_BASE, self.env["PROXY_IMAGE"], SLIM_SOURCE)}
        self.docker("build", "-q", "-t", self.env["HUB_IMAGE"], "-f", "images/hub/Dockerfile",
                    "--build-arg", f"BASE_IMAGE={PYTHON_BASE}", ".", cwd=ROOT, timeout=900)
        slim, source_id = self.env["SINGLEUSER_IMAGE"], m.image_id(SLIM_SOURCE)
        have = m.docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{PREFIX}.source"}}}}', slim, check=False)
        if have.returncode or have.stdout.strip() != source_id:
            config = json.loads(m.docker("image", "inspect", "-f", "{{json .Config}}", SLIM_SOURCE).stdout)
            self.docker("build", "-q", "-t", slim, "-", input=slim_dockerfile(SLIM_SOURCE, config, source_id), timeout=900)
        loaded[slim] = self.cluster.load(slim, self.cluster.nodes[1:], source=m)
        return loaded

    def exports(self) -> dict[str, str]:
        out = run(sys.executable, "-m", "hub.settings.host_setup", "--env-file", str(self.env_file), "--swarm", cwd=ROOT)
        env = {}
        for line in out.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0] if value else ""
        return env

    def up(self, timeout: float = 180) -> None:
        self.docker("node", "update", "--label-add", "gpuhub.hub=true", self.cluster.manager.name)
        self.docker("stack", "deploy", "--detach=true", "-c", "swarm/stack.yml", self.prefix,
                    env=self.exports(), timeout=300)
        self.wait_healthy(timeout)

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/hub/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def wait_healthy(self, timeout: float = 180) -> None:
        Cluster._wait(self.healthy, f"the hub at {self.url}", timeout)

    def restart_hub(self, timeout: float = 180) -> float:
        """The hub's task replaced (what a redeploy or a crash does); seconds until healthy."""
        service = f"{self.prefix}_hub"

        def running_tasks() -> set[str]:
            return {t["ID"] for t in self.api.tasks(filters={"service": service, "desired-state": "running"})
                    if t["Status"]["State"] == "running"}
        old = running_tasks()
        t0 = time.monotonic()
        self.docker("service", "update", "--force", "--detach=true", service)
        # the old task answers /hub/health until it is replaced: wait for the new one
        Cluster._wait(lambda: bool(running_tasks() - old) and self.healthy(), "the new hub task, healthy", timeout)
        return time.monotonic() - t0

    def user_services(self) -> list[dict]:
        return self.api.services(filters={"label": f"gpuhub.instance={self.prefix}"})

    def user_containers(self) -> list[str]:
        return [s["Spec"]["Name"] for s in self.user_services()]

    def down(self) -> None:
        """The stack, users' services, and the state the next deploy must not find."""
        if not self.cluster.manager.running():
            return
        self.docker("stack", "rm", self.prefix, check=False)
        services = self.user_containers()
        if services:
            self.docker("service", "rm", *services, check=False)
        deadline = time.monotonic() + 60
        for node in self.cluster.nodes:
            if not node.running():
                continue
            while node.sh(f"docker ps -q --filter label=com.docker.stack.namespace={self.prefix}"
                          f" --filter label=gpuhub.instance={self.prefix}", check=False).stdout.strip() \
                    and time.monotonic() < deadline:
                time.sleep(1)
            node.sh(f"docker ps -aq --filter label=com.docker.swarm.service.name | xargs -r docker rm -f >/dev/null;"
                    f" docker volume ls -q | grep '^{self.prefix}' | xargs -r docker volume rm -f >/dev/null;"
                    f" rm -rf {SHARED_MOUNT}/*", check=False)
        # `stack rm` returns before its network is gone; a deploy meanwhile would find it dying
        deadline = time.monotonic() + 60
        while self.docker("network", "inspect", f"{self.prefix}-net", check=False).returncode == 0:
            self.docker("network", "rm", f"{self.prefix}-net", check=False)
            if time.monotonic() > deadline:
                raise TimeoutError(f"network {self.prefix}-net still there after 60s")
            time.sleep(1)
        configs = self.docker("config", "ls", "-q", "--filter", f"name={self.prefix}-", check=False).stdout.split()
        if configs:
            self.docker("config", "rm", *configs, check=False)

    def logs(self) -> str:
        parts = [self.cluster.logs()]
        for svc in ("hub", "proxy"):
            parts.append(f"===== {self.prefix}_{svc} =====\n" + self.docker(
                "service", "logs", "--no-task-ids", "--tail", "300", f"{self.prefix}_{svc}", check=False).stdout)
        return "\n".join(parts)

    # ---- what the engine says ------------------------------------------------------------------

    def node_names(self) -> dict[str, str]:
        return {n["ID"]: n["Description"]["Hostname"] for n in self.api.nodes()}

    def holdings(self) -> list[Holding]:
        """Every running task of the hub's user services: where, with which GPUs."""
        services = {s["ID"]: s for s in self.user_services()}
        names = self.node_names()
        held = []
        for task in self.api.tasks(filters={"desired-state": "running"}):
            service = services.get(task["ServiceID"])
            if service is None or task["Status"]["State"] != "running":
                continue
            labels = service["Spec"].get("Labels") or {}
            # the engine's key; the API reference calls it AssignedGenericResources
            units = tuple(r["NamedResourceSpec"]["Value"] for r in task.get("GenericResources") or []
                          if "NamedResourceSpec" in r)
            held.append(Holding(user=labels.get("gpuhub.user", ""), service=service["Spec"]["Name"],
                                node=names.get(task.get("NodeID"), task.get("NodeID")), gpus=units,
                                container=task["Status"].get("ContainerStatus", {}).get("ContainerID", ""),
                                label_gpu=labels.get("gpuhub.gpu.uuid", "")))
        return held

    def sees(self, holding: Holding) -> tuple[list[str], str]:
        """(the GPUs the fake runtime gave the container, NVIDIA_VISIBLE_DEVICES of its main
        process: the runtime sets it in the OCI spec, which `docker exec` does not inherit)."""
        node = self.cluster.node(holding.node)
        out = node.sh(f"docker exec {holding.container} sh -c 'cat /run/fake-nvidia/visible-gpus;"
                      " echo ---; tr \"\\\\0\" \"\\\\n\" < /proc/1/environ'")
        files, _, environ = out.stdout.partition("---\n")
        env = next((line.split("=", 1)[1] for line in environ.splitlines()
                    if line.startswith("NVIDIA_VISIBLE_DEVICES=")), "")
        return [line for line in files.splitlines() if line], env


def duplicates(holdings: list[Holding]) -> int:
    """GPU units held by more than one running task (must be 0)."""
    seen = Counter((h.node, g) for h in holdings for g in h.gpus)
    return sum(n - 1 for n in seen.values() if n > 1)


def main(argv: list[str]) -> int:
    cluster = Cluster()
    command = argv[1] if len(argv) > 1 else "status"
    if command == "up":
        cluster.up()
    elif command == "deploy":  # nodes, images and the hub: then http://<manager>:8000/
        cluster.up()
        stack = SwarmStack(cluster)
        stack.images()
        stack.up()
        print(f"hub: {stack.url}/ (admin / {stack.env['HUB_ADMIN_PASSWORD']})")
    elif command in ("down", "purge"):
        cluster.down(purge=command == "purge")
        return 0
    elif command == "logs":
        print(SwarmStack(cluster).logs() if cluster.manager.running() else "not up")
        return 0
    print(cluster.manager.docker("node", "ls", check=False).stdout or "not up")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
