"""Host health (hub/gpus/health.py, gate.py, doctor.py, nvml.py's health readings) on recorded
inputs: the engine's version/info of this test machine, toolkit versions, NVML readings."""
import json
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from hub.gpus import doctor, health
from hub.gpus.gate import HostGate, Refused
from hub.gpus.manager import GPUManager
from hub.gpus.model import GPU
from hub.gpus.nvml import NVMLReader

RECORDED = json.loads((Path(__file__).parent / "recorded" / "engine-fake-gpu-host.json").read_text())


def by_name(checks):
    return {c.name: c for c in checks}


def test_engine_checks_on_this_machines_engine():
    checks = by_name(health.engine_checks(RECORDED["version"], RECORDED["info"]))
    assert checks["engine.version"].status == "ok" and "26.1.5" in checks["engine.version"].message
    assert checks["engine.cdi"].status == "ok"
    assert checks["engine.live_restore"].status == "warn" and "live-restore" in checks["engine.live_restore"].fix


def test_engine_without_cdi_or_too_old_warns_with_the_fix():
    checks = by_name(health.engine_checks({"Version": "24.0.7"}, {"LiveRestoreEnabled": True}))
    assert checks["engine.version"].status == "warn" and "25" in checks["engine.version"].fix
    assert checks["engine.cdi"].status == "warn" and '"cdi": true' in checks["engine.cdi"].fix
    assert checks["engine.live_restore"].status == "ok"


@pytest.mark.parametrize("version, open_cves", [
    ("1.16.1", ["CVE-2024-0132", "CVE-2024-0133", "CVE-2025-23359", "CVE-2025-23266", "CVE-2025-23267", "CVE-2026-24260"]),
    ("1.17.3", ["CVE-2025-23359", "CVE-2025-23266", "CVE-2025-23267", "CVE-2026-24260"]),
    ("NVIDIA Container Toolkit CLI version 1.17.8\ncommit: f202b80a", ["CVE-2026-24260"]),
    ("1.19.0", ["CVE-2026-24260"]),
])
def test_toolkit_below_the_minimum_refuses_gpus_naming_each_cve_and_its_fix(version, open_cves):
    check = health.toolkit_check(version)
    assert check.status == "fail" and check.refuses == "gpus"
    assert check.data["cves"] == open_cves
    for cve in open_cves:
        assert cve in check.message
    assert "upgrade the NVIDIA Container Toolkit to 1.19.1" in check.fix and "GPU_TOOLKIT_OVERRIDE" in check.fix


def test_toolkit_override_minimum_and_unknown():
    assert health.toolkit_check("1.19.1").status == "ok"
    assert health.toolkit_check("1.20.0").data["cves"] == []
    overridden = health.toolkit_check("1.17.8", override=True)
    assert overridden.status == "warn" and not overridden.refuses and "CVE-2026-24260" in overridden.message
    lowered = health.toolkit_check("1.17.8", minimum="1.17.8")  # the admin's own minimum: a warning
    assert lowered.status == "warn" and "CVE-2026-24260" in lowered.message
    unknown = health.toolkit_check(None)
    assert unknown.status == "unknown" and not unknown.refuses


@pytest.mark.parametrize("driver_cuda, image_cuda, status", [
    ("13.0", "13.0", "ok"), ("13.1", "12.6", "ok"), ("12.8", "12.6", "ok"),
    ("12.2", "12.6", "warn"),  # minor-version compatibility
    ("12.8", "13.0", "fail"), ("11.8", "12.1", "fail"),
    (None, "13.0", "unknown"), ("12.8", None, "unknown"), ("12.8", "none", "ok"),
])
def test_driver_against_the_images_cuda(driver_cuda, image_cuda, status):
    check = health.cuda_check(driver_cuda, image_cuda, "gpuhub/pytorch-notebook:0.1.0", "570.86.15")
    assert check.status == status, check
    if status == "fail":
        assert check.refuses == "start" and "torch.cuda.is_available() would be False" in check.message
        assert "upgrade the NVIDIA driver" in check.fix and "TORCH_PACKAGES" in check.fix


