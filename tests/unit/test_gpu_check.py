"""gpu-check's verdicts, from the data it collects (no torch needed)."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "gpu_check", Path(__file__).resolve().parents[2] / "images/singleuser/gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def info(**overrides):
    base = {"torch_version": "2.14.1+cu130", "cuda_runtime": "13.0", "cudnn_version": 92400,
            "cuda_available": False, "device_count": 0, "devices": [], "nvidia_visible_devices": "void",
            "device_nodes": [], "driver_cuda_version": None, "error": None}
    return {**base, **overrides}


@pytest.mark.parametrize("overrides,cause", [
    ({"torch_version": "2.13.0+cpu", "cuda_runtime": None}, "CPU-only build"),
    ({}, "no GPU was given to this container"),
    ({"nvidia_visible_devices": None}, "no GPU was given to this container"),
    ({"device_nodes": ["/dev/nvidia0"]}, "libcuda.so.1"),
    ({"nvidia_visible_devices": "GPU-1"}, "libcuda.so.1"),
    ({"device_nodes": ["/dev/nvidia0"], "driver_cuda_version": "12.4"}, "driver supports CUDA 12.4 but this PyTorch needs CUDA 13.0"),
    ({"device_nodes": ["/dev/nvidia0"], "driver_cuda_version": "13.0", "error": "RuntimeError: boom"}, "RuntimeError: boom"),
])
def test_verdict_names_the_likely_cause(overrides, cause):
    ok, verdict = gpu_check.diagnose(info(**overrides))
    assert not ok and verdict.startswith("CUDA is NOT available") and cause in verdict


def test_verdict_when_cuda_works():
    ok, verdict = gpu_check.diagnose(info(
        cuda_available=True, device_count=1, driver_cuda_version="13.0",
        devices=[{"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_total_mib": 81559}]))
    assert ok and "1 GPU(s): NVIDIA H100 80GB HBM3" in verdict


def test_driver_version_format():
    assert gpu_check.format_cuda_version(12080) == "12.8"
    assert gpu_check.format_cuda_version(13000) == "13.0"
    assert gpu_check.format_cuda_version(None) is None


def test_newer_minor_driver_is_fine():
    assert gpu_check._version_tuple("12.10") > gpu_check._version_tuple("12.9")


def test_report_says_when_the_gpu_is_shared():
    shared = gpu_check.report(info(shared_by=4), False, "x")
    assert "up to 4 servers use this GPU at once" in shared and "not divided" in shared
    assert "Shared GPU" not in gpu_check.report(info(), False, "x")
