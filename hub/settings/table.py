"""Every environment variable the deployment reads, in one table: its section, type, default,
help and an example.

The hub reads its settings through ``read(env, name)``, so each default lives here and nowhere
else. ``.env.example``, the hub's environment list in ``docker-compose.yml`` and
``docs/configuration.md`` are generated from this table (``make config-docs``, i.e.
``python -m hub.settings.generate --write``); a unit test fails when one of them is stale.

Help texts are Markdown (backticks, links relative to docs/); ``.env.example`` shows them as
plain text.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hub import __version__
from hub.settings import PROFILES_FILE, RECLAIM_TOKEN_ENV, RECLAIM_URL_ENV, STATE_DIR, readers

HUB, INIT, COMPOSE, MAKE, INTERNAL = "hub", "init", "compose", "make", "internal"


def release_tag(repository: str) -> str:
    """The tag an image of this repository gets from `make images` in this release: the version
    (hub/__init__.py), so an upgrade builds new tags and the previous release's images stay for
    a rollback (docs/operations.md, "Upgrades")."""
    return f"{repository}:{__version__}"


# .env.example leaves the image tags blank ("this release's tag"): a tag copied into .env would
# stay behind at the next upgrade, which would then build the new release under the old tag.
RELEASE_TAG_DOC = "`{}:<version>` (this release: `{}`)"


@dataclass(frozen=True)
class Section:
    title: str
    intro: str


@dataclass(frozen=True)
class Setting:
    name: str
    section: Section
    kind: str
    """How the value is read: a reader of hub/settings/readers.py, or "compose" for a value only
    docker compose (or make) uses."""
    help: str
    default: str = ""
    """What an unset or blank variable means."""
    example: str = ""
    choices: tuple[str, ...] = ()
    written: str | None = None
    """The value .env.example and compose's fallback write, when not the default itself (""
    where empty means the default)."""
    default_doc: str = ""
    """How the docs show the default when it is not a plain value."""
    used_by: str = HUB
    """Who reads it: the hub (compose passes it into the hub's container), the one-shot init
    service, docker compose itself (ports, volumes, image builds), ``make up`` alone
    (hub/settings/host_setup.py, which turns it into compose.host.yml), or INTERNAL: the hub
    writes it into its service process's environment (not in .env.example nor compose; the
    reference lists it as internal)."""
    optional: bool = False
    """Blank means "not set" (read() returns None) rather than the default."""
    tagged: bool = False
    """An image tag of this release (release_tag): .env.example leaves it blank, and compose's
    fallbacks (the hub's environment, the `image:` lines) are the default itself."""

    @property
    def value(self) -> str:
        """The value written into .env.example and as compose's ${NAME:-value} fallback."""
        return self.default if self.written is None else self.written

    @property
    def compose_value(self) -> str:
        """compose's ${NAME:-value} fallback."""
        return self.default if self.tagged else self.value

    @property
    def to_hub(self) -> bool:
        return self.used_by == HUB

    @property
    def internal(self) -> bool:
        return self.used_by == INTERNAL

    def read(self, env: Mapping[str, str]):
        """The value of this setting in ``env``, parsed and checked (a ConfigError names it)."""
        name, default = self.name, self.default
        if self.kind == "compose":
            raise LookupError(f"{name} is read by docker compose, not by the hub")
        if self.optional and not env.get(name, "").strip():
            return None
        if self.kind == "choice":
            return readers.choice(env, name, default, self.choices)
        if self.kind == "url":
            return readers.url(env, name, self.example, default)
        if self.kind == "name_list":
            return readers.name_list(env, name)
        # positive_int and friends show the default as their example; an optional setting has
        # no default, so its error shows the example instead.
        return getattr(readers, self.kind)(env, name, self.example if self.optional else default)


def read(env: Mapping[str, str], name: str):
    """The value of the setting ``name`` in ``env`` (see Setting.read)."""
    return SETTINGS[name].read(env)


def given(env: Mapping[str, str], name: str) -> bool:
    """Whether the setting ``name`` is set in ``env``: not blank and, for a yes/no setting, not a
    no. A value that is neither yes nor no counts as set, so a check that it should not be set
    names it. Never raises for a bad value (``read`` does)."""
    raw = env.get(name, "").strip()
    if SETTINGS[name].kind == "boolean":
        return bool(raw) and raw.lower() not in readers.NO
    return bool(raw)


HUB_SECTION = Section("Hub", "Where the hub is published, the names of its Docker objects, and its log.")
LOGIN = Section("Embedded login", (
    "The hub's own login (NativeAuthenticator), used while `OAUTH_PROVIDER` is empty; see "
    "[Authentication](authentication.md#the-embedded-login-nativeauthenticator)."))
OAUTH = Section("OAuth login", (
    "Log in through GitHub, GitLab, Google or an OpenID Connect provider instead. Empty "
    "`OAUTH_PROVIDER`: the embedded login above. Leave the variables of other providers empty: a "
    "variable set for another provider stops the hub at start. See [Logging in with GitHub, GitLab, "
    "Google or OpenID Connect](authentication.md#logging-in-with-github-gitlab-google-or-openid-connect)."))
SERVERS = Section("User servers", (
    "Each user's server is a container of the single-user image with these limits; see "
    "[User servers](servers.md)."))
GPUS = Section("GPUs", "Whether and how servers get a GPU; see [GPUs](gpus.md).")
CULLER = Section("Idle culler", (
    "jupyterhub-idle-culler stops idle servers; a stopped server gives its GPU back. See "
    "[Idle culling](servers.md#idle-culling)."))
HTTPS = Section("HTTPS", (
    "Set `HUB_DOMAIN` and `make up` puts Caddy in front of the proxy (compose profile `tls`) and stops "
    "publishing the proxy's port; `make up` stops with a message naming the variable when one of these is "
    "wrong. Read by `make` and docker compose (hub/settings/host_setup.py), not by the hub; see "
    "[Security: HTTPS](security.md#https)."))
IDLE_GPUS = Section("Idle GPUs", (
    "A server whose GPU stays nearly unused is warned in JupyterLab and then stopped (files kept), so "
    "its GPU goes to someone else, even while its browser tab is open. The `gpu-reclaim` service samples "
    "every GPU; see [Idle GPUs](gpus.md#idle-gpus)."))
SWARM = Section("Docker Swarm", (
    "One hub over several GPU servers: `make swarm-up` deploys the hub and proxy as a Swarm stack "
    "(`swarm/stack.yml`) and every user server is a Swarm service on a node with a free GPU. The single-host "
    "compose stack ignores these. See [One hub over several GPU servers](swarm.md)."))
INTERNAL_SECTION = Section("Internal", (
    "Not for `.env`: the hub writes these into the environment of its service process (the GPU console "
    "and `gpu-reclaim`, which read them through this table like every other setting), from its own "
    "configuration; tests point them elsewhere. Listed so that every variable a process reads is here."))
IMAGES = Section("Images", (
    "Read by docker compose and `make` when they build the images, not by the hub; see "
    "[The images](images.md)."))

_TABLE = [
    # --- Hub
    Setting("HUB_PUBLISH", HUB_SECTION, "compose", default="8000", example="127.0.0.1:8000", used_by=COMPOSE,
            help="Host `[address:]port` the proxy is published on (the only published port); bind it to "
                 "`127.0.0.1` behind a TLS reverse proxy."),
    Setting("PROMETHEUS_PUBLISH", HUB_SECTION, "compose", default="127.0.0.1:9090", example="9090", used_by=COMPOSE,
            help="Host `[address:]port` of the `monitoring` profile's Prometheus (`docker compose --profile "
                 "monitoring up -d`); loopback only unless you change it. See [Usage and metrics](usage.md)."),
    Setting("HUB_NAME_PREFIX", HUB_SECTION, "name_prefix", default="gpuhub", example="lab",
            help="Prefix of every Docker object this deployment creates: compose project, network "
                 "`<prefix>-net`, containers `<prefix>-<user>`, volumes `<prefix>-user-<user>` (up to 30 "
                 "lowercase letters, digits or dashes)."),
    Setting("HUB_NAME_SCHEME", HUB_SECTION, "choice", default="gpuhub", example="dockerspawner",
            choices=("gpuhub", "dockerspawner"),
            help="How users' containers and volumes are named: `gpuhub` (readable and bounded, any username) or "
                 "`dockerspawner` (a stock DockerSpawner's escaping: for a hub moved from one, so that its users' "
                 "volumes are found as they are; see [operations](operations.md#moving-from-a-stock-dockerspawner)). "
                 "Plain usernames (lowercase letters, digits, dashes) get the same names either way."),
    Setting("HUB_SUBDOMAIN_HOST", HUB_SECTION, "text", default="", example="https://hub.example.org",
            help="Written by `make up` from `HUB_DOMAIN` and `USER_SUBDOMAINS` (the hub's `subdomain_host`); "
                 "not set by hand."),
    Setting("HUB_LOG_LEVEL", HUB_SECTION, "text", default="INFO", example="DEBUG",
            help="Log level of the hub and the GPU console (`DEBUG`, `INFO`, `WARNING`)."),
    # --- Embedded login
    Setting("HUB_ADMIN_USER", LOGIN, "username", default="admin", example="alice",
            help="The admin account, created on first start."),
    Setting("HUB_ADMIN_PASSWORD", LOGIN, "text", default_doc="(generated)", used_by=INIT,
            help="Its initial password (8+ characters). Empty: one is generated on first start and kept "
                 "in the state volume; read it with `docker compose exec hub cat "
                 "/srv/jupyterhub/state/admin-password`. Read by the one-shot init service only."),
    Setting("HUB_OPEN_SIGNUP", LOGIN, "boolean", default="false", example="true",
            help="`true`: anyone who signs up can log in at once; `false`: an admin approves sign-ups "
                 "at `/hub/authorize`."),
    # --- OAuth login
    Setting("OAUTH_PROVIDER", OAUTH, "text", default="none", written="", default_doc="(empty)", example="github",
            help="`github`, `gitlab`, `google` or `oidc` (Keycloak, Azure AD, Authentik, Dex, ... any "
                 "OpenID Connect provider): log in through that provider; empty: the embedded login."),
    Setting("OAUTH_CLIENT_ID", OAUTH, "text",
            help="Client id of the OAuth app (or client) you register with the provider."),
    Setting("OAUTH_CLIENT_SECRET", OAUTH, "text", help="Its client secret."),
    Setting("OAUTH_CALLBACK_URL", OAUTH, "text", example="https://hub.example.org/hub/oauth_callback",
            help="`https://<your host>/hub/oauth_callback`, also entered as the app's callback / redirect "
                 "URL, exactly the same."),
    Setting("OAUTH_ALLOWED_USERS", OAUTH, "name_list", example="alice,bob",
            help="Usernames that may log in (comma-separated). At least one rule is needed (this, "
                 "`OAUTH_ALLOWED_ORGS`, `OAUTH_ALLOWED_GROUPS` or `OAUTH_ADMIN_USERS`), or "
                 "`OAUTH_ALLOW_ALL=true`."),
    Setting("OAUTH_ADMIN_USERS", OAUTH, "name_list", example="alice",
            help="Usernames that are hub admins (and may log in), comma-separated."),
    Setting("OAUTH_ALLOWED_ORGS", OAUTH, "name_list", example="my-lab,my-org:gpu-users",
            help="GitHub organisations or `org:team`, GitLab groups, or Google Workspace domains whose "
                 "members may log in (comma-separated)."),
    Setting("OAUTH_ALLOWED_GROUPS", OAUTH, "name_list", example="gpu-users",
            help="`oidc`: values of the group claim whose members may log in."),
    Setting("OAUTH_ADMIN_GROUPS", OAUTH, "name_list", example="gpu-admins",
            help="`oidc`: values of the group claim whose members are hub admins."),
    Setting("OAUTH_ALLOW_ALL", OAUTH, "boolean", default="false", example="true",
            help="`true`: every account of the provider may log in (instead of allow rules; setting both "
                 "is refused)."),
    Setting("GITLAB_URL", OAUTH, "url", default="https://gitlab.com", written="",
            example="https://gitlab.example.org",
            help="`gitlab`: a self-hosted GitLab; empty: `https://gitlab.com`."),
    Setting("OIDC_ISSUER", OAUTH, "url", example="https://sso.example.org/realms/lab",
            help="`oidc`: the issuer URL; the endpoints come from its discovery document "
                 "(`/.well-known/openid-configuration`). Keycloak: `https://<host>/realms/<realm>`; "
                 "Azure AD: `https://login.microsoftonline.com/<tenant>/v2.0`."),
    Setting("OIDC_AUTHORIZE_URL", OAUTH, "url", default_doc="(discovered)",
            example="https://sso.example.org/authorize",
            help="`oidc`: authorization endpoint, instead of the discovered one."),
    Setting("OIDC_TOKEN_URL", OAUTH, "url", default_doc="(discovered)", example="https://sso.example.org/token",
            help="`oidc`: token endpoint, instead of the discovered one."),
    Setting("OIDC_USERDATA_URL", OAUTH, "url", default_doc="(discovered)",
            example="https://sso.example.org/userinfo",
            help="`oidc`: userinfo endpoint, instead of the discovered one; with all three set, "
                 "`OIDC_ISSUER` is not needed."),
    Setting("OIDC_CLAIMS_FROM", OAUTH, "choice", default="userinfo", written="", example="id_token",
            choices=("userinfo", "id_token"),
            help="`oidc`: read the claims from the `userinfo` endpoint or the `id_token` (Azure AD)."),
    Setting("OIDC_SCOPES", OAUTH, "text", default="openid,profile,email", written="",
            example="openid,profile,email,groups",
            help="`oidc`: scopes to request, comma-separated; add what your provider needs for groups "
                 "(Dex, Authentik: `groups`)."),
    Setting("OIDC_USERNAME_CLAIM", OAUTH, "text", default="preferred_username", written="", example="email",
            help="`oidc`: claim that is the hub username."),
    Setting("OIDC_GROUPS_CLAIM", OAUTH, "text", default="groups", written="", example="realm_access.roles",
            help="`oidc`: claim with the user's groups (nested with dots)."),
    Setting("OIDC_LOGIN_SERVICE", OAUTH, "text", default="OpenID Connect", written="", example='"Lab SSO"',
            help="`oidc`: name on the login button (\"Sign in with ...\"); quote values with spaces."),
    # --- User servers
    Setting("SINGLEUSER_IMAGE", SERVERS, "text", default=release_tag("gpuhub/pytorch-notebook"), written="", tagged=True,
            default_doc=RELEASE_TAG_DOC.format("gpuhub/pytorch-notebook", release_tag("gpuhub/pytorch-notebook")),
            example="registry.example.org/lab/notebook:2",
            help="Image of each user's server (`make up` builds it under this tag). Blank: this release's tag."),
    Setting("USER_MEM_LIMIT", SERVERS, "byte_size", default="8G", example="16G",
            help="Memory limit per user server (K/M/G/T)."),
    Setting("USER_CPU_LIMIT", SERVERS, "cpus", default="2", example="0.5",
            help="CPUs per user server (fractions allowed)."),
    Setting("USER_SHM_SIZE", SERVERS, "byte_size", default="1G", example="2G",
            help="Size of `/dev/shm` per user server: PyTorch `DataLoader` workers pass batches through "
                 "it."),
    Setting("USER_PIDS_LIMIT", SERVERS, "positive_int", default="1024", example="4096",
            help="Most processes/threads per user server."),
    Setting("HOST_MEMORY_WHEN_FULL", SERVERS, "choice", default="wait", example="refuse", choices=("wait", "refuse", "off"),
            help="When a start would leave the host less available memory than `HOST_MEMORY_RESERVE`: `wait` "
                 "(the spawn page says why and the server starts by itself when memory frees, first come first "
                 "served), `refuse` (the start fails with that message), or `off` (no check: the kernel's OOM "
                 "killer decides). One Docker host only; see [User servers](servers.md#admission-by-memory)."),
    Setting("HOST_MEMORY_RESERVE", SERVERS, "byte_size", default="1G", example="4G",
            help="Memory the host keeps available whatever starts (the hub and running servers need room "
                 "to grow)."),
    Setting("SERVER_MEMORY_ESTIMATE", SERVERS, "byte_size", default="512M", example="1G",
            help="What a new server is expected to take until the hub has measured some (then: the median of "
                 "recent servers when their start is over); never more than the server's memory limit."),
    Setting("HOST_MEMORY_MAX_WAIT", SERVERS, "positive_int", default="600", example="1800",
            help="With `HOST_MEMORY_WHEN_FULL=wait`: seconds a start may wait for memory before it gives up "
                 "with a message (JupyterHub's start timeout allows it)."),
    Setting("HOST_MEMINFO_FILE", SERVERS, "text", default="/proc/meminfo", example="/srv/jupyterhub/state/meminfo",
            help="Where the hub reads the host's memory (a container sees the host's `/proc/meminfo`); the "
                 "tests point it at a file of their own."),
    Setting("WARM_KERNEL", SERVERS, "boolean", default="true", example="false",
            help="Each server keeps one spare kernel with `WARM_KERNEL_IMPORTS` done, started once the "
                 "server is quiet after the first JupyterLab page (its assets served) and handed to the first notebook, so its first cell "
                 "answers at once; the next spare starts only if the server's memory has room. It holds no GPU "
                 "memory and is not the user's kernel (nor counted as activity) until a notebook takes it. "
                 "A profile's `warm_kernel:` overrides this; see "
                 "[Performance: instant start](performance.md#instant-start)."),
    Setting("WARM_KERNEL_IMPORTS", SERVERS, "text", optional=True, example="torch numpy",
            default_doc="the image's: `numpy torch pandas matplotlib.pyplot`",
            help="Modules the spare kernel imports, separated by spaces (a profile's `warm_kernel: [...]` "
                 "overrides it). Empty: the image's default list."),
    Setting("PRESTART_AT_LOGIN", SERVERS, "boolean", default="false", example="true",
            help="A user who has exactly one server profile (nothing to choose on the spawn page) gets their "
                 "server started as they log in (password form or OAuth), so it is starting or up when they land "
                 "on the hub, wherever the login sends them. Its GPU-hours count from then: the person is there. "
                 "See [Servers: starting at login](servers.md#starting-at-login)."),
    Setting("USER_NETWORK_ISOLATION", SERVERS, "boolean", default="true", example="false",
            help="A user's server reaches only the hub's API and the proxy's public port on the deployment's "
                 "network (not other users' servers, the proxy's API, the services or Prometheus), never "
                 "link-local addresses (a cloud's metadata service), and no service of the host but DNS: "
                 "rules in the host's `DOCKER-USER` chain kept by the `netguard` service; see "
                 "[Security: network](security.md#network). Single host only (not Swarm)."),
    Setting("USER_EGRESS", SERVERS, "choice", default="open", example="closed", choices=("open", "closed"),
            help="`closed`: users' servers reach nothing outside the deployment's network either (no "
                 "`pip install`, no downloads); needs `USER_NETWORK_ISOLATION=true`."),
    Setting("HUB_PROFILES", SERVERS, "compose", default="./profiles.yaml", example="/etc/gpuhub/profiles.yaml",
            used_by=COMPOSE,
            help="The server profiles users choose from: a file on this host, mounted read-only into the "
                 "hub; see [Profiles](servers.md#profiles)."),
    Setting("SPAWN_TIMEOUT", SERVERS, "positive_int", default="120", example="300",
            help="Seconds a server may take to start before the spawn fails, a wait for a start turn "
                 "included."),
    Setting("SPAWN_CONCURRENCY", SERVERS, "positive_int", example="2", optional=True,
            default_doc="number of CPUs (at least 2)",
            help="Most servers starting at the same time; the others wait their turn and the spawn page "
                 "says so, which on a busy host is faster for all of them. Empty: the host's number of CPUs "
                 "(at least 2). See [Performance](performance.md)."),
    # --- GPUs
    Setting("USER_GPU", GPUS, "boolean", default="true", example="false",
            help="Give each server one whole GPU of its own, by UUID, when the host has GPUs."),
    Setting("GPU_REQUEST_STYLE", GPUS, "choice", default="auto", example="cdi", choices=("auto", "cdi", "nvidia"),
            help="How a container is given its GPU: `cdi` (Docker >= 25 with CDI and a CDI spec), `nvidia` "
                 "(NVIDIA Container Toolkit) or `auto` (`cdi` when the engine has CDI and a CDI spec lists "
                 "the GPUs, else `nvidia`); see [Request styles](gpus.md#request-styles)."),
    Setting("GPU_CPU_FALLBACK", GPUS, "boolean", default="false", example="true",
            help="When no GPU is free: `false` refuses the start with a message, `true` starts the server "
                 "without a GPU."),
    Setting("HUB_NVML", GPUS, "compose", default="auto", example="false", used_by=MAKE,
            choices=("auto", "true", "false"),
            help="Give the hub the NVIDIA driver's management library (NVML, the `utility` capability only), for "
                 "live GPU usage, the inventory and the GPU health checks: `auto` on an NVIDIA host (`nvidia-smi` "
                 "lists GPUs, or a CDI spec hands out `/dev/nvidia*` devices), `true` always, `false` never. "
                 "Written by `make up` into `compose.host.yml`."),
    Setting("NVIDIA_CTK_VERSION", GPUS, "version", default="", example="1.17.8", optional=True,
            help="The host's NVIDIA Container Toolkit version, for the CVE check: `make up` reads it from "
                 "`nvidia-ctk --version`; set it where `make up` does not run. Empty: not known (the check "
                 "says so and does not block)."),
    Setting("GPU_TOOLKIT_MIN_VERSION", GPUS, "version", default="1.19.1", example="1.17.8",
            help="Lowest NVIDIA Container Toolkit version the hub hands GPUs out with: below it, no GPU is "
                 "handed out and the message names the container-escape CVEs fixed since "
                 "([GPUs: Host health](gpus.md#host-health)). `1.19.1` covers every CVE the hub knows of."),
    Setting("GPU_TOOLKIT_OVERRIDE", GPUS, "boolean", default="false", example="true",
            help="`true`: hand GPUs out even with a toolkit older than `GPU_TOOLKIT_MIN_VERSION` (the admin "
                 "accepts the risk; the console and `gpuhub-gpus doctor` still say so)."),
    Setting("GPU_QUOTA_DEFAULT", GPUS, "gpu_quota", example="20h/7d",
            help="Every user's GPU-hours per rolling window (`20h/7d`: 20 GPU-hours in any 7 days; `4h/24h`); "
                 "empty: no limit. Quotas for a user, group or course set in the GPU console apply too, and "
                 "the tightest decides; see [Usage and quotas](usage.md)."),
    Setting("GPU_WHEN_FULL", GPUS, "choice", example="queue", choices=("refuse", "queue", "cpu"), optional=True,
            default_doc="`refuse` (`cpu` with `GPU_CPU_FALLBACK=true`)",
            help="When every GPU is taken: `refuse` the start with a message, `queue` (the user waits in line, "
                 "the spawn page shows the place in line, and the server starts by itself when a GPU frees; "
                 "Cancel leaves the line), or `cpu` (start without a GPU). See [The line](gpus.md#the-line)."),
    Setting("CONSOLE_ROSTER_MAX_SIZE", GPUS, "byte_size", default="1M", example="4M",
            help="The largest course roster (CSV or YAML) the GPU console imports, from 4K to 64M; a larger "
                 "upload is refused with 413 before it is read. Other console requests are limited to 64 KiB; "
                 "see [GPU console](console.md#limits)."),
    Setting("GPU_QUEUE_MAX_WAIT", GPUS, "positive_int", default="14400", example="3600",
            help="With `GPU_WHEN_FULL=queue`: seconds a start may wait in line before it gives up with a message "
                 "(JupyterHub's start timeout is set to this plus `SPAWN_TIMEOUT`)."),
    Setting("RESERVATION_PRESTART_MINUTES", GPUS, "non_negative_int", default="0", example="10",
            help="Minutes before a course's GPU reservation starts that the GPU console starts the servers of the "
                 "course's members, with the course's profile, on the reservation's GPUs (held for the course from "
                 "then on), when the whole roster fits the reserved seats (`0`: off). The default for new "
                 "reservations; `gpuhub-gpus reserve --prestart-minutes` sets one reservation's (at most 240). "
                 "GPU-hours and idle clocks of a pre-started server begin at its person's first request. See "
                 "[Running a course: pre-start](teaching.md#servers-ready-before-the-session)."),
    Setting("RESERVATION_PRESTART_GRACE_MINUTES", GPUS, "non_negative_int", default="15", example="30",
            help="Minutes after a reservation's start that its pre-started servers nobody has used yet are "
                 "stopped, with a reason their person reads (never later than the reservation's end; `0`: at its "
                 "start)."),
    # --- Idle culler
    Setting("CULL_IDLE_TIMEOUT", CULLER, "non_negative_int", default="3600", example="7200",
            help="Stop servers idle this many seconds (`0`: never; the culler does not run)."),
    Setting("CULL_MAX_AGE", CULLER, "non_negative_int", default="0", example="86400",
            help="Stop servers older than this many seconds, busy or not (`0`: no limit)."),
    Setting("CULL_EVERY", CULLER, "positive_int", default="60", example="300",
            help="How often (seconds) the culler checks."),
    # --- Idle GPUs
    Setting("GPU_IDLE_TIMEOUT", IDLE_GPUS, "non_negative_int", default="1800", example="3600",
            help="Seconds a server's GPU may stay under `GPU_IDLE_THRESHOLD` before its user is warned "
                 "(`0`: never reclaim; GPUs are still sampled). Servers without a GPU are never judged."),
    Setting("GPU_IDLE_THRESHOLD", IDLE_GPUS, "positive_int", default="5", example="10",
            help="Utilisation (percent) under which a GPU counts as idle."),
    Setting("GPU_IDLE_GRACE", IDLE_GPUS, "positive_int", default="600", example="900",
            help="Seconds from the warning (due `GPU_IDLE_TIMEOUT` after the GPU went idle) to the stop; "
                 "GPU work resuming cancels it, and the user's "
                 "\"still working\" adds this once."),
    Setting("GPU_IDLE_ACTION", IDLE_GPUS, "choice", default="stop", example="park", choices=("stop", "park"),
            help="What reclaiming an idle GPU does: `stop` the server (files kept), or `park` it (preview): "
                 "its kernels' GPU state moves into the container's host memory, the container is paused and "
                 "the GPU given back; the person resumes it later with every variable intact, or it is stopped "
                 "after `GPU_PARK_MAX`. Parking needs driver 570 or newer and falls back to the stop when it "
                 "cannot be done (audit log); it needs `HUB_BACKEND=docker` (one host's engine; refused on a Swarm). A profile's `reclaim: {action: park}` sets it per profile. "
                 "See [Parking](gpus.md#parking-preview)."),
    Setting("GPU_PARK_MAX", IDLE_GPUS, "positive_int", default="86400", example="28800",
            help="Seconds a parked server stays parked; then it is stopped as `stop` would have "
                 "(profile: `reclaim: {max_parked: ...}`)."),
    Setting("GPU_PARK_HOST_RESERVE", IDLE_GPUS, "non_negative_int", default="8", example="16",
            help="GiB of host memory that parking must leave available: a server whose GPU memory would "
                 "not fit beside it is stopped instead, and the audit log says why."),
    Setting("GPU_IDLE_EXEMPT_USERS", IDLE_GPUS, "name_list", example="alice,bob",
            help="Users whose servers are never reclaimed (comma-separated)."),
    Setting("GPU_IDLE_EXEMPT_GROUPS", IDLE_GPUS, "name_list", example="long-jobs",
            help="Groups whose members' servers are never reclaimed (comma-separated)."),
    Setting("GPU_SAMPLE_INTERVAL", IDLE_GPUS, "positive_int", default="10", example="5",
            help="Seconds between two readings of every GPU."),
    Setting("GPU_USAGE_READER", IDLE_GPUS, "text", default="nvml", example="mypackage.readers:DCGMReader",
            help="Where readings come from: `nvml` (the driver's library, through the hub's `utility` "
                 "capability) or `module:attribute` of a Python reader (`read()` returning "
                 "`hub.gpus.nvml.Reading`s; the e2e tests feed readings from a file this way)."),
    # --- Images
    # --- HTTPS
    Setting("HUB_DOMAIN", HTTPS, "compose", default="", example="hub.example.org", used_by=COMPOSE,
            help="The hub's DNS name. Set: HTTPS by Caddy on `HTTPS_PUBLISH` (HTTP on `HTTP_PUBLISH` redirects to "
                 "it, HSTS on), the proxy no longer published. Empty: plain HTTP on `HUB_PUBLISH`."),
    Setting("TLS_ISSUER", HTTPS, "compose", default="auto", example="internal", used_by=MAKE,
            choices=("auto", "acme", "internal"),
            help="Who signs the certificate: `acme` (Let's Encrypt or ZeroSSL; the name must resolve to this host "
                 "and ports 80/443 be reachable), `internal` (Caddy's own CA: browsers must trust its root), "
                 "`auto`: ACME for a public name, the internal CA for names such as `hub.lan` or `*.internal`."),
    Setting("TLS_CERT_FILE", HTTPS, "compose", default="", example="/etc/ssl/hub/fullchain.pem", used_by=MAKE,
            help="Your own certificate (PEM, the chain included) instead of `TLS_ISSUER`; with `TLS_KEY_FILE`."),
    Setting("TLS_KEY_FILE", HTTPS, "compose", default="", example="/etc/ssl/hub/privkey.pem", used_by=MAKE,
            help="The private key of `TLS_CERT_FILE` (PEM)."),
    Setting("USER_SUBDOMAINS", HTTPS, "compose", default="auto", example="false", used_by=MAKE,
            choices=("auto", "true", "false"),
            help="Each user's server on a host of its own, `<user>.HUB_DOMAIN` (and each service on "
                 "`<service>.HUB_DOMAIN`), so that a page or JupyterLab extension served from a user's server "
                 "cannot act with the credentials of an admin or teacher who opens it (JupyterHub's "
                 "`subdomain_host`): needs a wildcard DNS record `*.HUB_DOMAIN` and a certificate for it. `auto`: "
                 "on with Caddy's internal CA and with a `TLS_CERT_FILE` that names `*.HUB_DOMAIN`, off with ACME "
                 "(whose HTTP challenge cannot certify a wildcard). See [Security: origins](security.md#origins)."),
    Setting("ACME_EMAIL", HTTPS, "compose", default="", example="admin@example.org", used_by=COMPOSE,
            help="Contact address given to the ACME CA (expiry warnings); optional."),
    Setting("HTTPS_PUBLISH", HTTPS, "compose", default="443", example="0.0.0.0:443", used_by=COMPOSE,
            help="Host `[address:]port` for HTTPS."),
    Setting("HTTP_PUBLISH", HTTPS, "compose", default="80", example="0.0.0.0:80", used_by=COMPOSE,
            help="Host `[address:]port` for HTTP (redirects to HTTPS; ACME's HTTP challenge)."),
    Setting("HUB_BACKEND", SWARM, "choice", default="docker", example="swarm", choices=("docker", "swarm"),
            help="Where users' servers run: `docker` (containers on this host's engine) or `swarm` (Swarm services "
                 "across the swarm's nodes). Set by the stack files, not in `.env`: `docker-compose.yml` sets "
                 "`docker`, `swarm/stack.yml` (`make swarm-up`) sets `swarm`."),
    Setting("SWARM_NFS_SERVER", SWARM, "text", default="", example="nfs.example.org",
            help="NFS server of users' and courses' volumes, as every node reaches it: each volume is the directory "
                 "`SWARM_NFS_EXPORT/<volume>` there, mounted on whichever node a server runs, so files follow their "
                 "user. Empty: volumes are local to each node (files stay on the node a server ran on)."),
    Setting("SWARM_NFS_EXPORT", SWARM, "text", default="/srv/gpuhub", example="/export/gpuhub",
            help="The directory exported by `SWARM_NFS_SERVER` under which each volume is a subdirectory "
                 "(the hub creates them, owned by uid 1000, gid 100)."),
    Setting("SWARM_NFS_OPTIONS", SWARM, "text", default="rw,nfsvers=4.1,hard", example="rw,nfsvers=3,nolock",
            help="NFS mount options of the volumes (the `local` driver's `o`; `addr=` is added)."),
    Setting("SWARM_VOLUME_ROOT", SWARM, "text", default="", example="/mnt/gpuhub",
            help="Instead of `SWARM_NFS_SERVER`: a directory every node has at this path with the same contents "
                 "(a file server the admin mounts on each node). Each volume is then the bind mount "
                 "`SWARM_VOLUME_ROOT/<volume>`, made by the hub before its first use. Set one of the two."),
    Setting("SWARM_CONSTRAINTS", SWARM, "name_list", default="", example="node.role==worker",
            help="Placement constraints for every user server, comma-separated (Swarm's syntax), e.g. to keep "
                 "servers off the managers; a GPU server is also constrained to its GPU's node. GPUs of nodes that "
                 "`node.id`, `node.hostname`, `node.role` or `node.labels.*` constraints leave out are not handed out."),
    Setting("HUB_IMAGE", IMAGES, "compose", default=release_tag("gpuhub/hub"), written="", tagged=True,
            default_doc=RELEASE_TAG_DOC.format("gpuhub/hub", release_tag("gpuhub/hub")), used_by=COMPOSE,
            example="registry.example.org/lab/hub:1.0.0", help="Tag of the hub image (built by `make up`). Blank: this release's tag, so that an upgrade "
                 "keeps the previous release's images for a rollback ([Operations](operations.md#upgrades))."),
    Setting("PROXY_IMAGE", IMAGES, "compose", default=release_tag("gpuhub/proxy"), written="", tagged=True,
            default_doc=RELEASE_TAG_DOC.format("gpuhub/proxy", release_tag("gpuhub/proxy")), used_by=COMPOSE,
            example="registry.example.org/lab/proxy:1.0.0", help="Tag of the proxy image. Blank: this release's tag."),
    Setting("TORCH_CUDA", IMAGES, "compose", default="13.0", example="12.6", used_by=COMPOSE,
            help="The CUDA version the PyTorch of `TORCH_PACKAGES` is built for (`none` for a CPU build): the "
                 "build checks it against `torch.version.cuda` and labels the image with it, and the hub refuses "
                 "a GPU start when the host's driver is too old for it ([GPUs: Host health](gpus.md#host-health))."),
    Setting("CADDY_IMAGE", IMAGES, "compose", default=release_tag("gpuhub/caddy"), written="", tagged=True,
            default_doc=RELEASE_TAG_DOC.format("gpuhub/caddy", release_tag("gpuhub/caddy")), used_by=COMPOSE,
            example="caddy:2.10", help="Tag of the HTTPS front image (Debian's caddy, built by `make up` when "
                                      "`HUB_DOMAIN` is set). Blank: this release's tag."),
    Setting("PROMETHEUS_IMAGE", IMAGES, "compose", default=release_tag("gpuhub/prometheus"), written="", tagged=True,
            default_doc=RELEASE_TAG_DOC.format("gpuhub/prometheus", release_tag("gpuhub/prometheus")), used_by=COMPOSE,
            example="registry.example.org/lab/prometheus:1.0.0",
            help="Tag of the `monitoring` profile's Prometheus image (Debian's package on `DEBIAN_BASE_IMAGE`). "
                 "Blank: this release's tag."),
    Setting("PYTHON_BASE_IMAGE", IMAGES, "compose", default="python:3.11-slim-bookworm", used_by=COMPOSE,
            example="local/python:3.11-bookworm",
            help="Base of the hub and single-user images: any Debian bookworm image with Python 3.11. "
                 "Hosts without registry access put a locally built base here (`make up` does it when it "
                 "finds `local/python:3.11-bookworm` and `local/debian:bookworm`)."),
    Setting("DEBIAN_BASE_IMAGE", IMAGES, "compose", default="debian:bookworm-slim", used_by=COMPOSE,
            example="local/debian:bookworm", help="Base of the proxy and Prometheus images: any Debian bookworm image."),
    Setting("TORCH_PACKAGES", IMAGES, "compose", default="torch==2.14.1 torchvision==0.29.1", used_by=COMPOSE,
            help="What pip installs for PyTorch in the single-user image (PyPI's Linux wheels are the "
                 "CUDA build)."),
    # --- Internal: parking's test scaffolding and tuning (tests/e2e/fake_gpu/compose.yml sets the first)
    Setting("GPUHUB_PARK_FAKE", INTERNAL_SECTION, "boolean", default="false", used_by=INTERNAL,
            help="`true`: `gpu-park` uses its driver stand-in (hosts whose GPUs are fake: the tests)."),
    Setting("GPUHUB_PARK_REST_MIB", INTERNAL_SECTION, "positive_int", default="1024", used_by=INTERNAL,
            help="GPU memory (MiB, as NVML counts it) at or below which a parked GPU counts as back at rest."),
    Setting("GPUHUB_PARK_SETTLE_S", INTERNAL_SECTION, "seconds", default="15", used_by=INTERNAL,
            help="Seconds gpu-reclaim waits for a parked GPU's memory to come back to rest."),
    # --- Internal: the service process's own (hub/settings/gpu_settings.py writes and reads them)
    Setting("GPUHUB_STATE_DIR", INTERNAL_SECTION, "text", default=STATE_DIR, used_by=INTERNAL,
            help="The hub's state volume as the service process sees it: the default place of the files below."),
    Setting("GPUHUB_PROFILES_FILE", INTERNAL_SECTION, "text", default=PROFILES_FILE, used_by=INTERNAL,
            help="The profiles file (`HUB_PROFILES`, mounted into the hub), for `gpu-reclaim`'s per-profile policy."),
    Setting("GPUHUB_GPU_INTENT_FILE", INTERNAL_SECTION, "text", optional=True, used_by=INTERNAL,
            default_doc="`gpu-intent.json` in `GPUHUB_STATE_DIR`",
            help="The admin's intent (pins, drains, access); the spawner re-reads it before every decision."),
    Setting("GPUHUB_GPU_AUDIT_FILE", INTERNAL_SECTION, "text", optional=True, used_by=INTERNAL,
            default_doc="`gpu-audit.jsonl` in `GPUHUB_STATE_DIR`", help="The audit log of admin actions."),
    Setting("GPUHUB_USAGE_DB", INTERNAL_SECTION, "text", optional=True, used_by=INTERNAL,
            default_doc="`gpu-usage.sqlite` in `GPUHUB_STATE_DIR`",
            help="The GPU usage store, read by the console and `gpu-reclaim` alike."),
    Setting("GPUHUB_GPU_REQUEST_STYLE", INTERNAL_SECTION, "choice", default="auto", choices=("auto", "cdi", "nvidia"),
            used_by=INTERNAL, help="The spawner's `GPU_REQUEST_STYLE`, for the console's reading of containers."),
    Setting("GPUHUB_LABEL_PREFIX", INTERNAL_SECTION, "text", default="gpuhub", used_by=INTERNAL,
            help="Prefix of the labels that name a container's user, server and GPU."),
    Setting("GPUHUB_GPU_CDI_DIRS", INTERNAL_SECTION, "text", default="/etc/cdi:/var/run/cdi", used_by=INTERNAL,
            help="Directories with the host's CDI specs, `:`-separated."),
    Setting("GPUHUB_GPU_INVENTORY_FILE", INTERNAL_SECTION, "text", default="", used_by=INTERNAL,
            help="A static GPU list for hosts where neither NVML nor CDI finds the GPUs (empty: none)."),
    Setting("GPUHUB_CONSOLE_LOG_LEVEL", INTERNAL_SECTION, "log_level", default="INFO", used_by=INTERNAL,
            help="The service process's log level (the hub's `HUB_LOG_LEVEL`)."),
    Setting("GPUHUB_USAGE_INTERVAL", INTERNAL_SECTION, "seconds", default="10", used_by=INTERNAL,
            help="Seconds between two samples of GPU usage."),
    Setting("GPUHUB_COURSE_CHECK_INTERVAL", INTERNAL_SECTION, "seconds", default="60", used_by=INTERNAL,
            help="Seconds between two checks of courses' session limits and reservations."),
    Setting("GPUHUB_CONSOLE_BIND", INTERNAL_SECTION, "text", default="0.0.0.0", used_by=INTERNAL,
            help="The address the console listens on inside the hub's container."),
    Setting("GPUHUB_GPU_QUOTA_DEFAULT", INTERNAL_SECTION, "gpu_quota", default="", used_by=INTERNAL,
            help="`GPU_QUOTA_DEFAULT` as the hub passed it on."),
    Setting("GPUHUB_USAGE_SYNC_INTERVAL", INTERNAL_SECTION, "seconds", default="15", used_by=INTERNAL,
            help="Seconds between two syncs of the usage store with the engine (and quota checks)."),
    Setting(RECLAIM_TOKEN_ENV, INTERNAL_SECTION, "text", default="", used_by=INTERNAL,
            help="`gpu-reclaim`'s API token, for the console's calls to it (written by the hub at start)."),
    Setting(RECLAIM_URL_ENV, INTERNAL_SECTION, "text", default="", used_by=INTERNAL,
            help="`gpu-reclaim`'s address, for the console's calls to it."),
]

SETTINGS: dict[str, Setting] = {s.name: s for s in _TABLE}
assert len(SETTINGS) == len(_TABLE), "a variable is in the table twice"
SECTIONS: list[Section] = list(dict.fromkeys(s.section for s in _TABLE))
