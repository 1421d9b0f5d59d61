/* Shoal dashboard page: run list, live charts, worker table, events, resolved config.
 *
 * Polls the read-only JSON API (services/dashboard/api.py): /api/runs every few seconds, and
 * /api/runs/RUN/update?since=CURSOR for new metrics of the selected run (#run=ID in the URL).
 * Nothing is rendered with innerHTML: every value from Redis is untrusted text.
 * A token (?token=T on first load, or typed when the API says 401) is kept in sessionStorage
 * and sent as `Authorization: Bearer T`.
 */
(function () {
  "use strict";
  const {LineChart, BarChart, fmt, fmtElapsed} = window.ShoalCharts;
  const {Store, CHARTS, nodeColor} = window.ShoalSeries;
  const $ = sel => document.querySelector(sel);
  const S = {poll: 2000, runs: [], run: null, record: null, store: null, cursor: "-", eventsCursor: "-", events: [],
    skippedStream: 0, skippedNow: 0, charts: {}, timer: null, gen: 0, error: null, lastOk: null, config: null};

  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }

  // ------------------------------------------------------------------ API + token
  function takeTokenFromUrl() {
    const q = new URLSearchParams(location.search);
    if (q.has("token")) {
      sessionStorage.setItem("shoal-token", q.get("token"));
      q.delete("token");
      history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : "") + location.hash);
    }
  }

  async function api(path) {
    const token = sessionStorage.getItem("shoal-token");
    const r = await fetch(path, {headers: token ? {Authorization: "Bearer " + token} : {}, cache: "no-store"});
    if (r.status === 401) { showTokenForm(); throw new Error("token required"); }
    const body = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }

  function showTokenForm() {
    const box = $("#token-box");
    if (!box.hidden) return;
    box.hidden = false;
    $("#token-form").onsubmit = ev => {
      ev.preventDefault();
      sessionStorage.setItem("shoal-token", $("#token-input").value.trim());
      box.hidden = true;
      refreshRuns(); schedule(0);
    };
  }

  function setError(err) {
    S.error = err ? String(err.message || err) : null;
    if (!err) S.lastOk = Date.now();
    renderStatus();
  }

  // ------------------------------------------------------------------ runs
  async function refreshRuns() {
    try {
      const r = await api("/api/runs");
      S.runs = r.runs; S.skippedRuns = r.skipped;
      renderRunList();
      if (!S.run && S.runs.length) select(runFromHash() || S.runs[0].run_id);
      setError(null);
    } catch (e) { setError(e); }
  }

  function shortDate(t) {
    const d = new Date(t * 1000), p = n => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  function runFromHash() {
    const m = /run=([^&]+)/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function renderRunList() {
    const list = $("#runs");
    if (!S.runs.length) { list.replaceChildren(h("li", {class: "muted"}, "no runs yet")); return; }
    list.replaceChildren(...S.runs.map(r => {
      const dur = (r.ended_at || r.last_update || Date.now() / 1000) - r.started_at;
      const status = r.stalled ? "stalled" : r.status;
      const li = h("li", {class: "run" + (r.run_id === S.run ? " active" : ""), "data-run": r.run_id, title: r.run_id},
        h("div", {class: "run-id"}, r.run_id),
        h("div", {class: "run-meta"}, h("span", {class: "badge " + status}, status),
          h("span", {}, shortDate(r.started_at)), h("span", {}, fmtElapsed(dur))));
      li.onclick = () => { location.hash = "run=" + encodeURIComponent(r.run_id); };
      return li;
    }));
  }

  async function select(runId) {
    S.gen += 1;
    Object.assign(S, {run: runId, record: null, store: new Store(), cursor: "-", eventsCursor: "-", events: [], skippedStream: 0, config: null, thinned: null});
    history.replaceState(null, "", location.pathname + location.search + "#run=" + encodeURIComponent(runId));
    renderRunList();
    $("#main").hidden = false;
    buildCharts();
    loadRunInfo(S.gen);
    schedule(0);
  }

  async function loadRunInfo(gen) {
    try {
      const r = await api(`/api/runs/${encodeURIComponent(S.run)}`);
      if (gen !== S.gen) return;
      S.config = r.run.config; renderConfig(r.run);
    } catch (e) { setError(e); }
  }

  // ------------------------------------------------------------------ polling
  function schedule(ms) { clearTimeout(S.timer); S.timer = setTimeout(tick, ms); }

  async function tick() {
    if (!S.run) return schedule(S.poll);
    const gen = S.gen;
    let more = false;
    try {
      const q = `since=${encodeURIComponent(S.cursor)}&events_since=${encodeURIComponent(S.eventsCursor)}`;
      const r = await api(`/api/runs/${encodeURIComponent(S.run)}/update?${q}`);
      if (gen !== S.gen) return;
      const statusChanged = S.record && S.record.status !== r.run.status;
      S.record = r.run; S.cursor = r.cursor; S.eventsCursor = r.events_cursor; more = r.more;
      if (r.thinned) S.thinned = r.thinned;  // a long run's first load: older points thinned
      S.store.ingest(r.metrics);
      S.events = S.events.concat(r.events).slice(-200);
      S.skippedStream += r.skipped.stream; S.skippedNow = r.skipped.current;
      S.workers = r.workers;
      render((r.metrics.length > 0 || !S.rendered) && !more);  // a long backlog: draw once it is all in
      if (statusChanged) loadRunInfo(gen);
      setError(null);
    } catch (e) { setError(e); }
    const finished = S.record && S.record.status !== "running";
    schedule(more ? 0 : S.poll * (finished ? 5 : 1));
  }

  // ------------------------------------------------------------------ rendering
  function buildCharts() {
    S.charts = {}; S.rendered = false;
    for (const group of ["throughput", "reward", "pipeline", "multi-turn"]) $(`#charts-${group}`).replaceChildren();
    for (const spec of CHARTS) {
      const div = h("div", {"data-chart": spec.id});
      $(`#charts-${spec.group}`).appendChild(div);
      const Kind = spec.kind === "bar" ? BarChart : LineChart;
      S.charts[spec.id] = new Kind(div, {title: spec.title, unit: spec.unit, zero: spec.zero, emptyText: spec.emptyText, legend: spec.legend, x: spec.x});
    }
  }

  function render(chartsToo) {
    renderHeader(); renderKpis(); renderWorkers(); renderEvents(); renderStatus();
    if (!chartsToo) return;
    const t0 = S.record && S.record.started_at;
    S.store.nodeOf = Object.fromEntries((S.workers || []).map(w => [w.worker, w.node]));
    for (const spec of CHARTS) {
      const c = S.charts[spec.id];
      c.opts.t0 = t0;
      c.setData(spec.series(S.store));
    }
    S.rendered = true;
    document.body.dataset.entries = String(S.store.count);
  }

  function renderHeader() {
    const r = S.record;
    if (!r) return;
    const status = r.stalled ? "stalled" : r.status;
    const end = r.ended_at || Date.now() / 1000;
    $("#run-title").replaceChildren(h("span", {class: "run-name"}, r.run_id), h("span", {class: "badge " + status}, status));
    $("#run-sub").textContent = [r.algorithm && r.algorithm.toUpperCase(), r.started_at && `started ${shortDate(r.started_at)}`,
      r.started_at && `${r.ended_at ? "ran" : "running for"} ${fmtElapsed(end - r.started_at)}`].filter(Boolean).join(" · ");
  }

  function renderKpis() {
    const s = S.store, total = (S.config && S.config.run && S.config.run.total_steps) || null;
    const tokens = (S.workers || []).reduce((a, w) => a + (typeof w.tokens_per_s === "number" ? w.tokens_per_s : 0), 0);
    const step = s.last("learner/policy_version");
    const kpis = [
      ["learner step", step === null ? "–" : `${fmt(step)}${total ? " / " + total : ""}`],
      ["rollout tokens/s", fmt(tokens || s.last("rollout/tokens_per_s"))],
      ["samples/s", fmt(s.last("rollout/total_samples_per_s"))],
      ["reward", fmt(s.last("reward/mean"))],
      ["gold reward", fmt(s.last("reward/gold_mean"))],
      ["KL to ref", fmt(s.last("learner/kl_ref"))],
      ["policy lag", fmt(s.last("buffer/policy_lag_mean"))],
    ];
    $("#kpis").replaceChildren(...kpis.map(([k, v]) => h("div", {class: "kpi"}, h("div", {class: "kpi-v"}, v), h("div", {class: "kpi-k"}, k))));
  }

  function renderWorkers() {
    const learner = S.store.last("learner/policy_version");
    const rows = (S.workers || []).map(w => {
      const behind = learner !== null && typeof w.policy_version === "number" ? learner - w.policy_version : null;
      const node = w.node === null ? "–" : String(w.node);
      return h("tr", {"data-worker": w.worker},
        h("td", {class: "mono"}, w.worker),
        h("td", {class: "mono", title: node},
          w.node === null ? null : h("span", {class: "node-dot", style: `background:${nodeColor(w.node)}`}),
          node.length > 12 ? node.slice(0, 10) + "…" : node),
        h("td", {}, w.engine === null ? "–" : String(w.engine)),
        h("td", {class: "num"}, w.policy_version === null ? "–" : String(w.policy_version), behind ? h("span", {class: "muted"}, ` (−${behind})`) : null),
        h("td", {class: "num"}, fmt(w.tokens_per_s)), h("td", {class: "num"}, fmt(w.samples_per_s)),
        h("td", {class: "num"}, fmt(w.samples)),
        h("td", {}, h("span", {class: "badge " + w.health}, w.health)),
        h("td", {class: "num muted"}, w.age_s === null ? "–" : `${fmtElapsed(w.age_s)} ago`));
    });
    $("#workers tbody").replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", {colSpan: 9, class: "muted"}, "no workers reported yet"))]));
    $("#workers-count").textContent = rows.length ? `(${rows.length})` : "";
  }

  function renderEvents() {
    const t0 = S.record && S.record.started_at;
    const items = S.events.slice(-50).reverse().map(e => h("li", {class: "event"},
      h("span", {class: "muted mono"}, t0 ? "+" + fmtElapsed(e.t - t0) : new Date(e.t * 1000).toLocaleTimeString()),
      h("span", {class: "badge kind"}, e.kind), h("span", {class: "mono muted"}, e.source), h("span", {}, e.message)));
    $("#events").replaceChildren(...(items.length ? items : [h("li", {class: "muted"}, "no events")]));
  }

  function renderStatus() {
    const skipped = S.skippedStream + S.skippedNow + (S.skippedRuns || 0);
    const sk = $("#skipped");
    sk.hidden = skipped === 0;
    sk.textContent = `${skipped} malformed ${skipped === 1 ? "entry" : "entries"} skipped`;
    document.body.dataset.skipped = String(skipped);
    const live = $("#live");
    if (S.error) { live.className = "live error"; live.textContent = S.error; return; }
    const running = S.record && S.record.status === "running";
    live.className = "live" + (running ? " on" : "");
    const thin = S.thinned ? ` (older points thinned: ${S.thinned.sent} of ${S.thinned.total} loaded)` : "";
    live.textContent = (running ? `live · ${S.store ? S.store.count : 0} points` : (S.record ? `${S.record.status} · ${S.store.count} points` : "connecting…")) + thin;
  }

  function renderConfig(run) {
    const sections = Object.entries(run.config || {});
    $("#config").replaceChildren(...sections.map(([name, body]) => h("details", {class: "cfg", open: false},
      h("summary", {}, name),
      h("table", {}, h("tbody", {}, ...Object.entries(body && typeof body === "object" ? body : {"": body}).map(([k, v]) =>
        h("tr", {}, h("td", {class: "mono"}, `${name}.${k}`), h("td", {class: "mono"}, JSON.stringify(v)))))))));
    const summary = Object.entries(run.summary || {}).filter(([, v]) => v === null || typeof v !== "object");
    const evals = ["before", "after"].map(k => [k, run.summary && run.summary[k]]).filter(([, v]) => v && typeof v === "object");
    $("#summary-box").hidden = !summary.length && !evals.length;
    $("#summary").replaceChildren(
      ...evals.map(([k, v]) => h("tr", {}, h("td", {}, `eval (${k})`), h("td", {class: "mono"}, Object.entries(v).map(([a, b]) => `${a}=${fmt(b)}`).join("  ")))),
      ...summary.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {class: "mono"}, typeof v === "number" ? fmt(v) : String(v)))));
  }

  // ------------------------------------------------------------------ start
  async function main() {
    takeTokenFromUrl();
    try { const info = await api("/api/info"); S.poll = Math.max(250, info.poll_interval_s * 1000); } catch (e) { setError(e); }
    window.addEventListener("hashchange", () => { const r = runFromHash(); if (r && r !== S.run) select(r); });
    await refreshRuns();
    setInterval(refreshRuns, Math.max(S.poll * 2, 3000));
    setInterval(() => { renderHeader(); renderStatus(); }, 1000);
  }
  main();
})();
