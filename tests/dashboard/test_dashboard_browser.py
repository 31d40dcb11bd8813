"""A real browser: Streamlit in a subprocess, driven by headless Chromium through Playwright."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
TILEMAP = "dashboard.tilemap.psm_tilemap"
"""The map component's name, which Streamlit gives its frame as the title."""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(seeded, tmp_path, as_role, *options: str, **env_extra: str):  # type: ignore[no-untyped-def]
    """``streamlit run dashboard/app.py`` on a free port against the seeded database; yields its base URL."""
    port = _free_port()
    env = {**os.environ, "PSM_DATABASE_URL": seeded.db_url, "PSM_READER_DATABASE_URL": as_role(seeded.db_url, "psm_reader"),
           "MPLBACKEND": "Agg", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **env_extra}
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--global.developmentMode", "false", *options],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("streamlit did not start: " + (tmp_path / "streamlit.log").read_text()[-2000:])
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def server(seeded, tmp_path, as_role):
    """The dashboard against the seeded database."""
    with _serve(seeded, tmp_path, as_role) as base:
        yield base


def _errors(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.inner_text() for e in page.locator(
        '[data-testid="stException"], [data-testid="stAlertContentError"]').all()]


def _settle(page, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until the script run is over (no running indicator for a moment)."""
    page.wait_for_timeout(300)
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        running = page.locator('[data-testid="stStatusWidget"]').count()
        quiet = quiet + 1 if running == 0 else 0
        page.wait_for_timeout(250)


def test_map_in_a_real_browser(server, artifacts, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            page.goto(f"{server}/", wait_until="domcontentloaded")  # the map is the default page
            text = page.get_by_label("What sound?")
            expect(text).to_be_visible(timeout=90_000)
            text.fill("sound of insects")
            text.press("Enter")
            _settle(page)
            page.get_by_role("button", name="Map", exact=True).click()
            caption = page.get_by_text("Colour bar: Match probability")
            expect(caption).to_be_visible(timeout=90_000)
            expect(page.frame_locator(f'iframe[title="{TILEMAP}"]').first.locator("canvas").first).to_be_visible(
                timeout=60_000)
            assert _errors(page) == []

            # an embedded condition (May, iNaturalist, 20:00), then change the hour to 06:00
            for label in ("leave out month", "leave out hour", "leave out audio source"):
                page.get_by_text(label, exact=True).click()
                _settle(page)
            expect(page.get_by_text("20:00 · inaturalist").first).to_be_visible(timeout=60_000)
            thumb = page.get_by_role("slider").first
            thumb.focus()
            for _ in range(14):
                thumb.press("ArrowLeft")
            _settle(page)
            expect(page.get_by_text("May · 06:00 · inaturalist").first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Colour bar: Match probability")).to_be_visible()
            expect(page.frame_locator(f'iframe[title="{TILEMAP}"]').first.locator("canvas").first).to_be_visible(
                timeout=60_000)
            assert _errors(page) == [], _errors(page)
            top = page.locator('[data-testid="stDataFrame"]').first
            expect(top).to_be_visible()
            page.screenshot(path=str(artifacts / "dashboard_map.png"), full_page=True)

            # bad uploads: a text file as audio, a point as the region
            page.get_by_text("Upload audio", exact=True).click()
            _settle(page)
            bad = tmp_path / "notes.wav"
            bad.write_text("not audio at all\n" * 20)
            page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(bad))
            expect(page.get_by_text("is not an audio file we can read")).to_be_visible(timeout=60_000)
            page.get_by_text("Upload GeoJSON", exact=True).click()
            _settle(page)
            point = tmp_path / "point.geojson"
            point.write_text('{"type": "Point", "coordinates": [-90.5, 40.5]}')
            page.locator('[data-testid="stFileUploader"] input[type="file"]').last.set_input_files(str(point))
            expect(page.get_by_text("must be a Polygon or MultiPolygon, got Point")).to_be_visible(timeout=60_000)
            assert not page.locator('[data-testid="stException"]').count()

            # the metrics page renders its tables and plots in the browser too
            page.goto(f"{server}/metrics", wait_until="domcontentloaded")
            expect(page.get_by_text("Recall against k%")).to_be_visible(timeout=60_000)
            _settle(page)
            assert _errors(page) == [], _errors(page)
            page.screenshot(path=str(artifacts / "dashboard_metrics.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(artifacts / "dashboard_map_failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def test_interactive_map_works_offline_with_hover_and_click(server, artifacts):
    """The map component with every request off 127.0.0.1 refused: drawn, the tooltip of the tile under the
    pointer on hover, a click opens that tile and changes only its ring."""
    import io
    import re

    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    refused: list[str] = []
    fetched: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1600})

        def offline(route) -> None:  # type: ignore[no-untyped-def]
            url = route.request.url
            fetched.append(url)
            if url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
                route.continue_()
            else:
                refused.append(url)
                route.abort()

        context.route("**/*", offline)
        page = context.new_page()
        try:
            page.goto(f"{server}/", wait_until="domcontentloaded")
            text = page.get_by_label("What sound?")
            expect(text).to_be_visible(timeout=90_000)
            text.fill("sound of insects")
            text.press("Enter")
            _settle(page)
            # before Map: the frame is there, its deck draws the warm-up map, and nothing shows
            chart = page.locator(f'iframe[title="{TILEMAP}"]').first
            expect(chart).to_be_visible(timeout=90_000)
            early = chart.element_handle().content_frame()
            assert early is not None
            early.wait_for_function("performance.getEntriesByName('psm:warm-up').length > 0", timeout=60_000)
            layers = "() => window.psmTilemap.deck.props.layers.map(l => l.id + ':' + l.constructor.layerName)"
            warm_layers = early.evaluate(layers)
            early.evaluate("() => { window.psmTilemap.deck.psmMark = 'warm'; }")
            blank = Image.open(io.BytesIO(chart.screenshot())).convert("RGB")
            grey = np.asarray(blank, dtype=int)
            assert np.ptp(grey, axis=2).max() <= 8, "the warm-up map showed colour; only the grey note may show"
            page.get_by_role("button", name="Map", exact=True).click()
            inside = page.frame_locator(f'iframe[title="{TILEMAP}"]').first
            canvas = inside.locator("canvas").first
            expect(canvas).to_be_visible(timeout=60_000)
            frame = chart.element_handle().content_frame()
            assert frame is not None
            _settle(page)
            page.wait_for_timeout(1500)  # the bitmap texture decodes after the first frame
            shot = Image.open(io.BytesIO(chart.screenshot(path=str(artifacts / "dashboard_deck_chart.png")))).convert("RGB")
            colours = len(set(shot.resize((120, 70)).getdata()))
            assert colours > 20, "the score raster was not drawn"
            # the map is the warm-up's deck with its layers' data: the same layer types, no new deck
            assert frame.evaluate(layers) == warm_layers == ["scores:BitmapLayer", "coast:PathLayer", "outlines:PathLayer"]
            assert frame.evaluate("() => window.psmTilemap.deck.psmMark") == "warm"
            box = canvas.bounding_box()
            assert box is not None
            x, y = round(box["x"] + box["width"] * 0.5), round(box["y"] + box["height"] * 0.5)
            page.mouse.move(x - 5, y - 5)
            page.mouse.move(x, y)
            tooltip = inside.locator(".deck-tooltip")
            expect(tooltip).to_contain_text("tile ", timeout=20_000)
            text = tooltip.inner_text()
            hovered = re.search(r"tile (\d+)", text)
            place = re.search(r"([-\d.]+) to ([-\d.]+)°N, ([-\d.]+) to ([-\d.]+)°E", text)
            assert hovered and place and "probability" in text, text
            # the tile named is the one under the pointer: the view's own projection of the pointer
            # lies inside the tile's footprint (rounded to 4 decimals in the tooltip)
            lon, lat = frame.evaluate("([x, y]) => window.psmTilemap.deck.getViewports()[0].unproject([x, y])",
                                      [x - box["x"], y - box["y"]])[:2]
            south, north, west, east = (float(v) for v in place.groups())
            assert west - 1e-4 <= lon <= east + 1e-4 and south - 1e-4 <= lat <= north + 1e-4, (lon, lat, text)
            # the tile grid came as a binary file the dashboard serves; no layer carries the tiles
            assert any(re.search(r"/media/[^/]+\.bin$", u) for u in fetched), fetched
            page.mouse.move(box["x"] - 20, box["y"] - 20)  # no tooltip in either picture
            page.wait_for_timeout(500)
            before = np.asarray(Image.open(io.BytesIO(chart.screenshot())).convert("RGB"), dtype=np.int16)
            page.mouse.click(x, y)
            expect(page.get_by_text(f"Tile {hovered.group(1)} at")).to_be_visible(timeout=60_000)
            assert _errors(page) == [], _errors(page)
            page.mouse.move(box["x"] - 20, box["y"] - 20)
            _settle(page)
            page.wait_for_timeout(1500)
            after = np.asarray(Image.open(io.BytesIO(chart.screenshot(path=str(artifacts / "dashboard_deck_clicked.png"))))
                               .convert("RGB"), dtype=np.int16)
            # A click adds the ring around the tile and changes nothing else, and the view stays
            # where it was (the page keeps the user's pan and zoom when the same map is redrawn)
            assert before.shape == after.shape
            changed = np.abs(after - before).max(axis=2) > 40
            cx, cy = int(x - box["x"]), int(y - box["y"])
            ring = np.zeros_like(changed)
            ring[max(0, cy - 16):cy + 17, max(0, cx - 16):cx + 17] = True
            assert changed[ring].any(), "no ring was drawn around the clicked tile"
            assert changed[~ring].mean() < 0.001, f"{changed[~ring].mean():.2%} of the map changed away from the ring"
            page.screenshot(path=str(artifacts / "dashboard_interactive_map.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(artifacts / "dashboard_interactive_map_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert all("127.0.0.1" not in u for u in refused)


def _uploads_held(base: str) -> int:
    """Bytes the server's upload manager holds (Streamlit's own metrics endpoint)."""
    import re

    with urllib.request.urlopen(f"{base}/_stcore/metrics", timeout=10) as r:
        text = r.read().decode()
    held = re.findall(r'^cache_memory_bytes\{cache_type="UploadedFileManager"[^}]*\} (\d+)', text, re.M)
    return sum(int(n) for n in held)


def test_a_closed_sessions_upload_is_let_go(seeded, tmp_path, as_role):
    """Streamlit forgets a closed session after its reconnect time without shutting it down, so its
    uploads stayed for the server's life; the dashboard's housekeeping shuts such sessions down."""
    import numpy as np
    import soundfile as sf
    from playwright.sync_api import expect, sync_playwright

    clip = tmp_path / "field_recording.wav"
    rng = np.random.default_rng(1)
    sf.write(clip, (0.1 * rng.standard_normal((20 * 16_000, 2))).astype(np.float32), 16_000, subtype="FLOAT")
    with _serve(seeded, tmp_path, as_role, "--server.disconnectedSessionTTL", "2",
                PSM_DASHBOARD_HOUSEKEEPING_S="1") as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            page.goto(f"{base}/", wait_until="domcontentloaded")
            expect(page.get_by_text("Upload audio", exact=True)).to_be_visible(timeout=90_000)
            page.get_by_text("Upload audio", exact=True).click()
            _settle(page)
            page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(clip))
            expect(page.locator('[data-testid="stAudio"]').first).to_be_visible(timeout=120_000)
            _settle(page)
            assert _errors(page) == [], _errors(page)
            held = _uploads_held(base)
            assert held >= clip.stat().st_size, held
        finally:
            page.close()
            browser.close()
        deadline = time.monotonic() + 60
        while _uploads_held(base) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _uploads_held(base) == 0, "the closed session's upload is still held"
