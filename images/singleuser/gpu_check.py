#!/usr/bin/env python3
"""gpu-check: what PyTorch in this container sees of the GPU, and why not when it sees none.

Needs no nvidia-smi. Prints torch version, CUDA runtime, cuDNN, device count/name/capability
and a verdict; when CUDA is unavailable the verdict names the most likely cause.

    gpu-check           human-readable report (exit 0 if CUDA works, 1 if not)
    gpu-check --json    the same as one JSON object
    gpu-check --bench   also time a matmul (bf16 8192x8192 on a GPU, fp32 on the CPU)
                        and a host-to-device copy
"""
import argparse
import ctypes
import glob
import json
import os
import sys
import time


def driver_cuda_version():
    """CUDA version the host driver supports (e.g. 12080), or None when libcuda is absent."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value


def format_cuda_version(v):
    return f"{v // 1000}.{(v % 1000) // 10}" if v else None


def collect():
    """Everything the verdict needs, as plain data (so diagnose() is testable without torch)."""
    import torch

    info = {
        "torch_version": torch.__version__,
        "cuda_runtime": torch.version.cuda,  # None on a CPU-only build
        "cudnn_version": None,
        "cuda_available": False,
        "device_count": 0,
        "devices": [],
        "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        "device_nodes": sorted(glob.glob("/dev/nvidia[0-9]*")),
        "driver_cuda_version": format_cuda_version(driver_cuda_version()),
        "shared_by": int(os.environ.get("GPUHUB_GPU_SHARED_BY") or 1),  # set by the hub's spawner
        "error": None,
    }
    try:
        if info["cuda_runtime"]:  # the cuDNN that ships with torch, loadable without a GPU
            info["cudnn_version"] = torch.backends.cudnn.version()
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            info["device_count"] = torch.cuda.device_count()
            for i in range(info["device_count"]):
                p = torch.cuda.get_device_properties(i)
                info["devices"].append({
                    "index": i,
                    "name": p.name,
                    "capability": f"{p.major}.{p.minor}",
                    "memory_total_mib": p.total_memory // 2**20,
                    "uuid": str(getattr(p, "uuid", "")) or None,
                })
    except Exception as exc:  # torch raises on broken drivers; that is a finding, not a crash
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def diagnose(info):
    """Return (ok, verdict) for the data collect() gathered."""
    if info["cuda_available"] and info["device_count"] > 0:
        names = ", ".join(d["name"] for d in info["devices"])
        return True, f"CUDA is available: {info['device_count']} GPU(s): {names}"
    if not info["cuda_runtime"]:
        return False, ("CUDA is NOT available: this PyTorch is a CPU-only build "
                       f"({info['torch_version']}). Use the image built with the CUDA build of torch.")
    if info["nvidia_visible_devices"] in (None, "", "void", "none") and not info["device_nodes"]:
        return False, ("CUDA is NOT available: no GPU was given to this container (it was started "
                       "without a GPU device request, i.e. without --gpus or a CDI device). "
                       "Pick a profile with a GPU, or ask an admin whether one is free.")
    if info["driver_cuda_version"] is None:
        return False, ("CUDA is NOT available: a GPU was requested but the NVIDIA driver library "
                       "(libcuda.so.1) is not in the container. On the host, install the NVIDIA "
                       "driver and the NVIDIA Container Toolkit (or generate its CDI spec with "
                       "`nvidia-ctk cdi generate`), with the 'compute,utility' capabilities.")
    driver, runtime = info["driver_cuda_version"], info["cuda_runtime"]
    if _version_tuple(driver) < _version_tuple(runtime):
        return False, (f"CUDA is NOT available: the host driver supports CUDA {driver} but this "
                       f"PyTorch needs CUDA {runtime} (the driver must be at least as new as the "
                       "runtime). Upgrade the host's NVIDIA driver, or use a torch built for an "
                       "older CUDA.")
    detail = f" ({info['error']})" if info["error"] else ""
    return False, ("CUDA is NOT available although a driver (CUDA "
                   f"{driver}) and GPU device nodes are present{detail}. Check `dmesg` on the host "
                   "for Xid errors and that the GPU is not in an exclusive-process mode held by "
                   "another container.")


def _version_tuple(v):
    return tuple(int(x) for x in str(v).split(".")[:2])


def bench(info):
    """Matmul throughput and host-to-device bandwidth on the device torch would use."""
    import torch

    on_gpu = info["cuda_available"]
    device = torch.device("cuda" if on_gpu else "cpu")
    n, dtype = (8192, torch.bfloat16) if on_gpu else (1024, torch.float32)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(10 if on_gpu else 2):  # warm up: kernels chosen, clocks up
        a @ b
    sync()
    iters = 200 if on_gpu else 5
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync()
    seconds = (time.perf_counter() - t0) / iters
    result = {"device": str(device), "matmul_n": n, "matmul_dtype": str(dtype).split(".")[-1],
              "matmul_tflops": round(2 * n**3 / seconds / 1e12, 3)}
    if on_gpu:
        host = torch.empty(256 * 2**20, dtype=torch.uint8).pin_memory()
        host.to(device, non_blocking=True)
        sync()
        t0 = time.perf_counter()
        for _ in range(10):
            host.to(device, non_blocking=True)
        sync()
        result["h2d_gib_per_s"] = round(10 * host.numel() / (time.perf_counter() - t0) / 2**30, 2)
    return result


def report(info, ok, verdict):
    lines = [
        "=== GPU check ===",
        f"PyTorch version:         {info['torch_version']}",
        f"CUDA runtime (torch):    {info['cuda_runtime'] or 'none (CPU-only build)'}",
        f"Driver supports CUDA:    {info['driver_cuda_version'] or 'no driver library in container'}",
        f"cuDNN version:           {info['cudnn_version'] or 'n/a'}",
        f"CUDA available:          {info['cuda_available']}",
        f"GPU count:               {info['device_count']}",
        f"NVIDIA_VISIBLE_DEVICES:  {info['nvidia_visible_devices'] or '(unset)'}",
    ]
    for d in info["devices"]:
        lines.append(f"GPU {d['index']}: {d['name']}, compute capability {d['capability']}, "
                     f"{d['memory_total_mib']} MiB" + (f", {d['uuid']}" if d.get("uuid") else ""))
    if info.get("shared_by", 1) > 1:
        lines.append(f"Shared GPU:              up to {info['shared_by']} servers use this GPU at once; its "
                     "memory is not divided between them: free what you do not need "
                     "(del tensors, torch.cuda.empty_cache()) and expect others' load")
    lines.append(("OK: " if ok else "PROBLEM: ") + verdict)
    if "bench" in info:
        lines.append(f"Benchmark: {json.dumps(info['bench'])}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--bench", action="store_true", help="also run a short benchmark")
    args = parser.parse_args(argv)
    info = collect()
    ok, verdict = diagnose(info)
    info["ok"], info["verdict"] = ok, verdict
    if args.bench:
        info["bench"] = bench(info)
    print(json.dumps(info) if args.json else report(info, ok, verdict))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
