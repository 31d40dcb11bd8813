"""Soundscape map page: score every tile of a region for a text or audio query and draw the map."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import deckmap, exports, mapview, store, tilemap, widgets
from dashboard.mapview import TileScores
from psm_db.errors import NotEmbeddedError
from psm_db.settings import get_settings

LAYER_LABELS = {"probability": "Match probability", "var_sum": "Uncertainty (sum of σ²)"}
SCALES = ("shared across hours", "this map only", "fixed 0 to 1")
INTERACTIVE_MAX_TILES = 150_000  # larger maps are shown as the PNG only
MAP_HEIGHT = 520
"""The interactive map's frame height, in pixels."""


def embedded_hours(conds: list[dict[str, Any]], meta: widgets.Meta) -> list[int]:
    """Hours embedded for the same month, sources as ``meta`` (for the temporal map)."""
    return sorted({
        int(c["hour"]) for c in conds
        if c["hour"] is not None and c["month"] == meta.month and c["audio_source"] == meta.audio_source
        and c["caption_source"] == meta.caption_source
    })


def fetch(model: dict[str, Any], query: store.QueryKey, region: widgets.RegionChoice, meta: widgets.Meta) -> TileScores:
    """Scores of every tile of the region under ``meta`` (cached)."""
    return store.map_scores(model["version"], query, region.wkt, meta.condition, meta.zoom)


def map_key(model: dict[str, Any], query: store.QueryKey, region: widgets.RegionChoice, meta: widgets.Meta) -> str:
    """A cache key that names one map's scores exactly (model, query, region, condition)."""
    return f"{model['version']}|{query.digest}|{region.wkt}|{meta}"


@st.cache_data(max_entries=64, show_spinner=False)
def raster_for(key: str, _scores: TileScores, layer: str) -> mapview.Raster:
    """The map's raster of one layer, cached by ``key`` (which names the scores)."""
    return mapview.rasterise(_scores, _scores.layer(layer))


@st.cache_data(max_entries=8, show_spinner=False)
def grid_for(key: str, _scores: TileScores, _raster: mapview.Raster) -> bytes:
    """The interactive map's tile grid (dashboard.tilemap.grid_bytes), cached by ``key`` (which names
    the scores): a click or a widget change reruns the page with the same map."""
    return tilemap.grid_bytes(_scores, _raster)


@st.cache_data(max_entries=64, show_spinner=False)
def render(key: str, _scores: TileScores, layer: str, vmin: float, vmax: float, title: str,
           outlines: tuple[tuple[str, str], ...], marker: tuple[float, float] | None) -> tuple[bytes, mapview.Raster]:
    """The map PNG and its raster, cached by ``key`` (which names the scores) and the drawing options."""
    import shapely

    raster = raster_for(key, _scores, layer)
    png = mapview.render_png(raster, vmin=vmin, vmax=vmax, layer=layer, title=title,
                             outlines=[(n, shapely.from_wkt(w)) for n, w in outlines], marker=marker)
    return png, raster


def odds_note(layer: str, model: dict[str, Any], vmin: float, vmax: float) -> str:
    """What the uncertainty layer's colour range means for matching, for a PCME++ model.

    A tile's sum of sigma^2 enters its match logit ``-a * CSD + b`` as ``-a * sum``, so from the
    bottom to the top of the colour bar the variance alone divides the match odds by
    ``exp(a * (vmax - vmin))``. Empty for the other layers and for InfoNCE models, whose scores
    ignore the variance.
    """
    a = model.get("match_a")
    if layer != "var_sum" or model.get("loss") != "pcmepp" or not a or not vmax >= vmin:
        return ""
    return (f" From the bottom to the top of the bar, σ² alone lowers a tile's match odds "
            f"{math.exp(float(a) * (vmax - vmin)):.3g}-fold.")


