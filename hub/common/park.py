"""Parking a server: its GPU given back, its kernels' GPU state kept in host memory (preview).

Instead of stopping an idle server, gpu-reclaim may park it (docs/gpus.md, "Parking"):

    park     the memory plan (the checkpoint lands in the container's host memory: its memory
             limit is raised by that much, or parking is refused when the host's reserve would
             not hold it) -> ``gpu-park park`` inside the container, as its own user (lock and
             checkpoint every CUDA process: CUDA's checkpoint API, driver >= 570) -> ``docker
             pause`` (nothing in it can run, so nothing can touch the GPU) -> the GPU's memory
             read back at rest (the reader seam: NVML) -> a record in ``gpu-parked.json``, from
             which on the allocator counts the GPU free (hub.gpus.parked). Any step failing
             undoes the ones before (unpause, ``gpu-park resume``, the old memory limit): the
             caller then stops the server as before.
    resume   under the allocator's lock: the GPU held by someone else -> "held" (still parked);
             else the record goes (the container holds its GPU again), ``docker unpause``,
             ``gpu-park resume`` (restore, unlock), the old memory limit.
    expire   parked longer than ``max_parked``: a normal stop.
    stop     the person (or an admin) stops it while parked: unpause, then the normal stop.

The checkpoint step is a seam (``ExecCheckpointer``: ``gpu-park`` by ``docker exec``; its
``fake`` mode selects the tool's stand-in for hosts whose GPUs have no driver), and so are the
GPU memory reading and the host's available memory, so that the whole state machine runs on
the real engine with ``docker pause`` where GPUs are fake (tests/e2e/test_park.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from docker.errors import APIError, NotFound

from hub.gpus.claim import LIVE_STATES, holders_from_containers
from hub.gpus.parked import Parked, ParkedFile, is_paused, parked_ids

log = logging.getLogger("gpu-park")
MIB = 2**20
DockerCall = Callable[..., Awaitable]
AUDIT_ACTIONS = {"parked": "park", "refused": "park-refused", "failed": "park-failed", "resumed": "park-resume",
                 "held": "park-held", "resume-failed": "park-resume-failed", "expired": "park-expired",
                 "stopped": "park-stop", "gone": "park-gone"}


@dataclass(frozen=True)
class ParkSettings:
    max_parked: float = 24 * 3600.0  # seconds parked, then a normal stop
    host_reserve: int = 8 * 2**30  # bytes of host memory that parking must leave available
    rest_mib: int = 1024  # the GPU's memory counts as at rest at or under this many MiB used
    settle: float = 15.0  # seconds for the GPU's memory to read at rest after the checkpoint
    margin: float = 0.1  # head room on the memory limit over the GPU memory moved into it
    label_prefix: str = "gpuhub"
    restore_tries: int = 3  # gpu-park resume runs again after a driver error, up to this many times
    restore_retry: float = 2.0  # seconds before the second try (twice that before the third)


@dataclass(frozen=True)
class MemoryPlan:
    ok: bool
    need: int = 0  # bytes of host memory the checkpoint takes
    mem_limit: int = 0  # the container's limit while parked (0: unchanged)
    memswap_limit: int = 0  # its swap limit while parked (0: unchanged)
    why: str = ""


def plan_memory(gpu_mib: int, mem_limit: int, memswap_limit: int, host_available: int, reserve: int,
                margin: float = 0.1) -> MemoryPlan:
    """Where the checkpoint's host memory comes from: the host must keep ``reserve`` bytes
    available after it, and the container's limit (if it has one) is raised by it."""
    need = int(max(0, gpu_mib) * MIB * (1 + margin))
    if host_available - need < reserve:
        return MemoryPlan(False, need, why=(
            f"parking needs {need / 2**30:.1f} GiB of host memory for the GPU state; the host has "
            f"{host_available / 2**30:.1f} GiB available and keeps {reserve / 2**30:.1f} GiB in reserve"))
    if mem_limit <= 0:
        return MemoryPlan(True, need)  # no limit: nothing to raise
    swap = memswap_limit + need if memswap_limit > 0 else memswap_limit
    return MemoryPlan(True, need, mem_limit + need, swap if swap > 0 else 0)


