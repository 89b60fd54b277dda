"""Host health: is this host safe and fit to hand GPUs out? Pure checks on recorded inputs
(the engine's ``version``/``info``, a toolkit version, NVML readings, an image's labels), used by
``gpuhub-gpus doctor``, the console's "Host health" card, the hub at start, and the spawner
before it hands a GPU out.

Each check gives a ``Check``: ``ok``, ``warn`` (works, but fix it), ``fail`` (the hub refuses
what it covers: all GPUs, a start, or one GPU, which it drains) or ``unknown`` (not
readable here: never a refusal).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"

# NVIDIA Container Toolkit container-escape CVEs, with the first release that fixes each
# (NVIDIA security bulletins).
TOOLKIT_CVES: tuple[tuple[str, str], ...] = (
    ("CVE-2024-0132", "1.16.2"),
    ("CVE-2024-0133", "1.16.2"),
    ("CVE-2025-23359", "1.17.4"),
    ("CVE-2025-23266", "1.17.8"),  # "NVIDIAScape"
    ("CVE-2025-23267", "1.17.8"),
    ("CVE-2026-24260", "1.19.1"),
)
DEFAULT_TOOLKIT_MIN = "1.19.1"
CDI_ENGINE = (25, 0)  # Docker's CDI support
# The lowest driver CUDA version (major) a CUDA runtime of that major needs; PyTorch's wheels
# bring their own runtime, so only the driver's CUDA version matters.
TORCH_CUDA_LABEL = "gpuhub.torch.cuda"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str
    fix: str = ""
    refuses: str = ""
    """What the hub refuses while this check fails: "gpus", "start" or "gpu:<uuid>"."""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", {}) or k in ("status", "message")}


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """(1, 17, 8) from '1.17.8', 'v1.17.8-1', 'NVIDIA Container Toolkit CLI version 1.17.8'."""
    if not text:
        return None
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not found:
        return None
    return tuple(int(x) for x in found.groups(default="0"))


def _v(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


# ---- the engine ----------------------------------------------------------------------------

def engine_checks(version: dict, info: dict) -> list[Check]:
    """Docker's version (CDI needs 25), CDI on, live-restore."""
    checks = []
    engine = parse_version(version.get("Version"))
    if engine is None:
        checks.append(Check("engine.version", UNKNOWN, "the engine did not report its version"))
    elif engine[:2] < CDI_ENGINE:
        checks.append(Check("engine.version", WARN, f"Docker {version['Version']} has no CDI support",
                            "upgrade Docker to 25 or newer (CDI requests GPUs by UUID without the runtime hook)",
                            data={"version": version["Version"]}))
    else:
        checks.append(Check("engine.version", OK, f"Docker {version['Version']}", data={"version": version["Version"]}))
    if info.get("CDISpecDirs"):
        checks.append(Check("engine.cdi", OK, f"CDI is on ({', '.join(info['CDISpecDirs'])})"))
    else:
        checks.append(Check("engine.cdi", WARN, "CDI is off in the Docker daemon: GPUs go through the nvidia runtime hook",
                            'set "features": {"cdi": true} in /etc/docker/daemon.json and restart Docker '
                            "(on by default from Docker 28)"))
    if info.get("LiveRestoreEnabled"):
        checks.append(Check("engine.live_restore", OK, "live-restore is on: a daemon restart keeps servers running"))
    else:
        checks.append(Check("engine.live_restore", WARN, "live-restore is off: restarting or upgrading Docker stops "
                            "every user's server", 'set "live-restore": true in /etc/docker/daemon.json and '
                            "`systemctl reload docker` (docs/operations.md#live-restore-an-admins-setup-step)"))
    return checks


# ---- the NVIDIA Container Toolkit ---------------------------------------------------------

