"""Streamlit AppTest of every page against the seeded database whose answer is known."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[2] / "dashboard"
TIMEOUT = 180


def _app(name: str = "app.py") -> AppTest:
    return AppTest.from_file(str(PAGES / name), default_timeout=TIMEOUT)


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _keys(at: AppTest) -> set[str]:
    keys = set()
    for kind in ("selectbox", "text_input", "radio", "checkbox", "slider", "toggle", "button"):
        keys |= {w.key for w in getattr(at, kind) if w.key}
    return keys


def _map_frames(at: AppTest) -> list:
    """The map component's frames on the page (dashboard.tilemap), with or without a map."""
    return [e for e in at.get("component_instance") if e.proto.component_name == "dashboard.tilemap.psm_tilemap"]


def _drawn(at: AppTest) -> int:
    """Maps and pictures on the page: the interactive map (the dashboard.tilemap component, when it
    is given a map) counts as one."""
    maps = [e for e in _map_frames(at) if json.loads(e.proto.json_args).get("deck")]
    return len(at.get("image")) + len(maps)


def _map(at: AppTest, text: str = "sound of insects") -> AppTest:
    at.text_input(key="query_text").input(text).run()
    return at.button(key="map_button").click().run()


def test_map_page_widgets_and_known_answer(dash_env):
    at = _app()
    at.run()
    _clean(at)
    assert {"model", "query_mode", "query_text", "region_mode", "region_set", "region_name", "temporal",
            "meta_month", "meta_month_out", "meta_hour", "meta_hour_out", "meta_src", "meta_src_out",
            "meta_cap", "meta_cap_out", "meta_zoom", "layer", "scale", "map_button"} <= _keys(at)
    assert not _drawn(at), "no map before Map is pressed"
    (frame,) = _map_frames(at)  # but the map's frame is there, empty, loading deck.gl's bundle
    empty = json.loads(frame.proto.json_args)
    assert empty["deck"] is None and empty["grid_url"] is None
    assert empty["height"] == 520 and empty["note"], "at the map's height: the first map needs no new layout"
    _map(at)
    _clean(at)
    assert _drawn(at) == 1
    assert any("Colour bar: Match probability" in c.value for c in at.caption)
    regions = at.dataframe[0].value
    assert regions.iloc[0]["region"] == "Marsh"
    assert list(regions["region"]) == ["Marsh", "City", "Farm"]
    tiles = at.dataframe(key="top_tiles").value
    assert (tiles["lon"] < -90.0).all(), "every top tile lies in Marsh"
    assert {b.key for b in at.get("download_button")} == {"dl_png", "dl_tif", "dl_geojson"}


def test_map_hour_shared_scale_and_tile_panel(dash_env):
    at = _app()
    at.run()
    at.checkbox(key="meta_month_out").uncheck()
    at.checkbox(key="meta_hour_out").uncheck()
    at.checkbox(key="meta_src_out").uncheck().run()
    at.selectbox(key="meta_month").set_value(5)
    at.selectbox(key="meta_src").set_value("inaturalist")
    at.slider(key="meta_hour").set_value(20)
    at.toggle(key="temporal").set_value(True)
    _map(at)
    _clean(at)
    assert any("shared across hours 6, 20" in c.value for c in at.caption)
    assert at.dataframe[0].value.iloc[0]["region"] == "Marsh"
    top20 = at.dataframe(key="top_tiles").value.iloc[0]["probability"]
    assert "play" in _keys(at)
    at.button(key="play").click().run()
    _clean(at)
    assert _drawn(at) == 1, "the animation ends on one map"
    at.slider(key="meta_hour").set_value(6).run()
    _clean(at)
    top6 = at.dataframe(key="top_tiles").value.iloc[0]["probability"]
    assert top20 > top6, "the seed makes insects in Marsh stronger at 20:00"
    first = int(at.dataframe(key="top_tiles").value.iloc[0]["tile_id"])
    at.selectbox(key="tile_choice").set_value(first).run()
    _clean(at)
    assert _drawn(at) == 4, "the map and the tile at zoom 1, 3 and 5"
    assert any(f"Tile {first}" in m.value for m in at.markdown)
    at.toggle(key="nearest_clips").set_value(True).run()
    _clean(at)
    assert len(at.get("audio")) == 3, "the three nearest training clips, each with a player"
    assert sum("km away" in m.value for m in at.markdown) == 3


