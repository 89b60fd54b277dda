// The console page's usage and quota sections: GPU-hours per user, group, course or GPU model
// over a period (a bar chart, one bar per name split by day, week or month, and a table), and
// the quotas (set, remove). Same API as the CLI (GET usage, GET/PUT/DELETE quotas).
"use strict";

(function () {
  const root = document.getElementById("gpu-console");
  if (!root || !document.getElementById("usage-card")) return;
  const PREFIX = root.dataset.prefix;
  const XSRF = root.dataset.xsrf;
  const PERIODS = { day: ["24h", ""], week: ["7d", "day"], month: ["30d", "week"], year: ["365d", "month"] };
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  async function api(method, path, body) {
    const options = { method, credentials: "same-origin", headers: { "X-XSRFToken": XSRF, Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const resp = await fetch(PREFIX + "api/" + path, options);
    const data = await resp.json().catch(() => ({ message: resp.status + " " + resp.statusText }));
    if (!resp.ok) throw new Error(data.message || resp.statusText);
    return data;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function alertBox(kind, message) {
    const box = document.createElement("div");
    box.className = `alert alert-${kind} alert-dismissible small py-2`;
    box.setAttribute("role", kind === "danger" ? "alert" : "status");
    box.textContent = message;
    $("alerts").prepend(box);
    setTimeout(() => box.remove(), 8000);
  }

  function query() {
    const [since, bucket] = PERIODS[$("usage-period").value];
    const q = new URLSearchParams({ since, by: $("usage-by").value });
    if (bucket) q.set("bucket", bucket);
    return q;
  }

  // One horizontal bar per name, split into its buckets (lighter to darker, oldest first).
  function chart(data) {
    const by = data.by;
    const names = [];
    const totals = {};
    const buckets = [...new Set(data.rows.map((r) => r.start))].sort((a, b) => a - b);
    for (const r of data.rows) {
      if (!(r[by] in totals)) names.push(r[by]);
      totals[r[by]] = (totals[r[by]] || 0) + r.gpu_hours;
    }
    names.sort((a, b) => totals[b] - totals[a]);
    const shown = names.slice(0, 20);
    const max = Math.max(0.001, ...shown.map((n) => totals[n]));
    const W = 720, L = 160, H = 22;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${Math.max(1, shown.length) * H + 4}`);
    svg.setAttribute("width", "100%");
    svg.id = "usage-svg";
    shown.forEach((name, i) => {
      const y = i * H + 2;
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", L - 6); label.setAttribute("y", y + 14);
      label.setAttribute("text-anchor", "end"); label.setAttribute("font-size", "12");
      label.setAttribute("fill", "currentColor");
      label.textContent = name.length > 22 ? name.slice(0, 21) + "…" : name;
      svg.append(label);
      let x = L;
      for (const r of data.rows.filter((row) => row[by] === name).sort((a, b) => a.start - b.start)) {
        const w = (r.gpu_hours / max) * (W - L - 70);
        const rect = document.createElementNS(SVG, "rect");
        const shade = buckets.length > 1 ? 35 + 40 * (1 - buckets.indexOf(r.start) / (buckets.length - 1)) : 45;
        rect.setAttribute("x", x); rect.setAttribute("y", y + 3);
        rect.setAttribute("width", Math.max(w, 0.5)); rect.setAttribute("height", H - 6);
        rect.setAttribute("fill", `hsl(210, 70%, ${shade}%)`);
        rect.setAttribute("class", "usage-bar");
        const tip = document.createElementNS(SVG, "title");
        tip.textContent = `${name}, from ${new Date(r.start * 1000).toISOString().slice(0, 10)}: ${r.gpu_hours.toFixed(2)} GPU-hours`;
        rect.append(tip);
        svg.append(rect);
        x += w;
      }
      const total = document.createElementNS(SVG, "text");
      total.setAttribute("x", x + 6); total.setAttribute("y", y + 14);
      total.setAttribute("font-size", "12"); total.setAttribute("fill", "currentColor");
      total.textContent = totals[name].toFixed(2) + " h";
      svg.append(total);
    });
    $("usage-chart").replaceChildren(shown.length ? svg : document.createTextNode("No GPU use in this period."));
    return { names, totals };
  }

  async function refreshUsage() {
    const q = query();
    $("usage-csv").href = PREFIX + "api/usage?" + q + "&format=csv";
    let data;
    try {
      data = await api("GET", "usage?" + q);
    } catch (e) {
      $("usage-chart").textContent = "Usage unavailable: " + e.message;
      return;
    }
    const { names, totals } = chart(data);
    const by = data.by;
    $("usage-name-col").textContent = by === "gpu" ? "GPU model" : by[0].toUpperCase() + by.slice(1);
    const rows = names.map((name) => {
      const mine = data.rows.filter((r) => r[by] === name);
      const used = mine.some((r) => r.used_gpu_hours !== null) ? mine.reduce((s, r) => s + (r.used_gpu_hours || 0), 0).toFixed(2) : "n/a";
      const servers = Math.max(...mine.map((r) => r.servers));
      const tr = document.createElement("tr");
      tr.append(cell(name), cell(totals[name].toFixed(2), "text-end"), cell(used, "text-end"), cell(String(servers), "text-end"));
      return tr;
    });
    $("usage-table").tBodies[0].replaceChildren(...rows);
  }

  async function refreshQuotas() {
    let data;
    try {
      data = await api("GET", "quotas");
    } catch (e) {
      return;
    }
    const rows = data.quotas.map((q) => {
      const tr = document.createElement("tr");
      const remove = document.createElement("button");
      remove.className = "btn btn-sm btn-outline-danger";
      remove.textContent = "Remove";
      remove.addEventListener("click", async () => {
        try {
          const r = await api("DELETE", `quotas/${q.scope}/${encodeURIComponent(q.name || "all")}`);
          alertBox("success", r.message);
        } catch (e) { alertBox("danger", e.message); }
        refreshQuotas();
      });
      const who = q.scope === "default" ? "every user" : `${q.scope} ${q.name}`;
      const td = document.createElement("td");
      td.className = "text-end";
      td.append(remove);
      tr.append(cell(who), cell(q.text), cell(q.set_by), td);
      return tr;
    });
    if (data.configured_default && !data.quotas.some((q) => q.scope === "default")) {
      const tr = document.createElement("tr");
      tr.append(cell("every user (GPU_QUOTA_DEFAULT)"), cell(data.configured_default.text), cell("configuration"), cell(""));
      rows.push(tr);
    }
    $("quotas").tBodies[0].replaceChildren(...rows);
  }

  $("usage-by").addEventListener("change", refreshUsage);
  $("usage-period").addEventListener("change", refreshUsage);
  $("quota-scope").addEventListener("change", () => {
    const scope = $("quota-scope").value;
    $("quota-name").disabled = scope === "default";
    $("quota-name").setAttribute("list", scope === "user" ? "user-names" : "group-names");
  });
  $("quota-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const scope = $("quota-scope").value;
    const body = { scope, hours: Number($("quota-hours").value), window_days: Number($("quota-days").value) };
    if (scope !== "default") body.name = $("quota-name").value.trim();
    try {
      const r = await api("PUT", "quotas", body);
      alertBox("success", r.message);
    } catch (e) {
      alertBox("danger", e.message);
    }
    refreshQuotas();
  });
  refreshUsage();
  refreshQuotas();
  setInterval(refreshUsage, 60000);
})();
