"""Gathering what hub/gpus/health.py checks, on this host or in the hub: the Docker engine,
the NVIDIA Container Toolkit's version, NVML (driver, each GPU's health) and the single-user
image's CUDA label. Needs only the ``docker`` and ``pynvml`` packages (either may be missing:
its checks then say "unknown"), so it runs with a GPU host's own Python::

    PYTHONPATH=. python3 -m hub.gpus.doctor --json     # or: gpuhub-gpus doctor --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from hub.gpus.health import DEFAULT_TOOLKIT_MIN, TORCH_CUDA_LABEL, Check, Report, report, toolkit_version, UNKNOWN
from hub.gpus.nvml import NVMLReader, Unavailable


def engine_facts(client: Any = None) -> tuple[dict, dict, str]:
    """(version, info, why not) of the Docker engine."""
    try:
        if client is None:
            # optional: the doctor also runs on a host's python3, which may lack docker-py
            import docker
            client = docker.from_env(timeout=30)
        api = getattr(client, "api", client)
        return api.version(), api.info(), ""
    except Exception as exc:  # noqa: BLE001 - no package, no socket, no permission: say so
        return {}, {}, f"{type(exc).__name__}: {exc}"


def image_cuda(client: Any, image: str) -> str | None:
    """The CUDA version the image's PyTorch was built for (its label), None if not known."""
    if not image:
        return None
    try:
        api = getattr(client, "api", client)
        labels = api.inspect_image(image)["Config"].get("Labels") or {}
    except Exception:  # noqa: BLE001 - not pulled yet, no engine
        return None
    return labels.get(TORCH_CUDA_LABEL) or None


def nvml_facts(reader: Any = None, xid_wait: float = 0.01) -> tuple[list[dict] | None, dict | None]:
    """Each GPU's health (listening ``xid_wait`` seconds for Xid errors) and the driver."""

    reader = reader or NVMLReader()
    try:
        return reader.health(xid_wait), reader.driver()
    except Unavailable:
        return None, None
    finally:
        reader.close()


def host_toolkit_version() -> str:
    """$NVIDIA_CTK_VERSION (what `make up` read on the host), else nvidia-ctk on this machine."""
    if os.environ.get("NVIDIA_CTK_VERSION"):
        return os.environ["NVIDIA_CTK_VERSION"]
    return toolkit_version()


def diagnose(image: str = "", minimum: str = DEFAULT_TOOLKIT_MIN, override: bool = False,
             client: Any = None, reader: Any = None, toolkit: str | None = None, xid_wait: float = 0.01) -> Report:
    version, info, engine_error = engine_facts(client)
    health, driver = nvml_facts(reader, xid_wait)
    result = report(version, info, toolkit if toolkit is not None else host_toolkit_version(), minimum, override,
                    health, driver, image, image_cuda(client, image) if client is not None or not engine_error else None,
                    xid_listened=xid_wait)
    if engine_error:
        result.checks = [c for c in result.checks if not c.name.startswith("engine.")]
        result.checks.insert(0, Check("engine", UNKNOWN, f"the Docker engine cannot be read here ({engine_error})",
                                      "run as a user in the docker group, with the docker package installed"))
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object: status and every check")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--image", default=os.environ.get("SINGLEUSER_IMAGE", ""),
                   help="the single-user image whose CUDA label to check (default: $SINGLEUSER_IMAGE)")
    p.add_argument("--min-toolkit", default=os.environ.get("GPU_TOOLKIT_MIN_VERSION") or DEFAULT_TOOLKIT_MIN,
                   help=f"lowest acceptable NVIDIA Container Toolkit (default {DEFAULT_TOOLKIT_MIN})")
    p.add_argument("--override", action="store_true",
                   default=os.environ.get("GPU_TOOLKIT_OVERRIDE", "").lower() in ("1", "true", "yes"),
                   help="accept a toolkit below the minimum (as GPU_TOOLKIT_OVERRIDE=true)")
    p.add_argument("--xid-seconds", type=float, default=2.0,
                   help="listen this long for Xid errors from NVML (default 2; the hub listens all the time, "
                        "earlier Xids are in the kernel log)")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 healthy (warnings allowed), 1 a check failed (or warned, with --strict)."""
    result = diagnose(args.image, args.min_toolkit, args.override, xid_wait=max(args.xid_seconds, 0.0))
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(result.text())
    return result.exit_code(args.strict)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m hub.gpus.doctor",
                                description="Is this host safe and fit to hand GPUs out? (hub/gpus/health.py)")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


ENV_KEYS = ("SINGLEUSER_IMAGE", "GPU_TOOLKIT_MIN_VERSION", "GPU_TOOLKIT_OVERRIDE", "NVIDIA_CTK_VERSION")


def from_env(env: dict, client: Any = None) -> Report:
    """The checks with the deployment's settings (``ENV_KEYS``), as the hub and the console run them."""
    return diagnose(env.get("SINGLEUSER_IMAGE", ""), env.get("GPU_TOOLKIT_MIN_VERSION") or DEFAULT_TOOLKIT_MIN,
                    env.get("GPU_TOOLKIT_OVERRIDE", "").strip().lower() in ("1", "true", "yes", "on"),
                    client=client, toolkit=env.get("NVIDIA_CTK_VERSION", ""))


def log_at_start(env: dict, out=sys.stderr) -> Report | None:
    """The hub's start: every check, one line each, in the hub's log (never stops the hub:
    the spawner enforces what fails, before it hands a GPU out)."""
    try:
        result = from_env(env)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run must not stop the hub
        print(f"[gpuhub health] checks could not run: {exc}", file=out, flush=True)
        return None
    for line in result.text().splitlines():
        print(f"[gpuhub health] {line}", file=out, flush=True)
    return result