def test_uncertainty_layer_and_stored_query(dash_env):
    at = _app()
    at.run()
    at.radio(key="query_mode").set_value("Stored query").run()
    _clean(at)
    at.radio(key="layer").set_value("var_sum")
    at.button(key="map_button").click().run()
    _clean(at)
    assert any("Uncertainty" in c.value for c in at.caption)
    assert any("match odds" in c.value for c in at.caption), "the colour range read as a change of match odds"
    assert at.dataframe[0].value.iloc[0]["region"] == "Marsh"


def test_not_embedded_offers_the_embed_job(dash_env, monkeypatch):
    import psycopg

    sent = []
    monkeypatch.setattr("dashboard.store._send_task", lambda name, job_id: sent.append((name, job_id)) or "task-1")
    at = _app()
    at.run()
    at.checkbox(key="meta_hour_out").uncheck().run()
    at.slider(key="meta_hour").set_value(12)
    _map(at)
    assert not at.exception
    assert at.error and "Not embedded yet" in at.error[0].value
    assert "queue_embed" in _keys(at)
    assert not _drawn(at), "no silent empty map"
    at.button(key="queue_embed").click().run()
    assert not at.exception
    assert sent and sent[0][0] == "psm.embed_region"
    with psycopg.connect(dash_env.db_url) as c:
        status, params = c.execute("SELECT status, params FROM psm.jobs WHERE id = %s", (sent[0][1],)).fetchone()
    assert status == "queued" and params["conditions"][0]["hour"] == 12
    assert at.get("progress") or any("queued" in i.value for i in at.info), "the job's progress is shown"


def test_typed_box_errors_and_map(dash_env):
    at = _app()
    at.run()
    at.radio(key="region_mode").set_value("Type a box").run()
    at.text_input(key="region_bbox").input("10, 20, 5").run()
    assert not at.exception
    assert "four numbers" in at.error[0].value
    at.text_input(key="region_bbox").input("-90.5, 40, -89.5, 41").run()
    _map(at)
    _clean(at)
    assert _drawn(at) == 1
    tiles = at.dataframe(key="top_tiles").value
    assert (tiles["lon"].between(-90.5, -89.5)).all()
    at.text_input(key="region_bbox").input("10, 10, 11, 11").run()  # no tiles there
    assert not at.exception
    assert "no tiles at zoom 1" in at.error[0].value and not _drawn(at), "no silent empty map"
    assert "queue_embed" in _keys(at)


def test_draw_and_upload_region_modes_render(dash_env):
    at = _app()
    at.run()
    at.radio(key="region_mode").set_value("Draw a box").run()
    _clean(at)
    assert any("Drag a box" in i.value for i in at.info)
    at.radio(key="region_mode").set_value("Upload GeoJSON").run()
    assert any("at most 200 MB per file" in i.value for i in at.info)
    _clean(at)
    assert any("Upload a Polygon or MultiPolygon: GeoJSON" in i.value and "GeoPackage" in i.value for i in at.info)
    at.radio(key="query_mode").set_value("Upload audio").run()
    _clean(at)
    assert any("Upload a WAV" in i.value for i in at.info)


def test_missing_checkpoint_is_a_clear_error(dash_env):
    at = _app()
    at.run()
    at.selectbox(key="model").set_value(dash_env.other_version).run()
    at.text_input(key="query_text").input("sound of insects").run()
    assert not at.exception
    assert "checkpoint cannot be loaded" in at.error[0].value


