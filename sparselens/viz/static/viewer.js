/* sparselens circuit viewer. Hand-written vanilla JS + SVG, no dependencies, no network.
 *
 * Reads the JSON made by sparselens.viz.viewer.viewer_data from the page's "sparselens-data" block
 * and draws: a header (task, losses, nodes/edges, ablation, norm freezing), the circuit layer by
 * layer (one SVG row per node site, Q/K/V grouped by head; edges coloured by sign, width by
 * |weight| relative to the largest edge of the same kind; q-k pairings and residual links, which
 * are not weights, in lighter styles of their own) and a side panel for the hovered or clicked
 * node (activations on task prompts in the full model and in the circuit, top corpus snippets,
 * incoming and outgoing edges, residual links). Nodes are coloured by kind, or by the correlation of
 * their activation in the circuit with the model's (the faithfulness report's when one is attached,
 * else over the prompts shown); with a report the panel shows the node's and its head's rows and
 * flags. Every node is a <circle class="node" data-node="NAME">, every edge a <path class="edge">,
 * every residual link a <path class="link-path">.
 */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var DX = 20;          // horizontal distance between nodes
  var ROW_H = 78;       // vertical distance between rows
  var LEFT = 170;       // room for row labels
  var R = 6;            // node radius
  var MAX_EDGES_LISTED = 60;
  var RESIDUAL_KINDS = { attn_in: 1, attn_out: 1, mlp_in: 1, mlp_out: 1 };
  var TICK = 12;        // widest spacing of the embedding row's ticks (one per token or position)
  // edge sources outside the blocks, one segment of ticks per kind in the top row (edge names "kind:id")
  var SOURCE_LABELS = { embed: "token embedding", pos: "positions", bigram: "bigram table" };

  var app = document.getElementById("app");
  var data;
  try {
    data = JSON.parse(document.getElementById("sparselens-data").textContent);
  } catch (err) {
    app.innerHTML = "";
    app.appendChild(el("div", { class: "error" }, "This viewer page holds no readable circuit data (" + err.message +
      "). Re-create it with: sparselens view circuit.json --model MODEL -o circuit.html"));
    return;
  }

  var nodes = data.nodes;
  var edges = data.edges;
  var links = data.residual_links;
  var pos = {};          // node, source or target name -> {x, y}
  var circles = {};      // node name -> circle element
  var edgePaths = [];    // index -> path element
  var linkPaths = [];    // index -> path element
  var segments = [];     // one per kind of data.sources present: {kind, sources, x0, x1}
  var pinned = null;
  var shown = null;
  var edgeFrac = [];     // index -> |weight| / the largest |weight| of its kind (q-k pairings: 1)
  var filters = { edgeMin: 0, site: "", neighbourhood: false };  // what the filter bar shows
  var faith = data.faithfulness || null;     // the attached faithfulness report's metrics and flags, or null
  var colourBy = faith ? "corr" : "kind";

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG_NS, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(x) {
    if (x === null || x === undefined) return "n/a";
    var a = Math.abs(x);
    return a !== 0 && (a < 1e-3 || a >= 1e4) ? x.toExponential(2) : x.toFixed(a < 1 ? 4 : 3);
  }
  function tokText(id) {
    var s = data.vocab[String(id)];
    if (s === undefined) s = "<" + id + ">";
    return s.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
  }
  function quoted(id) { return "\u2039" + tokText(id) + "\u203a"; }

  // The node a search means: the exact name, else the best of the names that contain the query
  // (shortest first), else the name at the smallest edit distance when it is within a third of the
  // query's length; null when nothing is close.
  function editDistance(a, b) {
    var prev = [], cur, i, j;
    for (j = 0; j <= b.length; j++) prev[j] = j;
    for (i = 1; i <= a.length; i++) {
      cur = [i];
      for (j = 1; j <= b.length; j++) {
        cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      }
      prev = cur;
    }
    return prev[b.length];
  }
  function closestNode(query) {
    if (!query) return null;
    if (nodes[query]) return query;
    var names = Object.keys(nodes), lower = query.toLowerCase();
    var containing = names.filter(function (n) { return n.toLowerCase().indexOf(lower) >= 0; })
      .sort(function (a, b) { return a.length - b.length || (a < b ? -1 : 1); });
    if (containing.length) return containing[0];
    var best = null, bestD = Infinity;
    names.forEach(function (n) { var d = editDistance(lower, n.toLowerCase()); if (d < bestD) { bestD = d; best = n; } });
    return bestD <= Math.max(2, Math.floor(query.length / 3)) ? best : null;
  }
  // an edge end outside the blocks: "embed:<token>", "pos:<position>", "bigram:<token>", "unembed:<token>"
  function terminalLabel(name) {
    var parts = name.split(":");
    return parts[0] === "pos" ? "position " + parts[1] : parts[0] + " " + quoted(parts[1]);
  }
  // background colour of a token: blue for positive, red for negative, alpha by |a| / scale
  function actColor(a, scale) {
    if (!scale || !a) return "transparent";
    var t = Math.min(1, Math.abs(a) / scale);
    return a > 0 ? "rgba(37,99,235," + (0.85 * t).toFixed(3) + ")" : "rgba(220,38,38," + (0.85 * t).toFixed(3) + ")";
  }

  // a node's model/circuit correlation: the report's (over its test pairs) when attached, else the prompts shown
  function nodeCorr(n) {
    return n.faith ? { r: n.faith.corr, from: "report, " + faith.n_pairs + " test pairs" }
      : { r: n.act.corr, from: data.prompts.length + " prompts shown" };
  }
  // green at r = 1, yellow at 0.5, red at r <= 0; grey when undefined (constant in model or circuit)
  function corrColor(r) {
    if (r === null || r === undefined) return "#d1d5db";
    var hue = 120 * Math.max(0, Math.min(1, r));
    return "hsl(" + hue.toFixed(0) + ",70%,42%)";
  }
  function colourNodes() {
    Object.keys(circles).forEach(function (name) {
      var r = nodeCorr(nodes[name]).r;
      circles[name].style.fill = colourBy === "corr" ? corrColor(r) : "";
      circles[name].classList.toggle("constant", colourBy === "corr" && (r === null || r === undefined));
    });
    document.querySelectorAll(".legend .by-kind").forEach(function (e) { e.hidden = colourBy !== "kind"; });
    document.querySelectorAll(".legend .by-corr").forEach(function (e) { e.hidden = colourBy !== "corr"; });
  }

  // ------------------------------------------------------------------ header
  function header() {
    var h = data.header;
    var box = el("div", { id: "header" });
    var title = el("h1");
    title.appendChild(document.createTextNode("Circuit for "));
    title.appendChild(el("span", { class: "task" }, h.task));
    box.appendChild(title);
    var chips = el("div", { class: "chips" });
    function chip(label, value, cls) {
      var c = el("span", { class: "chip" + (cls ? " " + cls : "") });
      c.appendChild(document.createTextNode(label + " "));
      c.appendChild(el("b", {}, value));
      chips.appendChild(c);
    }
    var L = h.losses;
    chip("loss model", fmt(L.model));
    chip("loss circuit", fmt(L.circuit), "loss-circuit");
    chip("loss empty circuit", fmt(L.empty));
    if (L.target !== undefined) chip("target", fmt(L.target));
    chip("split", h.loss_split);
    chip("nodes", h.n_nodes + " of " + h.model_nodes);
    chip("edges", String(h.n_edges));
    chip("ablation", h.ablation);
    chip("residual links", String(h.residual_links));
    chip("norms", h.freeze_norms ? "frozen" : "free");
    if (faith) {
      var M = faith.metrics;
      if (M.faithfulness !== undefined) chip("faithfulness", fmt(M.faithfulness), "faith");
      if (M.adversarial_loss !== undefined) chip("adversarial loss", fmt(M.adversarial_loss), "faith");
      if (M.node_corr_min !== undefined) chip("node corr min", fmt(M.node_corr_min), "faith");
      if (M.attention_js_max !== undefined) chip("attention JS max", fmt(M.attention_js_max), "faith");
    }
    var find = el("input", { id: "find", type: "search", placeholder: "find node, e.g. L0.neuron[3]" });
    var hint = el("span", { id: "find-hint", class: "find-hint" });
    find.addEventListener("keydown", function (ev) {
      if (ev.key !== "Enter") return;
      var query = find.value.trim(), name = closestNode(query);
      find.classList.toggle("bad", !name);
      hint.textContent = !query ? "" : !name ? "no node like " + JSON.stringify(query) :
        name === query ? "" : "closest: " + name;
      if (name) { pin(name); circles[name].scrollIntoView({ block: "center", inline: "center" }); }
    });
    chips.appendChild(find);
    chips.appendChild(hint);
    box.appendChild(chips);
    var kinds = Object.keys(h.edge_counts).filter(function (k) { return h.edge_counts[k]; })
      .map(function (k) { return k + " " + h.edge_counts[k]; });
    box.appendChild(el("div", { class: "edge-kinds" }, "Edges by kind: " + (kinds.join(" \u00b7 ") || "none") +
      " (residual links are the stream's identity, not edges)" +
      (h.prompts_task !== h.task ? " \u00b7 prompts from task " + h.prompts_task : "")));
    if (faith && faith.flags.length) {
      var flagBox = el("details", { id: "flags" });
      flagBox.appendChild(el("summary", {}, faith.flags.length + " faithfulness flag" + (faith.flags.length > 1 ? "s" : "") +
        " (report on " + faith.n_pairs + " test pairs)"));
      var list = el("ul");
      faith.flags.forEach(function (f) { list.appendChild(el("li", {}, f)); });
      flagBox.appendChild(list);
      box.appendChild(flagBox);
    }
    var legend = el("div", { class: "legend" });
    var pick = el("select", { id: "colour-by", title: "what the node colour shows" });
    [["kind", "colour: node kind"], ["corr", "colour: model/circuit correlation"]].forEach(function (o) {
      var opt = el("option", { value: o[0] }, o[1]);
      if (o[0] === colourBy) opt.setAttribute("selected", "selected");
      pick.appendChild(opt);
    });
    pick.addEventListener("change", function () { colourBy = pick.value; colourNodes(); });
    legend.appendChild(pick);
    function swatch(colour, label, cls) {
      var s = el("span", { class: cls });
      var sw = el("span", { class: "swatch" });
      sw.style.background = colour;
      s.appendChild(sw);
      s.appendChild(document.createTextNode(label));
      legend.appendChild(s);
    }
    [["read", "residual read"], ["write", "residual write"], ["q", "Q"], ["k", "K"], ["v", "V"], ["neuron", "neuron"]]
      .forEach(function (p) { swatch("var(--" + p[0] + ")", p[1], "by-kind"); });
    [[1, "r = 1"], [0.75, "0.75"], [0.5, "0.5 (below: repurposed)"], [0, "≤ 0"], [null, "constant (r undefined)"]]
      .forEach(function (p) { swatch(corrColor(p[0]), p[1], "by-corr"); });
    var hollow = el("span", {});
    hollow.appendChild(el("span", { class: "swatch isolated-swatch" }));
    hollow.appendChild(document.createTextNode("hollow: no edge in the circuit (constant in it)"));
    legend.appendChild(hollow);
    [["pos", "positive weight"], ["neg", "negative weight"], ["qk", "q-k pairing (no weight)"],
      ["link", "residual link (identity, not an edge)"]].forEach(function (p) {
      var s = el("span");
      s.appendChild(el("span", { class: "bar " + p[0] }));
      s.appendChild(document.createTextNode(p[1]));
      legend.appendChild(s);
    });
    legend.appendChild(el("span", {}, "width \u221d |weight| within its kind \u00b7 hover a node, click to pin"));
    box.appendChild(legend);
    return box;
  }

  // ------------------------------------------------------------------ layout
  function layout() {
    // residual channels kept anywhere share a column, so one channel reads as one vertical wire
    var channels = {};
    Object.keys(nodes).forEach(function (n) { if (RESIDUAL_KINDS[nodes[n].kind]) channels[nodes[n].index] = true; });
    var channelList = Object.keys(channels).map(Number).sort(function (a, b) { return a - b; });
    var column = {};
    channelList.forEach(function (c, i) { column[c] = i; });

    function rowWidth(row) {
      if (RESIDUAL_KINDS[row.kind]) return channelList.length * DX;
      var n = 0;
      row.groups.forEach(function (g) { n += g.nodes.length; });
      return n * DX + (row.groups.length - 1) * DX;
    }
    ["embed", "pos", "bigram"].forEach(function (kind) {
      var found = data.sources.filter(function (s) { return s.kind === kind; });
      if (found.length) segments.push({ kind: kind, sources: found });
    });
    var gaps = 3 * DX * Math.max(0, segments.length - 1);
    var inner = Math.max(channelList.length * DX, data.targets.length * 90, 3 * data.sources.length + gaps, 120);
    data.rows.forEach(function (row) { inner = Math.max(inner, rowWidth(row)); });
    var width = LEFT + inner + 40;

    var step = Math.min(TICK, (inner - gaps) / Math.max(1, data.sources.length));
    var xs = LEFT + (inner - step * data.sources.length - gaps) / 2 + step / 2;
    segments.forEach(function (seg) {
      seg.x0 = xs;
      seg.sources.forEach(function (s) { pos[s.name] = { x: xs, y: 38, r: 5, w: Math.max(1.5, Math.min(6, step - 1)) }; xs += step; });
      seg.x1 = xs - step;
      xs += 3 * DX;
    });
    data.rows.forEach(function (row, r) {
      var y = 30 + ROW_H * (r + 1);
      row.y = y;
      if (RESIDUAL_KINDS[row.kind]) {
        var x0 = LEFT + (inner - channelList.length * DX) / 2 + DX / 2;
        row.groups[0].nodes.forEach(function (n) { pos[n] = { x: x0 + column[nodes[n].index] * DX, y: y }; });
        return;
      }
      var x = LEFT + (inner - rowWidth(row)) / 2 + DX / 2;
      row.groups.forEach(function (g) {
        g.x0 = x;
        g.nodes.forEach(function (n) { pos[n] = { x: x, y: y }; x += DX; });
        g.x1 = x - DX;
        x += DX;
      });
    });
    var yOut = 30 + ROW_H * (data.rows.length + 1);
    data.targets.forEach(function (t, i) {
      pos[t.name] = { x: LEFT + (inner - data.targets.length * 90) / 2 + 45 + i * 90, y: yOut, r: 10 };
    });
    return { width: width, height: yOut + 40 };
  }

  function edgePath(src, dst) {
    var a = pos[src], b = pos[dst];
    if (a.y === b.y) { // q-k: K and Q of one head, an arc above their row
      var top = a.y - R - 4 - Math.min(24, Math.abs(b.x - a.x) / 3);
      return "M" + a.x + "," + (a.y - R) + " C" + a.x + "," + top + " " + b.x + "," + top + " " + b.x + "," + (b.y - R);
    }
    var y0 = a.y + (a.r || R), y1 = b.y - (b.r || R);
    var span = Math.round((b.y - a.y) / ROW_H);
    var bow = span > 1 && Math.abs(a.x - b.x) < DX ? 6 + 5 * span : 0; // keep long vertical edges off the rows between
    var my = (y1 - y0) * 0.45;
    return "M" + a.x + "," + y0 + " C" + (a.x + bow) + "," + (y0 + my) + " " + (b.x + bow) + "," + (y1 - my) + " " + b.x + "," + y1;
  }

  function graph() {
    var size = layout();
    var root = svg("svg", { width: size.width, height: size.height, viewBox: "0 0 " + size.width + " " + size.height,
      role: "img", "aria-label": "circuit graph" });
    data.rows.forEach(function (row, r) {
      if (r % 2 === 0) root.appendChild(svg("rect", { class: "row-band", x: 0, y: row.y - ROW_H / 2, width: size.width, height: ROW_H }));
      root.appendChild(svg("text", { class: "row-label", x: 8, y: row.y + 4 }, row.label));
      row.groups.forEach(function (g, j) {
        if (!g.label) return;
        // a group narrower than its label ("head 5") gets the short form ("h5"), alternately lower, so
        // neighbouring labels never overlap
        var narrow = (g.x1 - g.x0 + DX) < 6.5 * g.label.length + 6;
        var text = narrow ? g.label.replace("head ", "h") : g.label;
        root.appendChild(svg("text", { class: "group-label", x: (g.x0 + g.x1) / 2, y: row.y + 20 + (narrow && j % 2 ? 10 : 0),
          "text-anchor": "middle" }, text));
      });
    });
    if (segments.length) root.appendChild(svg("text", { class: "row-label", x: 8, y: 42 }, "embedding"));
    if (data.targets.length) root.appendChild(svg("text", { class: "row-label", x: 8, y: pos[data.targets[0].name].y + 4 }, "unembedding"));

    var maxByKind = {};
    edges.forEach(function (e) { maxByKind[e.kind] = Math.max(maxByKind[e.kind] || 0, Math.abs(e.weight)); });
    var edgeLayer = svg("g", { class: "edges" });
    links.forEach(function (pair, i) {
      var p = svg("path", { class: "link-path", d: edgePath(pair[0], pair[1]) });
      p.appendChild(svg("title", {}, pair[0] + " \u2192 " + pair[1] + " (residual link: the same channel, identity)"));
      linkPaths[i] = p;
      edgeLayer.appendChild(p);
    });
    edges.forEach(function (e, i) {
      var w = maxByKind[e.kind] ? Math.abs(e.weight) / maxByKind[e.kind] : 0;
      edgeFrac[i] = e.kind === "q-k" ? 1 : w;
      var cls = "edge " + (e.kind === "q-k" ? "qk" : e.weight >= 0 ? "pos" : "neg") + (nodes[e.src] ? "" : " input");
      var p = svg("path", { class: cls, d: edgePath(e.src, e.dst), "stroke-width": (0.5 + 3.5 * w).toFixed(2) });
      var ends = (nodes[e.src] ? e.src : terminalLabel(e.src)) + " \u2192 " + (nodes[e.dst] ? e.dst : terminalLabel(e.dst));
      p.appendChild(svg("title", {}, ends + " (" + e.kind + ") " + fmt(e.weight)));
      edgePaths[i] = p;
      edgeLayer.appendChild(p);
    });
    root.appendChild(edgeLayer);

    segments.forEach(function (seg) {
      var g = svg("g", { class: "source", "data-source": seg.kind });
      g.appendChild(svg("text", { x: (seg.x0 + seg.x1) / 2, y: 22, "text-anchor": "middle" },
        SOURCE_LABELS[seg.kind] + " (" + seg.sources.length + ")"));
      seg.sources.forEach(function (s) {
        var p = pos[s.name];
        var tick = svg("rect", { x: p.x - p.w / 2, y: p.y - p.r, width: p.w, height: 2 * p.r });
        tick.appendChild(svg("title", {}, terminalLabel(s.name)));
        g.appendChild(tick);
      });
      root.appendChild(g);
    });
    data.targets.forEach(function (t) {
      var name = t.name;
      var g = svg("g", { class: "terminal", "data-terminal": name });
      var label = terminalLabel(name);
      var w = Math.max(54, 7 * label.length + 12);
      g.appendChild(svg("rect", { x: pos[name].x - w / 2, y: pos[name].y - 10, width: w, height: 20, rx: 4 }));
      g.appendChild(svg("text", { x: pos[name].x, y: pos[name].y + 4, "text-anchor": "middle" }, label));
      root.appendChild(g);
    });

    var nodeLayer = svg("g", { class: "nodes" });
    Object.keys(nodes).forEach(function (name) {
      var n = nodes[name];
      // a kept node with no edge and no residual link in the circuit receives nothing there: it is constant in it
      var isolated = !n["in"].length && !n.out.length && !n.links.length;
      var c = svg("circle", { class: "node " + n.kind + (isolated ? " isolated" : ""), "data-node": name, cx: pos[name].x,
        cy: pos[name].y, r: R, tabindex: 0 });
      c.appendChild(svg("title", {}, name + " (" + n.role + ")" + (isolated ? ": no edge in the circuit, so constant in it" : "")));
      c.addEventListener("mouseenter", function () { focus(name); if (!pinned) showPanel(name); });
      c.addEventListener("mouseleave", function () { focus(pinned); });
      c.addEventListener("click", function (ev) { ev.stopPropagation(); pin(pinned === name ? null : name); });
      c.addEventListener("keydown", function (ev) { if (ev.key === "Enter") pin(name); });
      circles[name] = c;
      nodeLayer.appendChild(c);
    });
    root.appendChild(nodeLayer);
    root.addEventListener("click", function () { pin(null); });
    return root;
  }

  // ------------------------------------------------------------------ filters (large circuits)
  function siteOf(name) { return name.split("[")[0]; }

  function neighbourhood(name) {
    var near = {};
    near[name] = true;
    nodes[name]["in"].concat(nodes[name].out).forEach(function (i) { near[edges[i].src] = near[edges[i].dst] = true; });
    nodes[name].links.forEach(function (i) { near[links[i][0]] = near[links[i][1]] = true; });
    return near;
  }

  // Nodes shown: those of the chosen site (all sites by default), within the pinned node's
  // neighbourhood when that box is ticked, and the other ends of the edges shown. Edges shown: at
  // least edgeMin of their kind's largest |weight|, with a shown end in the base set.
  function applyFilters() {
    var near = filters.neighbourhood && pinned ? neighbourhood(pinned) : null;
    var base = {};
    Object.keys(nodes).forEach(function (n) {
      if ((!filters.site || siteOf(n) === filters.site) && (!near || near[n])) base[n] = true;
    });
    var shownNodes = {};
    Object.keys(base).forEach(function (n) { shownNodes[n] = true; });
    edges.forEach(function (e, i) {
      var inBase = base[e.src] || base[e.dst];
      var ok = edgeFrac[i] >= filters.edgeMin && inBase && (!near || (near[e.src] || !nodes[e.src]) && (near[e.dst] || !nodes[e.dst]));
      edgePaths[i].classList.toggle("filtered", !ok);
      if (ok) { shownNodes[e.src] = shownNodes[e.dst] = true; }
    });
    links.forEach(function (pair, i) {
      var ok = (base[pair[0]] || base[pair[1]]) && (!near || (near[pair[0]] && near[pair[1]]));
      linkPaths[i].classList.toggle("filtered", !ok);
      if (ok) { shownNodes[pair[0]] = shownNodes[pair[1]] = true; }
    });
    Object.keys(circles).forEach(function (n) { circles[n].classList.toggle("filtered", !shownNodes[n]); });
    var count = document.getElementById("filter-count");
    if (count) {
      count.textContent = Object.keys(shownNodes).filter(function (n) { return nodes[n]; }).length + " of " +
        Object.keys(nodes).length + " nodes, " + document.querySelectorAll("path.edge:not(.filtered)").length + " of " +
        edges.length + " edges shown";
    }
  }

  function filterBar() {
    var bar = el("div", { class: "filters" });
    bar.appendChild(el("span", {}, "show edges with |weight| ≥"));
    var slider = el("input", { id: "edge-min", type: "range", min: 0, max: 1, step: 0.05, value: 0,
      title: "fraction of the largest |weight| of the edge's kind" });
    var shownValue = el("span", { id: "edge-min-value" }, "0");
    slider.addEventListener("input", function () {
      filters.edgeMin = Number(slider.value); shownValue.textContent = slider.value + " of its kind's max"; applyFilters();
    });
    bar.appendChild(slider);
    bar.appendChild(shownValue);
    var sites = el("select", { id: "site-filter", title: "show one node site and its neighbours" });
    sites.appendChild(el("option", { value: "" }, "all sites"));
    var seen = {};
    Object.keys(nodes).forEach(function (n) { seen[siteOf(n)] = true; });
    Object.keys(seen).forEach(function (site) { sites.appendChild(el("option", { value: site }, site)); });
    sites.addEventListener("change", function () { filters.site = sites.value; applyFilters(); });
    bar.appendChild(sites);
    var label = el("label", {});
    var box = el("input", { id: "neighbourhood", type: "checkbox" });
    box.addEventListener("change", function () { filters.neighbourhood = box.checked; applyFilters(); });
    label.appendChild(box);
    label.appendChild(document.createTextNode(" only the pinned node's neighbourhood"));
    bar.appendChild(label);
    bar.appendChild(el("span", { id: "filter-count", class: "more" }));
    return bar;
  }

  // ------------------------------------------------------------------ interaction
  function focus(name) {
    var svgRoot = document.querySelector("#graph svg");
    document.querySelectorAll(".hot").forEach(function (e) { e.classList.remove("hot"); });
    svgRoot.classList.toggle("focused", !!name);
    if (!name) return;
    var n = nodes[name];
    circles[name].classList.add("hot");
    n["in"].concat(n.out).forEach(function (i) {
      edgePaths[i].classList.add("hot");
      [edges[i].src, edges[i].dst].forEach(function (m) { if (circles[m]) circles[m].classList.add("hot"); });
    });
    n.links.forEach(function (i) {
      linkPaths[i].classList.add("hot");
      links[i].forEach(function (m) { circles[m].classList.add("hot"); });
    });
  }

  function pin(name) {
    if (pinned) circles[pinned].classList.remove("selected");
    pinned = name;
    if (filters.neighbourhood) applyFilters();
    focus(name);
    if (name) {
      circles[name].classList.add("selected");
      showPanel(name);
    } else if (shown) {
      showPanel(shown);
    }
  }

  // ------------------------------------------------------------------ panel
  function tokenRow(who, ids, acts, scale, readPos, peak) {
    var row = el("div", { class: "toks" });
    row.appendChild(el("span", { class: who === null ? "val" : "who" }, who === null ? fmt(acts[peak]) : who));
    ids.forEach(function (id, t) {
      var cls = "tok" + (t === peak ? " peak" : "") + (t === readPos ? " read" : "");
      var s = el("span", { class: cls, title: quoted(id) + ": " + fmt(acts[t]) }, tokText(id));
      s.style.background = actColor(acts[t], scale);
      row.appendChild(s);
    });
    return row;
  }

  function nodeLink(name) {
    var a = el("span", { class: "link", "data-goto": name }, name);
    a.addEventListener("click", function () { pin(name); circles[name].scrollIntoView({ block: "nearest", inline: "nearest" }); });
    return a;
  }

  function edgeTable(indices, end) {
    var box = el("div");
    if (!indices.length) { box.appendChild(el("div", { class: "more" }, "none")); return box; }
    var sorted = indices.slice().sort(function (a, b) { return Math.abs(edges[b].weight) - Math.abs(edges[a].weight); });
    var table = el("table", { class: "edges" });
    sorted.slice(0, MAX_EDGES_LISTED).forEach(function (i) {
      var e = edges[i], other = e[end];
      var tr = el("tr");
      var td = el("td");
      if (nodes[other]) {
        td.appendChild(nodeLink(other));
      } else {
        td.textContent = terminalLabel(other);
      }
      tr.appendChild(td);
      tr.appendChild(el("td", { class: "kind" }, e.kind));
      tr.appendChild(el("td", { class: "w " + (e.weight >= 0 ? "pos" : "neg") }, fmt(e.weight)));
      table.appendChild(tr);
    });
    box.appendChild(table);
    if (sorted.length > MAX_EDGES_LISTED) box.appendChild(el("div", { class: "more" }, "\u2026 and " + (sorted.length - MAX_EDGES_LISTED) + " more (smaller |weight|)"));
    return box;
  }

  // the attached report's row for the node (and its head, for a Q/K/V channel), flags first
  function faithSection(panel, n) {
    panel.appendChild(el("h3", {}, "Faithfulness (report on " + faith.n_pairs + " test pairs)"));
    var f = n.faith;
    if (!f) {
      panel.appendChild(el("div", { class: "more" }, "the report has no row for this node (its 'nodes' check did not run)"));
    } else {
      var flags = [];
      if (f.constant) flags.push("constant in the model or the circuit: correlation undefined");
      if (f.sign_flip) flags.push("flips sign in the circuit");
      else if (f.repurposed) flags.push("repurposed: its activation in the circuit correlates below 0.5 with the model's");
      flags.forEach(function (t) { panel.appendChild(el("div", { class: "flag" }, t)); });
      panel.appendChild(el("div", { class: "meta" }, "correlation model/circuit " + fmt(f.corr) + " \u00b7 mean in the model " +
        fmt(f.mean_model) + ", in the circuit " + fmt(f.mean_circuit)));
    }
    var hf = n.head_faith;
    if (n.head === null || n.head === undefined) return;
    if (!hf) {
      panel.appendChild(el("div", { class: "more" }, "no row for head " + n.head + " in the report (its 'attention' check did not run)"));
      return;
    }
    var head = "L" + n.layer + " head " + n.head;
    if (hf.uniform_in_circuit) panel.appendChild(el("div", { class: "flag" }, head + " attends without its " +
      (hf.kept_q === 0 ? "Q" : "K") + " channels in the circuit, where the model puts " + fmt(hf.model_max_attention) +
      " of its attention on one key"));
    panel.appendChild(el("div", { class: "meta" }, head + ": JS divergence of its attention at the read position " + fmt(hf.js) +
      " nats \u00b7 entropy model " + fmt(hf.entropy_model) + ", circuit " + fmt(hf.entropy_circuit) + " \u00b7 kept q/k/v " +
      hf.kept_q + "/" + hf.kept_k + "/" + hf.kept_v));
  }

  function showPanel(name) {
    shown = name;
    var n = nodes[name];
    var panel = document.getElementById("panel");
    panel.innerHTML = "";
    panel.setAttribute("data-node", name);
    panel.appendChild(el("h2", { id: "panel-name" }, name));
    var where = n.role + " \u00b7 layer " + n.layer + (n.head !== null ? " \u00b7 head " + n.head + " channel " + n.channel : " \u00b7 channel " + n.channel);
    panel.appendChild(el("div", { class: "meta" }, where + " \u00b7 hook " + n.hook));
    panel.appendChild(el("div", { class: "pin" }, pinned === name ? "pinned (click the node again or press Esc to unpin)" : "click the node to pin this panel"));

    if (faith) faithSection(panel, n);
    var act = n.act;
    panel.appendChild(el("h3", {}, "Task prompts: full model vs circuit"));
    panel.appendChild(el("div", { class: "meta" }, "colour scale \u00b1" + fmt(act.max_abs) + " (blue +, red \u2212) \u00b7 correlation model/circuit " +
      fmt(act.corr) + " on these prompts \u00b7 underlined: the token whose logits are scored"));
    data.prompts.forEach(function (p, i) {
      var box = el("div", { class: "prompt" });
      box.appendChild(el("div", { class: "title" }, "pair " + (p.pair + 1) + " " + p.label + ": correct " + quoted(p.correct) +
        " vs " + quoted(p.wrong) + " \u00b7 logit diff model " + fmt(p.logit_diff.full) + ", circuit " + fmt(p.logit_diff.circuit)));
      var readPos = p.ids.length - 1;
      box.appendChild(tokenRow("model", p.ids, act.full[i], act.max_abs, readPos, -1));
      box.appendChild(tokenRow("circuit", p.ids, act.circuit[i], act.max_abs, readPos, -1));
      panel.appendChild(box);
    });

    panel.appendChild(el("h3", {}, "Top-activating pretraining snippets"));
    if (!n.snippets.length) {
      panel.appendChild(el("div", { class: "more" }, data.header.snippets ? "none" :
        "no corpus was given (sparselens view --corpus, or viewer_data(corpus_tokens=...))"));
    }
    var sScale = 0;
    n.snippets.forEach(function (s) { sScale = Math.max(sScale, Math.abs(s.value)); });
    n.snippets.forEach(function (s) {
      var row = tokenRow(null, s.ids, s.acts, sScale, -1, s.peak);
      row.classList.add("snippet");
      panel.appendChild(row);
    });

    panel.appendChild(el("h3", {}, "Incoming edges (" + n["in"].length + ")"));
    panel.appendChild(edgeTable(n["in"], "src"));
    panel.appendChild(el("h3", {}, "Outgoing edges (" + n.out.length + ")"));
    panel.appendChild(edgeTable(n.out, "dst"));

    panel.appendChild(el("h3", {}, "Residual links (" + n.links.length + ")"));
    var linked = el("div", { class: "links" });
    if (!n.links.length) linked.appendChild(el("span", { class: "more" }, "none"));
    n.links.forEach(function (i) {
      var other = links[i][0] === name ? links[i][1] : links[i][0];
      linked.appendChild(el("span", { class: "more" }, links[i][0] === name ? "read by " : "written by "));
      linked.appendChild(nodeLink(other));
      linked.appendChild(document.createTextNode(" "));
    });
    panel.appendChild(linked);
  }

  // ------------------------------------------------------------------ page
  app.innerHTML = "";
  app.appendChild(header());
  app.appendChild(filterBar());
  var main = el("div", { id: "main" });
  var graphBox = el("div", { id: "graph" });
  graphBox.appendChild(graph());
  main.appendChild(graphBox);
  var panel = el("div", { id: "panel" });
  panel.appendChild(el("div", { class: "hint" }, "Hover over a node to see its activations on task prompts (full model vs circuit), " +
    "its top pretraining snippets and its edges. Click to pin."));
  main.appendChild(panel);
  app.appendChild(main);
  colourNodes();
  applyFilters();
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") pin(null); });
  if (data.selected && nodes[data.selected]) {
    pin(data.selected);
    circles[data.selected].scrollIntoView({ block: "center", inline: "center" });
  }
})();
