"""Admission by memory: hub/memory.py (pure) and the spawner's wait for it (waiting.py)."""
import asyncio
import json
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from hub.hub_process.spawner import GPUDockerSpawner, GPUUnavailable
from hub.hub_process.spawner.process import PROCESS, MemoryLine
from hub.memory import ServerCost, decide, parse_meminfo
from hub.units import format_size

GIB, MIB = 2**30, 2**20
MEMINFO = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   {} kB\nCached: 5 kB\n"


def meminfo(tmp_path, available_bytes):
    path = tmp_path / "meminfo"
    path.write_text(MEMINFO.format(available_bytes // 1024))
    return path


def test_meminfo_is_read_in_bytes():
    assert parse_meminfo(MEMINFO.format(2 * 1024 * 1024)) == (24576000 * 1024, 2 * GIB)
    assert parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nCached: 5 kB\n") == (102400, 15360)  # old kernels
    with pytest.raises(ValueError):
        parse_meminfo("nothing here")


def test_a_start_must_leave_the_reserve():
    assert decide(3 * GIB, 0, 512 * MIB, GIB).admit
    assert decide(3 * GIB, GIB, GIB, GIB).admit  # exactly the reserve left
    refused = decide(3 * GIB, 2 * GIB, 512 * MIB, GIB)  # promised to earlier starts counts as taken
    assert not refused.admit and "1 GiB free" in refused.message and "512 MiB" in refused.message


def test_a_server_costs_the_median_of_measured_ones_never_more_than_its_limit():
    cost = ServerCost(512 * MIB, keep=3, least=2)
    assert cost.of() == 512 * MIB and cost.of(limit=256 * MIB) == 256 * MIB
    cost.observe(100 * MIB)
    assert cost.of() == 512 * MIB  # one sample is not enough
    for used in (300 * MIB, 200 * MIB, 900 * MIB):
        cost.observe(used)
    assert cost.of() == 300 * MIB  # the last three: 300, 200, 900
    cost.observe(0)  # no reading: no sample
    assert len(cost.seen) == 3


def test_sizes_read_as_a_person_writes_them():
    assert [format_size(n) for n in (512 * MIB, 1536 * MIB, 12 * GIB, 10)] == ["512 MiB", "1.5 GiB", "12 GiB", "10 B"]


def spawner(name, tmp_path, **config):
    c = Config()
    for key, value in {"host_meminfo_file": str(tmp_path / "meminfo"), "host_memory_reserve": GIB,
                       "server_memory_estimate": 512 * MIB,
                       "host_memory_state_file": str(tmp_path / "host-memory.json"), **config}.items():
        setattr(c.GPUDockerSpawner, key, value)
    s = GPUDockerSpawner(config=c, user=SimpleNamespace(name=name, id=1, url=f"/user/{name}/", server=None))
    s.mem_limit = None
    return s


@pytest.fixture
def line(monkeypatch):
    fresh = MemoryLine()
    monkeypatch.setattr(PROCESS, "memory", fresh)
    return fresh


def test_starts_wait_in_order_for_memory_and_go_when_it_frees(tmp_path, line):
    meminfo(tmp_path, 2 * GIB)  # room for two servers of 512 MiB above the 1 GiB reserve
    spawners = [spawner(f"s{i}", tmp_path) for i in range(3)]

    async def run():
        admitted = []

        async def start(s):
            await s.wait_for_memory()
            admitted.append(s.user.name)
        tasks = [asyncio.create_task(start(s)) for s in spawners]
        await asyncio.sleep(0.3)
        assert admitted == ["s0", "s1"]  # the third would leave less than the reserve
        state = json.loads((tmp_path / "host-memory.json").read_text())
        assert state["waiting"] == 1 and state["pending_bytes"] == GIB and state["reserve_bytes"] == GIB
        messages = [e["message"] for e in spawners[2].progress_log.events]
        assert any("short of memory" in m and "starts by itself" in m for m in messages)
        spawners[0].memory_settled(None)  # s0 has started: its promise is over, and memory is taken
        meminfo(tmp_path, 2 * GIB)  # what s0 took is in the host's figure now (unchanged here: it took none)
        await asyncio.wait_for(tasks[2], 3)
        assert admitted == ["s0", "s1", "s2"]
        await asyncio.gather(*tasks)
    asyncio.run(run())
    assert not line.waiting


def test_refuse_answers_at_once_with_the_reason(tmp_path, line):
    meminfo(tmp_path, GIB)
    s = spawner("r", tmp_path, host_memory_when_full="refuse")
    with pytest.raises(GPUUnavailable, match="short of memory"):
        asyncio.run(s.wait_for_memory())
    assert not line.waiting and not line.pending


def test_a_wait_gives_up_after_its_maximum(tmp_path, line):
    meminfo(tmp_path, GIB)
    s = spawner("w", tmp_path, host_memory_max_wait=0)
    with pytest.raises(GPUUnavailable, match="no memory for your server within 0 minutes"):
        asyncio.run(s.wait_for_memory())
    assert not line.waiting


def test_off_or_no_figure_never_holds_a_start_up(tmp_path, line):
    asyncio.run(spawner("o", tmp_path, host_memory_when_full="off").wait_for_memory())
    asyncio.run(spawner("n", tmp_path, host_meminfo_file=str(tmp_path / "absent")).wait_for_memory())
    assert not line.pending and not line.waiting


def test_the_console_shows_the_hosts_memory_and_the_line(tmp_path, monkeypatch):
    from hub.service_process.console import handlers

    state = tmp_path / "host-memory.json"
    monkeypatch.setattr(handlers, "HOST_MEMORY_STATE_FILE", str(state))
    env = {"HOST_MEMINFO_FILE": str(meminfo(tmp_path, 8 * GIB)), "HOST_MEMORY_RESERVE": "1G"}
    row = handlers.host_memory_check(env)
    assert row["name"] == "host.memory" and row["status"] == "ok" and "8 GiB of 23 GiB available" in row["message"]
    state.write_text(json.dumps({"waiting": 3, "server_bytes": 512 * MIB}))
    row = handlers.host_memory_check(env)
    assert row["status"] == "warn" and "3 starts wait for memory" in row["message"] and row["fix"]
    assert handlers.host_memory_check({**env, "HOST_MEMORY_WHEN_FULL": "off"}) is None
    assert handlers.host_memory_check({**env, "HUB_BACKEND": "swarm"}) is None


def test_what_servers_really_take_frees_the_promises_of_starts_in_flight(tmp_path, line):
    """Starts in flight count at what a server takes as the hub knows it now: once the first
    servers are measured (105 MB each, as the class rush found), the estimate stops holding back
    starts the host has room for."""
    meminfo(tmp_path, 2 * GIB)
    spawners = [spawner(f"f{i}", tmp_path) for i in range(3)]

    async def run():
        tasks = [asyncio.create_task(s.wait_for_memory()) for s in spawners]
        await asyncio.sleep(0.3)
        assert [t.done() for t in tasks] == [True, True, False]  # 2 x 512 MiB promised
        for _ in range(3):
            line.cost.observe(105 * MIB)
        line.changed()
        await asyncio.wait_for(tasks[2], 3)  # 2 GiB - 3 x 105 MiB keeps the 1 GiB reserve
    asyncio.run(run())
    assert set(line.pending) == {("f0", ""), ("f1", ""), ("f2", "")}


def test_starts_behind_an_admitted_one_are_told_nothing(tmp_path, line):
    """A burst with memory to spare: the starts pass one by one without a word of waiting."""
    meminfo(tmp_path, 16 * GIB)
    spawners = [spawner(f"b{i}", tmp_path) for i in range(6)]

    async def run():
        await asyncio.wait_for(asyncio.gather(*(s.wait_for_memory() for s in spawners)), 3)
    asyncio.run(run())
    assert not any(e["message"] for s in spawners for e in s.progress_log.events if "memory" in e["message"])
    assert len(line.pending) == 6 and not line.short