def limits(layer: str, scale: str, maps: list[TileScores]) -> tuple[float, float]:
    """The colour-scale limits: shared over every map given, or fixed for probabilities."""
    if scale == SCALES[2] and layer == "probability":
        return 0.0, 1.0
    return mapview.shared_limits(m.layer(layer) for m in maps)


def not_embedded(model: dict[str, Any], region: widgets.RegionChoice, meta: widgets.Meta, err: Exception) -> None:
    """The "not embedded yet" panel: the reason, and a button that queues the embedding job."""
    st.error(f"Not embedded yet: {widgets.plain(err)}")
    key = f"embed_{model['version']}_{meta}_{region.label}"
    if st.button("Queue embed_region for this condition", key="queue_embed", type="primary"):
        from dashboard import samples

        try:
            job_id = store.submit_embed_region(model["version"], region.wkt, meta, samples.world_seed(model))
        except (ValueError, LookupError, FileNotFoundError) as e:
            st.error(f"The embedding job was not queued: {widgets.plain(e)}")
            return
        except Exception as e:  # the broker may be down: say so, the user can start it
            st.error(f"Could not queue the embedding job: {widgets.plain(e)}. Is the broker running "
                     "(`psm services up`)?")
            return
        st.session_state[key] = str(job_id)
    job_id = st.session_state.get(key)
    if job_id:
        job_progress(job_id)


@st.fragment(run_every=2.0)
def job_progress(job_id: str) -> None:
    """A live progress bar of one job (re-polled every 2 s)."""
    rows = [j for j in store.jobs(200) if str(j["id"]) == str(job_id)]
    if not rows:
        st.info(f"Job {job_id} is queued; waiting for a worker to pick it up.")
        return
    j = rows[0]
    frac = (j["done"] / j["total"]) if j["total"] else 0.0
    st.progress(min(max(frac, 0.0), 1.0), text=f"embed_region {j['status']}: {j['done']} / {j['total']} tiles")
    if j["status"] == "failed":
        st.error(f"The job failed: {widgets.plain(j['error'])}")
    elif j["status"] == "succeeded":
        st.success("Embedded. Press **Map** again.")
        for cached in (store.conditions, store.region_tile_count, store.region_tiles, store.zooms):
            cached.clear()  # type: ignore[attr-defined]
        store.clear_maps()


def tile_panel(model: dict[str, Any], scores: TileScores, idx: int) -> None:
    """A chosen tile: its image at zoom 1, 3 and 5, its scores and the nearest training clips."""
    from dashboard import samples

    tid = int(scores.tile_id[idx])
    lat, lon = float(scores.lat[idx]), float(scores.lon[idx])
    rank = int(np.sum(scores.probability > scores.probability[idx])) + 1
    st.markdown(f"**Tile {tid}** at {lat:.4f}°N, {lon:.4f}°E: match probability "
                f"**{scores.probability[idx]:.4f}** (rank {rank} of {len(scores)}), CSD {scores.distance[idx]:.4f}, "
                f"sum of σ² {scores.var_sum[idx]:.4f}")
    seed = samples.world_seed(model)
    try:
        detail = store.tile_detail(tid)
    except LookupError:
        detail = {}
    gsd = float(detail.get("gsd") or 10.0)
    ref = store.tile_raster(detail["imagery_source"]) if detail.get("imagery_source") else None
    if ref is None:  # rendered by the synthetic world: draw it again
        imgs, label = list(samples.tile_images(seed, lat, lon, (1, 3, 5), 128, gsd)), ""
    else:  # real imagery: read the tile (and its surroundings) from the raster it was embedded from
        side = gsd * int(detail.get("size_px") or 256)
        try:
            imgs = store.real_tile_images(ref, lat, lon, tuple(side * z for z in (1, 3, 5)), 128)
        except (FileNotFoundError, ValueError) as e:
            st.warning(f"The imagery of this tile cannot be shown: {widgets.plain(e)}")
            imgs = []
        label = " · GeoTIFF" if ref.kind == "geotiff" else " · tile folder"
        st.caption(widgets.plain(f"Imagery read from {ref.path}" + (f", bands {ref.bands}" if ref.bands else "") + "."))
    cols = st.columns(3)
    for col, img, z in zip(cols, imgs, (1, 3, 5), strict=False):
        col.image(img, caption=f"zoom {z}{label}", width=160)
    if st.toggle("Show the nearest training clips", key="nearest_clips"):
        root = samples.model_dataset_dir(model["checkpoint_path"])
        if root is not None:  # the clips the model was trained on, read from its dataset folder
            found = [(samples.dataset_sample(root, "train", i), km) for i, km in
                     samples.nearest_dataset_samples(root, lat, lon, k=3)]
            st.caption(widgets.plain(f"From the training split of {root}."))
        else:  # the dataset is not on this machine: draw the same world's samples instead
            found = [(samples.realise_sample(seed, i), km) for i, km in samples.nearest_samples(seed, lat, lon, k=3)]
            st.caption(f"The model's dataset folder is not on this machine; clips drawn from world {seed}.")
        for s, km in found:
            st.markdown(f"Clip #{s['index']}, {km:.1f} km away ({s['audio_source']}, "
                        f"{widgets.MONTHS[s['month'] - 1]} {s['hour']:02d}:00): *{widgets.plain(s['caption'])}*")
            st.audio(s["wav"], format="audio/wav")


