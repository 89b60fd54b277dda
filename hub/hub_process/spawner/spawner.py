"""The hub's spawner: DockerSpawner with one exclusive GPU per server, profiles, course
materials, start turns, progress, hardening and stop reasons. Glue only: each job is done by a
helper beside this file (profiles, course_volumes, progress, turns, stop_reasons, naming) or in
hub/gpus/, and none of them calls back into the spawner.

All Docker calls go through ``docker()`` (DockerSpawner's async wrapper), run on one thread
pool shared by all users, so one slow call (an image pull) does not queue every other user's
calls behind it as DockerSpawner's single thread does. ``create_container`` calls are
completed there with the settings no admin ``extra_*`` option may loosen.

GPUs: one ``GPUManager`` per hub process decides, under one lock, from the engine's live
containers (hub/gpus/manager.py); the container is created while the lock is held and carries
its ``Assignment`` (hub/gpus/claim.py): a label and a device request by UUID. A container
that gets no GPU runs with ``NVIDIA_VISIBLE_DEVICES=void`` so that no runtime default can hand
it one.
"""
import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
from dockerspawner import DockerSpawner
from jupyterhub.traitlets import ByteSpecification
from tornado import web
from traitlets import Bool, Callable, CaselessStrEnum, Int, List, TraitError, Unicode, default, validate

from hub.gpus.allocator import first_free
from hub.gpus.claim import NO_GPU_ENV, Assignment, Labels
from hub.gpus.gate import HostGate, Refused
from hub.gpus.health import DEFAULT_TOOLKIT_MIN, TORCH_CUDA_LABEL
from hub.gpus.manager import GPUManager
from hub.gpus.model import ACCESS_REFUSED, NoGPUAvailable
from hub.gpus.queue import GPUQueue, Waiter
from hub.common import profiles
from hub.hub_process.spawner import course_volumes, hardening, naming, port_probe, start_command
from hub.hub_process.spawner.progress import ProgressLog, PullProgress
from hub.hub_process.spawner.running import RunningContainers
from hub.common.stop_reasons import ReasonFile, StopReasons, container_events, reason_from_events
from hub.hub_process.spawner.turns import StartTurns
from hub.usage import gate as usage_gate

@dataclass
class HubProcess:
    """What all spawners of one hub process share (one instance, ``PROCESS``)."""
    executor: ThreadPoolExecutor | None = None  # Docker calls
    gpu_manager: GPUManager | None = None  # created by the first spawn that needs it
    host_gate: HostGate | None = None  # host-health checks before a GPU is handed out
    turns: StartTurns = field(default_factory=StartTurns)
    stop_reasons: StopReasons = field(default_factory=StopReasons)
    running: RunningContainers = field(default_factory=RunningContainers)  # shared by all polls
    gpu_queue: GPUQueue = field(default_factory=GPUQueue)  # the line for GPUs (GPU_WHEN_FULL=queue)
    nfs_dirs: set[str] = field(default_factory=set)  # Swarm: volumes whose NFS folder exists


PROCESS = HubProcess()


def free_gpus(alloc, user: str = "", groups=(), now: float | None = None) -> int:
    """How many GPUs (or shared seats' GPUs) this user could be given now; at least 1 if a pin
    gives them one."""
    now = time.time() if now is None else now
    return max(len(alloc.candidates(user, groups, now)), int(alloc.could_allocate(user, groups, now)))


def recover_gpu_queue(queue_file: str, stop_reasons_file: str = "") -> list[dict]:
    """At hub start: the line is kept in ``queue_file``; the starts that waited in it when the
    last hub process ended are gone with it, so each of their users reads why on their next page
    load, and gets their old place back by pressing Start soon (GPUQueue.rejoin_window)."""
    PROCESS.gpu_queue.path = Path(queue_file)
    left = PROCESS.gpu_queue.recover()
    reasons = ReasonFile(stop_reasons_file) if stop_reasons_file else None
    for entry in left:
        if reasons is not None:
            reasons.put((entry["user"], entry.get("server", "")), (
                f"The hub restarted while your server waited in line for a GPU (number {entry.get('position')}). "
                "Press Start within 15 minutes to take your place in the line again."))
    return left


