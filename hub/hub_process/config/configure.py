"""Turns the environment (.env) into JupyterHub configuration, one small function per area.

``jupyterhub_config.py`` calls these in order; each takes a traitlets ``Config`` and a mapping
of environment variables, so each can be tested against a bare ``Config()``.
"""
import os
import secrets
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from traitlets.config.loader import ConfigError

from hub.hub_process import prestart_api, roster_api
from hub.settings import HOST_MEMORY_STATE_FILE, PROFILES_FILE, RECLAIM_TOKEN_ENV, RECLAIM_URL_ENV, STATE_DIR
from hub.hub_process.config import oauth
from hub.hub_process.config.database import use_wal
from hub.settings.gpu_settings import GPUSettings
from hub.settings.table import read
from hub import __version__
from hub.common.profiles import load_profiles
from hub.usage import gate
from hub.hub_process.spawner.course_volumes import user_courses
from hub.hub_process.config.init_secrets import ensure_secret

PROXY_TOKEN_FILE = "/run/proxy-token/token"
METRICS_TOKEN_FILE = "/run/metrics-token/token"
METRICS_SCOPE = "custom:gpuhub-metrics:read"
NOTEBOOK_DIR = "/home/jovyan/work"
TEMPLATES_DIR = str(Path(__file__).parents[1] / "templates")


def configure_hub(c, env: Mapping[str, str], proxy_token_file: str = PROXY_TOKEN_FILE) -> None:
    """State on the volume, the external proxy, and how containers reach the hub."""
    c.JupyterHub.db_url = f"sqlite:///{STATE_DIR}/jupyterhub.sqlite"
    use_wal(f"{STATE_DIR}/jupyterhub.sqlite")  # commits without waiting for the disk (database.py)
    c.JupyterHub.cookie_secret_file = f"{STATE_DIR}/jupyterhub_cookie_secret"
    # A newer JupyterHub upgrades the database's schema at start (5.5 -> 6 has one), having first
    # copied the SQLite file to jupyterhub.sqlite.<date-time> beside it (docs/operations.md,
    # "Upgrading JupyterHub"); without this the hub refuses to start on an older schema.
    c.JupyterHub.upgrade_db = True
    # The proxy is its own service (so a hub restart keeps users' connections); its API token
    # is generated on first start by gpuhub-init and shared read-only.
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = "http://proxy:8001"
    c.ConfigurableHTTPProxy.auth_token = read_secret(proxy_token_file)
    c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
    c.JupyterHub.hub_connect_url = "http://hub:8081"
    # User servers outlive the hub: a restart or upgrade of the hub leaves them running.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.log_level = read(env, "HUB_LOG_LEVEL").upper()
    # Every page's footer names the release (hub/hub_process/templates/page.html).
    paths = c.JupyterHub.get("template_paths", [])
    c.JupyterHub.template_paths = paths if TEMPLATES_DIR in paths else [*paths, TEMPLATES_DIR]
    c.JupyterHub.template_vars = {**c.JupyterHub.get("template_vars", {}), "gpuhub_version": __version__}
    configure_origins(c, env)


def configure_origins(c, env: Mapping[str, str]) -> None:
    """Users' servers and services on hosts of their own (USER_SUBDOMAINS with HTTPS: `make up`
    writes HUB_SUBDOMAIN_HOST), so a page a user serves runs in an origin that holds none of
    the hub's credentials (docs/security.md#origins). The proxy then routes by host; what
    reaches it by its internal name (users' servers asking gpu-reclaim for JupyterLab's GPU
    item, gpuhub-gpus in the hub's container) gets routes of its own for that name."""
    host = read(env, "HUB_SUBDOMAIN_HOST")
    if not host:
        return
    c.JupyterHub.subdomain_host = host
    internal = PROXY_PUBLIC_URL.split("://", 1)[1].split(":", 1)[0]
    c.Proxy.extra_routes = {**c.Proxy.get("extra_routes", {}),
                            f"{internal}/services/{CONSOLE_NAME}/": CONSOLE_URL,
                            f"{internal}/services/{RECLAIM_NAME}/": RECLAIM_URL}


