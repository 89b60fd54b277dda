"""GPUs on a Docker Swarm, both ways (pure: engine JSON in, model out; no Docker calls).

Swarm has no device requests for services; GPUs are *generic resources*. Every node lists
its GPUs in daemon.json, one resource KIND per GPU so that the hub can ask for one specific
GPU (a pin, a reservation, the allocator's choice)::

    "node-generic-resources": ["gpu_45cbf7b3_f919_7228_7a26_b06628ebefa1=GPU-45cbf7b3-f919-7228-7a26-b06628ebefa1"]

(`kind_for` makes the kind from the UUID; `node_config` writes these lines.) A service asks
for one unit of its GPU's kind plus a placement constraint on its node; Swarm hands the unit
out exclusively, records it in ``Task.AssignedGenericResources`` and sets
``DOCKER_RESOURCE_<KIND>=<uuid>`` in the container, which the NVIDIA runtime (default
runtime, ``swarm-resource`` naming those variables) turns into exactly that GPU.

Decoding reads the engine only: the inventory from the nodes' ``Description.Resources``,
the holders from the tasks' ``AssignedGenericResources`` (a task of any service blocks its
GPU, ours or not), and which nodes take no new servers (drained, paused, down).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from hub.gpus.claim import Labels
from hub.gpus.model import GPU, Holder

ENV_PREFIX = "DOCKER_RESOURCE_"
_UUID_PREFIXES = ("GPU-", "MIG-")
_NOT_NAME = re.compile(r"[^a-z0-9]+")
# Desired states of a task Swarm still means to run (later ones: it is being shut down)
LIVE_DESIRED = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running")
# Observed states of a task that runs or is on its way; the rest have ended
LIVE_OBSERVED = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running")


def kind_for(uuid: str) -> str:
    """The generic-resource kind of one GPU: its UUID in lower case, non-alphanumerics as "_"
    ("GPU-45cb-..." -> "gpu_45cb_..."), so that the container's variable
    ``DOCKER_RESOURCE_GPU_45CB_...`` is a valid shell name."""
    return _NOT_NAME.sub("_", uuid.lower()).strip("_")


def env_name(kind: str) -> str:
    """The variable Swarm sets in the container for a kind (swarmkit upper-cases it)."""
    return (ENV_PREFIX + kind).upper()


def node_config(gpus: Iterable[GPU]) -> dict[str, Any]:
    """What an admin adds to a node's daemon.json and to the NVIDIA runtime's config.toml
    (``swarm-resource``) for these GPUs of that node."""
    gpus = list(gpus)
    return {
        "node-generic-resources": [f"{kind_for(g.uuid)}={g.uuid}" for g in gpus],
        "swarm-resource": ",".join(env_name(kind_for(g.uuid)) for g in gpus),
    }


def reservation(kind: str) -> list[dict[str, Any]]:
    """``Resources.Reservations.GenericResources`` for one unit of one GPU's kind."""
    return [{"DiscreteResourceSpec": {"Kind": kind, "Value": 1}}]


def placement(node_id: str) -> str:
    """The placement constraint that keeps a service on the node of its GPU."""
    return f"node.id=={node_id}"


@dataclass(frozen=True)
class SwarmNode:
    """One node as the hub uses it: where its GPUs are, and whether new servers may go there."""
    id: str
    hostname: str
    availability: str = "active"  # active, pause, drain (the admin's `docker node update`)
    state: str = "ready"  # ready, down, unknown, disconnected (the manager's view)
    gpus: tuple[tuple[str, str], ...] = ()  # (kind, uuid), in the node's order
    role: str = "worker"
    labels: tuple[tuple[str, str], ...] = ()  # the node's labels (Spec.Labels), sorted

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def takes_servers(self) -> bool:
        return self.ready and self.availability == "active"

    @property
    def why_not(self) -> str:
        """Why no new server goes to this node ("" if they may)."""
        if not self.ready:
            return f"node {self.hostname} is {self.state}"
        if self.availability != "active":
            return f"node {self.hostname} is {'drained' if self.availability == 'drain' else 'paused'}"
        return ""


def nodes_from_engine(nodes: Iterable[Mapping[str, Any]]) -> list[SwarmNode]:
    """SwarmNodes from `docker node inspect`-style dicts (docker-py ``nodes()``), by hostname."""
    found = []
    for n in nodes:
        desc = n.get("Description") or {}
        spec, status = n.get("Spec") or {}, n.get("Status") or {}
        gpus = []
        for res in (desc.get("Resources") or {}).get("GenericResources") or []:
            named = res.get("NamedResourceSpec") or {}
            value = str(named.get("Value") or "")
            if named.get("Kind") and value.startswith(_UUID_PREFIXES):
                gpus.append((str(named["Kind"]), value))
        found.append(SwarmNode(id=n.get("ID", ""), hostname=desc.get("Hostname") or n.get("ID", ""),
                               availability=str(spec.get("Availability") or "active").lower(),
                               state=str(status.get("State") or "unknown").lower(), gpus=tuple(gpus),
                               role=str(spec.get("Role") or "worker").lower(),
                               labels=tuple(sorted((spec.get("Labels") or {}).items()))))
    return sorted(found, key=lambda node: (node.hostname, node.id))


