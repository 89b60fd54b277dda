"""Instant start, timed in a browser (issue 28): what a person waits for from Start to the first
output of `import torch`, variant against baseline, alternating in one run.

Each sample is a fresh Chromium context (no cookies; an empty HTTP cache unless the variant's
cache is "warm") on this machine: log in, then the clock runs:

  start            the spawn form's Start is clicked (server started on the click), or the home
                   page's server button (a pre-started server: started through the API before)
  spawn_answered   the first byte of the answer to the spawn form's POST (JupyterHub waits up
                   to 1 s for the spawn before it redirects)
  lab_first_byte   the first byte of JupyterLab's /lab page (Navigation Timing's responseStart)
  launcher         the launcher's cards are shown and the splash screen is gone (JupyterLab usable)
  notebook_card    the Notebook card is clicked (a moment after the launcher)
  kernel_idle      the notebook's kernel status reads Idle
  output           Shift+Enter on `import torch; print(torch.__version__)`; its output is shown

The figures are the differences: start→spawn_answered, start→lab_first_byte, start→launcher,
card→idle, card→output (typing excluded: the cell is typed before Shift+Enter), shift_enter→output;
also each page request on the way from Start to /lab (the redirects: spawn, spawn-pending,
/user/<name>/, OAuth, callback, /lab) with its start and first byte after Start, the bytes
JupyterLab's page load transferred and their uncompressed size (Resource Timing), and the spare
kernel's memory (/api/gpuhub/warm-kernel).

Variants (--variants, comma-separated; --full: all of them, 20 samples each):
  cold                  warm kernel off (profile cold of bench/instant-start-profiles.yaml)
  warm                  warm kernel on: the spare starts once the server is quiet after /lab
  warm_eager            warm kernel on, the spare started at once when /lab is served (the image
                        with GPUHUB_WARM_START=lab, built here from the test image): before the change
  warm_no_gzip          warm, the browser asking for no compression (Accept-Encoding: identity)
  cold_cache, warm_cache            with the browser's HTTP cache warm (a profile directory kept
                        across this variant's samples, cookies cleared each time)
  cold_evicted, warm_evicted        torch's files evicted from the page cache before the sample
                        (posix_fadvise DONTNEED on each file of torch, from a container of the image)
  pre_warm, pre_warm_cache          the server pre-started through the API (warm kernel on),
                        Start is the home page's server button; empty / warm browser cache
  pre_cold              pre-started, warm kernel off

Default (make bench): --variants cold,warm --samples 4. Samples run in rounds, each round every
variant once, the order reversed every other round. The stack is bench/instant-start.env's (its own
names and port), removed at the end. Writes bench/results/instant-start-<UTC time>.json and
instant-start-latest.json (--tag NAME: instant-start-<NAME>-<UTC time>.json, and no -latest).
Options: --keep (leave the stack up). Run it under the shared Docker lock with the test images
built (make bench does both).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/e2e"))
sys.path.insert(0, str(ROOT / "bench"))
from hubclient import Hub, Stack  # noqa: E402
from run import summary  # noqa: E402 (bench/run.py: one percentile summary for every bench)

RESULTS = ROOT / "bench/results"
ENV_FILE = ROOT / "bench/instant-start.env"
EAGER_IMAGE = "gpuhub/pytorch-notebook:instant-eager"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# variant: profile, whether the browser accepts gzip, its HTTP cache, torch's files, the server
VARIANTS = {
    "cold": dict(profile="cold"),
    "warm": dict(profile="warm"),
    "warm_eager": dict(profile="eager"),
    "warm_no_gzip": dict(profile="warm", gzip=False),
    "cold_cache": dict(profile="cold", cache="warm"),
    "warm_cache": dict(profile="warm", cache="warm"),
    "cold_evicted": dict(profile="cold", torch="evicted"),
    "warm_evicted": dict(profile="warm", torch="evicted"),
    "pre_cold": dict(profile="cold", server="prestarted"),
    "pre_warm": dict(profile="warm", server="prestarted"),
    "pre_warm_cache": dict(profile="warm", server="prestarted", cache="warm"),
}
DEFAULTS = dict(gzip=True, cache="empty", torch="cached", server="click")
FULL = list(VARIANTS)
CODE = "import torch; print('torch', torch.__version__)"
TIMEOUT = 120_000
# Run in a container of the image: drop torch's files from the page cache (the host's: the
# container reads the image's layer files) and say how much of libtorch_cpu.so stays resident.
EVICT = r"""
import os, sys, mmap
root = '/opt/venv/lib/python3.11/site-packages/torch'
n = size = 0
for d, _, files in os.walk(root):
    for f in files:
        p = os.path.join(d, f)
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); n += 1; size += os.fstat(fd).st_size
        finally:
            os.close(fd)