def configure_auth(c, env: Mapping[str, str], fetch_json=None) -> None:
    """An OAuth provider when OAUTH_PROVIDER names one (hub/hub_process/config/oauth.py); otherwise the embedded
    login: NativeAuthenticator, admin named in .env, password seeded on first start.

    ``fetch_json`` reads the OpenID Connect discovery document (tests pass their own)."""
    provider = oauth.provider_key(env)
    if provider != "none":
        oauth.configure_oauth(c, env, provider, fetch_json or oauth.fetch_json)
        return
    oauth.check_unset(env)
    admin = read(env, "HUB_ADMIN_USER")
    c.JupyterHub.authenticator_class = "hub.hub_process.config.native_auth.SeededNativeAuthenticator"
    c.Authenticator.admin_users = {admin}
    c.SeededNativeAuthenticator.initial_admin_password_file = f"{STATE_DIR}/admin-password"
    # Users sign up on the login page; an admin approves them at /hub/authorize unless open.
    c.NativeAuthenticator.open_signup = read(env, "HUB_OPEN_SIGNUP")
    c.NativeAuthenticator.minimum_password_length = 8
    c.NativeAuthenticator.check_common_password = True
    # NativeAuthenticator's own approval is the allow-list; JupyterHub need not keep a second one.
    c.NativeAuthenticator.allow_all = True


def configure_spawner(c, env: Mapping[str, str], profiles_file: str = PROFILES_FILE) -> None:
    """One container per user from the single-user image, with limits and a work volume."""
    prefix = read(env, "HUB_NAME_PREFIX")
    c.JupyterHub.spawner_class = "hub.hub_process.spawner.GPUDockerSpawner"
    if read(env, "HUB_BACKEND") == "swarm":
        configure_swarm(c, env)
    c.DockerSpawner.image = read(env, "SINGLEUSER_IMAGE")
    c.DockerSpawner.prefix = prefix
    c.GPUDockerSpawner.name_scheme = read(env, "HUB_NAME_SCHEME")
    c.DockerSpawner.network_name = f"{prefix}-net"
    c.DockerSpawner.use_internal_ip = True
    c.DockerSpawner.remove = True
    c.DockerSpawner.notebook_dir = NOTEBOOK_DIR
    c.DockerSpawner.volumes = {f"{prefix}-user-{{username}}": NOTEBOOK_DIR}
    c.DockerSpawner.mem_limit = read(env, "USER_MEM_LIMIT")
    c.DockerSpawner.cpu_limit = read(env, "USER_CPU_LIMIT")
    c.GPUDockerSpawner.shm_size = read(env, "USER_SHM_SIZE")
    c.GPUDockerSpawner.pids_limit = read(env, "USER_PIDS_LIMIT")
    c.GPUDockerSpawner.warm_kernel = read(env, "WARM_KERNEL")
    c.GPUDockerSpawner.warm_imports = read(env, "WARM_KERNEL_IMPORTS") or ""
    c.GPUDockerSpawner.start_at_login = read(env, "PRESTART_AT_LOGIN")  # login_start.install(c) reads it
    c.GPUDockerSpawner.gpu_enabled = read(env, "USER_GPU")
    c.GPUDockerSpawner.gpu_cpu_fallback = read(env, "GPU_CPU_FALLBACK")
    c.GPUDockerSpawner.gpu_request_style = read(env, "GPU_REQUEST_STYLE")
    c.GPUDockerSpawner.gpu_intent_file = GPUSettings.intent_file
    c.GPUDockerSpawner.gpu_audit_file = GPUSettings.audit_file
    c.GPUDockerSpawner.gpu_toolkit_version = read(env, "NVIDIA_CTK_VERSION") or ""
    c.GPUDockerSpawner.gpu_toolkit_min_version = read(env, "GPU_TOOLKIT_MIN_VERSION")
    c.GPUDockerSpawner.gpu_toolkit_override = read(env, "GPU_TOOLKIT_OVERRIDE")
    c.GPUDockerSpawner.usage_db = GPUSettings.usage_db
    c.GPUDockerSpawner.gpu_quota_default = read(env, "GPU_QUOTA_DEFAULT")
    c.Spawner.default_url = "/lab"
    configure_profiles(c, profiles_file)
    c.GPUDockerSpawner.host_memory_when_full = read(env, "HOST_MEMORY_WHEN_FULL")
    c.GPUDockerSpawner.host_memory_reserve = read(env, "HOST_MEMORY_RESERVE")
    c.GPUDockerSpawner.server_memory_estimate = read(env, "SERVER_MEMORY_ESTIMATE")
    c.GPUDockerSpawner.host_memory_max_wait = read(env, "HOST_MEMORY_MAX_WAIT")
    c.GPUDockerSpawner.host_meminfo_file = read(env, "HOST_MEMINFO_FILE")
    c.GPUDockerSpawner.host_memory_state_file = HOST_MEMORY_STATE_FILE
    timeout = read(env, "SPAWN_TIMEOUT")
    # A start's time includes its waits: for memory, and in line for a GPU (configure_queue)
    c.Spawner.start_timeout = timeout + start_waits(env)
    c.Spawner.http_timeout = timeout
    concurrency = read(env, "SPAWN_CONCURRENCY")
    if concurrency is not None:  # unset: the number of CPUs (the traitlet's default)
        c.GPUDockerSpawner.concurrent_starts = concurrency
    # JupyterHub's own cap on starts pending at once (100 by default) answers the 101st with a
    # 429 "Too many users trying to log in right now": in a class of 200 arriving in a minute,
    # 25 got that error page (docs/performance.md). The hub's line already bounds the work
    # (SPAWN_CONCURRENCY starts at a time, the rest told so; admission by memory and the GPU
    # line with their messages), and a start waiting its turn costs a coroutine, so no cap.
    c.JupyterHub.concurrent_spawn_limit = 0


