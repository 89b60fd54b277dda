#!/usr/bin/env python3
"""Docker HEALTHCHECK for the single-user server: GET <prefix>api answers 200 without auth."""
import os
import sys
import urllib.request

port = os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8888").rsplit(":", 1)[-1].split("/")[0]
prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
try:
    urllib.request.urlopen(f"http://127.0.0.1:{port}{prefix}api", timeout=2)
except Exception as exc:  # any failure is "unhealthy"; the message lands in docker inspect
    print(f"unhealthy: {exc}")
    sys.exit(1)
