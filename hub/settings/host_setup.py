"""What ``make up`` decides on the host before compose runs: HTTPS, live GPU data, checks.

Standard library only: it runs with the host's ``python3`` (``python3 -m hub.settings.host_setup``).
It reads the deployment's env file (and the shell's environment, which wins, as for compose),
stops with a message naming the variable when a TLS setting is wrong, and prints the shell
``export`` lines the Makefile evaluates before calling compose:

- ``COMPOSE_PROFILES=tls`` when ``HUB_DOMAIN`` is set (Caddy in front of the proxy), with
  ``CADDY_TLS`` = ``acme`` (a public name), ``internal`` (Caddy's own CA) or ``files``
  (the admin's ``TLS_CERT_FILE``/``TLS_KEY_FILE``);
- ``COMPOSE_FILE``: docker-compose.yml, the admin's docker-compose.override.yml if there is
  one, and the file written here (``--out``): the proxy without a published port (TLS), the
  admin's certificate mounted into Caddy, and NVML for the hub on an NVIDIA host (the
  ``utility`` capability only: the driver's management library, for reading);
- ``NVIDIA_CTK_VERSION``: the host's NVIDIA Container Toolkit, for the hub's CVE check
  (hub/gpus/health.py).

An NVIDIA host is one where ``nvidia-smi -L`` lists a GPU, or with a CDI spec of kind
``nvidia.com/gpu`` whose device nodes are the host's ``/dev/nvidia*`` character devices (a spec
that maps its devices onto ``/dev/null``, as the fake GPUs of a test machine do, is not one).
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from hub.gpus.health import toolkit_version
import ssl

ROOT = Path(__file__).resolve().parents[2]
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
# Names no public CA issues certificates for: Caddy's internal CA signs them instead.
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".test", ".example",
                    ".invalid", ".corp", ".home")
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class SetupError(Exception):
    """A setting is wrong; the message names it and says the fix."""


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def check_domain(domain: str) -> None:
    """A DNS name (no scheme, port or path) Caddy can serve."""
    hint = "a DNS name such as hub.example.org, without https:// or a port"
    if "://" in domain or "/" in domain or ":" in domain:
        raise SetupError(f"HUB_DOMAIN={domain!r} is not a host name: use {hint}")
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        pass
    else:
        raise SetupError(f"HUB_DOMAIN={domain!r} is an IP address: use {hint} (certificates name hosts)")
    labels = domain.lower().rstrip(".").split(".")
    if len(domain) > 253 or not all(LABEL.match(label) for label in labels):
        raise SetupError(f"HUB_DOMAIN={domain!r} is not a valid DNS name: use {hint}")


def is_public(domain: str) -> bool:
    """Whether a public CA (ACME) can issue for this name: dotted, not a private suffix."""
    name = domain.lower().rstrip(".")
    return "." in name and not name.endswith(PRIVATE_SUFFIXES) and name != "localhost"


def check_pem(name: str, value: str, marker: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (ROOT / path).resolve()
    if not path.is_file():
        raise SetupError(f"{name}={value}: no such file (give the path of the PEM file on this host)")
    try:
        head = path.read_text(errors="replace")[:100_000]
    except OSError as exc:
        raise SetupError(f"{name}={value}: cannot read it ({exc.strerror})") from None
    if marker not in head:
        raise SetupError(f"{name}={value} is not a PEM file with a {marker.lower()} "
                         f"(expected '-----BEGIN ...{marker}-----')")
    return path


def tls_plan(env: dict[str, str]) -> dict[str, str]:
    """{} without HUB_DOMAIN; else the Caddy mode and, for 'files', the checked paths."""
    domain = env.get("HUB_DOMAIN", "").strip()
    cert, key = env.get("TLS_CERT_FILE", "").strip(), env.get("TLS_KEY_FILE", "").strip()
    if not domain:
        if cert or key:
            raise SetupError("TLS_CERT_FILE/TLS_KEY_FILE are set but HUB_DOMAIN is not: set HUB_DOMAIN "
                             "to the name the certificate is for")
        return {}
    check_domain(domain)
    if cert or key:
        if not (cert and key):
            missing = "TLS_KEY_FILE" if cert else "TLS_CERT_FILE"
            raise SetupError(f"{missing} is not set: give both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
        return {"domain": domain, "mode": "files",
                "cert": str(check_pem("TLS_CERT_FILE", cert, "CERTIFICATE")),
                "key": str(check_pem("TLS_KEY_FILE", key, "PRIVATE KEY"))}
    issuer = env.get("TLS_ISSUER", "auto").strip() or "auto"
    if issuer not in ("auto", "acme", "internal"):
        raise SetupError(f"TLS_ISSUER={issuer!r}: use auto, acme or internal")
    if issuer == "auto":
        issuer = "acme" if is_public(domain) else "internal"
    if issuer == "acme" and not is_public(domain):
        raise SetupError(f"TLS_ISSUER=acme but HUB_DOMAIN={domain!r} is not a public name: use "
                         "TLS_ISSUER=internal or a name a public CA can check")
    return {"domain": domain, "mode": issuer}


def subdomain_host(env: dict[str, str], tls: dict[str, str], cert_names=None) -> str:
    """JupyterHub's ``subdomain_host`` (``https://<domain>[:port]``) when users' servers get
    origins of their own (USER_SUBDOMAINS), else ""."""
    setting = (env.get("USER_SUBDOMAINS", "auto").strip().lower() or "auto")
    if setting not in ("auto", "true", "false"):
        raise SetupError(f"USER_SUBDOMAINS={setting!r}: use auto, true or false")
    if not tls:
        if setting == "true":
            raise SetupError("USER_SUBDOMAINS=true needs HTTPS: set HUB_DOMAIN (per-user origins are "
                             "https://<user>.HUB_DOMAIN)")
        return ""
    if setting == "false":
        return ""
    domain = tls["domain"]
    if tls["mode"] == "files":
        names = (cert_names or certificate_names)(tls["cert"])
        wildcard = f"*.{domain}" in names
        if setting == "true" and not wildcard:
            raise SetupError(f"USER_SUBDOMAINS=true but TLS_CERT_FILE does not name *.{domain}: use a wildcard "
                             "certificate, or USER_SUBDOMAINS=false")
        if not wildcard:
            return ""
    elif tls["mode"] == "acme":
        if setting == "true":
            raise SetupError(f"USER_SUBDOMAINS=true with ACME: its HTTP challenge cannot certify *.{domain}; give "
                             "a wildcard certificate (TLS_CERT_FILE, TLS_KEY_FILE), TLS_ISSUER=internal, or "
                             "USER_SUBDOMAINS=false")
        return ""
    port = (env.get("HTTPS_PUBLISH", "443").strip() or "443").rsplit(":", 1)[-1]
    return f"https://{domain}" + ("" if port == "443" else f":{port}")


def certificate_names(path: str) -> set[str]:
    """The DNS names a PEM certificate is for."""

    try:
        decoded = ssl._ssl._test_decode_cert(path)  # the standard library's own PEM reader
    except (ssl.SSLError, OSError, AttributeError):
        return set()
    return {value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"}


# ---- NVIDIA host ----------------------------------------------------------------------------

def _is_nvidia_char_device(path: str) -> bool:
    try:
        return Path(path).name.startswith("nvidia") and stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def cdi_names_real_nvidia(spec_text: str, is_device=_is_nvidia_char_device) -> bool:
    """Whether a CDI spec (YAML or JSON) is of kind nvidia.com/gpu and hands out real
    /dev/nvidia* device nodes. Line-based, so no YAML library is needed."""
    if not re.search(r'(?<![A-Za-z])"?kind"?\s*:\s*"?nvidia\.com/gpu"?', spec_text):
        return False
    # Each device node: from its "path" to the next one; its host side is "hostPath" if given.
    starts = [m.start() for m in re.finditer(r'(?<![A-Za-z])"?path"?\s*:', spec_text)]
    for start, end in zip(starts, [*starts[1:], len(spec_text)]):
        node = spec_text[start:end]
        host = re.search(r'"?hostPath"?\s*:\s*"?(/[^"\s,}]+)', node) or re.search(r'"?path"?\s*:\s*"?(/[^"\s,}]+)', node)
        if host and is_device(host.group(1)):
            return True
    return False


def nvidia_host(cdi_dirs=CDI_DIRS, run=subprocess.run, is_device=_is_nvidia_char_device) -> str:
    """Why this is an NVIDIA host ("" if it is not one)."""
    if shutil.which("nvidia-smi"):
        try:
            out = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and "GPU" in out.stdout:
                return "nvidia-smi lists GPUs"
        except (OSError, subprocess.TimeoutExpired):
            pass
    for directory in cdi_dirs:
        for spec in sorted(Path(directory).glob("*")) if Path(directory).is_dir() else []:
            if spec.suffix in (".yaml", ".yml", ".json"):
                try:
                    text = spec.read_text(errors="replace")
                except OSError:
                    continue
                if cdi_names_real_nvidia(text, is_device):
                    return f"CDI spec {spec} names nvidia.com/gpu devices"
    return ""


# ---- the compose override and the exports ----------------------------------------------------

def override(tls: dict[str, str], nvml: str, subdomains: str = "") -> dict:
    """The generated compose file (JSON is YAML): only what this host and configuration need."""
    services: dict = {}
    if subdomains:
        # users' servers (and services) on <name>.HUB_DOMAIN: the proxy routes by host, Caddy
        # serves the wildcard, the hub knows its subdomain_host (docs/security.md#origins)
        services["hub"] = {"environment": {"HUB_SUBDOMAIN_HOST": subdomains}}
    if tls:
        # compose merges lists: see the !reset below; the proxy leaves Caddy's X-Forwarded-*
        # headers as they are (images/proxy/entrypoint.sh)
        services["proxy"] = {"ports": [], "environment": {"PROXY_BEHIND_TLS": "1",
                                                         **({"PROXY_HOST_ROUTING": "1"} if subdomains else {})}}
        services["caddy"] = {"environment": {"CADDY_TLS": tls["mode"],
                                             **({"CADDY_SUBDOMAINS": "1"} if subdomains else {})}}
        if tls["mode"] == "files":
            # Private keys are usually root's, mode 600: Caddy reads them as root then, with no
            # capability but DAC_OVERRIDE (its data volume belongs to the image's caddy user).
            services["caddy"].update(user="0:0", cap_add=["DAC_OVERRIDE"])
            services["caddy"]["volumes"] = [f"{tls['cert']}:/run/tls/cert.pem:ro",
                                       f"{tls['key']}:/run/tls/key.pem:ro"]
    if nvml:
        device = ({"driver": "nvidia", "capabilities": ["utility"], "count": "all"} if nvml == "nvidia"
                  else {"driver": "cdi", "capabilities": ["gpu"], "device_ids": ["nvidia.com/gpu=all"]})
        hub = services.setdefault("hub", {})
        hub["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
        hub.setdefault("environment", {})["NVIDIA_DRIVER_CAPABILITIES"] = "utility"
    return {"services": services}


def render(compose: dict) -> str:
    text = "# Written by `make up` (hub/settings/host_setup.py) for this host; do not edit.\n"
    text += json.dumps(compose, indent=1) + "\n"
    # The proxy's published port is removed, not merged with (compose >= 2.24).
    return text.replace('"ports": []', '"ports": !reset []')


def plan(env: dict[str, str], out: Path, cdi_dirs=CDI_DIRS) -> tuple[dict[str, str], list[str]]:
    """(exports, notes) for this host; writes ``out``. SetupError on a bad setting."""
    notes = []
    tls = tls_plan(env)
    nvml_setting = env.get("HUB_NVML", "auto").strip().lower() or "auto"
    if nvml_setting not in ("auto", "true", "false"):
        raise SetupError(f"HUB_NVML={nvml_setting!r}: use auto, true or false")
    why = nvidia_host(cdi_dirs) if nvml_setting != "false" else ""
    if nvml_setting == "true" and not why:
        why = "HUB_NVML=true"
    nvml = ""
    if why:
        nvml = "nvidia" if shutil.which("nvidia-container-runtime-hook") else "cdi"
        notes.append(f"NVIDIA host ({why}): the hub reads live GPU data through NVML (utility capability)")
    out.parent.mkdir(parents=True, exist_ok=True)
    subdomains = subdomain_host(env, tls)
    out.write_text(render(override(tls, nvml, subdomains)))
    files = ["docker-compose.yml"]
    if (ROOT / "docker-compose.override.yml").exists():
        files.append("docker-compose.override.yml")
    files.append(os.path.relpath(out, ROOT) if out.is_relative_to(ROOT) else str(out))
    exports = {"COMPOSE_FILE": ":".join(files), "COMPOSE_PROFILES": "tls" if tls else "",
               "NVIDIA_CTK_VERSION": env.get("NVIDIA_CTK_VERSION") or toolkit_version()}
    if tls:
        how = {"acme": "a certificate by ACME", "internal": "Caddy's internal CA", "files": "your certificate"}
        notes.append(f"HTTPS for {tls['domain']} by Caddy ({how[tls['mode']]}); the proxy is not published")
        notes.append(f"users' servers on <user>.{tls['domain']} (needs DNS for *.{tls['domain']})" if subdomains else
                     "users' servers share the hub's origin (USER_SUBDOMAINS): a page a user serves can act as "
                     "whoever opens it (docs/security.md#origins)")
    return exports, notes


def swarm_exports(env: dict[str, str], root: Path = ROOT) -> dict[str, str]:
    """What ``make swarm-up`` exports for ``docker stack deploy``, which reads no env file: every
    variable of the env file (the shell's win), the proxy's port alone (the stack publishes
    it on the hub's node), and a version of the hub's config files (Swarm configs cannot
    change: a changed file deploys as a new config)."""
    exports = {**env, **{k: os.environ[k] for k in env if k in os.environ}}
    publish = exports.get("HUB_PUBLISH") or "8000"
    exports["HUB_PUBLISH_PORT"] = publish.rsplit(":", 1)[-1]
    profiles = exports.get("HUB_PROFILES") or "profiles.yaml"
    exports["HUB_PROFILES_FILE"] = str((root / profiles).resolve())
    digest = hashlib.sha256()
    for path in (root / "jupyterhub_config.py", root / profiles):
        digest.update(path.read_bytes() if path.is_file() else b"")
    exports["HUB_CONFIG_VERSION"] = digest.hexdigest()[:12]
    return exports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m hub.settings.host_setup")
    parser.add_argument("--env-file", default=".env")
    parser.add_argument("--out", default=str(ROOT / "compose.host.yml"))
    parser.add_argument("--swarm", action="store_true", help="print the exports of `make swarm-up`")
    args = parser.parse_args(argv)
    env = read_env_file(Path(args.env_file))
    if args.swarm:
        for key, value in swarm_exports(env).items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    names = ("HUB_DOMAIN", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_ISSUER", "HUB_NVML", "NVIDIA_CTK_VERSION",
             "USER_SUBDOMAINS", "HTTPS_PUBLISH")
    env.update({k: os.environ[k] for k in names if k in os.environ})
    try:
        exports, notes = plan(env, Path(args.out))
    except SetupError as exc:
        print(f"make up: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(note, file=sys.stderr)
    for key, value in exports.items():
        print(f"export {key}='{value}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
