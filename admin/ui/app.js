// bluegreen status page: keeps the server-rendered page live. Polls the
// admin API every 1.5 s, draws the charts as inline SVG, and sends cut over,
// roll back and the rollout's pause, resume, promote and abort with the
// bearer token typed once and kept in this tab's sessionStorage only (never
// a cookie, never in the page).
"use strict";
(function () {
  const POLL_MS = 1500;
  const TOKEN_KEY = "bluegreen.admin-token";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  document.documentElement.classList.remove("nojs");

  let status = null;   // last /admin/status answer
  let ro = null;       // last /admin/rollout answer (null when not served)
  let history = [];    // newest first
  let lastOK = null;   // time of the last successful poll
  let newestSeen = null;

  // ---- token -------------------------------------------------------------
  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; } }
  function showTokenState() {
    const has = token() !== "";
    $("token-state").textContent = has ? "token set for this tab" :
      (document.body.dataset.auth === "required" ? "no token: switching will be refused" : "");
    $("token-forget").disabled = !has;
  }
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("token").value.trim();
    try { if (v) sessionStorage.setItem(TOKEN_KEY, v); } catch (e) { /* storage disabled */ }
    $("token").value = "";
    showTokenState();
  });
  $("token-forget").addEventListener("click", () => {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage disabled */ }
    showTokenState();
  });
  showTokenState();

  // ---- messages ----------------------------------------------------------
  function say(text, ok, where) {
    const m = $(where || "message");
    m.textContent = text;
    m.className = "message " + (ok ? "ok" : "error");
  }

  // ---- switching ---------------------------------------------------------
  let pending = null; // {path, body}
  function ask(action) {
    if (!status) { say("No status yet: the proxy has not answered.", false); return; }
    const colors = Object.keys(status.colors).sort();
    let text, body;
    if (action === "cutover") {
      const to = colors.find((c) => c !== status.active);
      text = "Cut over live traffic from " + status.active.toUpperCase() + " to " + to.toUpperCase() + "?";
      body = { to: to };
    } else {
      if (!status.previous) { say("Nothing to roll back to: no previous colour.", false); return; }
      text = "Roll back live traffic from " + status.active.toUpperCase() + " to " + status.previous.toUpperCase() + "?";
      body = { to: status.previous };
    }
    body.generation = status.generation; // refused with 409 if the state moved meanwhile
    confirm({ path: "/admin/" + action, body: body, where: "message", done: switched },
      action === "cutover" ? "Cut over" : "Roll back", text);
  }
  function switched(data) {
    return data.changed === false ? "Nothing changed: " + data.active + " was already live." :
      "Switched: " + data.active + " is live (generation " + data.generation + ").";
  }
  function confirm(p, title, text) {
    pending = p;
    $("confirm-h").textContent = title;
    $("confirm-text").textContent = text;
    $("reason").value = "";
    $("confirm").showModal();
    $("reason").focus();
  }

  // ---- progressive rollout -----------------------------------------------
  function askRollout(action) {
    const r = ro && ro.rollout;
    if (!r) { say("No rollout is running.", false, "ro-message"); return; }
    const next = r.steps[Math.min(r.step + 1, r.steps.length - 1)];
    const text = {
      pause: "Pause the rollout to " + r.to.toUpperCase() + " at " + r.weight + " %? The weight stays; no step passes until it is resumed.",
      resume: "Resume the rollout to " + r.to.toUpperCase() + "? The step's analysis window starts afresh.",
      promote: "Promote the rollout to " + r.to.toUpperCase() + " to its next step (" + next + " %) now, without waiting for the analysis?" +
        (next === 100 ? " That is the cutover." : ""),
      abort: "Abort the rollout to " + r.to.toUpperCase() + "? Every client goes back to " + r.from.toUpperCase() + " at once.",
    }[action];
    confirm({ path: "/admin/rollout/" + action, body: {}, where: "ro-message", done: rolledOut },
      action.charAt(0).toUpperCase() + action.slice(1) + " the rollout", text);
  }
  function rolledOut(v) {
    return "Rollout " + v.phase + (v.rollout ? ": step " + v.step_number + " of " + v.rollout.steps.length + ", " + v.rollout.to + " at " + v.weight + " %." :
      v.last ? " (" + v.last.to + " at " + v.last.weight + " %): " + v.last.ending + "." : ".");
  }
  for (const a of ["pause", "resume", "promote", "abort"]) {
    const b = $("btn-ro-" + a);
    if (b) b.addEventListener("click", () => askRollout(a));
  }
  $("btn-cutover").addEventListener("click", () => ask("cutover"));
  $("btn-rollback").addEventListener("click", () => ask("rollback"));
  $("confirm").addEventListener("close", () => {
    const p = pending;
    pending = null;
    if (!p || $("confirm").returnValue !== "ok") return;
    p.body.reason = $("reason").value.trim();
    send(p);
  });

  async function send(p) {
    const path = p.path, body = p.body, where = p.where;
    const headers = { "Content-Type": "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    say("Sending…", true, where);
    let res, data = {};
    try {
      res = await fetch(path, { method: "POST", headers: headers, body: JSON.stringify(body), cache: "no-store", credentials: "omit" });
    } catch (e) {
      say("The proxy did not answer: " + e.message, false, where);
      return;
    }
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      say(res.status + " " + (data.code || res.statusText) + ": " + (data.error || "refused"), false, where);
      return;
    }
    say(p.done(data), true, where);
    poll();
  }

  // ---- polling -----------------------------------------------------------
  async function getJSON(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 4000);
    try {
      const res = await fetch(path, { cache: "no-store", credentials: "omit", signal: ctl.signal });
      if (!res.ok) throw new Error(path + ": " + res.status);
      return await res.json();
    } finally { clearTimeout(timer); }
  }

  let timer = null;
  async function poll() {
    clearTimeout(timer);
    try {
      const [st, hi] = await Promise.all([getJSON("/admin/status"), getJSON("/admin/history?limit=20")]);
      status = st;
      history = hi.history || [];
      let stats = null;
      try { stats = await getJSON("/admin/stats?step=5s"); } catch (e) { /* statistics off */ }
      if ($("rollout")) {
        try { ro = await getJSON("/admin/rollout"); } catch (e) { ro = null; }
      }
      lastOK = new Date();
      render(stats);
      const c = $("conn");
      c.textContent = "live · updated " + lastOK.toLocaleTimeString([], { hour12: false });
      c.classList.remove("offline");
    } catch (e) {
      const c = $("conn");
      c.textContent = "OFFLINE: the proxy does not answer" + (lastOK ? " since " + lastOK.toLocaleTimeString([], { hour12: false }) : "") + "; retrying";
      c.classList.add("offline");
    }
    timer = setTimeout(poll, POLL_MS);
  }

  // ---- rendering ---------------------------------------------------------
  function fmtTime(s) {
    if (!s || s.startsWith("0001-")) return "never";
    const d = new Date(s);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  // clock is the time of day (UTC) of a recent instant.
  function clock(s) {
    if (!s || s.startsWith("0001-")) return "never";
    return new Date(s).toISOString().slice(11, 19) + "Z";
  }
  function ago(s) {
    if (!s || s.startsWith("0001-")) return "";
    const sec = Math.round((Date.now() - new Date(s).getTime()) / 1000);
    if (sec < 0) return "in " + dur(-sec);
    return dur(sec) + " ago";
  }
  function dur(sec) {
    if (sec < 60) return sec + "s";
    if (sec < 3600) return Math.floor(sec / 60) + "m" + (sec % 60) + "s";
    return Math.floor(sec / 3600) + "h" + Math.floor((sec % 3600) / 60) + "m";
  }
  function ms(ns) {
    if (!ns) return "–";
    if (ns < 1e6) return Math.round(ns / 1e3) + " µs";
    if (ns < 1e9) return (ns / 1e6).toFixed(1) + " ms";
    return (ns / 1e9).toFixed(2) + " s";
  }
  function versions(cs) {
    const vs = [];
    for (const i of cs.instances || []) if (i.version && !vs.includes(i.version)) vs.push(i.version);
    return vs.join(", ");
  }
  function cell(tr, cls, text) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
  }

  function render(stats) {
    const st = status;
    document.title = "bluegreen: " + st.active + " live";
    const box = $("active-box");
    box.className = "active c-" + st.active;
    $("active-color").textContent = st.active.toUpperCase();
    const av = versions(st.colors[st.active] || {});
    $("active-version").textContent = av ? "version " + av : "";
    $("previous").textContent = st.previous || "–";
    $("generation").textContent = st.generation;
    $("changed-at").textContent = fmtTime(st.changed_at) + " (" + ago(st.changed_at) + ")";
    $("applied").textContent = st.applied_generation + (st.applied_generation === st.generation ? " (in step with the store)" : " (BEHIND the store)");
    if (st.store) {
      $("store").textContent = st.store.kind + ", " + (st.store.up ? "reachable" : "UNREACHABLE") +
        (st.store.leader === undefined ? "" : st.store.leader ? ", leader" : ", follower");
    }
    $("replica").textContent = st.replica || "–";
    $("proxy-version").textContent = st.version || "–";
    $("btn-rollback").disabled = !st.previous;

    for (const card of document.querySelectorAll(".card")) {
      const color = card.dataset.color;
      const cs = st.colors[color];
      if (!cs) continue;
      const role = color === st.active ? "active" : color === st.previous ? "previous" : "idle";
      const r = card.querySelector(".role");
      r.textContent = role;
      r.className = "role role-" + role;
      card.querySelector(".healthy-count").textContent = cs.healthy + "/" + cs.total + " healthy";
      const s = stats && stats.colors[color];
      if (s) {
        const m = s.last_minute;
        card.querySelector(".t-rate").textContent = (m.requests / 60).toFixed(1);
        card.querySelector(".t-err").textContent = m.requests ? (100 * m.instance_errors / m.requests).toFixed(2) + " %" : "–";
        card.querySelector(".t-p50").textContent = ms(m.p50_ns);
        card.querySelector(".t-p99").textContent = ms(m.p99_ns);
      }
      const tbody = card.querySelector(".instances tbody");
      const rows = [];
      for (const i of cs.instances) {
        const tr = document.createElement("tr");
        tr.dataset.url = i.url;
        let cls, text;
        if (i.healthy) { cls = "st-up"; text = "✓ healthy"; }
        else if (i.last_check.startsWith("0001-")) { cls = "st-down"; text = "… not checked yet"; }
        else { cls = "st-down"; text = "✗ unhealthy"; }
        if (i.ejected) {
          if (i.healthy) cls = "st-ejected";
          text += " · ⚠ ejected until " + clock(i.ejected_until);
        }
        tr.className = cls;
        cell(tr, "url", i.url);
        cell(tr, "state", text);
        cell(tr, "iver", i.version || "–");
        cell(tr, "checked", clock(i.last_check));
        cell(tr, "err", i.last_error || "–");
        rows.push(tr);
      }
      tbody.replaceChildren(...rows);
    }

    const hb = $("history").querySelector("tbody");
    const rows = [];
    for (const e of history) {
      const tr = document.createElement("tr");
      cell(tr, "", fmtTime(e.time));
      cell(tr, "", e.action + (e.forced ? " (forced)" : ""));
      cell(tr, "", (e.from || "–") + " → " + e.to);
      cell(tr, "", e.trigger);
      cell(tr, "", String(e.generation));
      cell(tr, "", e.reason || "–");
      if (newestSeen !== null && e.generation > newestSeen) tr.classList.add("fresh");
      rows.push(tr);
    }
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = 6;
      td.textContent = "no switch yet";
      tr.appendChild(td);
      rows.push(tr);
    }
    hb.replaceChildren(...rows);
    if (newestSeen === null || (history[0] && history[0].generation > newestSeen)) {
      newestSeen = history[0] ? history[0].generation : 0;
    }

    if (ro) renderRollout(ro);
    if (stats) charts(stats);
  }

  // renderRollout mirrors the server-rendered rollout section.
  function renderRollout(v) {
    const live = !!v.rollout;
    const r = v.rollout || v.last;
    const ph = $("ro-phase");
    ph.textContent = v.phase;
    ph.className = "phase ph-" + v.phase;
    let line;
    if (!r) line = "No rollout has run. Start one with bluegreen rollout --to COLOUR (or POST /admin/rollout).";
    else if (!live) line = "Last rollout " + r.from + " → " + r.to + ": " + r.outcome + " at " + r.weight + " % on " + fmtTime(r.ended_at) + ": " + r.ending;
    else line = r.from + " → " + r.to + ", started " + fmtTime(r.started_at) + (r.reason ? ": " + r.reason : "");
    $("ro-line").textContent = line;
    $("ro-live").hidden = !live;
    $("btn-ro-pause").disabled = v.phase !== "running";
    $("btn-ro-resume").disabled = v.phase !== "paused";
    $("btn-ro-promote").disabled = !live;
    $("btn-ro-abort").disabled = !live;
    if (!live) return;
    $("ro-step").textContent = v.step_number + " of " + r.steps.length + " (" + r.steps.join(" → ") + " %)";
    $("ro-meter").value = v.weight;
    $("ro-weight").textContent = r.to + " " + v.weight + " % · " + r.from + " " + (100 - v.weight) + " %";
    $("ro-time").textContent = v.time_in_step || "–";
    $("ro-verdict").textContent = v.verdict || "–";
    let lim = "each step " + r.step_interval + ", at least " + r.min_requests + " requests to " + r.to + ", errors ≤ " + +(100 * r.max_error_ratio).toFixed(4) + "\u00a0%";
    if (r.max_p99) lim += ", p99 ≤ " + r.max_p99;
    if (r.max_p99_ratio) lim += ", p99 ≤ " + r.max_p99_ratio + "× " + r.from + "'s";
    $("ro-limits").textContent = lim;
    let counts = v.replicas > 1 ? v.replicas + " replicas' traffic, summed" : "this replica's traffic";
    if (v.fleet_stale) counts += " (stale: " + v.fleet_stale + ")";
    $("ro-counts").textContent = counts;
    const rows = [];
    for (const [c, role, w] of [[r.to, "target", v.weight], [r.from, "baseline", 100 - v.weight]]) {
      const win = (v.colors && v.colors[c]) || { requests: 0, instance_errors: 0, error_ratio: 0, p99_seconds: 0 };
      const tr = document.createElement("tr");
      tr.dataset.color = c;
      cell(tr, "", c);
      cell(tr, "", role);
      cell(tr, "", w + " %");
      cell(tr, "", String(win.requests));
      cell(tr, "", String(win.instance_errors));
      cell(tr, "", win.requests ? (100 * win.error_ratio).toFixed(2) + " %" : "–");
      cell(tr, "", ms(win.p99_seconds * 1e9));
      rows.push(tr);
    }
    $("ro-colors").querySelector("tbody").replaceChildren(...rows);
  }

  // ---- charts ------------------------------------------------------------
  const W = 560, H = 150, L = 50, R = 8, T = 10, B = 18;
  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function charts(stats) {
    const now = new Date(stats.now).getTime();
    const from = now - stats.span_seconds * 1000;
    const step = stats.step_seconds;
    const since = new Date(stats.since).getTime() - step * 1000; // no data before the process started
    const series = {};
    for (const c of Object.keys(stats.colors)) {
      const pts = stats.colors[c].points.slice(0, -1) // the last step is unfinished
        .filter((p) => new Date(p.t).getTime() >= since);
      series[c] = pts.map((p) => ({
        t: new Date(p.t).getTime() + step * 500,
        rate: p.requests / step,
        err: p.requests ? 100 * p.instance_errors / p.requests : null,
        p50: p.latencies ? p.p50_ns / 1e6 : null,
        p99: p.latencies ? p.p99_ns / 1e6 : null,
      }));
    }
    const switches = history.filter((e) => new Date(e.time).getTime() >= from)
      .map((e) => ({ t: new Date(e.time).getTime(), label: e.action === "abort" ? "abort" : "→" + e.to, cls: "switch", row: 0 }));
    // The running rollout: where it started and where its current step
    // began, labelled with the target's weight (each kind of marker on its
    // own row of labels, so that close ones stay readable).
    const r = ro && ro.rollout;
    if (r) {
      const st = new Date(r.started_at).getTime(), ss = new Date(r.step_started_at).getTime();
      if (st >= from && ss - st > 1000) switches.push({ t: st, label: r.to + " " + r.steps[0] + "%", cls: "step", row: 1 });
      if (ss >= from) switches.push({ t: ss, label: r.to + " " + r.weight + "%", cls: "step", row: 2 });
    }
    draw($("chart-rate"), series, "rate", from, now, switches, (v) => v.toFixed(v < 10 ? 1 : 0), 1);
    draw($("chart-errors"), series, "err", from, now, switches, (v) => v.toFixed(v < 10 ? 1 : 0) + "%", 1);
    draw($("chart-p50"), series, "p50", from, now, switches, (v) => v.toFixed(v < 10 ? 1 : 0) + "ms", 1);
    draw($("chart-p99"), series, "p99", from, now, switches, (v) => v.toFixed(v < 10 ? 1 : 0) + "ms", 1);
  }
  function draw(box, series, key, from, now, switches, fmt, minMax) {
    let max = minMax;
    for (const c in series) for (const p of series[c]) if (p[key] !== null && p[key] > max) max = p[key];
    max *= 1.1;
    const x = (t) => L + (W - L - R) * (t - from) / (now - from);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": box.parentElement.querySelector("figcaption").textContent });
    svg.appendChild(el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    svg.appendChild(el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    svg.appendChild(el("text", { class: "tick", x: L - 4, y: T + 8, "text-anchor": "end" }, fmt(max)));
    svg.appendChild(el("text", { class: "tick", x: L - 4, y: H - B, "text-anchor": "end" }, "0"));
    for (const m of [15, 10, 5, 0]) {
      svg.appendChild(el("text", { class: "tick", x: x(now - m * 60000), y: H - 4, "text-anchor": m === 15 ? "start" : m === 0 ? "end" : "middle" }, m ? "-" + m + "m" : "now"));
    }
    for (const s of switches) {
      const sx = x(s.t);
      svg.appendChild(el("line", { class: s.cls, x1: sx, y1: T, x2: sx, y2: H - B }));
      const right = sx > W - 70; // near the right edge: label on the left of the line
      svg.appendChild(el("text", { class: s.cls + "-label", x: right ? sx - 3 : sx + 3, y: T + 10 + 12 * s.row, "text-anchor": right ? "end" : "start" }, s.label));
    }
    for (const c of Object.keys(series).sort()) {
      let d = "", pen = false;
      for (const p of series[c]) {
        if (p[key] === null) { pen = false; continue; }
        d += (pen ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p[key]).toFixed(1);
        pen = true;
      }
      if (d) {
        const path = el("path", { class: "s-" + c, d: d });
        path.appendChild(el("title", {}, c));
        svg.appendChild(path);
      }
    }
    box.replaceChildren(svg);
  }

  poll();
})();
