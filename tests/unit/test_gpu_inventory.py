"""GPU discovery (hub.gpus.inventory): NVML, CDI specs in the formats we meet, static lists."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from hub.gpus import inventory
from hub.gpus.inventory import discover, from_cdi, from_yaml
from hub.gpus.model import GPU
from hub.gpus.nvml import discover_gpus as from_nvml

ROOT = Path(__file__).resolve().parents[2]
# The shared kit where .ci/run finds it: ${SHARED_DIR:-../shared}, relative to the checkout
SHARED_DIR = (ROOT / (os.environ.get("SHARED_DIR") or "../shared")).resolve()
FAKE_GPUS_SH = SHARED_DIR / "engine" / "fake-gpus.sh"


def fake_uuid(i: int) -> str:
    return f"GPU-fa4e0000-0000-4000-8000-{i:012d}"


def fake_spec(n: int) -> str:
    """/etc/cdi/fake-nvidia.yaml exactly as fake-gpus.sh writes it."""
    lines = ['cdiVersion: "0.6.0"', "kind: nvidia.com/gpu", "devices:"]
    for i in range(n):
        uuid = fake_uuid(i)
        for name in (f'"{i}"', uuid):
            lines += [f"- name: {name}", "  containerEdits:",
                      f"    env: [FAKE_GPU_UUID={uuid}]",
                      f"    deviceNodes: [{{path: /dev/nvidia{i}, hostPath: /dev/null}}]"]
    lines += ["containerEdits:", "  env: [NVIDIA_VISIBLE_DEVICES=void]"]
    return "\n".join(lines) + "\n"


def gpukit_spec(gpus: list[dict]) -> str:
    """/etc/cdi/nvidia.yaml as gpu-kit's start-docker.sh writes it for real GPUs."""
    spec = ['cdiVersion: "0.6.0"', "kind: nvidia.com/gpu", "devices:"]
    for g in gpus:
        for name in (str(g["index"]), g["uuid"]):
            spec += [f'- name: "{name}"', "  containerEdits:",
                     f'    deviceNodes: [{{path: /dev/nvidia{g["index"]}}}]']
    spec += ["containerEdits:",
             "  env: [NVIDIA_VISIBLE_DEVICES=void, LD_LIBRARY_PATH=/usr/local/nvidia/lib64]",
             "  deviceNodes: [{path: /dev/nvidiactl}, {path: /dev/nvidia-uvm}, "
             "{path: /dev/nvidia-uvm-tools}]",
             "  mounts:",
             "  - {hostPath: /usr/local/nvidia, containerPath: /usr/local/nvidia, "
             "options: [ro, nosuid, nodev, bind]}"]
    return "\n".join(spec) + "\n"


