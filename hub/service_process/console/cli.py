"""``gpuhub-gpus``: the GPU console's REST API from a shell, for scripts and for admins who
prefer a terminal. Standard library only, so it runs with any Python 3.11 on the host.

    export GPUHUB_TOKEN=<an admin's API token from the hub's Token page, /hub/token>
    gpuhub-gpus list                     # the GPU table
    gpuhub-gpus --version                # gpuhub's release (CHANGELOG.md)
    gpuhub-gpus pin alice 1              # GPU by index or UUID
    gpuhub-gpus unpin alice
    gpuhub-gpus drain GPU-…   /  undrain GPU-…
    gpuhub-gpus free 1 --yes             # stop the server holding GPU #1
    gpuhub-gpus free --user alice --yes
    gpuhub-gpus access --users alice,bob --groups ml     # who may use GPUs; --everyone
    gpuhub-gpus audit -n 20
    gpuhub-gpus queue                    # the line for GPUs (GPU_WHEN_FULL=queue)
    gpuhub-gpus queue move alice 1       # alice to the front (--server NAME for a named server)
    gpuhub-gpus queue remove alice       # cancel alice's waiting start
    gpuhub-gpus parked                   # parked servers (GPU_IDLE_ACTION=park): since, size, GPU
    gpuhub-gpus doctor [--json] [--strict]  # this host: engine, toolkit CVEs, driver vs CUDA, GPU health
    gpuhub-gpus swarm-node-config [--input FILE|-] [--json]  # this node's daemon.json lines (docs/swarm.md)
  teaching labs (docs/teaching.md):
    gpuhub-gpus roster roster.csv [--dry-run] [--skip-bad-rows]   # import: users, courses, roles
    gpuhub-gpus courses                  # courses, their people and reservations
    gpuhub-gpus course ml101 --max-hours 3 [--title …] [--no-materials]
    gpuhub-gpus stop-course ml101 --yes  # stop its students' servers (--include-staff)
    gpuhub-gpus reset ml101 alice --yes  # fresh container next start; files untouched
    gpuhub-gpus reserve ml101 2 --start 2026-11-23T09:00+01:00 --end 2026-11-23T11:00+01:00
    gpuhub-gpus reserve ml101 2 --start ... --end ... --prestart-minutes 10   # servers ready at 08:50
    gpuhub-gpus unreserve r-1a2b3c4d
    gpuhub-gpus share 3 4                # GPU #3 shared by up to 4 servers;  unshare 3
  usage and quotas (docs/usage.md):
    gpuhub-gpus usage --since 7d [--until …] [--by user|group|course|gpu|node] [--bucket day|week|month] [--csv]
    gpuhub-gpus quota list
    gpuhub-gpus quota set course ml101 20h/7d      # each member: 20 GPU-hours in any 7 days
    gpuhub-gpus quota set default - 40h/7d         # every user
    gpuhub-gpus quota remove user alice

Where: ``--url`` or $GPUHUB_URL (default http://localhost:8000; in the hub's container the
image sets http://proxy:8000). Exit status: 0 done, 1 refused by the API (its message on
stderr), 2 bad usage, 3 the hub could not be reached.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote
from hub.usage.quota import QuotaError, parse_spec
from hub import __version__
from hub.gpus import doctor
import subprocess
from hub.gpus.swarm import gpus_from_smi_list, node_config, node_config_text

from hub.times import utc_day

SERVICE_PATH = "/services/gpu-console/api/"


class APIError(Exception):
    def __init__(self, status: int, message: str, body: Any = None):
        super().__init__(message)
        self.status, self.message, self.body = status, message, body if isinstance(body, dict) else {}


class Unreachable(Exception):
    pass


class Client:
    def __init__(self, url: str, token: str, timeout: float = 60):
        self.base = url.rstrip("/") + SERVICE_PATH
        self.token, self.timeout = token, timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        raw = self.call_bytes(method, path, body)
        return json.loads(raw) if raw else {}

    def call_text(self, method: str, path: str) -> str:
        return self.call_bytes(method, path).decode()

    def call_bytes(self, method: str, path: str, body: Any = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"token {self.token}", "Accept": "application/json",
            "User-Agent": "gpuhub-gpus", **({"Content-Type": "application/json"} if data else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            body = None
            try:
                body = json.loads(raw)
                message = body["message"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace")[:300] or exc.reason
            if exc.code == 404 and not raw.startswith(b"{"):
                message = f"no GPU console at {self.base} (is the URL the hub's address?)"
            raise APIError(exc.code, message, body) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach {self.base}: {reason}") from None
        return raw


# ---- GPUs by index or UUID --------------------------------------------------------------

def resolve_gpu(client: Client, ref: str) -> str:
    """A UUID as is; an index (3 or #3) through the GPU table."""
    if ref.startswith(("GPU-", "MIG-")):
        return ref
    index = ref.removeprefix("#")
    if not index.isdigit():
        raise SystemExit(_usage(f"{ref!r} is neither a GPU index nor a UUID (GPU-… or MIG-…)"))
    gpus = [g for g in client.call("GET", "gpus")["gpus"] if g["index"] == int(index)]
    if len(gpus) != 1:
        what = "no GPU" if not gpus else f"{len(gpus)} devices (MIG instances)"
        raise SystemExit(_usage(f"index {index} names {what}; give the UUID instead"))
    return gpus[0]["uuid"]


def _usage(message: str) -> int:
    print(f"gpuhub-gpus: {message}", file=sys.stderr)
    return 2


# ---- output -----------------------------------------------------------------------------

def _gib(mib: int | None) -> str:
    return "n/a" if mib is None else f"{mib / 1024:.1f}"


def format_table(state: dict) -> str:
    rows = [("#", "UUID", "MODEL", "MEM GiB", "UTIL", "STATE", "HOLDER")]
    for g in state["gpus"]:
        states = []
        if g["holder"]:
            h = g["holder"]
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(h["since"])) if h.get("since") else "?"
            states.append(f"held by {h['user']}{'/' + h['server'] if h['server'] else ''} since {since}")
        if g["drained"]:
            states.append("drained")
        if g["pinned_to"]:
            states.append("pinned to " + ",".join(g["pinned_to"]))
        util = "n/a" if g["utilization_pct"] is None else f"{g['utilization_pct']}%"
        holder = ""
        if g["holder"]:
            holder = g["holder"]["server_url"] or f"container {g['holder']['container']} (not this hub's)"
        memory = "n/a" if g["memory_used_mib"] is None and g["memory_total_mib"] is None else \
            f"{_gib(g['memory_used_mib'])}/{_gib(g['memory_total_mib'])}"
        rows.append((str(g["index"]), g["uuid"], g["name"], memory, util,
                     "; ".join(states) or "free", holder))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    access = state["access"]
    who = "everyone" if access["everyone"] else "; ".join(
        x for x in (access["users"] and "users " + ",".join(access["users"]),
                    access["groups"] and "groups " + ",".join(access["groups"])) if x)
    usage = "NVML" if state["usage"]["source"] == "nvml" else f"n/a ({state['usage']['reason']})"
    lines += ["", f"GPUs may be used by: {who}", f"Usage: {usage}"]
    return "\n".join(lines)


