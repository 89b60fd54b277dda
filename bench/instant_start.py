"""Instant start, timed in a browser (issue 28): what a person waits for from Start to the first
output of `import torch`, with the warm kernel off and on, alternating in one run.

Each sample is a fresh Chromium context (empty cache, no cookies) on this machine: log in, open the
spawn form, choose the variant's profile, then the clock runs:

  start            the spawn form's Start is clicked (the server is not running)
  lab_first_byte   the first byte of JupyterLab's /lab page (Navigation Timing's responseStart)
  launcher         the launcher's cards are shown and the splash screen is gone (JupyterLab usable)
  notebook_card    the Notebook card is clicked (a moment after the launcher: JupyterLab is usable)
  kernel_idle      the notebook's kernel status reads Idle
  output           Shift+Enter on `import torch; print(torch.__version__)`; its output is shown

and the figures are the differences: start→lab_first_byte, start→launcher, card→idle,
card→output (typing excluded: the cell is typed before Shift+Enter is pressed, which is the next
timestamp), shift_enter→output. Also the bytes JupyterLab's page load transferred and their
uncompressed size (Resource Timing), and the spare kernel's memory (/api/gpuhub/warm-kernel).

Variants: `cold` and `warm`, profiles of bench/instant-start-profiles.yaml (warm_kernel: off, and
the default imports), and `warm_no_gzip`, `warm` with a browser that asks for no compression
(Accept-Encoding: identity), i.e. the server as it answered before compress_response. The stack is bench/instant-start.env's (its own names and port), removed at
the end. Writes bench/results/instant-start-<UTC time>.json and instant-start-latest.json.
Options: --samples N per variant (default 10; `make bench` runs 4), --keep (leave the stack up).
Run it under the shared Docker lock with the test images built (make bench does both).
"""
import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/e2e"))
sys.path.insert(0, str(ROOT / "bench"))
from hubclient import Hub, Stack  # noqa: E402
from run import summary  # noqa: E402 (bench/run.py: one percentile summary for every bench)

RESULTS = ROOT / "bench/results"
ENV_FILE = ROOT / "bench/instant-start.env"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# variant: (profile, whether the browser accepts gzip)
VARIANTS = {"cold": ("cold", True), "warm": ("warm", True), "warm_no_gzip": ("warm", False)}
CODE = "import torch; print('torch', torch.__version__)"
TIMEOUT = 120_000

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
  let transferred = 0, decoded = 0, requests = 0;
  for (const e of entries) { if (!e) continue; requests++; transferred += e.transferSize || 0; decoded += e.decodedBodySize || 0; }
  return {requests, transferred, decoded};
}"""
LAB_FIRST_BYTE = """() => { const n = performance.getEntriesByType('navigation')[0];
  return {url: n.name, first_byte: performance.timeOrigin + n.responseStart}; }"""


def log(message: str) -> None:
    print(f"[instant-start {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def until(page, check: str) -> float:
    """Epoch seconds (the browser's clock) at which the check first held."""
    return page.wait_for_function(check, timeout=TIMEOUT, polling=10).json_value() / 1000


def sample(browser, stack: Stack, hub: Hub, variant: str) -> dict:
    user = stack.env["HUB_ADMIN_USER"]
    profile, gzip = VARIANTS[variant]
    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  extra_http_headers={} if gzip else {"Accept-Encoding": "identity"})
    page = context.new_page()
    try:
        page.goto(f"{stack.url}/hub/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", stack.env["HUB_ADMIN_PASSWORD"])
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url("**/hub/**", timeout=30_000)
        page.goto(f"{stack.url}/hub/spawn")
        expect(page.locator("#spawn_form")).to_be_visible(timeout=30_000)
        page.check(f"#profile-{profile}")
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
        context.close()
        hub.stop(user)
    return {"variant": variant, "output": text.strip(),
            "start_to_lab_first_byte_s": marks["lab_first_byte"] - marks["start"],
            "start_to_launcher_s": marks["launcher"] - marks["start"],
            "card_to_idle_s": marks["kernel_idle"] - marks["notebook_card"],
            "card_to_output_minus_typing_s": (marks["kernel_idle"] - marks["notebook_card"])
            + (marks["output"] - marks["shift_enter"]),
            "shift_enter_to_output_s": marks["output"] - marks["shift_enter"],
            "lab_requests": loaded["requests"], "lab_bytes_transferred": loaded["transferred"],
            "lab_bytes_uncompressed": loaded["decoded"], "warm_kernel": warm}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    stack = Stack(ENV_FILE)
    stack.down()
    log("starting the stack (bench/instant-start.env)")
    stack.up()
    samples: list[dict] = []
    failures: list[dict] = []
    try:
        hub = Hub(stack.url, stack.admin_token())
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            sample(browser, stack, hub, "warm")  # not counted: the engine's and the page cache's first run
            for i in range(args.samples):
                order = list(VARIANTS)
                for variant in (order if i % 2 == 0 else order[::-1]):
                    try:
                        result = sample(browser, stack, hub, variant)
                    except Exception as exc:  # said in the JSON, left out of the figures
                        log(f"{variant}: failed: {exc!r}")
                        failures.append({"variant": variant, "error": repr(exc)[:500]})
                        continue
                    samples.append(result)
                    log(f"{variant}: start→launcher {result['start_to_launcher_s']:.2f} s, card→idle "
                        f"{result['card_to_idle_s']:.2f} s, shift+enter→output {result['shift_enter_to_output_s']:.2f} s")
            browser.close()
    finally:
        if not args.keep:
            stack.down()

    figures = ("start_to_lab_first_byte_s", "start_to_launcher_s", "card_to_idle_s",
               "card_to_output_minus_typing_s", "shift_enter_to_output_s")
    variants = {}
    for variant in VARIANTS:
        mine = [s for s in samples if s["variant"] == variant]
        if not mine:
            continue
        variants[variant] = {f: summary([s[f] for s in mine]) for f in figures}
        variants[variant]["lab_bytes_transferred_p50"] = statistics.median(s["lab_bytes_transferred"] for s in mine)
        variants[variant]["lab_bytes_uncompressed_p50"] = statistics.median(s["lab_bytes_uncompressed"] for s in mine)
        variants[variant]["lab_requests_p50"] = statistics.median(s["lab_requests"] for s in mine)
        # the memory of the spare this sample's notebook took (measured when its imports were done)
        for key in ("resident", "anon"):
            values = [s["warm_kernel"][f"last_{key}_bytes"] for s in mine
                      if s["warm_kernel"] and s["warm_kernel"].get(f"last_{key}_bytes")]
            variants[variant][f"spare_{key}_mib_p50"] = round(statistics.median(values) / 2**20, 1) if values else None
    result = {"bench": "instant_start", "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "samples_per_variant": args.samples, "code": CODE,
              "env": {k: stack.env[k] for k in ("USER_MEM_LIMIT", "USER_CPU_LIMIT", "SINGLEUSER_IMAGE")},
              "variants": variants, "failures": failures, "samples": samples}
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"instant-start-{stamp}.json", "instant-start-latest.json"):
        (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"bench": "instant_start", "failed": len(failures),
                      **{v: {f: variants[v][f]["p50_s"] for f in figures} for v in variants}}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