def configure_swarm(c, env: Mapping[str, str]) -> None:
    """Users' servers as Swarm services (hub/hub_process/spawner/swarm.py); the GPUDockerSpawner settings
    apply to it too (it is one). Volumes on NFS when a server is named."""
    c.JupyterHub.spawner_class = "hub.hub_process.spawner.GPUSwarmSpawner"
    spawner = c.GPUSwarmSpawner
    spawner.swarm_nfs_server = read(env, "SWARM_NFS_SERVER")
    spawner.swarm_nfs_export = read(env, "SWARM_NFS_EXPORT")
    spawner.swarm_nfs_options = read(env, "SWARM_NFS_OPTIONS")
    spawner.swarm_constraints = read(env, "SWARM_CONSTRAINTS")
    spawner.swarm_volume_root = read(env, "SWARM_VOLUME_ROOT")
    if spawner.swarm_volume_root and spawner.swarm_nfs_server:
        raise ConfigError("SWARM_NFS_SERVER and SWARM_VOLUME_ROOT are both set: set one of the two "
                          "(Docker mounts NFS itself, or the nodes have the files at one path)")
    if spawner.swarm_volume_root and not spawner.swarm_volume_root.startswith("/"):
        raise ConfigError(f"SWARM_VOLUME_ROOT={spawner.swarm_volume_root!r} is not an absolute path, "
                          "e.g. SWARM_VOLUME_ROOT=/mnt/gpuhub")
    if read(env, "GPU_IDLE_ACTION") == "park":  # docs/gpus.md, "Parking": one host's engine
        raise ConfigError("GPU_IDLE_ACTION=park needs HUB_BACKEND=docker: parking checkpoints and pauses a "
                          "server's container through the hub's own engine, and a Swarm's servers run on "
                          "other nodes. Set GPU_IDLE_ACTION=stop (idle servers are stopped, their files kept)")