def format_audit(entries: list[dict]) -> str:
    if not entries:
        return "(no actions yet)"
    return "\n".join(f"{e.get('time', '')}  {e.get('who', ''):<12} {e.get('action', ''):<8} {e.get('detail', '')}"
                     + (f"  — {e['note']}" if e.get("note") else "") for e in entries)


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [n.strip() for n in value.split(",") if n.strip()]


# ---- commands -----------------------------------------------------------------------------

def run(args: argparse.Namespace, client: Client) -> Any:
    note = {"note": args.note} if getattr(args, "note", None) else {}
    if args.command == "list":
        state = client.call("GET", "gpus")
        return state if args.json else format_table(state)
    if args.command == "pin":
        return client.call("POST", "pins", {"user": args.user, "gpu": resolve_gpu(client, args.gpu), **note})
    if args.command == "unpin":
        return client.call("DELETE", f"pins/{quote(args.user, safe='')}", note or None)
    if args.command == "drain":
        return client.call("POST", "drained", {"gpu": resolve_gpu(client, args.gpu), **note})
    if args.command == "undrain":
        return client.call("DELETE", f"drained/{quote(resolve_gpu(client, args.gpu), safe='')}", note or None)
    if args.command == "free":
        if (args.gpu is None) == (args.user is None):
            raise SystemExit(_usage("free: name a GPU, or --user (and --server)"))
        body = {"gpu": resolve_gpu(client, args.gpu)} if args.gpu else {"user": args.user}
        if args.server:
            body["server"] = args.server
        what = f"GPU {args.gpu}" if args.gpu else f"{args.user}'s GPU"
        if not args.yes:
            if not sys.stdin.isatty():
                raise SystemExit(_usage("free stops a user's server: confirm with --yes"))
            answer = input(f"Stop the server holding {what}? Unsaved work in it is lost. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("Nothing stopped.")
                return None
        return client.call("POST", "free", {**body, **note})
    if args.command == "access":
        if args.everyone and (args.users is not None or args.groups is not None):
            raise SystemExit(_usage("access: --everyone goes alone"))
        if not args.everyone and args.users is None and args.groups is None:
            access = client.call("GET", "access")
            if args.json:
                return access
            return "everyone" if access["everyone"] else (
                f"users: {', '.join(access['users']) or '-'}\ngroups: {', '.join(access['groups']) or '-'}")
        current = {"users": [], "groups": []} if args.everyone else client.call("GET", "access")
        body = {"users": _names(args.users) if args.users is not None else current["users"],
                "groups": _names(args.groups) if args.groups is not None else current["groups"], **note}
        return client.call("PUT", "access", body)
    if args.command == "audit":
        data = client.call("GET", f"audit?limit={args.n}")
        return data if args.json else format_audit(data["entries"])
    if args.command == "queue":
        return run_queue_command(args, client, note)
    if args.command == "parked":
        data = client.call("GET", "parked")
        return data if args.json else format_parked(data["parked"])
    return run_course_command(args, client, note)


def format_parked(parked: list[dict]) -> str:
    """The parked servers: who, since when, their GPU state in host memory, the GPU they resume on."""
    if not parked:
        return "no server is parked"
    lines = []
    for p in parked:
        server = f" (server {p['server']!r})" if p.get("server") else ""
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(p["since"]))
        gpu = f"#{p['gpu_index']}" if p.get("gpu_index") is not None else p["gpu"]
        held = f"held by {', '.join(p['gpu_held_by'])}" if p.get("gpu_held_by") else "free"
        line = f", number {p['in_line']} in line to resume" if p.get("in_line") else ""
        lines.append(f"{p['user']}{server}  parked since {since}  {p['host_memory_bytes'] / 2**30:.1f} GiB in host "
                     f"memory  resumes on GPU {gpu} ({held}{line})")
    return "\n".join(lines)


