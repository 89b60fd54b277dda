"""The GPU settings the hub hands to the GPU console, in one object.

The hub builds a ``GPUSettings`` from its spawner's configuration and writes it into the console
service's environment (``to_env``); the console reads it back (``from_env``). Both sides use the
field defaults below (those of deployment variables come from the settings table), so a default
lives in one place, and a bad value stops the console at start with a message naming the
variable, the value and an example of a good one.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields

from traitlets.config.loader import ConfigError

from hub.settings import STATE_DIR, readers
from hub.settings.table import SETTINGS
from hub.units import parse_size

REQUEST_STYLES = SETTINGS["GPU_REQUEST_STYLE"].choices
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")


@dataclass(frozen=True)
class GPUSettings:
    name_prefix: str = SETTINGS["HUB_NAME_PREFIX"].default
    """The hub's prefix for Docker names (HUB_NAME_PREFIX): which containers are this hub's."""
    intent_file: str = f"{STATE_DIR}/gpu-intent.json"
    """Admin intent (pins, drains, access); the spawner re-reads it before every decision."""
    audit_file: str = f"{STATE_DIR}/gpu-audit.jsonl"
    """The console's audit log of admin actions."""
    request_style: str = SETTINGS["GPU_REQUEST_STYLE"].default
    """How containers are given their GPU: auto, cdi or nvidia."""
    label_prefix: str = "gpuhub"
    """Prefix of the labels that name a container's user, server and GPU."""
    cdi_dirs: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
    """Directories with the host's CDI specs."""
    inventory_file: str = ""
    """A static GPU list for hosts where neither NVML nor CDI finds the GPUs ("" for none)."""
    log_level: str = SETTINGS["HUB_LOG_LEVEL"].default
    """The console's log level (the hub's HUB_LOG_LEVEL)."""
    usage_interval: float = 10.0
    """Seconds between two samples of GPU usage."""
    course_check_interval: float = 60.0
    """Seconds between two checks of courses' session limits and reservations."""
    bind: str = "0.0.0.0"
    """The address the console listens on inside the hub's container."""
    usage_db: str = f"{STATE_DIR}/gpu-usage.sqlite"
    """The GPU usage store (hub/usage/store.py), beside the hub's database."""
    quota_default: str = ""
    """Every user's GPU quota (GPU_QUOTA_DEFAULT, e.g. 20h/7d; "" for none)."""
    usage_sync_interval: float = 15.0
    """Seconds between two syncs of the usage store with the engine (and quota checks)."""
    backend: str = SETTINGS["HUB_BACKEND"].default
    """Where servers run (HUB_BACKEND): "docker" (this host) or "swarm" (the swarm's nodes)."""
    swarm_constraints: tuple[str, ...] = ()
    """Every user server's placement constraints on a swarm (SWARM_CONSTRAINTS)."""
    roster_max_bytes: int = parse_size(SETTINGS["CONSOLE_ROSTER_MAX_SIZE"].default)
    """The largest roster the console reads (CONSOLE_ROSTER_MAX_SIZE); its API's roster route
    takes a body of twice that (JSON-escaped text), every other route 64 KiB."""

    def __post_init__(self):
        # Lists from a traitlets config become tuples, so the object stays hashable and frozen.
        object.__setattr__(self, "cdi_dirs", tuple(self.cdi_dirs))
        object.__setattr__(self, "swarm_constraints", tuple(self.swarm_constraints))

    def to_env(self) -> dict[str, str]:
        """The console service's environment: one string per field (see ENV)."""
        values = {
            "name_prefix": self.name_prefix,
            "intent_file": self.intent_file,
            "audit_file": self.audit_file,
            "request_style": self.request_style,
            "label_prefix": self.label_prefix,
            "cdi_dirs": ":".join(self.cdi_dirs),
            "inventory_file": self.inventory_file,
            "log_level": self.log_level.upper(),
            "usage_interval": f"{self.usage_interval:g}",
            "course_check_interval": f"{self.course_check_interval:g}",
            "bind": self.bind,
            "usage_db": self.usage_db,
            "quota_default": self.quota_default,
            "usage_sync_interval": f"{self.usage_sync_interval:g}",
            "backend": self.backend,
            "swarm_constraints": ",".join(self.swarm_constraints),
            "roster_max_bytes": str(self.roster_max_bytes),
        }
        return {ENV[field]: value for field, value in values.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GPUSettings:
        """The settings in ``env`` (variables not set, or blank, take the defaults); other
        variables in ``env`` are ignored. Raises ConfigError naming a bad variable."""
        d = cls()

        def get(field: str, default: str) -> str:
            return readers.text(env, ENV[field], default)

        cdi = get("cdi_dirs", ":".join(d.cdi_dirs))
        return cls(
            name_prefix=readers.name_prefix(env, ENV["name_prefix"], d.name_prefix),
            intent_file=get("intent_file", d.intent_file),
            audit_file=get("audit_file", d.audit_file),
            request_style=readers.choice(env, ENV["request_style"], d.request_style, REQUEST_STYLES),
            label_prefix=get("label_prefix", d.label_prefix),
            cdi_dirs=tuple(p for p in cdi.split(":") if p),
            inventory_file=get("inventory_file", d.inventory_file),
            log_level=_log_level(env, ENV["log_level"], d.log_level),
            usage_interval=_seconds(env, ENV["usage_interval"], d.usage_interval),
            course_check_interval=_seconds(env, ENV["course_check_interval"], d.course_check_interval),
            bind=get("bind", d.bind),
            usage_db=get("usage_db", d.usage_db),
            quota_default=readers.gpu_quota(env, ENV["quota_default"], d.quota_default),
            usage_sync_interval=_seconds(env, ENV["usage_sync_interval"], d.usage_sync_interval),
            backend=readers.choice(env, ENV["backend"], d.backend, SETTINGS["HUB_BACKEND"].choices),
            swarm_constraints=tuple(readers.name_list(env, ENV["swarm_constraints"])),
            roster_max_bytes=roster_size(env, ENV["roster_max_bytes"]),
        )

    def configure_logging(self) -> None:
        logging.basicConfig(level=self.log_level,
                            format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")


# The environment variable of each field.
ENV = {
    "name_prefix": "HUB_NAME_PREFIX",
    "intent_file": "GPUHUB_GPU_INTENT_FILE",
    "audit_file": "GPUHUB_GPU_AUDIT_FILE",
    "request_style": "GPUHUB_GPU_REQUEST_STYLE",
    "label_prefix": "GPUHUB_LABEL_PREFIX",
    "cdi_dirs": "GPUHUB_GPU_CDI_DIRS",
    "inventory_file": "GPUHUB_GPU_INVENTORY_FILE",
    "log_level": "GPUHUB_CONSOLE_LOG_LEVEL",
    "usage_interval": "GPUHUB_USAGE_INTERVAL",
    "course_check_interval": "GPUHUB_COURSE_CHECK_INTERVAL",
    "bind": "GPUHUB_CONSOLE_BIND",
    "usage_db": "GPUHUB_USAGE_DB",
    "quota_default": "GPUHUB_GPU_QUOTA_DEFAULT",
    "usage_sync_interval": "GPUHUB_USAGE_SYNC_INTERVAL",
    "backend": "HUB_BACKEND",
    "swarm_constraints": "SWARM_CONSTRAINTS",
    "roster_max_bytes": "CONSOLE_ROSTER_MAX_SIZE",
}
assert set(ENV) == {f.name for f in fields(GPUSettings)}


ROSTER_SIZE_RANGE = (4 * 2**10, 64 * 2**20)


def roster_size(env: Mapping[str, str], name: str = "CONSOLE_ROSTER_MAX_SIZE") -> int:
    """CONSOLE_ROSTER_MAX_SIZE in bytes, from 4K to 64M: the console parses a roster in memory,
    and the bound keeps one upload from holding the process for long."""
    value = readers.byte_size(env, name, SETTINGS["CONSOLE_ROSTER_MAX_SIZE"].default)
    low, high = ROSTER_SIZE_RANGE
    if not low <= value <= high:
        raise ConfigError(f"{name}={env.get(name)!r} is out of range: use a size from 4K to 64M, e.g. {name}=4M")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = readers.text(env, name, f"{default:g}")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name}={raw!r} is not a number of seconds: use a positive number, e.g. {name}={default:g}")
    return value


def _log_level(env: Mapping[str, str], name: str, default: str) -> str:
    raw = readers.text(env, name, default).upper()
    if raw not in LOG_LEVELS:
        raise ConfigError(f"{name}={raw!r} is not a log level: use one of DEBUG, INFO, WARNING, ERROR, "
                          f"CRITICAL, e.g. {name}={default}")
    return raw
