"""The bf16 matmul benchmark of the whole-stack run (tests/gpu_host/stack.py), the same code on
the host and in a user's kernel: stack.py runs this file on the host and sends its source to
each kernel, which calls the same functions on the one GPU it sees.

    python3 tests/gpu_host/matmul.py          every GPU the host sees, one JSON line each
"""
import json
import time

N = 8192  # bf16 8192x8192 @ 8192x8192: 1.1 TFLOP, about 1.5 ms on an H200
WARMUP = 10
ITERS = 200  # ~0.3 s a timing: long enough that clock ramps and hiccups average out
REPS = 5


def bench(device: int = 0, n: int = N, iters: int = ITERS, reps: int = REPS) -> dict:
    """TFLOP/s of ``reps`` timings of ``iters`` back-to-back matmuls (CUDA events); the best
    one is the figure, all of them are kept."""
    import torch

    with torch.cuda.device(device):
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(WARMUP):
            a @ b
        torch.cuda.synchronize()
        rates = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                a @ b
            end.record()
            end.synchronize()
            rates.append(2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12)
        del a, b
        torch.cuda.empty_cache()
    return {"tflops": round(max(rates), 1), "tflops_all": [round(r, 1) for r in rates], "n": n,
            "dtype": "bfloat16", "iters": iters}


def load(seconds: float, device: int = 0, n: int = N) -> dict:
    """Keep the GPU busy with matmuls for about ``seconds`` (for the console's utilisation)."""
    import torch

    with torch.cuda.device(device):
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        done, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            for _ in range(20):
                a @ a
            torch.cuda.synchronize()
            done += 20
        del a
        torch.cuda.empty_cache()
    return {"matmuls": done, "seconds": round(time.monotonic() - t0, 2)}


def sees() -> dict:
    """What this process sees: its GPUs by UUID (torch), device nodes, the fake-GPU marker."""
    import glob
    import os

    info = {"device_nodes": sorted(os.path.basename(p) for p in glob.glob("/dev/nvidia[0-9]*")),
            "fake_gpu_uuid": os.environ.get("FAKE_GPU_UUID"),
            "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch": None, "cuda_available": False, "device_count": 0, "uuids": [], "names": []}
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        info["device_count"] = torch.cuda.device_count()
        props = [torch.cuda.get_device_properties(i) for i in range(info["device_count"])]
        info["uuids"] = [f"GPU-{p.uuid}" for p in props]
        info["names"] = [p.name for p in props]
    return info


if __name__ == "__main__":
    import torch

    for i in range(torch.cuda.device_count()):
        uuid = f"GPU-{torch.cuda.get_device_properties(i).uuid}"
        print(json.dumps({"index": i, "uuid": uuid, **bench(i)}), flush=True)