def format_queue(waiting: list[dict]) -> str:
    if not waiting:
        return "nobody is waiting for a GPU"
    now = time.time()
    lines = []
    for e in waiting:
        server = f" (server {e['server']!r})" if e.get("server") else ""
        state = "starting" if e.get("starting") else f"waiting {max(0, round((now - e['since']) / 60))} min"
        lines.append(f"{e['position']:>3}  {e['user']}{server}  {state}")
    return "\n".join(lines)


def run_queue_command(args: argparse.Namespace, client: Client, note: dict) -> Any:
    user = quote(args.user or "", safe="")
    if args.action != "list" and not args.user:
        raise SystemExit(_usage(f"queue {args.action}: name the user"))
    if args.action == "move":
        if args.position is None:
            raise SystemExit(_usage("queue move USER POSITION: give the new place (1 is first)"))
        body = {"position": args.position, **({"server": args.server} if args.server is not None else {}), **note}
        return client.call("POST", f"queue/{user}/move", body)
    if args.action == "remove":
        return client.call("DELETE", f"queue/{user}", note or None)
    data = client.call("GET", "queue")
    return data if args.json else format_queue(data["waiting"])


def _confirm(yes: bool, question: str) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise SystemExit(_usage("this stops servers: confirm with --yes"))
    return input(f"{question} Unsaved work in them is lost. [y/N] ").strip().lower() in ("y", "yes")


