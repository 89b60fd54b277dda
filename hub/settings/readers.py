"""Reading the deployment's settings from the environment (.env, passed in by docker compose).

Every variable has a default that works on a fresh host; a bad value stops the hub at start
with a message naming the variable, the value and an example of a good one.
"""
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from traitlets.config.loader import ConfigError

from hub.units import parse_cpus, parse_size
from hub.usage.quota import QuotaError, check, parse_spec



def text(env: Mapping[str, str], name: str, default: str) -> str:
    """A string setting; unset or blank means the default."""
    value = env.get(name, "").strip()
    return value or default


def byte_size(env: Mapping[str, str], name: str, default: str) -> int:
    """A size like 512M, 8G or 1.5G (binary units) as bytes."""
    raw = text(env, name, default)
    try:
        return parse_size(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a size: use a number with K, M, G or T, e.g. {name}=8G") from None


def cpus(env: Mapping[str, str], name: str, default: str) -> float:
    """A CPU count like 2 or 0.5 (Docker's --cpus)."""
    raw = text(env, name, default)
    try:
        return parse_cpus(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a CPU count: use a positive number, e.g. {name}=2 or {name}=0.5") from None


def positive_int(env: Mapping[str, str], name: str, default: str) -> int:
    raw = text(env, name, default)
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name}={raw!r} is not a positive whole number, e.g. {name}={default}")
    return int(raw)


def non_negative_int(env: Mapping[str, str], name: str, default: str) -> int:
    raw = text(env, name, default)
    if not raw.isdigit():
        raise ConfigError(f"{name}={raw!r} is not a whole number of 0 or more, e.g. {name}={default}")
    return int(raw)


YES, NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def boolean(env: Mapping[str, str], name: str, default: str) -> bool:
    raw = text(env, name, default).lower()
    if raw in YES:
        return True
    if raw in NO:
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value: use true or false")


def choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = text(env, name, default).lower()
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}, e.g. {name}={default}")
    return raw


def name_prefix(env: Mapping[str, str], name: str, default: str) -> str:
    """A prefix for Docker object names: lowercase letters, digits and dashes."""
    raw = text(env, name, default)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,29}", raw):
        raise ConfigError(
            f"{name}={raw!r} cannot prefix Docker names: use up to 30 lowercase letters, digits "
            f"or dashes, starting with a letter or digit, e.g. {name}={default}")
    return raw


def username(env: Mapping[str, str], name: str, default: str) -> str:
    raw = text(env, name, default)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._@-]{0,63}", raw):
        raise ConfigError(f"{name}={raw!r} is not a valid username: use lowercase letters, digits, '.', '_', '-', e.g. {name}=admin")
    return raw


def name_list(env: Mapping[str, str], name: str) -> list[str]:
    """A comma-separated list (e.g. alice, bob); unset or blank means an empty list."""
    return [item.strip() for item in env.get(name, "").split(",") if item.strip()]


def url(env: Mapping[str, str], name: str, example: str, default: str = "") -> str:
    """An absolute http(s) URL; unset or blank means the default (which may be empty)."""
    raw = text(env, name, default)
    if not raw:
        return raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ConfigError(f"{name}={raw!r} is not an absolute http(s) URL, e.g. {name}={example}")
    return raw


def version(env: Mapping[str, str], name: str, default: str) -> str:
    """A release version such as 1.17.8 (major.minor.patch)."""
    raw = text(env, name, default)
    if not re.fullmatch(r"\d+\.\d+\.\d+", raw):
        raise ConfigError(f"{name}={raw!r} is not a version: use major.minor.patch, e.g. {name}={default or '1.19.1'}")
    return raw


def gpu_quota(env: Mapping[str, str], name: str, default: str) -> str:
    """GPU-hours per window, e.g. 20h/7d ("" for none): checked, returned as written."""

    raw = text(env, name, default)
    if not raw:
        return ""
    try:
        hours, days = parse_spec(raw)
        check("default", "", hours, days)
    except QuotaError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None
    return raw.replace(" ", "")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")


def seconds(env: Mapping[str, str], name: str, default: str) -> float:
    """A positive number of seconds (10, 0.5)."""
    raw = text(env, name, default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name}={raw!r} is not a number of seconds: use a positive number, e.g. {name}={default}")
    return value


def log_level(env: Mapping[str, str], name: str, default: str) -> str:
    """A log level of Python's logging, upper case."""
    raw = text(env, name, default).upper()
    if raw not in LOG_LEVELS:
        raise ConfigError(f"{name}={raw!r} is not a log level: use one of DEBUG, INFO, WARNING, ERROR, "
                          f"CRITICAL, e.g. {name}={default}")
    return raw
