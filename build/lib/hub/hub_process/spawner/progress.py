"""What the spawn page shows while a server starts: one start's progress events, and the
progress of an image pull (layers and bytes)."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator


class ProgressLog:
    """The events of one start, for JupyterHub's progress stream (``Spawner.progress``). A
    spawner lives as long as its user, so each start begins a new log."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._changed = asyncio.Event()

    def emit(self, progress: int, message: str) -> None:
        self.events.append({"progress": progress, "message": message})
        self._changed.set()

    async def stream(self) -> AsyncIterator[dict]:
        """Every event of this start, as it happens (JupyterHub stops reading when it ends)."""
        sent = 0
        while True:
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            self._changed.clear()
            await self._changed.wait()


LAYER_STATUSES = ("Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
                  "Download complete", "Extracting", "Pull complete", "Already exists")


class PullProgress:
    """The engine's pull events, folded into (progress 10-60, message) for the spawn page."""

    def __init__(self, image: str):
        self.image = image
        self.layers: dict[str, tuple[int, int]] = {}  # layer -> (bytes so far, bytes in all)
        self.done: set[str] = set()

    def add(self, event: dict) -> None:
        """One event of ``docker pull``'s stream; RuntimeError for an error event."""
        if "error" in event:
            raise RuntimeError(f"pulling {self.image} failed: {event['error']}")
        layer, status = event.get("id"), event.get("status", "")
        if not layer or not status.startswith(LAYER_STATUSES):
            return  # "Pulling from …", "Digest: …": not about a layer
        detail = event.get("progressDetail") or {}
        if status.startswith("Downloading") and detail.get("total"):
            self.layers[layer] = (detail.get("current", 0), detail["total"])
        else:
            self.layers.setdefault(layer, (0, 0))
        if status in ("Pull complete", "Already exists"):
            self.done.add(layer)

    def summary(self) -> tuple[int, str]:
        return pull_summary(self.image, self.layers, self.done)


def pull_summary(image: str, layers: dict, done: set) -> tuple[int, str]:
    """(progress 10-60, message) for a pull: layers done and bytes so far (of the layers that
    have to be downloaded; layers the engine already has count as done, with no bytes)."""
    total = sum(t for _, t in layers.values())
    current = sum(t if layer in done else c for layer, (c, t) in layers.items())
    fraction = current / total if total else 0.0
    return (10 + int(50 * fraction),
            f"Pulling image {image}: {len(done)} of {len(layers)} layers, "
            f"{current / 1e6:.0f} MB of {total / 1e6:.0f} MB")