def format_report(report: dict) -> str:
    lines = []
    for name, c in report.get("courses", {}).items():
        lines.append(f"{name}: {c['members']} members ({c['students']} students; teachers: "
                     f"{', '.join(c['teachers']) or '-'}; TAs: {', '.join(c['tas']) or '-'})")
        for key in ("added", "removed"):
            if c[key]:
                lines.append(f"  {key} {len(c[key])}: {', '.join(c[key][:10])}{' …' if len(c[key]) > 10 else ''}")
        for change in c["role_changes"]:
            lines.append(f"  {change['user']}: {change['from']} -> {change['to']}")
    if report.get("users_created"):
        lines.append(f"new users: {len(report['users_created'])}")
    for bad in report.get("bad_rows", []):
        lines.append(f"bad row, line {bad['line']}: {bad['error']}  [{bad['row']}]")
    if report.get("ignored_columns"):
        lines.append(f"ignored columns: {', '.join(report['ignored_columns'])}")
    return "\n".join(lines)


def format_courses(data: dict) -> str:
    lines = []
    for c in data["courses"]:
        limit = f", sessions <= {c['max_session_hours']:g} h" if c["max_session_hours"] else ""
        lines.append(f"{c['name']}{' (' + c['title'] + ')' if c['title'] else ''}: {len(c['students'])} students, "
                     f"teachers {', '.join(c['teachers']) or '-'}, TAs {', '.join(c['tas']) or '-'}, "
                     f"{len(c['running'])} running{limit}{'' if c['materials'] else ', no materials'}")
        for r in c["reservations"]:
            state = "active" if r["active"] else "over" if r["over"] else "upcoming"
            lines.append(f"  reservation {r['id']}: {len(r['gpus'])} GPUs {r['start_iso']} - {r['end_iso']} ({state})")
            pre = r.get("prestart")
            if pre:
                lines.append(f"    pre-start {r['prestart_minutes']:g} min before: " + (
                    f"{pre['started']} started, {pre['claimed']} of {pre['prestarted']} in use"
                    + (f", {pre['failed']} failed" if pre["failed"] else "") if pre["done"] and (pre["started"] or not pre["reason"])
                    else f"none: {pre['reason']}" if pre["done"] else "not yet"))
    return "\n".join(lines) or "no courses yet: import a roster (gpuhub-gpus roster FILE)"


