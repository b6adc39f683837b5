// convoy live dashboard. Talks to the API only through the contract in
// convoy/service/dashboard/__init__.py; the token comes from ?token= in the page URL.
(() => {
  "use strict";

  const API = "/api/v1";
  const token = new URLSearchParams(window.location.search).get("token") || "";
  // Distinct hues, readable on a dark background; one colour per platoon (by a hash of its id).
  const PALETTE = ["#e69f00", "#56b4e9", "#3ecf8e", "#f0e442", "#ff5ca8", "#d55e00", "#9b8cff", "#00c2c7"];
  const SOLO_COLOR = "#b0bcc6";
  const ROAD_COLORS = {
    motorway: "#6a9cc4", trunk: "#5b8ab0", primary: "#4f7796", secondary: "#466a85",
    tertiary: "#3f5f77", service: "#7a6a52",
  };
  const SITE_COLORS = {
    mine: "#c28e4a", coal_mine: "#c28e4a", power_plant: "#ef5350", chemical_park: "#cc79a7",
    rail_station: "#9b8cff", rail_loading: "#9b8cff", charging: "#3ecf8e", swap: "#3ecf8e",
    charging_station: "#3ecf8e", swap_station: "#3ecf8e", hub: "#56b4e9", platoon_hub: "#56b4e9",
    town: "#dce6ee",
  };
  const TAKEOVER_POLL_MS = 2000;
  const ORDER_POLL_MS = 5000;

  const state = {
    renderer: "", map: null, mapReady: false, canvas: null, net: null,
    vehicles: [], kpis: {}, alerts: [], t_s: null, messages: 0,
    mine: new Map(), // takeovers this page claimed, kept until resolved
  };
  window.convoyDashboard = state;

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, props, ...kids) => {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const k of kids) e.append(k);
    return e;
  };

  // ---------------------------------------------------------------- HTTP

  async function api(path, init) {
    const opts = Object.assign({}, init || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    if (token) opts.headers.Authorization = "Bearer " + token;
    const r = await fetch(API + path, opts);
    if (!r.ok) {
      let detail = `${r.status} ${r.statusText}`;
      try {
        const body = await r.json();
        if (body && body.detail) detail += ": " + (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
      } catch (_) { /* not JSON */ }
      throw new Error(detail);
    }
    return r.status === 204 ? null : r.json();
  }

  const asList = (x, ...keys) => {
    if (Array.isArray(x)) return x;
    for (const k of keys) if (x && Array.isArray(x[k])) return x[k];
    return [];
  };

  // ---------------------------------------------------------------- colours, formats

  function platoonColor(p) {
    if (p === null || p === undefined || p === "") return SOLO_COLOR;
    const s = String(p);
    let h = 5381;
    for (let i = 0; i < s.length; i++) h = ((h * 33) ^ s.charCodeAt(i)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }

  function fmt(v) {
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return String(v);
      const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 1 ? 2 : 4;
      return v.toLocaleString("en-US", { maximumFractionDigits: digits });
    }
    if (v === null || v === undefined) return "—";
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  const label = (k) => k.replace(/_/g, " ");

  // ---------------------------------------------------------------- network

  function splitNetwork(gj) {
    const edges = [], sites = [], rsus = [];
    for (const f of (gj && gj.features) || []) {
      const g = f.geometry, p = f.properties || {};
      if (!g) continue;
      if (g.type === "LineString" || g.type === "MultiLineString") {
        edges.push({ type: "Feature", geometry: g, properties: Object.assign({}, p, {
          color: ROAD_COLORS[p.road_class] || "#4a6578", width: 1 + 0.8 * (Number(p.lanes) || 1) }) });
      } else if (g.type === "Point") {
        if (p.kind === "rsu") rsus.push(f);
        else if (p.kind === "site" || p.site_kind || p.name_en) {
          const kind = p.site_kind || p.kind;
          sites.push({ type: "Feature", geometry: g, properties: Object.assign({}, p, {
            color: SITE_COLORS[kind] || "#dce6ee", label: `${p.name_en || p.id || ""} (${kind})` }) });
        }
      }
    }
    return { edges, sites, rsus };
  }

  function bounds(features) {
    let w = Infinity, s = Infinity, e = -Infinity, n = -Infinity;
    const visit = (c) => {
      if (typeof c[0] === "number") {
        w = Math.min(w, c[0]); e = Math.max(e, c[0]); s = Math.min(s, c[1]); n = Math.max(n, c[1]);
      } else c.forEach(visit);
    };
    for (const f of features) visit(f.geometry.coordinates);
    return Number.isFinite(w) ? [[w, s], [e, n]] : [[107.5, 38.4], [111.5, 40.8]];
  }

  const fc = (features) => ({ type: "FeatureCollection", features });

  function vehicleFeatures() {
    return state.vehicles
      .filter((v) => Number.isFinite(v.lon) && Number.isFinite(v.lat))
      .map((v) => ({
        type: "Feature",
        geometry: { type: "Point", coordinates: [v.lon, v.lat] },
        properties: { id: v.id, platoon: v.platoon, mode: v.mode, speed_mps: v.speed_mps, color: platoonColor(v.platoon) },
      }));
  }

  function webglAvailable() {
    try {
      const c = document.createElement("canvas");
      return !!(c.getContext("webgl2") || c.getContext("webgl"));
    } catch (_) {
      return false;
    }
  }

  // MapLibre with no tile sources: a background layer plus GeoJSON sources only.
  function initMapLibre(net, box) {
    const map = new maplibregl.Map({
      container: "map",
      style: { version: 8, sources: {}, layers: [{ id: "background", type: "background", paint: { "background-color": "#0f1a23" } }] },
      bounds: box,
      fitBoundsOptions: { padding: 30 },
      attributionControl: false,
      canvasContextAttributes: { preserveDrawingBuffer: true },
    });
    state.map = map;
    map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-left");
    map.on("error", (e) => console.error("map:", e && e.error ? e.error.message : e));
    map.on("load", () => {
      map.addSource("edges", { type: "geojson", data: fc(net.edges) });
      map.addSource("sites", { type: "geojson", data: fc(net.sites) });
      map.addSource("rsus", { type: "geojson", data: fc(net.rsus) });
      map.addSource("vehicles", { type: "geojson", data: fc(vehicleFeatures()) });
      map.addLayer({ id: "edges", type: "line", source: "edges",
        layout: { "line-cap": "round", "line-join": "round" },
        paint: { "line-color": ["get", "color"], "line-width": ["get", "width"] } });
      map.addLayer({ id: "rsus", type: "circle", source: "rsus",
        paint: { "circle-radius": 2, "circle-color": "#6fd3ff", "circle-opacity": 0.7 } });
      map.addLayer({ id: "sites", type: "circle", source: "sites",
        paint: { "circle-radius": 5, "circle-color": ["get", "color"], "circle-stroke-width": 1, "circle-stroke-color": "#0f1a23" } });
      map.addLayer({ id: "vehicles", type: "circle", source: "vehicles",
        paint: { "circle-radius": 7, "circle-color": ["get", "color"], "circle-stroke-width": 2, "circle-stroke-color": "#ffffff" } });
      for (const layer of ["sites", "vehicles"]) {
        map.on("click", layer, (e) => {
          const p = e.features[0].properties;
          const text = layer === "sites" ? p.label : `${p.id} · platoon ${p.platoon || "—"} · ${fmt(Number(p.speed_mps))} m/s · ${p.mode || ""}`;
          new maplibregl.Popup({ closeButton: false }).setLngLat(e.lngLat).setText(text).addTo(map);
        });
        map.on("mouseenter", layer, () => { map.getCanvas().style.cursor = "pointer"; });
        map.on("mouseleave", layer, () => { map.getCanvas().style.cursor = ""; });
      }
      state.mapReady = true;
      $("#net-stats").dataset.ready = "1";
    });
  }

  // Fallback when the browser has no WebGL: the same layers on a 2-D canvas,
  // equirectangular with cos(latitude) scaling (fine at the scale of one region).
  function initCanvas(net, box) {
    const host = $("#map");
    const canvas = el("canvas", {});
    canvas.style.width = "100%";
    canvas.style.height = "100%";
    host.append(canvas);
    state.canvas = canvas;
    const draw = () => {
      const dpr = window.devicePixelRatio || 1;
      const W = host.clientWidth, H = host.clientHeight;
      canvas.width = W * dpr; canvas.height = H * dpr;
      const ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = "#0f1a23";
      ctx.fillRect(0, 0, W, H);
      const [[w, s], [e, n]] = box;
      const kx = Math.cos(((s + n) / 2) * Math.PI / 180);
      const pad = 30;
      const scale = Math.min((W - 2 * pad) / ((e - w) * kx || 1), (H - 2 * pad) / ((n - s) || 1));
      const ox = (W - (e - w) * kx * scale) / 2, oy = (H - (n - s) * scale) / 2;
      const xy = (c) => [ox + (c[0] - w) * kx * scale, oy + (n - c[1]) * scale];
      ctx.lineCap = "round";
      for (const f of net.edges) {
        const lines = f.geometry.type === "LineString" ? [f.geometry.coordinates] : f.geometry.coordinates;
        ctx.strokeStyle = f.properties.color;
        ctx.lineWidth = f.properties.width;
        for (const line of lines) {
          ctx.beginPath();
          line.forEach((c, i) => { const [x, y] = xy(c); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
          ctx.stroke();
        }
      }
      const dot = (c, r, fill, stroke) => {
        const [x, y] = xy(c);
        ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
        ctx.fillStyle = fill; ctx.fill();
        if (stroke) { ctx.strokeStyle = stroke; ctx.lineWidth = 1.5; ctx.stroke(); }
      };
      for (const f of net.rsus) dot(f.geometry.coordinates, 2, "#6fd3ff");
      for (const f of net.sites) dot(f.geometry.coordinates, 5, f.properties.color, "#0f1a23");
      for (const f of vehicleFeatures()) dot(f.geometry.coordinates, 7, f.properties.color, "#ffffff");
    };
    state.redraw = draw;
    window.addEventListener("resize", draw);
    draw();
    state.mapReady = true;
    $("#net-stats").dataset.ready = "1";
  }

  async function loadNetwork() {
    const stats = $("#net-stats");
    let gj;
    try {
      const r = await fetch(API + "/network.geojson");
      if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
      gj = await r.json();
    } catch (e) {
      stats.textContent = "network: " + e.message;
      return;
    }
    const net = splitNetwork(gj);
    state.net = net;
    const box = bounds(net.edges.length ? net.edges : net.sites);
    let renderer = "canvas2d";
    if (window.maplibregl && webglAvailable()) {
      try {
        initMapLibre(net, box);
        renderer = "maplibre";
      } catch (e) {
        console.error("MapLibre failed, drawing on a 2-D canvas:", e);
        state.map = null;
        $("#map").replaceChildren();
      }
    }
    if (renderer === "canvas2d") initCanvas(net, box);
    state.renderer = renderer;
    Object.assign(stats.dataset, {
      edges: String(net.edges.length), sites: String(net.sites.length), rsus: String(net.rsus.length), renderer,
    });
    stats.textContent = `${gj.name || "network"}: ${net.edges.length} edges · ${net.sites.length} sites · ${net.rsus.length} RSUs · ${renderer}`;
  }

  // ---------------------------------------------------------------- live feed

  function renderVehicles() {
    const ul = $("#vehicles");
    const seen = new Set();
    const sorted = [...state.vehicles].sort((a, b) => String(a.id).localeCompare(String(b.id), "en", { numeric: true }));
    for (const v of sorted) {
      const id = String(v.id);
      seen.add(id);
      let li = ul.querySelector(`li[data-id="${CSS.escape(id)}"]`);
      if (!li) li = el("li", {});
      const color = platoonColor(v.platoon);
      Object.assign(li.dataset, {
        id, lon: String(v.lon), lat: String(v.lat), platoon: v.platoon == null ? "" : String(v.platoon),
        mode: v.mode == null ? "" : String(v.mode), color,
      });
      li.replaceChildren(
        el("span", { className: "dot", style: `background:${color}` }),
        `${id} · ${v.platoon || "solo"} · ${fmt(v.speed_mps)} m/s · ${v.mode || ""} · ${Number(v.lon).toFixed(4)}, ${Number(v.lat).toFixed(4)}`,
      );
      ul.append(li); // re-append keeps the sort order
    }
    for (const li of [...ul.children]) if (!seen.has(li.dataset.id)) li.remove();
    $("#vehicle-count").textContent = String(state.vehicles.length);
  }

  function renderLegend() {
    const platoons = [...new Set(state.vehicles.map((v) => v.platoon).filter((p) => p))].sort();
    const items = platoons.map((p) => el("div", {}, el("span", { style: `background:${platoonColor(p)}` }), String(p)));
    items.push(el("div", {}, el("span", { style: `background:${SOLO_COLOR}` }), "solo"));
    $("#legend").replaceChildren(...items);
  }

  function renderKpis() {
    const dl = $("#kpis");
    dl.replaceChildren();
    for (const [k, v] of Object.entries(state.kpis || {})) {
      dl.append(el("dt", {}, label(k)), el("dd", { title: k }, fmt(v)));
      dl.lastChild.dataset.key = k;
    }
  }

  function renderAlerts() {
    const ul = $("#alerts");
    ul.replaceChildren(...state.alerts.map((a) => {
      const li = el("li", {}, `${a.vehicle_id}: ${a.cause} — ${a.status}` +
        (a.deadline_s != null ? ` · deadline t=${fmt(a.deadline_s)} s` : ""));
      Object.assign(li.dataset, { id: String(a.id), status: String(a.status) });
      return li;
    }));
    $("#alert-count").textContent = String(state.alerts.filter((a) => a.status === "open").length);
  }

  let lastAlertKey = "";
  function onLive(msg) {
    state.messages += 1;
    state.t_s = msg.t_s;
    state.vehicles = asList(msg.vehicles);
    state.kpis = msg.kpis || {};
    state.alerts = asList(msg.alerts);
    $("#clock").textContent = `t = ${fmt(msg.t_s)} s`;
    $("#clock").dataset.tS = String(msg.t_s);
    renderVehicles();
    renderLegend();
    renderKpis();
    renderAlerts();
    if (state.map && state.mapReady) state.map.getSource("vehicles").setData(fc(vehicleFeatures()));
    else if (state.redraw) state.redraw();
    const key = state.alerts.map((a) => `${a.id}:${a.status}`).join(",");
    if (key !== lastAlertKey) { lastAlertKey = key; refreshTakeovers(); }
  }

  let backoffMs = 500;
  function connectLive() {
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${window.location.host}${API}/live?token=${encodeURIComponent(token)}`);
    const status = $("#status");
    ws.onopen = () => { backoffMs = 500; status.dataset.state = "live"; status.textContent = "live"; };
    ws.onmessage = (e) => {
      try { onLive(JSON.parse(e.data)); } catch (err) { console.error("live message:", err); }
    };
    ws.onclose = (e) => {
      status.dataset.state = "closed";
      status.textContent = `disconnected (${e.code}${e.reason ? ": " + e.reason : ""}), retrying…`;
      setTimeout(connectLive, backoffMs);
      backoffMs = Math.min(backoffMs * 2, 10000);
    };
  }

  // ---------------------------------------------------------------- takeover console

  const FINAL = new Set(["resolved", "expired", "mrm", "minimal_risk", "cancelled"]);

  async function refreshTakeovers() {
    const msg = $("#takeover-msg");
    let open = [], claimed = [];
    try {
      open = asList(await api("/takeovers?status=open"), "items", "takeovers");
    } catch (e) {
      msg.textContent = "takeovers: " + e.message;
      return;
    }
    // Claimed requests leave the open list; show them too so they can be resolved.
    try { claimed = asList(await api("/takeovers?status=claimed"), "items", "takeovers"); } catch (_) { /* optional */ }
    const rows = new Map();
    for (const t of [...state.mine.values(), ...claimed, ...open]) rows.set(String(t.id), t);
    renderTakeovers([...rows.values()].filter((t) => !FINAL.has(String(t.status))));
  }

  function renderTakeovers(list) {
    const tbody = $("#takeovers tbody");
    tbody.replaceChildren(...list.map((t) => {
      const id = String(t.id), status = String(t.status || "open");
      const claim = el("button", { className: "claim", textContent: "claim", disabled: status !== "open" });
      const resolve = el("button", { className: "resolve", textContent: "resolve", disabled: status === "open" });
      claim.onclick = () => act(id, "claim");
      resolve.onclick = () => act(id, "resolve");
      const who = t.operator ? ` (${t.operator})` : "";
      const tr = el("tr", {},
        el("td", { title: id }, id), el("td", {}, String(t.vehicle_id ?? "")), el("td", {}, String(t.cause ?? "")),
        el("td", { className: "st" }, status + who), el("td", {}, claim, resolve));
      Object.assign(tr.dataset, { id, status });
      return tr;
    }));
  }

  async function act(id, action) {
    const msg = $("#takeover-msg");
    const operator = $("#operator").value.trim();
    try {
      const body = JSON.stringify({ operator });
      const res = await api(`/takeovers/${encodeURIComponent(id)}/${action}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body,
      });
      if (action === "claim") {
        state.mine.set(id, Object.assign({ id, status: "claimed", operator }, res || {}));
      } else {
        state.mine.delete(id);
      }
      msg.textContent = `${id}: ${action === "claim" ? "claimed by " + operator : "resolved"}`;
    } catch (e) {
      msg.textContent = `${id}: ${action} failed — ${e.message}`;
    }
    await refreshTakeovers();
  }

  // ---------------------------------------------------------------- order board

  // Preferred columns in this order (the API's OrderOut names first); other keys fill up to 9.
  const ORDER_COLUMNS = [
    "id", "shipper", "cargo", "origin_site", "origin", "destination_site", "destination",
    "tonnes", "priority", "status", "delivery_end_s",
  ];

  async function refreshOrders() {
    let orders;
    try {
      orders = asList(await api("/orders"), "items", "orders");
    } catch (e) {
      $("#orders tbody").replaceChildren(el("tr", {}, el("td", {}, "orders: " + e.message)));
      return;
    }
    const keys = new Set(orders.flatMap((o) => Object.keys(o)));
    let cols = ORDER_COLUMNS.filter((k) => keys.has(k));
    for (const k of keys) if (cols.length < 9 && !cols.includes(k)) cols.push(k);
    if (!cols.length) cols = ["id"];
    $("#orders thead tr").replaceChildren(...cols.map((c) => el("th", {}, label(c))));
    $("#orders tbody").replaceChildren(...orders.map((o) => {
      const tr = el("tr", {}, ...cols.map((c) => el("td", {}, fmt(o[c]))));
      Object.assign(tr.dataset, { id: String(o.id ?? ""), status: String(o.status ?? "") });
      return tr;
    }));
    $("#order-count").textContent = String(orders.length);
  }

  // ---------------------------------------------------------------- start

  loadNetwork();
  connectLive();
  refreshTakeovers();
  refreshOrders();
  setInterval(refreshTakeovers, TAKEOVER_POLL_MS);
  setInterval(refreshOrders, ORDER_POLL_MS);
})();