HEALTHY = {"uuid": "GPU-0", "index": 0, "name": "NVIDIA H200", "lost": False, "ecc_uncorrected": 0,
           "ecc_corrected": 0, "retired_pending": False, "remap_pending": False, "remap_failure": False,
           "mig": [0, 0], "mig_instances": 0}


@pytest.mark.parametrize("changes, words", [
    ({"ecc_uncorrected": 3}, "3 uncorrected ECC errors"),
    ({"retired_pending": True}, "retired memory pages are pending"),
    ({"remap_failure": True}, "row remapping failed"),
    ({"remap_pending": True}, "remapped rows are pending"),
    ({"mig": [0, 1]}, "MIG mode change is pending"),
    ({"mig": [1, 1], "mig_instances": 0}, "no MIG instances"),
    ({"lost": True}, "GPU lost"),
])
def test_unhealthy_gpu_readings(changes, words):
    check = health.gpu_check({**HEALTHY, **changes})
    assert check.status == "fail" and check.refuses == "gpu:GPU-0" and words in check.message


def test_healthy_gpu_and_missing_readings():
    assert health.gpu_check(HEALTHY).status == "ok"
    assert health.gpu_check({**HEALTHY, "ecc_corrected": 12}).status == "warn"
    # A GPU without ECC or row remapping (NotSupported: None) is not unhealthy for it
    bare = {**HEALTHY, "ecc_uncorrected": None, "retired_pending": None, "remap_pending": None,
            "remap_failure": None, "mig": None}
    assert health.gpu_check(bare).status == "ok"
    assert health.gpu_check({**HEALTHY, "mig": [1, 1], "mig_instances": 2}).status == "ok"


def test_report_status_json_and_exit_codes():
    ok = health.report(RECORDED["version"], {**RECORDED["info"], "LiveRestoreEnabled": True}, "1.19.1", "1.19.1",
                       False, [HEALTHY], {"version": "570.86.15", "cuda": "12.8"}, "img", "12.6")
    assert ok.status == "ok" and ok.exit_code() == 0 and ok.exit_code(strict=True) == 0
    warn = health.report(RECORDED["version"], RECORDED["info"], None, "1.19.1", False, None, None, "img", None)
    assert warn.status == "warn" and warn.exit_code() == 0 and warn.exit_code(strict=True) == 1
    bad = health.report(RECORDED["version"], RECORDED["info"], "1.17.3", "1.19.1", False,
                        [HEALTHY, {**HEALTHY, "uuid": "GPU-1", "index": 1, "ecc_uncorrected": 1}],
                        {"version": "535.0", "cuda": "12.2"}, "img", "13.0")
    assert bad.status == "fail" and bad.exit_code() == 1
    assert [c.name for c in bad.refused("gpus")] == ["toolkit.cves"]
    assert [c.name for c in bad.refused("start")] == ["driver.cuda"]
    assert [c.refuses for c in bad.unhealthy_gpus()] == ["gpu:GPU-1"]
    data = json.loads(json.dumps(bad.to_json()))
    assert data["status"] == "fail" and {c["status"] for c in data["checks"]} >= {"ok", "warn", "fail"}
    assert "FAIL  toolkit.cves" in bad.text() and "fix: upgrade the NVIDIA Container Toolkit" in bad.text()


# ---- NVML readings ----------------------------------------------------------------------------

