"""WarmKernelManager: jupyter_server's kernel manager with one spare kernel kept ready.

Set as ``ServerApp.kernel_manager_class`` (jupyter_server_config.json in this image). Once
the server has been quiet for a moment after the first JupyterLab page (the gpuhub_warm server
extension tells it of the page and of each request; ``start_after``: or at once with the page,
or with the server), it starts one kernel of the default kernel spec and imports the profile's modules in it (``imports``;
the spawner passes them in GPUHUB_WARM_IMPORTS) in a thread of lower priority. That kernel is
not in the manager's map: /api/kernels does not list it, jupyter_server's kernel culler and the
server's activity (what JupyterHub's idle culler reads) do not see it, and it holds no GPU
memory (importing torch does not initialise CUDA).

The first start_kernel for that kernel spec without a kernel_id (a notebook or console opening)
takes it: the notebook's working directory, environment and ``__session__`` are set in it, its
launch arguments become the notebook's (so a restart starts the kernel a normal start would
have), and from then on it is an ordinary kernel of the map. The next spare starts
``respawn_delay`` seconds later, only if the server's memory (its cgroup's limit and use) has
room for it plus ``reserve_bytes``. GPUHUB_WARM_KERNEL=off (the hub's WARM_KERNEL setting)
turns all of this off: the manager is then jupyter_server's own.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid

from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Bool, Float, Integer, List, Unicode, default

from . import room


class Spare:
    """One spare kernel: its manager, id, the environment it was started with, and the task
    that starts it and runs the imports (its result: the imports that failed)."""

    def __init__(self, km, kernel_id: str, kernel_name: str, env: dict, cwd: str):
        self.km, self.kernel_id, self.kernel_name, self.env, self.cwd = km, kernel_id, kernel_name, env, cwd
        self.task: asyncio.Task | None = None
        self.started = time.monotonic()
        self.ready_after: float | None = None  # seconds from start to imports done
        self.resident: int | None = None
        self.anon: int | None = None


class WarmKernelManager(AsyncMappingKernelManager):
    warm_kernel = Bool(config=True, help="Keep one spare kernel ready (GPUHUB_WARM_KERNEL, default on).")
    warm_imports = List(Unicode(), config=True,
                        help="Modules the spare imports (GPUHUB_WARM_IMPORTS, spaces or commas).")
    warm_nice = Integer(10, config=True, help="Niceness added to the thread that runs the spare's imports.")
    reserve_bytes = Integer(config=True, help="Memory that must stay free besides the spare's own "
                            "(GPUHUB_WARM_RESERVE_MB; default 512 MiB).")
    host_reserve_bytes = Integer(config=True, help="Memory the host must keep available besides the spare "
                                 "(GPUHUB_WARM_HOST_RESERVE_MB, set by the hub from its admission settings; default 0).")
    start_after = Unicode(config=True, help="When the first spare starts after the first JupyterLab "
                          "page: 'quiet' (default; once the server has had no request for `quiet_s` "
                          "seconds, i.e. the page's assets and first API calls are served, so that the "
                          "spare's start does not compete for CPU with the browser loading JupyterLab; "
                          "at the latest `quiet_max_s` after the page, and at once when a notebook asks "
                          "for a kernel before), 'lab' (at once: the page served) or 'server' (when the "
                          "server starts, before anyone opens it: for a server started ahead of its user; "
                          "GPUHUB_WARM_START).")
    quiet_s = Float(config=True, help="Seconds without a request that count as quiet (GPUHUB_WARM_QUIET_MS; "
                    "default 1000 ms).")
    quiet_max_s = Float(10.0, config=True, help="Seconds after the first JupyterLab page by which the "
                        "first spare starts even if requests keep coming.")
    respawn_delay = Float(5.0, config=True, help="Seconds after a claim before the next spare starts, "
                          "so that it does not compete with the notebook's first cells.")
    warm_timeout = Float(120.0, config=True, help="Seconds a spare may take to start and import.")
    spare_kernel_name = Unicode("", config=True, help="Kernel spec of the spare ('': the default kernel spec).")

    @default("warm_kernel")
    def _default_warm_kernel(self):
        return room.enabled(os.environ)

    @default("warm_imports")
    def _default_warm_imports(self):
        try:
            return list(room.parse_imports(os.environ.get("GPUHUB_WARM_IMPORTS")))
        except ValueError as exc:
            self.log.warning("Warm kernel: %s; importing nothing", exc)
            return []

    @default("start_after")
    def _default_start_after(self):
        value = os.environ.get("GPUHUB_WARM_START", "quiet").strip().lower() or "quiet"
        if value not in ("quiet", "lab", "server"):
            self.log.warning("Warm kernel: GPUHUB_WARM_START=%r is not quiet, lab or server; using quiet", value)
            return "quiet"
        return value

    @default("quiet_s")
    def _default_quiet_s(self):
        return room.env_int(os.environ, "GPUHUB_WARM_QUIET_MS", 1000) / 1000

    @default("host_reserve_bytes")
    def _default_host_reserve_bytes(self):
        return room.env_int(os.environ, "GPUHUB_WARM_HOST_RESERVE_MB", 0) * 2**20

    @default("reserve_bytes")
    def _default_reserve_bytes(self):
        return room.env_int(os.environ, "GPUHUB_WARM_RESERVE_MB", 512) * 2**20

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._spare: Spare | None = None
        self._warm_wanted = False  # the first JupyterLab page has been served
        self._quiet_until: float | None = None  # loop time by which the first spare starts at the latest
        self._lab_at: float | None = None  # loop time of the first JupyterLab page
        self._first_reason: str | None = None  # why the first spare started when it did
        self._respawn: asyncio.TimerHandle | None = None
        self._last_resident: int | None = None
        self._last_anon: int | None = None
        self.spares_started = self.spares_claimed = 0

    # ---- the spare's life ------------------------------------------------------------------

    def warm_up(self) -> None:
        """The first JupyterLab page was served (or, with start_after 'server', the server
        started): keep a spare from now on (called again later, it does nothing)."""
        if self._warm_wanted or not self.warm_kernel:
            return
        self._warm_wanted = True
        if self.start_after in ("lab", "server"):
            self._first_reason = "the JupyterLab page" if self.start_after == "lab" else "the server's start"
            self._start_spare_soon(0)
            return
        self._lab_at = asyncio.get_running_loop().time()
        self._quiet_until = self._lab_at + self.quiet_max_s
        self._first_reason = "quiet"
        self._start_spare_soon(self.quiet_s)

    def request_served(self) -> None:
        """A request to this server finished (the gpuhub_warm extension says so): while the first
        spare waits for quiet, its start moves to `quiet_s` from now (not past `quiet_max_s`)."""
        if self._quiet_until is None or self._respawn is None:
            return
        delay = room.quiet_delay(asyncio.get_running_loop().time(), self._quiet_until, self.quiet_s)
        if delay < self.quiet_s:
            self._first_reason = "the longest wait for quiet"
        self._start_spare_soon(delay)

    def _start_spare_soon(self, delay: float) -> None:
        if self._respawn is not None:
            self._respawn.cancel()
        loop = asyncio.get_running_loop()
        self._respawn = loop.call_later(delay, lambda: loop.create_task(self._start_spare()))

    def spare_status(self) -> dict:
        """What a test or an admin may ask (GET /api/gpuhub/warm-kernel)."""
        spare = self._spare
        return {"enabled": self.warm_kernel, "wanted": self._warm_wanted, "imports": list(self.warm_imports),
                "start_after": self.start_after, "waiting_for_quiet": self._quiet_until is not None,
                "first_started_because": self._first_reason if self.spares_started else None,
                "started": self.spares_started, "claimed": self.spares_claimed,
                "spare": None if spare is None else {
                    "pid": self._pid(spare.km), "ready": spare.task is not None and spare.task.done()
                    and not spare.task.cancelled() and spare.task.exception() is None,
                    "ready_after_s": spare.ready_after, "resident_bytes": spare.resident,
                    "anon_bytes": spare.anon},
                "last_resident_bytes": self._last_resident, "last_anon_bytes": self._last_anon}

    async def _start_spare(self) -> None:
        self._respawn = None
        if self._quiet_until is not None:
            self._quiet_until = None
            self.log.info("Warm kernel: the first spare starts %.2f s after the JupyterLab page (%s)",
                          asyncio.get_running_loop().time() - self._lab_at, self._first_reason)
        if self._spare is not None or not self.warm_kernel:
            return
        need = self._last_resident or room.FIRST_ESTIMATE
        memory = room.read_memory()
        if not room.room_for_spare(memory, need, self.reserve_bytes, room.host_available(), self.host_reserve_bytes):
            self.log.info("Warm kernel: no spare started, memory %s has no room for %d MiB + %d MiB reserve",
                          memory and f"{memory.used >> 20}/{memory.limit >> 20} MiB used", need >> 20,
                          self.reserve_bytes >> 20)
            return
        kernel_name = self.spare_kernel_name or self.default_kernel_name
        kwargs = {"kernel_id": str(uuid.uuid4())}
        try:
            km, kernel_name, kernel_id = self.pre_start_kernel(kernel_name, kwargs)
        except Exception:
            self.log.exception("Warm kernel: could not prepare a spare")
            return
        env = dict(os.environ)
        spare = Spare(km, kernel_id, kernel_name, env, self.root_dir)
        spare.km.autorestart = False  # a spare that dies is dropped, not restarted
        self._spare = spare
        self.spares_started += 1
        spare.task = asyncio.create_task(self._prepare(spare))

    async def _prepare(self, spare: Spare) -> list[str]:
        """Start the spare's kernel and run its imports; on failure drop it."""
        try:
            return await asyncio.wait_for(self._launch_and_import(spare), self.warm_timeout)
        except BaseException as exc:
            if self._spare is spare:
                self._spare = None
            self.log.warning("Warm kernel: spare %s failed (%r); it is shut down", spare.kernel_id, exc)
            await self._shutdown_spare(spare)
            raise

    async def _launch_and_import(self, spare: Spare) -> list[str]:
        await spare.km.start_kernel(kernel_id=spare.kernel_id, env=spare.env, cwd=spare.cwd)
        client = spare.km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=self.warm_timeout)
            failed: list[str] = []
            if self.warm_imports:
                msg_id = client.execute(room.warm_code(tuple(self.warm_imports), self.warm_nice), silent=True,
                                        store_history=False,
                                        user_expressions={"failed": "_gpuhub_warm_failed"})
                reply = await self._reply(client, msg_id)
                result = reply["content"].get("user_expressions", {}).get("failed", {})
                text = result.get("data", {}).get("text/plain", "[]") if result.get("status") == "ok" else "?"
                if reply["content"].get("status") != "ok" or text != "[]":
                    failed = [text]
                    self.log.warning("Warm kernel: imports failed in the spare: %s", text)
        finally:
            client.stop_channels()
        spare.ready_after = time.monotonic() - spare.started
        spare.resident = room.resident_bytes(self._pid(spare.km) or -1)
        spare.anon = room.resident_bytes(self._pid(spare.km) or -1, field="RssAnon")
        if spare.resident:
            self._last_resident, self._last_anon = spare.resident, spare.anon
        self.log.info("Warm kernel: spare %s ready in %.2f s with %s (%s MiB resident, %s MiB of it its own)",
                      spare.kernel_id, spare.ready_after, " ".join(self.warm_imports) or "no imports",
                      spare.resident and spare.resident >> 20, spare.anon and spare.anon >> 20)
        return failed

    @staticmethod
    async def _reply(client, msg_id: str) -> dict:
        while True:
            msg = await client.get_shell_msg()
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg

    @staticmethod
    def _pid(km) -> int | None:
        process = getattr(getattr(km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    async def _shutdown_spare(self, spare: Spare) -> None:
        try:
            if spare.km.has_kernel:
                await spare.km.shutdown_kernel(now=True)
        except Exception:
            self.log.exception("Warm kernel: shutting down spare %s", spare.kernel_id)

    # ---- a notebook takes it --------------------------------------------------------------

    async def _async_start_kernel(self, *, kernel_id=None, path=None, **kwargs):
        name = kwargs.get("kernel_name") or self.default_kernel_name
        if kernel_id is None and self._quiet_until is not None and self._spare is None:
            # A notebook opens before the quiet came: its kernel is the spare, started now.
            if self._respawn is not None:
                self._respawn.cancel()
            self._first_reason = "a notebook asked for a kernel"
            await self._start_spare()
        spare = self._spare
        if kernel_id is None and spare is not None and spare.kernel_name == name:
            self._spare = None
            try:
                return await self._claim(spare, path, kwargs)
            except Exception as exc:
                self.log.warning("Warm kernel: spare %s could not be used (%r); starting a kernel", spare.kernel_id, exc)
                await self._shutdown_spare(spare)
                self._start_spare_soon(self.respawn_delay)
        return await super()._async_start_kernel(kernel_id=kernel_id, path=path, **kwargs)

    start_kernel = _async_start_kernel

    async def _claim(self, spare: Spare, path, kwargs) -> str:
        failed_imports = await asyncio.shield(spare.task)  # the spare may still be importing
        if not await spare.km.is_alive():
            raise RuntimeError("the spare kernel died")
        kwargs = self._kernel_start_kwargs(**kwargs)
        env = kwargs.get("env") or dict(os.environ)
        cwd = self.cwd_for_path(path, env=env) if path is not None else self.root_dir
        env_set, env_unset = room.env_change(spare.env, env)
        client = spare.km.client()
        client.start_channels()
        try:
            msg_id = client.execute(room.claim_code(cwd, env_set, env_unset, env.get("JPY_SESSION_NAME")),
                                    silent=True, store_history=False)
            reply = await asyncio.wait_for(self._reply(client, msg_id), 10)
        finally:
            client.stop_channels()
        if reply["content"].get("status") != "ok":
            raise RuntimeError(f"setting the notebook's directory failed: {reply['content'].get('evalue')}")
        # A restart launches what a normal start for this notebook would have.
        spare.km._launch_args.update(cwd=cwd, env=env)
        kernel_id, km = spare.kernel_id, spare.km
        self._kernels[kernel_id] = km
        self._kernel_connections[kernel_id] = 0
        km.execution_state = "idle"
        km.reason = ""
        km.last_activity = self.last_kernel_activity = utcnow()
        km.autorestart = True
        km.start_restarter()
        await self._finish_kernel_start(kernel_id)
        self.spares_claimed += 1
        self.log.info("Kernel started: %s (the warm spare, %s, in %s%s)", kernel_id, km.kernel_name, cwd,
                      f"; imports that failed: {failed_imports}" if failed_imports else "")
        if not self._initialized_culler:
            self.initialize_culler()
        try:
            from jupyter_server.prometheus.metrics import KERNEL_CURRENTLY_RUNNING_TOTAL

            KERNEL_CURRENTLY_RUNNING_TOTAL.labels(type=km.kernel_name).inc()
        except Exception:
            pass
        self._start_spare_soon(self.respawn_delay)
        return kernel_id

    # ---- the server stops -----------------------------------------------------------------

    async def _async_shutdown_all(self, now=False):
        self.warm_kernel = False  # no new spare while the server stops
        self._quiet_until = None
        if self._respawn is not None:
            self._respawn.cancel()
        spare, self._spare = self._spare, None
        if spare is not None:
            if spare.task is not None and not spare.task.done():
                spare.task.cancel()
            await self._shutdown_spare(spare)
        await super()._async_shutdown_all(now=now)

    shutdown_all = _async_shutdown_all