def host_available_memory(path: str = "/proc/meminfo") -> int:
    """MemAvailable of the host (a container without lxcfs reads the host's), in bytes."""
    with open(path) as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no MemAvailable in {path}")


@dataclass(frozen=True)
class Outcome:
    """What one step did: ``action`` is parked, refused, failed (undone), resumed, held,
    resume-failed, stopped, expired, not-parked or gone (the container no longer exists)."""
    action: str
    user: str
    server: str
    detail: str = ""
    record: Parked | None = None
    timings: dict[str, float] = field(default_factory=dict)
    tool: dict[str, Any] | None = None  # gpu-park's answer

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "user": self.user, "server": self.server, "detail": self.detail,
                "record": self.record.to_json() if self.record else None, "timings": self.timings,
                "tool": self.tool}


class ExecCheckpointer:
    """The checkpoint step: ``gpu-park`` (images/singleuser/gpu_park.py) run inside the
    container by ``docker exec``, as the container's own user (the CUDA processes are its own;
    root in the container is never needed). ``fake``: the tool's stand-in for the driver.
    ``docker`` should wait longer than the checkpoint of a whole GPU takes (the exec's answer
    comes only at its end): a DockerCaller over ``engine_client(timeout=...)`` of minutes."""

    def __init__(self, docker: DockerCall, command: tuple[str, ...] = ("gpu-park",), fake: bool = False,
                 timeout_ms: int = 10000):
        self.docker, self.command, self.fake, self.timeout_ms = docker, tuple(command), fake, timeout_ms

    async def _exec(self, container: dict, command: list[str], env: dict | None = None) -> tuple:
        """``command`` in the container as its own user: (stdout, stderr, exit code)."""
        user = (container.get("Config") or {}).get("User") or ""
        created = await self.docker("exec_create", container["Id"], command, user=user,
                                    **({"environment": env} if env is not None else {}))
        out, err = await self.docker("exec_start", created["Id"], demux=True)
        return out, err, (await self.docker("exec_inspect", created["Id"])).get("ExitCode")

    async def run(self, container: dict, operation: str, *args: str) -> dict:
        env = {"GPU_PARK_FAKE": "1"} if self.fake else None
        try:
            out, err, code = await self._exec(container, [*self.command, operation, *args], env)
        except APIError as exc:
            return {"ok": False, "error": f"docker exec {self.command[0]} {operation}: {exc.explanation or exc}"}
        except Exception as exc:  # noqa: BLE001 - e.g. the client's read timeout ran out first
            return {"ok": False, "error": f"docker exec {self.command[0]} {operation}: {type(exc).__name__}: {exc}"}
        lines = (out or b"").decode(errors="replace").strip().splitlines()
        try:
            answer = json.loads(lines[-1])
        except (IndexError, ValueError):
            tail = (err or out or b"").decode(errors="replace").strip()[-300:]
            answer = {"ok": False, "error": f"{self.command[0]} {operation} gave no answer (exit {code}): {tail}"}
        if not isinstance(answer, dict):
            answer = {"ok": False, "error": f"{self.command[0]} {operation}: not a JSON object"}
        answer["exit_code"] = code
        answer["ok"] = bool(answer.get("ok")) and code == 0
        return answer

    async def park(self, container: dict) -> dict:
        return await self.run(container, "park", "--timeout-ms", str(self.timeout_ms))

    async def resume(self, container: dict, pids: tuple[int, ...] = ()) -> dict:
        # the parked processes by pid: a checkpointed process has closed its GPU's device node,
        # so gpu-park's own search (a /dev/nvidiaN open) no longer finds it
        return await self.run(container, "resume", *[a for pid in pids for a in ("--pid", str(pid))])

    async def end(self, container: dict, pids: list[int]) -> dict:
        """SIGKILL processes left checkpointed or locked by a failed restore, as the container's
        user: the driver frees such a process only so (NVIDIA/cuda-checkpoint#44), and Jupyter
        restarts a kernel that dies, where one left locked would hang at its next CUDA call."""
        try:
            _, _, code = await self._exec(container, ["sh", "-c", 'kill -KILL "$@"', "kill", *map(str, pids)])
        except Exception as exc:  # noqa: BLE001 - said in the outcome; the server runs on
            return {"ok": False, "error": f"docker exec kill: {exc}"}
        return {"ok": code == 0, "exit_code": code}


