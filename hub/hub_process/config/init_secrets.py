"""gpuhub-init: creates the deployment's secrets on first start, never overwriting them.

Run by the one-shot ``init`` service before the hub and the proxy start (docker compose
orders them). Secrets live only on the named volumes, never in an image or in git:

  state volume        jupyterhub_cookie_secret (hub only), admin-password (hub only)
  proxy-token volume  token (hub reads it, the proxy reads it; nobody else mounts it)
  metrics-token volume  token (the hub's ``prometheus`` service: it may read the GPU console's
                      metrics and nothing else; the monitoring profile's Prometheus reads it)

The hub makes one more itself, the same way (``ensure_secret``), on its first start with it:
gpu-reclaim's API token, ``gpu-reclaim-token`` on the state volume (configure_reclaim).
"""
import argparse
import os
import secrets
import sys
from pathlib import Path

from hub.files import write_atomic
from hub.settings import STATE_DIR
from hub.settings.table import read

HUB_UID = 990  # the 'jupyterhub' user of the hub image
PROXY_GID = 101  # the 'chp' group of the proxy image


def ensure_secret(path: Path, value: str, uid: int, gid: int, mode: int) -> bool:
    """Write ``value`` to ``path`` unless a non-empty secret is already there; fix its ownership.

    Returns True if it wrote a new secret. The file is created with its final mode, so the
    secret is never readable by others, not even for a moment.
    """
    created = not (path.exists() and path.read_text().strip())
    if created:
        write_atomic(path, value + "\n", mode)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return created


def initialise(state_dir: Path, proxy_token_dir: Path, admin_password: str | None,
               hub_uid: int = HUB_UID, proxy_gid: int = PROXY_GID, metrics_token_dir: Path | None = None) -> list[str]:
    """Create what is missing; return a line per thing created, for the log."""
    created = []
    os.chown(state_dir, hub_uid, hub_uid)
    os.chmod(state_dir, 0o700)
    if ensure_secret(state_dir / "jupyterhub_cookie_secret", secrets.token_hex(32), hub_uid, hub_uid, 0o600):
        created.append("cookie secret")
    if ensure_secret(proxy_token_dir / "token", secrets.token_hex(32), hub_uid, proxy_gid, 0o440):
        created.append("proxy token")
    if metrics_token_dir is not None and metrics_token_dir.is_dir():
        # group: the hub's; the monitoring profile's Prometheus joins it (group_add) to read it
        if ensure_secret(metrics_token_dir / "token", secrets.token_hex(32), hub_uid, hub_uid, 0o440):
            created.append("metrics token")
    password_file = state_dir / "admin-password"
    if ensure_secret(password_file, admin_password or secrets.token_urlsafe(18), hub_uid, hub_uid, 0o600):
        source = "from HUB_ADMIN_PASSWORD" if admin_password else "generated"
        created.append(f"initial admin password ({source}): read it with "
                       f"`docker compose exec hub cat {password_file}`")
    return created


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpuhub-init", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", default=STATE_DIR, type=Path)
    parser.add_argument("--proxy-token-dir", default="/run/proxy-token", type=Path)
    parser.add_argument("--metrics-token-dir", default="/run/metrics-token", type=Path)
    args = parser.parse_args(argv)
    password = read(os.environ, "HUB_ADMIN_PASSWORD") or None
    if password is not None and len(password) < 8:
        print("gpuhub-init: HUB_ADMIN_PASSWORD must have at least 8 characters (or leave it "
              "empty to have one generated)", file=sys.stderr)
        return 2
    for line in initialise(args.state_dir, args.proxy_token_dir, password,
                                  metrics_token_dir=args.metrics_token_dir) or ["nothing to do"]:
        print(f"gpuhub-init: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
