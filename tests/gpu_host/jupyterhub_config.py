# JupyterHub configuration of the whole-stack run on a GPU host (tests/gpu_host/stack.py, which
# sets the GPUHOST_* variables). It mirrors production's (jupyterhub_config.py ->
# hub/hub_process/config/configure.py) where it matters here: the project's spawner with its GPU settings, limits and
# hardening, the external proxy, servers that outlive the hub, the GPU console as a hub-managed
# service with production's role. It differs where the test machine or the test needs it:
#   - hub and proxy run as processes on the host (no compose); state in $GPUHOST_STATE;
#   - login: none (the null authenticator); users are made and started through the REST API by
#     a service holding the admin role, as an admin's script would;
#   - the single-user image is gpuhost/singleuser:1 (the host's Python and PyTorch, see stack.py),
#     with the host's directories bound read-only, and it has no JupyterLab (default_url unset);
#   - network: production's own (a bridge network, use_internal_ip) when the engine can make one;
#     else the host's network, where each server gets its own port (DockerSpawner's documented
#     get_ip_and_port override, in a subclass that changes nothing else);
#   - the console samples NVML every second (production: every 10 s); no idle culler and no
#     watchdogs (hub/hub_process/watchdog.py): neither is what this run is about.
import json
import os
from pathlib import Path

env = os.environ
c = get_config()  # noqa: F821 (provided by JupyterHub)
state = Path(env["GPUHOST_STATE"])
prefix = env.get("GPUHOST_PREFIX", "gpuhost")
hub_port = int(env["GPUHOST_HUB_PORT"])
network = env["GPUHOST_NETWORK"]  # a bridge network's name, or "host"
repo = Path(__file__).resolve().parents[2]

# -- the hub (hub/hub_process/config/configure.py configure_hub) --
c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.should_start = False  # the proxy is its own process: a hub restart keeps it
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['GPUHOST_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.auth_token = env["GPUHOST_PROXY_TOKEN"]
c.JupyterHub.bind_url = f"http://127.0.0.1:{env['GPUHOST_PROXY_PORT']}"
c.JupyterHub.hub_bind_url = f"http://{env.get('GPUHOST_HUB_BIND_IP', '127.0.0.1')}:{hub_port}"
c.JupyterHub.hub_connect_url = f"http://{env.get('GPUHOST_HUB_CONNECT_IP', '127.0.0.1')}:{hub_port}"
c.JupyterHub.cleanup_servers = False  # user servers outlive the hub
c.JupyterHub.log_level = env.get("GPUHOST_LOG_LEVEL", "INFO")

# -- who may do what --
c.JupyterHub.authenticator_class = "null"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{"name": "gpuhost-admin", "api_token": env["GPUHOST_ADMIN_TOKEN"]}]
c.JupyterHub.load_roles = [{"name": "admin", "services": ["gpuhost-admin"]}]

# -- the spawner (hub/hub_process/config/configure.py configure_spawner) --
c.JupyterHub.spawner_class = "hub.hub_process.spawner.GPUDockerSpawner"
c.DockerSpawner.image = env.get("GPUHOST_IMAGE", "gpuhost/singleuser:1")
c.DockerSpawner.prefix = prefix
c.DockerSpawner.network_name = network
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True
c.DockerSpawner.notebook_dir = "/home/jovyan/work"
binds = json.loads(Path(env["GPUHOST_BINDS_FILE"]).read_text())  # the host's /usr, /opt, ... read-only
c.DockerSpawner.volumes = {f"{prefix}-user-{{username}}": "/home/jovyan/work", **binds}
c.DockerSpawner.mem_limit = "8G"
c.DockerSpawner.cpu_limit = 2.0
c.GPUDockerSpawner.shm_size = "1G"
c.GPUDockerSpawner.pids_limit = 1024
c.GPUDockerSpawner.gpu_enabled = True
c.GPUDockerSpawner.gpu_cpu_fallback = False
c.GPUDockerSpawner.gpu_request_style = "auto"
c.GPUDockerSpawner.gpu_intent_file = str(state / "gpu-intent.json")
c.GPUDockerSpawner.usage_db = str(state / "gpu-usage.sqlite")
c.GPUDockerSpawner.gpu_audit_file = str(state / "gpu-audit.jsonl")  # the console's (the hub's resumes too)
# The test machine's settings that keep programs off NVLink multicast hold in users' containers too.
c.DockerSpawner.environment = {k: env[k] for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                                                   "NVSHMEM_DISABLE_NVLS") if k in env}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

if network == "host":
    from jupyterhub.utils import random_port

    from hub.hub_process.spawner import GPUDockerSpawner

    class HostNetworkGPUDockerSpawner(GPUDockerSpawner):
        """On the host's network every server needs a port of its own, and the engine knows no
        address for the container (DockerSpawner's docs: override get_ip_and_port)."""

        async def start(self):
            self.port = random_port()
            return await super().start()

        async def get_ip_and_port(self):
            return "127.0.0.1", self.port

    c.JupyterHub.spawner_class = HostNetworkGPUDockerSpawner
    c.DockerSpawner.ip = "127.0.0.1"