class HealthNVML(SimpleNamespace):
    """pynvml's calls for health readings and Xid events, over a list of devices (dicts; a
    missing key: NotSupported) and a queue of events (``feed``) that nvmlEventSetWait_v2
    delivers one by one, then times out as NVML does."""
    NVMLError = pynvml.NVMLError
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_MEMORY_ERROR_TYPE_CORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = \
        pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
    NVML_ERROR_TIMEOUT = pynvml.NVML_ERROR_TIMEOUT
    nvmlEventTypeXidCriticalError = pynvml.nvmlEventTypeXidCriticalError

    def __init__(self, devices):
        super().__init__(devices=devices, queue=[], waits=[], registered=[], freed=0, sets=0)

    def feed(self, events):
        """Events as NVML delivers them: {"gpu": index, "type": event type, "xid": Xid}."""
        self.queue += [SimpleNamespace(device=self.devices[e["gpu"]], eventType=e["type"], eventData=e["xid"],
                                       gpuInstanceId=e.get("instance", 0xFFFFFFFF), computeInstanceId=0xFFFFFFFF)
                       for e in events]

    def nvmlEventSetCreate(self):
        self.sets += 1
        return f"set-{self.sets}"

    def nvmlDeviceGetSupportedEventTypes(self, h): return self._get(h, "events")

    def nvmlDeviceRegisterEvents(self, h, types, event_set):
        self.registered.append((h["uuid"], types, event_set))

    def nvmlEventSetWait_v2(self, event_set, timeout_ms):
        self.waits.append(timeout_ms)
        if not self.queue:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        return self.queue.pop(0)

    def nvmlEventSetFree(self, event_set): self.freed += 1
    def nvmlDeviceGetIndex(self, h): return self.devices.index(h)

    def nvmlDeviceGetRetiredPages(self, h, cause):
        return self._get(h, "pages")[0 if cause == pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR else 1]

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlSystemGetDriverVersion(self): return "570.86.15"
    def nvmlSystemGetCudaDriverVersion_v2(self): return 12080
    def nvmlDeviceGetCount(self): return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        if self.devices[i] == "lost":
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return self.devices[i]

    def nvmlDeviceGetUUID(self, h): return h["uuid"]
    def nvmlDeviceGetName(self, h): return "NVIDIA H200"
    def nvmlDeviceGetMemoryInfo(self, h): return SimpleNamespace(total=1, used=0)

    def _get(self, h, key):
        if key not in h:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return h[key]

    def nvmlDeviceGetTotalEccErrors(self, h, kind, counter):
        assert counter == pynvml.NVML_VOLATILE_ECC
        return self._get(h, "ecc")[0 if kind == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED else 1]

    def nvmlDeviceGetRemappedRows(self, h): return self._get(h, "remap")
    def nvmlDeviceGetRetiredPagesPendingStatus(self, h): return self._get(h, "retired")
    def nvmlDeviceGetMigMode(self, h): return self._get(h, "mig")
    def nvmlDeviceGetMaxMigDeviceCount(self, h): return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, slot):
        if slot >= h.get("instances", 0):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return {"uuid": f"MIG-{slot}"}


def test_nvml_health_and_driver_readings():
    devices = [{"uuid": "GPU-0", "ecc": (0, 5), "remap": (0, 0, 0, 0), "retired": 0, "mig": (0, 0)},
               {"uuid": "GPU-1", "ecc": (2, 0), "remap": (0, 1, 1, 0), "mig": (1, 1), "instances": 3},
               {"uuid": "GPU-2"},  # a consumer GPU: no ECC, no row remapping, no MIG
               "lost"]
    reader = NVMLReader(HealthNVML(devices))
    assert reader.driver() == {"version": "570.86.15", "cuda": "12.8"}
    readings = reader.health()
    assert [r["uuid"] for r in readings] == ["GPU-0", "GPU-1", "GPU-2", "index-3"]
    statuses = [health.gpu_check(r).status for r in readings]
    assert statuses == ["warn", "fail", "ok", "fail"]
    assert readings[1]["mig_instances"] == 3 and readings[1]["remap_pending"] is True
    assert readings[2]["ecc_uncorrected"] is None and readings[2]["mig"] is None
    assert readings[3]["lost"] is True
    assert [r.get("xid_watch") for r in readings[:3]] == [False, False, False]  # no event support in these


