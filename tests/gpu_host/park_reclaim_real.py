#!/usr/bin/env python3
"""Parking on a real GPU through the hub's own code: gpu-reclaim decides, the hub's resume path
restores (docs/gpus.md, "Parking"). After .gpukit/start-docker.sh on the GPU machine:

    PYTHONPATH=/tmp/site:. python3 tests/gpu_host/park_reclaim_real.py --sizes 1,10,40 --out $OUT/park-reclaim.json

For each size (GB), on the machine's first GPU:
  1. user A: a container labelled as the spawner labels a server (gpukit/hostroot:1 with the
     host's Python and torch bound in, user 1000:100, the GPU by UUID through CDI), whose
     "kernel" (tests/gpu_host/park_proof.py's worker) allocates that many GB of tensors,
     computes an exact checksum, keeps a random note and ticks a tiny CUDA op every 20 ms;
  2. gpu-reclaim's Reclaimer (hub/service_process/reclaim/service.py) with the policy
     action=park, T and grace shortened, NVML readings every second: it warns, then parks A
     (service_process/reclaim/parking.py -> hub/common/park.py: gpu-park by docker exec as
     1000:100, docker pause, the memory limit raised, NVML back at rest);
  3. NVML's reading of the GPU's memory while A is parked;
  4. user B, a container holding the same GPU by the same labels, asks to resume A first: the
     hub's resume (the Parker as hub/hub_process/parking.py builds it, under a lock) answers
     "held"; then B allocates as much as A had and runs the bf16 matmul of matmul.py (compared
     with the same run before A existed), and exits;
  5. A resumes (the same resume): the same checksum from the same tensors, the same note, and
     no tick while parked (A could not run while B held the GPU).
Prints one JSON object (and writes --out): per size the reclaim's times (idle -> parked), the
checkpoint, pause, rest and resume times, GPU memory loaded / parked / resumed, B's matmul, and
the checks. Everything it makes is named park-real-* and removed at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (HERE, ROOT, Path("/tmp/site")):
    if _p.is_dir() and str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import docker  # noqa: E402

import park_proof as pp  # noqa: E402
from hub.common.audit import AuditLog  # noqa: E402
from hub.common.engine import DockerCaller, engine_client  # noqa: E402
from hub.common.park import ExecCheckpointer, ParkSettings, Parker  # noqa: E402
from hub.common.stop_reasons import ReasonFile  # noqa: E402
from hub.gpus.activity import ActivitySampler, ActivityStore  # noqa: E402
from hub.gpus.nvml import NVMLReader  # noqa: E402
from hub.gpus.parked import ParkedFile  # noqa: E402
from hub.gpus.reclaim_policy import ReclaimPolicy  # noqa: E402
from hub.service_process.reclaim import parking  # noqa: E402
from hub.service_process.reclaim.service import Reclaimer  # noqa: E402

INSTANCE = "park-real"
T, GRACE = 6, 4
T0 = time.monotonic()


def step(what: str) -> None:
    """Each step as it starts, on stderr (its second run on the H100 hung after the 1 GB park
    with no trace of where: this says where)."""
    print(f"[park-real {time.monotonic() - T0:7.1f}s] {what}", file=sys.stderr, flush=True)


async def bounded(what: str, call, seconds: float):
    """A blocking step in a thread, at most ``seconds``: TimeoutError naming it."""
    step(what)
    try:
        return await asyncio.wait_for(asyncio.to_thread(call), seconds)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what}: no answer in {seconds:g} s") from None


class HubStandIn:
    """The hub's REST API as gpu-reclaim uses it: a stop removes the container."""

    def __init__(self, client):
        self.client, self.stopped = client, []

    async def user(self, name):
        return {"name": name, "groups": []}

    async def stop_server(self, user, server):
        self.stopped.append(user)
        for c in self.client.containers.list(all=True, filters={"label": [f"gpuhub.user={user}",
                                                                          f"gpuhub.instance={INSTANCE}"]}):
            await asyncio.to_thread(c.remove, force=True)
        return 204, ""


def b_holder(client, uuid: str, binds: dict, python: str):
    """User B's server: a container holding the GPU by the spawner's labels (sleeping)."""
    return client.containers.run(
        "gpukit/hostroot:1", [python, "-c", "import time; time.sleep(3600)"], detach=True, network_mode="none",
        name=f"park-real-b-{int(time.time())}", user="1000:100", volumes=binds,
        labels={"gpuhub.user": "bob", "gpuhub.server": "", "gpuhub.instance": INSTANCE, "gpuhub.gpu.uuid": uuid,
                "gpuhub.gpu.since": f"{time.time():.0f}"},
        device_requests=[docker.types.DeviceRequest(driver="cdi", device_ids=[f"nvidia.com/gpu={uuid}"])])