@dataclass
class SwarmInventory:
    """The swarm's GPUs with their nodes, and what the spawner needs to ask for one."""
    gpus: list[GPU] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # uuid -> generic-resource kind
    node_ids: dict[str, str] = field(default_factory=dict)  # uuid -> node id (placement)
    unavailable: dict[str, str] = field(default_factory=dict)  # uuid -> why no new server there
    shared_kinds: list[str] = field(default_factory=list)  # kinds naming several GPUs of a node
    node_states: dict[str, SwarmNode] = field(default_factory=dict)  # node id -> node

    def request(self, uuid: str) -> tuple[str, str]:
        """(kind, node id) to ask Swarm for this GPU."""
        return self.kinds[uuid], self.node_ids[uuid]


_CONSTRAINT = re.compile(r"^\s*(node\.(?:id|hostname|role|labels\.[^=!\s]+))\s*(==|!=)\s*(.+?)\s*$")


def node_matches(node: SwarmNode, constraints: Iterable[str]) -> bool:
    """Whether the node meets the placement constraints every user server gets (Swarm's
    syntax). Only node.id, node.hostname, node.role and node.labels.* are judged here; others
    (engine labels, platform) are left to Swarm."""
    for constraint in constraints:
        m = _CONSTRAINT.match(constraint)
        if not m:
            continue
        key, op, want = m.groups()
        if key.startswith("node.labels."):
            have = dict(node.labels).get(key[len("node.labels."):])
        else:
            have = {"node.id": node.id, "node.hostname": node.hostname, "node.role": node.role}[key]
        if (have == want) != (op == "=="):
            return False
    return True


def inventory_from_nodes(nodes: Iterable[SwarmNode], constraints: Iterable[str] = ()) -> SwarmInventory:
    """Every GPU of every node, ``GPU.node`` its hostname, indexes numbered across the swarm
    (nodes by hostname, each node's GPUs in its daemon.json order), so "GPU #3" names one GPU.

    A GPU listed on two nodes is kept on the first (a copied daemon.json): the other node's
    line is a mistake the admin must fix, and two GPUs of one UUID would break exclusivity.
    GPUs of nodes the placement ``constraints`` leave out take no new servers (a server placed
    on one would wait for ever).
    """
    constraints = list(constraints)
    inv = SwarmInventory()
    for node in nodes:
        inv.node_states[node.id] = node
        kinds_here = [k for k, _ in node.gpus]
        for kind, uuid in node.gpus:
            if uuid in inv.kinds:
                continue
            if kinds_here.count(kind) > 1 and kind not in inv.shared_kinds:
                inv.shared_kinds.append(kind)
            inv.gpus.append(GPU(uuid=uuid, index=len(inv.gpus), name="MIG" if uuid.startswith("MIG-") else "GPU",
                                node=node.hostname))
            inv.kinds[uuid], inv.node_ids[uuid] = kind, node.id
            if not node.takes_servers:
                inv.unavailable[uuid] = node.why_not
            elif not node_matches(node, constraints):
                inv.unavailable[uuid] = f"node {node.hostname} is left out by the placement constraints"
    return inv


def task_is_live(task: Mapping[str, Any], nodes: Mapping[str, SwarmNode]) -> bool:
    """Whether a task runs or is about to: Swarm still wants it running, it has not ended, and
    its node (once it has one) is in the swarm and not down. A task of a node that went down
    holds nothing, even though its last reported state was "running". A node the manager has
    not heard from yet ("unknown", e.g. just after a manager restart) is given the benefit of
    the doubt: its servers are not stopped and its GPUs stay held (never booked twice)."""
    if str(task.get("DesiredState") or "").lower() not in LIVE_DESIRED:
        return False
    if str((task.get("Status") or {}).get("State") or "").lower() not in LIVE_OBSERVED:
        return False
    node_id = task.get("NodeID")
    return not node_id or (node_id in nodes and nodes[node_id].state != "down")