XID_FEED = json.loads((Path(__file__).parent / "recorded" / "nvml-xid-events.json").read_text())


def test_xid_events_registered_once_and_read_without_blocking():
    nv = HealthNVML(XID_FEED["devices"] + [{"uuid": "GPU-consumer"}])  # a GPU without events
    reader = NVMLReader(nv, clock=lambda: 1_700_000_000.0)
    assert reader.xid_events(0.02) == []
    assert [r[0] for r in nv.registered] == [d["uuid"] for d in XID_FEED["devices"]]
    assert {r[1] for r in nv.registered} == {pynvml.nvmlEventTypeXidCriticalError}
    assert reader.xid_watched == {**{d["uuid"]: True for d in XID_FEED["devices"]}, "GPU-consumer": False}
    assert nv.waits == [20]  # one short wait, then NVML's timeout ends the poll
    nv.feed(XID_FEED["polls"][3])
    events = reader.xid_events(0.02)
    assert [(e.index, e.xid) for e in events] == [(0, 94), (0, 94), (1, 48)]
    assert events[0].uuid == XID_FEED["devices"][0]["uuid"] and events[0].gpu_instance is None
    assert nv.waits[-4:] == [20, 0, 0, 0]  # after the first event only what is queued already
    nv.feed([{"gpu": 0, "type": pynvml.nvmlEventTypeXidCriticalError, "xid": 79, "instance": 3},
             {"gpu": 0, "type": 1, "xid": 0}])  # another event type is skipped
    assert [(e.xid, e.gpu_instance) for e in reader.xid_events()] == [(79, 3)]
    assert nv.sets == 1  # registered once
    reader.close()
    assert nv.freed == 1 and reader.xid_watched == {}


def test_xid_events_where_nvml_has_none():
    nv = HealthNVML([{"uuid": "GPU-0"}])
    del HealthNVML.nvmlEventSetCreate  # an old pynvml: the class attribute goes for this test only
    try:
        reader = NVMLReader(nv)
        assert reader.xid_events(0.5) == [] and nv.waits == []
        assert reader.health()[0]["xid_watch"] is None
    finally:
        HealthNVML.nvmlEventSetCreate = _event_set_create


_event_set_create = HealthNVML.nvmlEventSetCreate


def test_health_readings_carry_the_xids_received_since_the_last_one():
    nv = HealthNVML(XID_FEED["devices"])
    reader = NVMLReader(nv, clock=lambda: 1_700_000_000.0)
    judged = []
    for poll in XID_FEED["polls"]:
        nv.feed(poll)
        judged.append([(c.status, c.message) for c in map(health.gpu_check, reader.health(0.01))])
    statuses = [[s for s, _ in gpus] for gpus in judged]
    assert statuses == [["ok", "ok"], ["ok", "fail"], ["ok", "ok"], ["fail", "fail"], ["warn", "ok"], ["ok", "ok"]]
    assert judged[0][0][1].endswith("healthy")  # the first poll registers; nothing yet
    assert "Xid 79 (GPU has fallen off the bus)" in judged[1][1][1]
    assert "Xid 13 (graphics engine exception" in judged[2][0][1] and "Xid 31" in judged[2][0][1]
    assert "Xid 94 (contained ECC error" in judged[3][0][1] and judged[3][0][1].count("Xid 94") == 1
    assert "Xid 48 (double-bit (uncorrectable) ECC error)" in judged[3][1][1]
    assert "Xid 150 (see NVIDIA's Xid catalogue)" in judged[4][0][1]


@pytest.mark.parametrize("xid", sorted(health.CRITICAL_XIDS))
def test_every_critical_xid_fails_the_gpu_and_names_it(xid):
    check = health.gpu_check({**HEALTHY, "xids": [{"xid": xid, "time": 1.0}]})
    assert check.status == "fail" and check.refuses == "gpu:GPU-0" and f"Xid {xid} (" in check.message


