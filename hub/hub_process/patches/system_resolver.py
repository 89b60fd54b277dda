"""JupyterHub 6 makes its own requests (to the proxy, its services, users' servers) with
aiohttp, and aiohttp resolves names with c-ares when aiodns is installed, which JupyterHub 6
requires. On a Docker Swarm overlay network (services with endpoint_mode dnsrr), c-ares answered
"DNS server returned answer with no data" for the proxy's and the hub's names while those tasks
ran; the hub then gave up on its proxy after 30 s and exited, again after each restart (found by
tests/e2e/test_swarm.py after the upgrade from 5.5, whose Tornado client used the system
resolver). Here the hub's client resolves with the system resolver (getaddrinfo, as every other
process in the container does), unless an admin set a resolver in
JupyterHubHTTPClient.connector_options. Checked against JupyterHub 6.1.1's httpclient.py."""
from __future__ import annotations

from hub.hub_process.patches import require

WRITTEN_FOR = ">=6.1,<6.2"
UPSTREAM = "a configurable resolver default for JupyterHubHTTPClient (not reported upstream yet)"

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    require(__name__, WRITTEN_FOR, UPSTREAM)
    # after require(): only the JupyterHub this was written for is patched
    from aiohttp.resolver import ThreadedResolver
    from jupyterhub.httpclient import JupyterHubHTTPClient, _HTTPUnixConnector

    original = JupyterHubHTTPClient._new_connector

    def _new_connector(self):
        if "resolver" in self.connector_options:
            return original(self)
        # the same options as upstream's, plus the resolver (made here: it needs the running loop)
        return _HTTPUnixConnector(**{**self.connector_options, **self._internal_connector_options,
                                     "resolver": ThreadedResolver()})

    JupyterHubHTTPClient._new_connector = _new_connector
    _installed = True