def configure_profiles(c, path: str) -> None:
    """Offer the profiles of the mounted file, checked now so a bad file stops the hub at start."""
    if not Path(path).is_file():
        return

    spawner = c.DockerSpawner
    try:
        load_profiles(Path(path).read_text(), spawner.image, spawner.mem_limit, spawner.cpu_limit)
    except ValueError as exc:
        raise ConfigError(f"{path} (HUB_PROFILES): {exc}") from None
    c.GPUDockerSpawner.profiles_file = path


def configure_culler(c, env: Mapping[str, str]) -> None:
    """jupyterhub-idle-culler as a hub-managed service that may only see and stop servers."""
    timeout = read(env, "CULL_IDLE_TIMEOUT")
    if timeout == 0:
        return
    max_age = read(env, "CULL_MAX_AGE")
    every = read(env, "CULL_EVERY")
    c.JupyterHub.services = [*c.JupyterHub.get("services", []), {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={timeout}",
                    f"--max-age={max_age}", f"--cull-every={every}"],
    }]
    c.JupyterHub.load_roles = [*c.JupyterHub.get("load_roles", []), {
        "name": "idle-culler",
        "description": "Find idle servers and stop them (nothing else)",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }]


RECLAIM_NAME = "gpu-reclaim"
RECLAIM_URL = "http://hub:10102"
PROXY_PUBLIC_URL = "http://proxy:8000"  # the proxy's public port, as users' servers reach it
RECLAIM_TOKEN_FILE = f"{STATE_DIR}/gpu-reclaim-token"
RECLAIM_SETTINGS = ("HUB_NAME_PREFIX", "HUB_LOG_LEVEL", "GPU_IDLE_TIMEOUT", "GPU_IDLE_THRESHOLD", "GPU_IDLE_GRACE",
                    "GPU_IDLE_EXEMPT_USERS", "GPU_IDLE_EXEMPT_GROUPS", "GPU_SAMPLE_INTERVAL", "GPU_USAGE_READER",
                    "GPU_QUOTA_DEFAULT",  # for the user's GPU-hours in JupyterLab's GPU item
                    "GPU_IDLE_ACTION", "GPU_PARK_MAX", "GPU_PARK_HOST_RESERVE")  # parking (service_process/reclaim/parking.py)


TEST_PASS_ON = ("GPUHUB_PARK_FAKE",)  # internal rows of the table the tests set: copied into gpu-reclaim's environment


def reclaim_environment(env: Mapping[str, str], token_file: str = RECLAIM_TOKEN_FILE) -> dict[str, str]:
    """gpu-reclaim's environment in the service process: its token, its URL and its settings (a
    bad value stops the hub at start, naming the variable)."""
    for name in RECLAIM_SETTINGS:
        read(env, name)
    out = {RECLAIM_TOKEN_ENV: state_secret(token_file), RECLAIM_URL_ENV: RECLAIM_URL,
           **{name: env[name] for name in RECLAIM_SETTINGS if env.get(name, "").strip()}}
    # tests on fake GPUs (tests/e2e/fake_gpu): gpu-park's driver stand-in, passed on as it is
    out.update({name: env[name] for name in TEST_PASS_ON if env.get(name, "").strip()})
    return out