def test_xid_check_says_whether_xids_can_be_received():
    watched = [{**HEALTHY, "xid_watch": True, "xids": []}, {**HEALTHY, "uuid": "GPU-1", "index": 1, "xid_watch": True}]
    ok = health.xid_check(watched, 2.0)
    assert ok.status == "ok" and "listened for 2 s for Xid errors on 2 of 2 GPUs: none received" in ok.message
    partly = health.xid_check([watched[0], {**watched[1], "xid_watch": False}], 2.0)
    assert partly.status == "warn" and "GPU 1 cannot report them" in partly.message
    assert health.xid_check([{**HEALTHY, "xid_watch": None}]).status == "unknown"


# ---- the gate: refusals and automatic drains -----------------------------------------------------

def manager_with(tmp_path, uuids):
    gpus = [GPU(uuid=u, index=i, name="NVIDIA H200", memory_total_mib=143771) for i, u in enumerate(uuids)]
    return GPUManager(gpus, "nvml", "cdi", str(tmp_path / "intent.json"), "gpuhub")


def test_gate_refuses_all_gpus_below_the_toolkit_minimum(tmp_path):
    gate = HostGate("1.17.3", "1.19.1", False, str(tmp_path / "audit.jsonl"), reader=NVMLReader(HealthNVML([])))
    with pytest.raises(Refused) as exc:
        gate.before_gpu(manager_with(tmp_path, ["GPU-0"]), "img", None)
    assert "CVE-2025-23266 (fixed in 1.17.8)" in str(exc.value) and "1.19.1" in str(exc.value)
    overridden = HostGate("1.17.3", "1.19.1", True, str(tmp_path / "audit.jsonl"), reader=NVMLReader(HealthNVML([])))
    assert overridden.before_gpu(manager_with(tmp_path, ["GPU-0"]), "img", None) == []


def test_gate_refuses_a_start_the_driver_cannot_run(tmp_path):
    gate = HostGate("1.19.1", "1.19.1", False, str(tmp_path / "audit.jsonl"),
                    reader=NVMLReader(HealthNVML([{"uuid": "GPU-0"}])))
    with pytest.raises(Refused) as exc:
        gate.before_gpu(manager_with(tmp_path, ["GPU-0"]), "lab/notebook:1", "13.0")
    assert "CUDA 13.0" in str(exc.value) and "torch.cuda.is_available() would be False" in str(exc.value)
    assert gate.before_gpu(manager_with(tmp_path, ["GPU-0"]), "lab/notebook:1", "12.6") == []


def test_gate_drains_an_unhealthy_gpu_once_with_an_audit_entry(tmp_path):
    devices = [{"uuid": "GPU-0", "ecc": (0, 0)}, {"uuid": "GPU-1", "ecc": (4, 0)}]
    clock = iter(range(1_700_000_000, 1_800_000_000)).__next__
    gate = HostGate("1.19.1", "1.19.1", False, str(tmp_path / "audit.jsonl"), reader=NVMLReader(HealthNVML(devices)),
                    clock=clock)
    manager = manager_with(tmp_path, ["GPU-0", "GPU-1"])
    drained = gate.before_gpu(manager, "img", None)
    assert len(drained) == 1 and "4 uncorrected ECC errors" in drained[0]
    assert manager.allocator.intent.drained == {"GPU-1"}
    assert json.loads((tmp_path / "intent.json").read_text())["drained"] == ["GPU-1"]
    entry = json.loads((tmp_path / "audit.jsonl").read_text())
    assert entry["who"] == "hub" and entry["via"] == "health check" and entry["action"] == "drain"
    assert entry["gpu"] == "GPU-1" and entry["index"] == 1 and "reset it" in entry["detail"]
    assert gate.before_gpu(manager, "img", None) == []  # already drained: no second entry
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 1


