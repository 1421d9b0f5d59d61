/* Shoal dashboard charts: small hand-written SVG line and bar charts (no libraries).
 *
 *   const c = new ShoalCharts.LineChart(divElement, {title: "Rollout tokens/s", t0: startUnixS});
 *   c.setData([{label: "rollout-0", color: "#4e79a7", pts: [[t, v], ...], band: [[t, lo, hi], ...]}]);
 *
 * Points are [unix seconds, value|null]; null breaks the line. With opts.x (the x-axis name)
 * points are [x, value], sorted by x, and the x ticks are numbers. A series with `dots: true`
 * is drawn as dots (a scatter) instead of a line; one with `right: true` gets its own y axis on
 * the right (two scales in one chart). Every chart sets
 * data-points (points drawn) on its element and on each series path, which the browser
 * test reads. Hovering shows a crosshair with each series' nearest value.
 */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"];
  const M = {left: 52, right: 14, top: 10, bottom: 24};
  const HEIGHT = 190;
  const MAX_DRAWN = 1500;

  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e6) return Number((v / 1e6).toFixed(a >= 1e7 ? 1 : 2)) + "M";
    if (a >= 1e4) return Number((v / 1e3).toFixed(a >= 1e5 ? 0 : 1)) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a === 0) return "0";
    if (a < 0.001) return v.toExponential(1);
    return String(Number(v.toPrecision(3)));
  }

  function fmtElapsed(s) {
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h) return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
    return `${m}:${String(sec).padStart(2, "0")}`;
  }

  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(f => f * mag).find(s => s >= raw) || 10 * mag;
    const first = Math.floor(lo / step + 1e-9), last = Math.ceil(hi / step - 1e-9), ticks = [];
    for (let i = first; i <= last && ticks.length < 20; i++) ticks.push(Number((i * step).toPrecision(12)));
    return ticks;
  }

  function decimate(pts) {
    if (pts.length <= MAX_DRAWN) return pts;
    const stride = Math.ceil(pts.length / MAX_DRAWN), out = [];
    for (let i = 0; i < pts.length; i += stride) out.push(pts[i]);
    if (out[out.length - 1] !== pts[pts.length - 1]) out.push(pts[pts.length - 1]);
    return out;
  }

  function nearest(pts, t) {
    let lo = 0, hi = pts.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (pts[mid][0] < t) lo = mid + 1; else hi = mid; }
    if (lo > 0 && Math.abs(pts[lo - 1][0] - t) < Math.abs(pts[lo][0] - t)) lo -= 1;
    return pts[lo];
  }

  class Chart {
    constructor(root, opts) {
      this.root = root; this.opts = opts || {};
      root.classList.add("chart");
      const head = document.createElement("div"); head.className = "chart-head"; root.appendChild(head);
      const h = document.createElement("h3"); h.textContent = this.opts.title || ""; head.appendChild(h);
      if (this.opts.unit) { const u = document.createElement("span"); u.className = "unit"; u.textContent = this.opts.unit; head.appendChild(u); }
      this.svg = el("svg", {class: "plot", height: HEIGHT, role: "img", "aria-label": this.opts.title || "chart"}, root);
      this.legend = document.createElement("div"); this.legend.className = "legend"; root.appendChild(this.legend);
      this.series = [];
      if (window.ResizeObserver) new ResizeObserver(() => this.render()).observe(root);
    }
    setData(series) { this.series = series; this.render(); }
    frame(rightAxis) {
      while (this.svg.firstChild) this.svg.removeChild(this.svg.firstChild);
      const w = this.svg.clientWidth || this.root.clientWidth || 400;
      this.svg.setAttribute("viewBox", `0 0 ${w} ${HEIGHT}`);
      return {w, iw: w - M.left - M.right - (rightAxis ? 40 : 0), ih: HEIGHT - M.top - M.bottom};
    }
    empty(f, text) {
      el("text", {x: f.w / 2, y: HEIGHT / 2, class: "empty", "text-anchor": "middle"}, this.svg).textContent = text;
      this.root.dataset.points = "0";
    }
    yAxis(f, lo, hi, right) {
      const ticks = niceTicks(lo, hi, 4), y0 = ticks[0], y1 = ticks[ticks.length - 1];
      const y = v => M.top + f.ih - (v - y0) / (y1 - y0 || 1) * f.ih;
      for (const t of ticks) {
        if (!right) el("line", {x1: M.left, x2: M.left + f.iw, y1: y(t), y2: y(t), class: "grid"}, this.svg);
        el("text", {x: right ? M.left + f.iw + 6 : M.left - 6, y: y(t) + 4, class: "tick", "text-anchor": right ? "start" : "end"}, this.svg)
          .textContent = fmt(t);
      }
      return y;
    }
    renderLegend(items) {
      this.legend.replaceChildren(...items.map(({label, color, value}) => {
        const s = document.createElement("span"); s.className = "key";
        const sw = document.createElement("i"); sw.style.background = color; s.appendChild(sw);
        s.appendChild(document.createTextNode(label));
        if (value !== undefined) { const b = document.createElement("b"); b.textContent = fmt(value); s.appendChild(b); }
        return s;
      }));
    }
  }

  class LineChart extends Chart {
    render() {
      const series = this.series.map((s, i) => ({...s, color: s.color || PALETTE[i % PALETTE.length], pts: decimate(s.pts || [])}))
        .filter(s => s.pts.length);
      const f = this.frame(series.some(s => s.right));
      this.drawn = series;
      if (!series.length) { this.renderLegend([]); return this.empty(f, this.opts.emptyText || "no data yet"); }
      let t0 = Infinity, t1 = -Infinity;
      const ys = [[Infinity, -Infinity], [Infinity, -Infinity]];  // [lo, hi] of the left and the right y axis
      for (const s of series) {
        const r = ys[s.right ? 1 : 0];
        for (const [t, v] of s.pts) { t0 = Math.min(t0, t); t1 = Math.max(t1, t); if (v !== null) { r[0] = Math.min(r[0], v); r[1] = Math.max(r[1], v); } }
        for (const [, a, b] of s.band || []) if (a !== null && b !== null) { r[0] = Math.min(r[0], a); r[1] = Math.max(r[1], b); }
      }
      for (const r of ys) {
        if (this.opts.zero) { r[0] = Math.min(r[0], 0); r[1] = Math.max(r[1], 0); }
        if (!Number.isFinite(r[0])) { r[0] = 0; r[1] = 1; }
      }
      const xs = this.opts.x;  // x is a value, not a time
      if (xs) t0 = Math.min(t0, 0);
      const base = xs ? 0 : this.opts.t0 || t0, span = xs ? t1 - t0 || 1 : Math.max(t1 - t0, 1);
      const x = t => M.left + (t - t0) / span * f.iw;
      const y = this.yAxis(f, ...ys[0]), yr = series.some(s => s.right) ? this.yAxis(f, ...ys[1], true) : y;
      const xt = niceTicks(t0 - base, t1 - base, 5), sub = xt.length > 1 && xt[1] - xt[0] < 1;
      for (const t of xt) {
        if (t + base < t0 - 1e-9 || t + base > t1 + 1e-9) continue;
        el("text", {x: x(t + base), y: HEIGHT - 6, class: "tick", "text-anchor": "middle"}, this.svg)
          .textContent = xs ? fmt(t) : sub ? `${Number(t.toFixed(2))}s` : fmtElapsed(t);
      }
      el("line", {x1: M.left, x2: M.left + f.iw, y1: M.top + f.ih, y2: M.top + f.ih, class: "axis"}, this.svg);
      let total = 0;
      for (const s of series) total += this.drawSeries(s, x, s.right ? yr : y);
      this.root.dataset.points = String(total);
      this.renderLegend(series.map(s => ({label: s.label + (s.right ? " (right axis)" : ""), color: s.color, value: lastValue(s.pts)})));
      this.hover(f, series, base, t0, span);
    }
    drawSeries(s, x, y) {
      if (s.band && s.band.length) {
        const good = decimate(s.band).filter(b => b[1] !== null && b[2] !== null);
        const d = good.map((b, i) => `${i ? "L" : "M"}${x(b[0]).toFixed(1)},${y(b[2]).toFixed(1)}`).join("") +
          good.slice().reverse().map(b => `L${x(b[0]).toFixed(1)},${y(b[1]).toFixed(1)}`).join("") + "Z";
        if (good.length) el("path", {d, fill: s.color, class: "band"}, this.svg);
      }
      let d = "", pen = false, n = 0;
      for (const [t, v] of s.pts) {
        if (v === null) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}${s.dots ? "h0" : ""}`; pen = !s.dots; n += 1;
      }
      const cls = s.dots ? "dots" : "line" + (s.dashed ? " dashed" : "") + (s.thick ? " thick" : "");
      const dots = s.dots ? {fill: "none", "stroke-width": 4, "stroke-linecap": "round"} : {};  // zero-length segments: dots
      el("path", {d, stroke: s.color, class: cls, "data-series": s.label, "data-points": n, ...dots}, this.svg);
      const last = s.pts.filter(p => p[1] !== null).pop();
      if (last) el("circle", {cx: x(last[0]), cy: y(last[1]), r: 2.5, fill: s.color}, this.svg);
      return n;
    }
    hover(f, series, base, t0, span) {
      const cross = el("line", {y1: M.top, y2: M.top + f.ih, class: "cross", visibility: "hidden"}, this.svg);
      const zone = el("rect", {x: M.left, y: M.top, width: f.iw, height: f.ih, class: "zone"}, this.svg);
      const tip = this.tip || (this.tip = Object.assign(document.createElement("div"), {className: "tip", hidden: true}));
      this.root.appendChild(tip);
      zone.addEventListener("mouseleave", () => { cross.setAttribute("visibility", "hidden"); tip.hidden = true; });
      zone.addEventListener("mousemove", ev => {
        const box = this.svg.getBoundingClientRect(), px = ev.clientX - box.left;
        const t = t0 + (px - M.left) / f.iw * span;
        cross.setAttribute("x1", px); cross.setAttribute("x2", px); cross.setAttribute("visibility", "visible");
        const rows = series.map(s => { const p = nearest(s.pts, t); return `${s.label}: ${fmt(p[1])}`; });
        tip.textContent = (this.opts.x ? `${this.opts.x} ${fmt(t)}\n` : `t+${fmtElapsed(t - base)}\n`) + rows.join("\n");
        tip.hidden = false;
        tip.style.left = Math.min(px + 12, box.width - 160) + "px";
        tip.style.top = (M.top + 4) + "px";
      });
    }
  }

  function lastValue(pts) {
    for (let i = pts.length - 1; i >= 0; i--) if (pts[i][1] !== null) return pts[i][1];
    return null;
  }

  /* Bars: setData([{label: "0", value: 12}, ...]) (e.g. policy lag k -> count). */
  class BarChart extends Chart {
    render() {
      const f = this.frame(), bars = this.series || [];
      if (!bars.length) { this.renderLegend([]); return this.empty(f, this.opts.emptyText || "no data yet"); }
      const hi = Math.max(...bars.map(b => b.value), 0), total = bars.reduce((a, b) => a + b.value, 0);
      const y = this.yAxis(f, 0, (hi || 1) * 1.15), bw = f.iw / bars.length;
      bars.forEach((b, i) => {
        const x0 = M.left + i * bw + bw * 0.15, top = y(b.value);
        const r = el("rect", {x: x0, y: top, width: bw * 0.7, height: Math.max(M.top + f.ih - top, 0), class: "bar",
          fill: this.opts.color || PALETTE[0], "data-points": 1}, this.svg);
        el("title", {}, r).textContent = `${b.label}: ${fmt(b.value)} (${total ? (100 * b.value / total).toFixed(1) : 0}%)`;
        el("text", {x: x0 + bw * 0.35, y: HEIGHT - 6, class: "tick", "text-anchor": "middle"}, this.svg).textContent = b.label;
        if (total) el("text", {x: x0 + bw * 0.35, y: top - 4, class: "tick", "text-anchor": "middle"}, this.svg)
          .textContent = `${(100 * b.value / total).toFixed(0)}%`;
      });
      el("line", {x1: M.left, x2: M.left + f.iw, y1: M.top + f.ih, y2: M.top + f.ih, class: "axis"}, this.svg);
      this.root.dataset.points = String(bars.length);
      this.renderLegend(this.opts.legend ? [{label: this.opts.legend, color: this.opts.color || PALETTE[0]}] : []);
    }
  }

  window.ShoalCharts = {LineChart, BarChart, fmt, fmtElapsed, niceTicks, PALETTE};
})();
