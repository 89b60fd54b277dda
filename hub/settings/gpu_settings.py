"""The GPU settings the hub hands to the GPU console, in one object.

The hub builds a ``GPUSettings`` from its spawner's configuration and writes it into the service
process's environment (``to_env``); the GPU console and gpu-reclaim read it back (``from_env``),
every variable through the settings table (hub/settings/table.py: the internal ones are its
"Internal" rows), so a default lives in one place, and a bad value stops the service process at
start with a message naming the variable, the value and an example of a good one.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields

from traitlets.config.loader import ConfigError

from hub.settings import readers
from hub.settings.table import SETTINGS, read
from hub.units import parse_size

REQUEST_STYLES = SETTINGS["GPU_REQUEST_STYLE"].choices
STATE_DIR = SETTINGS["GPUHUB_STATE_DIR"].default
FILES = {"intent_file": "gpu-intent.json", "audit_file": "gpu-audit.jsonl", "usage_db": "gpu-usage.sqlite"}
"""The state volume's files, where GPUHUB_GPU_INTENT_FILE, GPUHUB_GPU_AUDIT_FILE, GPUHUB_USAGE_DB
are not set: in GPUHUB_STATE_DIR."""


def _default(name: str):
    return SETTINGS[name].default


@dataclass(frozen=True)
class GPUSettings:
    name_prefix: str = SETTINGS["HUB_NAME_PREFIX"].default
    """The hub's prefix for Docker names (HUB_NAME_PREFIX): which containers are this hub's."""
    intent_file: str = f"{STATE_DIR}/{FILES['intent_file']}"
    """Admin intent (pins, drains, access); the spawner re-reads it before every decision."""
    audit_file: str = f"{STATE_DIR}/{FILES['audit_file']}"
    """The console's audit log of admin actions."""
    request_style: str = SETTINGS["GPU_REQUEST_STYLE"].default
    """How containers are given their GPU: auto, cdi or nvidia."""
    label_prefix: str = _default("GPUHUB_LABEL_PREFIX")
    """Prefix of the labels that name a container's user, server and GPU."""
    cdi_dirs: tuple[str, ...] = tuple(_default("GPUHUB_GPU_CDI_DIRS").split(":"))
    """Directories with the host's CDI specs."""
    inventory_file: str = _default("GPUHUB_GPU_INVENTORY_FILE")
    """A static GPU list for hosts where neither NVML nor CDI finds the GPUs ("" for none)."""
    log_level: str = SETTINGS["HUB_LOG_LEVEL"].default
    """The console's log level (the hub's HUB_LOG_LEVEL)."""
    usage_interval: float = float(_default("GPUHUB_USAGE_INTERVAL"))
    """Seconds between two samples of GPU usage."""
    course_check_interval: float = float(_default("GPUHUB_COURSE_CHECK_INTERVAL"))
    """Seconds between two checks of courses' session limits and reservations."""
    bind: str = _default("GPUHUB_CONSOLE_BIND")
    """The address the console listens on inside the hub's container."""
    usage_db: str = f"{STATE_DIR}/{FILES['usage_db']}"
    """The GPU usage store (hub/usage/store.py), beside the hub's database."""
    quota_default: str = ""
    """Every user's GPU quota (GPU_QUOTA_DEFAULT, e.g. 20h/7d; "" for none)."""
    usage_sync_interval: float = float(_default("GPUHUB_USAGE_SYNC_INTERVAL"))
    """Seconds between two syncs of the usage store with the engine (and quota checks)."""
    backend: str = SETTINGS["HUB_BACKEND"].default
    """Where servers run (HUB_BACKEND): "docker" (this host) or "swarm" (the swarm's nodes)."""
    swarm_constraints: tuple[str, ...] = ()
    """Every user server's placement constraints on a swarm (SWARM_CONSTRAINTS)."""
    roster_max_bytes: int = parse_size(SETTINGS["CONSOLE_ROSTER_MAX_SIZE"].default)
    """The largest roster the console reads (CONSOLE_ROSTER_MAX_SIZE); its API's roster route
    takes a body of twice that (JSON-escaped text), every other route 64 KiB."""
    state_dir: str = STATE_DIR
    """The hub's state volume: where the files above are unless set, and gpu-reclaim's own."""
    profiles_file: str = _default("GPUHUB_PROFILES_FILE")
    """The profiles file, for gpu-reclaim's per-profile policy."""

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
            "state_dir": self.state_dir,
            "profiles_file": self.profiles_file,
        }
        return {ENV[field]: value for field, value in values.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GPUSettings:
        """The settings in ``env`` (variables not set, or blank, take the defaults); other
        variables in ``env`` are ignored. Raises ConfigError naming a bad variable."""
        values = {field: read(env, name) for field, name in ENV.items()}
        state = values["state_dir"]
        for field, file in FILES.items():  # optional: unset means the file in the state directory
            values[field] = values[field] or f"{state}/{file}"
        values["cdi_dirs"] = tuple(p for p in values["cdi_dirs"].split(":") if p)
        values["roster_max_bytes"] = roster_size(env, ENV["roster_max_bytes"])
        return cls(**values)

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
    "state_dir": "GPUHUB_STATE_DIR",
    "profiles_file": "GPUHUB_PROFILES_FILE",
}
assert set(ENV) == {f.name for f in fields(GPUSettings)}
assert set(ENV.values()) <= set(SETTINGS), "every variable of GPUSettings is a row of the settings table"


ROSTER_SIZE_RANGE = (4 * 2**10, 64 * 2**20)


def roster_size(env: Mapping[str, str], name: str = "CONSOLE_ROSTER_MAX_SIZE") -> int:
    """CONSOLE_ROSTER_MAX_SIZE in bytes, from 4K to 64M: the console parses a roster in memory,
    and the bound keeps one upload from holding the process for long."""
    value = readers.byte_size(env, name, SETTINGS["CONSOLE_ROSTER_MAX_SIZE"].default)
    low, high = ROSTER_SIZE_RANGE
    if not low <= value <= high:
        raise ConfigError(f"{name}={env.get(name)!r} is out of range: use a size from 4K to 64M, e.g. {name}=4M")
    return value