def toolkit_check(version: str | None, minimum: str = DEFAULT_TOOLKIT_MIN, override: bool = False) -> Check:
    """The toolkit against the container-escape CVEs: below ``minimum`` the hub hands out no
    GPU, unless the admin overrides (then a warning)."""
    installed = parse_version(version)
    if installed is None:
        return Check("toolkit.cves", UNKNOWN, "NVIDIA Container Toolkit version not known here",
                     "run `make up` on the host (it reads `nvidia-ctk --version`) or set NVIDIA_CTK_VERSION")
    floor = parse_version(minimum) or parse_version(DEFAULT_TOOLKIT_MIN)
    open_cves = [(cve, fixed) for cve, fixed in TOOLKIT_CVES if installed < parse_version(fixed)]
    data = {"version": _v(installed), "minimum": _v(floor), "cves": [c for c, _ in open_cves]}
    if installed >= floor:
        if open_cves:  # an admin's lower minimum
            return Check("toolkit.cves", WARN, f"NVIDIA Container Toolkit {_v(installed)} is open to "
                         f"{', '.join(c for c, _ in open_cves)} (minimum set to {_v(floor)})",
                         f"upgrade to {open_cves[-1][1]} or newer", data=data)
        return Check("toolkit.cves", OK, f"NVIDIA Container Toolkit {_v(installed)}: no known container-escape CVE",
                     data=data)
    listed = "; ".join(f"{cve} (fixed in {fixed})" for cve, fixed in open_cves) or "none of the known CVEs"
    fix = (f"upgrade the NVIDIA Container Toolkit to {_v(floor)} or newer (apt-get install --only-upgrade "
           "nvidia-container-toolkit), then `make restart-hub`; or accept the risk with GPU_TOOLKIT_OVERRIDE=true")
    message = f"NVIDIA Container Toolkit {_v(installed)} is below the minimum {_v(floor)}: open to {listed}"
    if override:
        return Check("toolkit.cves", WARN, message + " (GPU_TOOLKIT_OVERRIDE=true: GPUs are handed out anyway)",
                     fix, data=data)
    return Check("toolkit.cves", FAIL, message + "; the hub hands out no GPU", fix, refuses="gpus", data=data)


# ---- the driver and the image's PyTorch -----------------------------------------------------

def cuda_check(driver_cuda: str | None, image_cuda: str | None, image: str = "the image",
               driver_version: str | None = None) -> Check:
    """Would ``torch.cuda.is_available()`` be True? A CUDA runtime runs on a driver whose CUDA
    version has the same major (minor-version compatibility) or a newer one."""
    if not image_cuda or image_cuda.lower() in ("none", "cpu"):
        return Check("driver.cuda", OK if image_cuda else UNKNOWN,
                     f"{image} has a CPU build of PyTorch" if image_cuda else
                     f"{image} does not say which CUDA its PyTorch needs (label {TORCH_CUDA_LABEL})")
    needed, driver = parse_version(image_cuda), parse_version(driver_cuda)
    if driver is None:
        return Check("driver.cuda", UNKNOWN, f"{image} needs CUDA {image_cuda}; the driver's CUDA version is "
                     "not readable here (no NVML)")
    data = {"image_cuda": image_cuda, "driver_cuda": driver_cuda, "driver": driver_version or ""}
    drv = f"driver {driver_version} (CUDA {driver_cuda})" if driver_version else f"the driver (CUDA {driver_cuda})"
    if needed is None or driver[0] > needed[0] or driver[:2] >= needed[:2]:
        return Check("driver.cuda", OK, f"{drv} runs {image}'s PyTorch (CUDA {image_cuda})", data=data)
    if driver[0] == needed[0]:
        return Check("driver.cuda", WARN, f"{drv} is older than {image}'s CUDA {image_cuda}: it runs by CUDA "
                     "minor-version compatibility, but kernels compiled just in time (PTX) may fail",
                     "upgrade the NVIDIA driver", data=data)
    return Check("driver.cuda", FAIL, f"{drv} is too old for {image}'s PyTorch, built for CUDA {image_cuda}: "
                 "torch.cuda.is_available() would be False", f"upgrade the NVIDIA driver to one for CUDA "
                 f"{needed[0]}.x, or build the image for CUDA {driver[0]}.x (TORCH_PACKAGES, TORCH_CUDA; "
                 "docs/images.md)", refuses="start", data=data)


