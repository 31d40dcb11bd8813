// The interactive soundscape map inside its Streamlit component frame (dashboard/tilemap).
//
// The page gets, with every Streamlit run, the Deck's JSON (the score bitmap, coastlines, outlines
// and the chosen tile's ring) and the URL of the tile grid: a binary file the dashboard serves
// (dashboard/tilemap/__init__.py, grid_bytes). Hover and click find their tile through the grid,
// from the pointer's coordinate, so no layer holds one polygon per tile: deck.gl draws and picks
// a bitmap, whatever the number of tiles.
"use strict";

(function () {
  const container = document.getElementById("map");
  let deck = null;
  let deckJson = null;
  let viewJson = null;
  let grid = null;
  let gridUrl = null;
  let height = 0;
  let clicks = 0;

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

  function click(info) {
    const i = tileAt(info && info.coordinate);
    if (i < 0) return;
    clicks += 1;
    // the count makes a second click on the same tile a new value (Streamlit reruns on a change)
    send("streamlit:setComponentValue", { value: { tile: grid.ids[i], clicks: clicks }, dataType: "json" });
  }

  function render(args) {
    if (args.height !== height) {
      height = args.height;
      container.style.height = height + "px";
      send("streamlit:setFrameHeight", { height: height });
    }
    if (args.grid_url !== gridUrl) {
      const url = args.grid_url;
      gridUrl = url;
      grid = null;
      fetch(url)
        .then(function (r) {
          if (!r.ok) throw new Error("the tile grid " + url + " answered " + r.status);
          return r.arrayBuffer();
        })
        .then(function (buf) {
          if (gridUrl === url) grid = parseGrid(buf);
        })
        .catch(function (e) {
          console.error(e);
        });
    }
    if (args.deck === deckJson) return;
    deckJson = args.deck;
    const spec = JSON.parse(args.deck);
    const view = JSON.stringify(spec.initialViewState);
    if (deck === null) {
      deck = createDeck({ container: container, jsonInput: spec, tooltip: false });
      deck.setProps({ getTooltip: tooltip, onClick: click });
      window.psmTilemap = { deck: deck }; // for the browser test: the view's projection
    } else {
      // the same map redrawn (a click moved the ring): keep the user's pan and zoom
      if (view === viewJson) delete spec.initialViewState;
      updateDeck(spec, deck);
    }
    viewJson = view;
  }

  window.addEventListener("message", function (event) {
    const msg = event.data;
    if (msg && msg.type === "streamlit:render") render(msg.args || {});
  });
  send("streamlit:componentReady", { apiVersion: 1 });
})();