def configure_reclaim(c, env: Mapping[str, str], token_file: str = RECLAIM_TOKEN_FILE) -> None:
    """gpu-reclaim (hub/service_process/reclaim/service.py): samples every GPU, attributes each reading to the
    server holding it, and stops servers whose GPU stayed idle (after a warning in JupyterLab).
    Users' servers reach its ``api/me`` with their own token (JupyterLab's GPU item).

    It runs in the GPU console's process (configure_console hands that process gpu-reclaim's
    environment: ``reclaim_environment``), one Python process fewer in the hub's container, yet stays a service of its own for JupyterHub: its own URL,
    and its own token, whose role may only list users with their groups (exemptions), read
    servers and stop them. JupyterHub knows it as an external service with that token: the
    token is kept on the state volume (``state_secret``), as JupyterHub never removes a token
    from the configuration that it once added."""
    token = state_secret(token_file)  # the same token configure_console hands the process
    c.JupyterHub.services = [*c.JupyterHub.get("services", []), {
        "name": RECLAIM_NAME,
        "url": RECLAIM_URL,
        "api_token": token,
        "info": {"description": "GPU activity per server; idle GPUs are reclaimed after a warning "
                                f"(runs in the {CONSOLE_NAME} service's process)"},
    }]
    c.JupyterHub.load_roles = [*c.JupyterHub.get("load_roles", []), {
        "name": RECLAIM_NAME,
        "description": "GPU reclaim: see users, their groups and servers; stop servers (nothing else)",
        "scopes": ["list:users", "read:users:name", "read:users:groups", "read:servers", "delete:servers"],
        "services": [RECLAIM_NAME],
    }]
    # Through the proxy's public port: users' servers may not reach the services' own ports
    # (hub/netguard.py), and JupyterHub routes /services/<name>/ to the service.
    c.GPUDockerSpawner.environment = {**c.GPUDockerSpawner.get("environment", {}),
                                      "GPUHUB_GPU_SERVICE_URL": f"{PROXY_PUBLIC_URL}/services/{RECLAIM_NAME}/"}


def start_waits(env: Mapping[str, str]) -> int:
    """Seconds a start may wait before its container is made: for the host's memory, and in line
    for a GPU; JupyterHub's start timeout allows them on top of SPAWN_TIMEOUT."""
    when_full = read(env, "GPU_WHEN_FULL") or ("cpu" if read(env, "GPU_CPU_FALLBACK") else "refuse")
    gpu = read(env, "GPU_QUEUE_MAX_WAIT") if when_full == "queue" else 0
    memory = read(env, "HOST_MEMORY_MAX_WAIT") if read(env, "HOST_MEMORY_WHEN_FULL") == "wait" else 0
    return gpu + memory


def configure_queue(c, env: Mapping[str, str]) -> None:
    """What a start does when every GPU is taken (GPU_WHEN_FULL; hub/gpus/queue.py for the line).
    Waiting in line is part of a start for JupyterHub, so its start timeout allows the longest
    wait (``start_waits``). (The line the last hub process left is recovered by jupyterhub_config.py, a start-up
    action: hub/hub_process/spawner/spawner.py ``recover_gpu_queue``.)"""
    when_full = read(env, "GPU_WHEN_FULL") or ("cpu" if read(env, "GPU_CPU_FALLBACK") else "refuse")
    c.GPUDockerSpawner.gpu_when_full = when_full
    if when_full == "queue":
        c.GPUDockerSpawner.gpu_queue_max_wait = read(env, "GPU_QUEUE_MAX_WAIT")


CONSOLE_NAME = "gpu-console"
PRESTART_SETTINGS = ("RESERVATION_PRESTART_MINUTES", "RESERVATION_PRESTART_GRACE_MINUTES")
CONSOLE_URL = "http://hub:10101"  # the proxy reaches the hub container by name on the network