def test_database_down_is_a_clear_error(monkeypatch):
    from psm_db.settings import get_settings

    monkeypatch.setenv("PSM_DATABASE_URL", "postgresql://psm@127.0.0.1:1/psm")
    get_settings.cache_clear()
    try:
        at = _app()
        at.run()
        assert not at.exception
        assert "Cannot reach the database" in at.error[0].value
    finally:
        get_settings.cache_clear()


def test_metrics_page(dash_env, tmp_path):
    import numpy as np

    at = _app("views/metrics.py")
    at.run()
    _clean(at)
    assert at.toggle(key="compare").value is True
    assert {"metrics_model_0", "metrics_model_1", "m0_run", "m1_run"} <= _keys(at)
    table = at.dataframe[0].value
    assert {"zoom", "with text", "metadata"} <= set(table.columns.get_level_values(0))
    flat = {" ".join(map(str, c)).strip() for c in table.columns}
    assert {"I2A R@10%", "A2I R@10%", "I2A median rank", "A2I median rank", "I2A oracle R@10%"} <= flat
    assert len(table) == 3 * 2 * 4
    assert {"plot_zoom", "plot_text", "plot_meta"} <= _keys(at)
    at.selectbox(key="plot_text").set_value(True).run()
    _clean(at)
    assert len(at.get("image")) == 2, "recall against k% and the rank histogram"
    assert any("No per-query ranks stored for: baseline-missing" in c.value for c in at.caption)
    # the baseline's run kept its ranks on disk (psm eval --out): point the page at them
    at.text_input(key="m1_ranks").input(str(tmp_path / "missing.npz")).run()
    assert not at.exception and "No file" in at.error[0].value
    ranks = tmp_path / "ranks.npz"
    np.savez(ranks, **{"model/i2a/z1/text/all": np.arange(1, 401), "model/a2i/z1/text/all": np.arange(1, 401)})
    at.text_input(key="m1_ranks").input(str(ranks)).run()
    _clean(at)
    assert len(at.get("image")) == 2
    assert not any("No per-query ranks stored" in c.value for c in at.caption)


def test_jobs_page(dash_env):
    at = _app("views/jobs.py")
    at.run()
    assert not at.exception
    history = at.dataframe[0].value
    assert set(history["kind"]) == {"embed_region", "train"}
    assert any("CUDA out of memory" in e.value for e in at.error), "failed jobs show their error"
    assert at.get("progress"), "running jobs show a progress bar"
    assert at.code and ("started" in at.code[0].value or "chunk" in at.code[0].value)


def test_data_page(dash_env):
    at = _app("views/data.py")
    at.run()
    _clean(at)
    assert {m.label for m in at.metric} >= {"tiles", "embeddings", "model versions"}
    assert len(at.get("image")) == 4, "the tile at zoom 1, 3, 5 and the spectrogram"
    assert at.get("audio")
    assert any("Caption" in m.value for m in at.markdown)


def test_data_page_reads_a_built_dataset(dash_env, tmp_path):
    from psm_model.world.build import BuildConfig, build_world

    root = tmp_path / "world"
    build_world(root, BuildConfig(seed=0, samples=20, image_size=32, clip_seconds=1.0, shard_size=10, workers=1))
    at = _app("views/data.py")
    at.run()
    at.radio(key="data_source").set_value("a dataset folder (psm world build)").run()
    at.text_input(key="ds_root").input(str(tmp_path / "nope")).run()
    assert not at.exception and "not a world dataset" in at.error[0].value
    at.text_input(key="ds_root").input(str(root)).run()
    _clean(at)
    assert any(m.label == "samples" and m.value == "20" for m in at.metric)
    assert len(at.get("image")) == 4 and at.get("audio")
    assert any("Caption" in m.value for m in at.markdown)