def downloads(scores: TileScores, raster: mapview.Raster, png: bytes | Callable[[], bytes], layer: str,
              label: str) -> None:
    """PNG, GeoTIFF (EPSG:4326) and GeoJSON exports of the current map."""
    c1, c2, c3 = st.columns(3)
    c1.download_button("PNG", png, file_name="psm_map.png", mime="image/png", key="dl_png")
    c2.download_button(
        "GeoTIFF (EPSG:4326)", lambda: exports.geotiff_bytes(raster, description=LAYER_LABELS[layer],
                                                            tags={"query": label}),
        file_name="psm_map.tif", mime="image/tiff", key="dl_tif")
    c3.download_button("GeoJSON of the tiles", lambda: exports.geojson_text(scores, properties={"query": label}),
                       file_name="psm_tiles.geojson", mime="application/geo+json", key="dl_geojson")


def choose_tile(scores: TileScores) -> int | None:
    """Index (into ``scores``) of this run's chosen tile, resolved before anything is drawn, so that
    the map rings it at once.

    A new click on the map (its widget state, ``deck_map``: the tile and a click count) or on a
    row of the top tiles (``top_tiles``, the same ``scores.top(20)`` the table shows) wins once;
    the tile selector (``tile_choice``) otherwise keeps its value. A tile that is not on this map
    (another query or region) is forgotten.
    """
    clicked = tilemap.clicked_tile(st.session_state.get("deck_map"), scores)
    if clicked is not None and clicked != st.session_state.get("_last_map_pick"):
        st.session_state["tile_choice"] = clicked[0]
    st.session_state["_last_map_pick"] = clicked
    rows = deckmap.selection(st.session_state.get("top_tiles")).get("rows") or []
    if rows and rows != st.session_state.get("_last_pick"):
        top = scores.top(20)
        if 0 <= int(rows[0]) < len(top):
            st.session_state["tile_choice"] = int(scores.tile_id[top[int(rows[0])]])
    st.session_state["_last_pick"] = rows
    choice = st.session_state.get("tile_choice")
    at = np.flatnonzero(scores.tile_id == choice) if choice is not None else np.empty(0, dtype=np.int64)
    if len(at) == 0:
        st.session_state["tile_choice"] = None
        return None
    return int(at[0])


