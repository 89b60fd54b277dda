"""A network namespace of its own for a test's Chromium, so that the engine's network changes
on this host never reach it.

Why: Chromium watches the network interfaces of its namespace (netlink) and, when one appears
or changes, closes its HTTP/2 sessions with ERR_NETWORK_CHANGED, failing every request in
flight on them (HTTP/1.1 requests already sent survive). Starting a user's server adds the
container's veth interface on this host, so a browser here that talks HTTP/2 (to Caddy, in the
`tls` profile) loses the spawn page's navigation or JupyterLab's script loads (a blank page).
A user's browser on another machine never sees the server's interfaces; this puts the test's
browser in the same position. Shown on its own (a private namespace, Caddy 2.6 and Chromium
156, an interface added during six 3 s fetches): over h2 all six failed with
net::ERR_NETWORK_CHANGED, over HTTP/1.1 none (docs/security.md). The namespace's own set-up
must be over before Chromium starts: with IPv6 on, its link-local addresses arrived a moment
later and 4 of 6 first navigations failed the same way; with IPv6 off there and a wait until
the links and addresses stay the same, 0 of 12.

``IsolatedBrowserNetwork(ports)``: inside the namespace 127.0.0.1:<port> is forwarded to
127.0.0.1:<port> on the host (where the stack publishes them); ``executable`` is a script that
starts /usr/bin/chromium in the namespace, for Playwright's ``executable_path``. Needs root.
"""
import ctypes
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class IsolatedBrowserNetwork:
    def __init__(self, ports, chromium: str = "/usr/bin/chromium"):
        self.ports, self.chromium = list(ports), chromium
        self.name = f"gpuhubtest-browser-{uuid.uuid4().hex[:8]}"
        self._servers: list[socket.socket] = []
        self._dir = tempfile.TemporaryDirectory(prefix="gpuhubtest-browser-")
        self.executable = os.path.join(self._dir.name, "chromium")

    def __enter__(self):
        ip = lambda *args: subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)  # noqa: E731
        ip("netns", "add", self.name)
        # Nothing may change in the namespace once Chromium runs, its own set-up included: IPv6
        # would add link-local addresses a moment later (after duplicate address detection),
        # and Chromium would take that for a network change too.
        subprocess.run(["ip", "netns", "exec", self.name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True, capture_output=True, timeout=30)
        ip("-n", self.name, "link", "set", "lo", "up")
        # A connected interface with an address besides loopback (Chromium reports no connection
        # with loopback alone): a veth pair, both ends in the namespace, so it has a carrier.
        ip("-n", self.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        ip("-n", self.name, "addr", "add", "10.254.0.1/24", "dev", "eth0")
        ip("-n", self.name, "link", "set", "eth1", "up")
        ip("-n", self.name, "link", "set", "eth0", "up")
        self._settle()
        for port in self.ports:
            self._servers.append(self._listen_inside(port))
        with open(self.executable, "w") as f:
            f.write(f'#!/bin/sh\nexec nsenter --net=/run/netns/{self.name} {self.chromium} "$@"\n')
        os.chmod(self.executable, 0o755)
        return self

    def _settle(self, timeout: float = 10.0) -> None:
        """Until the namespace's links and addresses read the same twice, 0.5 s apart."""
        def state() -> str:
            return subprocess.run(["ip", "-n", self.name, "-o", "addr"], capture_output=True, text=True,
                                  timeout=30).stdout + subprocess.run(
                ["ip", "-n", self.name, "-o", "link"], capture_output=True, text=True, timeout=30).stdout
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            now = state()
            if now == last and "tentative" not in now and "NO-CARRIER" not in now:
                return
            last = now
            time.sleep(0.5)
        raise RuntimeError(f"the browser's network namespace did not settle: {last}")

    def _listen_inside(self, port: int) -> socket.socket:
        """A listening socket in the namespace (a socket keeps the namespace it was made in);
        its connections are forwarded from this (host) namespace."""
        made: dict = {}

        def make():  # setns changes only the calling thread's namespace
            host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(target)
                try:
                    made["server"] = socket.create_server(("127.0.0.1", port))
                finally:
                    _setns(host)
            except OSError as exc:
                made["error"] = exc
            finally:
                os.close(host)
                os.close(target)

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if "error" in made:
            raise made["error"]
        server = made["server"]
        threading.Thread(target=self._accept, args=(server, port), daemon=True).start()
        return server

    @staticmethod
    def _accept(server: socket.socket, port: int) -> None:
        while True:
            try:
                inside, _ = server.accept()
            except OSError:  # closed
                return
            try:
                outside = socket.create_connection(("127.0.0.1", port), timeout=10)
                outside.settimeout(None)
            except OSError:
                inside.close()
                continue
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def __exit__(self, *exc):
        for server in self._servers:
            server.close()
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=30)
        self._dir.cleanup()