@pytest.mark.parametrize("page", ["views/status.py"])
def test_status_page(dash_env, page):
    at = _app(page)
    at.run()
    assert not at.exception


def _wav(seconds: float, rate: int = 16_000) -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_audio_uploads_in_the_page(dash_env):
    at = _app()
    at.run()
    at.radio(key="query_mode").set_value("Upload audio").run()
    limits = " ".join(i.value for i in at.info)
    assert "at most 200 MB per file" in limits and "0.5 s to 10 min long" in limits, limits
    for name, data, message in (("notes.wav", b"plain text, not audio\n" * 40, "not an audio file we can read"),
                                ("empty.wav", b"", "is empty"),
                                ("field.wav", _wav(2 * 3600, rate=1000), "2:00:00 long; the limit is 10:00"),
                                ("blip.wav", _wav(0.01), "0.01 s long; the shortest clip accepted is 0.5 s")):
        at.file_uploader(key="query_audio").set_value((name, data, "audio/wav")).run()
        assert not at.exception, name
        assert message in at.error[0].value, (name, at.error[0].value)
        assert not at.get("audio"), "a refused file gets no player"
    at.file_uploader(key="query_audio").set_value(("crickets.wav", _wav(2.0), "audio/wav")).run()
    _clean(at)
    assert at.get("audio"), "the uploaded clip has a player"
    at.button(key="map_button").click().run()
    _clean(at)
    assert _drawn(at) == 1 and at.dataframe[0].value.shape[0] == 3


MARKDOWN_QUERY = "[x](http://evil.example/a) ![](http://evil.example/p.png) *loud* www.evil.example"


def _rendered(markdown: str) -> str:
    """HTML of CommonMark text (Streamlit renders captions and messages as GitHub-flavoured Markdown)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").render(markdown)


def test_markdown_in_a_query_is_shown_as_typed(dash_env):
    """The map caption rendered the query's Markdown: a link, and an image fetched from anywhere."""
    from dashboard.widgets import plain

    assert "<a href" in _rendered(MARKDOWN_QUERY) and "<img" in _rendered(MARKDOWN_QUERY)  # what it did
    at = _app()
    at.run()
    _map(at, MARKDOWN_QUERY)
    _clean(at)
    assert _drawn(at) == 1
    titles = [c.value for c in at.caption if "evil" in c.value]
    assert len(titles) == 1, [c.value for c in at.caption]
    title = titles[0]
    assert plain(MARKDOWN_QUERY) in title
    html = _rendered(title)
    assert "<a" not in html and "<img" not in html and "<em>" not in html, html
    # what shows is the text as typed: each escape is a backslash before a punctuation character
    assert MARKDOWN_QUERY in re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", title)
    for text in ("[x](http://e.x)", "![](https://e.x/p.png)", "*a* _b_ `c` <b>d</b> # e | f ~g~ $h$",
                 ":red[i] j@k.org www.l.org", "back\\slash"):
        assert "<a" not in _rendered(plain(text)) and "<img" not in _rendered(plain(text)), text
        assert re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", plain(text)) == text


def test_geojson_uploads_in_the_page(dash_env):
    at = _app()
    at.run()
    at.radio(key="region_mode").set_value("Upload GeoJSON").run()
    for data, message in ((b"{oops", "not valid JSON"),
                          (b'{"type": "Point", "coordinates": [-90.5, 40.5]}', "must be a Polygon or MultiPolygon, got Point"),
                          (b'{"type": "Polygon", "coordinates": [[[0,0],[1,1],[1,0],[0,1],[0,0]]]}', "Self-intersection")):
        at.file_uploader(key="region_upload").set_value(("region.geojson", data, "application/geo+json")).run()
        assert not at.exception
        assert message in at.error[0].value
    marsh = b'{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[-91, 40], [-90, 40], [-90, 41], [-91, 41], [-91, 40]]]}}'
    at.file_uploader(key="region_upload").set_value(("marsh.geojson", marsh, "application/geo+json")).run()
    _map(at)
    _clean(at)
    assert _drawn(at) == 1
    assert (at.dataframe(key="top_tiles").value["lon"] < -90).all()