def page() -> None:
    """The page body."""
    script_start = time.perf_counter()
    st.title("Soundscape map")
    model = widgets.model_picker()
    if model is None:
        return
    conds = store.conditions(model["version"])
    left, right = st.columns([1, 1])
    with left:
        query = widgets.query_picker(model)
    with right:
        region = widgets.region_picker()
    temporal = st.toggle("Temporal map: hour slider and play, one colour scale across hours", key="temporal")
    meta = widgets.metadata_picker("meta", conds)
    if temporal and meta.hour is None:
        st.info("The temporal map steps through hours: untick **leave out hour** to use it.")
    c1, c2 = st.columns(2)
    layer = c1.radio("Layer", list(LAYER_LABELS), format_func=LAYER_LABELS.get, horizontal=True, key="layer")
    scale = c2.radio("Colour scale", SCALES, horizontal=True, key="scale",
                     index=0 if temporal else 1)
    limit = get_settings().max_region_tiles
    n_tiles = store.region_tile_count(region.wkt, meta.zoom) if region is not None else 0
    if region is not None and 0 < n_tiles <= limit:
        store.region_tiles(region.wkt, meta.zoom)  # the region's grid loads while the query is typed
    if st.button("Map", type="primary", key="map_button"):
        st.session_state["map_on"] = True
    st.session_state["_full_run_start"] = script_start
    map_section(model, conds, query, region, meta, layer, scale, temporal, n_tiles, limit)


