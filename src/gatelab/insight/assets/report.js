/* gatelab report: draws the heatmap and the charts from the JSON in #gatelab-data.
 * Self-contained, no libraries. User text only ever goes through textContent or
 * setAttribute, never through innerHTML. */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("gatelab-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var GATE_COLOURS = {
    input_gate: "#2166ac", forget_gate: "#1b9e77", output_gate: "#d95f02",
    candidate: "#7570b3", reset_gate: "#e7298a", update_gate: "#66a61e"
  };
  var state = { layer: 0, rows: "units", gate: 0, unit: 0 };

  function byId(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVGNS, tag);
    setAttrs(node, attrs);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) { return; }
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function fmt(v) {
    if (v === null || v === undefined || isNaN(v)) { return "–"; }
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e4)) { return v.toExponential(2); }
    return v.toFixed(4);
  }

  function hex(c) { var s = Math.round(c).toString(16); return s.length < 2 ? "0" + s : s; }

  function mix(a, b, t) {
    return "#" + hex(a[0] + (b[0] - a[0]) * t) + hex(a[1] + (b[1] - a[1]) * t) +
      hex(a[2] + (b[2] - a[2]) * t);
  }

  var WHITE = [255, 255, 255], BLUE = [8, 81, 156], RED = [178, 24, 43];

  /* A series' colour: sequential white -> blue on [0, 1], diverging red - white - blue
   * symmetric around 0 otherwise. */
  function colour(v, range) {
    if (range[0] >= 0) {
      var t = (v - range[0]) / ((range[1] - range[0]) || 1);
      return mix(WHITE, BLUE, Math.max(0, Math.min(1, t)));
    }
    var m = Math.max(Math.abs(range[0]), Math.abs(range[1])) || 1;
    var u = Math.max(-1, Math.min(1, v / m));
    return u >= 0 ? mix(WHITE, BLUE, u) : mix(WHITE, RED, -u);
  }

  function layer() { return data.layers[state.layer]; }
  function series() { return data.series[state.gate]; }
  function isMark(t) { return data.marks.indexOf(t) >= 0; }

  /* ------------------------------------------------------------------ controls */

  function fillSelect(node, items) {
    clear(node);
    items.forEach(function (item, k) { node.appendChild(el("option", { value: k }, item)); });
  }

  function setupControls() {
    fillSelect(byId("sel-layer"), data.layers.map(function (l) { return l.name; }));
    fillSelect(byId("sel-gate"), data.series.map(function (s) { return s.label; }));
    var units = [];
    for (var u = 0; u < data.hidden_size; u++) { units.push("unit " + u); }
    fillSelect(byId("sel-unit"), units);
    state.gate = Math.max(0, data.default_series || 0);
    state.unit = Math.max(0, Math.min(data.hidden_size - 1, data.default_unit || 0));
    state.rows = data.default_rows === "gates" ? "gates" : "units";
    byId("sel-rows").value = state.rows;
    byId("sel-gate").value = String(state.gate);
    byId("sel-unit").value = String(state.unit);
    [["sel-layer", "layer"], ["sel-gate", "gate"], ["sel-unit", "unit"]].forEach(function (p) {
      byId(p[0]).addEventListener("change", function (e) {
        state[p[1]] = parseInt(e.target.value, 10);
        render();
      });
    });
    byId("sel-rows").addEventListener("change", function (e) {
      state.rows = e.target.value;
      render();
    });
  }

  /* ------------------------------------------------------------------ heatmap */

  function heatmapRows() {
    var values = layer().values, rows = [];
    if (state.rows === "units") {
      var s = series(), v = values[s.key];
      for (var u = 0; u < data.hidden_size; u++) {
        rows.push({ key: "unit " + u, label: "u" + u, series: s, unit: u, v: v,
          selected: u === state.unit });
      }
    } else {
      data.series.forEach(function (s, k) {
        rows.push({ key: s.key, label: s.short, series: s, unit: state.unit, v: values[s.key],
          selected: k === state.gate });
      });
    }
    return rows;
  }

  function renderHeatmap() {
    var host = byId("heatmap");
    clear(host);
    var table = el("table", { "class": "heatmap", id: "heatmap-table" });
    var head = el("tr");
    head.appendChild(el("th", { "class": "corner" }, state.rows === "units" ?
      series().short : "unit " + state.unit));
    data.tokens.forEach(function (tok, t) {
      var th = el("th", { "class": isMark(t) ? "tok mark" : "tok", "data-step": t,
        title: "step " + t + ": " + tok }, tok);
      head.appendChild(th);
    });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = el("tbody");
    heatmapRows().forEach(function (row) {
      var tr = el("tr", { "data-row": row.key, "class": row.selected ? "selected" : "" });
      tr.appendChild(el("th", null, row.label));
      for (var t = 0; t < data.tokens.length; t++) {
        var value = row.v[t][row.unit];
        var td = el("td", { "class": isMark(t) ? "hm mark" : "hm", "data-step": t,
          "data-unit": row.unit, "data-series": row.series.key, "data-value": value });
        td.style.backgroundColor = colour(value, row.series.range);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    });
    table.appendChild(body);
    host.appendChild(table);
    renderLegend();
  }

  function cellText(td) {
    var t = parseInt(td.getAttribute("data-step"), 10);
    var key = td.getAttribute("data-series");
    var s = data.series.filter(function (x) { return x.key === key; })[0];
    return "step " + t + "  " + data.tokens[t] + "\n" + s.label + ", unit " +
      td.getAttribute("data-unit") + " = " + fmt(parseFloat(td.getAttribute("data-value")));
  }

  function setupTooltip() {
    var tip = byId("tooltip"), host = byId("heatmap");
    host.addEventListener("mouseover", function (e) {
      var td = e.target.closest ? e.target.closest("td.hm") : null;
      if (!td) { tip.hidden = true; return; }
      tip.textContent = cellText(td);
      td.setAttribute("title", tip.textContent);
      tip.hidden = false;
      tip.style.left = (e.clientX + 14) + "px";
      tip.style.top = (e.clientY + 14) + "px";
    });
    host.addEventListener("mousemove", function (e) {
      tip.style.left = (e.clientX + 14) + "px";
      tip.style.top = (e.clientY + 14) + "px";
    });
    host.addEventListener("mouseleave", function () { tip.hidden = true; });
  }

  function renderLegend() {
    var host = byId("legend"), s = series();
    clear(host);
    var r = s.range, bar = el("span", { "class": "bar" });
    var stops = [0, 0.25, 0.5, 0.75, 1].map(function (q) {
      return colour(r[0] + (r[1] - r[0]) * q, r);
    });
    bar.style.background = "linear-gradient(to right," + stops.join(",") + ")";
    host.appendChild(el("span", null, s.label + ":"));
    host.appendChild(el("span", null, fmt(r[0])));
    host.appendChild(bar);
    host.appendChild(el("span", null, fmt(r[1])));
  }

  /* ------------------------------------------------------------------ charts */

  function scale(d0, d1, r0, r1) {
    return function (v) { return r0 + (v - d0) / ((d1 - d0) || 1) * (r1 - r0); };
  }

  function chart(w, h, pad) {
    var svg = svgEl("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h });
    return { svg: svg, x0: pad[3], x1: w - pad[1], y0: h - pad[2], y1: pad[0] };
  }

  function axes(c, xs, ys, xticks, yticks, xlabel, ylabel, yfmt) {
    yticks.forEach(function (v) {
      var y = ys(v);
      c.svg.appendChild(svgEl("line", { x1: c.x0, x2: c.x1, y1: y, y2: y, "class": "grid" }));
      c.svg.appendChild(svgEl("text", { x: c.x0 - 4, y: y + 3, "text-anchor": "end" },
        yfmt ? yfmt(v) : v));
    });
    xticks.forEach(function (v) {
      var x = xs(v);
      c.svg.appendChild(svgEl("line", { x1: x, x2: x, y1: c.y0, y2: c.y0 + 4, stroke: "#888" }));
      c.svg.appendChild(svgEl("text", { x: x, y: c.y0 + 15, "text-anchor": "middle" }, v));
    });
    c.svg.appendChild(svgEl("line", { x1: c.x0, x2: c.x1, y1: c.y0, y2: c.y0, stroke: "#888" }));
    c.svg.appendChild(svgEl("line", { x1: c.x0, x2: c.x0, y1: c.y0, y2: c.y1, stroke: "#888" }));
    c.svg.appendChild(svgEl("text", { x: (c.x0 + c.x1) / 2, y: c.y0 + 30,
      "text-anchor": "middle" }, xlabel));
    c.svg.appendChild(svgEl("text", { x: 12, y: (c.y0 + c.y1) / 2, "text-anchor": "middle",
      transform: "rotate(-90 12 " + (c.y0 + c.y1) / 2 + ")" }, ylabel));
  }

  function ticks(lo, hi, n) {
    var out = [], step = (hi - lo) / n;
    for (var k = 0; k <= n; k++) { out.push(+(lo + k * step).toFixed(6)); }
    return out;
  }

  function stepTicks(T) {
    var n = Math.min(10, Math.max(1, T - 1)), step = Math.max(1, Math.ceil((T - 1) / n));
    var out = [];
    for (var t = 0; t < T; t += step) { out.push(t); }
    return out;
  }

  function polyline(c, xs, ys, values, colourName, dash, title) {
    var pts = [];
    values.forEach(function (v, t) {
      if (v !== null && isFinite(ys(v))) { pts.push(xs(t).toFixed(1) + "," + ys(v).toFixed(1)); }
    });
    var line = svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: colourName,
      "stroke-width": 1.6, "stroke-dasharray": dash || "none" });
    line.appendChild(svgEl("title", null, title));
    c.svg.appendChild(line);
  }

  function legend(host, items) {
    var div = el("div");
    items.forEach(function (it) {
      var span = el("span", { "class": "legend-item" });
      var sw = el("span", { "class": "swatch" });
      sw.style.background = it[1];
      span.appendChild(sw);
      span.appendChild(document.createTextNode(it[0]));
      div.appendChild(span);
    });
    host.appendChild(div);
  }

  function markLines(c, xs) {
    data.marks.forEach(function (t) {
      c.svg.appendChild(svgEl("line", { x1: xs(t), x2: xs(t), y1: c.y0, y2: c.y1,
        stroke: "#b2182b", "stroke-opacity": 0.35, "stroke-dasharray": "3,3" }));
    });
  }

  function renderSaturation() {
    var host = byId("saturation");
    clear(host);
    var sat = (data.saturation || []).filter(function (s) {
      return s.layer === layer().layer && s.direction === layer().direction;
    });
    if (!sat.length) {
      host.appendChild(el("p", { "class": "empty" }, data.saturation_note ||
        "No gates to saturate in this model."));
      return;
    }
    var c = chart(420, 360, [12, 16, 40, 50]);
    var xs = scale(0, 1, c.x0, c.x1), ys = scale(0, 1, c.y0, c.y1);
    axes(c, xs, ys, ticks(0, 1, 5), ticks(0, 1, 5), "left-saturated fraction (< " +
      fmt(sat[0].low) + ")", "right-saturated fraction (> " + fmt(sat[0].high) + ")");
    c.svg.appendChild(svgEl("line", { x1: xs(1), y1: ys(0), x2: xs(0), y2: ys(1),
      stroke: "#bbb", "stroke-dasharray": "4,3" }));
    sat.forEach(function (s) {
      var col = GATE_COLOURS[s.gate] || "#444";
      s.left.forEach(function (l, u) {
        var sel = u === state.unit;
        var dot = svgEl("circle", { cx: xs(l), cy: ys(s.right[u]), r: sel ? 5.5 : 3.2,
          fill: col, "fill-opacity": 0.7, stroke: sel ? "#000" : "none", "stroke-width": 1.5,
          "class": "sat-dot", "data-gate": s.gate, "data-unit": u });
        dot.appendChild(svgEl("title", null, s.gate.replace("_", " ") + ", unit " + u +
          ": left " + fmt(l) + ", right " + fmt(s.right[u]) + ", mean " + fmt(s.mean[u])));
        c.svg.appendChild(dot);
      });
    });
    host.appendChild(c.svg);
    legend(host, sat.map(function (s) {
      return [s.gate.replace("_", " "), GATE_COLOURS[s.gate] || "#444"];
    }));
  }

  function renderFlow() {
    var host = byId("flow");
    clear(host);
    var f = layer().flow;
    if (!f) {
      host.appendChild(el("p", { "class": "empty" }, "This model has no cell state."));
      return;
    }
    var T = f.keep.length, w = Math.max(560, Math.min(1100, 8 * T + 80));
    var top = chart(w, 200, [10, 16, 36, 60]);
    var hi = Math.max.apply(null, f.keep.concat(f.write).concat([1e-6]));
    var xs = scale(0, Math.max(1, T - 1), top.x0, top.x1), ys = scale(0, hi, top.y0, top.y1);
    axes(top, xs, ys, stepTicks(T), ticks(0, hi, 4), "step", "mean |.|", fmt);
    markLines(top, xs);
    polyline(top, xs, ys, f.keep, "#1b9e77", null, "kept: mean |f ⊙ c_prev|");
    polyline(top, xs, ys, f.write, "#d95f02", null, "written: mean |i ⊙ g|");
    host.appendChild(top.svg);
    legend(host, [["kept  |f ⊙ c₍t−1₎|", "#1b9e77"], ["written  |i ⊙ g|", "#d95f02"]]);
    var u = state.unit;
    var keep = f.keep_units.map(function (r) { return r[u]; });
    var write = f.write_units.map(function (r) { return r[u]; });
    var cell = layer().values.cell ? layer().values.cell.map(function (r) { return r[u]; }) : [];
    var all = keep.concat(write).concat(cell);
    var lo = Math.min.apply(null, all.concat([0])), up = Math.max.apply(null, all.concat([0]));
    if (up - lo < 1e-6) { up = lo + 1; }
    var bottom = chart(w, 200, [10, 16, 36, 60]);
    var ys2 = scale(lo, up, bottom.y0, bottom.y1);
    axes(bottom, xs, ys2, stepTicks(T), ticks(lo, up, 4), "step", "unit " + u, fmt);
    markLines(bottom, xs);
    polyline(bottom, xs, ys2, keep, "#1b9e77", null, "kept f ⊙ c_prev, unit " + u);
    polyline(bottom, xs, ys2, write, "#d95f02", null, "written i ⊙ g, unit " + u);
    if (cell.length) { polyline(bottom, xs, ys2, cell, "#444", "4,3", "c_t, unit " + u); }
    host.appendChild(bottom.svg);
    legend(host, [["kept (unit " + u + ")", "#1b9e77"], ["written (unit " + u + ")", "#d95f02"],
      ["c_t (dashed)", "#444"]]);
  }

  function renderGradient() {
    var section = byId("gradient-section"), host = byId("gradient");
    var g = data.gradient_flow;
    if (!g || !g.models || !g.models.length) { section.hidden = true; return; }
    section.hidden = false;
    clear(host);
    if (g.note) { host.appendChild(el("p", { "class": "help" }, g.note)); }
    var T = g.models[0].hidden.length, w = Math.max(560, Math.min(1100, 8 * T + 80));
    var c = chart(w, 280, [10, 16, 36, 60]);
    var positive = [];
    g.models.forEach(function (m) {
      m.hidden.forEach(function (v) { if (v > 0) { positive.push(v); } });
    });
    var lo = Math.floor(Math.log10(Math.min.apply(null, positive.concat([1]))));
    var hi = Math.ceil(Math.log10(Math.max.apply(null, positive.concat([1e-12]))));
    if (hi <= lo) { hi = lo + 1; }
    lo = Math.max(lo, hi - 30);
    var xs = scale(0, Math.max(1, T - 1), c.x0, c.x1), ys = scale(lo, hi, c.y0, c.y1);
    var yt = [];
    for (var e = lo; e <= hi; e += Math.max(1, Math.ceil((hi - lo) / 6))) { yt.push(e); }
    axes(c, xs, ys, stepTicks(T), yt, "step t", "‖∂loss/∂h_t‖",
      function (v) { return "1e" + v; });
    var palette = ["#2166ac", "#1b9e77", "#b2182b", "#7570b3", "#d95f02", "#444"];
    g.models.forEach(function (m, k) {
      var logs = m.hidden.map(function (v) { return v > 0 ? Math.max(lo, Math.log10(v)) : null; });
      polyline(c, xs, ys, logs, palette[k % palette.length], null, m.name);
    });
    host.appendChild(c.svg);
    legend(host, g.models.map(function (m, k) { return [m.name, palette[k % palette.length]]; }));
  }

  function render() {
    renderHeatmap();
    renderSaturation();
    renderFlow();
  }

  setupControls();
  setupTooltip();
  render();
  renderGradient();
  document.documentElement.setAttribute("data-ready", "1");
})();
