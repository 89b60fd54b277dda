"""A user's server as the engine is told to run it: the labels, the GPU's device request or
Swarm claim, the limits and the hardening, built from plain values (no spawner, no engine).

Both spawners apply these last to DockerSpawner's create arguments, so no admin ``extra_*``
option loosens them and a container on one host and a Swarm service carry the same labels
(gpu-reclaim's per-profile policy reads ``<prefix>.profile`` on both). The GPU travels from
the allocator's ``Assignment`` straight into the device request (one host) or the generic
resource claim (Swarm); nothing here reads it back.
"""
from __future__ import annotations

from dataclasses import dataclass

from hub.gpus.claim import Assignment, Labels
from hub.gpus.swarm import service_claim
from hub.hub_process.spawner import hardening


@dataclass(frozen=True)
class ServerSpec:
    """What one start of one server must carry, whichever engine runs it."""
    keys: Labels
    user: str
    server: str  # "" for the default server
    instance: str  # the deployment's prefix: whose containers these are
    profile: str | None = None
    assignment: Assignment | None = None
    shm_size: int = 1024**3
    pids_limit: int = 1024
    image_healthcheck: bool = False
    # (volume, target, read-only): course materials (course_volumes.mounts)
    course_mounts: tuple[tuple[str, str, bool], ...] = ()

    def labels(self) -> dict[str, str]:
        """Whose server it is, its profile and its GPU."""
        return {**self.keys.owner(self.user, self.server, self.instance),
                **({self.keys.profile: self.profile} if self.profile else {}),
                **(self.assignment.labels(self.keys) if self.assignment else {})}


def container_kwargs(kwargs: dict, spec: ServerSpec) -> dict:
    """``create_container`` arguments for one host: labels, the GPU by UUID (or none), limits,
    hardening and course binds, over what DockerSpawner built."""
    kwargs = dict(kwargs)
    host_config = dict(kwargs.get("host_config") or {})
    host_config.update(
        ShmSize=spec.shm_size,
        PidsLimit=spec.pids_limit,
        SecurityOpt=["no-new-privileges=true"],
        CapDrop=["ALL"],
        MaskedPaths=hardening.masked_paths(),  # Docker's, and the host's other GPUs (hardening.py)
        DeviceRequests=spec.assignment.device_requests() if spec.assignment else [],
    )
    host_config["Binds"] = [*(host_config.get("Binds") or []),
                            *(f"{volume}:{target}:{'ro' if read_only else 'rw'}"
                              for volume, target, read_only in spec.course_mounts)]
    kwargs["host_config"] = host_config
    if not spec.image_healthcheck:
        kwargs["healthcheck"] = {"test": ["NONE"]}
    kwargs["labels"] = {**(kwargs.get("labels") or {}), **spec.labels()}
    return kwargs


def service_kwargs(kwargs: dict, spec: ServerSpec, constraints: tuple[str, ...] = ()) -> dict:
    """``create_service`` arguments for a Swarm: the same labels on the service and its
    container, the GPU unit as a generic-resource reservation on its node, limits and what
    hardening a service allows."""
    kwargs = dict(kwargs)
    task = kwargs["task_template"]
    labels = spec.labels()
    kwargs["labels"] = {**(kwargs.get("labels") or {}), **labels}
    container = task["ContainerSpec"]
    container["Labels"] = {**(container.get("Labels") or {}), **labels}
    container["CapabilityDrop"] = ["ALL"]
    # Engine API 1.44 (Docker 25, which this deployment needs) and newer; older ignore it
    container["Privileges"] = {**(container.get("Privileges") or {}), "NoNewPrivileges": True}
    if not spec.image_healthcheck:
        container["Healthcheck"] = {"Test": ["NONE"]}
    resources = task.setdefault("Resources", {})
    resources.setdefault("Limits", {})["Pids"] = spec.pids_limit
    placement = task.setdefault("Placement", {})
    wanted = [*(placement.get("Constraints") or []), *constraints]
    if spec.assignment is not None:
        claim = service_claim(spec.assignment.kind, spec.assignment.node_id)
        resources.setdefault("Reservations", {})["GenericResources"] = claim["generic_resources"]
        wanted += claim["constraints"]
    placement["Constraints"] = wanted
    # A server whose container ends stays ended: the hub notices (poll) and the user starts
    # it again, on any node with a free GPU; Swarm must not restart it behind the hub.
    task["RestartPolicy"] = {"Condition": "none", "MaxAttempts": 0}
    return kwargs