def run_course_command(args: argparse.Namespace, client: Client, note: dict) -> Any:
    if args.command == "roster":
        try:
            with open(args.file, encoding="utf-8-sig") as f:
                text = f.read()
        except OSError as exc:
            raise SystemExit(_usage(f"cannot read {args.file}: {exc.strerror}"))
        fmt = args.format or ("yaml" if args.file.endswith((".yaml", ".yml")) else
                              "csv" if args.file.endswith((".csv", ".tsv", ".txt")) else "auto")
        body = {"roster": text, "format": fmt, "dry_run": args.dry_run,
                "skip_bad_rows": args.skip_bad_rows, **note}
        try:
            result = client.call("POST", "courses/roster", body)
        except APIError as exc:
            if exc.body.get("report") and not args.json:
                print(format_report(exc.body["report"]), file=sys.stderr)
            raise
        return result if args.json else f"{result['message'][0].upper()}{result['message'][1:]}\n{format_report(result['report'])}"
    if args.command == "courses":
        data = client.call("GET", "courses")
        return data if args.json else format_courses(data)
    if args.command == "course":
        body = {}
        if args.title is not None:
            body["title"] = args.title
        if args.max_hours is not None:
            body["max_session_hours"] = None if args.max_hours == 0 else args.max_hours
        if args.materials is not None:
            body["materials"] = args.materials
        return client.call("PATCH", f"courses/{quote(args.course, safe='')}", {**body, **note})
    if args.command == "stop-course":
        whose = "members" if args.include_staff else "students"
        if not _confirm(args.yes, f"Stop the servers of every {whose[:-1]} of {args.course}?"):
            return "Nothing stopped."
        return client.call("POST", f"courses/{quote(args.course, safe='')}/stop",
                           {"include_staff": args.include_staff, **note})
    if args.command == "reset":
        if not _confirm(args.yes, f"Stop {args.user}'s server and remove its container?"):
            return "Nothing reset."
        return client.call("POST", f"courses/{quote(args.course, safe='')}/reset", {"user": args.user, **note})
    if args.command == "reserve":
        gpus: Any = int(args.gpus) if args.gpus.isdigit() else [resolve_gpu(client, g) for g in args.gpus.split(",")]
        extra = {} if args.prestart_minutes is None else {"prestart_minutes": args.prestart_minutes}
        return client.call("POST", "reservations", {"course": args.course, "gpus": gpus,
                                                    "start": args.start, "end": args.end, **extra, **note})
    if args.command == "unreserve":
        return client.call("DELETE", f"reservations/{quote(args.id, safe='')}", note or None)
    if args.command == "share":
        return client.call("PUT", "shared", {"gpu": resolve_gpu(client, args.gpu), "capacity": args.capacity, **note})
    if args.command == "unshare":
        return client.call("DELETE", f"shared/{quote(resolve_gpu(client, args.gpu), safe='')}", note or None)
    return run_usage_command(args, client, note)