@st.fragment
def map_section(model: dict[str, Any], conds: list[dict[str, Any]], query: store.QueryKey | None,
                region: widgets.RegionChoice | None, meta: widgets.Meta, layer: str, scale: str, temporal: bool,
                n_tiles: int, limit: int) -> None:
    """The map, its exports, the top regions and tiles and the chosen tile's panel.

    A fragment: a click on the map or on a table row reruns this part of the page only, not the
    pickers above it. Its seconds (``map_timing``) count from the start of the whole page's run, or
    from its own start when it reruns alone.

    The map's frame is the fragment's first element in every run. Before the first map it is
    empty, at the map's height (of no height when a message stands in for the map): the browser
    loads deck.gl's bundle while the query is typed, and the frame it loaded in shows the first map.
    """
    script_start = st.session_state.pop("_full_run_start", None) or time.perf_counter()
    slot = st.empty()

    def no_map(height: int = 0, note: str = "") -> None:
        with slot:
            tilemap.tilemap(None, None, height=height, note=note, warmup=deckmap.warmup_json(), key="deck_map")

    if not st.session_state.get("map_on"):
        # at the map's own height, so that the first map needs no new layout of the page
        no_map(MAP_HEIGHT, "The map appears here.")
        st.info("Choose a query and a region, then press **Map**.")
        return
    if query is None or region is None:
        no_map()
        st.warning("The map needs a query and a region (see the messages above).")
        return
    if n_tiles > limit:
        no_map()
        st.error(f"The region holds {n_tiles:,} tiles at zoom {meta.zoom}, more than the limit of {limit:,} "
                 "(PSM_MAX_REGION_TILES). Choose a smaller region.")
        return
    if n_tiles == 0:
        no_map()
        not_embedded(model, region, meta, NotEmbeddedError(
            f"the region has no tiles at zoom {meta.zoom} yet; embedding it creates them"))
        return
    started = time.perf_counter()
    try:
        scores = fetch(model, query, region, meta)
    except NotEmbeddedError as e:
        no_map()
        not_embedded(model, region, meta, e)
        return
    maps = [scores]
    hours: list[int] = []
    share = (temporal or scale == SCALES[0]) and meta.hour is not None
    if share:
        hours = embedded_hours(conds, meta)
        if meta.hour not in hours:
            hours = sorted({*hours, meta.hour})
        bar = st.progress(0.0, text="Scoring every embedded hour for one shared colour scale…")
        maps, kept = [], []
        for i, h in enumerate(hours):
            try:
                maps.append(scores if h == meta.hour else fetch(model, query, region, meta.with_hour(h)))
                kept.append(h)
            except NotEmbeddedError:
                pass
            bar.progress((i + 1) / len(hours))
        bar.empty()
        hours = kept
    vmin, vmax = limits(layer, SCALES[2] if scale == SCALES[2] else SCALES[0], maps)
    chosen = choose_tile(scores)
    marker = None if chosen is None else (float(scores.lon[chosen]), float(scores.lat[chosen]))
    title = f"{query.label} · {meta.label()} · {region.label}"
    outlines = tuple((n, g.wkt) for n, g in region.outlines)
    key = map_key(model, query, region, meta)
    interactive = len(scores) <= INTERACTIVE_MAX_TILES
    # the interactive map needs only the raster; the PNG is drawn when it is downloaded
    png: bytes | Callable[[], bytes]
    if interactive:
        raster = raster_for(key, scores, layer)
        png = lambda: render(key, scores, layer, vmin, vmax, title, outlines, marker)[0]  # noqa: E731
    else:
        png, raster = render(key, scores, layer, vmin, vmax, title, outlines, marker)
    elapsed = time.perf_counter() - started
    if interactive:
        chart = deckmap.deck(scores, raster, layer=layer, vmin=vmin, vmax=vmax, outlines=region.outlines)
        ring = None if chosen is None else (int(scores.tile_id[chosen]), float(scores.lon[chosen]), float(scores.lat[chosen]))
        with slot:
            tilemap.tilemap(chart.to_json(), grid_for(key, scores, raster), chosen=ring, height=MAP_HEIGHT,
                            key="deck_map")
        st.caption(widgets.plain(title))
    else:
        slot.image(png, caption=widgets.plain(title), width="stretch")  # type: ignore[arg-type]
    # seconds from the start of this run (the click) to the image being sent (bench/dashboard_bench.py)
    st.session_state["map_timing"] = {"to_image": time.perf_counter() - script_start, "tiles": len(scores)}
    st.caption(f"Colour bar: {LAYER_LABELS[layer]} from {vmin:.4g} to {vmax:.4g} "
               f"({'shared across hours ' + ', '.join(map(str, hours)) if share else scale}). "
               f"{len(scores):,} tiles, drawn in {elapsed:.2f} s." + odds_note(layer, model, vmin, vmax))
    if temporal and len(hours) > 1 and st.button("▶ Play the hours", key="play"):
        for h, m in zip(hours, maps, strict=True):
            hp, _ = render(map_key(model, query, region, meta.with_hour(h)), m, layer, vmin, vmax,
                           f"{query.label} · {meta.with_hour(h).label()}", outlines, None)
            slot.image(hp, caption=f"{h:02d}:00", width="stretch")
            time.sleep(0.6)
    downloads(scores, raster, png, layer, query.label)
    tables, panel = st.container(), st.container()
    # The chosen tile's panel is written before the tables, which it sits below: after a click on the
    # map the panel then arrives without waiting for the top regions and tiles to be ranked again.
    if chosen is not None:  # the selector's value: a change of it reruns the page, and choose_tile reads it
        with panel:
            tile_panel(model, scores, chosen)
    with tables:
        t1, t2 = st.columns([1, 1])
        with t1:
            st.subheader("Top regions")
            if region.set_name:
                rows = store.rank_regions(model["version"], query, region.set_name, meta.condition, meta.zoom, 20)
                st.dataframe(pd.DataFrame(rows), hide_index=True, key="top_regions")
            else:
                st.info("Load a region set to rank regions.")
        with t2:
            st.subheader("Top tiles")
            top = scores.top(20)
            df = pd.DataFrame({"tile_id": scores.tile_id[top], "probability": scores.probability[top],
                               "sum σ²": scores.var_sum[top], "lat": scores.lat[top], "lon": scores.lon[top]})
            st.dataframe(df, hide_index=True, on_select="rerun", selection_mode="single-row", key="top_tiles")
            options = [None, *df["tile_id"].tolist()]
            if chosen is not None and int(scores.tile_id[chosen]) not in options:
                options.append(int(scores.tile_id[chosen]))  # a tile clicked on the map, outside the top 20
            st.selectbox("Tile", options, key="tile_choice",
                         format_func=lambda t: "choose a tile (or click a row)" if t is None else f"tile {t}")


widgets.guard(page)