class GPUUnavailable(web.HTTPError):
    """No GPU for this server now: 503 with the message in the REST API's JSON error, and
    the same message on the spawn page (JupyterHub shows ``jupyterhub_message`` as it is)."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(status, message.replace("%", "%%"))
        self.jupyterhub_message = message


class GPUDockerSpawner(DockerSpawner):
    # Where the GPUs are, as a refusal names it.
    gpu_place = "This host"
    shm_size = ByteSpecification(1024**3, config=True, help="""Size of /dev/shm in the user's
        container (Docker's --shm-size). PyTorch's DataLoader workers pass batches through shared
        memory; Docker's default of 64M makes them fail with 'bus error' or 'No space left on device'.""")
    pids_limit = Int(1024, config=True, help="Most processes/threads a user's container may run "
                                             "(Docker's --pids-limit); stops fork bombs.")
    docker_threads = Int(8, config=True, help="Threads (and Docker API connections) shared by all "
                                              "spawners for Docker calls.")
    concurrent_starts = Int(config=True, help="""Most servers that start at the same time; the rest
        wait their turn (the spawn page says so). A turn lasts from creating the container until
        the server answers; image pulls happen before it. Default: the CPUs this hub may use, at
        least 2 (docs/performance.md).""")
    server_extensions_off = List(Unicode(), ["jupyter_lsp", "notebook_shim"], config=True, help="""
        Jupyter server extensions not loaded in users' servers. jupyter_lsp (installed with
        JupyterLab) scans the Python environment for language servers at every start, and the
        image has none; remove it from this list if your image adds some (e.g. python-lsp-server).
        notebook_shim carries settings written for the classic Notebook server (NotebookApp) over
        to Jupyter Server, and imports IPython to do so; the image's settings are Jupyter
        Server's own; remove it if your image keeps NotebookApp settings.""")
    label_prefix = Unicode("gpuhub", config=True, help="Prefix of the labels that name a "
                                                       "container's user and server (and its GPU).")
    gpu_enabled = Bool(True, config=True, help="Give each server one whole GPU of its own, by UUID, "
                                               "when the host has GPUs.")
    gpu_cpu_fallback = Bool(False, config=True, help="When no GPU is free, start the server without "
                                                     "a GPU instead of refusing it.")
    gpu_when_full = CaselessStrEnum(["refuse", "queue", "cpu"], config=True, help="""When no GPU is
        free: 'refuse' the start (503, with the message), 'queue' (wait in line, the spawn page and
        the progress stream show the position; the server starts by itself when a GPU frees), or
        'cpu' (start without a GPU). Default: 'cpu' if gpu_cpu_fallback, else 'refuse'.""")
    gpu_queue_max_wait = Int(4 * 3600, config=True, help="""Seconds a start may wait in line for a
        GPU before it gives up with a message. JupyterHub's start_timeout must allow this on top of
        the start itself (configure_spawner sets it so).""")
    gpu_request_style = Unicode("auto", config=True, help="""How containers are given their GPU:
        'cdi' (driver "cdi", device nvidia.com/gpu=<uuid>; Docker >= 25 with CDI and a CDI spec),
        'nvidia' (driver "nvidia", device_ids=[uuid]; NVIDIA Container Toolkit), or 'auto' (CDI when
        the engine has CDI enabled and the GPUs were found in a CDI spec, else nvidia).""")
    gpu_inventory_file = Unicode("", config=True, help="""YAML list of GPUs (gpus: [{uuid, index,
        name, memory_total_mib}]) for hosts where neither NVML nor a CDI spec is visible to the
        hub. Used only when those find none.""")
    gpu_cdi_dirs = List(Unicode(), ["/etc/cdi", "/var/run/cdi"], config=True,
                        help="Directories with the host's CDI specs (mounted read-only into the hub).")
    gpu_policy = Callable(first_free, config=True, help="""Which free GPU a server gets:
        ``policy(candidates, held, username) -> GPU | None`` (see hub/gpus/allocator.py). Default:
        the lowest-index free GPU. Candidates never include a held, drained or someone else's
        pinned GPU, whatever the policy.""")
    gpu_intent_file = Unicode("gpu-intent.json", config=True, help="Where admin intent (pins, "
                                                                     "drains) is kept; on the hub's state volume.")
    gpu_audit_file = Unicode("gpu-audit.jsonl", config=True, help="The GPU console's audit log, where the "
                                                                  "hub records GPUs it drains for being unhealthy.")
    gpu_toolkit_version = Unicode("", config=True, help="""The host's NVIDIA Container Toolkit version
        (NVIDIA_CTK_VERSION, read by `make up`); empty: not known, the CVE check does not block.""")
    gpu_toolkit_min_version = Unicode(DEFAULT_TOOLKIT_MIN, config=True, help="""Below this toolkit
        version no GPU is handed out (hub/gpus/health.py lists the CVEs), unless gpu_toolkit_override.""")
    gpu_toolkit_override = Bool(False, config=True, help="Hand GPUs out even with a toolkit below "
                                                         "gpu_toolkit_min_version (the admin accepts the risk).")
    course_materials_dir = Unicode("/home/jovyan/work/courses", config=True, help="""Where each
        course's materials volume (<prefix>-course-<course>) is mounted, as <this>/<course>:
        read-only for the course's students, writable for its teachers and TAs. Inside the work
        folder, so JupyterLab's file browser shows it.""")
    name_scheme = CaselessStrEnum(list(naming.SCHEMES), "gpuhub", config=True, help="""How users'
        containers and volumes are named: 'gpuhub' (readable, bounded: hub/hub_process/spawner/naming.py) or
        'dockerspawner' (a stock DockerSpawner's escaping, for a hub moved from one: its users'
        volumes are then found as they are). Names of plain usernames (lowercase letters, digits,
        dashes) are the same in both. With 'gpuhub', a start warns when the user has a volume in
        the stock naming and none in ours (docs/operations.md, "Moving from a stock DockerSpawner").""")
    image_healthcheck = Bool(False, config=True, help="""Keep the Docker HEALTHCHECK of the
        user's image. Off by default: nothing reads a user container's health (the hub polls its
        servers), and the engine runs the check as a new process in every container every few
        seconds, which on a host full of idle servers costs more than the servers themselves
        (docs/performance.md, "Idle servers").""")
    usage_db = Unicode("gpu-usage.sqlite", config=True, help="""The GPU usage store (SQLite, written by the
        GPU console: hub/usage/), read at each GPU start for the user's quotas; on the state volume.""")
    gpu_quota_default = Unicode("", config=True, help="""Every user's GPU-hours per rolling window, e.g.
        '20h/7d' ('' for no limit); quotas set in the GPU console apply too (docs/usage.md).""")
    stop_reasons_file = Unicode("", config=True, help="""JSON file where hub services (the GPU
        reclaim) leave why they stopped a server, for the user's next page load
        (hub/common/stop_reasons.py ReasonFile); a server's entry is removed when it starts again.
        Empty: none.""")
    profiles_file = Unicode("", config=True, help="""YAML file of server profiles users choose
        from (hub/common/profiles.py explains the format). Empty: no choice, every server gets
        this spawner's image and limits.""")

    gpu_uuid = None  # the GPU this server holds, if any (kept in the hub's database)
    assignment: Assignment | None = None  # the GPU of the start under way
    profile_slug = None
    _image_ready = None  # the image this start has pulled or found already
    _waiter: Waiter | None = None  # this start's place in the line for a GPU

    @default("gpu_when_full")
    def _default_gpu_when_full(self):
        return "cpu" if self.gpu_cpu_fallback else "refuse"

    @default("concurrent_starts")
    def _default_concurrent_starts(self):
        return max(2, len(os.sched_getaffinity(0)))

    @validate("concurrent_starts", "docker_threads")
    def _validate_at_least_one(self, proposal):
        if proposal.value < 1:
            name = proposal.trait.name
            raise TraitError(f"{name}={proposal.value}: use at least 1 (default: "
                             f"{'the number of CPUs' if name == 'concurrent_starts' else 8})")
        return proposal.value

    @validate("pids_limit")
    def _validate_pids_limit(self, proposal):
        if proposal.value < 64:
            raise TraitError(f"pids_limit={proposal.value} is too low to start JupyterLab; use at least 64 (default 1024)")
        return proposal.value

    @validate("gpu_quota_default")
    def _validate_gpu_quota_default(self, proposal):
        if proposal.value:
            try:
                usage_gate.quotas.parse_spec(proposal.value)
            except ValueError as exc:
                raise TraitError(f"gpu_quota_default: {exc}") from None
        return proposal.value

    @validate("gpu_request_style")
    def _validate_gpu_request_style(self, proposal):
        if proposal.value not in ("auto", "cdi", "nvidia"):
            raise TraitError(f"gpu_request_style={proposal.value!r}: use 'auto', 'cdi' or 'nvidia'")
        return proposal.value

    @default("escape")
    def _default_escape(self):
        # DockerSpawner's own escaping is collision-free but unbounded (a 200-character
        # unicode name becomes 600 characters, too long for a volume's path).
        return naming.escape_for(self.name_scheme)

    @default("client_kwargs")
    def _default_client_kwargs(self):
        return {"max_pool_size": self.docker_threads}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What a profile leaves out comes from the configuration, not from the profile this
        # (long-lived) spawner applied last time.
        self._configured = (self.image, self.mem_limit, self.cpu_limit, self.gpu_enabled)
        self._configured_allowed_images = self.allowed_images
        self.progress_log = ProgressLog()

    @property
    def labels(self) -> Labels:
        return Labels(self.label_prefix)

    @property
    def executor(self) -> ThreadPoolExecutor:
        if PROCESS.executor is None:
            PROCESS.executor = ThreadPoolExecutor(self.docker_threads, thread_name_prefix="docker")
        return PROCESS.executor

    def engine(self, method, *args, **kwargs):
        """A Docker call on the shared pool, as it is (``docker()`` completes some calls)."""
        return asyncio.wrap_future(self.executor.submit(self._docker, method, *args, **kwargs))

    def docker(self, method, *args, **kwargs):
        if method == "pull":
            return asyncio.ensure_future(self.pull_with_progress(*args))
        if method == "create_container":
            self.emit_progress(75, "Creating container")
            kwargs = self.harden_create_kwargs(kwargs)
        return self.engine(method, *args, **kwargs)

    # ---- profiles: the spawn form and the options a user may give -------------------------

    def user_groups(self) -> set[str]:
        return {g.name for g in getattr(self.user, "groups", [])}

    @property
    def is_admin(self) -> bool:
        return bool(getattr(self.user, "admin", False))

    def load_profiles(self) -> list:
        """The profiles file, read on each use so an admin's edit applies at the next spawn."""
        if not self.profiles_file:
            return []
        image, mem_limit, cpu_limit, _ = self._configured
        return profiles.load_profiles(Path(self.profiles_file).read_text(), image, mem_limit, cpu_limit)

    @default("options_form")
    def _default_options_form(self):
        if not self.profiles_file:  # DockerSpawner's own: a choice of its allowed_images
            return DockerSpawner._default_options_form(self)
        return GPUDockerSpawner.render_options_form

    async def render_options_form(self) -> str:
        visible = [p for p in self.load_profiles() if p.visible_to(self.user_groups(), self.is_admin)]
        if len(visible) < 2 and not any(len(p.images) > 1 for p in visible):
            return ""  # nothing to choose: Start starts at once
        total = free = 0
        seats: dict = {}
        if self.gpu_enabled:
            manager = await self.gpu_manager()
            async with manager.lock:
                await manager.reconcile(self.engine)
                groups, now = self.user_groups(), time.time()
                total = len(manager.inventory)
                free = len(manager.allocator.free(self.user.name, groups, now))
                seats = {u: (left, manager.allocator.capacity(u))
                         for u, left in manager.allocator.seats(groups, now).items()}
        return profiles.render_form(visible, total, free, seats)

    @default("options_from_form")
    def _default_options_from_form(self):
        # The trait's default, not a method: c.Spawner.options_from_form stays configurable.
        if not self.profiles_file:  # DockerSpawner's own: the image field
            return DockerSpawner._default_options_from_form(self)
        return self.profile_options_from_form

    def profile_options_from_form(self, formdata):
        """Form fields to options, checked now so a bad or forged form gets its 400 at once."""
        options = profiles.options_from_form(formdata)
        profiles.choose(self.load_profiles(), options, self.user_groups(), self.is_admin)
        return options

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return GPUDockerSpawner.apply_profile

    def apply_profile(self, user_options: dict) -> None:
        """Check the user's options against the profiles offered to them and apply the chosen one.

        JupyterHub calls this before every start and turns an HTTPError raised here into that
        status with its message, before anything starts (JupyterHub >= 5.3)."""
        self.progress_log = ProgressLog()  # a new start
        self.profile_slug = None
        offered = self.load_profiles()
        if not offered:  # DockerSpawner's own options: an image of allowed_images (start() checks it)
            others = sorted(set(user_options) - {"image"})
            if others:
                raise web.HTTPError(400, f"this hub offers no server options but 'image' (got {others[:5]})")
            self.image, self.mem_limit, self.cpu_limit, self.gpu_enabled = self._configured
            return
        if self._configured_allowed_images:
            raise web.HTTPError(500, "This hub's configuration sets both server profiles and "
                                     "DockerSpawner.allowed_images; profiles replace allowed_images. An "
                                     "admin must remove c.DockerSpawner.allowed_images and list the images "
                                     "under a profile's 'images:' instead (docs/servers.md).")
        profile, image = profiles.choose(offered, user_options, self.user_groups(), self.is_admin)
        self.profile_slug = profile.slug
        self.image = image
        self.allowed_images = {image: image}  # DockerSpawner re-checks user_options["image"]
        self.mem_limit, self.cpu_limit, self.gpu_enabled = profile.mem_limit, profile.cpu_limit, profile.gpu
        self.emit_progress(5, f"Profile: {profile.name}")

    # ---- progress, turns and the start itself ------------------------------------------------

    def emit_progress(self, progress: int, message: str) -> None:
        self.progress_log.emit(progress, message)

    def progress(self):
        """JupyterHub's progress stream: the events of the current start, as they happen."""
        return self.progress_log.stream()

    async def start(self):
        if self.stop_reasons_file:  # a reason for the last stop is stale now
            ReasonFile(self.stop_reasons_file).pop(self._server_key)
        image_option = self.user_options.get("image")
        if image_option:  # as DockerSpawner.start does: never pull an image that is not allowed
            self.image = await self.check_allowed(image_option)
        await self.pull_image(self.image)  # before taking a turn: a pull may take minutes
        self._image_ready = self.image
        try:
            if self.gpu_enabled and self.gpu_when_full == "queue":
                await self.wait_for_gpu()  # before a turn: waiting in line takes no start slot
            async with PROCESS.turns.turn(self.concurrent_starts, self._told_to_wait):
                ip, port = await super().start()
                self.emit_progress(90, "Container started; waiting for JupyterLab to answer")
                await self.wait_for_port(ip, port)
        finally:
            self._image_ready = None
            if self._waiter is not None:  # cancelled, failed: out of the line
                PROCESS.gpu_queue.leave(self._waiter)
                self._waiter = None
        return ip, port

    async def wait_for_gpu(self) -> None:
        """Wait in line (hub/gpus/queue.py) until a GPU this server may take is free and nobody
        earlier in the line could take it; the progress stream shows the place in line. A
        cancelled start (the user's Cancel, or a stop) leaves the line."""
        manager = await self.gpu_manager()
        if not manager.inventory:
            return
        try:
            await self._wait_in_line(manager)
        except BaseException:  # cancelled (the user's Cancel, a stop), gave up: out of the line
            if self._waiter is not None:
                PROCESS.gpu_queue.leave(self._waiter)
                self._waiter = None
            raise

    async def _wait_in_line(self, manager: GPUManager) -> None:
        queue, user, server = PROCESS.gpu_queue, self.user.name, self.name or ""
        groups, told, started = frozenset(self.user_groups()), None, time.monotonic()
        woken = started
        while True:
            async with manager.lock:
                # One engine read serves every waiter woken by the same stop: the waiters queue
                # on this lock, and the allocator (reconciled, then kept by each allocation under
                # the lock) is as fresh as a read of their own. The start itself reads the
                # engine again before it takes a GPU (create_object).
                if manager.reconciled_at <= woken:
                    await manager.reconcile(self.engine)
                alloc, now = manager.allocator, time.time()
                if not alloc.intent.allows(user, groups) or alloc.gpu_of(user, server) is not None:
                    return  # assign_gpu refuses it, starts it without a GPU, or it holds one already

                def may_take(name: str, their_groups: frozenset[str]) -> bool:
                    return alloc.could_allocate(name, their_groups, now)
                # In line from the first look: a start let through keeps its place (passed) until
                # its container exists, so a burst never lets more through than GPUs are free.
                self._waiter = self._waiter or queue.join(user, server, groups)
                queue.apply_moves()  # an admin's moves from the GPU console, before anyone is let through
                if may_take(user, groups) and not queue.blocked(user, server, may_take, free_gpus(alloc, user, groups, now)):
                    self._waiter.passed = True
                    return
                self._waiter.event.clear()
                self._waiter.waited = True
                position = queue.position(self._waiter)
            if position != told:
                told = position
                self.log.info("%s waits for a GPU: number %d in line", self._log_name, position)
                self.emit_progress(8, self.queue_message(position, queue.estimate(position)))
            if time.monotonic() - started > self.gpu_queue_max_wait:
                raise GPUUnavailable(f"No GPU became free for you within {self.gpu_queue_max_wait // 60} minutes "
                                     "in line; press Start to try again later.")
            try:
                await asyncio.wait_for(self._waiter.event.wait(), 5)
                woken = self._waiter.woken_at  # when the stop happened, not when this task resumed
            except asyncio.TimeoutError:
                woken = time.monotonic()

    @staticmethod
    def queue_message(position: int, estimate: float | None) -> str:
        ahead = ("You are next in line for a GPU" if position == 1
                 else f"You are number {position} in line for a GPU")
        about = f" (about {max(1, round(estimate / 60))} min, at the recent pace)" if estimate else ""
        return (f"All GPUs are in use. {ahead}{about}; your server starts by itself when one is free. "
                "Keep this page open or come back later; Cancel leaves the line.")

    def _told_to_wait(self, ahead: int) -> None:
        self.log.info("Start of %s waits its turn (%d ahead)", self._log_name, ahead)
        self.emit_progress(5, f"Waiting to start: {self.concurrent_starts} servers are starting now"
                              f"{f' and {ahead} more are waiting before yours' if ahead else ''}")

    async def pull_image(self, image):
        """DockerSpawner's pull (as pull_policy says), once per start: start() pulls before it
        takes a turn, and DockerSpawner.start would check (or, with "always", pull) again."""
        if image != self._image_ready:
            await super().pull_image(image)

    async def pull_with_progress(self, repo: str, tag: str) -> None:
        """docker pull, reporting layers and bytes as it goes, on the shared thread pool."""
        loop = asyncio.get_running_loop()
        pull = PullProgress(f"{repo}:{tag}")
        self.emit_progress(10, f"Pulling image {pull.image}")

        def run():
            last = 0.0
            for event in self.client.pull(repo, tag, stream=True, decode=True):
                pull.add(event)
                if time.monotonic() - last > 0.5:
                    last = time.monotonic()
                    loop.call_soon_threadsafe(self.emit_progress, *pull.summary())

        await loop.run_in_executor(self.executor, run)
        self.emit_progress(60, f"Pulled image {pull.image}")

    async def wait_for_port(self, ip: str, port: int) -> None:
        """Until the server accepts connections, its container stops, or http_timeout passes."""
        async def still_running() -> bool:
            container = await self.get_object()  # None once it is gone
            return bool(container and container["State"]["Running"])
        await port_probe.wait_for_port(ip, port, self.http_timeout, still_running)

    async def get_command(self):
        """The image's leaner start command where its label names one, else DockerSpawner's
        (``cmd`` if set, else the image's CMD); then the arguments."""
        if self.cmd:
            return await super().get_command()
        config = (await self.docker("inspect_image", self.image))["Config"]
        return start_command.image_command(config) + self.get_args()

    def get_args(self):
        return super().get_args() + start_command.extensions_off_argument(self.server_extensions_off)

    # ---- the container: GPU, courses, limits, hardening --------------------------------------

    async def gpu_manager(self) -> GPUManager:
        """The hub's GPU manager, created on first use from this spawner's configuration."""
        if PROCESS.gpu_manager is None:
            static = Path(self.gpu_inventory_file).read_text() if self.gpu_inventory_file else None
            manager = GPUManager.discover(static, self.gpu_cdi_dirs, self.gpu_request_style,
                                          await self.engine("info"), self.gpu_intent_file,
                                          self.label_prefix, self.gpu_policy)
            if PROCESS.gpu_manager is None:  # another spawn may have won the await
                PROCESS.gpu_manager = manager
                self.log.info("GPUs (%s, requests by %s): %s", manager.source, manager.style,
                              ", ".join(f"{g.index}:{g.uuid}" for g in manager.inventory) or "none")
        return PROCESS.gpu_manager

    async def create_object(self):
        self.assignment = self.gpu_uuid = None
        await self.warn_of_stock_volumes()
        await self.prepare_volumes(course_volumes.user_courses(self.user))
        manager = await self.gpu_manager() if self.gpu_enabled else None
        if manager is None or not manager.inventory or not await self.within_gpu_quota():
            return await super().create_object()
        # Decide and create under one lock: the engine must show this container holding its
        # GPU before the next spawn reads the engine.
        image_cuda = await self.image_cuda()
        async with manager.lock:
            await manager.reconcile(self.engine)
            await self.check_host(manager, image_cuda)
            self.assignment = self.assign_gpu(manager)
            if self.assignment is None:
                return await super().create_object()
            self.gpu_uuid = self.assignment.gpu.uuid
            try:
                created = await super().create_object()
            except BaseException:
                self.assignment = self.gpu_uuid = None  # no container: the engine shows the GPU free
                raise
            if self._waiter is not None:  # the engine shows it holding its GPU: out of the line
                PROCESS.gpu_queue.done(self._waiter)
                self._waiter = None
            return created

    async def prepare_volumes(self, courses: dict) -> None:
        """Course materials volumes, created once, owned by the notebook user."""
        await course_volumes.ensure_volumes(courses, prefix=self.prefix, labels=self.labels, image=self.image,
                                            engine=self.engine, host_config=self.client.create_host_config,
                                            emit=self.emit_progress)

    async def image_cuda(self) -> str | None:
        """The CUDA version the image's PyTorch needs (its label, written at build time)."""
        try:
            config = (await self.docker("inspect_image", self.image))["Config"]
        except docker.errors.NotFound:  # DockerSpawner's own start reports a missing image
            return None
        return (config.get("Labels") or {}).get(TORCH_CUDA_LABEL)

    async def check_host(self, manager: GPUManager, image_cuda: str | None) -> None:
        """Host health before a GPU is handed out (hub/gpus/gate.py), under the manager's lock:
        refuse (toolkit CVEs, driver too old for the image) or drain unhealthy GPUs first."""
        if PROCESS.host_gate is None:
            PROCESS.host_gate = HostGate(self.gpu_toolkit_version, self.gpu_toolkit_min_version,
                                         self.gpu_toolkit_override, self.gpu_audit_file)
        try:
            await asyncio.wrap_future(self.executor.submit(
                PROCESS.host_gate.before_gpu, manager, self.image, image_cuda))
        except Refused as exc:
            self.log.warning("GPU start of %s refused: %s", self._log_name, exc)
            raise GPUUnavailable(str(exc)) from None

    async def warn_of_stock_volumes(self) -> None:
        """Say so when this user has a volume named as a stock DockerSpawner names it and none
        named as this hub does: their files are there, and this server would start empty."""
        if self.name_scheme != "gpuhub":
            return
        stock_name = naming.escape_for("dockerspawner")(self.user.name)
        pairs = naming.renamed_volumes(self.volumes, self._render_templates, self.template_namespace(), stock_name)
        for theirs, ours in pairs:
            if await self.volume_exists(theirs) and not await self.volume_exists(ours):
                message = (f"Your files may be in the volume {theirs} (named as a stock DockerSpawner "
                           f"names it); this hub names yours {ours}. An admin can set "
                           "HUB_NAME_SCHEME=dockerspawner or rename the volume (docs/operations.md).")
                self.log.warning("%s: %s", self._log_name, message)
                self.emit_progress(20, message)

    async def volume_exists(self, name: str) -> bool:
        try:
            await self.engine("inspect_volume", name)
        except docker.errors.NotFound:
            return False
        return True

    async def within_gpu_quota(self) -> bool:
        """Whether this user's GPU quotas allow a GPU (hub/usage/gate.py); False to start without
        one where the admin allows that; else the refusal with the usage and when it renews."""
        refusal = await asyncio.get_running_loop().run_in_executor(
            self.executor, usage_gate.start_refusal, self.usage_db, self.user.name, self.user_groups(),
            set(course_volumes.user_courses(self.user)), self.gpu_quota_default)
        if refusal is None:
            return True
        self.log.info("GPU quota of %s used up: %s", self._log_name, refusal)
        if not self.gpu_cpu_fallback:
            raise GPUUnavailable(refusal, status=403)
        self.emit_progress(70, f"{refusal} Starting without a GPU.")
        return False

    def assign_gpu(self, manager: GPUManager) -> Assignment | None:
        """This server's GPU (under the manager's lock); None to start without one, where the
        admin allows that; else the refusal, as the user will read it."""
        groups = self.user_groups()
        if not manager.allocator.intent.allows(self.user.name, groups):
            self.executor.submit(usage_gate.count_refusal, self.usage_db, "access")
            if not self.gpu_cpu_fallback:  # the admin's allow-list (GPU console): 403
                raise GPUUnavailable(ACCESS_REFUSED, status=403)
            self.emit_progress(70, "Your account may not use GPUs here: starting without one")
            return None
        try:
            now = time.time()
            alloc = manager.allocator
            if PROCESS.gpu_queue.blocked(self.user.name, self.name or "",
                                         lambda u, g: alloc.could_allocate(u, g, now),
                                         free_gpus(alloc, self.user.name, groups, now)):
                raise NoGPUAvailable(f"{len(PROCESS.gpu_queue.waiters)} earlier starts wait in line for one",
                                     total=len(manager.inventory))
            assignment = manager.assign(self.user.name, self.name or "", groups, now)
        except NoGPUAvailable as exc:
            self.executor.submit(usage_gate.count_refusal, self.usage_db, "no_gpu_free")
            if self.gpu_when_full != "cpu":
                raise self.gpu_refusal(exc) from None
            self.log.info("No GPU for %s (%s): starting without one", self._log_name, exc.reason)
            self.emit_progress(70, f"No GPU is free ({exc.reason}): starting without one")
            return None
        gpu = assignment.gpu
        self.log.info("Assigning GPU %s (#%d, %s) to %s", gpu.uuid, gpu.index, gpu.name, self._log_name)
        if assignment.shared_by > 1:
            seat = len(manager.allocator.holders_of(gpu.uuid))
            self.emit_progress(70, f"Assigning a seat on shared GPU {gpu.name} (#{gpu.index}, {gpu.uuid}): "
                                   f"{seat} of {assignment.shared_by} servers share it, and its memory")
        else:
            self.emit_progress(70, f"Assigning GPU {gpu.name} (#{gpu.index}, {gpu.uuid})")
        return assignment

    def gpu_refusal(self, exc: NoGPUAvailable) -> Exception:
        """An error JupyterHub shows as it is on the spawn page and in the API (no traceback)."""
        total = f"{self.gpu_place} has {exc.total} GPU{'s' if exc.total != 1 else ''}"
        drained = f", {exc.drained} of them drained by an admin" if exc.drained else ""
        message = (f"{exc} {total}{drained}; one becomes free when its user's server stops "
                   "(or is stopped for being idle).")
        return GPUUnavailable(message)

    def get_env(self):
        env = super().get_env()
        env.update(NO_GPU_ENV if self.assignment is None else self.assignment.env())
        courses = course_volumes.user_courses(self.user)
        if courses:
            env["GPUHUB_COURSES"] = ",".join(sorted(courses))
        return env

    def harden_create_kwargs(self, kwargs: dict) -> dict:
        """Labels, limits and hardening for ``create_container``, applied last so they hold."""
        host_config = kwargs.setdefault("host_config", {})
        host_config.update(
            ShmSize=self.shm_size,
            PidsLimit=self.pids_limit,
            SecurityOpt=["no-new-privileges=true"],
            CapDrop=["ALL"],
            MaskedPaths=hardening.masked_paths(),  # Docker's, and the host's other GPUs (hardening.py)
            DeviceRequests=self.assignment.device_requests() if self.assignment else [],
        )
        if not self.image_healthcheck:
            kwargs["healthcheck"] = {"test": ["NONE"]}
        kwargs["labels"] = {**(kwargs.get("labels") or {}),
                            **self.labels.owner(self.user.name, self.name or "", self.prefix),
                            **({self.labels.profile: self.profile_slug} if self.profile_slug else {}),
                            **(self.assignment.labels(self.labels) if self.assignment else {})}
        host_config["Binds"] = [*(host_config.get("Binds") or []),
                                *course_volumes.binds(course_volumes.user_courses(self.user), self.user.name,
                                                      self.prefix, self.course_materials_dir)]
        return kwargs

    def get_state(self):
        state = super().get_state()
        if self.gpu_uuid:
            state["gpu_uuid"] = self.gpu_uuid
        return state

    def load_state(self, state):
        super().load_state(state)
        self.gpu_uuid = state.get("gpu_uuid")

    def clear_state(self):
        super().clear_state()
        self.gpu_uuid = None

    # ---- why a server stopped on its own (shown on the next page load) --------------------

    @property
    def _server_key(self) -> tuple[str, str]:
        return (self.user.name, self.name or "")

    async def poll(self):
        container_id = self.object_id
        if container_id and await PROCESS.running.is_running(self.container_name, self._list_running):
            PROCESS.stop_reasons.running(self._server_key)
            return None  # one `docker ps` for all servers (hub/hub_process/spawner/running.py)
        status = await super().poll()
        if status is None:
            PROCESS.stop_reasons.running(self._server_key)
        elif container_id and self._server_key not in PROCESS.stop_reasons:
            message = await self.stop_reason(container_id)
            self.log.warning("Server of %s stopped on its own: %s", self._log_name, message)
            PROCESS.stop_reasons.noticed(self._server_key, message)
            PROCESS.gpu_queue.wake()
        return status

    async def get_url(self):
        """The server's address from its container, for the hub's check at start-up: a start the
        hub was killed in the middle of left no address in the database (hub/hub_process/patches/restart_check.py)."""
        url = await super().get_url()
        try:
            ip, port = await self.get_ip_and_port()
        except Exception as exc:  # no container or no network: the database's address stands
            self.log.debug("No address from the container of %s: %s", self._log_name, exc)
            return url
        return f"{self.server.proto}://{ip}:{port}{self.server.base_url}"

    async def stop(self, now=False):
        PROCESS.stop_reasons.stopping(self._server_key)
        try:
            return await super().stop(now=now)
        finally:
            PROCESS.gpu_queue.wake()  # its GPU may be free now: the line checks again

    async def stop_object(self):
        await super().stop_object()
        # The container has exited, so the engine shows its GPU free: the first in line may take
        # it while this container is being removed (the hand-over waits for the stop, not the removal).
        PROCESS.gpu_queue.wake()

    def _list_running(self):
        return self.engine("containers", filters={"status": "running",
                                                  "label": f"{self.label_prefix}.instance={self.prefix}"})

    async def stop_reason(self, container_id: str) -> str:
        """Why the container ended, from the engine's events (the container itself is removed)."""
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self.executor, container_events, self.client, container_id)
        except Exception as exc:  # the engine's history is a help, not a must
            self.log.info("No events for %s: %s", container_id[:12], exc)
            found = []
        return reason_from_events(found, self.mem_limit)

    @staticmethod
    def stop_reason_for(user, file: str = "") -> str:
        """For the hub's pages (template_vars): why the user's default server stopped on its own
        or was stopped by a hub service (``file``: the ``stop_reasons_file``)."""
        return PROCESS.stop_reasons.for_user(user, ReasonFile(file) if file else None)
