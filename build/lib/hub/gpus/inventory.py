"""Which GPUs this host has: from NVML (hub/gpus/nvml.py), from CDI specs, or from a static
YAML list.

Reads files and NVML, never Docker. `discover` tries the sources in order of trust: NVML
sees the hardware (and MIG instances) but needs the driver inside the hub's container;
CDI specs (written by ``nvidia-ctk cdi generate``, or by the fake-GPU test kit) only need
/etc/cdi and /var/run/cdi mounted read-only; a static list is the admin's last resort.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import yaml

from hub.gpus.model import GPU
from hub.gpus.nvml import discover_gpus

log = logging.getLogger(__name__)

DEFAULT_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
_MIB = 1024 * 1024
_UUID_PREFIXES = ("GPU-", "MIG-")
_INDEX_NAME = re.compile(r"(\d+)(?::\d+)?")  # "3", or "0:1" for MIG instance 1 of GPU 0
_NODE = re.compile(r"/dev/nvidia(\d+)")


# --- CDI ------------------------------------------------------------------------------
def from_cdi(dirs: Iterable[str] = DEFAULT_CDI_DIRS) -> list[GPU] | None:
    """One GPU per UUID-named device of the nvidia.com/gpu CDI specs; None if there are none.

    The index comes from the index-named device ("3", "0:1") with the same device nodes,
    else from the /dev/nvidiaN node. A GPU that has MIG instances in the spec is left out
    (its instances are listed instead), as NVML discovery does.
    """
    nodes_by_name: dict[str, frozenset[str]] = {}
    for spec in _cdi_specs([dirs] if isinstance(dirs, str) else dirs):
        for device in spec.get("devices") or []:
            if isinstance(device, dict) and device.get("name"):
                nodes_by_name.setdefault(str(device["name"]), _device_nodes(device))
    gpus = _gpus_from_devices(nodes_by_name)
    if nodes_by_name and not gpus:
        log.warning("CDI specs name no GPU by UUID; regenerate them with "
                    "`nvidia-ctk cdi generate --device-name-strategy=uuid` (or index and uuid)")
    return gpus or None


def _cdi_specs(dirs: Iterable[str]) -> list[dict]:
    """The parsed nvidia.com/gpu specs; unreadable files are skipped with a warning.

    BaseLoader keeps every scalar a string, so names like "1:0" are not read as numbers.
    """
    specs = []
    files = [p for d in dirs for p in sorted(Path(d).glob("*"))]
    for path in (p for p in files if p.suffix in (".yaml", ".yml", ".json")):
        try:
            spec = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            log.warning("CDI spec %s skipped: %s", path, e)
            continue
        if isinstance(spec, dict) and spec.get("kind") == "nvidia.com/gpu":
            specs.append(spec)
    return specs


def _device_nodes(device: dict) -> frozenset[str]:
    nodes = (device.get("containerEdits") or {}).get("deviceNodes") or []
    return frozenset(n["path"] for n in nodes if isinstance(n, dict) and n.get("path"))


def _gpus_from_devices(nodes_by_name: dict[str, frozenset[str]]) -> list[GPU]:
    index_by_nodes = {nodes: int(m.group(1)) for name, nodes in nodes_by_name.items()
                      if (m := _INDEX_NAME.fullmatch(name))}
    gpus = [GPU(uuid=name, index=index_by_nodes.get(nodes, _node_number(nodes)),
                name="MIG" if name.startswith("MIG-") else "GPU")
            for name, nodes in nodes_by_name.items() if name.startswith(_UUID_PREFIXES)]
    parents = {g.index: g.uuid for g in gpus if g.uuid.startswith("GPU-")}
    gpus = [g if g.uuid.startswith("GPU-") else replace(g, parent_uuid=parents.get(g.index))
            for g in gpus]
    split = {g.parent_uuid for g in gpus}
    return sorted((g for g in gpus if g.uuid not in split), key=lambda g: (g.index, g.uuid))


def _node_number(nodes: frozenset[str]) -> int:
    numbers = sorted(int(m.group(1)) for p in nodes if (m := _NODE.fullmatch(p)))
    return numbers[0] if numbers else -1


# --- static list ----------------------------------------------------------------------
def from_yaml(text: str) -> list[GPU]:
    """GPUs from ``gpus: [{uuid:, index:, name:, memory_total_mib:}]``; ValueError if bad.

    Extra keys are ignored, so /etc/fake-gpus.json and /etc/gpukit-gpus.json load as is.
    MIG entries (with parent_uuid) share their parent's index, so only whole GPUs must
    have distinct indexes.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"the static GPU list is not valid YAML: {e}") from e
    entries = doc.get("gpus") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the static GPU list must be a mapping with a list under 'gpus', "
                         "e.g. 'gpus: [{uuid: GPU-..., index: 0}]'")
    gpus = [_static_gpu(f"gpus[{i}]", entry) for i, entry in enumerate(entries)]
    _check_unique(gpus)
    return gpus


def _static_gpu(where: str, entry: Any) -> GPU:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a mapping like {{uuid: GPU-..., index: 0}}, "
                         f"got {entry!r}")
    uuid, index = entry.get("uuid"), entry.get("index")
    if not isinstance(uuid, str) or not uuid.startswith(_UUID_PREFIXES):
        raise ValueError(f"{where}: missing or bad 'uuid' ({uuid!r}); set it to the GPU's UUID "
                         "as `nvidia-smi -L` prints it (GPU-... or MIG-...)")
    if not _is_int(index) or index < 0:
        raise ValueError(f"{where} ({uuid}): missing or bad 'index' ({index!r}); set it to the "
                         "GPU's number in nvidia-smi (0, 1, ...)")
    memory, name = entry.get("memory_total_mib"), entry.get("name", "GPU")
    if memory is not None and (not _is_int(memory) or memory < 0):
        raise ValueError(f"{where} ({uuid}): 'memory_total_mib' must be a whole number of MiB, "
                         f"got {memory!r}; remove it or fix it")
    parent = entry.get("parent_uuid")
    return GPU(uuid, index, str(name), memory, str(parent) if parent else None)


def _check_unique(gpus: list[GPU]) -> None:
    seen_uuid: dict[str, int] = {}
    seen_index: dict[int, int] = {}
    for pos, gpu in enumerate(gpus):
        if gpu.uuid in seen_uuid:
            raise ValueError(f"gpus[{pos}]: uuid {gpu.uuid} is already listed at "
                             f"gpus[{seen_uuid[gpu.uuid]}]; list each GPU once")
        seen_uuid[gpu.uuid] = pos
        if gpu.parent_uuid is None and gpu.index in seen_index:
            raise ValueError(f"gpus[{pos}] ({gpu.uuid}): index {gpu.index} is already used by "
                             f"gpus[{seen_index[gpu.index]}]; give each GPU its own index")
        if gpu.parent_uuid is None:
            seen_index[gpu.index] = pos


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- all sources ----------------------------------------------------------------------
def discover(static_yaml: str | None = None,
             cdi_dirs: Iterable[str] = DEFAULT_CDI_DIRS) -> tuple[list[GPU], str]:
    """(gpus, source) from the first source that finds any: nvml, cdi, static, else none.

    A bad static list raises ValueError (a configuration error should stop the hub).
    """
    gpus = discover_gpus()
    if gpus:
        return gpus, "nvml"
    gpus = from_cdi(cdi_dirs)
    if gpus:
        return gpus, "cdi"
    if static_yaml is not None and (gpus := from_yaml(static_yaml)):
        return gpus, "static"
    return [], "none"
