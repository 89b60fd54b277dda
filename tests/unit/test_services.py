"""hub/common/services.py: components of one service process (the GPU console and gpu-reclaim) on one
event loop; one component's failing periodic work never stops another's."""
import asyncio
import logging

import pytest

from hub.common.services import every, serve

log = logging.getLogger("test-components")


def test_a_failing_periodic_work_is_logged_and_stops_nothing(caplog):
    calls = {"reclaim": 0, "console": 0}

    async def reclaim_round():
        calls["reclaim"] += 1
        raise RuntimeError("the engine went away")

    async def console_sample():
        calls["console"] += 1

    async def scenario():
        await every(0.02, reclaim_round, "reclaim round", log)
        await every(0.02, console_sample, "GPU usage sample", log)
        await asyncio.sleep(0.3)

    with caplog.at_level(logging.ERROR, "test-components"):
        asyncio.run(scenario())
    assert calls["reclaim"] >= 3 and calls["console"] >= 3  # both go on, the failing one too
    failed = [r for r in caplog.records if r.message == "reclaim round"]
    assert len(failed) == calls["reclaim"] and "the engine went away" in str(failed[0].exc_info[1])


def test_work_not_due_now_waits_for_its_first_interval():
    calls = []

    async def scenario():
        run = await every(3600, lambda: asyncio.sleep(0, calls.append("ran")), "schedule", log, now=False)
        assert calls == []
        await run()  # the guarded work, for runs at other times (an engine event)
        return calls

    assert asyncio.run(scenario()) == ["ran"]


def test_a_component_that_cannot_start_ends_the_process():
    started = []

    async def console():
        started.append("console")

    async def reclaim():
        raise ValueError("gpu-reclaim in the console's process needs GPUHUB_RECLAIM_URL")

    with pytest.raises(ValueError, match="GPUHUB_RECLAIM_URL"):
        serve(console, reclaim)
    assert started == ["console"]
