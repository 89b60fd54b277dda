"""The GPU host's hub configuration (tests/gpu_host/jupyterhub_config.py) against production's.

It is written apart from production's (hub and proxy as host processes, no login), and twice it
drifted where it mattered: it lacked the pre-start route that the console's role names (the hub
refused to start on the GPU machine) and the audit file (a run kept no resume entries). Here both
configurations are built the way their hubs build them, and what the services rely on is compared:
the handlers, the custom scopes, each shared service's role, and every module production installs
is installed there too or named below with why not."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GPU_HOST_CONFIG = ROOT / "tests" / "gpu_host" / "jupyterhub_config.py"

# production's installs that the GPU host's hub leaves out, and why (a new one must be decided on)
NOT_ON_THE_GPU_HOST = {
    "watchdog": "its hub and state are host processes and a directory: no engine or volume to watch",
    "api_body_500": "error bodies of malformed requests: not what the GPU runs are about",
    "error_reason": "error bodies without a message: not what the GPU runs are about",
    "system_resolver": "Swarm overlays' name lookups: the GPU host has no Swarm",
    "login_start": "no login there (the null authenticator): servers start through the REST API",
    "prestart_claim": "a person's first visit: the runs reach servers with tokens, not browsers",
}

# Loads one configuration file as JupyterHub does and prints what the comparison needs. Run in a
# process of its own: the installs patch JupyterHub's classes.
LOAD = r'''
import json, os, sys
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader
if sys.argv[1] == "production":
    from hub.hub_process.config.configure import configure_console, configure_reclaim
    from hub.hub_process import parking
    c = Config()
    token = os.path.join(os.environ["GPUHOST_STATE"], "token")
    configure_console(c, {}, reclaim_token_file=token)
    configure_reclaim(c, {}, token_file=token)
    parking.install(c)
else:
    path = sys.argv[1]
    c = PyFileConfigLoader(os.path.basename(path), os.path.dirname(path)).load_config()
jh = c.JupyterHub
print(json.dumps({
    "roles": {r["name"]: sorted(r.get("scopes", [])) for r in jh.get("load_roles", [])},
    "custom_scopes": sorted(jh.get("custom_scopes", {})),
    "handlers": sorted(h[0] for h in jh.get("extra_handlers", [])),
    "services": sorted(s["name"] for s in jh.get("services", [])),
    "audit_file": c.GPUDockerSpawner.get("gpu_audit_file", ""),
}))
'''


def load(which: str, tmp_path: Path) -> dict:
    binds = tmp_path / "binds.json"
    binds.write_text("{}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUHOST_STATE": str(tmp_path), "GPUHOST_HUB_PORT": "18081",
           "GPUHOST_NETWORK": "gpuhost", "GPUHOST_PROXY_API_PORT": "18001", "GPUHOST_PROXY_PORT": "18000",
           "GPUHOST_PROXY_TOKEN": "t", "GPUHOST_ADMIN_TOKEN": "a", "GPUHOST_BINDS_FILE": str(binds),
           "GPUHOST_CONSOLE_PORT": "18082", "GPUHOST_RECLAIM_PORT": "18083", "GPUHOST_RECLAIM_ENV": "{}"}
    out = subprocess.run([sys.executable, "-c", LOAD, which], capture_output=True, text=True, timeout=120,
                         env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_gpu_hosts_hub_serves_what_productions_services_rely_on(tmp_path):
    production = load("production", tmp_path)
    gpu_host = load(str(GPU_HOST_CONFIG), tmp_path)
    assert {"gpu-console", "gpu-reclaim"} <= set(production["roles"])
    for service in ("gpu-console", "gpu-reclaim"):  # the same role, scope for scope
        assert gpu_host["roles"].get(service) == production["roles"][service], service
    assert set(production["custom_scopes"]) <= set(gpu_host["custom_scopes"])
    assert set(production["handlers"]) <= set(gpu_host["handlers"])
    assert gpu_host["audit_file"], "the GPU host's runs read the resumes' timings from the audit log"


def installed(path: Path) -> set[str]:
    """The modules whose ``install(...)`` a configuration file calls."""
    calls = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "install"
                and isinstance(node.func.value, ast.Name)):
            calls.add(node.func.value.id)
    return calls


def test_every_install_of_production_is_on_the_gpu_host_or_said_why_not():
    production, gpu_host = installed(ROOT / "jupyterhub_config.py"), installed(GPU_HOST_CONFIG)
    assert "parking" in production and "restart_check" in production  # the parse finds them
    missing = production - gpu_host - set(NOT_ON_THE_GPU_HOST)
    assert not missing, f"tests/gpu_host/jupyterhub_config.py lacks {sorted(missing)}: install it there, " \
                        f"or add it to NOT_ON_THE_GPU_HOST with why"
    assert not set(NOT_ON_THE_GPU_HOST) - production, "a module named here is no longer installed in production"
