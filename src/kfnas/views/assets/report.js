// kfnas report page: draws the trials tables and the plots from the page data (#kfnas-data).
// plotly.js comes gzip-compressed in #kfnas-plotly and is unpacked here; nothing is fetched.
// To add a plot: write a draw<What>(study, holder) function and call it from drawStudy.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("kfnas-data").textContent);
  const METRIC = DATA.metric;
  const CONFIG = {displaylogo: false, responsive: true};
  const title = (text) => ({text: text, x: 0.01, xanchor: "left", font: {size: 14}});
  const HOVER_DECISIONS = 8;  // a label taller than its plot is not shown at all

  const num = (v, digits) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits));
  // A study searched with successive halving; one with early stopping (or a trial it stopped).
  const halving = (study) => !!study.multi_fidelity;
  const stopping = (study) => !!study.early_stopping || study.trials.some((t) => t.stopped_early);
  // A column with "show" is shown when show(study) holds; a text column when some trial has text.
  const COLUMNS = [
    {key: "trial_id", label: "trial", kind: "num", fmt: (v) => String(v)},
    {key: "round", label: "round", kind: "choice", fmt: (v) => String(v)},
    {key: "status", label: "status", kind: "choice", fmt: (v) => v},
    {key: "value", label: METRIC, kind: "num", fmt: (v) => num(v, 4)},
    {key: "reward", label: "reward", kind: "num", fmt: (v) => num(v, 4)},
    {key: "latency_ms", label: "latency ms", kind: "num", fmt: (v) => num(v, 2)},
    {key: "latency_p90_ms", label: "p90 ms", kind: "num", fmt: (v) => num(v, 2)},
    {key: "flops", label: "M mult-adds", kind: "num", fmt: (v) => (v == null ? "-" : (v / 1e6).toFixed(1))},
    {key: "params", label: "params", kind: "num", fmt: (v) => (v == null ? "-" : Math.round(v).toLocaleString("en"))},
    {key: "duration_s", label: "seconds", kind: "num", fmt: (v) => num(v, 0)},
    {key: "rung", label: "rung", kind: "choice", fmt: (v) => String(v), show: halving},
    {key: "promoted_from", label: "promoted from", kind: "num", fmt: (v) => (v == null ? "" : String(v)), show: halving},
    {key: "steps", label: "steps", kind: "num", fmt: (v) => (v ? String(v) : "-"), show: (s) => halving(s) || stopping(s)},
    {key: "change", label: "change", kind: "text", fmt: (v) => v || ""},
    {key: "source", label: "retrains", kind: "text", fmt: (v) => v || ""},
    {key: "error", label: "error", kind: "text", fmt: (v) => v || ""},
  ];

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  // ---- Trials table: click a header to sort; type in the filter row to filter -----------------

  // A numeric filter: "0.5" (>= 0.5 would be ">=0.5"), ">0.5", "<=20", "0.3..0.5"; else text.
  function numericTest(text) {
    const t = text.trim();
    let m = t.match(/^(-?[\d.e+-]+)\s*\.\.\s*(-?[\d.e+-]+)$/);
    if (m) return (v) => v !== null && v >= +m[1] && v <= +m[2];
    m = t.match(/^(>=|<=|>|<|=)\s*(-?[\d.e+-]+)$/);
    if (m) {
      const x = +m[2];
      return {">=": (v) => v >= x, "<=": (v) => v <= x, ">": (v) => v > x, "<": (v) => v < x,
              "=": (v) => v === x}[m[1]];
    }
    return null;
  }

  function buildTable(study, holder) {
    const columns = COLUMNS.filter((c) => (c.show ? c.show(study) : c.kind !== "text" || study.trials.some((t) => t[c.key])));
    const table = el("table", {class: "trials"});
    const head = el("thead");
    const titles = el("tr");
    const filters = el("tr", {class: "filters"});
    const state = {sortKey: "trial_id", sortDir: 1, filters: {}};
    const shown = el("div", {class: "shown"});
    columns.forEach((c) => {
      const th = el("th", {text: c.label, "data-key": c.key, title: "sort by " + c.label});
      th.addEventListener("click", () => {
        state.sortDir = state.sortKey === c.key ? -state.sortDir : (c.kind === "num" && c.key !== "trial_id" ? -1 : 1);
        state.sortKey = c.key;
        render();
      });
      titles.appendChild(th);
      let input;
      if (c.kind === "choice") {
        const values = [...new Set(study.trials.map((t) => String(t[c.key])))].sort();
        input = el("select", {"data-key": c.key}, [el("option", {value: "", text: "all"}),
          ...values.map((v) => el("option", {value: v, text: v}))]);
        input.addEventListener("change", () => { state.filters[c.key] = input.value; render(); });
      } else {
        input = el("input", {type: "search", "data-key": c.key,
          placeholder: c.kind === "num" ? ">0.5, 1..2" : "contains"});
        input.addEventListener("input", () => { state.filters[c.key] = input.value; render(); });
      }
      filters.appendChild(el("th", {}, [input]));
    });
    head.appendChild(titles);
    head.appendChild(filters);
    table.appendChild(head);
    const body = el("tbody");
    table.appendChild(body);
    holder.appendChild(table);
    holder.after(shown);

    function passes(t) {
      for (const c of columns) {
        const f = (state.filters[c.key] || "").trim();
        if (!f) continue;
        const v = t[c.key];
        if (c.kind === "choice") { if (String(v) !== f) return false; continue; }
        const test = c.kind === "num" ? numericTest(f) : null;
        if (test) { if (v === null || v === undefined || !test(c.key === "flops" ? v / 1e6 : v)) return false; }
        else if (!c.fmt(v).toLowerCase().includes(f.toLowerCase())) return false;
      }
      return true;
    }

    function render() {
      const key = state.sortKey, dir = state.sortDir;
      const rows = study.trials.filter(passes).sort((a, b) => {
        const x = a[key], y = b[key];
        if (x === y) return a.trial_id - b.trial_id;
        if (x === null || x === undefined || x === "") return 1;  // missing values last
        if (y === null || y === undefined || y === "") return -1;
        return (x < y ? -1 : 1) * dir;
      });
      body.replaceChildren(...rows.map((t) => {
        const tr = el("tr", {"data-trial": t.trial_id});
        columns.forEach((c) => {
          const text = c.fmt(t[c.key]);
          const td = el("td", {text: c.kind === "text" && text.length > 120 ? text.slice(0, 117) + "..." : text});
          if (c.kind === "text") { td.className = "text"; td.title = text; }
          if (c.key === "status" && t.stopped_early) {
            td.title = stopText(t);
            td.appendChild(el("span", {class: "badge stopped", text: "stopped early", title: stopText(t)}));
          }
          tr.appendChild(td);
        });
        tr.addEventListener("click", () => selectTrial(study, t.trial_id));
        return tr;
      }));
      titles.querySelectorAll("th").forEach((th) => {
        th.className = th.dataset.key === key ? (dir > 0 ? "sorted-asc" : "sorted-desc") : "";
      });
      shown.textContent = `${rows.length} of ${study.trials.length} trials shown`;
    }
    render();
  }

  // ---- Hover text: the trial, its metrics and its decisions -----------------------------------

  const stopText = (t) => `stopped early at step ${t.steps || "?"}: ${t.stop_reason || "no reason recorded"}`;

  // The trial's rung, the steps it trained to and the trial it continues, as one line.
  function rungText(t) {
    const steps = t.steps ? ` (${t.steps} steps)` : "";
    return `rung ${t.rung}${steps}` + (t.promoted_from != null ? `, promoted from trial ${t.promoted_from}` : "");
  }

  function trialText(study, t) {
    const lines = [`<b>${study.name} trial ${t.trial_id}</b> (round ${t.round}, ${t.status})`];
    for (const c of COLUMNS.slice(3, 9)) if (t[c.key] !== null && t[c.key] !== undefined) lines.push(`${c.label}: ${c.fmt(t[c.key])}`);
    if (halving(study)) lines.push(rungText(t));
    if (t.stopped_early) lines.push(stopText(t));
    if (t.change) lines.push(`change: ${t.change}`);
    if (t.source) lines.push(`retrains: ${t.source}`);
    if (t.d) {
      const order = decisionOrder(study);
      order.slice(0, HOVER_DECISIONS).forEach((i) => {
        if (t.d[i] >= 0) lines.push(`${study.decisions[i].id} = ${study.decisions[i].choices[t.d[i]]}`);
      });
      if (order.length > HOVER_DECISIONS) lines.push(`... ${order.length - HOVER_DECISIONS} more decisions: click the point`);
    }
    return lines.join("<br>");
  }

  // Decision indices, the most important first.
  function decisionOrder(study) {
    if (study._order) return study._order;
    const ids = study.decisions.map((d) => d.id);
    const ranked = study.importance.map((d) => ids.indexOf(d.id));
    study._order = [...ranked, ...ids.map((_, i) => i).filter((i) => !ranked.includes(i))];
    return study._order;
  }

  const completed = (study) => study.trials.filter((t) => t.status === "COMPLETED");
  const noteIn = (div, text) => { div.replaceChildren(el("div", {class: "plot-note", text: text})); };

  function plotDiv(holder, cls, wide) {
    const div = el("div", {class: "plot " + cls + (wide ? " wide" : "")});
    holder.appendChild(div);
    return div;
  }

  // ---- Plots --------------------------------------------------------------------------------

  function drawByTrial(study, holder) {
    const div = plotDiv(holder, "plot-by-trial", false);
    const done = completed(study).filter((t) => t.reward !== null || t.value !== null);
    if (!done.length) return noteIn(div, "No completed trial yet.");
    const bad = study.trials.filter((t) => !["COMPLETED", "PENDING"].includes(t.status));
    const stopped = done.some((t) => t.stopped_early);  // drawn hollow
    const traces = [["reward", "y"], ["value", "y2"]].map(([key, axis]) => ({
      type: "scatter", mode: "markers", name: key === "value" ? METRIC : key, yaxis: axis,
      x: done.map((t) => t.trial_id), y: done.map((t) => t[key]),
      text: done.map((t) => trialText(study, t)), hoverinfo: "text",
      customdata: done.map((t) => t.trial_id),
      marker: {color: done.map((t) => t.round), colorscale: "Viridis", size: 7,
               colorbar: axis === "y" ? {title: {text: "round"}, len: 0.9} : undefined,
               showscale: axis === "y",
               ...(stopped ? {symbol: done.map((t) => (t.stopped_early ? "circle-open" : "circle")),
                              line: {width: done.map((t) => (t.stopped_early ? 2 : 0))}} : {})},
    }));
    if (bad.length) {  // on the metric's axis, at its lowest value
      const floor = Math.min(...done.map((t) => t.value).filter((v) => v !== null));
      traces.push({type: "scatter", mode: "markers", name: "failed / infeasible", yaxis: "y2",
        x: bad.map((t) => t.trial_id), y: bad.map(() => floor),
        text: bad.map((t) => `trial ${t.trial_id} ${t.status}: ${t.error.slice(0, 200)}`), hoverinfo: "text",
        marker: {symbol: "x", color: "crimson", size: 9}});
    }
    Plotly.newPlot(div, traces, {
      title: title(`Reward and ${METRIC} by trial` + (stopped ? " (hollow: stopped early)" : "")),
      showlegend: bad.length > 0, hovermode: "closest",
      margin: {t: 40, r: 10},
      yaxis: {title: {text: "reward"}, domain: [0.54, 1]},
      yaxis2: {title: {text: METRIC}, domain: [0, 0.46]},
      xaxis: {title: {text: "trial id"}, anchor: "y2"},
      legend: {orientation: "h", y: -0.2}, height: 420,
    }, CONFIG);
    clickable(study, div);
  }

  function drawFront(study, holder, cost) {
    const isLatency = cost === "latency_ms";
    const div = plotDiv(holder, isLatency ? "plot-latency" : "plot-flops", false);
    const scale = isLatency ? 1 : 1e-6;
    const label = isLatency ? "latency (ms)" : "M mult-adds";
    const pts = completed(study).filter((t) => t.value !== null && t[cost] !== null);
    if (!pts.length) return noteIn(div, `No trial has both ${METRIC} and ${isLatency ? "latency" : "FLOPs"} yet.`);
    const front = new Set(study.fronts[cost]);
    const onFront = pts.filter((t) => front.has(t.trial_id)).sort((a, b) => a[cost] - b[cost]);
    const traces = [
      {type: "scatter", mode: "markers", name: "trials", x: pts.map((t) => t[cost] * scale),
       y: pts.map((t) => t.value), text: pts.map((t) => trialText(study, t)), hoverinfo: "text",
       customdata: pts.map((t) => t.trial_id),
       marker: {size: 8, color: pts.map((t) => (front.has(t.trial_id) ? "crimson" : "steelblue")),
                opacity: 0.75}},
      {type: "scatter", mode: "lines", name: "Pareto front", line: {shape: "hv", color: "crimson"},
       x: onFront.map((t) => t[cost] * scale), y: onFront.map((t) => t.value), hoverinfo: "skip"},
    ];
    const shapes = [], annotations = [];
    if (isLatency) {
      for (const target of DATA.latency_targets) {
        shapes.push({type: "line", x0: target, x1: target, yref: "paper", y0: 0, y1: 1,
                     line: {dash: "dash", color: "gray"}});
        annotations.push({x: target, yref: "paper", y: 1, text: `target ${target} ms`,
                          showarrow: false, xanchor: "left", font: {size: 10}});
      }
    }
    Plotly.newPlot(div, traces, {
      title: title(`${METRIC} against ${isLatency ? "latency" : "FLOPs"}, Pareto front`),
      xaxis: {title: {text: label}}, yaxis: {title: {text: METRIC}}, hovermode: "closest",
      shapes: shapes, annotations: annotations, margin: {t: 40, r: 10},
      legend: {orientation: "h", y: -0.2}, height: 420,
    }, CONFIG);
    clickable(study, div);
  }

  // Reward against training steps (log), one point per completed trial, a line from each promoted
  // trial's parent to it: the same architecture trained further.
  function drawHalving(study, div) {
    if (!div) return;
    const rungs = study.multi_fidelity.rungs;
    const done = completed(study).filter((t) => t.steps > 0);
    const key = done.some((t) => t.reward === null) ? "value" : "reward";
    const label = key === "value" ? METRIC : "reward";
    const pts = done.filter((t) => t[key] !== null);
    if (!pts.length) return noteIn(div, "No completed trial yet.");
    const byId = new Map(pts.map((t) => [t.trial_id, t]));
    const lx = [], ly = [];
    for (const t of pts) {
      const parent = t.promoted_from == null ? undefined : byId.get(t.promoted_from);
      if (parent) { lx.push(parent.steps, t.steps, null); ly.push(parent[key], t[key], null); }
    }
    const traces = [];
    if (lx.length) {
      traces.push({type: "scatter", mode: "lines", name: "promotion (same architecture)", x: lx, y: ly,
                   line: {color: "gray", width: 1}, hoverinfo: "skip"});
    }
    traces.push({type: "scatter", mode: "markers", name: "trials", x: pts.map((t) => t.steps),
      y: pts.map((t) => t[key]), text: pts.map((t) => trialText(study, t)), hoverinfo: "text",
      customdata: pts.map((t) => t.trial_id),
      marker: {color: pts.map((t) => t.rung), colorscale: "Viridis", size: 8, showscale: true,
               cmin: 0, cmax: Math.max(1, rungs.length - 1),
               colorbar: {title: {text: "rung"}, len: 0.9, dtick: 1},
               symbol: pts.map((t) => (t.stopped_early ? "circle-open" : "circle")),
               line: {width: pts.map((t) => (t.stopped_early ? 2 : 0))}}});
    Plotly.newPlot(div, traces, {
      title: title(`${label} against training steps: promotions to the next rung`),
      xaxis: {type: "log", title: {text: "training steps (log)"},
              tickvals: rungs.length ? rungs.map((r) => r.steps) : undefined},
      yaxis: {title: {text: label}}, hovermode: "closest", showlegend: lx.length > 0,
      margin: {t: 40, r: 10}, legend: {orientation: "h", y: -0.2}, height: 420,
    }, CONFIG);
    clickable(study, div);
  }

  function drawParcoords(study, holder) {
    if (!study.decisions.length) return;
    const div = plotDiv(holder, "plot-parcoords", true);
    const pts = completed(study).filter((t) => t.reward !== null && t.d);
    if (pts.length < 2) return noteIn(div, "Parallel coordinates appear once two trials have a reward.");
    const chosen = decisionOrder(study).slice(0, 10);
    const dims = chosen.map((i) => ({
      label: study.decisions[i].id, values: pts.map((t) => t.d[i]),
      tickvals: study.decisions[i].choices.map((_, k) => k),
      ticktext: study.decisions[i].choices.map((c) => c.slice(0, 16)),
    }));
    dims.push({label: METRIC, values: pts.map((t) => t.value)});
    dims.push({label: "reward", values: pts.map((t) => t.reward)});
    Plotly.newPlot(div, [{type: "parcoords", dimensions: dims, labelangle: -20,
      line: {color: pts.map((t) => t.reward), colorscale: "Viridis", showscale: true,
             colorbar: {title: {text: "reward"}}}}], {
      title: title(`Decisions against reward (${chosen.length} most important of ${study.decisions.length})`),
      margin: {t: 130, l: 60, r: 60}, height: 480,
    }, CONFIG);
  }

  function drawImportance(study, holder) {
    if (!study.decisions.length) return;
    const div = plotDiv(holder, "plot-importance", false);
    const choicesDiv = plotDiv(holder, "plot-choices", false);
    if (!study.importance.length) {
      noteIn(div, "Decision importance appears once three trials have rewards that differ.");
      choicesDiv.remove();
      return;
    }
    const top = study.importance.slice(0, 20).reverse();
    Plotly.newPlot(div, [{type: "bar", orientation: "h", x: top.map((d) => d.score),
      y: top.map((d) => d.id), hovertemplate: "%{y}: %{x:.3f} of the reward's variance, beyond chance<extra></extra>",
      marker: {color: "teal"}}], {
      title: title("Decision importance (share of the reward's variance explained beyond chance)"),
      xaxis: {title: {text: "epsilon squared"}, range: [0, 1]}, margin: {t: 40, l: 200, r: 10},
    }, CONFIG);
    const select = el("select", {class: "decision-select"},
      study.importance.map((d) => el("option", {value: d.id, text: d.id})));
    const plot = el("div");
    choicesDiv.appendChild(el("div", {class: "controls"}, [el("span", {text: "Decision: "}), select]));
    choicesDiv.appendChild(plot);
    const draw = () => {
      const d = study.importance.find((x) => x.id === select.value);
      Plotly.react(plot, [{type: "bar", x: d.choices.map((c) => String(c.value)),
        y: d.choices.map((c) => c.mean), text: d.choices.map((c) => `n=${c.n}`), textposition: "auto",
        hovertemplate: "%{x}: mean reward %{y:.4f} (%{text})<extra></extra>",
        marker: {color: "darkorange"}}], {
        title: title(`Mean reward by choice of ${d.id}`), xaxis: {type: "category"},
        yaxis: {title: {text: "mean reward"}}, margin: {t: 40, r: 10},
      }, CONFIG);
    };
    select.addEventListener("change", draw);
    draw();
  }

  function drawCurves(study, holder) {
    const div = plotDiv(holder, "plot-curves", true);
    const ids = study.trials.map((t) => String(t.trial_id)).filter((id) => study.curves[id] || study.curve_errors[id]);
    if (!ids.length) return noteIn(div, "No training curves yet: they appear as trials finish.");
    const select = el("select", {class: "trial-select"}, ids.map((id) => el("option", {value: id, text: `trial ${id}`})));
    const plot = el("div");
    div.appendChild(el("div", {class: "controls"}, [el("span", {text: "Training curves of "}), select]));
    div.appendChild(plot);
    study._selectCurves = (id) => { if (ids.includes(String(id))) { select.value = String(id); draw(); } };
    const draw = () => {
      const id = select.value;
      const curves = study.curves[id];
      if (!curves) { Plotly.purge(plot); return noteIn(plot, study.curve_errors[id]); }
      const train = curves.train || {step: []}, evals = curves.eval || {step: []};
      const evalTags = Object.keys(evals).filter((k) => k !== "step");
      const shownEval = evalTags.includes(METRIC) ? [METRIC] : evalTags.filter((k) => k !== "loss").slice(0, 4);
      const traces = [];
      if (train.loss) traces.push({x: train.step, y: train.loss, name: "train loss", yaxis: "y"});
      if (evals.loss) traces.push({x: evals.step, y: evals.loss, name: "eval loss", yaxis: "y", mode: "lines+markers"});
      if (train.learning_rate) traces.push({x: train.step, y: train.learning_rate, name: "learning rate", yaxis: "y2"});
      for (const tag of shownEval) traces.push({x: evals.step, y: evals[tag], name: `eval ${tag}`, yaxis: "y3", mode: "lines+markers"});
      traces.forEach((t) => { t.type = "scatter"; t.mode = t.mode || "lines"; t.connectgaps = true; });
      Plotly.react(plot, traces, {
        title: title(`${study.name} trial ${id}: loss, learning rate, ${shownEval.join(", ") || "evaluation"}`),
        xaxis: {title: {text: "step"}, anchor: "y3"}, hovermode: "x unified", margin: {t: 40, r: 10},
        yaxis: {title: {text: "loss"}, domain: [0.7, 1]},
        yaxis2: {title: {text: "learning rate"}, domain: [0.37, 0.63], exponentformat: "e"},
        yaxis3: {title: {text: "evaluation"}, domain: [0, 0.3]},
        height: 520,
      }, CONFIG);
    };
    select.addEventListener("change", draw);
    draw();
  }

  // A trial's details (every metric and decision) under the table, its row marked, its curves shown.
  function selectTrial(study, id) {
    const section = document.getElementById("study-" + study.name);
    section.querySelectorAll("tr.selected").forEach((tr) => tr.classList.remove("selected"));
    const row = section.querySelector(`tbody tr[data-trial="${id}"]`);
    if (row) row.classList.add("selected");
    const t = study.trials.find((x) => x.trial_id === id);
    const details = section.querySelector(".trial-details");
    if (t && details) {
      const items = COLUMNS.slice(1, 10).map((c) => [c.label, c.fmt(t[c.key])]);
      if (t.change) items.push(["change", t.change]);
      if (t.source) items.push(["retrains", t.source]);
      if (t.error) items.push(["error", t.error]);
      if (halving(study)) items.push(["rung", rungText(t)]);
      else if (t.steps) items.push(["steps", String(t.steps)]);
      if (t.stopped_early) items.push(["early stopping", stopText(t)]);
      if (t.d) study.decisions.forEach((d, i) => { if (t.d[i] >= 0) items.push([d.id, d.choices[t.d[i]]]); });
      details.replaceChildren(el("h3", {text: `${study.name} trial ${id}`}),
        el("div", {class: "kv"}, items.map(([k, v]) => el("div", {title: `${k}: ${v}`}, [el("b", {text: k + ": "}), document.createTextNode(v)]))));
      details.hidden = false;
    }
    if (study._selectCurves) study._selectCurves(id);
  }

  // Clicking a point of a plot whose points carry trial ids selects that trial.
  function clickable(study, div) {
    div.on("plotly_click", (e) => {
      const p = e.points && e.points[0];
      if (p && p.customdata !== undefined) selectTrial(study, p.customdata);
    });
  }

  function drawPairs() {
    const div = document.querySelector(".plot-pairs");
    if (!div) return;
    if (!DATA.pairs.length) return noteIn(div, "No validated candidate yet.");
    Plotly.newPlot(div, [{type: "scatter", mode: "markers", x: DATA.pairs.map((p) => p.proxy),
      y: DATA.pairs.map((p) => p.full), marker: {size: 10, color: "seagreen"},
      text: DATA.pairs.map((p) => `proxy trial ${p.proxy_trial} -> validation trial ${p.trial}<br>proxy ${p.proxy.toFixed(4)}, full ${p.full.toFixed(4)}`),
      hoverinfo: "text"}], {
      title: title(DATA.kendall_tau === null ? "Proxy against full-training score" : `Proxy against full training: Kendall tau ${DATA.kendall_tau.toFixed(3)}`),
      xaxis: {title: {text: `proxy ${METRIC}`}}, yaxis: {title: {text: `full-training ${METRIC}`}},
      hovermode: "closest", margin: {t: 40, r: 10},
    }, CONFIG);
  }

  // ---- Multi-fidelity and early stopping: the summary lines and the rung table ---------------

  // Under the study's counts: its halving schedule and its early-stopping rule, if it has them.
  function buildSummary(study, section) {
    const lines = [];
    const mf = study.multi_fidelity, es = study.early_stopping;
    if (mf) {
      lines.push(mf.error ? `successive halving (${mf.scheduler}): ${mf.error}`
        : `successive halving (${mf.scheduler}): rungs of ${mf.rungs.map((r) => r.steps).join(", ")} steps, ` +
          `reduction factor ${mf.reduction_factor}`);
    }
    if (es) {
      const options = Object.entries(es.options || {}).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(", ");
      lines.push(`early stopping: ${es.rule} rule${options ? ` (${options})` : ""}, ` +
                 `${es.stopped} trial${es.stopped === 1 ? "" : "s"} stopped`);
    }
    const counts = section.querySelector(".counts");
    if (counts) lines.reverse().forEach((line) => counts.after(el("p", {class: "fidelity", text: line})));
  }

  // The "Successive halving" part of a study: its rung table and a place for its plot.
  function buildHalving(study, section) {
    const plots = section.querySelector(".plots");
    if (!halving(study) || !plots) return;
    const mf = study.multi_fidelity;
    const box = el("div", {class: "halving"}, [el("h3", {text: "Successive halving"})]);
    if (mf.error) {
      box.appendChild(el("p", {class: "empty", text: "No rung table: " + mf.error}));
    } else {
      const cells = [["rung", (r) => String(r.rung)], ["steps", (r) => String(r.steps)],
        ["started", (r) => String(r.started)], ["finished", (r) => String(r.finished)],
        ["promoted", (r) => String(r.promoted)], ["best reward", (r) => num(r.best, 4)]];
      // Its rows lie straight in the table, not in a tbody: "tbody tr" in a study are its trials.
      box.appendChild(el("table", {class: "rungs"}, [
        el("thead", {}, [el("tr", {}, cells.map(([label]) => el("th", {text: label})))]),
        ...mf.rungs.map((r) => el("tr", {"data-rung": r.rung}, cells.map(([, fmt]) => el("td", {text: fmt(r)})))),
      ]));
      box.appendChild(el("div", {class: "plot plot-halving"}));
    }
    plots.before(box);
  }

  function drawStudy(study) {
    const section = document.getElementById("study-" + study.name);
    const holder = section && section.querySelector(".plots");
    if (!holder) return;
    if (halving(study)) drawHalving(study, section.querySelector(".plot-halving"));
    drawByTrial(study, holder);
    drawFront(study, holder, "latency_ms");
    drawFront(study, holder, "flops");
    if (study.searched) {  // a study of retrained copies repeats its source's decisions
      drawParcoords(study, holder);
      drawImportance(study, holder);
    }
    drawCurves(study, holder);
    // Plots drawn before their neighbours existed took a wider column: fit each to its own now.
    holder.querySelectorAll(".js-plotly-plot").forEach((div) => Plotly.Plots.resize(div));
  }

  async function loadPlotly() {
    if (window.Plotly) return;
    if (typeof DecompressionStream === "undefined") throw new Error("this browser cannot unpack the plots (it lacks DecompressionStream)");
    const packed = Uint8Array.from(atob(document.getElementById("kfnas-plotly").textContent.trim()), (c) => c.charCodeAt(0));
    const text = await new Response(new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
    (0, eval)(text);
  }

  async function main() {
    for (const study of DATA.studies) {
      const section = document.getElementById("study-" + study.name);
      const holder = section && section.querySelector(".table-holder");
      if (holder && study.trials.length) {
        buildTable(study, holder);
        holder.parentNode.insertBefore(el("div", {class: "trial-details", hidden: ""}), holder.nextSibling.nextSibling);
      }
      if (section) {
        buildSummary(study, section);
        buildHalving(study, section);
      }
    }
    try {
      await loadPlotly();
    } catch (e) {
      document.querySelectorAll(".plots, .plot-halving").forEach((p) => noteIn(p, "Plots unavailable: " + e.message));
      document.body.dataset.ready = "error";
      return;
    }
    for (const study of DATA.studies) {
      try { drawStudy(study); } catch (e) { console.error(e); }
    }
    drawPairs();
    document.body.dataset.ready = "1";
  }
  main();
})();
