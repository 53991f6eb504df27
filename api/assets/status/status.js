// Orrery status page: live through GraphQL subscriptions (graphql-transport-ws on
// /graphql/ws, client from the embedded graphql-ws build). Reads only public queries.
// No timer polls: every refresh is triggered by a subscription event.
(function () {
  "use strict";

  var body = document.body;
  var dexPairs = [];
  try { dexPairs = JSON.parse(body.getAttribute("data-dex-pairs") || "[]"); } catch (e) { dexPairs = []; }

  function liveUpdate() {
    body.setAttribute("data-live-updates", String(Number(body.getAttribute("data-live-updates") || "0") + 1));
  }

  function gql(query, variables) {
    return fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: query, variables: variables || {} })
    }).then(function (r) { return r.json(); }).then(function (r) {
      if (r.errors && r.errors.length) { throw new Error(r.errors.map(function (e) { return e.message; }).join("; ")); }
      return r.data;
    });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function show(v) { return v === null || v === undefined ? "\u2013" : String(v); }
  function short(s) { return s && s.length > 14 ? s.slice(0, 6) + "\u2026" + s.slice(-6) : show(s); }

  function reportError(where, err) {
    var p = document.getElementById("page-error") || el("p", { id: "page-error", "class": "error" });
    p.textContent = where + ": " + (err && err.message ? err.message : String(err));
    if (!p.parentNode) { document.querySelector("main").prepend(p); }
  }

  // Debounced, event-triggered refreshes (never on a timer of their own).
  var pending = {};
  function soon(name, fn, ms) {
    if (pending[name]) { return; }
    pending[name] = setTimeout(function () { pending[name] = null; fn(); }, ms || 300);
  }

  // ---- sources -------------------------------------------------------------------------
  // The server's field list (the same its first view rendered), so both show the same cells.
  var SOURCE_FIELDS = body.getAttribute("data-source-fields");

  function lagText(s) {
    if (s.lagBlocks === null && s.lagSeconds === null) { return "\u2013"; }
    if (s.lagSeconds === null) { return s.lagBlocks + " blocks"; }
    if (s.lagBlocks === null) { return s.lagSeconds + " s"; }
    return s.lagBlocks + " blocks / " + Math.round(s.lagSeconds) + " s";
  }

  function backfillText(s) {
    if (s.progress === null || s.progress === undefined) { return "\u2013"; }
    return (s.progress * 100).toFixed(1) + "%" + (s.etaSeconds !== null && s.etaSeconds !== undefined ? ", ETA " + s.etaSeconds + " s" : "");
  }

  function renderSource(s) {
    var tbody = document.querySelector("#sources tbody");
    var row = tbody.querySelector('tr[data-source="' + CSS.escape(s.id) + '"]');
    var cells = [s.id, s.status, show(s.headHeight), show(s.indexedHeight), lagText(s), backfillText(s),
      show(s.circuitBreaker ? s.circuitBreaker.state : null), show(s.lastError)];
    var classes = ["id", "status", "head", "indexed", "lag", "backfill", "breaker", "error"];
    var fresh = el("tr", { "data-source": s.id, "class": "status-" + String(s.status).toLowerCase() },
      cells.map(function (c, i) { return el("td", { "class": classes[i] }, [c]); }));
    if (row) { tbody.replaceChild(fresh, row); } else { tbody.appendChild(fresh); }
    sources[s.id] = s;
  }
  var sources = {};

  function loadSources() {
    return gql("{ indexerStatus(first: 200) { edges { node { " + SOURCE_FIELDS + " } } } }").then(function (d) {
      d.indexerStatus.edges.forEach(function (e) { renderSource(e.node); });
    });
  }

  // ---- health --------------------------------------------------------------------------
  function loadHealth() {
    return gql("{ health { status version components { name status message latencyMs } } }").then(function (d) {
      var overall = document.getElementById("overall");
      overall.textContent = d.health.status;
      overall.className = "badge status-" + d.health.status.toLowerCase();
      var list = document.getElementById("components");
      list.innerHTML = "";
      d.health.components.forEach(function (c) {
        list.appendChild(el("li", { "data-component": c.name, "class": "status-" + c.status.toLowerCase() }, [
          el("b", {}, [c.name]), " ", el("span", { "class": "component-status" }, [c.status]), " ",
          el("span", { "class": "component-message" }, [c.message])
        ]));
      });
    });
  }

  // ---- BTC/USD chart -------------------------------------------------------------------
  var chart = { rolling: [], daily: [], exchange: [], comparisons: [] };
  var CHART_QUERY = "query Chart($from: DateTime!, $to: DateTime!, $long: DateTime!) {" +
    " rolling: prices(pair: \"BTC/USD\", source: \"UTXORACLE\", from: $from, to: $to, interval: \"1h\") { start close }" +
    " daily: prices(pair: \"BTC/USD\", source: \"UTXORACLE_DAILY\", from: $long, to: $to, interval: \"1d\") { start close }" +
    " exchange: prices(pair: \"BTC/USD\", source: \"EXCHANGE\", from: $from, to: $to, interval: \"1h\") { start close }" +
    " priceComparisons(from: $from, to: $to, first: 200) { edges { node { at utxoraclePrice exchangePrice isValid reason } } } }";
  var LATEST_QUERY = "{ u: latestPrice(pair: \"BTC/USD\", source: \"UTXORACLE\") { at }" +
    " d: latestPrice(pair: \"BTC/USD\", source: \"UTXORACLE_DAILY\") { at }" +
    " e: latestPrice(pair: \"BTC/USD\", source: \"EXCHANGE\") { at } }";

  function loadChart() {
    return gql(LATEST_QUERY).then(function (d) {
      var times = [d.u, d.d, d.e].filter(Boolean).map(function (p) { return Date.parse(p.at); });
      if (!times.length) { drawChart(); return; }
      var end = Math.max.apply(null, times) + 3600e3;
      var vars = { from: new Date(end - 7 * 86400e3).toISOString(), to: new Date(end).toISOString(), long: new Date(end - 90 * 86400e3).toISOString() };
      return gql(CHART_QUERY, vars).then(function (c) {
        function pts(list) { return list.map(function (b) { return { t: Date.parse(b.start), v: b.close }; }); }
        chart.rolling = pts(c.rolling);
        chart.daily = pts(c.daily);
        chart.exchange = pts(c.exchange);
        chart.comparisons = c.priceComparisons.edges.map(function (e) { return e.node; });
        drawChart();
      });
    });
  }

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var n = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    if (text !== undefined) { n.textContent = text; }
    return n;
  }

  function drawChart() {
    var box = document.getElementById("chart");
    var comps = chart.comparisons.filter(function (c) { return c.utxoraclePrice !== null || c.exchangePrice !== null; });
    var series = { rolling: chart.rolling, daily: chart.daily, exchange: chart.exchange };
    var all = [].concat(chart.rolling, chart.daily, chart.exchange);
    comps.forEach(function (c) {
      var t = Date.parse(c.at);
      [c.utxoraclePrice, c.exchangePrice].forEach(function (v) { if (v !== null) { all.push({ t: t, v: v }); } });
    });
    box.setAttribute("data-points", String(all.length));
    box.setAttribute("data-invalid", String(comps.filter(function (c) { return !c.isValid; }).length));
    box.innerHTML = "";
    if (!all.length) { box.appendChild(el("p", { "class": "empty" }, ["no price yet"])); return; }
    var W = 760, H = 260, L = 64, R = 10, T = 10, B = 24;
    var t0 = Math.min.apply(null, all.map(function (p) { return p.t; }));
    var t1 = Math.max.apply(null, all.map(function (p) { return p.t; }));
    var v0 = Math.min.apply(null, all.map(function (p) { return p.v; }));
    var v1 = Math.max.apply(null, all.map(function (p) { return p.v; }));
    if (t1 === t0) { t1 = t0 + 1; }
    if (v1 === v0) { v0 -= 1; v1 += 1; }
    function x(t) { return L + (t - t0) / (t1 - t0) * (W - L - R); }
    function y(v) { return T + (v1 - v) / (v1 - v0) * (H - T - B); }
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, "class": "chart", role: "img", "aria-label": "BTC/USD prices" });
    root.appendChild(svg("text", { x: 4, y: T + 10, "class": "axis" }, Math.round(v1).toLocaleString()));
    root.appendChild(svg("text", { x: 4, y: H - B, "class": "axis" }, Math.round(v0).toLocaleString()));
    root.appendChild(svg("text", { x: L, y: H - 6, "class": "axis" }, new Date(t0).toISOString().slice(0, 16).replace("T", " ")));
    root.appendChild(svg("text", { x: W - R, y: H - 6, "class": "axis", "text-anchor": "end" }, new Date(t1).toISOString().slice(0, 16).replace("T", " ")));
    // The comparison band: between the UTXOracle estimate and the exchange price.
    var paired = comps.filter(function (c) { return c.utxoraclePrice !== null && c.exchangePrice !== null; })
      .map(function (c) { return { t: Date.parse(c.at), a: c.utxoraclePrice, b: c.exchangePrice }; })
      .sort(function (p, q) { return p.t - q.t; });
    if (paired.length > 1) {
      var upper = paired.map(function (p) { return x(p.t) + "," + y(Math.max(p.a, p.b)); });
      var lower = paired.slice().reverse().map(function (p) { return x(p.t) + "," + y(Math.min(p.a, p.b)); });
      root.appendChild(svg("polygon", { points: upper.concat(lower).join(" "), "class": "band" }));
    }
    Object.keys(series).forEach(function (name) {
      var pts = series[name].slice().sort(function (p, q) { return p.t - q.t; });
      if (pts.length > 1) {
        root.appendChild(svg("polyline", { points: pts.map(function (p) { return x(p.t) + "," + y(p.v); }).join(" "), "class": "line " + name }));
      }
      pts.forEach(function (p) { root.appendChild(svg("circle", { cx: x(p.t), cy: y(p.v), r: 2, "class": "dot " + name })); });
    });
    comps.filter(function (c) { return !c.isValid; }).forEach(function (c) {
      var v = c.utxoraclePrice !== null ? c.utxoraclePrice : c.exchangePrice;
      var g = svg("g", { "class": "invalid" });
      var cx = x(Date.parse(c.at)), cy = y(v);
      g.appendChild(svg("path", { d: "M" + (cx - 4) + "," + (cy - 4) + "L" + (cx + 4) + "," + (cy + 4) + "M" + (cx - 4) + "," + (cy + 4) + "L" + (cx + 4) + "," + (cy - 4) }));
      g.appendChild(svg("title", {}, "invalid: " + show(c.reason)));
      root.appendChild(g);
    });
    box.appendChild(root);
  }

  function addPricePoint(p) {
    var key = { UTXORACLE: "rolling", UTXORACLE_DAILY: "daily", EXCHANGE: "exchange" }[p.source];
    if (!key) { return; }
    chart[key].push({ t: Date.parse(p.at), v: p.price });
    drawChart();
    soon("chart", function () { loadChart().catch(function (e) { reportError("chart", e); }); }, 1500);
  }

  // ---- DEX ----------------------------------------------------------------------------
  function renderDex(pair, p) {
    var tbody = document.querySelector("#dex tbody");
    var row = tbody.querySelector('tr[data-pair="' + CSS.escape(pair) + '"]');
    var fresh = el("tr", { "data-pair": pair }, [el("td", {}, [pair]), el("td", { "class": "price" }, [p ? String(p.price) : "\u2013"]), el("td", {}, [p ? p.at : "no trade yet"])]);
    if (row) { tbody.replaceChild(fresh, row); } else { tbody.appendChild(fresh); }
  }

  function loadDex() {
    if (!dexPairs.length) {
      var tbody = document.querySelector("#dex tbody");
      tbody.innerHTML = "";
      tbody.appendChild(el("tr", {}, [el("td", { colspan: "3" }, ["no DEX pair configured (stellar.dex_pairs)"])]));
      return Promise.resolve();
    }
    return Promise.all(dexPairs.map(function (pair) {
      return gql("query($pair: String!) { latestPrice(pair: $pair, source: \"STELLAR_DEX\") { price at } }", { pair: pair })
        .then(function (d) { renderDex(pair, d.latestPrice); });
    }));
  }

  // ---- recent EVM events and Stellar operations --------------------------------------
  var MAX_ROWS = 15;
  function eventRow(e) {
    return el("tr", { "data-event": e.chain + ":" + e.blockNumber + ":" + e.logIndex }, [
      el("td", {}, [e.chain]), el("td", {}, [String(e.blockNumber)]), el("td", {}, [e.name]),
      el("td", { title: e.contract }, [short(e.contract)]), el("td", { title: e.txHash }, [short(e.txHash)])
    ]);
  }
  function prependRow(tbody, row, key) {
    if (tbody.querySelector('tr[' + key + '="' + CSS.escape(row.getAttribute(key)) + '"]')) { return; }
    tbody.insertBefore(row, tbody.firstChild);
    while (tbody.children.length > MAX_ROWS) { tbody.removeChild(tbody.lastChild); }
  }
  function loadEvents() {
    return gql("{ events(first: " + MAX_ROWS + ", order: NEWEST_FIRST) { edges { node { chain blockNumber logIndex name contract txHash } } } }").then(function (d) {
      var tbody = document.querySelector("#events tbody");
      tbody.innerHTML = "";
      d.events.edges.forEach(function (e) { tbody.appendChild(eventRow(e.node)); });
    });
  }
  function opRow(o) {
    return el("tr", { "data-op": o.id }, [
      el("td", {}, [o.createdAt]), el("td", {}, [o.type]), el("td", { title: show(o.from) }, [short(o.from)]),
      el("td", { title: show(o.to) }, [short(o.to)]), el("td", {}, [show(o.amount)]), el("td", {}, [show(o.assetCode || (o.amount ? "XLM" : null))])
    ]);
  }
  function loadOperations() {
    return gql("{ operations(first: " + MAX_ROWS + ", order: NEWEST_FIRST) { edges { node { id createdAt type from to amount assetCode } } } }").then(function (d) {
      var tbody = document.querySelector("#operations tbody");
      tbody.innerHTML = "";
      d.operations.edges.forEach(function (e) { tbody.appendChild(opRow(e.node)); });
    });
  }

  // ---- subscriptions ------------------------------------------------------------------
  function start() {
    var url = new URL("/graphql/ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    var live = document.getElementById("live");
    var client = graphqlWs.createClient({
      url: url.toString(),
      retryAttempts: Infinity,
      shouldRetry: function () { return true; },
      on: {
        connected: function () { live.textContent = "live"; live.className = "badge live-on"; },
        closed: function () { live.textContent = "reconnecting…"; live.className = "badge live-off"; }
      }
    });
    function subscribe(query, variables, onData) {
      client.subscribe({ query: query, variables: variables || {} }, {
        next: function (msg) {
          if (msg.errors && msg.errors.length) { reportError("subscription", new Error(msg.errors[0].message)); return; }
          liveUpdate();
          onData(msg.data);
        },
        error: function (e) { reportError("subscription", e instanceof Error ? e : new Error(JSON.stringify(e))); },
        complete: function () {}
      });
    }
    subscribe("subscription { sourceUpdated { " + SOURCE_FIELDS + " } }", {}, function (d) {
      renderSource(d.sourceUpdated);
      soon("health", function () { loadHealth().catch(function (e) { reportError("health", e); }); }, 2000);
      if (d.sourceUpdated.kind === "stellar") {
        soon("operations", function () { loadOperations().catch(function (e) { reportError("operations", e); }); }, 500);
      }
      if (d.sourceUpdated.kind === "stellar" && dexPairs.length) {
        soon("dex", function () { loadDex().catch(function (e) { reportError("dex", e); }); }, 1000);
      }
    });
    subscribe("subscription { eventIndexed { chain blockNumber logIndex name contract txHash } }", {}, function (d) {
      prependRow(document.querySelector("#events tbody"), eventRow(d.eventIndexed), "data-event");
    });
    subscribe("subscription { blockIndexed { chain number events } }", {}, function (d) {
      if (d.blockIndexed.events > 0) {
        soon("events", function () { loadEvents().catch(function (e) { reportError("events", e); }); }, 500);
      }
    });
    subscribe("subscription { priceUpdated(pair: \"BTC/USD\") { source price at } }", {}, function (d) {
      addPricePoint(d.priceUpdated);
    });
    dexPairs.forEach(function (pair) {
      subscribe("subscription($pair: String!) { priceUpdated(pair: $pair, source: \"STELLAR_DEX\") { price at } }", { pair: pair }, function (d) {
        renderDex(pair, d.priceUpdated);
      });
    });
  }

  Promise.all([
    loadSources(), loadHealth(), loadChart(), loadDex(), loadEvents(), loadOperations()
  ].map(function (p) { return p.catch(function (e) { reportError("first load", e); }); })).then(function () {
    body.setAttribute("data-loaded", "true");
  });
  start();
})();
