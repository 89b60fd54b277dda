"""A pre-started server (hub/gpus/prestart.py) is claimed at its person's first request to it.
JupyterHub has no hook for "a user's first request to their server": the proxy forwards it
straight to the server, and the activity the hub learns of (the proxy's routes, the server's own
reports) arrives up to 5 minutes late and has no "first". But the first visit of a browser to
a fresh server always passes through the hub: the server has no token for it yet (JupyterHub
deletes the server's OAuth client, and every token of it, when a server stops), so it sends the
browser to the hub's OAuth authorisation for its client. That request, by the server's owner, is
the claim: this patch writes its time into the claims file before JupyterHub answers it, for a
server the GPU console pre-started and nobody has claimed yet (one small file read per
authorisation, a write only for a claim).

A request to the server with an API token (a script) does not pass through the hub and is not a
claim; a browser is how a person comes to a lab session. Checked against JupyterHub 6.1.1's
apihandlers/auth.py (``OAuthAuthorizeHandler.get``)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hub.gpus import prestart as prestarts
from hub.hub_process.patches import require
from hub.settings.gpu_settings import GPUSettings

WRITTEN_FOR = ">=6.1,<6.2"
UPSTREAM = "no hook for a user's first request to their server (JupyterHub has none; not reported upstream)"

_installed = False


def claim(state_dir: Path, key: tuple[str, str], now: float) -> bool:
    """Write the claim of server ``key`` if it is pre-started and unclaimed; whether it was."""
    records = prestarts.PrestartFile(state_dir / prestarts.FILE).all()
    if not records:
        return False
    claims_file = state_dir / prestarts.CLAIMS_FILE
    if not prestarts.wants_claim(records, prestarts.read_claims(claims_file), key):
        return False
    prestarts.write_claim(claims_file, key, now)
    return True


def owned_server(user, client_id: str) -> str | None:
    """The name of ``user``'s server whose OAuth client this is ("" the default), or None."""
    for name, spawner in (getattr(user, "spawners", None) or {}).items():
        if client_id and spawner.oauth_client_id == client_id:
            return name
    return None


def install(state_dir: str | Path = Path(GPUSettings.intent_file).parent) -> None:
    global _installed
    if _installed:
        return
    require(__name__, WRITTEN_FOR, UPSTREAM)
    # JupyterHub's handlers (and its database layer) load when the patch is installed in the hub
    from jupyterhub.apihandlers.auth import OAuthAuthorizeHandler

    state = Path(state_dir)
    original = OAuthAuthorizeHandler.__dict__["get"]

    async def get(self, *args, **kwargs):
        try:
            server = owned_server(self.current_user, self.get_argument("client_id", ""))
            if server is not None:
                key = (self.current_user.name, server)
                if await asyncio.to_thread(claim, state, key, time.time()):
                    self.log.info("pre-start: %s claimed their pre-started server %r", key[0], server)
        except Exception:  # noqa: BLE001 - a claim never stands between a person and their server
            self.log.exception("pre-start: recording a claim failed")
        return await original(self, *args, **kwargs)

    OAuthAuthorizeHandler.get = get
    _installed = True