def assigned_uuids(task: Mapping[str, Any]) -> list[str]:
    """The GPU UUIDs Swarm assigned to a task (its named generic resources). The engine's
    task JSON calls them ``GenericResources`` (moby's types.swarm.Task; seen on Docker 26),
    where the API reference says ``AssignedGenericResources``: both are read."""
    uuids = []
    for res in task.get("GenericResources") or task.get("AssignedGenericResources") or []:
        value = str((res.get("NamedResourceSpec") or {}).get("Value") or "")
        if value.startswith(_UUID_PREFIXES):
            uuids.append(value)
    return uuids


def holders_from_tasks(tasks: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]],
                       nodes: Iterable[SwarmNode], label_prefix: str = "gpuhub") -> dict[str, list[Holder]]:
    """uuid -> Holders, from the live tasks' assigned units (a task not scheduled yet: its
    service's ``gpu.uuid`` label); whose server it is from the service's labels (a service
    without them is named by its name: it blocks its GPU too)."""
    by_id = {n.id: n for n in nodes}
    specs = {s.get("ID"): s for s in services}
    keys = Labels(label_prefix)
    held: dict[str, list[Holder]] = {}
    for task in tasks:
        if not task_is_live(task, by_id):
            continue
        service = specs.get(task.get("ServiceID")) or {}
        spec = service.get("Spec") or {}
        labels = spec.get("Labels") or {}
        try:
            since = float(labels[keys.gpu_since])
        except (KeyError, TypeError, ValueError):
            since = None
        holder = Holder(labels.get(keys.user) or spec.get("Name") or str(task.get("ServiceID") or ""),
                        labels.get(keys.server) or "", since)
        # Until Swarm schedules it, a task has no unit yet: its service's label claims the GPU
        # the hub chose, so that the next decision cannot hand that GPU out again.
        claimed = [u for u in (labels.get(keys.gpu_uuid) or "").split(",") if u.startswith(_UUID_PREFIXES)]
        for uuid in assigned_uuids(task) or claimed:
            held.setdefault(uuid, []).append(holder)
    return held


def releasing_from_tasks(tasks: Iterable[Mapping[str, Any]], nodes: Iterable[SwarmNode]) -> dict[str, str]:
    """uuid -> the node of a task Swarm is shutting down that still has its GPU's unit: its
    service was removed (or updated), so the hub counts the GPU free, but Swarm's scheduler
    hands the unit on only once the node reports the task ended (the container stopped). A
    service given that GPU meanwhile waits "pending" (insufficient resources); the allocator
    offers GPUs whose unit is released first. A task of a down node releases nothing (and
    holds nothing: ``task_is_live``)."""
    by_id = {n.id: n for n in nodes}
    found: dict[str, str] = {}
    for task in tasks:
        if str(task.get("DesiredState") or "").lower() in LIVE_DESIRED:
            continue
        if str((task.get("Status") or {}).get("State") or "").lower() not in LIVE_OBSERVED:
            continue
        node = by_id.get(task.get("NodeID") or "")
        if node is None or node.state == "down":
            continue
        for uuid in assigned_uuids(task):
            found[uuid] = node.hostname
    return found


def service_state(tasks: Iterable[Mapping[str, Any]], nodes: Iterable[SwarmNode]) -> tuple[bool, str]:
    """(running, why not) for one service's tasks: running while one task is live, or while
    it has none yet (Swarm makes it right after the service); else the latest task's end, in
    words for the user."""
    by_id = {n.id: n for n in nodes}
    tasks = sorted(tasks, key=lambda t: str((t.get("Status") or {}).get("Timestamp") or t.get("UpdatedAt") or ""))
    if not tasks or any(task_is_live(t, by_id) for t in tasks):
        return True, ""
    last = tasks[-1]
    node = by_id.get(last.get("NodeID") or "")
    status = last.get("Status") or {}
    state = str(status.get("State") or "").lower()
    if node is not None and node.state == "down" and state in LIVE_OBSERVED:
        return False, f"The node {node.hostname} your server ran on went {node.state}; start it again to run elsewhere."
    if node is not None and node.availability == "drain":
        return False, (f"The node {node.hostname} your server ran on was drained by an administrator; "
                       "start it again to run elsewhere.")
    if node is None and last.get("NodeID") and state in LIVE_OBSERVED:
        return False, "The node your server ran on left the swarm; start it again to run elsewhere."
    detail = status.get("Err") or status.get("Message") or state or "ended"
    return False, f"Your server's task ended ({state or 'unknown'}: {detail})."


def service_claim(kind: str, node_id: str) -> dict[str, Any]:
    """What a service carries to hold one GPU: one unit of the GPU's kind, on its node."""
    return {"generic_resources": reservation(kind), "constraints": [placement(node_id)]}


