"""Paths of /proc and /sys hidden from users' containers (``HostConfig.MaskedPaths``).

Giving ``MaskedPaths`` replaces the engine's own list, so ours starts with Docker's defaults
(moby ``oci/defaults.go``, the same on Docker 25-27: what ``docker inspect`` shows for a
container created without the field) and adds ``/proc/driver/nvidia/gpus``: under it the
driver lists every GPU of the host by PCI address, with its UUID (``information``). The
NVIDIA runtime hook (``nvidia-container-cli``) mounts only the container's own GPU there; a
CDI spec from ``nvidia-ctk cdi generate`` does not, so a container given GPU A could read GPU
B's UUID and address (seen on a 2×H200 host). The runtime (runc) masks a directory with an
empty read-only tmpfs and skips a path that does not exist (hosts without the driver).
"""
DOCKER_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
GPU_PROC = "/proc/driver/nvidia/gpus"


def masked_paths() -> list[str]:
    return [*DOCKER_MASKED_PATHS, GPU_PROC]
