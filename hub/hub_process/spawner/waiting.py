"""A start waiting in line for a GPU (hub/gpus/queue.py) and for its turn to start
(turns.py), as a part of GPUDockerSpawner (spawner.py): the progress stream shows the place."""
import asyncio
import time

from hub.gpus.manager import GPUManager
from hub.hub_process.spawner.errors import GPUUnavailable
from hub.hub_process.spawner.process import PROCESS
from hub.hub_process.spawner.traits import GPUSpawnerSettings


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
