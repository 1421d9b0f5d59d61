/* Shoal dashboard series: metrics stream entries -> per (name, source) time series, plus
 * the derived ones the charts need, and the chart definitions.
 *
 *   const store = new ShoalSeries.Store(); store.ingest(entries);   // {id, source, step, t, data}
 *   ShoalSeries.CHARTS.forEach(spec => chart.setData(spec.series(store)));
 *
 * Derived series (from consecutive entries of one source): the total rollout tokens/s and
 * samples/s (sum of each worker's last value), trained tokens/s (learner/trained_tokens per
 * learner/step_s, and per wall-clock second between learner steps), the buffer's sample and
 * add rates (d buffer/sampled / dt), and mean +/- std bands for reward/<scorer>_mean.
 * A chart with `x` (its x-axis name) plots [x, value] points instead of time series.
 */
(function () {
  "use strict";
  const TOTAL = "#1f2937";

  class Store {
    constructor() { this.series = new Map(); this.bands = new Map(); this.prev = new Map(); this.count = 0; this.lastT = null; }
    key(name, source) { return name + "|" + source; }
    push(map, name, source, point) {
      const k = this.key(name, source);
      if (!map.has(k)) map.set(k, {name, source, pts: []});
      map.get(k).pts.push(point);
    }
    ingest(entries) {
      for (const e of entries) {
        this.count += 1; this.lastT = e.t;
        for (const [name, v] of Object.entries(e.data)) {
          this.push(this.series, name, e.source, [e.t, v, e.step]);
          const std = stdName(name);
          if (std && e.data[std] !== undefined && v !== null && e.data[std] !== null)
            this.push(this.bands, name, e.source, [e.t, v - e.data[std], v + e.data[std]]);
        }
        this.derive(e);
      }
    }
    derive(e) {
      const d = e.data, prev = this.prev.get(e.source);
      if (d["learner/trained_tokens"] != null && d["learner/step_s"] > 0)
        this.push(this.series, "derived/trained_tokens_per_step_s", e.source, [e.t, d["learner/trained_tokens"] / d["learner/step_s"]]);
      if (d["learner/trained_tokens"] != null && prev && prev.learner && e.t > prev.learner)
        this.push(this.series, "derived/trained_tokens_per_wall_s", e.source, [e.t, d["learner/trained_tokens"] / (e.t - prev.learner)]);
      for (const [name, out] of [["buffer/sampled", "derived/buffer_sample_rate"], ["buffer/added", "derived/buffer_add_rate"]]) {
        if (d[name] != null && prev && prev[name] && e.t > prev[name][0])
          this.push(this.series, out, e.source, [e.t, (d[name] - prev[name][1]) / (e.t - prev[name][0])]);
      }
      const next = {...(prev || {})};
      if (d["learner/trained_tokens"] != null) next.learner = e.t;
      for (const name of ["buffer/sampled", "buffer/added"]) if (d[name] != null) next[name] = [e.t, d[name]];
      this.prev.set(e.source, next);
    }
    /* All series of `name`, one per source (optionally only sources matching `re`). */
    bySource(name, re) {
      return [...this.series.values()].filter(s => s.name === name && (!re || re.test(s.source)))
        .sort((a, b) => a.source.localeCompare(b.source, undefined, {numeric: true}));
    }
    /* `name` from every source (matching `re`) merged into one series, time-ordered. */
    merged(name, re) {
      const parts = this.bySource(name, re);
      if (parts.length <= 1) return parts.length ? parts[0].pts : [];
      return parts.flatMap(s => s.pts).sort((a, b) => a[0] - b[0]);
    }
    band(name, re) {
      const parts = [...this.bands.values()].filter(s => s.name === name && (!re || re.test(s.source)));
      return parts.flatMap(s => s.pts).sort((a, b) => a[0] - b[0]);
    }
    names(re) { return [...new Set([...this.series.values()].map(s => s.name))].filter(n => re.test(n)).sort(); }
    last(name) { const p = this.merged(name).filter(q => q[1] !== null); return p.length ? p[p.length - 1][1] : null; }
  }

  function stdName(name) {
    if (name === "reward/mean") return "reward/std";
    return name.endsWith("_mean") ? name.slice(0, -5) + "_std" : null;
  }

  /* Sum of each series' last value, evaluated at every point of any of them. */
  function sumOfLast(parts) {
    const all = parts.flatMap((s, i) => s.pts.map(p => [p[0], p[1], i])).sort((a, b) => a[0] - b[0]);
    const last = new Array(parts.length).fill(null), out = [];
    for (const [t, v, i] of all) {
      last[i] = v;
      out.push([t, last.reduce((a, b) => a + (b || 0), 0)]);
    }
    return out;
  }

  /* One colour per Ray node (a stable hash of its id), so that workers joining and leaving
   * with their nodes read as such in the throughput charts and the worker table. */
  const NODE_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
  function nodeColor(node) {
    if (node === null || node === undefined) return null;
    let h = 0;
    for (const ch of String(node)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return NODE_COLORS[h % NODE_COLORS.length];
  }

  function perWorker(store, name, totalName) {
    const parts = store.bySource(name, /^rollout/);
    const nodes = store.nodeOf || {};  // worker -> node, set by the page from the worker table
    const byNode = new Set(Object.values(nodes)).size > 1;  // colour by node only when there are several
    const out = parts.map(s => ({label: s.source, pts: s.pts, ...(byNode && nodeColor(nodes[s.source]) ? {color: nodeColor(nodes[s.source])} : {})}));
    if (totalName && store.merged(totalName).length) out.push({label: "total, end to end", pts: store.merged(totalName), color: TOTAL, thick: true});
    else if (parts.length > 1) out.push({label: "sum of workers", pts: sumOfLast(parts), color: TOTAL, thick: true});
    return out;
  }

  const line = (store, name, label, extra) => ({label: label || name, pts: store.merged(name), ...(extra || {})});
  const SCORERS = /^reward/;  // reward/* as the scorers report it (the learner logs its batch's too)
  const scored = (store, name, label, extra) =>
    ({label, pts: store.merged(name, SCORERS), band: store.band(name, SCORERS), ...(extra || {})});

  function rewardSeries(store) {
    const scorers = store.names(/^reward\/.+_mean$/).filter(n => n !== "reward/gold_mean" && !n.endsWith("_ensemble_std_mean"));
    const out = [scored(store, "reward/mean", "reward (total)", {color: TOTAL, thick: true})];
    return out.concat(scorers.map(n => scored(store, n, n.slice(7, -5))));
  }

  /* Gao et al. 2022's picture: gold and proxy (reward-model) reward against sqrt(KL to the
   * reference policy), one dot per learner step: learner/kl_ref paired with the mean
   * reward/gold_mean and reward/reward_model_mean logged at the same step by any source. */
  const VS_KL = {"learner/kl_ref": "kl", "reward/gold_mean": "gold", "reward/reward_model_mean": "proxy"};
  function rewardVsKL(store) {
    const at = new Map();  // step -> {kl|gold|proxy: [sum, count]}
    for (const s of store.series.values()) {
      const key = VS_KL[s.name];
      for (const [, v, step] of key ? s.pts : []) {
        if (v === null || step === null || step === undefined) continue;
        if (!at.has(step)) at.set(step, {});
        const acc = at.get(step)[key] || (at.get(step)[key] = [0, 0]);
        acc[0] += v; acc[1] += 1;
      }
    }
    const mean = acc => acc[0] / acc[1];
    const pts = key => [...at.values()].filter(r => r.kl && r[key])
      .map(r => [Math.sqrt(Math.max(mean(r.kl), 0)), mean(r[key])]).sort((a, b) => a[0] - b[0]);
    return [{label: "gold", pts: pts("gold"), color: "#59a14f", dots: true}, {label: "proxy (reward model)", pts: pts("proxy"), dots: true, right: true}];
  }

  function lagBars(store) {
    const ks = store.names(/^buffer\/policy_lag\/\d+$/).map(n => Number(n.split("/")[2])).sort((a, b) => a - b);
    return ks.map(k => ({label: String(k), value: store.last(`buffer/policy_lag/${k}`) || 0}));
  }

  const CHARTS = [
    {id: "tokens", group: "throughput", title: "Rollout tokens/s", unit: "per worker while generating, and their sum", zero: true,
      series: s => perWorker(s, "rollout/tokens_per_s")},
    {id: "samples", group: "throughput", title: "Rollout samples/s", unit: "per worker while generating; total end to end", zero: true,
      series: s => perWorker(s, "rollout/samples_per_s", "rollout/total_samples_per_s")},
    {id: "learner_steps", group: "throughput", title: "Learner steps/s", zero: true,
      series: s => [line(s, "learner/steps_per_s", "steps/s")]},
    {id: "trained_tokens", group: "throughput", title: "Trained tokens/s", unit: "learner", zero: true,
      series: s => [line(s, "derived/trained_tokens_per_step_s", "per step time"), line(s, "derived/trained_tokens_per_wall_s", "wall clock", {dashed: true})]},
    {id: "reward", group: "reward", title: "Reward per scorer", unit: "mean ± std",
      series: rewardSeries},
    {id: "gold", group: "reward", title: "Gold reward", unit: "mean ± std", emptyText: "this task has no gold reward",
      series: s => [scored(s, "reward/gold_mean", "gold", {color: "#59a14f", thick: true})]},
    {id: "gold_vs_kl", group: "reward", title: "Gold and proxy vs sqrt(KL)", unit: "x = sqrt(learner/kl_ref); one dot per learner step",
      x: "sqrt(KL to ref)", emptyText: "needs learner/kl_ref and reward/gold_mean", series: rewardVsKL},
    // Coste et al. 2023: the members of a reward-model ensemble disagree more where the policy over-optimises
    {id: "rm_disagreement", group: "reward", title: "Reward-model ensemble disagreement", unit: "std of the members' calibrated scores per answer",
      zero: true, emptyText: "no reward-model ensemble in this run (reward.rm_ensemble)",
      series: s => [line(s, "reward/reward_model_ensemble_std_mean", "members' std", {thick: true})]},
    {id: "kl", group: "reward", title: "KL to the reference policy", unit: "nats / sequence", zero: true,
      series: s => [line(s, "learner/kl_ref", "kl_ref"), line(s, "learner/approx_kl", "approx_kl (old→new)", {dashed: true})]},
    {id: "losses", group: "reward", title: "Losses",
      series: s => [line(s, "learner/policy_loss", "policy"), line(s, "learner/value_loss", "value"), line(s, "learner/entropy", "entropy", {dashed: true}),
        line(s, "learner/dpo_loss", "DPO / IPO")]},
    // preference learning (run.algorithm dpo): DPO's implicit reward beta * log pi / pi_ref
    {id: "implicit_rewards", group: "reward", title: "DPO implicit rewards", unit: "beta log pi/pi_ref of chosen and rejected answers",
      emptyText: "no preference learning in this run",
      series: s => [line(s, "learner/rewards_chosen", "chosen", {color: "#59a14f"}), line(s, "learner/rewards_rejected", "rejected", {color: "#e15759"}),
        line(s, "learner/reward_margin", "margin", {thick: true})]},
    {id: "preference_accuracy", group: "reward", title: "Preference accuracy", unit: "share of pairs whose chosen answer has the higher implicit reward",
      emptyText: "no preference learning in this run", series: s => [line(s, "learner/preference_accuracy", "accuracy", {thick: true})]},
    {id: "lag", group: "pipeline", title: "Policy-lag distribution", unit: "samples by steps behind", kind: "bar",
      legend: "samples trained on, by policy lag (learner steps)", series: lagBars},
    {id: "lag_time", group: "pipeline", title: "Policy lag", unit: "learner steps", zero: true,
      series: s => [line(s, "buffer/policy_lag_mean", "mean"), line(s, "buffer/policy_lag_max", "max", {dashed: true})]},
    {id: "is_weights", group: "pipeline", title: "Off-policy importance weights", unit: "pi_prox / mu of stale samples (raw), truncated share",
      emptyText: "no off-policy correction in this run (ppo.correction)",
      series: s => [line(s, "learner/is_weight_mean", "mean", {thick: true}), line(s, "learner/is_weight_max", "max", {dashed: true}),
        line(s, "learner/is_truncated_frac", "truncated / masked share")]},
    {id: "buffer_fill", group: "pipeline", title: "Buffer fill", unit: "fraction of capacity", zero: true,
      series: s => [line(s, "buffer/fill", "fill")]},
    {id: "buffer_rate", group: "pipeline", title: "Buffer sample rate", unit: "samples/s", zero: true,
      series: s => [line(s, "derived/buffer_sample_rate", "sampled"), line(s, "derived/buffer_add_rate", "added", {dashed: true})]},
    {id: "sync", group: "pipeline", title: "Weight sync", unit: "seconds", zero: true,
      series: s => [line(s, "weights/sync_s", "sync (publish → loaded)", {color: TOTAL, thick: true}),
        ...s.bySource("weights/load_s", /^rollout/).map(p => ({label: `load ${p.source}`, pts: p.pts, dashed: true}))]},
    {id: "versions", group: "pipeline", title: "Policy version", unit: "learner vs workers",
      series: s => [line(s, "learner/policy_version", "learner", {color: TOTAL, thick: true}),
        ...s.bySource("rollout/policy_version", /^rollout/).map(p => ({label: p.source, pts: p.pts}))]},
    // multi-turn runs (run.algorithm r2d2 / ilql): episodes from the env, Q-learning losses, R2D2's dQ
    {id: "turns", group: "multi-turn", title: "Rollout turns/s", unit: "per worker while playing episodes", zero: true,
      emptyText: "no multi-turn episodes in this run", series: s => perWorker(s, "rollout/turns_per_s")},
    {id: "episodes", group: "multi-turn", title: "Episode return and success", unit: "per worker, training episodes",
      emptyText: "no multi-turn episodes in this run",
      series: s => [...s.bySource("rollout/episode_return_mean", /^rollout/).map(p => ({label: `return ${p.source}`, pts: p.pts})),
        ...s.bySource("rollout/success_rate", /^rollout/).map(p => ({label: `success ${p.source}`, pts: p.pts, dashed: true}))]},
    {id: "q_losses", group: "multi-turn", title: "Q-learning losses", emptyText: "no Q-learning in this run",
      series: s => [line(s, "learner/q_loss", "R2D2 q_loss"), line(s, "learner/td_abs_mean", "R2D2 |td|", {dashed: true}),
        line(s, "learner/ilql_q_loss", "ILQL q"), line(s, "learner/ilql_v_loss", "ILQL v"),
        line(s, "learner/ilql_cql_loss", "ILQL cql", {dashed: true}), line(s, "learner/ilql_bc_loss", "ILQL bc", {dashed: true})]},
    {id: "dq", group: "multi-turn", title: "R2D2 staleness dQ", unit: "zero > burn-in > stored > stored + burn-in (paper)", zero: true,
      emptyText: "set r2d2.dq_interval to report dQ",
      series: s => [line(s, "dq/zero", "zero state"), line(s, "dq/zero_burn_in", "zero + burn-in"),
        line(s, "dq/stored", "stored"), line(s, "dq/stored_burn_in", "stored + burn-in", {thick: true})]},
  ];

  window.ShoalSeries = {Store, CHARTS, sumOfLast, stdName, nodeColor};
})();
