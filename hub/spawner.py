"""The hub's spawner: DockerSpawner with one exclusive GPU per server, safe names, resource
limits, hardening and labels.

All Docker calls go through ``docker()`` (DockerSpawner's async wrapper), which runs them on a
thread pool shared by all users, so one slow call (an image pull) does not queue every other
user's calls behind it as DockerSpawner's single thread does. ``create_container`` calls are
completed there with the settings no admin ``extra_*`` option may loosen.

GPUs: one ``GPUManager`` per hub process decides, under one lock, from the engine's live
containers (see hub/gpus/manager.py); the container is created while the lock is held and
carries its GPU in a label and in a device request by UUID. A container that gets no GPU
runs with ``NVIDIA_VISIBLE_DEVICES=void`` so that no runtime default can hand it one.
"""
import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import docker.errors
from dockerspawner import DockerSpawner
from jupyterhub.traitlets import ByteSpecification
from tornado import web
from traitlets import Bool, Callable, Int, List, TraitError, Unicode, default, validate

from hub import courses as courses_
from hub import profiles as profiles_
from hub.gpus.allocator import ACCESS_REFUSED, NoGPUAvailable, first_free
from hub.gpus.inventory import discover, from_cdi
from hub.gpus.manager import GPUManager, choose_style, device_request
from hub.naming import safe_slug

LABEL_PREFIX = "gpuhub"
# Image label naming a leaner start command than the image's CMD (images/singleuser/gpuhub_singleuser.py)
SINGLEUSER_COMMAND_LABEL = "gpuhub.singleuser-command"