# nvidia-ctk cdi generate --device-name-strategy=index --device-name-strategy=uuid, on a host
# whose GPU 1 is split into two MIG instances (names like 1:0 come unquoted from nvidia-ctk).
CTK_GPU0 = "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"
CTK_GPU1 = "GPU-8a3c1f0e-9d1b-2e4f-a5b6-c7d8e9f0a1b2"
CTK_MIG0 = "MIG-1f2e3d4c-5b6a-5978-8a9b-0c1d2e3f4a5b"
CTK_MIG1 = "MIG-6a7b8c9d-0e1f-5a2b-9c3d-4e5f6a7b8c9d"
NVIDIA_CTK_SPEC = f"""---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: {CTK_GPU0}
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
- name: {CTK_GPU1}
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
- name: 1:0
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
    - path: /dev/nvidia-caps/nvidia-cap21
    - path: /dev/nvidia-caps/nvidia-cap22
- name: {CTK_MIG0}
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
    - path: /dev/nvidia-caps/nvidia-cap21
    - path: /dev/nvidia-caps/nvidia-cap22
- name: 1:1
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
    - path: /dev/nvidia-caps/nvidia-cap30
    - path: /dev/nvidia-caps/nvidia-cap31
- name: {CTK_MIG1}
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
    - path: /dev/nvidia-caps/nvidia-cap30
    - path: /dev/nvidia-caps/nvidia-cap31
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/nvidia1
    - path: /dev/nvidia-caps/nvidia-cap21
    - path: /dev/nvidia-caps/nvidia-cap22
    - path: /dev/nvidia-caps/nvidia-cap30
    - path: /dev/nvidia-caps/nvidia-cap31
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
  - path: /dev/nvidia-uvm
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args:
    - nvidia-ctk
    - hook
    - update-ldcache
    - --folder
    - /usr/lib/x86_64-linux-gnu
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    options:
    - ro
    - nosuid
    - nodev
    - bind
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


# --- CDI -----------------------------------------------------------------------------------
def test_fake_spec_of_four_gpus(tmp_path):
    found = from_cdi([str(write(tmp_path, "fake-nvidia.yaml", fake_spec(4)))])
    assert found == [GPU(fake_uuid(i), i, "GPU") for i in range(4)]


@pytest.mark.skipif(not FAKE_GPUS_SH.exists(),
                    reason=f"the shared fake-GPU kit is not here: no {FAKE_GPUS_SH} "
                           "(SHARED_DIR, default ../shared relative to the checkout, as in .ci/run)")
def test_inline_fake_spec_matches_fake_gpus_sh():
    """Run the script's own spec-writing block, so this file notices when the kit changes."""
    block = re.search(r"\n(\{\n.*?\n\}) > /etc/cdi/fake-nvidia.yaml", FAKE_GPUS_SH.read_text(),
                      re.S).group(1)
    out = subprocess.run(["bash", "-c", f"set -euo pipefail; n=4\n{block}"], check=True,
                         capture_output=True, text=True).stdout
    assert out == fake_spec(4)


def test_gpukit_spec_takes_index_from_the_index_named_device(tmp_path):
    real = [{"index": 0, "uuid": "GPU-f00d0000-aaaa-bbbb-cccc-000000000001"},
            {"index": 1, "uuid": "GPU-0bad0000-aaaa-bbbb-cccc-000000000002"}]
    found = from_cdi([str(write(tmp_path, "nvidia.yaml", gpukit_spec(real)))])
    assert [(g.index, g.uuid, g.parent_uuid) for g in found] == [
        (0, real[0]["uuid"], None), (1, real[1]["uuid"], None)]


def test_nvidia_ctk_spec_with_mig(tmp_path):
    found = from_cdi([str(write(tmp_path, "nvidia.yaml", NVIDIA_CTK_SPEC))])
    assert found == [GPU(CTK_GPU0, 0, "GPU"),
                     GPU(CTK_MIG0, 1, "MIG", parent_uuid=CTK_GPU1),
                     GPU(CTK_MIG1, 1, "MIG", parent_uuid=CTK_GPU1)]  # GPU 1 itself is split


def test_index_name_beats_the_device_node_number(tmp_path):
    spec = """kind: nvidia.com/gpu
devices:
- {name: "0", containerEdits: {deviceNodes: [{path: /dev/nvidia3}]}}
- {name: GPU-aaaa, containerEdits: {deviceNodes: [{path: /dev/nvidia3}]}}
- {name: GPU-bbbb, containerEdits: {deviceNodes: [{path: /dev/nvidia7}]}}
"""
    found = from_cdi([str(write(tmp_path, "x.yaml", spec))])
    assert [(g.uuid, g.index) for g in found] == [("GPU-aaaa", 0), ("GPU-bbbb", 7)]