_SMI_GPU = re.compile(r"^GPU (\d+): (.*?) \(UUID: (GPU-[0-9a-fA-F-]+)\)\s*$")
_SMI_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[0-9a-fA-F-]+)\)\s*$")


def gpus_from_smi_list(text: str) -> list[GPU]:
    """The GPUs of ``nvidia-smi -L`` output; a GPU split into MIG instances is listed as its
    instances (what a server can be given), as NVML discovery does."""
    gpus: list[GPU] = []
    parent: GPU | None = None
    split: set[str] = set()
    for line in text.splitlines():
        if m := _SMI_GPU.match(line):
            parent = GPU(uuid=m.group(3), index=int(m.group(1)), name=m.group(2))
            gpus.append(parent)
        elif (m := _SMI_MIG.match(line)) and parent is not None:
            gpus.append(GPU(uuid=m.group(2), index=parent.index, name=f"{parent.name} MIG {m.group(1)}",
                            parent_uuid=parent.uuid))
            split.add(parent.uuid)
    return [g for g in gpus if g.uuid not in split]


def node_config_text(gpus: list[GPU]) -> str:
    """What `gpuhub-gpus swarm-node-config` prints: the lines to add on this node, and where."""
    config = node_config(gpus)
    daemon = json.dumps({"node-generic-resources": config["node-generic-resources"],
                         "default-runtime": "nvidia"}, indent=2)
    listed = "\n".join(f"#   {g.index}: {g.name} {g.uuid}" for g in gpus)
    return (f"# This node's GPUs, one Swarm generic-resource kind each (docs/swarm.md):\n{listed}\n"
            f"# 1. Merge into /etc/docker/daemon.json (keep its other keys and the \"runtimes\" entry\n"
            f"#    `nvidia-ctk runtime configure --runtime=docker` wrote), then restart Docker:\n{daemon}\n"
            f"# 2. In /etc/nvidia-container-runtime/config.toml, at the top level (toolkit >= 1.19.0):\n"
            f"swarm-resource = \"{config['swarm-resource']}\"\n")


ENDED = ("complete", "shutdown", "failed", "rejected", "orphaned", "remove")


def start_state(tasks: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """("running" | "waiting" | "ended", what Swarm says) for a starting service, from its
    latest task: its state and message, or why it ended (Swarm's error)."""
    tasks = sorted(tasks, key=lambda t: str((t.get("Status") or {}).get("Timestamp") or t.get("UpdatedAt") or ""))
    if not tasks:
        return "waiting", "new"
    status = tasks[-1].get("Status") or {}
    state = str(status.get("State") or "new").lower()
    said = status.get("Err") or status.get("Message") or state
    if state == "running":
        return "running", said
    if state in ENDED or str(tasks[-1].get("DesiredState") or "").lower() in ENDED:
        return "ended", f"{state}: {said}"
    return "waiting", f"{state}: {said}" if said != state else state


# A node's new state, or availability, after which its servers are gone or going: Swarm marks
# a node "down" once it missed its heartbeats (the dispatcher heartbeat period, 5 s by default,
# times 3), "disconnected" when its session ended; a drained node's tasks are shut down.
NODE_LOST_STATES = ("down", "disconnected")


@dataclass(frozen=True)
class NodeChange:
    """A node event (``docker events --filter type=node``) that ends the node's servers."""
    node_id: str
    hostname: str
    what: str  # "down", "disconnected", "drain", "removed"

    @property
    def message(self) -> str:
        """For the user whose server ran there (as ``service_state`` says it)."""
        if self.what == "drain":
            return (f"The node {self.hostname} your server ran on was drained by an administrator; "
                    "start it again to run elsewhere.")
        if self.what == "removed":
            return "The node your server ran on left the swarm; start it again to run elsewhere."
        return f"The node {self.hostname} your server ran on went {self.what}; start it again to run elsewhere."


def node_change(event: Mapping[str, Any]) -> NodeChange | None:
    """The change an engine event reports, if it ends the node's servers (else None). The
    manager's node events carry the new state (``state.new``) and availability
    (``availability.new``) in the actor's attributes, and the hostname as ``name``."""
    if str(event.get("Type") or "") != "node":
        return None
    actor = event.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    node_id = str(actor.get("ID") or "")
    hostname = str(attrs.get("name") or node_id)
    if not node_id:
        return None
    action = str(event.get("Action") or "")
    if action == "remove":
        return NodeChange(node_id, hostname, "removed")
    if action != "update":
        return None
    state = str(attrs.get("state.new") or "").lower()
    if state in NODE_LOST_STATES:
        return NodeChange(node_id, hostname, state)
    if str(attrs.get("availability.new") or "").lower() == "drain":
        return NodeChange(node_id, hostname, "drain")
    return None
