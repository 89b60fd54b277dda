"""A start waiting in line for a GPU (hub/gpus/queue.py), for the host's memory (hub/memory.py)
and for its turn to start (turns.py), as a part of GPUDockerSpawner (spawner.py): the progress
stream shows the place and why."""
import asyncio
import json
import time
from pathlib import Path

from hub.files import write_atomic
from hub.gpus.manager import GPUManager
from hub.hub_process.spawner.errors import GPUUnavailable
from hub.hub_process.spawner.process import PROCESS
from hub.hub_process.spawner.traits import GPUSpawnerSettings
from hub.memory import ServerCost, decide, parse_meminfo


class LineWaiting(GPUSpawnerSettings):
    async def wait_for_gpu(self) -> None:
        """Wait in line (hub/gpus/queue.py) until a GPU this server may take is free and nobody
        earlier in the line could take it; the progress stream shows the place in line. A
        cancelled start (the user's Cancel, or a stop) leaves the line."""
        manager = await self.gpu_manager()
        if not manager.inventory:
            return
        try:
            await self._wait_in_line(manager)
        except BaseException:  # cancelled (the user's Cancel, a stop), gave up: out of the line
            if self._waiter is not None:
                PROCESS.gpu_queue.leave(self._waiter)
                self._waiter = None
            raise

    async def _wait_in_line(self, manager: GPUManager) -> None:
        queue, user, server = PROCESS.gpu_queue, self.user.name, self.name or ""
        groups, told, started = frozenset(self.user_groups()), None, time.monotonic()
        woken = started
        while True:
            async with manager.lock:
                # One engine read serves every waiter woken by the same stop: the waiters queue
                # on this lock, and the allocator (reconciled, then kept by each allocation under
                # the lock) is as fresh as a read of their own. The start itself reads the
                # engine again before it takes a GPU (create_object).
                if manager.reconciled_at <= woken:
                    await manager.reconcile(self.engine)
                alloc, now = manager.allocator, time.time()
                if not alloc.intent.allows(user, groups) or alloc.gpu_of(user, server) is not None:
                    return  # assign_gpu refuses it, starts it without a GPU, or it holds one already
                # In line from the first look: a start let through keeps its place (passed) until
                # its container exists, so a burst never lets more through than GPUs are free.
                self._waiter = self._waiter or queue.join(user, server, groups)
                queue.apply_moves()  # an admin's moves from the GPU console, before anyone is let through
                if alloc.could_allocate(user, groups, now) and not queue.must_wait(alloc, user, server, groups, now):
                    self._waiter.passed = True
                    return
                self._waiter.event.clear()
                self._waiter.waited = True
                position = queue.position(self._waiter)
            if position != told:
                told = position
                self.log.info("%s waits for a GPU: number %d in line", self._log_name, position)
                self.emit_progress(8, self.queue_message(position, queue.estimate(position)))
            if time.monotonic() - started > self.gpu_queue_max_wait:
                raise GPUUnavailable(f"No GPU became free for you within {self.gpu_queue_max_wait // 60} minutes "
                                     "in line; press Start to try again later.")
            try:
                await asyncio.wait_for(self._waiter.event.wait(), 5)
                woken = self._waiter.woken_at  # when the stop happened, not when this task resumed
            except asyncio.TimeoutError:
                woken = time.monotonic()

    @staticmethod
    def queue_message(position: int, estimate: float | None) -> str:
        ahead = ("You are next in line for a GPU" if position == 1
                 else f"You are number {position} in line for a GPU")
        about = f" (about {max(1, round(estimate / 60))} min, at the recent pace)" if estimate else ""
        return (f"All GPUs are in use. {ahead}{about}; your server starts by itself when one is free. "
                "Keep this page open or come back later; Cancel leaves the line.")

    def _told_to_wait(self, ahead: int) -> None:
        self.log.info("Start of %s waits its turn (%d ahead)", self._log_name, ahead)
        self.emit_progress(5, f"Waiting to start: {self.concurrent_starts} servers are starting now"
                              f"{f' and {ahead} more are waiting before yours' if ahead else ''}")

    # ---- the host's memory ----------------------------------------------------------------

    def host_memory(self) -> tuple[int, int]:
        """(total, available) bytes of the host (blocking: run it on the executor)."""
        return parse_meminfo(Path(self.host_meminfo_file).read_text())

    async def wait_for_memory(self) -> None:
        """Until the host can take this server and keep its reserve (hub/memory.py), first come
        first served; then this start's expected memory counts as taken until it has started
        (``memory_settled``). 'refuse' answers 503 instead of waiting; 'off' does not look."""
        if self.host_memory_when_full == "off":
            return
        line, key = PROCESS.memory, self._server_key
        line.cost = line.cost or ServerCost(int(self.server_memory_estimate))
        limit = int(self.mem_limit) if self.mem_limit else None
        line.waiting.append(key)
        loop, started, told = asyncio.get_running_loop(), time.monotonic(), None
        try:
            while True:
                if line.waiting[0] == key:
                    try:
                        _, available = await loop.run_in_executor(self.executor, self.host_memory)
                    except (OSError, ValueError) as exc:  # no figure: the check cannot hold a start up
                        self.log.warning("Host memory unknown (%s: %s): %s starts unchecked",
                                         self.host_meminfo_file, exc, self._log_name)
                        return
                    # what a server takes as the hub knows it now, for this start and for those
                    # admitted before it (their limits kept: a promise is never more than a limit)
                    pending = sum(line.cost.of(their_limit) for their_limit in line.pending.values())
                    decision = decide(available, pending, line.cost.of(limit), int(self.host_memory_reserve))
                    line.short = not decision.admit
                    if decision.admit:
                        line.pending[key] = limit
                        return
                    if self.host_memory_when_full == "refuse":
                        self.log.warning("Start of %s refused: %s", self._log_name, decision.message)
                        raise GPUUnavailable(f"{decision.message} Try again in a few minutes.")
                    message = (f"{decision.message} Your server starts by itself when memory frees; "
                               "keep this page open (Cancel leaves the line).")
                elif line.short:  # the first in line waits for memory: so does everyone behind it
                    ahead = line.waiting.index(key)
                    message = (f"The server's host is short of memory: {ahead} start{'s' if ahead > 1 else ''} "
                               "wait for memory before yours; your server starts by itself when it is its turn.")
                else:  # behind a start being admitted now: nothing to tell
                    message = None
                if message and message != told:
                    told = message
                    self.log.info("%s waits for memory: %s", self._log_name, message)
                    self.emit_progress(7, message)
                    self.write_memory_state()
                if time.monotonic() - started > self.host_memory_max_wait:
                    raise GPUUnavailable(f"The server's host had no memory for your server within "
                                         f"{self.host_memory_max_wait // 60} minutes; press Start to try again later.")
                await line.wait(1)
        finally:
            line.waiting.remove(key)
            line.changed()
            self.write_memory_state()

    def memory_settled(self, container_id: str | None) -> None:
        """The start is over: what it was promised is no longer held for it, and the server's
        memory now (JupyterLab up) is measured, for what the next servers are expected to take.
        Measured at once, not later: in a class rush the estimate must learn from the first
        servers, or it holds back starts the host has room for."""
        line = PROCESS.memory
        if self._server_key not in line.pending:
            return
        del line.pending[self._server_key]
        line.changed()
        self.write_memory_state()
        if container_id:
            asyncio.ensure_future(self._measure(container_id))

    async def _measure(self, container_id: str) -> None:
        try:
            stats = await self.engine("stats", container_id, stream=False, one_shot=True)
        except Exception as exc:  # gone already, or an engine without one-shot stats: no sample
            self.log.debug("No memory sample of %s: %s", container_id[:12], exc)
            return
        memory = stats.get("memory_stats") or {}
        used = int(memory.get("usage") or 0) - int((memory.get("stats") or {}).get("inactive_file") or 0)
        if PROCESS.memory.cost is not None:
            PROCESS.memory.cost.observe(used)
            self.write_memory_state()

    def write_memory_state(self) -> None:
        """What the GPU console shows of the memory line (host_memory_state_file)."""
        if not self.host_memory_state_file:
            return
        line = PROCESS.memory
        cost = line.cost or ServerCost(int(self.server_memory_estimate))
        state = {"waiting": len(line.waiting), "pending_bytes": sum(cost.of(limit) for limit in line.pending.values()),
                 "server_bytes": line.cost.of() if line.cost else int(self.server_memory_estimate),
                 "reserve_bytes": int(self.host_memory_reserve), "mode": self.host_memory_when_full,
                 "updated": time.time()}
        try:
            write_atomic(self.host_memory_state_file, json.dumps(state))
        except OSError as exc:  # the console's view only: a start never fails for it
            self.log.debug("Memory state not written: %s", exc)