def test_json_spec_in_var_run(tmp_path):
    spec = {"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu", "devices": [
        {"name": "GPU-cafe", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia2"}]}}]}
    found = from_cdi([str(tmp_path / "etc"), str(write(tmp_path / "run", "gpu.json",
                                                      json.dumps(spec)))])
    assert found == [GPU("GPU-cafe", 2)]


def test_index_only_spec_is_not_enough(tmp_path, caplog):
    spec = ('kind: nvidia.com/gpu\ndevices:\n'
            '- {name: "0", containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}}\n')
    assert from_cdi([str(write(tmp_path, "x.yaml", spec))]) is None
    assert "device-name-strategy=uuid" in caplog.text


def test_other_kinds_broken_files_and_duplicates(tmp_path):
    write(tmp_path / "a", "0-broken.yaml", "kind: [nvidia.com/gpu\n")
    write(tmp_path / "a", "1-other.yaml", "kind: vendor.com/fpga\ndevices:\n- name: GPU-nope\n")
    write(tmp_path / "a", "2-notes.txt", fake_spec(1))  # not a spec file name
    write(tmp_path / "a", "3-fake.yaml", fake_spec(2))
    write(tmp_path / "b", "fake.yaml", fake_spec(3))  # GPU 0 and 1 again, plus GPU 2
    found = from_cdi([str(tmp_path / "a"), str(tmp_path / "b")])
    assert [g.uuid for g in found] == [fake_uuid(i) for i in range(3)]


def test_no_spec_dirs_means_none(tmp_path):
    assert from_cdi([str(tmp_path / "missing"), str(tmp_path)]) is None
    assert from_cdi(str(write(tmp_path / "one", "f.yaml", fake_spec(1)))) == [GPU(fake_uuid(0), 0)]


# --- static list ---------------------------------------------------------------------------
def test_static_list():
    text = """gpus:
- {uuid: GPU-aaaa, index: 0, name: NVIDIA A100, memory_total_mib: 40960}
- {uuid: MIG-bbbb, index: 1, parent_uuid: GPU-cccc}
- {uuid: MIG-dddd, index: 1, parent_uuid: GPU-cccc}
"""
    assert from_yaml(text) == [GPU("GPU-aaaa", 0, "NVIDIA A100", 40960),
                               GPU("MIG-bbbb", 1, "GPU", None, "GPU-cccc"),
                               GPU("MIG-dddd", 1, "GPU", None, "GPU-cccc")]


def test_static_list_reads_the_kit_inventories():
    """/etc/fake-gpus.json and /etc/gpukit-gpus.json (with its extra 'driver' key) load as is."""
    data = {"gpus": [{"index": 0, "uuid": fake_uuid(0), "name": "Fake GPU",
                      "memory_total_mib": 81559, "driver": "550.54.15"}]}
    assert from_yaml(json.dumps(data)) == [GPU(fake_uuid(0), 0, "Fake GPU", 81559)]
    assert from_yaml("gpus: []") == []


@pytest.mark.parametrize("text, message", [
    ("gpus:\n- {index: 0, uuid: GPU-a}\n- {index: 1}\n",
     r"gpus\[1\]: missing or bad 'uuid'.*nvidia-smi -L"),
    ("gpus:\n- {index: 0, uuid: '0'}\n", r"gpus\[0\]: missing or bad 'uuid' \('0'\)"),
    ("gpus:\n- {index: 0, uuid: GPU-a}\n- {index: 1, uuid: GPU-a}\n",
     r"gpus\[1\]: uuid GPU-a is already listed at gpus\[0\]; list each GPU once"),
    ("gpus:\n- {index: 0, uuid: GPU-a}\n- {index: 0, uuid: GPU-b}\n",
     r"gpus\[1\] \(GPU-b\): index 0 is already used by gpus\[0\]; give each GPU its own index"),
    ("gpus:\n- {uuid: GPU-a}\n", r"gpus\[0\] \(GPU-a\): missing or bad 'index'"),
    ("gpus:\n- {uuid: GPU-a, index: -1}\n", r"bad 'index' \(-1\)"),
    ("gpus:\n- {uuid: GPU-a, index: true}\n", r"bad 'index' \(True\)"),
    ("gpus:\n- {uuid: GPU-a, index: 0, memory_total_mib: 80GB}\n", r"'memory_total_mib' must be"),
    ("gpus:\n- GPU-a\n", r"gpus\[0\] must be a mapping"),
    ("- {uuid: GPU-a, index: 0}\n", r"list under 'gpus'"),
    ("", r"list under 'gpus'"),
    ("gpus: [\n", r"not valid YAML"),
])
def test_static_list_errors_name_the_entry_and_the_fix(text, message):
    with pytest.raises(ValueError, match=message):
        from_yaml(text)


# --- NVML ----------------------------------------------------------------------------------
def test_nvml_without_a_driver_returns_none(monkeypatch):
    def no_library():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: pytest.fail("shut down, never started"))
    assert from_nvml() is None


def test_nvml_without_the_package_returns_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert from_nvml() is None


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA driver")
def test_real_nvml_on_a_machine_without_gpus():
    assert from_nvml() is None


class FakeNVML(SimpleNamespace):
    """Just the pynvml calls from_nvml makes, for a host with a whole GPU and a MIG GPU."""

    NVMLError = pynvml.NVMLError
    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(self, devices):
        super().__init__(devices=devices, shut=False)

    def nvmlInit(self): pass
    def nvmlShutdown(self): self.shut = True
    def nvmlDeviceGetCount(self): return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        if self.devices[i] == "lost":
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return self.devices[i]

    def nvmlDeviceGetUUID(self, h): return h["uuid"].encode()  # older pynvml: bytes
    def nvmlDeviceGetName(self, h): return h["name"]
    def nvmlDeviceGetMemoryInfo(self, h): return SimpleNamespace(total=h["mib"] * 1024 * 1024)

    def nvmlDeviceGetMigMode(self, h):
        if "migs" not in h:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, h): return len(h["migs"])

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, slot):
        if h["migs"][slot] is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return h["migs"][slot]