async def one_size(gb: float, args, memory, rest: int, baseline: dict) -> dict:
    row: dict = {"gb": gb}
    free_mib = memory.total - memory.used()
    if gb * 1024 + 4096 > free_mib:  # A's tensors; B's as many once A is parked
        return {**row, "skipped": f"needs {gb:g} GB + 4 GB free on the GPU, {free_mib} MiB free"}
    if gb * pp.GIB * 1.2 + 8 * pp.GIB > pp.host_available():
        return {**row, "skipped": f"the checkpoint needs {gb:g} GB of host memory beside the 8 GB reserve"}
    client = docker.from_env()
    work = Path(tempfile.mkdtemp(prefix="park-real-"))
    work.chmod(0o777)
    args.container, args.fake, args.from_host, args.instance = True, False, False, INSTANCE
    a = pp.ContainerA(args, memory, rest, args.python)  # the container (the spawner's labels), its worker
    b = None
    try:
        ready = await bounded("A starts and allocates", lambda: a.start(gb), 300)
        row["alloc_s"] = ready["alloc_s"]
        time.sleep(1.0)
        row["mem_loaded_mib"] = memory.used()
        # gpu-reclaim with the policy "park"
        sampler = ActivitySampler(NVMLReader(), interval=1, store=ActivityStore(work / "activity.sqlite"))
        audit = AuditLog(work / "gpu-audit.jsonl")
        hub = HubStandIn(client)
        r = Reclaimer(ReclaimPolicy(threshold_pct=5, timeout=T, grace=GRACE, action="park", max_parked=3600),
                      sampler, DockerCaller(), hub, audit, ReasonFile(work / "reasons.json"), work / "reclaim.json",
                      instance=INSTANCE, parked_file=work / "gpu-parked.json")
        exec_docker = DockerCaller(engine_client(timeout=900))
        checkpointer = ExecCheckpointer(exec_docker, command=(args.python, str(ROOT / "images/singleuser/gpu_park.py")),
                                        timeout_ms=10000)
        # at rest as NVML reads it (the Parker's reader): NVML's "used" counts the driver's reserved
        # memory (480 MiB on the H100 with driver 580), which nvidia-smi leaves out
        env = {"GPU_PARK_REST_MIB": str(args.nvml_rest + args.rest_slack_mib), "GPU_PARK_SETTLE_S": "30"}
        r.parker = parking.build_parker(env, work, sampler.reader, audit, hub, docker=exec_docker,
                                        checkpointer=checkpointer)
        outcomes = []
        original_park = r.parker.park

        async def park(*a_, **k):
            out = await original_park(*a_, **k)
            outcomes.append(out)
            return out
        r.parker.park = park
        t0, decisions = time.monotonic(), []
        step("gpu-reclaim's rounds")
        while time.monotonic() - t0 < T + GRACE + 120 and not outcomes:
            decisions += [(round(time.monotonic() - t0, 1), d.action) for d in await r.round()]
            await asyncio.sleep(1)
        row["reclaim_decisions"] = decisions
        if not outcomes:
            return {**row, "error": "gpu-reclaim did not park A", "audit": [e["action"] for e in audit.tail()]}
        out = outcomes[0]
        row["park"] = {"outcome": out.action, "detail": out.detail, "timings": out.timings,
                       "processes": (out.tool or {}).get("processes"),
                       "idle_to_parked_s": round(time.monotonic() - t0, 1)}
        if out.action != "parked":
            return {**row, "error": f"park: {out.action}: {out.detail}",
                    "audit": [(e["action"], e["detail"]) for e in audit.tail()], "stopped_instead": hub.stopped}
        parked_at = time.time()
        step("parked")
        await bounded("inspect A", a.container.reload, 30)
        row["container_status_parked"] = a.container.status
        row["mem_parked_mib"] = await bounded("nvidia-smi while parked", memory.used, 30)
        try:
            row["host_rss_parked_mib"] = await bounded("docker stats of the paused A", a.host_rss, 30)
        except TimeoutError as exc:
            row["host_rss_parked_mib"] = str(exc)
        row["mem_limit_parked"] = a.container.attrs["HostConfig"]["Memory"]
        step("gpu-reclaim's holders")
        row["gpu_free_for_reclaim"] = memory.uuid not in await r.read_holders()

        # the hub's resume (hub/hub_process/parking.py builds the same Parker): B holds the GPU -> held
        resumer = Parker(exec_docker, checkpointer, ParkedFile(work / "gpu-parked.json"), lambda uuid: None,
                         hub.stop_server, ParkSettings(), lock=asyncio.Lock())
        b = await bounded("B's container holds the GPU", lambda: b_holder(client, memory.uuid, a.binds(), args.python), 60)
        step("A's resume while B holds the GPU")
        held = await asyncio.wait_for(resumer.resume("park-proof-a", ""), 120)
        row["resume_while_b_holds"] = {"outcome": held.action, "detail": held.detail}
        row["user_b"] = await bounded("B allocates and runs the matmul", lambda: pp.user_b(0, gb, False), 330)
        if row["user_b"].get("tflops") and baseline.get("tflops"):
            row["user_b"]["vs_baseline"] = round(row["user_b"]["tflops"] / baseline["tflops"], 4)
        await asyncio.to_thread(b.remove, force=True)
        b = None

        resume_from = time.time()
        step("A's resume")
        back = await asyncio.wait_for(resumer.resume("park-proof-a", ""), 300)
        a.container.reload()
        row["resume"] = {"outcome": back.action, "detail": back.detail, "timings": back.timings,
                         "processes": (back.tool or {}).get("processes"), "container_status": a.container.status,
                         "mem_limit_resumed": a.container.attrs["HostConfig"]["Memory"]}
        if back.action != "resumed":
            return {**row, "error": f"resume: {back.action}: {back.detail}"}
        row["mem_resumed_mib"] = memory.used()
        verified = await bounded("A's checksum again", lambda: a.ask({"do": "verify", "from": parked_at + 0.1,
                                                                     "to": resume_from - 0.1}), 300)
        row.update(checksum_same=verified["checksum"] == ready["checksum"], note_same=verified["note"] == ready["note"],
                   ticks_while_parked=verified["ticks_while_parked"], verify_s=verified["verify_s"],
                   parked_for_s=round(resume_from - parked_at, 1))
        row["audit"] = [e["action"] for e in audit.tail()]
        row["ok"] = bool(row["checksum_same"] and row["note_same"] and row["ticks_while_parked"] == 0
                         and row["resume_while_b_holds"]["outcome"] == "held" and row["gpu_free_for_reclaim"]
                         and not hub.stopped)
        a.ask({"do": "exit"})
        return row
    except Exception as exc:  # noqa: BLE001 - the report says what broke; the other sizes still run
        import traceback
        return {**row, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    finally:
        if b is not None:
            b.remove(force=True)
        a.close()
        for c in client.containers.list(all=True, filters={"label": f"gpuhub.instance={INSTANCE}"}):
            c.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10")
    parser.add_argument("--out")
    parser.add_argument("--python", default=sys.executable, help="the Python in A's image (the host's, bound in)")
    parser.add_argument("--rest-slack-mib", type=int, default=256)
    args = parser.parse_args()
    # what park_proof.ContainerA reads of its arguments
    args.image, args.container_user, args.lock_timeout_ms, args.host_reserve_gb = "gpukit/hostroot:1", "1000:100", 10000, 8.0
    memory = pp.GPUMemory(0)
    rest = memory.used()
    args.nvml_rest = next(r.memory_used_mib for r in NVMLReader().read() if r.uuid == memory.uuid)
    report = {"what": "tests/gpu_host/park_reclaim_real.py: gpu-reclaim parks user A's container (policy park), "
                      "B holds the GPU (A's resume: held) and runs a matmul, A resumes through the hub's resume",
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
              "gpu": {"uuid": memory.uuid, "name": memory.name, "memory_total_mib": memory.total, "driver": memory.driver},
              "policy": {"timeout_s": T, "grace_s": GRACE, "action": "park", "interval_s": 1},
              "mem_rest_mib": rest, "mem_rest_nvml_mib": args.nvml_rest, "baseline": pp.user_b(0, 0, False), "sizes": []}
    try:
        import torch
        report["torch"] = torch.__version__
    except ImportError:
        pass
    for gb in [float(s) for s in args.sizes.split(",") if s.strip()]:
        print(f"[park-real] {gb:g} GB ...", file=sys.stderr, flush=True)
        report["sizes"].append(asyncio.run(one_size(gb, args, memory, rest, report["baseline"])))
        print(json.dumps(report["sizes"][-1])[:1500], file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    report["ok"] = all(r.get("ok") for r in report["sizes"] if "skipped" not in r) and \
        any("skipped" not in r for r in report["sizes"])
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a step past its bound leaves its thread behind: not waited for at exit