# ---- each GPU, from NVML ------------------------------------------------------------------

# Xid errors that make a GPU unfit for the next user: NVIDIA's Xid catalogue
# (https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, "Resolution Bucket":
# these need a GPU reset, a node reboot or service, not just a restarted application) and its
# page-retirement notes (https://docs.nvidia.com/deploy/dynamic-page-retirement/visibility.html).
CRITICAL_XIDS: dict[int, str] = {
    48: "double-bit (uncorrectable) ECC error",
    63: "ECC page retirement or row remapping recorded (a reset is needed to apply it)",
    64: "ECC page retirement or row remapping failed",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error (the GPU needs a reset)",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}
# Xids a user's program causes (illegal address, exceptions, preemption...): the catalogue's
# RESTART_APP bucket. Reported, never a drain.
APPLICATION_XIDS: dict[int, str] = {
    13: "graphics engine exception (a program's fault)",
    31: "GPU memory page fault (a program's fault)",
    43: "GPU stopped processing (a program's fault)",
    45: "preemptive cleanup (a program was stopped)",
    68: "video processor exception",
    109: "context switch timeout",
}


def xid_text(xid: int) -> str:
    """'Xid 79 (GPU has fallen off the bus)'; unknown Xids by number."""
    what = CRITICAL_XIDS.get(xid) or APPLICATION_XIDS.get(xid)
    return f"Xid {xid} ({what})" if what else f"Xid {xid}"


def gpu_check(health: dict[str, Any]) -> Check:
    """One GPU's NVML health reading (hub/gpus/nvml.py ``NVMLReader.health``): unhealthy GPUs
    are drained. Fields: uuid, index, name, lost, ecc_uncorrected (volatile), retired_pending,
    remap_failure, remap_pending, mig (current, pending), mig_instances, xids (the Xid
    events received since the last reading: ``[{"xid": 79, "time": epoch}, ...]``). A
    critical Xid (``CRITICAL_XIDS``) fails the GPU; an application's Xid is reported (ok);
    any other Xid is a warning."""
    uuid, index = health["uuid"], health.get("index")
    name = f"gpu.{uuid}"
    problems, warnings = [], []
    if health.get("lost"):
        problems.append("NVML cannot reach it (GPU lost or fallen off the bus)")
    if health.get("ecc_uncorrected"):
        problems.append(f"{health['ecc_uncorrected']} uncorrected ECC errors since the last reset")
    if health.get("retired_pending"):
        problems.append("retired memory pages are pending (a reset is needed)")
    if health.get("remap_failure"):
        problems.append("row remapping failed (the GPU needs service)")
    if health.get("remap_pending"):
        problems.append("remapped rows are pending (a reset is needed)")
    mig = health.get("mig")
    if mig and mig[0] != mig[1]:
        problems.append("a MIG mode change is pending (a reset is needed)")
    elif mig and mig[0] and not health.get("mig_instances"):
        problems.append("MIG is on but it has no MIG instances (nothing can run on it)")
    xids = sorted({int(e["xid"]) for e in health.get("xids") or []})
    critical = [x for x in xids if x in CRITICAL_XIDS]
    if critical:
        problems.append(", ".join(xid_text(x) for x in critical))
    other = [x for x in xids if x not in CRITICAL_XIDS and x not in APPLICATION_XIDS]
    if other:
        warnings.append(", ".join(xid_text(x) for x in other) + " (see NVIDIA's Xid catalogue)")
    if health.get("ecc_corrected"):
        warnings.append(f"{health['ecc_corrected']} corrected ECC errors")
    label = f"GPU {index} ({uuid})" if index is not None else f"GPU {uuid}"
    if problems:
        return Check(name, FAIL, f"{label}: " + "; ".join(problems), "drained by the hub; reset it (nvidia-smi -r "
                     "-i <index>, no process on it) or have it serviced, then undrain it in the GPU console",
                     refuses=f"gpu:{uuid}", data=health)
    if warnings:
        return Check(name, WARN, f"{label}: " + "; ".join(warnings), data=health)
    seen = [x for x in xids if x in APPLICATION_XIDS]
    return Check(name, OK, f"{label}: healthy" + (f" ({', '.join(xid_text(x) for x in seen)} seen)" if seen else ""),
                 data=health)


def xid_check(gpu_health: list[dict[str, Any]], listened: float | None = None) -> Check:
    """Whether Xid errors can be received at all (the per-GPU checks judge those received)."""
    watched = [h for h in gpu_health if h.get("xid_watch")]
    window = f" for {listened:g} s" if listened else ""
    data = {"watched": [h["uuid"] for h in watched], "listened_s": listened}
    if not gpu_health:
        return Check("gpus.xid", UNKNOWN, "no GPU to listen to for Xid errors", data=data)
    if not watched:
        return Check("gpus.xid", UNKNOWN, "Xid errors cannot be received from NVML here (no event support)",
                     "read them in the kernel log: journalctl -k | grep -i xid", data=data)
    seen = sum(len(h.get("xids") or []) for h in gpu_health)
    missing = [str(h.get("index", h["uuid"])) for h in gpu_health if not h.get("xid_watch")]
    return Check("gpus.xid", WARN if missing else OK,
                 f"listened{window} for Xid errors on {len(watched)} of {len(gpu_health)} GPUs: "
                 f"{seen or 'none'} received" + (f"; GPU {', '.join(missing)} cannot report them" if missing else "")
                 + " (earlier ones are in the kernel log: journalctl -k | grep -i xid)",
                 "" if not missing else "read those GPUs' Xids in the kernel log", data=data)


# ---- the report -----------------------------------------------------------------------------

@dataclass
class Report:
    checks: list[Check]

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses else WARN if WARN in statuses else OK

    def refused(self, scope: str) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL and c.refuses == scope]

    def unhealthy_gpus(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL and c.refuses.startswith("gpu:")]

    def exit_code(self, strict: bool = False) -> int:
        """0 healthy (warnings allowed unless strict), 1 a check failed (or warned, strict)."""
        return 1 if self.status == FAIL or (strict and self.status == WARN) else 0

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "checks": [c.to_json() for c in self.checks]}

    def text(self) -> str:
        marks = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL", UNKNOWN: "n/a "}
        lines = []
        for c in self.checks:
            lines.append(f"{marks[c.status]}  {c.name:<22} {c.message}")
            if c.fix and c.status in (WARN, FAIL):
                lines.append(f"{'':28}fix: {c.fix}")
        lines.append(f"overall: {self.status}")
        return "\n".join(lines)


