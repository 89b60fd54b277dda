"""The spawner of a hub over a Docker Swarm: each user's server a Swarm service on any node
with a free GPU (docs/swarm.md). Glue only, as GPUDockerSpawner is: the same profiles, turns,
progress, queue, quotas and GPU policy (pins, drains, reservations, access), with the GPU
decisions made by ``SwarmGPUManager`` from the swarm's nodes and tasks (hub/gpus/swarm.py).

A GPU server's service reserves one unit of its GPU's generic-resource kind and is constrained
to the GPU's node; Swarm enforces exclusivity and the NVIDIA runtime (``swarm-resource``) maps
the unit to the device. A server without a GPU reserves none and runs with
``NVIDIA_VISIBLE_DEVICES=void``, so the NVIDIA runtime as default runtime hands it nothing.
Volumes are ``Mount`` objects of the ``local`` driver, with NFS options when configured, so a
user's files follow them to any node (DockerSpawner's SwarmSpawner turns named volumes into
bind mounts: dockerspawner#536).
"""
from __future__ import annotations

import asyncio
import time

import docker
import docker.errors

from docker.types import DriverConfig, EndpointSpec, Mount
from docker.utils import kwargs_from_env
from dockerspawner import SwarmSpawner
from traitlets import List, Unicode

from hub.gpus.manager import GPUManager, SwarmGPUManager
from hub.gpus.swarm import nodes_from_engine, service_state, start_state
from hub.hub_process.spawner import course_volumes, port_probe, specs
from hub.hub_process.spawner.node_events import NodeEvents, NodeLoss
from hub.hub_process.spawner.spawner import PROCESS, GPUDockerSpawner


class SwarmProcess:
    """What the swarm spawners of one hub process share: the node events and what the hub
    does when a node is lost (hub/hub_process/spawner/node_events.py)."""
    loss: NodeLoss | None = None
    events: NodeEvents | None = None
    folder_slots: asyncio.Semaphore | None = None  # one-off folder containers at once (a burst)


NODES = SwarmProcess()

def nfs_driver(server: str, export: str, options: str, volume: str = "") -> DriverConfig | None:
    """The ``local`` driver's options that put a volume on ``server:export/volume`` (the
    export itself without a volume); None without a server (plain node-local volumes)."""
    if not server:
        return None
    opts = ",".join(o for o in (f"addr={server}", options) if o)
    path = "/".join(p for p in (export.rstrip("/"), volume) if p)
    return DriverConfig("local", {"type": "nfs", "o": opts, "device": f":{path}"})


def volume_mount(source: str, target: str, read_only: bool, driver: DriverConfig | None) -> Mount:
    """A named volume (on NFS with ``driver``), or a bind where the source is a host path."""
    if source.startswith("/"):
        return Mount(target, source, type="bind", read_only=read_only)
    return Mount(target, source, type="volume", read_only=read_only, driver_config=driver)