def configure_console(c, env: Mapping[str, str], reclaim_token_file: str = RECLAIM_TOKEN_FILE) -> None:
    """The GPU console (hub/service_process/console/): a hub-managed service in the hub's container, linked
    from the hub's navigation, for admins only (HubOAuth with the service's access scope, which
    JupyterHub's admin role has and users do not). Its own token may only read users, groups
    and servers and stop servers: pins, drains and access are written to the intent file on the
    state volume, which the spawner re-reads before every decision."""
    spawner = c.GPUDockerSpawner
    traits = {"intent_file": "gpu_intent_file", "request_style": "gpu_request_style",
              "label_prefix": "label_prefix", "cdi_dirs": "gpu_cdi_dirs",
              "inventory_file": "gpu_inventory_file", "usage_db": "usage_db",
              "quota_default": "gpu_quota_default"}
    gpu = GPUSettings(
        name_prefix=read(env, "HUB_NAME_PREFIX"),
        log_level=read(env, "HUB_LOG_LEVEL").upper(),
        backend=read(env, "HUB_BACKEND"),
        swarm_constraints=tuple(read(env, "SWARM_CONSTRAINTS")),
        roster_max_bytes=read(env, "CONSOLE_ROSTER_MAX_SIZE"),
        **{field: spawner[trait] for field, trait in traits.items() if trait in spawner})
    environment = {**gpu.to_env(), **reclaim_environment(env, reclaim_token_file)}  # gpu-reclaim runs in it too
    # The console's "Host health" card runs the same checks (hub/gpus/doctor.py)
    environment.update({key: env[key] for key in ("SINGLEUSER_IMAGE", "GPU_TOOLKIT_MIN_VERSION",
                                                   "GPU_TOOLKIT_OVERRIDE", "NVIDIA_CTK_VERSION", "HUB_BACKEND",
                                                   "HOST_MEMORY_RESERVE", "HOST_MEMORY_WHEN_FULL",
                                                   "HOST_MEMINFO_FILE") if env.get(key)})
    # Reservations' pre-start (course_actions.py): checked now, so a bad value stops the hub at start
    for key in PRESTART_SETTINGS:
        read(env, key)
    environment.update({key: env[key] for key in PRESTART_SETTINGS if env.get(key, "").strip()})
    c.JupyterHub.services = [*c.JupyterHub.get("services", []), {
        "name": CONSOLE_NAME,
        "display": True,
        "url": CONSOLE_URL,
        "command": [sys.executable, "-m", "hub.service_process.console.app"],
        "environment": environment,
        "oauth_no_confirm": True,
        "info": {"description": "GPUs: who holds which, live usage; pin, drain, free, access"},
    }]
    c.JupyterHub.load_roles = [*c.JupyterHub.get("load_roles", []), {
        "name": CONSOLE_NAME,
        "description": "GPU console: see users, groups and servers, stop servers, start course members' "
                       "servers for a reservation's pre-start; import course rosters (create users and course groups, "
                       "set their members and properties)",
        "scopes": list(CONSOLE_SCOPES),
        "services": [CONSOLE_NAME],
    }]
    roster_api.install(c)
    prestart_api.install(c)


# The GPU console's token: each scope for the hub API calls of hub/common/hubapi.py; why each,
# and where JupyterHub has no narrower one, in docs/security.md ("Console input and tokens").
CONSOLE_SCOPES = (
    "list:users", "read:users:groups",  # users and their groups (access lists, quotas, courses)
    "read:servers", "delete:servers",  # running servers; Free, course stops, quotas, max sessions
    "list:groups", "read:groups",  # groups with members and properties (courses)
    "groups",  # a course's members and its gpuhub.course property (rosters, course settings)
    roster_api.SCOPE,  # create a roster's users and course groups (not admin:users/admin:groups)
    prestart_api.SCOPE,  # start course members' servers for a reservation's pre-start (not `servers`)
)


def configure_usage(c, env: Mapping[str, str], token_file: str = METRICS_TOKEN_FILE) -> None:
    """GPU usage for users and for Prometheus (docs/usage.md).

    - The hub's pages (home, spawn, "not running") show the user's GPU-hours and quota, the 90 %
      warning and why a server was stopped for its quota (hub/hub_process/templates/gpuhub_usage.html).
    - A ``prometheus`` service whose token (made by gpuhub-init on the metrics-token volume) may
      read the GPU console's metrics (the custom scope) and JupyterHub's own /hub/metrics, and
      nothing else: the monitoring profile's Prometheus scrapes with it."""

    usage_db, default = GPUSettings.usage_db, read(env, "GPU_QUOTA_DEFAULT")

    def usage_of(user) -> dict:
        if user is None:
            return {}
        groups = [g.name for g in getattr(user, "groups", [])]
        return gate.summary(usage_db, user.name, groups, list(user_courses(user)), default)

    paths = c.JupyterHub.get("template_paths", [])
    c.JupyterHub.template_paths = paths if TEMPLATES_DIR in paths else [*paths, TEMPLATES_DIR]
    c.JupyterHub.template_vars = {**c.JupyterHub.get("template_vars", {}), "gpuhub_usage": usage_of}
    c.JupyterHub.custom_scopes = {**c.JupyterHub.get("custom_scopes", {}), METRICS_SCOPE: {
        "description": "Read the GPU console's Prometheus metrics (GPU usage, holders, quotas)"}}
    if not Path(token_file).is_file():
        return
    c.JupyterHub.services = [*c.JupyterHub.get("services", []), {
        "name": "prometheus", "api_token": read_secret(token_file),
        "info": {"description": "Scrapes metrics (the monitoring profile)"}}]
    c.JupyterHub.load_roles = [*c.JupyterHub.get("load_roles", []), {
        "name": "metrics-reader",
        "description": "Read the GPU console's and the hub's Prometheus metrics, nothing else",
        "scopes": [METRICS_SCOPE, "read:metrics"],
        "services": ["prometheus"],
    }]


