"""Run inside the single-user image (bench/run.py does): how long each setup's server command
takes, and how much CPU, from process start until it answers, with no container start and no
hub in the way (a stand-in hub answers the single-user server's version check).

    python server_start.py RUNS OURS_ARGS  ->  one JSON line: {setup: {"wall_p50_s", "cpu_p50_s", "runs"}}

OURS_ARGS: a JSON list, the arguments our spawner adds (bench/run.py takes them from
hub/hub_process/spawner/spawner.py, so that this measures what the spawner runs).

CPU is the server process's user + system time from start until it was stopped, right after
its first answer (stopping adds a few ms).
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUB_PORT, PORT, PREFIX = 8081, 8888, "/user/bench/"
# What each setup runs in its container: the floor's `jupyter lab`, the stock hub's image CMD,
# and the image's lean command that our spawner runs (plus OURS_ARGS).
SETUPS = {
    "floor": (["jupyter", "lab", f"--port={PORT}", "--no-browser", "--IdentityProvider.token="], "/api"),
    "stock": (["jupyterhub-singleuser", f"--port={PORT}"], f"{PREFIX}api"),
    "ours": (["gpuhub-singleuser", f"--port={PORT}"], f"{PREFIX}api"),
}


class StandInHub(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("X-JupyterHub-Version", os.environ.get("HUB_VERSION", "6.1.1"))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET  # activity reports

    def log_message(self, *args):
        pass


def start_once(command: list[str], path: str, env: dict) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    server = subprocess.Popen(command + ["--ip=127.0.0.1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=1).read()
            break
        except OSError:
            if server.poll() is not None:
                sys.exit(f"{command[0]} exited: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.005)
    wall = time.monotonic() - t0
    server.terminate()
    server.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    runs, ours_args = int(sys.argv[1]), json.loads(sys.argv[2])
    SETUPS["ours"][0].extend(ours_args)
    threading.Thread(target=ThreadingHTTPServer(("127.0.0.1", HUB_PORT), StandInHub).serve_forever, daemon=True).start()
    env = dict(os.environ, JUPYTERHUB_API_TOKEN="bench", JUPYTERHUB_API_URL=f"http://127.0.0.1:{HUB_PORT}/hub/api",
               JUPYTERHUB_CLIENT_ID="jupyterhub-user-bench", JUPYTERHUB_USER="bench", JUPYTERHUB_BASE_URL="/",
               JUPYTERHUB_SERVICE_PREFIX=PREFIX, JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{PORT}{PREFIX}",
               JUPYTERHUB_OAUTH_CALLBACK_URL=f"{PREFIX}oauth_callback", JUPYTERHUB_HOST="")
    result = {}
    for _ in range(runs):  # interleaved, so that a noisy moment hits every setup alike
        for setup, (command, path) in SETUPS.items():
            result.setdefault(setup, []).append(start_once(command, path, env))
    print(json.dumps({setup: {"wall_p50_s": round(statistics.median(w for w, _ in samples), 3),
                              "cpu_p50_s": round(statistics.median(c for _, c in samples), 3),
                              "runs": len(samples)} for setup, samples in result.items()}))


if __name__ == "__main__":
    main()
