"""DockerCaller: the Docker engine's API (docker-py) called off the event loop."""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Awaitable, Callable

DockerCall = Callable[..., Awaitable]  # await docker("containers", all=True, ...)


def engine_client(timeout: float = 30) -> Any:
    """A docker-py low-level client of the engine at $DOCKER_HOST (default: the local socket)."""
    # docker-py (requests, urllib3) loads when a client is made, not for DockerCaller alone
    import docker
    return docker.APIClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
                            version="auto", timeout=timeout)


class DockerCaller:
    """``await docker("containers", ...)``: docker-py's low-level API on a small thread pool."""

    def __init__(self, client: Any = None, threads: int = 4):
        self.client = client if client is not None else engine_client()
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="console-docker")

    def __call__(self, method: str, *args: Any, **kwargs: Any):
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self.executor, partial(getattr(self.client, method), *args, **kwargs))
