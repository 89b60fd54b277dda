"""The hub's spawner: DockerSpawner with safe names, resource limits, hardening and labels.

All Docker calls go through ``docker()`` (DockerSpawner's async wrapper), which runs them on a
thread pool shared by all users, so one slow call (an image pull) does not queue every other
user's calls behind it as DockerSpawner's single thread does. ``create_container`` calls are
completed there with the settings no admin ``extra_*`` option may loosen.

GPU assignment plugs in at ``device_requests_for``; a container that gets no GPU runs with
``NVIDIA_VISIBLE_DEVICES=void`` so that no runtime default can hand it one.
"""
import asyncio
from concurrent.futures import ThreadPoolExecutor

from dockerspawner import DockerSpawner
from jupyterhub.traitlets import ByteSpecification
from traitlets import Int, TraitError, Unicode, default, validate

from hub.naming import safe_slug

LABEL_PREFIX = "gpuhub"


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
    label_prefix = Unicode(
        LABEL_PREFIX,
        config=True,
        help="Prefix of the labels that name a container's user and server (and its GPU).",
    )

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
        """Docker device requests (engine API form) for this server; none until a GPU is assigned."""
        return []

    def get_env(self):
        env = super().get_env()
        if not self.device_requests_for():
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
        return env

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
        kwargs["labels"] = {**(kwargs.get("labels") or {}), **self.labels()}
        return kwargs

    def docker(self, method, *args, **kwargs):
        if method == "create_container":
            kwargs = self.harden_create_kwargs(kwargs)
        return asyncio.wrap_future(self.executor.submit(self._docker, method, *args, **kwargs))