class Parker:
    """The state machine (see the module's doc). ``memory(uuid)`` is the GPU's used memory in
    MiB now (None: unknown), blocking (NVML); ``stop_server(user, server)`` the normal stop (the
    hub's REST API in the service); ``lock`` the allocator's, held while a resume checks the
    GPU is free and takes it back."""

    def __init__(self, docker: DockerCall, checkpointer: Any, parked: ParkedFile,
                 memory: Callable[[str], int | None], stop_server: Callable[[str, str], Awaitable[Any]],
                 settings: ParkSettings = ParkSettings(), audit: Any = None,
                 host_memory: Callable[[], int] = host_available_memory, lock: Any = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], Awaitable] = asyncio.sleep,
                 actor: tuple[str, str] = ("gpu-reclaim", "service")):
        self.actor = actor  # who and through what, in the audit log
        self.docker, self.checkpointer, self.parked = docker, checkpointer, parked
        self.memory, self.stop_server, self.settings = memory, stop_server, settings
        self.audit, self.host_memory, self.clock, self.sleep = audit, host_memory, clock, sleep
        self.lock = lock if lock is not None else asyncio.Lock()

    # -- park -------------------------------------------------------------------------------

    async def park(self, user: str, server: str, uuid: str, container_id: str) -> Outcome:
        """Park this server's container, or say why not (refused: nothing was done; failed:
        what was done is undone). Either way it still holds its GPU unless the answer is parked."""
        try:
            c = await self.docker("inspect_container", container_id)
        except NotFound:
            return await self._told(Outcome("refused", user, server, "its container no longer exists"), uuid)
        state = c.get("State") or {}
        if not state.get("Running") or state.get("Paused"):
            return await self._told(Outcome("refused", user, server, "its container is not running"), uuid)
        labels = (c.get("Config") or {}).get("Labels") or {}
        if int(labels.get(f"{self.settings.label_prefix}.gpu.shared_by") or 1) > 1:
            return await self._told(Outcome("refused", user, server,
                                            "it shares its GPU: the GPU's memory would not come back to rest"), uuid)
        used = await asyncio.to_thread(self.memory, uuid)
        if used is None:
            return await self._told(Outcome("refused", user, server, "the GPU's memory cannot be read (NVML), "
                                            "so its return to rest could not be checked"), uuid)
        host = c.get("HostConfig") or {}
        limit, swap = int(host.get("Memory") or 0), int(host.get("MemorySwap") or 0)
        plan = plan_memory(used, limit, swap, await asyncio.to_thread(self.host_memory),
                           self.settings.host_reserve, self.settings.margin)
        if not plan.ok:
            return await self._told(Outcome("refused", user, server, plan.why), uuid)
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        if plan.mem_limit:
            try:
                await self._set_limit(c["Id"], plan.mem_limit, plan.memswap_limit)
            except APIError as exc:
                return await self._told(Outcome("refused", user, server,
                                                f"its memory limit could not be raised: {exc.explanation or exc}"), uuid)
        answer = await self.checkpointer.park(c)
        timings["checkpoint_s"] = round(time.monotonic() - t0, 3)
        pids = tuple(int(p["pid"]) for p in answer.get("processes") or [] if "pid" in p)
        if not answer.get("ok"):
            await self._undo(c, limit, swap, plan, paused=False, pids=pids)
            return await self._told(Outcome("failed", user, server, f"checkpoint failed: {answer.get('error')}",
                                            timings=timings, tool=answer), uuid)
        t1 = time.monotonic()
        try:
            await self.docker("pause", c["Id"])
        except APIError as exc:  # NotFound included: then the undo finds nothing either
            await self._undo(c, limit, swap, plan, paused=False, pids=pids)
            return await self._told(Outcome("failed", user, server, f"docker pause failed: {exc.explanation or exc}",
                                            timings=timings, tool=answer), uuid)
        timings["pause_s"] = round(time.monotonic() - t1, 3)
        t2 = time.monotonic()
        rest = await self._wait_at_rest(uuid)
        timings["rest_s"] = round(time.monotonic() - t2, 3)
        if rest is not None:
            await self._undo(c, limit, swap, plan, paused=True, pids=pids)
            reading = "could not be read" if rest < 0 else f"read {rest} MiB"
            return await self._told(Outcome("failed", user, server, (
                f"the GPU's memory {reading} {self.settings.settle:g} s after the checkpoint (at rest is at "
                f"most {self.settings.rest_mib} MiB): something else holds it"), timings=timings, tool=answer), uuid)
        record = Parked(user, server, c["Id"], uuid, self.clock(), int(used), limit, plan.mem_limit, swap, pids)
        await asyncio.to_thread(self.parked.put, record)
        timings["park_s"] = round(time.monotonic() - t0, 3)
        detail = (f"parked: {len(pids)} CUDA process{'es' if len(pids) != 1 else ''}, {used} MiB of GPU memory "
                  f"moved to host memory in {timings['park_s']:.1f} s; GPU {uuid} given back")
        return await self._told(Outcome("parked", user, server, detail, record, timings, answer), uuid)

    async def _wait_at_rest(self, uuid: str) -> int | None:
        """None once the GPU's memory reads at rest; else the last reading after ``settle``."""
        deadline = time.monotonic() + self.settings.settle
        while True:
            used = await asyncio.to_thread(self.memory, uuid)
            if used is not None and used <= self.settings.rest_mib:
                return None
            if time.monotonic() >= deadline:
                return -1 if used is None else used
            await self.sleep(0.25)

    async def _set_limit(self, container_id: str, mem_limit: int, memswap_limit: int) -> None:
        changes = {"mem_limit": mem_limit}
        if memswap_limit:
            changes["memswap_limit"] = memswap_limit
        await self.docker("update_container", container_id, **changes)

    async def _usage(self, container_id: str) -> int | None:
        """The container's memory in use as ``docker stats`` counts it (less reclaimable file
        cache), or None when the engine does not say."""
        try:
            stats = await self.docker("stats", container_id, stream=False, one_shot=True)
            memory = stats.get("memory_stats") or {}
            cache = (memory.get("stats") or {}).get("inactive_file", 0)
            return int(memory["usage"]) - int(cache)
        except Exception:  # noqa: BLE001 - unknown: the limit is put back as before
            return None

    async def _restore_limit(self, container_id: str, mem_limit: int, memswap_limit: int) -> bool:
        """The limit from before parking, once the container's memory is under it: lowering a
        limit under what is in use makes the kernel's OOM killer take the largest process (cgroup
        v2), the kernel just restored. The restored state's host copy is freed as the driver lets
        it go: wait up to ``settle`` seconds; past that the limit stays raised (it only allows
        more) and the log says so. Lowering can also fail (cgroup v1 refuses): it stays raised."""
        deadline = time.monotonic() + self.settings.settle
        used = await self._usage(container_id)
        while used is not None and used > 0.9 * mem_limit and time.monotonic() < deadline:
            await self.sleep(0.5)
            used = await self._usage(container_id)
        if used is not None and used > 0.9 * mem_limit:
            log.warning("container %s: its memory limit stays raised (%d MiB in use, the limit was %d MiB)",
                        container_id[:12], used // MIB, mem_limit // MIB)
            return False
        try:
            await self._set_limit(container_id, mem_limit, memswap_limit)
        except (APIError, NotFound) as exc:
            log.warning("container %s: its memory limit stays raised (%s)", container_id[:12], exc)
            return False
        return True

    async def _undo(self, c: dict, limit: int, swap: int, plan: MemoryPlan, paused: bool,
                    pids: tuple[int, ...] = ()) -> None:
        if paused:
            with contextlib.suppress(APIError, NotFound):
                await self.docker("unpause", c["Id"])
        answer = await self.checkpointer.resume(c, pids)
        if not answer.get("ok"):
            log.warning("container %s: resume after a failed park: %s", c["Id"][:12], answer.get("error"))
        if plan.mem_limit:
            await self._restore_limit(c["Id"], limit, swap)

    # -- resume -----------------------------------------------------------------------------

    async def resume(self, user: str, server: str) -> Outcome:
        record = await asyncio.to_thread(self.parked.get, (user, server))
        if record is None:
            return Outcome("not-parked", user, server, "it is not parked")
        t0 = time.monotonic()
        async with self.lock:
            taken = await self.take_back(record)
        if isinstance(taken, Outcome):
            return taken
        return await self.restore(record, taken, t0)

    async def take_back(self, record: Parked) -> Outcome | dict:
        """The first half of a resume, under the allocator's lock (the caller holds it): its GPU
        held by someone else: "held" (still parked); else the record goes and the container is
        unpaused (it holds its GPU again). Returns its inspect, or the Outcome of why not."""
        user, server = record.key
        try:
            c = await self.docker("inspect_container", record.container)
        except NotFound:
            await asyncio.to_thread(self.parked.pop, record.key)
            return await self._told(Outcome("gone", user, server, "its container no longer exists", record),
                                    record.uuid)
        others = await self.holders_of(record.uuid, besides=record.container)
        if others:
            names = ", ".join(sorted({h.user for h in others}))
            return await self._told(Outcome("held", user, server, f"its GPU {record.uuid} is held by {names}",
                                            record), record.uuid)
        # from here on it holds its GPU again: the record goes before it runs (and its GPU
        # time counts again from now: hub.usage.reconcile)
        await asyncio.to_thread(self.parked.pop, record.key, self.clock())
        if is_paused(c):
            try:
                await self.docker("unpause", c["Id"])
            except APIError as exc:  # paused without a record: it holds its GPU, nothing is lost
                return await self._told(Outcome("resume-failed", user, server,
                                                f"docker unpause failed: {exc.explanation or exc}", record),
                                        record.uuid)
        return c

    async def restore(self, record: Parked, c: dict, t0: float | None = None) -> Outcome:
        """The second half, outside the lock (its GPU is its own again): ``gpu-park resume``
        (restore, unlock) and the memory limit from before parking."""
        user, server = record.key
        t0 = time.monotonic() if t0 is None else t0
        answer = await self.checkpointer.resume(c, record.pids)
        tries = 1
        # A driver error may pass: gpu-park reads each process's state first, so a second try
        # does only what is left. A stop asked during the restore (the person, an admin) kills
        # the kernel under the driver, which then answers CUDA_ERROR_OPERATING_SYSTEM or
        # NOT_INITIALIZED: that is said as what it is, and not tried again.
        while not answer.get("ok") and "CUDA_ERROR_" in str(answer.get("error")) and tries < self.settings.restore_tries:
            if not await self._running(c["Id"]):
                break
            log.warning("%s's server %r: resume: %s; trying again", user, server, _rows(answer))
            await self.sleep(self.settings.restore_retry * tries)
            answer = await self.checkpointer.resume(c, record.pids)
            tries += 1
        rows = answer.get("processes") or []
        timings = {"resume_s": round(time.monotonic() - t0, 3), "tries": tries,
                   **{f"{step}_s": round(sum(r.get(f"{step}_s") or 0 for r in rows), 3) for step in ("restore", "unlock")}}
        if not answer.get("ok") and not await self._running(c["Id"]):
            return await self._told(Outcome("resume-failed", user, server, (
                f"stopped while it resumed: its GPU state is lost with its processes ({answer.get('error')})"),
                record, timings, answer), record.uuid)
        if record.mem_limit_parked:
            t = time.monotonic()
            timings["limit_back"] = await self._restore_limit(c["Id"], record.mem_limit, record.memswap_limit)
            timings["limit_s"] = round(time.monotonic() - t, 3)
        if not answer.get("ok"):
            stuck = [r["pid"] for r in answer.get("processes") or [] if r.get("state") in ("checkpointed", "locked")]
            ended = ""
            if stuck and hasattr(self.checkpointer, "end"):
                killed = await self.checkpointer.end(c, stuck)
                ended = (f"; its kernel process{'es' if len(stuck) > 1 else ''} {', '.join(map(str, stuck))}, stuck "
                         f"{'and ended: Jupyter restarts the kernel' if killed.get('ok') else 'and not ended: ' + str(killed.get('error') or killed.get('exit_code'))}")
            return await self._told(Outcome("resume-failed", user, server, (
                f"running again, but its GPU state was not restored ({tries} tries): {answer.get('error')} "
                f"[{_rows(answer)}]{ended}"), record, timings, answer), record.uuid)
        detail = f"resumed on GPU {record.uuid} in {timings['resume_s']:.1f} s after {self._for(record)} parked"
        return await self._told(Outcome("resumed", user, server, detail, record, timings, answer), record.uuid)

    async def _running(self, container_id: str) -> bool:
        """Whether the container still runs (a stop may have come during the resume)."""
        try:
            c = await self.docker("inspect_container", container_id)
        except NotFound:
            return False
        return str((c.get("State") or {}).get("Status", "")).lower() in ("running", "paused")

    async def holders_of(self, uuid: str, besides: str = "") -> list:
        """Who holds ``uuid`` now by the engine's live containers (parked ones hold nothing)."""
        summaries = await self.docker("containers", all=True, filters={"status": list(LIVE_STATES)})
        details = []
        for s in summaries:
            if s["Id"] == besides:
                continue
            with contextlib.suppress(NotFound):
                details.append(await self.docker("inspect_container", s["Id"]))
        parked = parked_ids(details, (await asyncio.to_thread(self.parked.all)).values())
        return holders_from_containers(details, self.settings.label_prefix, parked=parked).get(uuid, [])

    # -- expiry and stop --------------------------------------------------------------------

    async def expire(self, limit: Callable[[Parked], float] | None = None) -> list[Outcome]:
        """Stop every server parked longer than ``max_parked`` (``limit(record)``: its own)."""
        now = self.clock()
        records = await asyncio.to_thread(self.parked.all)
        out = []
        for record in records.values():
            allowed = limit(record) if limit else self.settings.max_parked
            if now - record.since >= allowed:
                out.append(await self.stop(record.user, record.server, expired=True, allowed=allowed))
        return out

    async def stop(self, user: str, server: str, expired: bool = False, allowed: float | None = None) -> Outcome:
        """A parked server stopped: unpaused (a paused process cannot take its signal), then
        the normal stop; its GPU state is dropped with its processes."""
        record = await asyncio.to_thread(self.parked.get, (user, server))
        if record is None:
            return Outcome("not-parked", user, server, "it is not parked")
        with contextlib.suppress(NotFound):
            c = await self.docker("inspect_container", record.container)
            if is_paused(c):
                await self.docker("unpause", record.container)
        await self.stop_server(user, server)
        await asyncio.to_thread(self.parked.pop, record.key)
        allowed = self.settings.max_parked if allowed is None else allowed
        why = f"parked for {self._for(record)}, longer than the {allowed / 3600:g} h allowed" \
            if expired else f"stopped while parked ({self._for(record)})"
        return await self._told(Outcome("expired" if expired else "stopped", user, server, why, record),
                                record.uuid)

    def _for(self, record: Parked) -> str:
        seconds = max(0, round(self.clock() - record.since))
        return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"

    async def _told(self, outcome: Outcome, uuid: str) -> Outcome:
        log.info("%s's server %r: %s (%s)", outcome.user, outcome.server, outcome.action, outcome.detail)
        if self.audit is not None:
            await asyncio.to_thread(self.audit.write, self.clock(), *self.actor,
                                    action=AUDIT_ACTIONS[outcome.action], user=outcome.user,
                                    server=outcome.server, gpu=uuid, note="", detail=outcome.detail,
                                    **({"timings": outcome.timings} if outcome.timings else {}))
        return outcome


def _rows(answer: dict) -> str:
    """gpu-park's answer per process, for the log: pid, state before -> after, error."""
    return "; ".join(f"pid {r.get('pid')}: {r.get('before')} -> {r.get('state')}"
                     + (f" ({r['error']})" if r.get("error") else "")
                     for r in answer.get("processes") or []) or str(answer.get("error"))