print(n, size)
"""

# Browser-side checks that answer Date.now() the moment they hold (no Python round trip).
LAUNCHER = """() => (document.querySelector('.jp-LauncherCard') && !document.querySelector('#jupyterlab-splash'))
                    ? Date.now() : false"""
KERNEL_IDLE = """() => {
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
  const bar = document.querySelector('#jp-main-statusbar');
  return panel && bar && /\\|\\s*Idle/.test(bar.textContent) ? Date.now() : false;
}"""
OUTPUT = """() => {
  const out = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output');
  return out && out.textContent.includes('torch') ? Date.now() : false;
}"""
BYTES = """() => {
  const entries = [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')];
  let transferred = 0, decoded = 0, requests = 0, cached = 0;
  for (const e of entries) { if (!e) continue; requests++; transferred += e.transferSize || 0; decoded += e.decodedBodySize || 0;
    if (e.transferSize === 0 && e.decodedBodySize > 0) cached++; }
  return {requests, transferred, decoded, cached};
}"""
LAB_FIRST_BYTE = """() => { const n = performance.getEntriesByType('navigation')[0];
  return {url: n.name, first_byte: performance.timeOrigin + n.responseStart}; }"""


def log(message: str) -> None:
    print(f"[instant-start {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def until(page, check: str) -> float:
    """Epoch seconds (the browser's clock) at which the check first held."""
    return page.wait_for_function(check, timeout=TIMEOUT, polling=10).json_value() / 1000


def options(variant: str) -> dict:
    return {**DEFAULTS, **VARIANTS[variant]}


def hop_name(path: str, user: str) -> str:
    """A page request on the way to /lab, by what it is."""
    for prefix, name in ((f"/user/{user}/oauth_callback", "oauth_callback"), (f"/user/{user}/lab", "lab"),
                         ("/hub/api/oauth2/authorize", "authorize"), ("/hub/spawn-pending", "spawn_pending"),
                         ("/hub/spawn", "spawn"), ("/hub/home", "home")):
        if path.startswith(prefix):
            return name
    return "user_root" if path.rstrip("/") == f"/user/{user}" else path


def numbered(hops: list[dict], user: str) -> tuple[list[dict], list[str]]:
    """The page requests and their names, a name's second and later requests numbered (`lab`,
    the redirecting /user/<name>/lab, then `lab#2`, the page)."""
    seen: dict[str, int] = {}
    names = []
    for h in hops:
        name = hop_name(h["path"], user)
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return hops, names


def evict_torch(stack: Stack) -> dict:
    image = stack.env["SINGLEUSER_IMAGE"]
    t0 = time.monotonic()
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", EVICT],
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    return {"files": int(out[0]), "bytes": int(out[1]), "seconds": round(time.monotonic() - t0, 2)}


class Browsers:
    """One headless Chromium for fresh contexts, and a persistent profile per warm-cache variant."""

    def __init__(self, p):
        self.p = p
        self.browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        self.persistent: dict[str, object] = {}
        self.dirs: list[str] = []

    def context(self, variant: str):
        o = options(variant)
        headers = {} if o["gzip"] else {"Accept-Encoding": "identity"}
        if o["cache"] == "empty":
            return self.browser.new_context(viewport={"width": 1280, "height": 800}, extra_http_headers=headers)
        if variant not in self.persistent:
            self.dirs.append(tempfile.mkdtemp(prefix="gpuhub-instant-"))
            self.persistent[variant] = self.p.chromium.launch_persistent_context(
                self.dirs[-1], executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1280, "height": 800}, extra_http_headers=headers)
        context = self.persistent[variant]
        context.clear_cookies()  # a new login each time; the HTTP cache stays
        return context

    def done(self, variant: str, context) -> None:
        if options(variant)["cache"] == "empty":
            context.close()
        else:
            for page in context.pages:
                page.close()

    def close(self) -> None:
        for context in self.persistent.values():
            context.close()
        self.browser.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def sample(browsers: Browsers, stack: Stack, hub: Hub, variant: str) -> dict:
    user = stack.env["HUB_ADMIN_USER"]
    o = options(variant)
    evicted = evict_torch(stack) if o["torch"] == "evicted" else None
    if o["server"] == "prestarted":
        hub.start(user, options={"profile": o["profile"]}, interval=0.1)
    context = browsers.context(variant)
    page = context.new_page()
    hops: list[dict] = []

    def finished(request):
        if request.resource_type == "document":
            timing = request.timing
            hops.append({"path": urlsplit(request.url).path, "method": request.method,
                         "started": timing["startTime"] / 1000,
                         "first_byte": (timing["startTime"] + timing["responseStart"]) / 1000
                         if timing["responseStart"] >= 0 else None})

    try:
        page.goto(f"{stack.url}/hub/login?next=%2Fhub%2Fhome")  # not to a running server: the clock is not on
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", stack.env["HUB_ADMIN_PASSWORD"])
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/hub/**", timeout=30_000)
        if o["server"] == "prestarted":
            button = page.locator("#start")
            expect(button).to_be_visible(timeout=30_000)
            page.on("requestfinished", finished)
            page.on("requestfailed", finished)
            marks = {"start": time.time()}
            button.click()
        else:
            page.goto(f"{stack.url}/hub/spawn")
            expect(page.locator("#spawn_form")).to_be_visible(timeout=30_000)
            page.check(f"#profile-{o['profile']}")
            page.on("requestfinished", finished)
            page.on("requestfailed", finished)
            marks = {"start": time.time()}
            page.click("#spawn_form [type=submit]")
        page.wait_for_url(f"**/user/{user}/lab**", timeout=TIMEOUT)
        marks["launcher"] = until(page, LAUNCHER)
        nav = page.evaluate(LAB_FIRST_BYTE)
        marks["lab_first_byte"] = nav["first_byte"] / 1000
        loaded = page.evaluate(BYTES)
        marks["notebook_card"] = time.time()
        page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
        marks["kernel_idle"] = until(page, KERNEL_IDLE)
        editor = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content").first
        editor.click()
        page.keyboard.type(CODE)
        marks["shift_enter"] = time.time()
        page.keyboard.press("Shift+Enter")
        marks["output"] = until(page, OUTPUT)
        warm = page.evaluate(f"""fetch('/user/{user}/api/gpuhub/warm-kernel', {{headers: {{'X-XSRFToken':
            decodeURIComponent((document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [, ''])[1])}}}})
            .then(r => r.ok ? r.json() : null)""")
        text = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").first.inner_text()
    finally:
        browsers.done(variant, context)
        hub.stop(user)
    start = marks["start"]
    hops = [{"name": name, "method": h["method"],
             "started_s": round(h["started"] - start, 3),
             "first_byte_s": None if h["first_byte"] is None else round(h["first_byte"] - start, 3)}
            for h, name in zip(*numbered(sorted((h for h in hops if h["started"] >= start - 0.05),
                                                key=lambda h: h["started"]), user))]
    answered = next((h["first_byte_s"] for h in hops if h["name"] in ("spawn", "user_root", "lab")), None)
    return {"variant": variant, "output": text.strip(),
            "start_to_spawn_answered_s": answered,
            "start_to_lab_first_byte_s": marks["lab_first_byte"] - start,
            "start_to_launcher_s": marks["launcher"] - start,
            "lab_first_byte_to_launcher_s": marks["launcher"] - marks["lab_first_byte"],
            "card_to_idle_s": marks["kernel_idle"] - marks["notebook_card"],
            "card_to_output_minus_typing_s": (marks["kernel_idle"] - marks["notebook_card"])
            + (marks["output"] - marks["shift_enter"]),
            "shift_enter_to_output_s": marks["output"] - marks["shift_enter"],
            "hops": hops, "torch_evicted": evicted,
            "lab_requests": loaded["requests"], "lab_requests_from_cache": loaded["cached"],
            "lab_bytes_transferred": loaded["transferred"],
            "lab_bytes_uncompressed": loaded["decoded"], "warm_kernel": warm}


def build_eager_image(stack: Stack) -> None:
    """The test image with the spare started at once when /lab is served (the behaviour before the
    spare waited for quiet), for warm_eager."""
    dockerfile = f"FROM {stack.env['SINGLEUSER_IMAGE']}\nENV GPUHUB_WARM_START=lab\n"
    subprocess.run(["docker", "build", "-q", "-t", EAGER_IMAGE, "-"], input=dockerfile, text=True,
                   capture_output=True, check=True, timeout=300)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=None, help="samples per variant (default 4; --full: 20)")
    parser.add_argument("--variants", default=None, help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--full", action="store_true", help="every variant, 20 samples each (unless given)")
    parser.add_argument("--tag", default="", help="name part of the results file; no -latest is written")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    chosen = args.variants.split(",") if args.variants else (FULL if args.full else ["cold", "warm"])
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    samples_per_variant = args.samples or (20 if args.full else 4)

    stack = Stack(ENV_FILE)
    stack.down()
    if any(options(v)["profile"] == "eager" for v in chosen):
        build_eager_image(stack)
    load_before, t_begin = loadavg(), time.time()
    log(f"starting the stack (bench/instant-start.env); load {load_before}")
    stack.up()
    samples: list[dict] = []
    failures: list[dict] = []
    try:
        hub = Hub(stack.url, stack.admin_token())
        with sync_playwright() as p:
            browsers = Browsers(p)
            # not counted: the engine's and the page cache's first run, and each warm cache's filling
            for variant in ["warm"] + [v for v in chosen if options(v)["cache"] == "warm"]:
                sample(browsers, stack, hub, variant)
            for i in range(samples_per_variant):
                for variant in (chosen if i % 2 == 0 else chosen[::-1]):
                    try:
                        result = sample(browsers, stack, hub, variant)
                    except Exception as exc:  # said in the JSON, left out of the figures
                        log(f"{variant}: failed: {exc!r}")
                        failures.append({"variant": variant, "error": repr(exc)[:500]})
                        continue
                    samples.append(result)
                    log(f"{variant}: start→lab {result['start_to_lab_first_byte_s']:.2f} s, start→launcher "
                        f"{result['start_to_launcher_s']:.2f} s, card→idle {result['card_to_idle_s']:.2f} s, "
                        f"shift+enter→output {result['shift_enter_to_output_s']:.2f} s")
            browsers.close()
    finally:
        if not args.keep:
            stack.down()
            if any(options(v)["profile"] == "eager" for v in chosen):  # its one layer; the test image stays
                subprocess.run(["docker", "rmi", EAGER_IMAGE], capture_output=True, check=False, timeout=120)

    figures = ("start_to_spawn_answered_s", "start_to_lab_first_byte_s", "start_to_launcher_s",
               "lab_first_byte_to_launcher_s", "card_to_idle_s", "card_to_output_minus_typing_s",
               "shift_enter_to_output_s")
    variants = {}
    for variant in chosen:
        mine = [s for s in samples if s["variant"] == variant]
        if not mine:
            continue
        variants[variant] = {"options": options(variant),
                             **{f: summary([s[f] for s in mine if s[f] is not None]) for f in figures
                                if any(s[f] is not None for s in mine)}}
        for key in ("lab_bytes_transferred", "lab_bytes_uncompressed", "lab_requests", "lab_requests_from_cache"):
            variants[variant][f"{key}_p50"] = statistics.median(s[key] for s in mine)
        # each page request on the way to /lab: the p50 of its first byte after Start, by name
        names = sorted({h["name"] for s in mine for h in s["hops"]},
                       key=lambda n: statistics.median(h["started_s"] for s in mine for h in s["hops"] if h["name"] == n))
        variants[variant]["hops_first_byte_p50_s"] = {
            n: round(statistics.median(h["first_byte_s"] for s in mine for h in s["hops"]
                                       if h["name"] == n and h["first_byte_s"] is not None), 3)
            for n in names if any(h["name"] == n and h["first_byte_s"] is not None for s in mine for h in s["hops"])}
        # the memory of the spare this sample's notebook took (measured when its imports were done)
        for key in ("resident", "anon"):
            values = [s["warm_kernel"][f"last_{key}_bytes"] for s in mine
                      if s["warm_kernel"] and s["warm_kernel"].get(f"last_{key}_bytes")]
            variants[variant][f"spare_{key}_mib_p50"] = round(statistics.median(values) / 2**20, 1) if values else None
    result = {"bench": "instant_start", "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.time() - t_begin), "samples_per_variant": samples_per_variant,
              "variant_order": chosen, "code": CODE, "load_before": load_before, "load_after": loadavg(),
              "cpus": os.cpu_count(),
              "env": {k: stack.env[k] for k in ("USER_MEM_LIMIT", "USER_CPU_LIMIT", "SINGLEUSER_IMAGE")},
              "variants": variants, "failures": failures, "samples": samples}
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    names = [f"instant-start-{args.tag}-{stamp}.json"] if args.tag else [f"instant-start-{stamp}.json",
                                                                         "instant-start-latest.json"]
    for name in names:
        (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"bench": "instant_start", "file": names[0], "failed": len(failures),
                      **{v: {f: variants[v][f]["p50_s"] for f in figures if f in variants[v]} for v in variants}}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