class GPUUnavailable(web.HTTPError):
    """No GPU for this server now: 503 with the message in the REST API's JSON error, and
    the same message on the spawn page (JupyterHub shows ``jupyterhub_message`` as it is)."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(status, message.replace("%", "%%"))
        self.jupyterhub_message = message


class GPUDockerSpawner(DockerSpawner):
    shm_size = ByteSpecification(
        1024**3,
        config=True,
        help="""Size of /dev/shm in the user's container (Docker's --shm-size).

        PyTorch's DataLoader workers pass batches through shared memory; Docker's default of
        64M makes them fail with 'bus error' or 'No space left on device'.
        """,
    )
    pids_limit = Int(
        1024,
        config=True,
        help="Most processes/threads a user's container may run (Docker's --pids-limit); stops fork bombs.",
    )
    docker_threads = Int(
        8,
        config=True,
        help="Threads (and Docker API connections) shared by all spawners for Docker calls.",
    )
    concurrent_starts = Int(
        config=True,
        help="""Most servers that start at the same time; the rest wait their turn (the spawn
        page says so). A server start is CPU-bound (Python importing JupyterLab), so 30 at once
        on a 2-CPU host take longer, all of them, than 2 or 3 at a time (bench/, README
        "Performance"). A turn lasts from creating the container until the server answers;
        image pulls happen before it. Default: the CPUs this hub may use, at least 2.""",
    )
    server_extensions_off = List(
        Unicode(),
        ["jupyter_lsp", "notebook_shim"],
        config=True,
        help="""Jupyter server extensions not loaded in users' servers. jupyter_lsp (installed with
        JupyterLab) scans the Python environment for language servers at every start, and the
        image has none; remove it from this list if your image adds some (e.g. python-lsp-server).
        notebook_shim carries settings written for the classic Notebook server (NotebookApp) over
        to Jupyter Server, and imports IPython to do so; the image's settings are Jupyter
        Server's own; remove it if your image keeps NotebookApp settings.""",
    )
    label_prefix = Unicode(
        LABEL_PREFIX,
        config=True,
        help="Prefix of the labels that name a container's user and server (and its GPU).",
    )

    gpu_enabled = Bool(
        True,
        config=True,
        help="Give each server one whole GPU of its own, by UUID, when the host has GPUs.",
    )
    gpu_cpu_fallback = Bool(
        False,
        config=True,
        help="When no GPU is free, start the server without a GPU instead of refusing it.",
    )
    gpu_request_style = Unicode(
        "auto",
        config=True,
        help="""How containers are given their GPU: 'cdi' (driver "cdi", device
        nvidia.com/gpu=<uuid>; Docker >= 25 with CDI and a CDI spec), 'nvidia' (driver
        "nvidia", device_ids=[uuid]; NVIDIA Container Toolkit), or 'auto' (CDI when the engine
        has CDI enabled and the GPUs were found in a CDI spec, else nvidia).""",
    )
    gpu_inventory_file = Unicode(
        "",
        config=True,
        help="""YAML list of GPUs (gpus: [{uuid, index, name, memory_total_mib}]) for hosts where
        neither NVML nor a CDI spec is visible to the hub. Used only when those find none.""",
    )
    gpu_cdi_dirs = List(
        Unicode(),
        ["/etc/cdi", "/var/run/cdi"],
        config=True,
        help="Directories with the host's CDI specs (mounted read-only into the hub).",
    )
    gpu_policy = Callable(
        first_free,
        config=True,
        help="""Which free GPU a server gets: ``policy(candidates, held, username) -> GPU | None``
        (see hub/gpus/allocator.py). Default: the lowest-index free GPU. Candidates never
        include a held, drained or someone else's pinned GPU, whatever the policy.""",
    )
    gpu_intent_file = Unicode(
        "gpu-intent.json",
        config=True,
        help="Where admin intent (pins, drains) is kept; on the hub's state volume.",
    )

    course_materials_dir = Unicode(
        "/home/jovyan/work/courses",
        config=True,
        help="""Where each course's materials volume (<prefix>-course-<course>) is mounted, as
        <this>/<course>: read-only for the course's students, writable for its teachers and TAs.
        Inside the work folder, so JupyterLab's file browser shows it.""",
    )

    profiles_file = Unicode(
        "",
        config=True,
        help="""YAML file of server profiles users choose from (hub/profiles.py explains the
        format). Empty: no choice, every server gets this spawner's image and limits.""",
    )

    gpu_uuid = None  # the GPU this server holds, if any
    gpu_shared_by = 1  # how many servers may share that GPU
    _gpu_manager = None  # one per hub process, shared by all spawners
    _start_turns = None  # (event loop, semaphore of concurrent_starts), shared by all spawners
    _starts_waiting = 0

    @default("concurrent_starts")
    def _default_concurrent_starts(self):
        return max(2, len(os.sched_getaffinity(0)))

    @validate("concurrent_starts")
    def _validate_concurrent_starts(self, proposal):
        if proposal.value < 1:
            raise TraitError(f"concurrent_starts={proposal.value}: use at least 1 (default: the number of CPUs)")
        return proposal.value

    @validate("gpu_request_style")
    def _validate_gpu_request_style(self, proposal):
        if proposal.value not in ("auto", "cdi", "nvidia"):
            raise TraitError(f"gpu_request_style={proposal.value!r}: use 'auto', 'cdi' or 'nvidia'")
        return proposal.value

    # ---- profiles: the spawn form and the options a user may give -------------------------

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What a profile leaves out comes from the configuration, not from the profile this
        # (long-lived) spawner applied last time.
        self._configured = (self.image, self.mem_limit, self.cpu_limit, self.gpu_enabled)

    def load_profiles(self) -> list:
        """The profiles file, read on each use so an admin's edit applies at the next spawn."""
        if not self.profiles_file:
            return []
        image, mem_limit, cpu_limit, _ = self._configured
        with open(self.profiles_file) as f:
            return profiles_.load_profiles(f.read(), image, mem_limit, cpu_limit)

    def user_groups(self) -> set[str]:
        return {g.name for g in getattr(self.user, "groups", [])}

    def visible_profiles(self) -> list:
        admin = bool(getattr(self.user, "admin", False))
        return [p for p in self.load_profiles() if p.visible_to(self.user_groups(), admin)]

    @default("options_form")
    def _default_options_form(self):
        return GPUDockerSpawner.render_options_form

    async def render_options_form(self) -> str:
        visible = self.visible_profiles()
        if len(visible) < 2 and not any(len(p.images) > 1 for p in visible):
            return ""  # nothing to choose: Start starts at once
        total = free = 0
        seats: dict = {}
        if self.gpu_enabled:
            manager = await self.gpu_manager()
            async with manager.lock:
                await manager.reconcile(self.docker)
                groups, now = self.user_groups(), time.time()
                total = len(manager.inventory)
                free = len(manager.allocator.free(self.user.name, groups, now))
                seats = {u: (left, manager.allocator.capacity(u))
                         for u, left in manager.allocator.seats(groups, now).items()}
        return profiles_.render_form(visible, total, free, seats)

    def options_from_form(self, formdata):
        """Form fields to options, checked now so a bad or forged form gets its 400 at once."""
        options = profiles_.options_from_form(formdata)
        profiles_.choose(self.load_profiles(), options, self.user_groups(), bool(getattr(self.user, "admin", False)))
        return options

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return GPUDockerSpawner.apply_profile

    def apply_profile(self, user_options: dict) -> None:
        """Check the user's options against the profiles offered to them and apply the chosen one.

        JupyterHub calls this before every start and turns an HTTPError raised here into that
        status with its message, before anything starts (JupyterHub >= 5.3)."""
        self._progress_events, self._progress_signal = [], asyncio.Event()  # a new start
        self.profile_slug = None
        profiles = self.load_profiles()
        if not profiles:
            if user_options:
                raise web.HTTPError(400, f"this hub offers no server options (got {sorted(user_options)[:5]})")
            self.image, self.mem_limit, self.cpu_limit, self.gpu_enabled = self._configured
            return
        admin = bool(getattr(self.user, "admin", False))
        profile, image = profiles_.choose(profiles, user_options, self.user_groups(), admin)
        self.profile_slug = profile.slug
        self.image = image
        self.allowed_images = {image: image}  # DockerSpawner re-checks user_options["image"]
        self.mem_limit, self.cpu_limit, self.gpu_enabled = profile.mem_limit, profile.cpu_limit, profile.gpu
        self.emit_progress(5, f"Profile: {profile.name}")

    # ---- courses: materials volumes (hub/courses.py) -------------------------------------

    def user_courses(self) -> dict:
        """course name -> Course, for the courses (groups with course properties) of this user."""
        found = {}
        for group in getattr(self.user, "groups", []):
            properties = getattr(group, "properties", None) or {}
            if courses_.PROPERTY not in properties:
                continue
            course = courses_.course_from_group({"name": group.name, "properties": properties,
                                                 "users": [u.name for u in getattr(group, "users", [])]})
            if course is not None:
                found[course.name] = course
        return found

    def course_volume(self, course: str) -> str:
        return f"{self.prefix}-course-{course}"

    def course_binds(self) -> list[str]:
        """The course's materials volume at courses/<course> in the work folder: writable for its teachers and
        TAs, read-only for its students (course names are checked: safe in paths and names)."""
        binds = []
        for name, course in sorted(self.user_courses().items()):
            if course.materials:
                mode = "rw" if self.user.name in course.staff else "ro"
                binds.append(f"{self.course_volume(name)}:{self.course_materials_dir}/{name}:{mode}")
        return binds

    async def ensure_course_volumes(self) -> None:
        """Create a course's materials volume owned by the notebook user (1000:100), once: a
        volume Docker creates on first mount would be root's, and its teachers could not write."""
        for name, course in sorted(self.user_courses().items()):
            volume = self.course_volume(name)
            if not course.materials:
                continue
            try:
                await self.docker("inspect_volume", volume)
                continue
            except docker.errors.NotFound:
                pass
            self.emit_progress(65, f"Creating the materials volume of course {name}")
            await self.docker("create_volume", volume, labels={f"{self.label_prefix}.course": name,
                                                                 f"{self.label_prefix}.instance": self.prefix})
            host_config = self.client.create_host_config(
                binds=[f"{volume}:/materials"], network_mode="none", cap_drop=["ALL"], cap_add=["CHOWN"],
                security_opt=["no-new-privileges:true"])
            # Not self.docker("create_container"): that adds the user's labels, limits and mounts.
            created = await asyncio.wrap_future(self.executor.submit(
                self._docker, "create_container", self.image, command=["chown", "1000:100", "/materials"],
                user="root", entrypoint=[], host_config=host_config,
                labels={f"{self.label_prefix}.instance": self.prefix}))
            try:
                await self.docker("start", created["Id"])
                result = await self.docker("wait", created["Id"], timeout=60)
                if result.get("StatusCode"):
                    raise RuntimeError(f"could not prepare the materials volume {volume} (exit {result['StatusCode']})")
            finally:
                await self.docker("remove_container", created["Id"], force=True)

    # ---- progress events the spawn page shows ------------------------------------------

    _progress_events: list = []
    _progress_signal = None

    def emit_progress(self, progress: int, message: str) -> None:
        if self._progress_signal is None:
            self._progress_events, self._progress_signal = [], asyncio.Event()
        self._progress_events.append({"progress": progress, "message": message})
        self._progress_signal.set()

    async def progress(self):
        """JupyterHub's progress stream: the events of the current start, as they happen."""
        if self._progress_signal is None:
            self._progress_events, self._progress_signal = [], asyncio.Event()
        sent = 0
        while True:
            while sent < len(self._progress_events):
                yield self._progress_events[sent]
                sent += 1
            self._progress_signal.clear()
            await self._progress_signal.wait()

    _image_ready = None  # the image this start has pulled or found already

    async def start(self):
        image_option = self.user_options.get("image")
        if image_option:  # as DockerSpawner.start does: never pull an image that is not allowed
            self.image = await self.check_allowed(image_option)
        await self.pull_image(self.image)  # before taking a turn: a pull may take minutes
        self._image_ready = self.image
        try:
            async with self.start_turn():
                ip, port = await super().start()
                self.emit_progress(90, "Container started; waiting for JupyterLab to answer")
                await self.wait_for_port(ip, port)
        finally:
            self._image_ready = None
        return ip, port

    async def pull_image(self, image):
        """DockerSpawner's pull (as pull_policy says), once per start: start() pulls before it
        takes a turn, and DockerSpawner.start would check (or, with "always", pull) again."""
        if image != self._image_ready:
            await super().pull_image(image)

    @asynccontextmanager
    async def start_turn(self):
        """One of concurrent_starts turns to start a server, waiting (and saying so) if all are taken."""
        cls = GPUDockerSpawner
        loop = asyncio.get_running_loop()
        if cls._start_turns is None or cls._start_turns[0] is not loop:
            cls._start_turns = (loop, asyncio.Semaphore(self.concurrent_starts))
        turns = cls._start_turns[1]
        if turns.locked():
            ahead = cls._starts_waiting
            cls._starts_waiting += 1
            self.log.info("Start of %s waits its turn (%d ahead)", self._log_name, ahead)
            self.emit_progress(5, f"Waiting to start: {self.concurrent_starts} servers are starting now"
                                  f"{f' and {ahead} more are waiting before yours' if ahead else ''}")
            try:
                await turns.acquire()
            finally:
                cls._starts_waiting -= 1
        else:
            await turns.acquire()
        try:
            yield
        finally:
            turns.release()

    async def wait_for_port(self, ip: str, port: int, interval: float = 0.01) -> None:
        """Return as soon as the server accepts connections, its container has stopped, or
        http_timeout has passed.

        JupyterHub checks a new server with exponential backoff (0.2 s, 0.4 s, 0.8 s, 1.6 s,
        ...), which adds up to a second to every start; probing the port every 10 ms here (a
        refused connection costs the hub about 0.13 ms of CPU) means its first check succeeds.
        A container that stopped (a broken image) ends the wait at once, so it does not hold a
        start turn until the timeout."""
        deadline = time.monotonic() + self.http_timeout
        next_state_check = time.monotonic() + 1
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1)
            except (OSError, asyncio.TimeoutError):
                if time.monotonic() >= next_state_check:
                    next_state_check = time.monotonic() + 1
                    container = await self.get_object()  # None once it is gone
                    if not (container and container["State"]["Running"]):
                        return
                await asyncio.sleep(interval)
                continue
            writer.close()
            return

    async def get_command(self):
        """The image's leaner start command where its label names one, else DockerSpawner's
        (``cmd`` if set, else the image's CMD); then the arguments."""
        if self.cmd:
            return await super().get_command()
        config = (await self.docker("inspect_image", self.image))["Config"]
        command = (config.get("Labels") or {}).get(SINGLEUSER_COMMAND_LABEL)
        return ([command] if command else config["Cmd"]) + self.get_args()

    def get_args(self):
        args = super().get_args()
        if self.server_extensions_off:
            off = {name: False for name in self.server_extensions_off}
            args.append(f"--ServerApp.jpserver_extensions={off!r}")
        return args

    async def pull_with_progress(self, repo: str, tag: str) -> None:
        """docker pull, reporting layers and bytes as it goes, on the shared thread pool."""
        loop = asyncio.get_running_loop()
        image = f"{repo}:{tag}"
        self.emit_progress(10, f"Pulling image {image}")

        def pull():
            layers, done, last = {}, set(), 0.0  # layer -> (bytes so far, bytes in all)
            for event in self.client.pull(repo, tag, stream=True, decode=True):
                if "error" in event:
                    raise RuntimeError(f"pulling {image} failed: {event['error']}")
                layer, status = event.get("id"), event.get("status", "")
                if not layer or not status.startswith(LAYER_STATUSES):
                    continue  # "Pulling from …", "Digest: …": not about a layer
                detail = event.get("progressDetail") or {}
                if status.startswith("Downloading") and detail.get("total"):
                    layers[layer] = (detail.get("current", 0), detail["total"])
                else:
                    layers.setdefault(layer, (0, 0))
                if status in ("Pull complete", "Already exists"):
                    done.add(layer)
                now = time.monotonic()
                if now - last > 0.5:
                    last = now
                    loop.call_soon_threadsafe(self.emit_progress, *pull_summary(image, layers, done))

        await loop.run_in_executor(self.executor, pull)
        self.emit_progress(60, f"Pulled image {image}")

    @default("escape")
    def _default_escape(self):
        # DockerSpawner's own escaping is collision-free but unbounded (a 200-character
        # unicode name becomes 600 characters, too long for a volume's path).
        return safe_slug

    @default("client_kwargs")
    def _default_client_kwargs(self):
        return {"max_pool_size": self.docker_threads}

    @validate("pids_limit")
    def _validate_pids_limit(self, proposal):
        if proposal.value < 64:
            raise TraitError(f"pids_limit={proposal.value} is too low to start JupyterLab; use at least 64 (default 1024)")
        return proposal.value

    @validate("docker_threads")
    def _validate_docker_threads(self, proposal):
        if proposal.value < 1:
            raise TraitError(f"docker_threads={proposal.value}: use at least 1 (default 8)")
        return proposal.value

    @property
    def executor(self):
        cls = self.__class__
        if cls._executor is None:
            cls._executor = ThreadPoolExecutor(self.docker_threads, thread_name_prefix="docker")
        return cls._executor

    def labels(self) -> dict[str, str]:
        """Labels that let anyone (and the hub after a restart) tell whose container this is."""
        p = self.label_prefix
        return {f"{p}.user": self.user.name, f"{p}.server": self.name or "", f"{p}.instance": self.prefix}

    def device_requests_for(self) -> list[dict]:
        """Docker device requests (engine API form) for this server: its GPU by UUID, or none."""
        if self.gpu_uuid is None:
            return []
        return [device_request(self.gpu_uuid, self.gpu_manager_now().style)]

    def get_env(self):
        env = super().get_env()
        if self.gpu_uuid is None:
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
        elif self.gpu_shared_by > 1:  # gpu-check tells the user their GPU's memory is shared
            env["GPUHUB_GPU_SHARED_BY"] = str(self.gpu_shared_by)
        courses = self.user_courses()
        if courses:
            env["GPUHUB_COURSES"] = ",".join(sorted(courses))
        return env

    def gpu_labels(self) -> dict[str, str]:
        if self.gpu_uuid is None:
            return {}
        return {f"{self.label_prefix}.gpu.uuid": self.gpu_uuid, f"{self.label_prefix}.gpu.since": f"{time.time():.0f}"}

    def gpu_manager_now(self) -> GPUManager:
        if GPUDockerSpawner._gpu_manager is None:
            raise RuntimeError("the GPU manager is created by the first spawn (gpu_manager())")
        return GPUDockerSpawner._gpu_manager

    async def gpu_manager(self) -> GPUManager:
        """The hub's GPU manager, created on first use from this spawner's configuration."""
        if GPUDockerSpawner._gpu_manager is None:
            static = Path(self.gpu_inventory_file).read_text() if self.gpu_inventory_file else None
            gpus, source = discover(static, self.gpu_cdi_dirs)
            cdi_gpus = (gpus if source == "cdi" else from_cdi(self.gpu_cdi_dirs)) or []
            style = choose_style(self.gpu_request_style, await self.docker("info"), gpus, cdi_gpus)
            if GPUDockerSpawner._gpu_manager is None:  # another spawn may have won the await
                GPUDockerSpawner._gpu_manager = GPUManager(
                    gpus, source, style, self.gpu_intent_file, self.label_prefix, self.gpu_policy)
                self.log.info("GPUs (%s, requests by %s): %s", source, style,
                              ", ".join(f"{g.index}:{g.uuid}" for g in gpus) or "none")
        return GPUDockerSpawner._gpu_manager

    async def create_object(self):
        self.gpu_uuid, self.gpu_shared_by = None, 1
        await self.ensure_course_volumes()
        manager = await self.gpu_manager() if self.gpu_enabled else None
        if manager is None or not manager.inventory:
            return await super().create_object()
        # Decide and create under one lock: the engine must show this container holding its
        # GPU before the next spawn reads the engine.
        async with manager.lock:
            await manager.reconcile(self.docker)
            if not manager.allocator.intent.allows(self.user.name, self.user_groups()):
                if not self.gpu_cpu_fallback:  # the admin's allow-list (GPU console): 403
                    raise GPUUnavailable(ACCESS_REFUSED, status=403)
                self.emit_progress(70, "Your account may not use GPUs here: starting without one")
                return await super().create_object()
            try:
                now = time.time()
                gpu = manager.allocator.allocate(self.user.name, self.name or "", since=now,
                                                 groups=self.user_groups(), now=now)
            except NoGPUAvailable as exc:
                if not self.gpu_cpu_fallback:
                    raise self.gpu_refusal(exc) from None
                self.log.info("No GPU for %s (%s): starting without one", self._log_name, exc.reason)
                self.emit_progress(70, f"No GPU is free ({exc.reason}): starting without one")
                return await super().create_object()
            self.gpu_uuid = gpu.uuid
            self.gpu_shared_by = manager.allocator.capacity(gpu.uuid)
            self.log.info("Assigning GPU %s (#%d, %s) to %s", gpu.uuid, gpu.index, gpu.name, self._log_name)
            if self.gpu_shared_by > 1:
                seat = len(manager.allocator.holders_of(gpu.uuid))
                self.emit_progress(70, f"Assigning a seat on shared GPU {gpu.name} (#{gpu.index}, {gpu.uuid}): "
                                       f"{seat} of {self.gpu_shared_by} servers share it, and its memory")
            else:
                self.emit_progress(70, f"Assigning GPU {gpu.name} (#{gpu.index}, {gpu.uuid})")
            try:
                return await super().create_object()
            except BaseException:
                self.gpu_uuid = None  # no container, so the engine shows the GPU free again
                raise

    def gpu_refusal(self, exc: NoGPUAvailable) -> Exception:
        """An error JupyterHub shows as it is on the spawn page and in the API (no traceback)."""
        total = f"This host has {exc.total} GPU{'s' if exc.total != 1 else ''}"
        drained = f", {exc.drained} of them drained by an admin" if exc.drained else ""
        message = (f"{exc} {total}{drained}; one becomes free when its user's server stops "
                   "(or is stopped for being idle).")
        return GPUUnavailable(message)

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

    def harden_create_kwargs(self, kwargs: dict) -> dict:
        """Labels, limits and hardening for ``create_container``, applied last so they hold."""
        host_config = kwargs.setdefault("host_config", {})
        host_config.update(
            ShmSize=self.shm_size,
            PidsLimit=self.pids_limit,
            SecurityOpt=["no-new-privileges:true"],
            CapDrop=["ALL"],
            DeviceRequests=self.device_requests_for(),
        )
        kwargs["labels"] = {**(kwargs.get("labels") or {}), **self.labels(), **self.gpu_labels()}
        host_config["Binds"] = [*(host_config.get("Binds") or []), *self.course_binds()]
        return kwargs

    def docker(self, method, *args, **kwargs):
        if method == "pull":
            return asyncio.ensure_future(self.pull_with_progress(*args))
        if method == "create_container":
            self.emit_progress(75, "Creating container")
            kwargs = self.harden_create_kwargs(kwargs)
        return asyncio.wrap_future(self.executor.submit(self._docker, method, *args, **kwargs))

    # ---- why a server stopped on its own (shown on the next page load) --------------------

    # (user, server) -> [message, set by the poll that noticed (kept through the stop it triggers)]
    _stop_reasons: dict = {}

    async def poll(self):
        container_id = self.object_id
        status = await super().poll()
        key = (self.user.name, self.name or "")
        if status is None:
            GPUDockerSpawner._stop_reasons.pop(key, None)  # running: an old reason is stale
        elif container_id and key not in GPUDockerSpawner._stop_reasons:
            message = await self.stop_reason(container_id)
            self.log.warning("Server of %s stopped on its own: %s", self._log_name, message)
            GPUDockerSpawner._stop_reasons[key] = [message, True]
        return status

    async def stop(self, now=False):
        key = (self.user.name, self.name or "")
        reason = GPUDockerSpawner._stop_reasons.get(key)
        if reason and reason[1]:
            reason[1] = False  # the stop that the poll triggered: keep the reason for the page
        else:
            GPUDockerSpawner._stop_reasons.pop(key, None)  # a stop asked for: nothing to explain
        return await super().stop(now=now)

    async def stop_reason(self, container_id: str) -> str:
        """Why the container ended, from the engine's events (the container itself is removed):
        killed for memory ('oom'), or its exit code ('die')."""
        def events():
            until = int(time.time()) + 1
            return list(self.client.events(since=until - 24 * 3600, until=until, decode=True,
                                           filters={"container": container_id, "event": ["oom", "die"]}))
        try:
            found = await asyncio.get_running_loop().run_in_executor(self.executor, events)
        except Exception as exc:  # the engine's history is a help, not a must
            self.log.info("No events for %s: %s", container_id[:12], exc)
            found = []
        keep = "Your files in work/ are kept; press Start to start it again."
        if any(e.get("status", e.get("Action")) == "oom" for e in found):
            limit = f" of {self.mem_limit / 2**30:.3g} GB" if self.mem_limit else ""
            return ("Your server was stopped because it ran out of memory: it used all its memory"
                    f"{limit}, and the system ended it. Use less memory (smaller data or batches, fewer "
                    f"DataLoader workers) or a profile with more memory. {keep}")
        codes = [e.get("Actor", {}).get("Attributes", {}).get("exitCode") for e in found
                 if e.get("status", e.get("Action")) == "die"]
        if codes and codes[-1] not in (None, "0"):
            return f"Your server stopped unexpectedly (exit code {codes[-1]}). {keep}"
        return f"Your server stopped. {keep}"

    @staticmethod
    def stop_reason_for(user) -> str:
        """For the hub's pages (template_vars): why the user's default server stopped on its own."""
        if user is None:
            return ""
        spawner = user.spawners.get("")  # .get: does not create a spawner
        if spawner is not None and spawner.active:
            return ""
        reason = GPUDockerSpawner._stop_reasons.get((user.name, ""))
        return reason[0] if reason else ""


LAYER_STATUSES = ("Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
                  "Download complete", "Extracting", "Pull complete", "Already exists")


def pull_summary(image: str, layers: dict, done: set) -> tuple[int, str]:
    """(progress 10-60, message) for a pull: layers done and bytes so far (of the layers that
    have to be downloaded; layers the engine already has count as done, with no bytes)."""
    total = sum(t for _, t in layers.values())
    current = sum(t if layer in done else c for layer, (c, t) in layers.items())
    fraction = current / total if total else 0.0
    return (10 + int(50 * fraction),
            f"Pulling image {image}: {len(done)} of {len(layers)} layers, "
            f"{current / 1e6:.0f} MB of {total / 1e6:.0f} MB")
