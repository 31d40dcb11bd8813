"""Shared widgets: model, metadata, region and query pickers, and the error guard of every page."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import shapely
import streamlit as st
from shapely.geometry.base import BaseGeometry
from sqlalchemy.exc import OperationalError, ProgrammingError

from dashboard import store
from dashboard.uploads import (
    AUDIO_TYPES,
    UPLOAD_REGION_SUFFIXES,
    UploadError,
    parse_bbox,
    parse_region_text,
    read_audio,
    read_region_file,
)
from psm_db.errors import DatabaseURLError, NotEmbeddedError
from psm_db.settings import get_settings
from psm_model.condition import MONTHS, Condition
from psm_model.errors import CheckpointError
from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES

log = logging.getLogger(__name__)

_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#|~$@])|(?<=:)(//)|(?i:(?<![\w.])(www)\.)")
"""What Markdown could make something of: emphasis, code, links and images (``[`` starts both, and
Streamlit's ``:red[...]``), HTML and autolinks, headings, tables, strikethrough, LaTeX, e-mail
addresses, and the bare ``http://`` and ``www.`` addresses GitHub's Markdown turns into links."""


def _escape(m: re.Match[str]) -> str:
    if m.group(1):
        return "\\" + m.group(1)
    if m.group(2):
        return "\\/\\/"
    return m.group(3) + "\\."


def upload_limits(audio: bool = False) -> str:
    """The limits of an upload, said in the page rather than only in the uploader's tooltip."""
    size = f"at most {int(st.get_option('server.maxUploadSize'))} MB per file (Streamlit's server.maxUploadSize)"
    if not audio:
        return size
    s = get_settings()
    return (f"{size}, {s.min_audio_seconds:g} s to {s.max_audio_seconds / 60:g} min long "
            "(PSM_MIN_AUDIO_SECONDS, PSM_MAX_AUDIO_SECONDS)")


def plain(text: object) -> str:
    """``text`` escaped for Streamlit's Markdown, so it shows as typed (``st.caption``, ``st.error``...).

    User text (a query, a region, a file name, an error that quotes them) goes through this before
    any element that renders Markdown: ``[x](http://...)`` stays text rather than becoming a link,
    ``![](http://...)`` fetches no image, and ``*``, ``_``, ``:red[...]`` and ``$...$`` are shown
    as they are. Each escape is a backslash before an ASCII punctuation character, which
    CommonMark shows as the character alone.
    """
    return _MARKDOWN.sub(_escape, str(text))


def guard(body: Callable[[], None]) -> None:
    """Run a page body; show failures the user can fix as ``st.error`` instead of a traceback."""
    try:
        body()
    except DatabaseURLError as e:
        st.error(f"Cannot use the database: {plain(e)}")
    except OperationalError as e:
        st.error(
            "Cannot reach the database on the read-only role "
            f"({plain(get_settings().reader_url)}): {plain(str(e.orig).strip()[:300])}. Start it with "
            "`psm services up`, or set PSM_READER_DATABASE_URL."
        )
    except ProgrammingError as e:
        st.error(
            f"The database schema is not what this dashboard expects: {plain(str(e.orig).strip()[:300])}. "
            "Run `psm db upgrade`."
        )
    except CheckpointError as e:
        st.error(f"The model checkpoint cannot be loaded: {plain(e)}")
    except (NotEmbeddedError, UploadError) as e:
        st.error(plain(e))


def show_error(e: BaseException, prefix: str = "") -> None:
    """One st.error for an exception the user can act on."""
    st.error(f"{prefix}{plain(e)}")


# ----------------------------------------------------------------------------- model


def model_label(m: dict[str, Any]) -> str:
    """"name · version (preset, loss)"."""
    return f"{m['name']} · {m['version'][:12]} ({m['preset']}, {m['loss']})"


def model_picker(key: str = "model", label: str = "Model version", index: int = 0) -> dict[str, Any] | None:
    """Choose a registered model version; None (with a message) when there is none."""
    models = store.models()
    if not models:
        st.warning("No model version is registered yet. Train one on the **Jobs** page "
                   "(or `psm train`), then come back.")
        return None
    by_version = {m["version"]: m for m in models}
    version = st.selectbox(label, list(by_version), format_func=lambda v: model_label(by_version[v]), key=key,
                           index=min(index, len(models) - 1))
    return by_version[version]


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Meta:
    """A metadata condition and a zoom level."""

    condition: Condition
    zoom: int

    @property
    def month(self) -> int | None:
        return self.condition.month

    @property
    def hour(self) -> int | None:
        return self.condition.hour

    @property
    def audio_source(self) -> str | None:
        return self.condition.audio_source

    @property
    def caption_source(self) -> str | None:
        return self.condition.caption_source

    def label(self) -> str:
        """Readable summary, e.g. "May · 20:00 · inaturalist · caption source left out · zoom 1"."""
        return f"{self.condition.label()} · zoom {self.zoom}"

    def with_hour(self, hour: int | None) -> Meta:
        """The same condition at another hour."""
        return Meta(self.condition.replace(hour=hour), self.zoom)


def meta_from_widgets(month: int | None, hour: int | None, audio_source: str | None, caption_source: str | None,
                      zoom: int) -> Meta:
    """The :class:`Meta` of the pickers' values (None: left out).

    Raises:
        ValueError: On a value :class:`psm_model.condition.Condition` refuses (it says which).
    """
    return Meta(Condition(month, hour, audio_source, caption_source), int(zoom))


def _leave_out(col: Any, label: str, key: str, default: bool) -> bool:
    return col.checkbox(f"leave out {label}", value=default, key=f"{key}_out")


def metadata_picker(key: str, conditions: list[dict[str, Any]], hour_widget: bool = True) -> Meta:
    """Month, hour, audio source, caption source (each with "leave out") and zoom.

    Defaults come from the first embedded condition so that the first map needs no embedding.
    """
    first = conditions[0] if conditions else {}
    zooms = store.zooms() or [1]
    c1, c2, c3, c4, c5 = st.columns(5)
    month_out = _leave_out(c1, "month", f"{key}_month", first.get("month") is None and bool(conditions))
    month = c1.selectbox("Month", range(1, 13), index=int(first.get("month") or 5) - 1,
                         format_func=lambda m: MONTHS[m - 1], key=f"{key}_month", disabled=month_out)
    hour_out = _leave_out(c2, "hour", f"{key}_hour", first.get("hour") is None and bool(conditions))
    hour = None
    if hour_widget:
        hour = c2.slider("Hour", 0, 23, int(first.get("hour") if first.get("hour") is not None else 20),
                         key=f"{key}_hour", disabled=hour_out)
    src_out = _leave_out(c3, "audio source", f"{key}_src", first.get("audio_source") is None and bool(conditions))
    src_default = first.get("audio_source") or "inaturalist"
    src = c3.selectbox("Audio source", AUDIO_SOURCES, index=AUDIO_SOURCES.index(src_default),
                       key=f"{key}_src", disabled=src_out)
    cap_out = _leave_out(c4, "caption source", f"{key}_cap",
                         first.get("caption_source") is None and bool(conditions))
    cap_default = first.get("caption_source") or "metadata"
    cap = c4.selectbox("Caption source", CAPTION_SOURCES, index=CAPTION_SOURCES.index(cap_default),
                       key=f"{key}_cap", disabled=cap_out)
    zoom = c5.selectbox("Zoom", zooms, key=f"{key}_zoom")
    return meta_from_widgets(
        None if month_out else int(month),
        None if (hour_out or hour is None) else int(hour),
        None if src_out else src,
        None if cap_out else cap,
        int(zoom),
    )


# ----------------------------------------------------------------------------- region


@dataclass
class RegionChoice:
    """The region of a map: its geometry (None = every tile), a label and outlines to draw."""

    label: str
    geom: BaseGeometry | None
    set_name: str | None = None
    outlines: list[tuple[str, BaseGeometry]] = field(default_factory=list)

    @property
    def wkt(self) -> str | None:
        """The geometry as WKT (a cache key), None for everywhere."""
        return None if self.geom is None else self.geom.wkt


REGION_MODES = ("Stored region", "Type a box", "Draw a box", "Upload GeoJSON")


def region_picker(key: str = "region") -> RegionChoice | None:
    """A stored region (or a whole region set), a typed or drawn box, or an uploaded GeoJSON."""
    mode = st.radio("Region", REGION_MODES, horizontal=True, key=f"{key}_mode")
    sets = store.region_sets()
    if mode == "Stored region":
        if not sets:
            st.warning("No region set is loaded. Load one with `psm regions load FILE.geojson --set NAME`, "
                       "or type, draw or upload a region instead.")
            return None
        names = [s["name"] for s in sets]
        set_name = st.selectbox("Region set", names, key=f"{key}_set")
        regs = store.regions(set_name)
        choice = st.selectbox("Region", ["(the whole set)"] + [n for _, n, _ in regs], key=f"{key}_name")
        if choice == "(the whole set)":
            geom = shapely.union_all([g for _, _, g in regs]) if regs else None
            return RegionChoice(f"region set {set_name}", geom, set_name, [(n, g) for _, n, g in regs])
        geom = next(g for _, n, g in regs if n == choice)
        return RegionChoice(f"{choice} ({set_name})", geom, set_name, [(choice, geom)])
    if mode == "Type a box":
        text = st.text_input("Box: west, south, east, north (degrees), or a WKT / EWKT polygon",
                             key=f"{key}_bbox", placeholder="-91.5, 40.0, -90.0, 41.0")
        if not text.strip():
            st.info("Type the box's four coordinates (or a polygon, e.g. SRID=3857;POLYGON((...))).")
            return None
        try:
            geom = parse_region_text(text)
        except UploadError as e:
            st.error(plain(e))
            return None
        return RegionChoice(f"box {text.strip()}", geom, _ranking_set(sets, key), [("", geom)])
    if mode == "Draw a box":
        return _drawn_box(key, sets)
    up = st.file_uploader("Region file", type=[sfx[1:] for sfx in UPLOAD_REGION_SUFFIXES], key=f"{key}_upload")
    if up is None:
        st.info("Upload a Polygon or MultiPolygon: GeoJSON (a geometry, Feature or FeatureCollection), "
                f"GeoPackage, FlatGeobuf, GeoParquet or a zipped Shapefile, in any CRS; {upload_limits()}.")
        return None
    try:
        geom = read_region_file(up.name, up.getvalue())
    except UploadError as e:
        st.error(plain(e))
        return None
    return RegionChoice(up.name, geom, _ranking_set(sets, key), [("", geom)])


def _ranking_set(sets: list[dict[str, Any]], key: str) -> str | None:
    if not sets:
        return None
    return st.selectbox("Region set to rank", [s["name"] for s in sets], key=f"{key}_rankset")


def _drawn_box(key: str, sets: list[dict[str, Any]]) -> RegionChoice | None:
    """Drag a box on an overview of the stored regions (an Altair interval selection)."""
    import altair as alt
    import pandas as pd

    rows = []
    for s in sets:
        for _, name, g in store.regions(s["name"]):
            for poly in getattr(g, "geoms", [g]):
                for i, (x, y) in enumerate(poly.exterior.coords):
                    rows.append({"set": s["name"], "region": name, "lon": x, "lat": y, "order": i})
    if not rows:
        st.info("No stored regions to draw over; type a box instead.")
        return None
    df = pd.DataFrame(rows)
    brush = alt.selection_interval(name="box", encodings=["x", "y"])
    chart = (
        alt.Chart(df).mark_line().encode(
            x=alt.X("lon:Q", scale=alt.Scale(zero=False), title="longitude"),
            y=alt.Y("lat:Q", scale=alt.Scale(zero=False), title="latitude"),
            detail="region:N", order="order:Q", color=alt.value("#555"),
        ).add_params(brush).properties(height=320)
    )
    event = st.altair_chart(chart, on_select="rerun", key=f"{key}_draw", width="stretch")
    box = (getattr(event, "selection", None) or {}).get("box") or {}
    if not box.get("lon") or not box.get("lat"):
        st.info("Drag a box over the outlines to choose the region.")
        return None
    (w, e), (s_, n) = sorted(box["lon"]), sorted(box["lat"])
    geom = parse_bbox(f"{w},{s_},{e},{n}")
    return RegionChoice(f"drawn box {w:.3f},{s_:.3f},{e:.3f},{n:.3f}", geom, _ranking_set(sets, key), [("", geom)])


# ----------------------------------------------------------------------------- query

QUERY_MODES = ("Free text", "Example clip", "Upload audio", "Stored query")
PLAYBACK_SECONDS = 60.0
"""The longest stretch of an uploaded clip the page plays back."""


def query_picker(model: dict[str, Any], key: str = "query") -> store.QueryKey | None:
    """Free text, an example clip, an uploaded clip (with a player) or a stored query."""
    mode = st.radio("Query", QUERY_MODES, horizontal=True, key=f"{key}_mode")
    path, version = model["checkpoint_path"], model["version"]
    if mode == "Free text":
        text = st.text_input("What sound?", key=f"{key}_text", placeholder="sound of insects")
        if not text.strip():
            st.info("Type what you want to hear, e.g. *sound of insects*.")
            return None
        mu, var = store.encode_text(path, version, text.strip())
        return store.QueryKey(f'"{text.strip()}"', mu, var)
    if mode == "Stored query":
        stored = store.stored_queries(version)
        if not stored:
            st.info("This model has no stored queries (`psm query embed`). Type a text instead.")
            return None
        by_id = {q["id"]: q for q in stored}
        qid = st.selectbox("Stored query", list(by_id), key=f"{key}_stored",
                           format_func=lambda i: f"#{i} {by_id[i]['name'] or by_id[i]['text'] or by_id[i]['audio_name']}"
                           f" ({by_id[i]['kind']})")
        q = by_id[qid]
        return store.QueryKey(f"stored query #{qid} {q['name'] or q['text'] or ''}".strip(), stored_id=int(qid))
    if mode == "Example clip":
        from dashboard import samples

        names = list(samples.example_queries())
        name = st.selectbox("Example clip", names, index=names.index("insects") if "insects" in names else 0,
                            key=f"{key}_example")
        wav = samples.example_clip(name)
        st.audio(wav, format="audio/wav")
        wave, sr = read_audio(f"{name}.wav", wav, get_settings().max_audio_seconds,
                              get_settings().min_audio_seconds)
        mu, var = store.encode_audio(path, version, wave, sr)
        return store.QueryKey(f"example clip: {name}", mu, var)
    up = st.file_uploader("Audio clip", type=list(AUDIO_TYPES), key=f"{key}_audio")
    if up is None:
        st.info(f"Upload a WAV, FLAC, OGG or MP3 clip: {upload_limits(audio=True)}.")
        return None
    try:
        wave, sr = read_audio(up.name, up, get_settings().max_audio_seconds, get_settings().min_audio_seconds)
    except UploadError as e:
        st.error(plain(e))
        return None
    # The player gets at most the first PLAYBACK_SECONDS (a small WAV made from the decoded wave),
    # not a second copy of the whole upload: the server keeps what it plays for the session.
    st.audio(wave[: int(PLAYBACK_SECONDS * sr)], sample_rate=sr)
    if wave.size > PLAYBACK_SECONDS * sr:
        st.caption(f"Playing the first {PLAYBACK_SECONDS:g} s of {wave.size / sr / 60:.1f} min; the query uses "
                   "the whole clip.")
    mu, var = store.encode_audio(path, version, wave, sr)
    return store.QueryKey(f"clip {up.name}", mu, var)