def format_usage(data: dict) -> str:
    by = data["by"]
    if not data["rows"]:
        return "no GPU use in this period"
    rows = [(by.upper(), "FROM", "GPU-HOURS", "USED", "SERVERS")]
    for r in data["rows"]:
        start = utc_day(r["start"])
        used = "n/a" if r["used_gpu_hours"] is None else f"{r['used_gpu_hours']:.2f}"
        rows.append((str(r[by]), start, f"{r['gpu_hours']:.2f}", used, str(r["servers"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if data.get("total_gpu_hours") is not None:
        lines.append(f"total: {data['total_gpu_hours']:.2f} GPU-hours")
    return "\n".join(lines)


def run_usage_command(args: argparse.Namespace, client: Client, note: dict) -> Any:
    if args.command == "usage":
        query = {"since": args.since, "until": args.until, "by": args.by, "bucket": args.bucket, "user": args.user}
        qs = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items() if v)
        if args.csv:
            return client.call_text("GET", f"usage?{qs}&format=csv").rstrip("\n")
        data = client.call("GET", f"usage?{qs}")
        return data if args.json else format_usage(data)
    if args.command == "quota":
        if args.action == "list":
            data = client.call("GET", "quotas")
            if args.json:
                return data
            lines = [f"{q['scope']}{' ' + q['name'] if q['name'] else ''}: {q['text']}" for q in data["quotas"]]
            if data.get("configured_default") and not any(q["scope"] == "default" for q in data["quotas"]):
                lines.append(f"default (GPU_QUOTA_DEFAULT): {data['configured_default']['text']}")
            return "\n".join(lines) or "no GPU quotas"
        if args.scope not in ("user", "group", "course", "default"):
            raise SystemExit(_usage(f"quota: scope {args.scope!r}: use user, group, course or default"))
        if args.action == "set":
            try:
                hours, days = parse_spec(args.spec or "")
            except QuotaError as exc:
                raise SystemExit(_usage(f"quota: {exc}"))
            body = {"scope": args.scope, "hours": hours, "window_days": days, **note}
            if args.scope != "default":
                body["name"] = args.name
            return client.call("PUT", "quotas", body)
        return client.call("DELETE", f"quotas/{args.scope}/{quote(args.name or 'all', safe='')}", note or None)
    raise AssertionError(args.command)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpuhub-gpus", description="The hub's GPU console from a shell: "
                                "list GPUs, pin, unpin, drain, undrain, free, access, audit, queue, parked; "
                                "courses: roster, courses, course, stop-course, reset, reserve, "
                                "unreserve, share, unshare; usage, quota.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (gpuhub)",
                   help="the release of gpuhub this command belongs to (CHANGELOG.md)")
    p.add_argument("--url", default=os.environ.get("GPUHUB_URL", "http://localhost:8000"),
                   help="the hub's address (default: $GPUHUB_URL, else http://localhost:8000)")
    p.add_argument("--token", default=None,
                   help="an admin's API token (default: $GPUHUB_TOKEN, else $JUPYTERHUB_API_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="the GPUs: state, holder, usage")
    doctor.add_arguments(sub.add_parser("doctor", help="check this host (no token needed): engine, CDI, "
                                        "live-restore, toolkit CVEs, driver vs the image's CUDA, GPU health"))
    s = sub.add_parser("swarm-node-config", help="this node's GPUs as Swarm generic resources (no token "
                       "needed): the daemon.json and NVIDIA runtime lines to add (docs/swarm.md)")
    s.add_argument("--input", metavar="FILE", help="`nvidia-smi -L` output to read ('-': stdin) instead of "
                                                   "running nvidia-smi -L here")
    s = sub.add_parser("pin", help="pin a user to a GPU")
    s.add_argument("user")
    s.add_argument("gpu", help="index (0, #0) or UUID")
    s = sub.add_parser("unpin", help="remove a user's pin")
    s.add_argument("user")
    for name, what in (("drain", "hand a GPU to nobody new (its holder keeps it)"), ("undrain", "hand it out again")):
        s = sub.add_parser(name, help=what)
        s.add_argument("gpu", help="index or UUID")
    s = sub.add_parser("free", help="stop the server that holds a GPU")
    s.add_argument("gpu", nargs="?", help="index or UUID")
    s.add_argument("--user", help="whose server to stop, instead of a GPU")
    s.add_argument("--server", help="with --user: a named server")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask")
    s = sub.add_parser("access", help="show or set who may use GPUs")
    s.add_argument("--users", help="comma-separated usernames ('' for none)")
    s.add_argument("--groups", help="comma-separated group names ('' for none)")
    s.add_argument("--everyone", action="store_true", help="no restriction")
    s = sub.add_parser("audit", help="the audit log, newest first")
    s.add_argument("-n", type=int, default=20, help="entries (1-1000, default 20)")
    s = sub.add_parser("queue", help="the line for GPUs: list, move USER POSITION, remove USER")
    s.add_argument("action", nargs="?", default="list", choices=("list", "move", "remove"))
    s.add_argument("user", nargs="?")
    s.add_argument("position", nargs="?", type=int, help="move: the new place, 1 for first")
    s.add_argument("--server", help="a named server's start (default: the user's only one)")
    sub.add_parser("parked", help="parked servers: since when, their GPU state in host memory, their GPU")
    s = sub.add_parser("roster", help="import a course roster (CSV or YAML)")
    s.add_argument("file", help="username or email, course, role (student, ta, teacher) per row")
    s.add_argument("--format", choices=("csv", "yaml"), help="default: from the file's name, else guessed")
    s.add_argument("--dry-run", action="store_true", help="only report what would change")
    s.add_argument("--skip-bad-rows", action="store_true", help="import the good rows even if some are bad")
    sub.add_parser("courses", help="the courses: people, running servers, reservations")
    s = sub.add_parser("course", help="set a course's title, session limit, materials")
    s.add_argument("course")
    s.add_argument("--title")
    s.add_argument("--max-hours", type=float, help="longest a student's server runs (0: no limit)")
    s.add_argument("--materials", action="store_true", default=None, help="mount the course's materials volume")
    s.add_argument("--no-materials", dest="materials", action="store_false")
    s = sub.add_parser("stop-course", help="stop the servers of a course's students")
    s.add_argument("course")
    s.add_argument("--include-staff", action="store_true", help="its teachers' and TAs' servers too")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask")
    s = sub.add_parser("reset", help="reset a student's environment (files untouched)")
    s.add_argument("course")
    s.add_argument("user")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask")
    s = sub.add_parser("reserve", help="reserve GPUs for a course in a time window")
    s.add_argument("course")
    s.add_argument("gpus", help="how many (2), or which: indexes or UUIDs, comma-separated (0,1)")
    s.add_argument("--start", required=True, help="ISO 8601 with a zone, e.g. 2026-11-23T09:00+01:00")
    s.add_argument("--end", required=True, help="ISO 8601 with a zone")
    s.add_argument("--prestart-minutes", type=int, default=None, metavar="M",
                   help="start the course's servers M minutes before (0-240; default: RESERVATION_PRESTART_MINUTES)")
    s = sub.add_parser("unreserve", help="cancel a reservation")
    s.add_argument("id")
    s = sub.add_parser("share", help="let up to CAPACITY servers share a GPU")
    s.add_argument("gpu", help="index or UUID")
    s.add_argument("capacity", type=int)
    s = sub.add_parser("unshare", help="make a shared GPU exclusive again")
    s.add_argument("gpu", help="index or UUID")
    s = sub.add_parser("usage", help="GPU-hours per user, group, course, GPU model or node")
    s.add_argument("--since", default="7d", help="7d, 24h, 2w before now, an ISO 8601 date/time or epoch seconds")
    s.add_argument("--until", help="as --since (default: now)")
    s.add_argument("--by", default="user", choices=("user", "group", "course", "gpu", "node"))
    s.add_argument("--bucket", choices=("day", "week", "month"), help="one row per UTC day, ISO week or month")
    s.add_argument("--user", help="only this user")
    s.add_argument("--csv", action="store_true", help="CSV on stdout")
    s = sub.add_parser("quota", help="GPU-hour quotas: list, set SCOPE NAME 20h/7d, remove SCOPE NAME")
    s.add_argument("action", choices=("list", "set", "remove"))
    s.add_argument("scope", nargs="?", help="user, group, course or default")
    s.add_argument("name", nargs="?", help="the user, group or course ('-' for default)")
    s.add_argument("spec", nargs="?", help="GPU-hours per window: 20h/7d, 4h/24h")
    for action in sub.choices.values():
        if action.prog.split()[-1] not in ("list", "audit", "courses", "usage"):
            action.add_argument("--note", help="a note for the audit log")
    return p


def _swarm_node_config(args) -> int:

    if args.input:
        text = sys.stdin.read() if args.input == "-" else open(args.input, encoding="utf-8").read()
    else:
        try:
            text = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"gpuhub-gpus: cannot run nvidia-smi -L ({exc}); run it where it works and pass its "
                  "output with --input FILE (or -)", file=sys.stderr)
            return 1
    gpus = gpus_from_smi_list(text)
    if not gpus:
        print("gpuhub-gpus: no GPU in the nvidia-smi -L output", file=sys.stderr)
        return 1
    print(json.dumps(node_config(gpus), indent=2) if args.json else node_config_text(gpus), end="\n" if args.json else "")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "doctor":  # local checks: no hub, no token (exit 1: a check failed)
        return doctor.run(args)
    if args.command == "swarm-node-config":  # local: no hub, no token
        return _swarm_node_config(args)
    token = args.token or os.environ.get("GPUHUB_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        return _usage("no token: set GPUHUB_TOKEN to an admin's API token (the hub's Token page, "
                      "/hub/token) or pass --token")
    client = Client(args.url, token)
    try:
        result = run(args, client)
    except SystemExit as exc:
        return int(exc.code or 0)
    except APIError as exc:
        print(f"gpuhub-gpus: {exc.message} (HTTP {exc.status})", file=sys.stderr)
        return 1
    except Unreachable as exc:
        print(f"gpuhub-gpus: {exc}", file=sys.stderr)
        return 3
    if result is None:
        return 0
    if isinstance(result, str):
        print(result)
    elif args.json:
        print(json.dumps(result, indent=1))
    else:
        print(result.get("message", "Done"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