# -- the GPU console (hub/hub_process/config/configure.py configure_console), with the same role --
from hub.settings.gpu_settings import GPUSettings  # noqa: E402

console_port = int(env["GPUHOST_CONSOLE_PORT"])
c.JupyterHub.services.append({
    "name": "gpu-console",
    "display": True,
    "url": f"http://127.0.0.1:{console_port}",
    "command": [env.get("GPUHOST_PYTHON", "python3"), "-m", "hub.service_process.console.app"],
    "cwd": str(repo),
    # the console's settings as the hub hands them over (hub/settings/gpu_settings.py)
    "environment": GPUSettings(name_prefix=prefix, intent_file=str(state / "gpu-intent.json"),
                               audit_file=str(state / "gpu-audit.jsonl"), usage_interval=1,
                               usage_db=str(state / "gpu-usage.sqlite"), state_dir=str(state),
                               bind="127.0.0.1").to_env(),
    "oauth_no_confirm": True,
})
from hub.hub_process import prestart_api, roster_api  # noqa: E402
from hub.hub_process.config.configure import CONSOLE_SCOPES  # noqa: E402

c.JupyterHub.load_roles.append({"name": "gpu-console", "scopes": list(CONSOLE_SCOPES), "services": ["gpu-console"]})
roster_api.install(c)
prestart_api.install(c, intent_file=str(state / "gpu-intent.json"))  # the console's role names its scope
from hub.hub_process import parking  # noqa: E402
from hub.hub_process.patches import restart_check  # noqa: E402

restart_check.install()
parking.install(c)  # parked servers: no route, the Resume page, kept at a hub restart

# -- gpu-reclaim (configure_reclaim), only where the run asks for it (tests/gpu_host/park_stack.py):
# in the console's process as in production, its settings from GPUHOST_RECLAIM_ENV (JSON), its own
# port on the host instead of the hub container's
if env.get("GPUHOST_RECLAIM_PORT"):
    from hub.hub_process.config.configure import configure_reclaim, reclaim_environment  # noqa: E402
    from hub.settings import RECLAIM_URL_ENV  # noqa: E402

    reclaim_url = f"http://127.0.0.1:{env['GPUHOST_RECLAIM_PORT']}"
    token_file = str(state / "gpu-reclaim-token")
    configure_reclaim(c, env, token_file=token_file)
    # configure_reclaim's own environment line names production's proxy: this run's instead, with
    # the environment set above
    c.GPUDockerSpawner.environment = {**c.DockerSpawner.environment, "GPUHUB_GPU_SERVICE_URL":
                                      f"http://127.0.0.1:{env['GPUHOST_PROXY_PORT']}/services/gpu-reclaim/"}
    for service in c.JupyterHub.services:
        if service["name"] == "gpu-reclaim":
            service["url"] = reclaim_url
        if service["name"] == "gpu-console":
            settings = {**json.loads(env.get("GPUHOST_RECLAIM_ENV", "{}")), "HUB_NAME_PREFIX": prefix}
            service["environment"].update({**reclaim_environment(settings, token_file=token_file),
                                           RECLAIM_URL_ENV: reclaim_url})
            service["environment"].update(json.loads(env.get("GPUHOST_SERVICE_EXTRA_ENV", "{}")))

# -- the warm kernel (tests/gpu_host/instant_stack.py): the profile's imports, and per user how
# the server starts: "cold-*" users with the warm kernel off, "ahead-*" users as a reservation's
# pre-start starts them (GPUDockerSpawner.started_ahead: the spare starts with the server)
c.GPUDockerSpawner.warm_imports = env.get("GPUHOST_WARM_IMPORTS", "torch")


def _variant_by_name(spawner):
    name = spawner.user.name
    if name.startswith("cold-"):
        spawner.warm_kernel = False
    elif name.startswith("ahead-"):
        spawner.started_ahead = True
    elif name == "parkuvm":  # park_stack.py's uvm case: on fake GPUs the stand-in's checkpoint fails,
        # as the driver's does for memory it cannot checkpoint (read by gpu-park's stand-in only)
        spawner.environment = {**spawner.environment, "GPU_PARK_FAKE_FAIL": "checkpoint"}


c.Spawner.pre_spawn_hook = _variant_by_name

# -- recovery (hub/hub_process/config/configure.py configure_recovery) --
c.JupyterHub.last_activity_interval = 10
c.Spawner.poll_interval = 10
templates = repo / "hub" / "hub_process" / "templates"
if templates.is_dir():
    c.JupyterHub.template_paths = [str(templates)]
    from hub.hub_process.spawner import GPUDockerSpawner as _Spawner

    c.JupyterHub.template_vars = {"gpuhub_stop_reason": _Spawner.stop_reason_for}
