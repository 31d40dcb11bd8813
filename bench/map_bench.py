"""Map latency on a 100k-tile region: `psm map` to each format, and the interactive map in Chromium.

Seeds a scratch database as bench/dashboard_bench.py does (dropped at the end): a ~100k-tile grid
with embeddings for two hours and a stored text query. Then it times, median of ``--repeat``:

* ``scores``: :func:`psm_db.ranking.map_scores` for the stored query (every tile of the region);
* ``write <fmt>``: :func:`psm_db.maps.export.write_map` to .tif (COG), .geojson, .parquet, .png;
* ``psm map -> .tif``: the whole command in this process (engine, scores, COG);
* ``deck``: building the pydeck map (raster PNG, lines) and its JSON, with the JSON's size, and the
  tile grid file the map component reads (:func:`dashboard.tilemap.grid_bytes`), with its size;
* in Chromium (``--browser``): the Map button pressed to the map's canvas drawn with the
  bitmap on it, and a hover to its tooltip, a click to the tile panel, with the real dashboard.

Usage:
    PSM_HOME=.psm .venv/bin/python bench/map_bench.py [--side 317] [--repeat 5] [--browser]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("PSM_HOME", str(ROOT / ".psm"))
os.environ.setdefault("MPLBACKEND", "Agg")

from dashboard_bench import HOURS, TEXT, create_db, drop_db, seed  # noqa: E402

from psm_model.condition import Condition  # noqa: E402

CONDITION = Condition(month=5, hour=HOURS[1], audio_source="inaturalist")


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def copy_to_the_open_condition(url: str, version: str) -> None:
    """The 20:00 embeddings again under the all-left-out condition, the dashboard's default."""
    import psycopg

    with psycopg.connect(url) as c:
        src = c.execute("SELECT psm.find_condition(5, %s, 'inaturalist', NULL)", (HOURS[1],)).fetchone()[0]
        dst = c.execute("SELECT psm.ensure_condition(NULL, NULL, NULL, NULL)").fetchone()[0]
        c.execute("INSERT INTO psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
                  " SELECT model_version, %s, tile_id, dim, mu, var, var_sum FROM psm.embeddings"
                  " WHERE model_version = %s AND condition_id = %s", (dst, version, src))
        c.execute("ANALYZE psm.embeddings")


def store_text_query(url: str, version: str, ckpt: Path) -> int:
    from psm_db.catalog import store_query
    from psm_db.engine import make_engine, session_scope
    from psm_model import encode_query, load_checkpoint

    model, _ = load_checkpoint(ckpt)
    kind, mu, var = encode_query(model, text=TEXT)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return int(store_query(session=session, model_version=version, kind=kind, mu=mu, var=var, text=TEXT))
    finally:
        engine.dispose()


