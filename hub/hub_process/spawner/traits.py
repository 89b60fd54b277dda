"""GPUDockerSpawner's knobs: every trait an admin may set (``c.GPUDockerSpawner.<name>``), with
its help, default and check. Kept apart from the spawner's behaviour (spawner.py) so the
configuration surface reads as one list; traitlets applies ``c.GPUDockerSpawner`` to these
through the class hierarchy."""
import os

from dockerspawner import DockerSpawner
from jupyterhub.traitlets import ByteSpecification
from traitlets import Bool, Callable, CaselessStrEnum, Float, Int, List, TraitError, Unicode, default, validate

from hub.gpus.allocator import first_free
from hub.gpus.health import DEFAULT_TOOLKIT_MIN
from hub.hub_process.spawner import naming
from hub.usage import gate as usage_gate


class GPUSpawnerSettings(DockerSpawner):
    # Where the GPUs are, as a refusal names it.
    gpu_place = "This host"
    shm_size = ByteSpecification(1024**3, config=True, help="""Size of /dev/shm in the user's
        container (Docker's --shm-size). PyTorch's DataLoader workers pass batches through shared
        memory; Docker's default of 64M makes them fail with 'bus error' or 'No space left on device'.""")
    pids_limit = Int(1024, config=True, help="Most processes/threads a user's container may run "
                                             "(Docker's --pids-limit); stops fork bombs.")
    docker_threads = Int(8, config=True, help="Threads (and Docker API connections) shared by all "
                                              "spawners for Docker calls.")
    form_gpu_fresh = Float(5.0, config=True, help="""Seconds the spawn form shows the GPU figures of
        the last look at the engine (a start's, or an earlier form's) instead of looking again;
        while a start holds the GPUs' lock the form never waits for it. The figures are what a
        user reads to choose a profile; the start itself always looks afresh.""")
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
    host_memory_when_full = CaselessStrEnum(["wait", "refuse", "off"], "wait", config=True, help="""When
        a start would leave the host less than host_memory_reserve of available memory: 'wait' (the
        spawn page says why; the server starts when memory frees, first come first served), 'refuse'
        (503 with the message), or 'off' (no check: the kernel's OOM killer decides). hub/memory.py.""")
    host_memory_reserve = ByteSpecification(2**30, config=True, help="""Memory the host keeps
        available whatever starts: a start that would leave less waits or is refused.""")
    server_memory_estimate = ByteSpecification(512 * 2**20, config=True, help="""What a new server is
        expected to take until the hub has measured some (the median of recent servers' memory when
        their start was over), and never more than the server's mem_limit.""")
    host_memory_max_wait = Int(600, config=True, help="""Seconds a start may wait for memory before it
        gives up with a message (JupyterHub's start timeout allows it; configure_spawner sets it so).""")
    host_meminfo_file = Unicode("/proc/meminfo", config=True, help="""Where the host's memory is read:
        /proc/meminfo (a container sees the host's). Tests point it at a file of their own.""")
    host_memory_state_file = Unicode("", config=True, help="""JSON file where the hub says how many starts
        wait for memory and what a server takes, for the GPU console. Empty: none.""")
    stop_reasons_file = Unicode("", config=True, help="""JSON file where hub services (the GPU
        reclaim) leave why they stopped a server, for the user's next page load
        (hub/common/stop_reasons.py ReasonFile); a server's entry is removed when it starts again.
        Empty: none.""")
    profiles_file = Unicode("", config=True, help="""YAML file of server profiles users choose
        from (hub/common/profiles.py explains the format). Empty: no choice, every server gets
        this spawner's image and limits.""")
    warm_kernel = Bool(True, config=True, help="""Each server keeps one spare kernel with warm_imports done
        for its first notebook (images/singleuser/gpuhub_warm; a profile's warm_kernel overrides it).""")
    warm_imports = Unicode("", config=True, help="""Modules the spare kernel imports, separated by spaces
        (a profile's warm_kernel list overrides it). Empty: the image's default list.""")
    start_at_login = Bool(False, config=True, help="""Start the server of a user who has exactly one profile
        as they log in (hub/hub_process/patches/login_start.py, installed by jupyterhub_config.py).""")

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