def test_gate_drains_a_gpu_on_a_critical_xid_with_an_audit_entry_naming_it(tmp_path):
    nv = HealthNVML(XID_FEED["devices"])
    uuids = [d["uuid"] for d in XID_FEED["devices"]]
    gate = HostGate("1.19.1", "1.19.1", False, str(tmp_path / "audit.jsonl"), reader=NVMLReader(nv),
                    clock=lambda: 1_700_000_000.0)
    manager = manager_with(tmp_path, uuids)
    assert gate.before_gpu(manager, "img", None) == []  # registers; no Xid yet
    nv.feed(XID_FEED["polls"][2])  # a program's Xids 13 and 31: no drain
    assert gate.before_gpu(manager, "img", None) == [] and manager.allocator.intent.drained == set()
    nv.feed(XID_FEED["polls"][1])  # Xid 79 on GPU 1, between two starts
    drained = gate.before_gpu(manager, "img", None)
    assert len(drained) == 1 and "Xid 79 (GPU has fallen off the bus)" in drained[0]
    assert manager.allocator.intent.drained == {uuids[1]}
    entry = json.loads((tmp_path / "audit.jsonl").read_text())
    assert entry["action"] == "drain" and entry["gpu"] == uuids[1] and entry["xid"] == [79]
    assert entry["who"] == "hub" and "Xid 79" in entry["detail"]
    # The Xid was an event: once an admin undrains the reset GPU, the next start may use it
    manager.save_intent(manager.allocator.intent.without_drained(uuids[1]))
    assert gate.before_gpu(manager, "img", None) == [] and manager.allocator.intent.drained == set()


def test_gate_without_nvml_hands_out_and_retries_later(tmp_path):
    class NoNVML:
        def health(self):
            from hub.gpus.nvml import Unavailable
            raise Unavailable("no driver")

        def driver(self):
            raise AssertionError("not reached")

    now = [1000.0]
    gate = HostGate("", "1.19.1", False, str(tmp_path / "audit.jsonl"), reader=NoNVML(), clock=lambda: now[0])
    assert gate.toolkit.status == "unknown"
    assert gate.before_gpu(manager_with(tmp_path, ["GPU-0"]), "img", "13.0") == []  # nothing known: no refusal
    assert gate.gpu_health() is None and gate._nvml_down_until == 1300.0


# ---- doctor: the command ------------------------------------------------------------------

class FakeEngine:
    def version(self): return RECORDED["version"]
    def info(self): return RECORDED["info"]

    def inspect_image(self, image):
        return {"Config": {"Labels": {"gpuhub.torch.cuda": "13.0"}}}


def test_doctor_json_and_exit_code(capsys, monkeypatch):
    monkeypatch.setattr(doctor, "nvml_facts", lambda reader=None, xid_wait=0: (
        [HEALTHY, {**HEALTHY, "uuid": "GPU-1", "index": 1, "retired_pending": True}], {"version": "580.65", "cuda": "13.0"}))
    monkeypatch.setattr(doctor, "engine_facts", lambda client=None: (RECORDED["version"], RECORDED["info"], ""))
    result = doctor.diagnose("img", client=FakeEngine(), toolkit="1.18.0")
    names = by_name(result.checks)
    assert names["driver.cuda"].status == "ok" and names["gpu.GPU-1"].status == "fail"
    assert names["toolkit.cves"].data["cves"] == ["CVE-2026-24260"]
    assert result.exit_code() == 1


def test_doctor_without_engine_or_nvml_says_unknown(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "engine_facts", lambda client=None: ({}, {}, "DockerException: no socket"))
    monkeypatch.setattr(doctor, "nvml_facts", lambda reader=None, xid_wait=0: (None, None))
    monkeypatch.setenv("NVIDIA_CTK_VERSION", "1.19.1")
    from hub.service_process.console import cli
    code = cli.main(["doctor", "--json", "--image", ""])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "ok"
    assert [c["name"] for c in out["checks"]] == ["engine", "toolkit.cves", "driver.cuda", "gpus"]
    assert "no socket" in out["checks"][0]["message"]
