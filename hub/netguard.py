"""gpuhub-netguard: what a user's container may reach on the network, enforced by the host's
firewall (docs/security.md, "Network").

All of the deployment's containers share one bridge network (``<prefix>-net``): the proxy and
the hub must reach every user's server, and 200 per-user networks would exhaust Docker's
address pools. Docker documents the ``DOCKER-USER`` chain for rules of one's own, evaluated
before its own on every forwarded packet (bridged ones too: ``br_netfilter``). This process
(a compose service on the host's network namespace, with NET_ADMIN and the Docker socket)
keeps two chains in step with the engine:

- ``GPUHUB-FWD`` (jumped to from DOCKER-USER): on the bridge, the hub and the proxy reach
  everything; anyone else (users' servers, and any container not known to be ours) reaches
  only the hub's API (8081), the proxy's public port (8000), Caddy's 80/443 and nothing else
  on the bridge — not another user's server, not the proxy's API, not the services' ports,
  not Prometheus. Prometheus reaches the console's metrics port. Nothing on the bridge
  reaches link-local addresses (a cloud's metadata service) and, with ``USER_EGRESS=closed``,
  a user's server reaches nothing outside it.
- ``GPUHUB-IN`` (jumped to from INPUT): users' servers reach no service of the host itself
  (through the bridge's gateway address), except DNS.

Containers are told apart by compose's labels, read from the engine when one starts or joins a
network (the engine's events) and every 5 seconds, when the kernel's rules are also checked
(someone may have flushed them); rules are replaced in one ``iptables-restore`` (no moment without them). They survive a hub restart (they
live in the kernel), a Docker daemon restart (the engine keeps DOCKER-USER; this service comes
back with it and re-checks), and ``make down``/``make up`` (a new network, new rules). Rules
are left in place when this process stops: closed rather than open.
"""
from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
import docker.errors
from hub.settings.table import read
import os
import docker
import threading

log = logging.getLogger("gpuhub-netguard")

FORWARD_CHAIN = "GPUHUB-FWD"
INPUT_CHAIN = "GPUHUB-IN"
INFRA_SERVICES = ("hub", "proxy", "caddy", "prometheus")
LINK_LOCAL = "169.254.0.0/16"
HUB_API_PORT, PROXY_PORT, PROXY_API_PORT, CONSOLE_PORT = 8081, 8000, 8001, 10101


@dataclass(frozen=True)
class Layout:
    """What the rules are made from: the bridge's interface and subnet, and our services' addresses."""
    bridge: str
    subnet: str
    infra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # service -> IPv4 addresses

    def addresses(self, *services: str) -> list[str]:
        return sorted({ip for name in services for ip in self.infra.get(name, ())})


def rules(layout: Layout, egress: str = "open") -> dict[str, list[str]]:
    """The two chains' rules (iptables argument strings), pure."""
    br = layout.bridge
    on_bridge = f"-i {br} -o {br}"
    fwd = [f"-i {br} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
           # never the link-local range (a cloud's metadata service), not even for our services
           f"-i {br} -d {LINK_LOCAL} -j DROP"]
    for ip in layout.addresses("hub", "proxy"):
        fwd.append(f"{on_bridge} -s {ip}/32 -j RETURN")
    for ip in layout.addresses("hub"):
        fwd.append(f"{on_bridge} -d {ip}/32 -p tcp -m tcp --dport {HUB_API_PORT} -j RETURN")
    for ip in layout.addresses("proxy"):
        fwd.append(f"{on_bridge} -d {ip}/32 -p tcp -m tcp --dport {PROXY_PORT} -j RETURN")
    for ip in layout.addresses("caddy"):
        fwd.append(f"{on_bridge} -d {ip}/32 -p tcp -m multiport --dports 80,443 -j RETURN")
    for source in layout.addresses("prometheus"):
        for ip in layout.addresses("hub"):
            fwd.append(f"{on_bridge} -s {source}/32 -d {ip}/32 -p tcp -m tcp --dport {CONSOLE_PORT} -j RETURN")
    fwd.append(f"{on_bridge} -j DROP")
    if egress == "closed":
        for ip in layout.addresses(*INFRA_SERVICES):  # the hub (OAuth) and Caddy (ACME) go out
            fwd.append(f"-i {br} ! -o {br} -s {ip}/32 -j RETURN")
        fwd.append(f"-i {br} ! -o {br} -j DROP")
    inp = [f"-i {br} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
           *(f"-i {br} -s {ip}/32 -j RETURN" for ip in layout.addresses(*INFRA_SERVICES)),
           f"-i {br} -p udp -m udp --dport 53 -j RETURN",
           f"-i {br} -p tcp -m tcp --dport 53 -j RETURN",
           f"-i {br} -j DROP"]
    return {FORWARD_CHAIN: fwd, INPUT_CHAIN: inp}


