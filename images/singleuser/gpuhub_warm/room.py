"""The warm kernel's pure parts (no Jupyter import, so tests/unit runs them anywhere): the
settings read from the environment, the code a spare runs, and whether memory has room for one.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

# What a spare imports when the profile does not say (GPUHUB_WARM_IMPORTS): the image's own
# packages, in the order a notebook usually imports them. torch does not initialise CUDA when
# imported (that happens at the first CUDA call), so a spare holds no GPU memory.
DEFAULT_IMPORTS = ("numpy", "torch", "pandas", "matplotlib.pyplot")
OFF = {"0", "off", "false", "no"}
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# What a spare is expected to need before one has been measured (a CPU-build torch, numpy, pandas
# and pyplot kernel measured 350-400 MiB resident in the test image; docs/performance.md).
FIRST_ESTIMATE = 512 * 2**20
UNLIMITED = 2**60  # cgroup v1 reports "no limit" as a page-rounded 2**63 - 1


def enabled(env: Mapping[str, str]) -> bool:
    """GPUHUB_WARM_KERNEL: on unless "0", "off", "false" or "no" (what the hub's WARM_KERNEL sets)."""
    return env.get("GPUHUB_WARM_KERNEL", "on").strip().lower() not in OFF


def parse_imports(text: str | None) -> tuple[str, ...]:
    """GPUHUB_WARM_IMPORTS: module names separated by spaces or commas (None: the defaults; ""
    imports nothing, the spare is a started kernel only). A ValueError names a bad entry."""
    if text is None:
        return DEFAULT_IMPORTS
    names = tuple(name for name in re.split(r"[\s,]+", text.strip()) if name)
    for name in names:
        if not MODULE.match(name):
            raise ValueError(f"GPUHUB_WARM_IMPORTS: {name!r} is not a module name")
    return names


def warm_code(modules: tuple[str, ...], nice: int) -> str:
    """Code a spare runs silently (no history, no execution count): import ``modules`` in a
    thread of lower priority (``nice`` added; the kernel's other threads keep theirs, so the
    kernel a notebook gets runs at normal priority), binding no name in the user's namespace.
    Afterwards ``_gpuhub_warm_failed`` lists the imports that failed (the claim removes it)."""
    return f"""\
def _gpuhub_warm(modules={list(modules)!r}, nice={int(nice)}):
    import importlib, os, threading
    failed = []
    def run():
        if nice > 0:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            except (OSError, AttributeError):
                pass
        for name in modules:
            try:
                importlib.import_module(name)
            except BaseException as exc:
                failed.append(f"{{name}}: {{exc!r}}")
    thread = threading.Thread(target=run, name="gpuhub-warm-imports")
    thread.start()
    thread.join()
    return failed
_gpuhub_warm_failed = _gpuhub_warm()
del _gpuhub_warm
"""


def claim_code(cwd: str, env_set: Mapping[str, str], env_unset: list[str], session_name: str | None) -> str:
    """Code run silently in a spare when a notebook takes it: the notebook's working directory
    and environment (what a kernel started for it would have had), ipykernel's ``__session__``."""
    lines = ["import os as _gpuhub_os",
             f"_gpuhub_os.chdir({cwd!r})",
             f"_gpuhub_os.environ.update(__import__('json').loads({json.dumps(dict(env_set))!r}))"]
    lines += [f"_gpuhub_os.environ.pop({name!r}, None)" for name in env_unset]
    if session_name:
        lines.append(f"__session__ = {session_name!r}")
    lines += ["del _gpuhub_os", "globals().pop('_gpuhub_warm_failed', None)"]
    return "\n".join(lines) + "\n"


def env_change(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """What turns environment ``before`` into ``after``: (variables to set, names to remove)."""
    return ({k: v for k, v in after.items() if before.get(k) != v}, sorted(set(before) - set(after)))


@dataclass(frozen=True)
class Memory:
    limit: int  # bytes this server may use (its cgroup's limit, else the host's memory)
    used: int  # bytes in use, reclaimable page cache left out

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)


def _int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines() if line.strip())}
    except (OSError, ValueError):
        return {}


def _meminfo(path: Path) -> dict[str, int]:
    out = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def read_memory(root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")) -> Memory | None:
    """This container's memory from its cgroup (v2: memory.max/current/stat; v1:
    memory/memory.limit_in_bytes/usage_in_bytes/stat), inactive page cache not counted as used.
    Without a cgroup limit, or where the host has less, the host's MemTotal/MemAvailable
    bound it. None when nothing can be read."""
    host = _meminfo(meminfo)
    limit = used = None
    if (root / "memory.max").exists():  # cgroup v2
        limit, used = _int(root / "memory.max"), _int(root / "memory.current")
        inactive = _stat(root / "memory.stat").get("inactive_file", 0)
    elif (root / "memory" / "memory.limit_in_bytes").exists():  # cgroup v1
        limit, used = _int(root / "memory" / "memory.limit_in_bytes"), _int(root / "memory" / "memory.usage_in_bytes")
        stat = _stat(root / "memory" / "memory.stat")
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    if limit is not None and used is not None and limit < UNLIMITED:
        memory = Memory(limit, max(0, used - inactive))
        if "MemAvailable" in host and host["MemAvailable"] < memory.free:  # the host is fuller than the limit says
            return Memory(memory.used + host["MemAvailable"], memory.used)
        return memory
    if "MemTotal" in host and "MemAvailable" in host:
        return Memory(host["MemTotal"], host["MemTotal"] - host["MemAvailable"])
    return None


def room_for_spare(memory: Memory | None, need: int, reserve: int, host_available: int | None = None,
                   host_reserve: int = 0) -> bool:
    """Whether a spare that needs ``need`` bytes fits with ``reserve`` bytes left for the user's
    own work, and leaves the host ``host_reserve`` bytes (the hub admits new servers from the
    host's available memory: a spare must not take the room of a student still to arrive).
    Unknown memory: no (a spare must never be the reason a user's kernel is killed)."""
    if memory is None or memory.free < need + reserve:
        return False
    return host_available is None or host_available >= need + host_reserve


def host_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The host's MemAvailable (a container reads the host's /proc/meminfo), or None."""
    return _meminfo(meminfo).get("MemAvailable")


def resident_bytes(pid: int, read: Callable[[str], str] = lambda p: Path(p).read_text(),
                   field: str = "VmRSS") -> int | None:
    """A process's resident memory (VmRSS: with the shared libraries' pages, which every server
    of the image shares through the page cache; RssAnon: its own), or None when it is gone."""
    try:
        for line in read(f"/proc/{pid}/status").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def quiet_delay(now: float, latest: float, quiet: float) -> float:
    """Seconds from `now` until the first spare starts, a request having just finished: `quiet`
    seconds more, but not past `latest` (all in the event loop's clock)."""
    return max(0.0, min(quiet, latest - now))


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        return default


def settings(env: Mapping[str, str] = os.environ) -> dict:
    """The spawner's settings for this server (docs/configuration.md, "Warm kernel")."""
    return {"enabled": enabled(env), "imports": parse_imports(env.get("GPUHUB_WARM_IMPORTS"))}
