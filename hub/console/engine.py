"""DockerCaller: the Docker engine's API (docker-py) called off the event loop."""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Awaitable, Callable

DockerCall = Callable[..., Awaitable]  # await docker("containers", all=True, ...)


class DockerCaller:
    """``await docker("containers", ...)``: docker-py's low-level API on a small thread pool."""

    def __init__(self, client: Any = None, threads: int = 4):
        if client is None:
            import docker
            client = docker.APIClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
                                      version="auto", timeout=30)
        self.client = client
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="console-docker")

    def __call__(self, method: str, *args: Any, **kwargs: Any):
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self.executor, partial(getattr(self.client, method), *args, **kwargs))
