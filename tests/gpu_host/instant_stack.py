#!/usr/bin/env python3
"""The first answer of a notebook's kernel on a GPU host, through the whole stack (issue 28's
measure on the lent GPU machine): the real hub and spawner, configurable-http-proxy, the
single-user server with the warm kernel (images/singleuser/gpuhub_warm, in the stack's image),
the host's PyTorch with CUDA.

One sample: a server starts through the hub's REST API; when it is ready (and, for a server
started ahead of its person, when its spare kernel is ready, as it is when the person comes
minutes after a reservation's pre-start), a notebook opens as JupyterLab opens one
(``POST api/sessions``, then the kernel's websocket) and runs

    import torch; x = torch.ones(1024, device="cuda"); print(torch.cuda.get_device_name(0), float(x.sum()))

Timed: notebook open -> its first output (the issue's "first answer including torch.cuda work
after the notebook opens"), and the API call -> that output. Variants alternate, the order
reversed every other round:
  - ``cold``: the warm kernel off (users cold-*): the kernel starts for the notebook and imports
    torch, then CUDA starts;
  - ``ahead``: a server started ahead of its person (users ahead-*: GPUDockerSpawner.started_ahead,
    as the hub's reservation pre-start sets it): the spare kernel starts with the server and imports
    torch; the notebook takes it; CUDA starts on the first CUDA call (a spare holds no GPU memory);
  - ``click``: the warm kernel on, server started on the click: no JupyterLab in this image, so no
    page starts the spare (the quiet after JupyterLab's page does, in the real image); the notebook
    opens at once, as ``cold`` (it shows what a click costs without a page).
Run after the stack's `prepare` (tests/gpu_host/stack.py):

    python3 tests/gpu_host/instant_stack.py --samples 5       (OUT set: $OUT/instant_stack.json)

Dry run on fake GPUs (GPUHOST_LOCAL=1): the code runs without CUDA (``torch`` if importable, no
device work).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stack as st  # noqa: E402

CODE = ('import torch; x = torch.ones(1024, device="cuda"); '
        'print(torch.cuda.get_device_name(0), float(x.sum()), torch.cuda.memory_allocated())')
CODE_LOCAL = "import json; print('no CUDA here', json.dumps(1024.0))"
VARIANTS = ("cold", "ahead", "click")


def spare_ready(kernel: st.Kernel, timeout: float = 120) -> dict:
    t0 = time.monotonic()
    status: dict = {}
    while time.monotonic() - t0 < timeout:
        r = kernel.s.get(kernel.base + "api/gpuhub/warm-kernel", timeout=10)
        status = r.json() if r.ok else {"status": r.status_code}
        if (status.get("spare") or {}).get("ready"):
            return status
        time.sleep(0.1)
    raise TimeoutError(f"no ready spare after {timeout} s: {status}")


def open_notebook(kernel: st.Kernel, path: str) -> dict:
    """As JupyterLab opens a notebook: a session for its path, with a new python3 kernel."""
    r = kernel.s.post(kernel.base + "api/sessions", timeout=120, json={
        "path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}})
    if r.status_code != 201:
        raise RuntimeError(f"session for {kernel.user}: {r.status_code} {r.text[:300]}")
    session = r.json()
    kernel.id = session["kernel"]["id"]
    kernel.connect()
    return session


def one_sample(stack: st.Stack, variant: str, i: int) -> dict:
    user = f"{variant}-{i}"
    row: dict = {"variant": variant, "user": user}
    stack.hub.api("POST", f"/users/{user}")
    token = stack.hub.token_for(user)
    t_api = time.monotonic()
    code, message = stack.hub.start(user)
    if code not in (201, 202):
        return {**row, "error": f"start: {code} {message}"}
    stack.hub.wait(user, ready=True)
    row["api_to_ready_s"] = round(time.monotonic() - t_api, 2)
    kernel = st.Kernel(stack.proxy_url, user, token)
    try:
        if variant == "ahead":
            status = spare_ready(kernel)
            row["spare_ready_after_ready_s"] = round(time.monotonic() - t_api - row["api_to_ready_s"], 2)
            row["spare_pid"] = status["spare"]["pid"]
            time.sleep(2)  # the person comes later: nothing of the start is still running
        t_open = time.monotonic()
        session = open_notebook(kernel, f"instant-{i}.ipynb")
        row["open_s"] = round(time.monotonic() - t_open, 3)
        out = kernel.execute(CODE_LOCAL if st.LOCAL else CODE, timeout=300)
        t_out = time.monotonic()
        row.update(output=out.strip()[-200:], notebook_open_to_output_s=round(t_out - t_open, 3),
                   api_to_output_s=round(t_out - t_api, 2))
        pid = kernel.call("__import__('os').getpid()")
        row["kernel_was_spare"] = variant == "ahead" and pid == row.get("spare_pid")
        row["kernel_id"] = session["kernel"]["id"]
        second = time.monotonic()
        kernel.execute("print(float(x.sum()) if 'x' in dir() else 0)")
        row["second_cell_s"] = round(time.monotonic() - second, 3)
    finally:
        kernel.close()
        stack.hub.stop(user)
    row["ok"] = "error" not in row and (variant != "ahead" or row["kernel_was_spare"])
    return row


def run(stage: dict, samples: int) -> dict:
    summary: dict = {"ok": False, "machine": os.uname().nodename, "local": st.LOCAL, "samples": [],
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code": CODE}
    stack = st.Stack(stage)
    try:
        summary["proxy"] = stack.start_proxy()
        summary["hub_start_s"] = stack.start_hub()
        if not st.LOCAL:
            summary["nvidia_smi"] = st.nvidia_smi()
        for rnd in range(samples):
            order = VARIANTS if rnd % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                try:
                    row = one_sample(stack, variant, rnd)
                except Exception as exc:  # noqa: BLE001 - the report says what broke; the next sample runs
                    row = {"variant": variant, "round": rnd, "ok": False,
                           "error": f"{type(exc).__name__}: {exc}"[:2000], "hub_log": stack.hub_log_tail(2000)}
                st.log(json.dumps(row)[:600])
                summary["samples"].append(row)
        summary["stats"] = {}
        for variant in VARIANTS:
            rows = [r for r in summary["samples"] if r["variant"] == variant and r.get("ok")]
            summary["stats"][variant] = {"n": len(rows), **{
                key: {"p50": round(statistics.median(v), 3), "min": min(v), "max": max(v)}
                for key in ("notebook_open_to_output_s", "api_to_output_s", "api_to_ready_s", "second_cell_s")
                if (v := [r[key] for r in rows if key in r])}}
    finally:
        stack.cleanup()
    summary["ok"] = bool(summary["samples"]) and all(r.get("ok") for r in summary["samples"])
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5, help="rounds; each runs every variant once")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        stage = st.prepared_stage()
    except RuntimeError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 2
    summary = run(stage, args.samples)
    text = json.dumps(summary, indent=1)
    out = os.environ.get("OUT")
    if out and Path(out).is_dir():
        (Path(out) / "instant_stack.json").write_text(text + "\n")
    print(json.dumps({"ok": summary["ok"], "stats": summary.get("stats")}, indent=1), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