def restore_text(chains: Mapping[str, list[str]]) -> str:
    """Input for ``iptables-restore --noflush``: declaring a chain empties it, so the chains are
    replaced in one transaction and other chains are left alone."""
    lines = ["*filter", *(f":{name} - [0:0]" for name in chains)]
    lines += [f"-A {name} {rule}" for name, chain in chains.items() for rule in chain]
    return "\n".join([*lines, "COMMIT", ""])


def layout_from_engine(client, network_name: str, project: str) -> Layout | None:
    """The bridge of ``network_name`` and the addresses of our compose services on it."""

    try:
        network = client.api.inspect_network(network_name)
    except docker.errors.NotFound:
        return None
    options = network.get("Options") or {}
    bridge = options.get("com.docker.network.bridge.name") or f"br-{network['Id'][:12]}"
    subnets = [c.get("Subnet") for c in (network.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
    infra: dict[str, set[str]] = {}
    for container in client.api.containers(filters={"network": network["Id"],
                                                    "label": f"com.docker.compose.project={project}"}):
        labels = container.get("Labels") or {}
        service = labels.get("com.docker.compose.service")
        # A container inherits its image's labels, and compose labels the images it builds with
        # their project and service: any container of the hub's image would pass for the hub.
        # Only compose puts its config hash on a service's container (not on images), and
        # one-off containers (`compose run`) are not services.
        if (service not in INFRA_SERVICES or "com.docker.compose.config-hash" not in labels
                or labels.get("com.docker.compose.oneoff", "False") != "False"):
            continue
        endpoint = ((container.get("NetworkSettings") or {}).get("Networks") or {}).get(network_name) or {}
        if endpoint.get("IPAddress"):
            infra.setdefault(service, set()).add(endpoint["IPAddress"])
    return Layout(bridge, subnets[0] if subnets else "", {k: tuple(sorted(v)) for k, v in infra.items()})


class Firewall:
    """The host's iptables, through whichever backend (nft or legacy) holds Docker's chains."""

    def __init__(self, run=subprocess.run):
        self.run = run
        self.binary = self._backend()

    def _backend(self) -> str:
        for binary in ("iptables-nft", "iptables-legacy", "iptables"):
            try:
                if self.run([binary, "-w", "-n", "-L", "DOCKER-USER"], capture_output=True).returncode == 0:
                    return binary
            except FileNotFoundError:
                continue
        raise RuntimeError("no DOCKER-USER chain in either iptables backend: is the Docker engine running with "
                           "its iptables rules (\"iptables\": true, the default)?")

    def apply(self, chains: Mapping[str, list[str]]) -> None:
        restore = f"{self.binary}-restore"  # iptables-nft-restore, iptables-legacy-restore
        self.run([restore, "-w", "--noflush"], input=restore_text(chains).encode(), check=True,
                 capture_output=True)
        for parent, chain in (("DOCKER-USER", FORWARD_CHAIN), ("INPUT", INPUT_CHAIN)):
            if self.run([self.binary, "-w", "-C", parent, "-j", chain], capture_output=True).returncode != 0:
                self.run([self.binary, "-w", "-I", parent, "1", "-j", chain], check=True, capture_output=True)

    def remove(self) -> None:
        """Take our chains out (USER_NETWORK_ISOLATION=false): the jumps, then the chains."""
        for parent, chain in (("DOCKER-USER", FORWARD_CHAIN), ("INPUT", INPUT_CHAIN)):
            for _ in range(16):  # each -D takes one jump out; there is one, unless someone doubled it
                if self.run([self.binary, "-w", "-D", parent, "-j", chain], capture_output=True).returncode != 0:
                    break
            self.run([self.binary, "-w", "-F", chain], capture_output=True)
            self.run([self.binary, "-w", "-X", chain], capture_output=True)

    def current(self) -> dict[str, list[str]]:
        """The chains as the kernel has them (to notice a flush), in -S form without '-A NAME'."""
        found = {}
        for chain in (FORWARD_CHAIN, INPUT_CHAIN):
            out = self.run([self.binary, "-w", "-S", chain], capture_output=True, text=True)
            found[chain] = [line.split(" ", 2)[2] for line in out.stdout.splitlines()
                            if line.startswith(f"-A {chain} ")] if out.returncode == 0 else None
        for parent, chain in (("DOCKER-USER", FORWARD_CHAIN), ("INPUT", INPUT_CHAIN)):
            if self.run([self.binary, "-w", "-C", parent, "-j", chain], capture_output=True).returncode != 0:
                found[chain] = None
        return found


def watch_events(client, wake) -> None:
    """Wake the guard at once when a container starts or joins a network (the hub's new address
    after a restart), instead of at the next interval. Runs in a thread; reconnects."""
    while True:
        try:
            wake.set()  # (re)connected: whatever happened meanwhile is read now
            for _ in client.events(decode=True, filters={"type": ["container", "network"],
                                                         "event": ["start", "connect", "disconnect", "create"]}):
                wake.set()
        except Exception:
            time.sleep(1)


def guard(client, firewall: Firewall, network: str, project: str, egress: str, ready: Path,
          interval: float = 5.0, stop=lambda: False, wake=None) -> None:
    applied: dict | None = None
    while not stop():
        try:
            layout = layout_from_engine(client, network, project)
            if layout is None:
                log.info("network %s not there yet", network)
            else:
                wanted = rules(layout, egress)
                if wanted != applied or _normalise(firewall.current()) != _normalise(wanted):
                    firewall.apply(wanted)
                    applied = wanted
                    log.info("rules for %s (%s): %s", layout.bridge, layout.subnet,
                             {k: list(v) for k, v in layout.infra.items()})
                ready.write_text(layout.bridge)
        except Exception:  # the engine restarting, a transient iptables lock: try again
            log.exception("could not bring the rules in step; retrying")
        if wake is None:
            time.sleep(interval)
        else:
            wake.wait(interval)
            wake.clear()


def _normalise(chains: Mapping[str, list[str] | None]) -> dict:
    """iptables -S prints rules in a canonical form; compare on what matters to this check."""
    return {name: None if chain is None else len(chain) for name, chain in chains.items()}


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="gpuhub-netguard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ready-file", default="/run/gpuhub-netguard.ready")
    parser.add_argument("--print", action="store_true", help="print the rules for the network as it is now, and exit")
    args = parser.parse_args(argv)


    env = os.environ
    logging.basicConfig(level=read(env, "HUB_LOG_LEVEL").upper(), format="[%(name)s %(asctime)s] %(message)s")
    prefix = read(env, "HUB_NAME_PREFIX")
    egress = read(env, "USER_EGRESS")
    client = docker.from_env(timeout=10)
    if args.print:
        layout = layout_from_engine(client, f"{prefix}-net", prefix)
        print(restore_text(rules(layout, egress)) if layout else f"no network {prefix}-net")
        return 0
    if not read(env, "USER_NETWORK_ISOLATION"):
        log.warning("USER_NETWORK_ISOLATION=false: users' servers can reach each other and the services' ports")
        try:
            Firewall().remove()  # the rules an earlier start left
        except RuntimeError as exc:
            log.warning("%s", exc)
        Path(args.ready_file).write_text("off")
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        return 0

    stopping, wake = [], threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: (stopping.append(1), wake.set()))
    threading.Thread(target=watch_events, args=(docker.from_env(timeout=None), wake), daemon=True).start()
    guard(client, Firewall(), f"{prefix}-net", prefix, egress, Path(args.ready_file),
          stop=lambda: bool(stopping), wake=wake)
    return 0


if __name__ == "__main__":
    sys.exit(main())
