"""The console's Prometheus exposition (prometheus_client), built at each scrape from what the
console already has in memory and the usage store: no engine call per scrape.

Names follow Prometheus' conventions (base units, ``_total`` for counters, ``_ratio`` for
0..1, ``_info`` for labels only). Labels: ``uuid``, ``index``, ``model``, ``node`` for a
device; ``user`` (comma-separated for a shared GPU's holders), ``group``, ``course``. The
line for GPUs: ``gpuhub_queue_length``, ``gpuhub_queue_oldest_wait_seconds``,
``gpuhub_queue_wait_seconds{user, server}`` (read from the hub's ``gpu-queue.json``).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from hub.gpus.model import GPU
from hub.usage import quota as quotas
from hub.usage.reconcile import UsageKeeper

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCOPE = "custom:gpuhub-metrics:read"  # the scope a scraper's token needs (hub/hub_process/config/configure.py)
MIB = 1024 * 1024


class UsageCollector:
    def __init__(self, keeper: UsageKeeper, inventory: Iterable[GPU], sampler: Any,
                 queue: Callable[[], list[dict]] | None = None):
        self.keeper, self.inventory, self.sampler = keeper, list(inventory), sampler
        self.queue = queue  # the line for GPUs as the hub last wrote it (hub.gpus.queue.read_line)

    def collect(self):
        now = self.keeper.clock()
        store = self.keeper.store
        open_ivs = store.open_intervals()
        holders: dict[str, list] = {}
        for iv in open_ivs:
            holders.setdefault(iv.gpu_uuid, []).append(iv)
        dev = ["uuid", "index", "model", "node"]
        info = GaugeMetricFamily("gpuhub_gpu_info", "A GPU or MIG instance of the inventory", labels=dev)
        util = GaugeMetricFamily("gpuhub_gpu_utilization_ratio", "GPU utilisation (0-1) at the last sample",
                                 labels=[*dev, "user"])
        mem = GaugeMetricFamily("gpuhub_gpu_memory_used_bytes", "GPU memory in use at the last sample",
                                labels=[*dev, "user"])
        total = GaugeMetricFamily("gpuhub_gpu_memory_total_bytes", "GPU memory", labels=dev)
        holder = GaugeMetricFamily("gpuhub_gpu_holder_info", "A server holding a GPU, MIG instance or shared seat "
                                   "(value 1)", labels=[*dev, "user", "server", "container"])
        seat = GaugeMetricFamily("gpuhub_gpu_seat_weight", "The share of a GPU a holder counts for "
                                 "(1 whole, 1/capacity shared, a MIG instance's fraction)", labels=[*dev, "user", "server"])
        for g in self.inventory:
            labels = [g.uuid, str(g.index), g.name, g.node]
            info.add_metric(labels, 1)
            users = ",".join(sorted({iv.user for iv in holders.get(g.uuid, [])}))
            reading = self.sampler.now(g.uuid) if self.sampler is not None else None
            if reading is not None and reading.utilization_pct is not None:
                util.add_metric([*labels, users], reading.utilization_pct / 100)
            if reading is not None and reading.memory_used_mib is not None:
                mem.add_metric([*labels, users], reading.memory_used_mib * MIB)
            mib = reading.memory_total_mib if reading is not None and reading.memory_total_mib else g.memory_total_mib
            if mib:
                total.add_metric(labels, mib * MIB)
        known = {g.uuid: g for g in self.inventory}
        for iv in open_ivs:
            g = known.get(iv.gpu_uuid)
            labels = [iv.gpu_uuid, str(g.index) if g else "", iv.model, iv.node]
            holder.add_metric([*labels, iv.user, iv.server, iv.container_id[:12]], 1)
            seat.add_metric([*labels, iv.user, iv.server], iv.weight)
        yield from (info, util, mem, total, holder, seat)

        yield from self.store_families(now)

        refusals = CounterMetricFamily("gpuhub_spawn_refusals", "GPU starts refused, by reason", labels=["reason"])
        for reason, n in sorted(store.refusals().items()):
            refusals.add_metric([reason], n)
        yield refusals
        last = self.keeper.last
        synced = GaugeMetricFamily("gpuhub_usage_last_sync_timestamp_seconds", "When the usage store last "
                                   "agreed with the engine")
        if last is not None:
            synced.add_metric([], last.time)
        yield synced
        if self.queue is not None:
            yield from queue_families(self.queue(), now)

    def store_families(self, now: float) -> list:
        """Counters and quota gauges from the store: they change only at a sync or a quota change,
        so they are computed once per (sync, quotas) and reused by the scrapes in between."""
        store = self.keeper.store
        key = (self.keeper.last.time if self.keeper.last else None, tuple(map(tuple, store.quotas())))
        cached = getattr(self.keeper, "_metrics_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        held = CounterMetricFamily("gpuhub_gpu_seconds", "GPU-seconds held (weighted), as of the last sync",
                                   labels=["user"])
        used = CounterMetricFamily("gpuhub_gpu_used_seconds", "GPU-seconds held weighted by utilisation "
                                   "(where sampled)", labels=["user"])
        by_group = CounterMetricFamily("gpuhub_group_gpu_seconds", "GPU-seconds held by members of a group "
                                       "(counted while they were members)", labels=["group"])
        by_course = CounterMetricFamily("gpuhub_course_gpu_seconds", "GPU-seconds held by members of a course",
                                        labels=["course"])
        users_rows, group_rows, course_rows = store.totals()
        for r in users_rows:
            held.add_metric([r["user"]], r["held"] or 0.0)
            used.add_metric([r["user"]], r["used"] or 0.0)
        for r in group_rows:
            by_group.add_metric([r["name"]], r["held"] or 0.0)
        for r in course_rows:
            by_course.add_metric([r["name"]], r["held"] or 0.0)

        remaining = GaugeMetricFamily("gpuhub_quota_remaining_gpu_seconds", "GPU-seconds left in the user's "
                                      "tightest quota's window", labels=["user", "scope", "name"])
        limit = GaugeMetricFamily("gpuhub_quota_limit_gpu_seconds", "The user's tightest quota",
                                  labels=["user", "scope", "name"])
        quota_list = self.keeper.quota_list()
        # per window length: user -> (held seconds in it, groups, courses), summed by SQLite
        windows: dict[float, dict[str, list]] = {}
        for window in {q.window_s for q in quota_list}:
            per_user = windows[window] = {}
            for r in store.held_per_user(now - window, now):
                entry = per_user.setdefault(r["user"], [0.0, set(), set()])
                entry[0] += r["held"] or 0.0
                entry[1].update(json.loads(r["groups"]))
                entry[2].update(json.loads(r["courses"]))
        users = {u for per_user in windows.values() for u in per_user} | {q.name for q in quota_list if q.scope == "user"}
        for user in sorted(users):
            memberships = [w.get(user) for w in windows.values() if user in w]
            gs = set().union(*(m[1] for m in memberships)) if memberships else set()
            cs = set().union(*(m[2] for m in memberships)) if memberships else set()
            worst = None
            for q in quotas.applicable(quota_list, user, gs, cs):
                used_s = windows[q.window_s].get(user, [0.0])[0]
                fraction = used_s / (q.hours * 3600)
                if worst is None or fraction > worst[0]:
                    worst = (fraction, q, used_s)
            if worst is not None:
                _, q, used_s = worst
                labels = [user, q.scope, q.name]
                remaining.add_metric(labels, max(0.0, q.hours * 3600 - used_s))
                limit.add_metric(labels, q.hours * 3600)
        families = [held, used, by_group, by_course, remaining, limit]
        self.keeper._metrics_cache = (key, families)
        return families


def warm(keeper: UsageKeeper) -> None:
    """Compute the store's families right after a sync (the console's sync task calls this), so
    that scrapes find them ready (blocking: SQLite)."""
    UsageCollector(keeper, [], None).store_families(keeper.clock())


def queue_families(waiting: list[dict], now: float) -> list:
    """The line for GPUs (GPU_WHEN_FULL=queue): how many wait, and for how long."""
    length = GaugeMetricFamily("gpuhub_queue_length", "Starts waiting in line for a GPU (not yet let through)")
    oldest = GaugeMetricFamily("gpuhub_queue_oldest_wait_seconds", "How long the longest waiter has waited "
                               "(0: nobody waits)")
    each = GaugeMetricFamily("gpuhub_queue_wait_seconds", "How long each waiter has waited so far",
                             labels=["user", "server"])
    waits = []
    for e in waiting:
        if e.get("starting"):
            continue
        wait = max(0.0, now - float(e.get("since") or now))
        waits.append(wait)
        each.add_metric([str(e.get("user", "")), str(e.get("server", ""))], wait)
    length.add_metric([], len(waits))
    oldest.add_metric([], max(waits, default=0.0))
    return [length, oldest, each]


def exposition(keeper: UsageKeeper, inventory: Iterable[GPU], sampler: Any,
               queue: Callable[[], list[dict]] | None = None) -> bytes:
    """The text format, for one scrape (blocking: SQLite)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector(keeper, inventory, sampler, queue))
    return generate_latest(registry)