def test_jobs_page_starts_training(dash_env, monkeypatch, tmp_path):
    sent = []
    monkeypatch.setattr("dashboard.store._send_task", lambda name, job_id: sent.append((name, job_id)) or "task-2")
    at = _app("views/jobs.py")
    at.run()
    at.text_input(key="train_dir").input(str(tmp_path / "nowhere"))
    submit = next(b for b in at.get("form_submit_button") if b.label == "Start training")
    submit.click().run()
    assert not at.exception
    assert any("Training was not started" in e.value and "does not exist" in e.value for e in at.error)
    assert not sent, "a refused request is not queued"
    at.text_input(key="train_dir").input(str(tmp_path))
    next(b for b in at.get("form_submit_button") if b.label == "Start training").click().run()
    assert not at.exception
    assert sent and sent[-1][0] == "psm.train"
    assert any("Queued train job" in s.value for s in at.success)


# --------------------------------------------------------------------------- real imagery


def _lonlat_tif(path: Path, bounds: tuple[float, float, float, float], rgb=(180, 40, 90), px: int = 400) -> Path:
    import numpy as np
    import rasterio
    from rasterio.transform import from_bounds

    data = np.stack([np.full((px, px), v, np.uint8) for v in rgb])
    with rasterio.open(path, "w", driver="GTiff", width=px, height=px, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=from_bounds(*bounds, px, px)) as ds:
        ds.write(data)
    return path


def test_tile_panel_shows_the_real_imagery_of_geotiff_tiles(dash_env, tmp_path):
    import psycopg
    import streamlit as st

    tif = _lonlat_tif(tmp_path / "marsh.tif", (-91.0, 40.0, -90.0, 41.0))
    source = f"geotiff:{tif}"
    with psycopg.connect(dash_env.db_url) as c:  # the Marsh tiles came from a GeoTIFF
        c.execute("UPDATE psm.tiles SET imagery_source = %s WHERE imagery_source = 'sentinel'"
                  " AND ST_X(centroid) < -90", (source,))
    st.cache_data.clear()
    try:
        at = _app()
        at.run()
        _map(at)
        first = int(at.dataframe(key="top_tiles").value.iloc[0]["tile_id"])
        at.selectbox(key="tile_choice").set_value(first).run()
        _clean(at)
        assert _drawn(at) == 4, "the map and the tile's real imagery at three extents"
        from dashboard.widgets import plain

        assert any(plain(f"Imagery read from {tif}") in c.value for c in at.caption)  # shown as typed
        captions = [i.proto.imgs[0].caption for i in at.get("image")]
        assert captions == ["zoom 1 · GeoTIFF", "zoom 3 · GeoTIFF", "zoom 5 · GeoTIFF"]
        # the file is gone: say so, and draw no synthetic stand-in
        tif.unlink()
        st.cache_data.clear()
        at.run()
        assert not at.exception
        assert any("cannot be shown" in w.value and "not on this machine" in w.value for w in at.warning)
        assert _drawn(at) == 1
    finally:
        with psycopg.connect(dash_env.db_url) as c:
            c.execute("UPDATE psm.tiles SET imagery_source = 'sentinel' WHERE imagery_source = %s", (source,))
        st.cache_data.clear()


def _submit_embed(at: AppTest) -> AppTest:
    return next(b for b in at.get("form_submit_button") if b.label == "Queue embed_region").click().run()


