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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker.errors

from hub.gpus.claim import NO_GPU_ENV, Assignment, Labels
from hub.gpus.gate import HostGate, Refused
from hub.gpus.health import TORCH_CUDA_LABEL
from hub.gpus.manager import GPUManager
from hub.gpus.model import ACCESS_REFUSED, NoGPUAvailable
from hub.gpus.parked import FILE as PARKED_FILE, ParkedFile, is_paused
from hub.gpus.queue import Waiter
from hub.hub_process.spawner import course_volumes, naming, port_probe, specs, start_command
from hub.hub_process.spawner.progress import ProgressLog, PullProgress
from hub.common.stop_reasons import ReasonFile, container_events, reason_from_events
from hub.hub_process.spawner.errors import GPUUnavailable
from hub.hub_process.spawner.process import PROCESS
from hub.hub_process.spawner.profile_form import ProfileForm
from hub.hub_process.spawner.waiting import LineWaiting
from hub.settings import STATE_DIR
from hub.usage import gate as usage_gate



def recover_gpu_queue(queue_file: str = f"{STATE_DIR}/gpu-queue.json",
                      stop_reasons_file: str = f"{STATE_DIR}/stop-reasons.json") -> list[dict]:
    """At hub start: the line is kept in ``queue_file``; the starts that waited in it when the
    last hub process ended are gone with it, so each of their users reads why on their next page
    load, and gets their old place back by pressing Start soon (GPUQueue.rejoin_window)."""
    PROCESS.gpu_queue.path = Path(queue_file)
    left = PROCESS.gpu_queue.recover()
    reasons = ReasonFile(stop_reasons_file) if stop_reasons_file else None
    for entry in left:
        if reasons is not None and not entry.get("resume_gpu"):  # a parked server's resume rejoins by itself
            reasons.put((entry["user"], entry.get("server", "")), (
                f"The hub restarted while your server waited in line for a GPU (number {entry.get('position')}). "
                "Press Start within 15 minutes to take your place in the line again."))
    return left


class GPUDockerSpawner(ProfileForm, LineWaiting):
    """The spawner: the knobs are GPUSpawnerSettings' (traits.py); this class is the glue."""
    gpu_uuid = None  # the GPU this server holds, if any (kept in the hub's database)
    assignment: Assignment | None = None  # the GPU of the start under way
    profile_slug = None
    _image_ready = None  # the image this start has pulled or found already
    started_ahead = False  # set by a reservation's pre-start for its one start (warm_env)
    _waiter: Waiter | None = None  # this start's place in the line for a GPU

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
            await self.wait_for_memory()  # the host's memory, likewise before a turn
            async with PROCESS.turns.turn(self.concurrent_starts, self._told_to_wait):
                ip, port = await super().start()
                self.emit_progress(90, "Container started; waiting for JupyterLab to answer")
                await self.wait_for_port(ip, port)
        finally:
            self._image_ready = None
            self.started_ahead = False  # for this start only (its environment is made)
            self.memory_settled(self.object_id)
            if self._waiter is not None:  # cancelled, failed: out of the line
                PROCESS.gpu_queue.leave(self._waiter)
                self._waiter = None
        return ip, port

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
            if PROCESS.gpu_queue.must_wait(alloc, self.user.name, self.name or "", groups, now):
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
        env.update(self.warm_env())
        return env

    def warm_env(self) -> dict[str, str]:
        """The warm kernel's settings for the server (images/singleuser/gpuhub_warm reads them)."""
        on, imports = self.profile_warm
        env = {"GPUHUB_WARM_KERNEL": "on" if (self.warm_kernel if on is None else on) else "off"}
        if self.host_memory_when_full != "off":
            # a spare leaves the host room for the admission reserve and four more new servers
            # (hub/memory.py): spares must not take the memory of students still to arrive
            host_reserve = int(self.host_memory_reserve) + 4 * int(self.server_memory_estimate)
            env["GPUHUB_WARM_HOST_RESERVE_MB"] = str(host_reserve // 2**20)
        imports = self.warm_imports if imports is None else " ".join(imports)
        if imports or self.profile_warm[1] is not None:  # a profile's [] imports nothing
            env["GPUHUB_WARM_IMPORTS"] = imports
        if self.started_ahead:
            # started before its person comes (a reservation's pre-start): no JupyterLab page will
            # come for minutes, so the spare starts with the server and is ready when they do
            env["GPUHUB_WARM_START"] = "server"
        return env

    def server_spec(self) -> specs.ServerSpec:
        """What this start must carry, on either engine (hub/hub_process/spawner/specs.py)."""
        return specs.ServerSpec(
            keys=self.labels, user=self.user.name, server=self.name or "", instance=self.prefix,
            profile=self.profile_slug, assignment=self.assignment, shm_size=int(self.shm_size),
            pids_limit=self.pids_limit, image_healthcheck=self.image_healthcheck,
            course_mounts=tuple(course_volumes.mounts(course_volumes.user_courses(self.user), self.user.name,
                                                      self.prefix, self.course_materials_dir)))

    def harden_create_kwargs(self, kwargs: dict) -> dict:
        """Labels, limits and hardening for ``create_container``, applied last so they hold."""
        return specs.container_kwargs(kwargs, self.server_spec())

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
        await self.unpark()
        try:
            return await super().stop(now=now)
        finally:
            PROCESS.gpu_queue.wake()  # its GPU may be free now: the line checks again

    async def unpark(self) -> None:
        """A parked server being stopped (docs/gpus.md, "Parking"): unpaused first, so that it
        takes its SIGTERM (a paused process cannot), and its record goes; its GPU state in host
        memory goes with its processes."""
        if not self.gpu_intent_file:
            return
        parked = ParkedFile(Path(self.gpu_intent_file).with_name(PARKED_FILE))
        record = await asyncio.to_thread(parked.pop, self._server_key)
        if record is None:
            return
        try:
            if is_paused(await self.engine("inspect_container", record.container)):
                await self.engine("unpause", record.container)
            self.log.info("%s was parked (since %s): unpaused to be stopped", self._log_name,
                          time.strftime("%H:%M", time.localtime(record.since)))
        except docker.errors.APIError as exc:  # gone or not paused: the stop goes on as before
            self.log.info("%s: unpausing its parked container: %s", self._log_name, exc)

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
