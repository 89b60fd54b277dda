// The GPU console page: polls the console's JSON API and renders the table, the pins, who may
// use GPUs and the audit log; every change goes through the same API the CLI uses.
// No library beyond the hub's own Bootstrap; no request leaves the hub.
"use strict";

(function () {
  const root = document.getElementById("gpu-console");
  const PREFIX = root.dataset.prefix;
  const XSRF = root.dataset.xsrf;
  const REFRESH_MS = 5000;
  let state = null;
  let refreshing = false;
  let pendingFree = null;

  // ---- API -----------------------------------------------------------------------------
  async function api(method, path, body) {
    const options = {
      method,
      credentials: "same-origin",
      headers: { "X-XSRFToken": XSRF, Accept: "application/json" },
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const resp = await fetch(PREFIX + "api/" + path, options);
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = { message: resp.status + " " + resp.statusText };
    }
    if (!resp.ok) {
      const error = new Error((data && data.message) || resp.statusText);
      error.status = resp.status;
      error.report = data && data.report;
      throw error;
    }
    return data;
  }

  // ---- small DOM helpers ---------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function notify(kind, message) {
    const box = el("div", { class: `alert alert-${kind} alert-dismissible fade show py-2`, role: "alert" },
      message, el("button", { type: "button", class: "btn-close py-2", "data-bs-dismiss": "alert", "aria-label": "Close" }));
    document.getElementById("alerts").prepend(box);
    setTimeout(() => box.remove(), kind === "danger" ? 15000 : 8000);
  }

  async function act(method, path, body) {
    try {
      const result = await api(method, path, body);
      notify("success", result.message || "Done");
      await refresh(true);
      return result;
    } catch (e) {
      notify("danger", e.message);
      return null;
    }
  }

  function gib(mib) {
    return (mib / 1024).toFixed(1);
  }

  function ago(epoch) {
    return duration(Date.now() / 1000 - epoch);
  }

  function duration(seconds) {
    const s = Math.max(0, seconds);
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${Math.round(s / 86400)} days`;
  }

  function clock(epoch) {
    return new Date(epoch * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  }

  function meter(percent, label) {
    const bar = el("div", { class: "progress meter", role: "progressbar", "aria-label": label,
      "aria-valuenow": Math.round(percent), "aria-valuemin": 0, "aria-valuemax": 100 },
      el("div", { class: "progress-bar", style: `width: ${Math.min(100, Math.max(0, percent))}%` }));
    return bar;
  }

  // ---- the sparkline: utilisation over the window, inline SVG --------------------------
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  function sparkline(history, now, windowS, intervalS) {
    const W = 140, H = 32, PAD = 1;
    const chart = svg("svg", { class: "sparkline", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
    chart.append(svg("rect", { class: "frame", x: 0.5, y: 0.5, width: W - 1, height: H - 1, rx: 2 }));
    const points = history.filter((s) => s[1] !== null && s[0] >= now - windowS);
    if (!points.length) {
      const text = svg("text", { class: "none", x: W / 2, y: H / 2 + 3, "text-anchor": "middle" });
      text.textContent = "n/a";
      chart.append(text);
      chart.setAttribute("aria-label", "no utilisation samples");
      return chart;
    }
    const x = (t) => PAD + ((t - (now - windowS)) / windowS) * (W - 2 * PAD);
    const y = (u) => H - PAD - (u / 100) * (H - 2 * PAD);
    // Break the line where samples are missing (more than three intervals apart).
    const runs = [];
    let run = [];
    for (const [t, u] of points) {
      if (run.length && t - run[run.length - 1][0] > 3 * intervalS) {
        runs.push(run);
        run = [];
      }
      run.push([t, u]);
    }
    runs.push(run);
    for (const r of runs) {
      const line = r.map(([t, u]) => `${x(t).toFixed(1)},${y(u).toFixed(1)}`).join(" ");
      const first = x(r[0][0]).toFixed(1), last = x(r[r.length - 1][0]).toFixed(1);
      chart.append(svg("polygon", { class: "area", points: `${first},${H - PAD} ${line} ${last},${H - PAD}` }));
      chart.append(svg("polyline", { class: "line", points: r.length > 1 ? line : `${line} ${line}` }));
    }
    const values = points.map((p) => p[1]);
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    const title = svg("title", {});
    title.textContent = `last ${Math.round(windowS / 60)} min: mean ${mean.toFixed(0)}%, max ${Math.max(...values)}% (${values.length} samples)`;
    chart.append(title);
    chart.setAttribute("aria-label", title.textContent);
    return chart;
  }

  // ---- rendering -------------------------------------------------------------------------
  function gpuLabel(gpu) {
    return `#${gpu.index} ${gpu.name}` + (gpu.parent_uuid ? " (MIG)" : "") + (gpu.node ? ` on ${gpu.node}` : "");
  }

  function stateBadges(gpu) {
    const badges = [];
    if (gpu.shared) {
      badges.push(el("span", { class: "badge text-bg-dark", title: "memory is not isolated between its users" },
        `shared: ${gpu.holders.length} of ${gpu.capacity} seats`));
    } else if (gpu.holder) {
      badges.push(el("span", { class: "badge text-bg-primary" }, `held by ${gpu.holder.user}`));
    }
    if (gpu.reserved_for) badges.push(el("span", { class: "badge text-bg-secondary" }, `reserved for ${gpu.reserved_for}`));
    if (gpu.drained) badges.push(el("span", { class: "badge text-bg-warning" }, "drained"));
    if (gpu.unavailable) badges.push(el("span", { class: "badge text-bg-warning", title: gpu.unavailable }, "node takes no new servers"));
    if (gpu.pinned_to.length) {
      badges.push(el("span", { class: "badge text-bg-info" }, `pinned to ${gpu.pinned_to.join(", ")}`));
    }
    if (!badges.length || (gpu.shared && gpu.holders.length < gpu.capacity && !gpu.drained && badges.length === 1)) {
      badges.push(el("span", { class: "badge text-bg-success" }, "free"));
    }
    return badges;
  }

  // What gpu-reclaim last saw of a holder: utilisation now, memory held, idle for how long, its warning.
  function activityLine(a) {
    if (!a) return null;
    if (a.utilization_pct === null && a.memory_used_mib === null) {
      return el("div", { class: "small text-body-secondary holder-activity" }, "usage n/a (no readings of this GPU)");
    }
    const parts = [`${a.utilization_pct === null ? "n/a" : `${a.utilization_pct}%`} now`];
    if (a.memory_used_mib !== null && a.memory_used_mib !== undefined) parts.push(`${gib(a.memory_used_mib)} GiB held`);
    parts.push(a.idle_since ? `idle ${ago(a.idle_since)}` : "busy");
    const line = el("div", { class: "small holder-activity", title: a.policy
      ? `idle: under ${a.policy.threshold_pct}% (profile ${a.profile || "—"}; warned after ${Math.round(a.policy.timeout_s / 60)} min, stopped ${Math.round(a.policy.grace_s / 60)} min later${a.policy.timeout_s ? "" : ": reclaim off"})`
      : "" }, parts.join(" · "));
    if (a.warning_deadline) {
      line.append(" ", el("span", { class: "badge text-bg-warning" },
        `reclaim in ${duration(a.warning_deadline - Date.now() / 1000)}`));
    }
    if (a.extended_until) line.append(" ", el("span", { class: "badge text-bg-secondary" }, `extended until ${clock(a.extended_until)}`));
    return line;
  }

  function holderCell(gpu) {
    const h = gpu.holder;
    if (!h) return el("span", { class: "text-body-secondary" }, "—");
    if (gpu.shared && gpu.holders.length > 1) {
      return gpu.holders.map((x) => el("div", {}, x.user + (x.server ? `/${x.server}` : ""),
        x.since ? el("span", { class: "small text-body-secondary" }, ` (${ago(x.since)})`) : null, activityLine(x.activity)));
    }
    const who = h.server_url
      ? el("a", { href: h.server_url, class: "holder-link", title: "open this server (as admin)" },
        h.user + (h.server ? `/${h.server}` : ""))
      : el("span", {}, h.user + (h.server ? `/${h.server}` : ""));
    const since = h.since ? el("div", { class: "small text-body-secondary", title: h.since_iso }, `since ${clock(h.since)} (${ago(h.since)})`) : null;
    const other = !h.this_hub
      ? el("div", { class: "small text-warning" }, `container ${h.container || "?"} (not started by this hub)`)
      : null;
    return [who, since, activityLine(h.activity), other];
  }

  function actionsCell(gpu) {
    const buttons = [];
    if (gpu.drained) {
      buttons.push(el("button", { class: "btn btn-sm btn-outline-secondary btn-undrain", type: "button",
        title: "hand this GPU out again",
        onclick: () => act("DELETE", `drained/${encodeURIComponent(gpu.uuid)}`) }, "Undrain"));
    } else {
      buttons.push(el("button", { class: "btn btn-sm btn-outline-warning btn-drain", type: "button",
        title: "hand this GPU to nobody new; a running holder keeps it until their server stops",
        onclick: () => act("POST", "drained", { gpu: gpu.uuid }) }, "Drain"));
    }
    if (gpu.holder && gpu.holder.this_hub) {
      buttons.push(el("button", { class: "btn btn-sm btn-outline-danger btn-free ms-1", type: "button",
        title: "stop the holder's server to free this GPU", onclick: () => confirmFree(gpu) }, "Free…"));
    }
    return buttons;
  }

  function renderTable(s) {
    const body = document.querySelector("#gpu-table tbody");
    const rows = s.gpus.map((gpu) => {
      const memory = gpu.memory_total_mib === null && gpu.memory_used_mib === null
        ? el("span", { class: "text-body-secondary" }, "n/a")
        : [el("div", {}, `${gpu.memory_used_mib === null ? "n/a" : gib(gpu.memory_used_mib)} / ${gpu.memory_total_mib === null ? "n/a" : gib(gpu.memory_total_mib)} GiB`),
          gpu.memory_used_mib !== null && gpu.memory_total_mib ? meter(100 * gpu.memory_used_mib / gpu.memory_total_mib, "memory used") : null];
      const util = gpu.utilization_pct === null
        ? el("span", { class: "text-body-secondary", title: s.usage.reason || "NVML gives no utilisation for this device" }, "n/a")
        : [el("div", {}, `${gpu.utilization_pct}%`), meter(gpu.utilization_pct, "utilisation")];
      return el("tr", { dataset: { uuid: gpu.uuid, state: gpu.state } },
        el("td", { class: "fw-semibold" }, String(gpu.index)),
        el("td", {}, el("div", {}, gpu.name + (gpu.parent_uuid ? " (MIG instance)" : "")), el("div", { class: "uuid" }, gpu.uuid)),
        el("td", { class: "memory" }, memory),
        el("td", { class: "util" }, util),
        el("td", { class: "history" }, sparkline(gpu.history, s.time, s.usage.window_s, s.usage.interval_s)),
        el("td", { class: "state" }, stateBadges(gpu)),
        el("td", { class: "holder" }, holderCell(gpu)),
        el("td", { class: "actions text-end" }, actionsCell(gpu)));
    });
    if (!rows.length) {
      rows.push(el("tr", {}, el("td", { colspan: 8, class: "text-body-secondary" },
        "This host has no GPUs the hub can see (docs/gpus.md: NVML, CDI specs or a static list).")));
    }
    body.replaceChildren(...rows);
    const unknown = document.getElementById("unknown-held");
    unknown.classList.toggle("d-none", !s.unknown_held.length);
    unknown.textContent = s.unknown_held.length
      ? "The engine shows containers holding GPUs this hub does not know: " +
        s.unknown_held.map((u) => `${u.uuid} (${u.holder.user})`).join(", ")
      : "";
  }

  function renderPins(s) {
    const byUuid = Object.fromEntries(s.gpus.map((g) => [g.uuid, g]));
    const rows = Object.entries(s.pins).map(([user, uuid]) =>
      el("tr", { dataset: { user } },
        el("td", {}, user),
        el("td", {}, byUuid[uuid] ? gpuLabel(byUuid[uuid]) : el("span", { class: "text-warning" }, `${uuid} (not on this host)`)),
        el("td", { class: "text-end" }, el("button", { class: "btn btn-sm btn-outline-secondary btn-unpin", type: "button",
          onclick: () => act("DELETE", `pins/${encodeURIComponent(user)}`) }, "Unpin"))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 3, class: "text-body-secondary small" }, "Nobody is pinned.")));
    document.querySelector("#pins tbody").replaceChildren(...rows);

    const select = document.getElementById("pin-gpu");
    const keep = select.value;
    const options = s.gpus.filter((g) => !g.drained).map((g) =>
      el("option", { value: g.uuid }, `${gpuLabel(g)} · ${g.uuid.slice(0, 12)}…`));
    const signature = options.map((o) => o.value).join();
    if (select.dataset.signature !== signature) {
      select.replaceChildren(...options);
      select.dataset.signature = signature;
      if (options.some((o) => o.value === keep)) select.value = keep;
    }
  }

  function renderAccess(s) {
    const a = s.access;
    const now = document.getElementById("access-now");
    now.textContent = a.everyone ? "everyone" : [
      a.users.length ? `users ${a.users.join(", ")}` : null,
      a.groups.length ? `groups ${a.groups.join(", ")}` : null].filter(Boolean).join("; ");
    const form = document.getElementById("access-form");
    if (!form.dataset.touched) {
      document.getElementById("access-users").value = a.users.join(", ");
      document.getElementById("access-groups").value = a.groups.join(", ");
    }
  }

  function renderStatus(s) {
    const usage = s.usage.source === "nvml"
      ? `usage from NVML every ${s.usage.interval_s} s`
      : "usage n/a (NVML not available to the hub)";
    const held = s.gpus.filter((g) => g.holder).length;
    document.getElementById("status-line").textContent =
      `${s.gpus.length} GPU${s.gpus.length === 1 ? "" : "s"} (${s.inventory_source}), ${held} held · ${usage} · updated ${new Date(s.time * 1000).toLocaleTimeString()}`;
    document.getElementById("status-line").title = s.usage.reason || "";
  }

  function describe(entry) {
    return entry.detail || [entry.user, entry.gpu].filter(Boolean).join(" ");
  }

  async function refreshAudit() {
    const data = await api("GET", "audit?limit=100");
    const rows = data.entries.map((e) => el("tr", {},
      el("td", { class: "text-nowrap" }, (e.time || "").replace("T", " ").replace("Z", "")),
      el("td", {}, e.who || ""),
      el("td", {}, e.via || ""),
      el("td", {}, el("span", { class: "badge text-bg-secondary" }, e.action || "")),
      el("td", {}, describe(e), e.note ? el("span", { class: "text-body-secondary" }, ` — ${e.note}`) : null)));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "text-body-secondary small" }, "No actions yet.")));
    document.querySelector("#audit tbody").replaceChildren(...rows);
  }

  // ---- courses, reservations, shared GPUs --------------------------------------------------
  let courses = [];

  function windowText(r) {
    return `${clock(r.start)} – ${clock(r.end)}` + (r.active ? " (now)" : r.end * 1000 < Date.now() ? " (over)" : "");
  }

  function prestartText(r) {
    // the pre-start: servers started before the session, and how many of them their person has opened
    const p = r.prestart;
    if (!p.done) return `servers start ${r.prestart_minutes} min before`;
    if (!p.started && p.reason) return `not pre-started: ${p.reason}`;
    return `pre-started ${p.started}${p.failed ? ` (${p.failed} failed)` : ""}; ${p.claimed} of ${p.prestarted} in use`;
  }

  async function refreshCourses() {
    courses = (await api("GET", "courses")).courses;
    const rows = courses.map((c) => el("tr", { dataset: { course: c.name } },
      el("td", {}, el("span", { class: "fw-semibold" }, c.name), c.title ? el("div", { class: "small text-body-secondary" }, c.title) : null),
      el("td", {}, c.teachers.join(", ") || "—"),
      el("td", {}, c.tas.join(", ") || "—"),
      el("td", { class: "students" }, String(c.students.length)),
      el("td", {}, String(c.running.length)),
      el("td", {}, c.max_session_hours ? `${c.max_session_hours} h` : "no limit"),
      el("td", { class: "small" }, c.reservations.filter((r) => !r.over).map((r) => el("div", {}, `${r.gpus.length} GPU(s) ${windowText(r)}`,
        r.prestart ? el("div", { class: "text-body-secondary prestart" }, prestartText(r)) : null))),
      el("td", { class: "text-end" }, el("button", { class: "btn btn-sm btn-outline-danger btn-stop-course", type: "button",
        disabled: !c.running.length,
        onclick: () => { if (confirm(`Stop the servers of every student of ${c.name}? Unsaved work in them is lost.`)) act("POST", `courses/${encodeURIComponent(c.name)}/stop`, {}); } },
        "Stop students' servers"))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 8, class: "text-body-secondary small" }, "No courses yet: import a roster.")));
    document.querySelector("#courses tbody").replaceChildren(...rows);
    const select = document.getElementById("reserve-course");
    const signature = courses.map((c) => c.name).join();
    if (select.dataset.signature !== signature) {
      const keep = select.value;
      select.replaceChildren(...courses.map((c) => el("option", { value: c.name }, c.name)));
      select.dataset.signature = signature;
      if (courses.some((c) => c.name === keep)) select.value = keep;
    }
  }

  function renderReservations(s) {
    const rows = s.reservations.map((r) => el("tr", { dataset: { id: r.id } },
      el("td", {}, r.course),
      el("td", {}, r.gpu_indexes.map((i) => `#${i}`).join(", ")),
      el("td", {}, windowText(r)),
      el("td", { class: "text-end" }, el("button", { class: "btn btn-sm btn-outline-secondary", type: "button",
        onclick: () => act("DELETE", `reservations/${encodeURIComponent(r.id)}`) }, "Cancel"))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "text-body-secondary small" }, "No reservations.")));
    document.querySelector("#reservations tbody").replaceChildren(...rows);
  }

  // ---- parked servers (GPU_IDLE_ACTION=park) -------------------------------------------------
  function renderParked(s) {
    const parked = s.parked || [];
    document.getElementById("parked-card").classList.toggle("d-none", !parked.length);
    const rows = parked.map((p) => {
      const gpu = p.gpu_index === null || p.gpu_index === undefined ? p.gpu : `#${p.gpu_index}`;
      const held = p.gpu_held_by && p.gpu_held_by.length ? `held by ${p.gpu_held_by.join(", ")}` : "free";
      const line = p.in_line ? `, number ${p.in_line} in line to resume` : "";
      return el("tr", { dataset: { user: p.user, server: p.server || "" } },
        el("td", {}, p.user + (p.server ? ` (${p.server})` : "")),
        el("td", {}, `${clock(p.since)} (${ago(p.since)})`),
        el("td", {}, `${(p.host_memory_bytes / 2 ** 30).toFixed(1)} GiB`),
        el("td", {}, `GPU ${gpu} (${held}${line})`));
    });
    document.querySelector("#parked tbody").replaceChildren(...rows);
  }

  // ---- the line for GPUs (GPU_WHEN_FULL=queue) -----------------------------------------------
  function renderQueue(s) {
    const waiting = s.queue || [];
    document.getElementById("queue-card").classList.toggle("d-none", !waiting.length);
    const tbody = document.querySelector("#queue tbody");
    if (tbody.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return; // typing a place
    const move = (w, position) => act("POST", `queue/${encodeURIComponent(w.user)}/move`, { position, server: w.server || "" });
    const rows = waiting.map((w) => {
      const place = el("input", { type: "number", min: "1", max: String(waiting.length), value: String(w.position),
        class: "form-control form-control-sm d-inline-block ms-1 queue-position",
        "aria-label": `new place for ${w.user}` });
      const moveTo = () => {
        const position = Number(place.value);
        if (Number.isInteger(position) && position !== w.position) move(w, position);
      };
      place.addEventListener("keydown", (e) => { if (e.key === "Enter") moveTo(); });
      const starting = Boolean(w.starting);
      return el("tr", { dataset: { user: w.user, server: w.server || "" } },
        el("td", {}, String(w.position)),
        el("td", {}, w.user + (w.server ? ` (${w.server})` : "") + (starting ? " — starting" : "")),
        el("td", {}, `${clock(w.since)} (${ago(w.since)})`),
        el("td", { class: "text-end text-nowrap" },
          el("button", { class: "btn btn-sm btn-outline-secondary btn-queue-up", type: "button", title: "one place earlier",
            disabled: starting || w.position === 1 ? "" : null, onclick: () => move(w, w.position - 1) }, "↑"),
          el("button", { class: "btn btn-sm btn-outline-secondary btn-queue-down ms-1", type: "button", title: "one place later",
            disabled: starting || w.position === waiting.length ? "" : null, onclick: () => move(w, w.position + 1) }, "↓"),
          place,
          el("button", { class: "btn btn-sm btn-outline-secondary btn-queue-move ms-1", type: "button",
            disabled: starting ? "" : null, onclick: moveTo }, "Move"),
          el("button", { class: "btn btn-sm btn-outline-secondary ms-1", type: "button",
            onclick: () => act("DELETE", `queue/${encodeURIComponent(w.user)}`) }, "Remove")));
    });
    tbody.replaceChildren(...rows);
  }

  function renderShared(s) {
    const rows = s.gpus.filter((g) => g.shared).map((g) => el("tr", { dataset: { uuid: g.uuid } },
      el("td", {}, gpuLabel(g)),
      el("td", {}, `${g.holders.length} of ${g.capacity}` + (g.holders.length ? `: ${g.holders.map((h) => h.user).join(", ")}` : "")),
      el("td", { class: "text-end" }, el("button", { class: "btn btn-sm btn-outline-secondary", type: "button",
        onclick: () => act("DELETE", `shared/${encodeURIComponent(g.uuid)}`) }, "Make exclusive"))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 3, class: "text-body-secondary small" }, "Every GPU is exclusive (one server each).")));
    document.querySelector("#shared tbody").replaceChildren(...rows);
    const select = document.getElementById("share-gpu");
    const signature = s.gpus.map((g) => g.uuid).join();
    if (select.dataset.signature !== signature) {
      select.replaceChildren(...s.gpus.map((g) => el("option", { value: g.uuid }, `${gpuLabel(g)} · ${g.uuid.slice(0, 12)}…`)));
      select.dataset.signature = signature;
    }
  }

  async function refresh(fresh) {
    if (refreshing && !fresh) return;
    refreshing = true;
    try {
      state = await api("GET", fresh ? "gpus?fresh=1" : "gpus");
      renderTable(state);
      renderPins(state);
      renderAccess(state);
      renderStatus(state);
      renderReservations(state);
      renderShared(state);
      renderQueue(state);
      renderParked(state);
      await refreshCourses();
      await refreshAudit();
      document.getElementById("conn-problem").classList.add("d-none");
    } catch (e) {
      const badge = document.getElementById("conn-problem");
      badge.textContent = `not updating: ${e.message}`;
      badge.classList.remove("d-none");
      // logged out, or the service restarted (new session): reload once a minute at most, which
      // logs in again through the hub (or shows the hub's 403 page)
      if ((e.status === 401 || e.status === 403) &&
          Date.now() - Number(sessionStorage.getItem("gpu-console-reload") || 0) > 60000) {
        sessionStorage.setItem("gpu-console-reload", String(Date.now()));
        location.reload();
      }
    } finally {
      refreshing = false;
    }
  }

  // Host health: the doctor's checks, once a minute (they read the engine and NVML)
  const HEALTH_BADGES = { ok: "text-bg-success", warn: "text-bg-warning", fail: "text-bg-danger", unknown: "text-bg-secondary" };
  async function refreshHealth() {
    try {
      const h = await api("GET", "health");
      const badge = document.getElementById("health-status");
      badge.textContent = h.status;
      badge.className = `badge ${HEALTH_BADGES[h.status]}`;
      document.querySelector("#health tbody").replaceChildren(...h.checks.map((c) => el("tr", {},
        el("td", { class: "text-nowrap" }, c.name),
        el("td", {}, el("span", { class: `badge ${HEALTH_BADGES[c.status]}` }, c.status === "unknown" ? "n/a" : c.status)),
        el("td", {}, c.message),
        el("td", { class: "small" }, c.status === "ok" ? "" : (c.fix || "")))));
    } catch (e) {
      document.getElementById("health-status").textContent = `not updating: ${e.message}`;
    }
  }

  async function loadNames() {
    try {
      const names = await api("GET", "names");
      document.getElementById("user-names").replaceChildren(...names.users.map((u) => el("option", { value: u })));
      document.getElementById("group-names").replaceChildren(...names.groups.map((g) => el("option", { value: g })));
    } catch (e) {
      /* the forms work without suggestions */
    }
  }

  // ---- actions -------------------------------------------------------------------------
  const freeDialog = new bootstrap.Modal(document.getElementById("free-dialog"));

  function confirmFree(gpu) {
    pendingFree = gpu;
    const h = gpu.holder;
    document.getElementById("free-dialog-text").textContent =
      `Stop ${h.user}'s server${h.server ? ` "${h.server}"` : ""} to free GPU #${gpu.index} (${gpu.name}, ${gpu.uuid})?`;
    freeDialog.show();
  }

  document.getElementById("free-confirm").addEventListener("click", async () => {
    const gpu = pendingFree;
    freeDialog.hide();
    if (gpu) await act("POST", "free", { gpu: gpu.uuid });
    pendingFree = null;
  });

  document.getElementById("pin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = document.getElementById("pin-user").value.trim();
    const gpu = document.getElementById("pin-gpu").value;
    if (await act("POST", "pins", { user, gpu })) document.getElementById("pin-user").value = "";
  });

  function names(id) {
    return document.getElementById(id).value.split(",").map((s) => s.trim()).filter(Boolean);
  }

  const accessForm = document.getElementById("access-form");
  accessForm.addEventListener("input", () => { accessForm.dataset.touched = "1"; });
  accessForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await act("PUT", "access", { users: names("access-users"), groups: names("access-groups") });
    if (result) delete accessForm.dataset.touched;
  });
  document.getElementById("access-everyone").addEventListener("click", async () => {
    const result = await act("PUT", "access", { users: [], groups: [] });
    if (result) delete accessForm.dataset.touched;
    await refresh(true);
  });

  document.getElementById("roster-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = document.getElementById("roster-file").files[0];
    const text = file ? await file.text() : document.getElementById("roster-text").value;
    const format = file && /\.ya?ml$/i.test(file.name) ? "yaml" : file ? "csv" : "auto";
    const body = { roster: text, format, dry_run: document.getElementById("roster-dry-run").checked,
      skip_bad_rows: document.getElementById("roster-skip-bad").checked };
    const out = document.getElementById("roster-report");
    out.classList.remove("d-none");
    try {
      const result = await api("POST", "courses/roster", body);
      notify("success", result.message);
      out.textContent = reportText(result.report);
      await refresh(true);
    } catch (e) {
      notify("danger", e.message);
      out.textContent = e.report ? reportText(e.report) : e.message;
    }
  });

  function reportText(r) {
    const lines = [];
    for (const [name, c] of Object.entries(r.courses || {})) {
      lines.push(`${name}: ${c.members} members, ${c.students} students; teachers ${c.teachers.join(", ") || "-"}; TAs ${c.tas.join(", ") || "-"}`);
      if (c.added.length) lines.push(`  added ${c.added.length}: ${c.added.slice(0, 12).join(", ")}${c.added.length > 12 ? " …" : ""}`);
      if (c.removed.length) lines.push(`  removed ${c.removed.length}: ${c.removed.join(", ")}`);
      for (const x of c.role_changes) lines.push(`  ${x.user}: ${x.from} -> ${x.to}`);
    }
    if ((r.users_created || []).length) lines.push(`new users: ${r.users_created.length}`);
    for (const b of r.bad_rows || []) lines.push(`bad row, line ${b.line}: ${b.error}   [${b.row}]`);
    return lines.join("\n");
  }

  document.getElementById("reserve-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const iso = (id) => new Date(document.getElementById(id).value).toISOString();
    await act("POST", "reservations", { course: document.getElementById("reserve-course").value,
      gpus: Number(document.getElementById("reserve-gpus").value), start: iso("reserve-start"), end: iso("reserve-end") });
  });

  document.getElementById("share-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    await act("PUT", "shared", { gpu: document.getElementById("share-gpu").value,
      capacity: Number(document.getElementById("share-capacity").value) });
  });

  loadNames();
  refresh(true);
  setInterval(() => refresh(false), REFRESH_MS);
  refreshHealth();
  setInterval(refreshHealth, 60000);
})();