def report(version: dict, info: dict, toolkit: str | None, minimum: str, override: bool,
           gpu_health: Iterable[dict] | None, driver: dict | None, image: str = "", image_cuda: str | None = None,
           xid_listened: float | None = None) -> Report:
    """Every check from recorded inputs (None: not readable here)."""
    checks = engine_checks(version, info)
    checks.append(toolkit_check(toolkit, minimum, override))
    driver = driver or {}
    checks.append(cuda_check(driver.get("cuda"), image_cuda, image or "the single-user image", driver.get("version")))
    if gpu_health is None:
        checks.append(Check("gpus", UNKNOWN, "GPU health not readable here (no NVML)"))
    else:
        gpu_health = list(gpu_health)
        checks += [gpu_check(h) for h in gpu_health]
        checks.append(xid_check(gpu_health, xid_listened))
    return Report(checks)


def toolkit_version(run=subprocess.run) -> str:
    """The NVIDIA Container Toolkit's version on this host ("" if it is not installed)."""
    for command in (["nvidia-ctk", "--version"], ["nvidia-container-cli", "--version"]):
        if not shutil.which(command[0]):
            continue
        try:
            out = run(command, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        found = re.search(r"version:?\s*v?(\d+\.\d+\.\d+)", out, re.I)
        if found:
            return found.group(1)
    return ""