def test_nvml_lists_whole_gpus_and_mig_instances(monkeypatch):
    whole = {"uuid": "GPU-0000", "name": "NVIDIA H100 80GB HBM3", "mib": 81559}
    mig_a = {"uuid": "MIG-aaaa", "name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "mib": 4864}
    mig_b = {"uuid": "MIG-bbbb", "name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "mib": 19968}
    split = {"uuid": "GPU-1111", "name": "NVIDIA A100-SXM4-40GB", "mib": 40960,
             "migs": [mig_a, None, mig_b]}
    empty = {"uuid": "GPU-2222", "name": "NVIDIA A100-SXM4-40GB", "mib": 40960, "migs": [None]}
    nvml = FakeNVML([whole, split, "lost", empty])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert from_nvml() == [
        GPU("GPU-0000", 0, "NVIDIA H100 80GB HBM3", 81559),
        GPU("MIG-aaaa", 1, "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864, parent_uuid="GPU-1111"),
        GPU("MIG-bbbb", 1, "NVIDIA A100-SXM4-40GB MIG 3g.20gb", 19968, parent_uuid="GPU-1111"),
    ]  # the lost GPU and the MIG GPU without instances offer nothing
    assert nvml.shut


# --- discover ------------------------------------------------------------------------------
STATIC = "gpus: [{uuid: GPU-5747, index: 0}]"


def test_discover_prefers_nvml(monkeypatch, tmp_path):
    monkeypatch.setattr(inventory, "discover_gpus", lambda: [GPU("GPU-nvml", 0)])
    cdi = write(tmp_path, "f.yaml", fake_spec(2))
    assert discover(STATIC, cdi_dirs=[str(cdi)]) == ([GPU("GPU-nvml", 0)], "nvml")


def test_discover_falls_back_to_cdi_then_static_then_none(monkeypatch, tmp_path):
    monkeypatch.setattr(inventory, "discover_gpus", lambda: None)
    cdi = write(tmp_path / "cdi", "f.yaml", fake_spec(2))
    empty = str(tmp_path / "empty")
    assert discover(STATIC, cdi_dirs=[str(cdi)]) == ([GPU(fake_uuid(0), 0), GPU(fake_uuid(1), 1)],
                                                     "cdi")
    assert discover(STATIC, cdi_dirs=[empty]) == ([GPU("GPU-5747", 0)], "static")
    assert discover(None, cdi_dirs=[empty]) == ([], "none")
    with pytest.raises(ValueError, match="missing or bad 'uuid'"):
        discover("gpus: [{index: 0}]", cdi_dirs=[empty])
