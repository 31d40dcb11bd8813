// The interactive soundscape map inside its Streamlit component frame (dashboard/tilemap).
//
// The page gets, with every Streamlit run, the Deck's JSON (the score bitmap, coastlines and
// outlines), the chosen tile (id and centre, or null) and the URL of the tile grid: a binary file
// the dashboard serves (dashboard/tilemap/__init__.py, grid_bytes). The page draws the chosen
// tile's ring itself: at a click it rings the tile at once, and the run the click starts confirms
// the same tile, which leaves the map as it is. Hover and click find their tile through the grid,
// from the pointer's coordinate, so no layer holds one polygon per tile and nothing is drawn for
// picking: deck.gl draws a bitmap, whatever the number of tiles. Before the first map the deck draws
// an invisible warm-up map (warmUp). Performance marks (psm:warm-up, psm:first-render, psm:first-frame,
// psm:grid-read, psm:click-sent) let bench/map_bench.py say where a map's time goes.
"use strict";

(function () {
  const container = document.getElementById("map");
  let deck = null;
  let deckJson = null;
  let ring = null;
  let viewJson = null;
  let grid = null;
  let gridUrl = null;
  let height = 0;
  let clicks = 0;
  let pending = null;

  function send(type, data) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data || {}), "*");
  }

  // The grid file, little-endian: 8 float64 (rows, columns, tiles, left, top, dx, dy, 0), tile ids
  // as float64, then float32 probability, sum sigma^2, west, south, east, north per tile, then the
  // int32 tile position of every cell, row-major from the north-west (-1: no tile).
  function parseGrid(buf) {
    const head = new Float64Array(buf, 0, 8);
    const rows = head[0], cols = head[1], n = head[2];
    let at = 64;
    const ids = new Float64Array(buf, at, n);
    at += 8 * n;
    const f32 = function () {
      const a = new Float32Array(buf, at, n);
      at += 4 * n;
      return a;
    };
    const p = f32(), u = f32(), west = f32(), south = f32(), east = f32(), north = f32();
    const index = new Int32Array(buf, at, rows * cols);
    return { rows, cols, left: head[3], top: head[4], dx: head[5], dy: head[6], ids, p, u, west, south, east, north, index };
  }

  function tileAt(coordinate) {
    if (!grid || !coordinate) return -1;
    let lon = coordinate[0];
    const lat = coordinate[1];
    // a wrapped view reports longitudes off by whole turns; an unwrapped raster may pass 180 E
    while (lon < grid.left) lon += 360;
    while (lon >= grid.left + 360) lon -= 360;
    const col = Math.floor((lon - grid.left) / grid.dx);
    const row = Math.floor((grid.top - lat) / grid.dy);
    if (row < 0 || row >= grid.rows || col < 0 || col >= grid.cols) return -1;
    return grid.index[row * grid.cols + col];
  }

  function fixed(x) {
    return String(Math.round(x * 1e4) / 1e4);
  }

  function tooltip(info) {
    const i = tileAt(info && info.coordinate);
    if (i < 0) return null;
    return {
      html: "<b>tile " + grid.ids[i] + "</b><br/>probability " + Number(grid.p[i].toPrecision(3)) +
        "<br/>uncertainty (sum σ²) " + Number(grid.u[i].toPrecision(4)) + "<br/>" +
        fixed(grid.south[i]) + " to " + fixed(grid.north[i]) + "°N, " +
        fixed(grid.west[i]) + " to " + fixed(grid.east[i]) + "°E",
      style: { backgroundColor: "#1f2430", color: "white", fontSize: "12px" },
    };
  }

  // The chosen tile's ring: an element over the canvas, kept on the tile as the view moves, so
  // that choosing a tile costs the map no redraw (software WebGL redraws the whole canvas).
  const ringEl = document.createElement("div");
  ringEl.className = "psm-ring";
  ringEl.style.cssText = "position:absolute;left:0;top:0;width:18px;height:18px;margin:-12px 0 0 -12px;" +
    "border:3px solid rgb(230,30,30);border-radius:50%;pointer-events:none;display:none;z-index:1";
  container.appendChild(ringEl);

  // A line in a frame with no map yet.
  const note = document.createElement("div");
  note.style.cssText = "position:absolute;left:0;right:0;top:45%;text-align:center;color:#888;" +
    "font:14px sans-serif;pointer-events:none";
  container.appendChild(note);

  function placeRing() {
    const viewport = deck === null ? null : deck.getViewports()[0];
    if (ring === null || !viewport) {
      ringEl.style.display = "none";
      return;
    }
    let xy = viewport.project([ring.lon, ring.lat]);
    for (const turn of [-360, 360]) {  // a view centred across the antimeridian shows the other copy
      if (xy[0] >= 0 && xy[0] <= viewport.width) break;
      const other = viewport.project([ring.lon + turn, ring.lat]);
      if (other[0] >= 0 && other[0] <= viewport.width) xy = other;
    }
    ringEl.style.left = xy[0] + "px";
    ringEl.style.top = xy[1] + "px";
    ringEl.style.display = "block";
  }

  function click(info) {
    const i = tileAt(info && info.coordinate);
    if (i < 0) return;
    ring = { tile: grid.ids[i], lon: (grid.west[i] + grid.east[i]) / 2, lat: (grid.south[i] + grid.north[i]) / 2 };
    placeRing();
    clicks += 1;
    performance.mark("psm:click-sent");
    // the count makes a second click on the same tile a new value (Streamlit reruns on a change)
    send("streamlit:setComponentValue", { value: { tile: grid.ids[i], clicks: clicks }, dataType: "json" });
  }

  // A click, not the end of a pan, chooses a tile. deck.gl's own onClick comes only once a
  // double click is ruled out (about 0.3 s later), so the page listens for the click itself.
  let down = null;
  container.addEventListener("pointerdown", function (e) {
    down = [e.clientX, e.clientY];
  });
  container.addEventListener("click", function (e) {
    if (deck === null || down === null || Math.abs(e.clientX - down[0]) > 4 || Math.abs(e.clientY - down[1]) > 4) return;
    const viewport = deck.getViewports()[0];
    if (!viewport) return;
    const rect = container.getBoundingClientRect();
    click({ coordinate: viewport.unproject([e.clientX - rect.left, e.clientY - rect.top]) });
  });

  function fetchGrid(url) {
    if (url === gridUrl) return;
    gridUrl = url;
    grid = null;
    if (!url) return;
    fetch(url)
      .then(function (r) {
        if (!r.ok) throw new Error("the tile grid " + url + " answered " + r.status);
        return r.arrayBuffer();
      })
      .then(function (buf) {
        if (gridUrl === url) grid = parseGrid(buf);
        performance.mark("psm:grid-read");
      })
      .catch(function (e) {
        console.error(e);
      });
  }

  // The deck and its frame-drawn hook. Until the first map comes, the deck draws a warm-up map
  // (below) with the same layers; at "Map" the layers get their data and the view its place.
  let warm = false;
  let warmTried = false;
  let drawn = false;

  function start(spec) {
    deck = createDeck({ container: container, jsonInput: spec, tooltip: false });
    deck.setProps({
      getTooltip: tooltip,
      onAfterRender: function () {
        if (!drawn && !warm) performance.mark("psm:first-frame");
        if (!warm) drawn = true;
        placeRing();
      },
    });
    window.psmTilemap = { deck: deck }; // for the browser test: the view's projection
  }

  // The warm-up map (args.warmup, dashboard/deckmap.py warmup_json): the map's own layers showing
  // nothing. Software WebGL (a machine without a GPU) spent about a second on the first frame of
  // these layer types (docs/benchmarks.md, "The first map under 2 s"); drawn while the user types a
  // query, the real map's first frame is a redraw.
  function warmUp(json) {
    warmTried = true;
    warm = true;
    try {
      start(JSON.parse(json));
      performance.mark("psm:warm-up");
    } catch (e) {
      // no WebGL here, say: the first map tries again and shows the error then
      console.error(e);
      deck = null;
      warm = false;
    }
  }

  function render(args) {
    if (args.height !== height) {
      height = args.height;
      container.style.height = height + "px";
      send("streamlit:setFrameHeight", { height: height });
    }
    fetchGrid(args.grid_url);
    note.textContent = args.deck ? "" : args.note || "";
    if (typeof createDeck === "undefined") {
      pending = args; // deck.js is still loading: drawn once the bundle is in
      return;
    }
    if (deck === null && !warmTried && !args.deck && args.warmup) warmUp(args.warmup);
    const chosen = args.chosen || null;
    const moved = (chosen === null) !== (ring === null) || (chosen !== null && chosen.tile !== ring.tile);
    if (moved) {
      ring = chosen;
      placeRing();
    }
    if (!args.deck || args.deck === deckJson) return; // no map yet, or the same one
    deckJson = args.deck;
    const spec = JSON.parse(args.deck);
    const view = JSON.stringify(spec.initialViewState);
    if (deck === null || warm) {
      performance.mark("psm:first-render");
      if (deck === null) start(spec);
      else updateDeck(spec, deck);
      warm = false;
      drawn = false;
    } else {
      // another map, or the same one redrawn: keep the user's pan and zoom unless the view moved
      if (view === viewJson) delete spec.initialViewState;
      updateDeck(spec, deck);
    }
    viewJson = view;
  }

  window.addEventListener("message", function (event) {
    const msg = event.data;
    if (msg && msg.type === "streamlit:render") render(msg.args || {});
  });
  // Ask for the map first, then load the bundle (4 MB of JavaScript, about a second to parse on a
  // slow machine): the grid file downloads meanwhile.
  send("streamlit:componentReady", { apiVersion: 1 });
  const bundle = document.createElement("script");
  bundle.src = "deck.js";
  bundle.onload = function () {
    performance.mark("psm:bundle-ready");
    if (pending !== null) render(pending);
    pending = null;
  };
  document.body.appendChild(bundle);
})();
