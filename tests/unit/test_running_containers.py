"""One engine call answers every spawner's poll for a few seconds (hub/hub_process/spawner/running.py)."""
import asyncio

from hub.hub_process.spawner.running import RunningContainers


def test_polls_share_one_engine_call_until_it_is_old():
    now = [100.0]
    running = RunningContainers(max_age=5, clock=lambda: now[0])
    calls = []

    async def list_running():
        calls.append(1)
        await asyncio.sleep(0.01)
        return [{"Names": ["/lab-alice"]}, {"Names": ["/lab-bob"]}]

    async def polls():
        return await asyncio.gather(*(running.is_running(n, list_running) for n in ["lab-alice", "lab-bob", "lab-carol"] * 30))
    answers = asyncio.run(polls())
    assert answers == [True, True, False] * 30 and len(calls) == 1  # 90 polls, one call
    now[0] += 4.9
    assert asyncio.run(running.is_running("lab-alice", list_running)) and len(calls) == 1
    now[0] += 0.2
    assert asyncio.run(running.is_running("lab-alice", list_running)) and len(calls) == 2


def test_an_engine_error_means_ask_the_container_itself():
    running = RunningContainers()

    async def broken():
        raise ConnectionError("engine gone")
    assert asyncio.run(running.is_running("lab-alice", broken)) is False
    assert running._refresh is None  # the next poll tries again