def server_side(url: str, query_id: int, repeat: int, out_dir: Path) -> dict[str, object]:
    from sqlalchemy.orm import Session
    from typer.testing import CliRunner

    from dashboard import deckmap, tilemap
    from psm_db.engine import make_engine
    from psm_db.maps.export import write_map
    from psm_db.maps.raster import rasterise_bounds
    from psm_db.maps.scores import TileScores
    from psm_db.ranking import map_scores
    from psm_db.settings import get_settings
    from worker.cli import app

    engine = make_engine(url)
    times: dict[str, list[float]] = {}
    sizes: dict[str, float] = {}

    def once() -> tuple[TileScores, str]:
        with Session(engine) as session:
            t = time.perf_counter()
            m = map_scores(session=session, query_id=query_id, zoom=1, condition=CONDITION)
            times.setdefault("scores (map_scores, stored query)", []).append(time.perf_counter() - t)
        scores = TileScores.from_map(m)
        for suffix in (".tif", ".geojson", ".parquet", ".png"):
            t = time.perf_counter()
            write_map(out_dir / f"m{suffix}", scores)
            times.setdefault(f"write {suffix}", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        raster = rasterise_bounds(scores.xmin, scores.ymin, scores.xmax, scores.ymax, scores.probability)
        times.setdefault("rasterise", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        chart = deckmap.deck(scores, raster, layer="probability", vmin=0.0, vmax=1.0)
        times.setdefault("deck (build)", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        payload = chart.to_json()
        times.setdefault("deck (JSON)", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        grid = tilemap.grid_bytes(scores, raster)
        times.setdefault("tile grid file", []).append(time.perf_counter() - t)
        sizes["grid_mb"] = len(grid) / 1e6
        return scores, payload

    for _ in range(repeat):
        scores, payload = once()
    engine.dispose()
    os.environ["PSM_DATABASE_URL"] = url
    get_settings.cache_clear()
    runner = CliRunner()
    args = ["map", "--query", str(query_id), "--region", "-91,40,-87.8,43.2", "--month", "5", "--hour",
            str(HOURS[1]), "--audio-source", "inaturalist", "--out", str(out_dir / "cli.tif")]
    for _ in range(repeat):
        t = time.perf_counter()
        r = runner.invoke(app, args)
        times.setdefault("psm map -> .tif (whole command)", []).append(time.perf_counter() - t)
        assert r.exit_code == 0, r.output
    return {"tiles": len(scores), "deck_json_mb": len(payload) / 1e6, **sizes,
            "medians": {k: _median(v) for k, v in times.items()}, "runs": repeat}


def browser(url: str, repeat: int) -> dict[str, float]:
    """The real dashboard in headless Chromium, every off-machine request refused."""
    import socket

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PSM_DATABASE_URL": url, "MPLBACKEND": "Agg", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "PSM_MAX_REGION_TILES": "200000"}
    env.pop("PSM_READER_DATABASE_URL", None)
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    log = (ROOT / "test-artifacts" / "map_bench_streamlit.log").open("wb")  # the dashboard's own log, for a failed step
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
                             "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, list[float]] = {}
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium",
                                  args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            for _ in range(repeat):
                ctx = b.new_context(viewport={"width": 1400, "height": 1600})
                ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(
                    ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")) else r.abort())
                page = ctx.new_page()
                try:
                    _drive(page, base, out)
                except Exception:
                    page.screenshot(path=str(ROOT / "test-artifacts" / "map_bench_failure.png"), full_page=True)
                    raise
                finally:
                    ctx.close()
            b.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    return {k: _median(v) for k, v in out.items()}


def _drive(page, base: str, out: dict[str, list[float]]) -> None:  # type: ignore[no-untyped-def]
    """One round in the page: Map pressed to the map drawn, a hover to its tooltip, a click to the tile."""
    from PIL import Image

    page.goto(base, wait_until="domcontentloaded")
    box = page.get_by_label("What sound?")
    box.wait_for(timeout=120_000)
    box.fill(TEXT)
    box.press("Enter")
    page.wait_for_timeout(3000)  # the default condition (everything left out) is embedded
    page.get_by_role("button", name="Map", exact=True).click()
    t0 = time.perf_counter()
    chart = page.locator('iframe[title="dashboard.tilemap.psm_tilemap"]').first  # the map component's frame
    chart.wait_for(timeout=120_000)
    inside = page.frame_locator('iframe[title="dashboard.tilemap.psm_tilemap"]').first
    while time.perf_counter() - t0 < 120:  # until the bitmap is on the canvas
        shot = Image.open(io.BytesIO(chart.screenshot())).convert("RGB").resize((60, 40))
        if len(set(shot.getdata())) > 20:
            break
    out.setdefault("click Map -> map drawn (s)", []).append(time.perf_counter() - t0)
    cb = inside.locator("canvas").first.bounding_box()
    assert cb is not None
    # whole CSS pixels, as a mouse on a standard screen gives: at 20k tiles a tile is 2-5 px wide, and
    # a fractional position (the canvas sits at y = 137.6) let the hover and the click land on either
    # side of a tile edge, so the click opened a neighbour of the hovered tile
    x, y = round(cb["x"] + cb["width"] * 0.37), round(cb["y"] + cb["height"] * 0.41)
    # from off the map, so the tooltip read is the one of the tile at (x, y): at 20k tiles and more a
    # tile is a few pixels wide, and a tooltip from a nearby start point named a neighbour
    page.mouse.move(cb["x"] - 30, cb["y"] - 30)
    page.wait_for_timeout(500)
    t1 = time.perf_counter()
    page.mouse.move(x, y)
    inside.locator(".deck-tooltip", has_text="tile ").wait_for(timeout=30_000)
    out.setdefault("hover -> tooltip (s)", []).append(time.perf_counter() - t1)
    tid = inside.locator(".deck-tooltip").inner_text().split()[1]
    t2 = time.perf_counter()
    page.mouse.click(x, y)
    try:
        page.get_by_text(re.compile(r"Tile \d+ at")).first.wait_for(timeout=120_000)
        out.setdefault("click tile -> tile panel (s)", []).append(time.perf_counter() - t2)
        shown = re.findall(r"Tile (\d+) at", page.inner_text("body"))
        # the panel's tile against the tooltip's: 1 when the click opened the hovered tile
        out.setdefault("click opened the hovered tile (1 = yes)", []).append(float(shown[:1] == [tid]))
        if shown[:1] != [tid]:
            print(f"the tooltip named tile {tid}, the click opened {shown}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - reported, with a picture of the page
        page.screenshot(path=str(ROOT / "test-artifacts" / "map_bench_click.png"), full_page=True)
        out.setdefault("click tile -> tile panel (s), not reached in 120 s", []).append(float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=317, help="grid side: side^2 tiles (317 -> 100,489)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--browser", action="store_true", help="also time the interactive map in Chromium")
    ap.add_argument("--browser-repeat", type=int, default=1, help="rounds in Chromium (a new page each)")
    args = ap.parse_args()
    base, url = create_db()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "bench.safetensors"
            version, n = seed(url, args.side, args.dim, ckpt)
            qid = store_text_query(url, version, ckpt)
            copy_to_the_open_condition(url, version)
            res = server_side(url, qid, args.repeat, Path(tmp))
            print(json.dumps(res, indent=2), flush=True)
            if args.browser:
                res["browser"] = browser(url, args.browser_repeat)
                print(json.dumps(res["browser"], indent=2))
            print(f"\n| step | median (s), {res['tiles']:,} tiles, {args.repeat} runs |\n|---|---:|")
            for k, v in {**res["medians"], **res.get("browser", {})}.items():  # type: ignore[dict-item]
                print(f"| {k} | {v:.3f} |")
            print(f"\ndeck JSON: {res['deck_json_mb']:.1f} MB")
    finally:
        drop_db(base, url)


if __name__ == "__main__":
    main()
