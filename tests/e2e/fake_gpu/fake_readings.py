"""Test scaffolding only: GPU readings fed from a file, for hosts whose (fake) GPUs have no NVML.

The e2e tests mount this folder into the hub (compose.yml beside it) and set
GPU_USAGE_READER=fake_readings:FileReader; they then write the readings they want into
FAKE_GPU_READINGS (JSON: {"<uuid>": {"util": 0-100 or null, "mem": MiB}, ...}). No file: NVML is
"unavailable", as on a host without the driver's library.
"""
import json
import os

from hub.gpus.nvml import Reading, Unavailable

PATH = os.environ.get("FAKE_GPU_READINGS", "/srv/jupyterhub/state/fake-gpu-readings.json")


class FileReader:
    def read(self) -> list[Reading]:
        try:
            with open(PATH) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise Unavailable(f"no fake readings at {PATH} ({exc})") from None
        return [Reading(uuid, i, "Fake GPU", g.get("util"), g.get("mem", 0), 81920)
                for i, (uuid, g) in enumerate(sorted(data.items()))]