class GPUSwarmSpawner(GPUDockerSpawner, SwarmSpawner):
    gpu_place = "This swarm"
    swarm_nfs_server = Unicode("", config=True, help="""NFS server of users' and courses' volumes
        (host name or address, as every node reaches it). Each volume is the directory
        <swarm_nfs_export>/<volume name> there, mounted by the `local` driver on whichever node
        the server runs, so files follow the user. Empty: volumes are local to each node.""")
    swarm_nfs_export = Unicode("/srv/gpuhub", config=True, help="""The exported directory on
        swarm_nfs_server under which each volume is a subdirectory.""")
    swarm_nfs_options = Unicode("rw,nfsvers=4.1,hard", config=True, help="""NFS mount options of
        the volumes (the `o` option of the local driver; addr= is added).""")
    swarm_volume_root = Unicode("", config=True, help="""A directory present on every node at
        the same path with the same contents (a file server the admin mounts on each node, e.g.
        at /mnt/gpuhub): each volume is then the bind mount <this>/<volume name>, made by the hub
        before its first use. The alternative to swarm_nfs_server (Docker mounts NFS itself);
        set one of the two. Empty: not used.""")
    swarm_constraints = List(Unicode(), config=True, help="""Placement constraints for every
        user server, e.g. ["node.role==worker"] to keep them off the managers; a GPU server is
        also constrained to its GPU's node.""")

    # ---- GPUs: the swarm's, from its nodes and tasks -------------------------------------

    async def gpu_manager(self) -> GPUManager:
        if PROCESS.gpu_manager is None:
            manager = SwarmGPUManager(self.gpu_intent_file, self.label_prefix, self.gpu_policy,
                                      tuple(self.swarm_constraints))
            async with manager.lock:  # read the nodes once: "no GPUs" is decided before the lock
                await manager.reconcile(self.engine)
            if PROCESS.gpu_manager is None:  # another spawn may have won the await
                PROCESS.gpu_manager = manager
                self.log.info("Swarm GPUs: %s", ", ".join(f"{g.index}:{g.node}/{g.uuid}" for g in manager.inventory)
                              or "none")
        return PROCESS.gpu_manager

    async def check_host(self, manager, image_cuda) -> None:
        """The host gate reads this host's NVML and toolkit; a swarm's GPUs are on other hosts:
        each node is checked there (`gpuhub-gpus doctor`, docs/swarm.md)."""

    async def wait_for_memory(self) -> None:
        """Servers run on the swarm's nodes, not on the hub's host, whose memory says nothing of
        theirs: Swarm places a task only where its memory reservation fits."""

    # ---- the service ------------------------------------------------------------------------

    def docker(self, method, *args, **kwargs):
        if method == "create_service":
            self.emit_progress(75, "Creating the service")
            kwargs = self.harden_service_kwargs(kwargs)
        return super().docker(method, *args, **kwargs)

    def nfs(self, volume: str) -> DriverConfig | None:
        return nfs_driver(self.swarm_nfs_server, self.swarm_nfs_export, self.swarm_nfs_options, volume)

    def volume_mount(self, source: str, target: str, read_only: bool) -> Mount:
        """A user's or course's volume: under swarm_volume_root, on NFS, or node-local."""
        if self.swarm_volume_root and not source.startswith("/"):
            source = f"{self.swarm_volume_root.rstrip('/')}/{source}"
        return volume_mount(source, target, read_only, self.nfs(source))

    @property
    def mounts(self) -> list[Mount]:
        """The user's volumes and their courses' materials, as Mount objects (NFS when
        configured), and /dev/shm of shm_size."""
        found = [self.volume_mount(source, vol["bind"], vol["mode"] == "ro") for source, vol in self.volume_binds.items()]
        for volume, target, read_only in course_volumes.mounts(
                course_volumes.user_courses(self.user), self.user.name, self.prefix, self.course_materials_dir):
            found.append(self.volume_mount(volume, target, read_only))
        found.append(Mount("/dev/shm", None, type="tmpfs", tmpfs_size=int(self.shm_size)))
        return found

    def harden_service_kwargs(self, kwargs: dict) -> dict:
        """Labels, the GPU claim, limits and what hardening a service allows, applied last
        (hub/hub_process/spawner/specs.py: the same spec as a container on one host)."""
        kwargs = specs.service_kwargs(kwargs, self.server_spec(), tuple(self.swarm_constraints))
        # dnsrr: the service name resolves to the task's address (no virtual IP, so no IPVS,
        # which some kernels lack)
        kwargs["endpoint_spec"] = EndpointSpec(mode="dnsrr")
        return kwargs

    async def start(self):
        # A new user's folders on the file server take a one-off container: made while the start
        # does its other steps (image, turn, GPU), awaited before the service is created.
        self._phases = [("begin", time.time())]
        if NODES.folder_slots is None:
            NODES.folder_slots = asyncio.Semaphore(max(1, self.concurrent_starts or 1))

        async def folders():
            async with NODES.folder_slots:
                await self.make_folders(course_volumes.user_courses(self.user))
        self._folders = asyncio.ensure_future(folders())
        try:
            return await super().start()
        finally:
            folders, self._folders = self._folders, None
            if not folders.done():
                folders.cancel()
            elif not folders.cancelled():
                folders.exception()  # retrieved: it failed the start already, or nobody asked

    async def prepare_volumes(self, courses: dict) -> None:
        folders = getattr(self, "_folders", None)
        if folders is not None:  # begun by start()
            await asyncio.shield(folders)
        else:
            await self.make_folders(courses)
        self.phase("folders ready")

    async def make_folders(self, courses: dict) -> None:
        """On a swarm, a volume is made by its driver on the node the server lands on; on NFS
        (or under swarm_volume_root) its directory must exist first (a mount of a missing
        directory fails), owned by the notebook user: a one-off root container on the hub's node
        makes the missing ones (the file server must let this node's root chown: docs/swarm.md)."""
        if not (self.swarm_nfs_server or self.swarm_volume_root):
            return
        targets = {**{n: vol["bind"] for n, vol in self.volume_binds.items()},
                   **{v: target for v, target, _ in course_volumes.mounts(
                       courses, self.user.name, self.prefix, self.course_materials_dir)}}
        names = [n for n in targets if not n.startswith("/") and n not in PROCESS.nfs_dirs]
        if not names:
            return
        self.emit_progress(65, "Preparing your folders on the file server")
        if self.swarm_volume_root:
            export = Mount("/nfs", self.swarm_volume_root, type="bind")
        else:
            export = Mount("/nfs", f"{self.prefix}-nfs-export", type="volume",
                           driver_config=nfs_driver(self.swarm_nfs_server, self.swarm_nfs_export, self.swarm_nfs_options))
        # A new folder gets what the image has at its mount point, as Docker fills a new named
        # volume (WELCOME.md in the work folder); a bind mount would start empty. mkdir, copy,
        # then chown: `install -d -o` or `cp -a` chmod after the chown, which needs CAP_FOWNER.
        script = ('for spec; do d=${spec%%:*}; from=${spec#*:}; [ -d "/nfs/$d" ] || { mkdir "/nfs/$d" && '
                  '{ [ ! -d "$from" ] || cp -R "$from/." "/nfs/$d/"; } && chown -R 1000:100 "/nfs/$d"; } '
                  '|| exit 1; done')
        await course_volumes.as_root(
            self.engine, self.image, ["sh", "-c", script, "sh", *(f"{n}:{targets[n]}" for n in names)],
            self.client.create_host_config(mounts=[export], **course_volumes.AS_ROOT_HOST_CONFIG),
            {self.labels.instance: self.prefix}, f"make the folders {', '.join(names)} on the file server",
            wait_removal=False)
        PROCESS.nfs_dirs.update(names)

    async def remove_object(self):
        if NODES.loss is not None:
            NODES.loss.forget(self)
        try:
            await super().remove_object()
        except docker.errors.NotFound:  # removed already: done
            self.log.info("Service %s was gone already", self.service_name)

    # ---- lost nodes: from the manager's node events, not the next poll -----------------------

    def events_client(self) -> docker.APIClient:
        """A client of its own for the event stream (it blocks a connection for good), made as
        DockerSpawner makes the shared one."""
        kwargs = {"version": "auto", **kwargs_from_env(), **self.client_kwargs}
        if self.tls_config:
            kwargs["tls"] = docker.tls.TLSConfig(**self.tls_config)
        return docker.APIClient(**kwargs)

    def watch_nodes(self) -> None:
        """Listen to the swarm's node events (once per hub process) and count this server among
        those to poll at once when its node is lost."""
        if NODES.loss is None:
            NODES.loss = NodeLoss(self.engine, self.gpu_audit_file, PROCESS.gpu_queue.wake)
            NODES.events = NodeEvents(self.events_client, NODES.loss.changed)
            NODES.events.start(asyncio.get_running_loop())
        NODES.loss.track(self)

    # ---- is it running? ---------------------------------------------------------------------

    async def service_running(self) -> tuple[bool, str]:
        """(running, why not) from the service's tasks and the nodes' states."""
        tasks, nodes = await asyncio.gather(self.engine("tasks", filters={"service": self.service_name}),
                                            self.engine("nodes"))
        return service_state(tasks, nodes_from_engine(nodes))

    async def poll(self):
        if not self.object_id or await self.get_object() is None:
            return 0
        running, why = await self.service_running()
        if running:
            PROCESS.stop_reasons.running(self._server_key)
            self.watch_nodes()  # also the servers a restarted hub finds running
            return None
        if self._server_key not in PROCESS.stop_reasons:
            message = why or "Your server's service has no task any more."
            self.log.warning("Server of %s stopped on its own: %s", self._log_name, message)
            PROCESS.stop_reasons.noticed(self._server_key, message)
            PROCESS.gpu_queue.wake()
        return 1

    async def create_object(self):
        if not getattr(self, "_phases", None):
            self._phases = [("begin", time.time())]
        created = await super().create_object()
        if self.assignment is not None:  # the allocator's choice: when it was made
            self._phases.append(("GPU chosen", self.assignment.since))
        self._phases.append(("service created", time.time()))
        return created

    def phase(self, name: str) -> None:
        phases = getattr(self, "_phases", None)
        if phases is not None and name not in dict(phases):
            phases.append((name, time.time()))

    def log_phases(self) -> None:
        """One line per start in the hub's log: where its time went, in seconds since the
        spawner's start began (docs/swarm.md)."""
        phases = getattr(self, "_phases", None)
        if not phases:
            return
        begin = phases[0][1]
        self.log.info("Start of %s on the swarm: %s", self._log_name,
                      ", ".join(f"{name} {at - begin:.2f}s" for name, at in phases[1:]))
        self._phases = None

    async def start_object(self) -> None:
        """Until the service's task runs; what Swarm says while it waits (scheduling, pulling,
        a GPU unit still held by a stopping task) goes to the progress stream, and a task that
        ends (rejected: no such image on the node, an NFS mount that failed) fails the start
        with Swarm's error at once, not at the start timeout. The task is asked for every 0.1 s
        for the first 10 s (a call to the manager; a task usually runs within a second), then
        less often."""
        told, delay, began = "", 0.1, time.monotonic()
        while True:
            state, said = start_state(await self.engine("tasks", filters={"service": self.service_name}))
            if state == "running":
                self.phase("task running")
                self.watch_nodes()
                return
            if state == "ended":
                raise RuntimeError(f"Your server's service did not start on the swarm ({said}).")
            if not said.startswith(("new", "pending")):
                self.phase("task scheduled")
            if said != told:
                told = said
                self.emit_progress(80, f"Swarm: {said}")
            await asyncio.sleep(delay)
            if time.monotonic() - began > 10:
                delay = min(delay * 1.5, 5.0)

    async def wait_for_port(self, ip: str, port: int) -> None:
        async def still_running() -> bool:
            return (await self.service_running())[0]
        await port_probe.wait_for_port(ip, port, self.http_timeout, still_running)
        self.phase("port open")
        self.log_phases()