def test_jobs_page_queues_geotiff_and_folder_jobs(dash_env, monkeypatch, tmp_path):
    import psycopg

    sent = []
    monkeypatch.setattr("dashboard.store._send_task", lambda name, job_id: sent.append((name, job_id)) or "task-3")
    tif = _lonlat_tif(tmp_path / "scene.tif", (5.0, 45.0, 5.1, 45.1), px=200)
    folder = tmp_path / "tiles"
    folder.mkdir()
    _lonlat_tif(folder / "a.tif", (5.0, 45.0, 5.1, 45.1), px=100)
    with psycopg.connect(dash_env.db_url) as c:
        started = c.execute("SELECT now()").fetchone()[0]
    at = _app("views/jobs.py")
    at.run()
    assert not at.exception
    at.text_input(key="embed_region_box").input("5.02, 45.02, 5.05, 45.05")
    at.radio(key="embed_imagery").set_value("geotiff")
    for path, bands, message in (("", "", "Give the GeoTIFF / COG"), (str(tmp_path / "none.tif"), "", "does not exist"),
                                 (str(tif), "1, 2", "one or three 1-based band numbers"),
                                 (str(tif), "4, 3, 2", "has 3 band(s)")):
        at.text_input(key="embed_imagery_path").input(path)
        at.text_input(key="embed_bands").input(bands)
        _submit_embed(at)
        assert not at.exception
        assert any(message in e.value for e in at.error), (message, [e.value for e in at.error])
    assert not sent, "a refused request is not queued"
    at.text_input(key="embed_bands").input("3, 2, 1")
    at.slider(key="embed_min_valid").set_value(0.8)
    _submit_embed(at)
    assert not at.exception
    at.radio(key="embed_imagery").set_value("folder")
    at.text_input(key="embed_imagery_path").input(str(folder))
    at.text_input(key="embed_bands").input("")
    _submit_embed(at)
    assert not at.exception
    assert [s[0] for s in sent] == ["psm.embed_region"] * 2
    assert sum("Queued embed_region job" in s.value for s in at.success) == 1
    with psycopg.connect(dash_env.db_url) as c:
        geo, fold = (c.execute("SELECT status, params->'imagery' FROM psm.jobs WHERE id = %s", (j,)).fetchone()
                     for _, j in sent)
    assert geo[0] == fold[0] == "queued"
    assert (geo[1]["kind"], geo[1]["path"], geo[1]["bands"], geo[1]["min_valid"]) == ("geotiff", str(tif), [3, 2, 1], 0.8)
    assert (fold[1]["kind"], fold[1]["path"], fold[1]["bands"]) == ("folder", str(folder), None)
    with psycopg.connect(dash_env.db_url) as c:  # keep the job history of the other tests as seeded
        c.execute("DELETE FROM psm.jobs WHERE created_at >= %s AND kind = 'embed_region'", (started,))


def test_a_click_on_the_map_component_opens_its_tile_and_rings_it(dash_env):
    """The map component's value (what its page sends on a click) chooses the tile: its panel opens and
    the component is told to ring it. A second click on another tile wins again."""
    at = _app()
    at.run()
    _map(at)
    _clean(at)
    (comp,) = _map_frames(at)
    args = json.loads(comp.proto.json_args)
    assert set(args) >= {"deck", "grid_url", "height", "chosen"} and args["chosen"] is None
    assert [layer["id"] for layer in json.loads(args["deck"])["layers"]] == ["scores", "coast", "outlines"]
    tiles = at.dataframe(key="top_tiles").value
    first, second = int(tiles.iloc[0]["tile_id"]), int(tiles.iloc[1]["tile_id"])
    for tile, clicks in ((first, 1), (second, 2)):
        at.session_state["deck_map"] = {"tile": float(tile), "clicks": clicks}
        at.run()
        _clean(at)
        assert any(f"**Tile {tile}** at" in m.value for m in at.markdown), tile
        (comp,) = _map_frames(at)
        ring = json.loads(comp.proto.json_args)["chosen"]
        row = tiles[tiles["tile_id"] == tile].iloc[0]
        assert ring["tile"] == tile and (ring["lon"], ring["lat"]) == pytest.approx((row["lon"], row["lat"]), abs=1e-6)