def configure_recovery(c, env: Mapping[str, str]) -> None:
    """How fast the hub notices and repairs what changed behind its back (README, "Faults").

    - A restarted proxy starts with no routes; JupyterHub re-adds the missing ones when it
      updates activity (every 300 s, its default, kept: that update costs a database query
      per route): the route guard (hub/hub_process/watchdog.py, ``HubGuards.route_check_interval``)
      compares the proxy's routes with the running servers every 10 s instead, in memory.
    - A server that stopped on its own (out of memory, crashed) is noticed by the poll (every
      30 s, JupyterHub's default), at once when its user opens the hub's home page (JupyterHub
      polls then), and the proxy's page for a dead server sends the user there; the "not
      running" page then says why (hub/hub_process/templates/not_running.html, GPUDockerSpawner.stop_reason).
    - The state volume and the Docker engine are watched (hub/hub_process/watchdog.py)."""
    c.JupyterHub.last_activity_interval = 300
    c.Spawner.poll_interval = 30
    c.JupyterHub.template_paths = [*c.JupyterHub.get("template_paths", []), TEMPLATES_DIR]
    # DockerSpawner and the hub's database layer load when the hub configures, not when a tool reads this module
    from hub.hub_process.spawner import GPUDockerSpawner

    reasons = f"{STATE_DIR}/stop-reasons.json"  # left by hub services (gpu-reclaim)
    c.GPUDockerSpawner.stop_reasons_file = reasons
    c.JupyterHub.template_vars = {**c.JupyterHub.get("template_vars", {}),
                                  "gpuhub_stop_reason": partial(GPUDockerSpawner.stop_reason_for, file=reasons)}
    c.HubGuards.state_dir = STATE_DIR


def state_secret(path: str) -> str:
    """A secret the hub keeps on its state volume for itself (gpu-reclaim's API token): made on
    the hub's first start with it, owned by the hub's user and readable by it only (0600),
    never overwritten (gpuhub-init's ``ensure_secret``, the same way as the cookie secret), then
    read. A clear error naming the file if it cannot be made or read, or is not a token."""

    try:
        ensure_secret(Path(path), secrets.token_hex(32), os.getuid(), os.getgid(), 0o600)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot create or read the secret {path} ({reason}); the hub's user must own it "
                          "(or delete it: the hub makes a new one at its next start)") from None
    value = read_secret(path)
    if len(value) < 8 or any(ch.isspace() for ch in value):  # 8: JupyterHub's shortest API token
        raise ConfigError(f"the secret {path} is not a token (one word of at least 8 characters); delete it "
                          "and the hub makes a new one at its next start")
    return value


def read_secret(path: str) -> str:
    """The content of a secret file that gpuhub-init wrote; a clear error if it is missing."""
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError as exc:
        value, reason = "", exc.strerror
    else:
        reason = "it is empty"
    if not value:
        raise ConfigError(f"cannot read the secret {path} ({reason}); it is created by the init "
                          "service on first start: run `docker compose up -d` rather than starting "
                          "the hub container alone")
    return value
