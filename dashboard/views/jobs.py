"""Jobs page: start embed_region or train, watch progress and logs, and browse the job history."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import samples, store, widgets
from dashboard.uploads import UploadError, parse_region_text
from psm_db.settings import get_settings

STATUS_ICONS = {"queued": "⏳", "running": "🔄", "succeeded": "✅", "failed": "❌", "cancelled": "⛔"}


IMAGERY_KINDS = {"world": "Synthetic world", "geotiff": "GeoTIFF / COG", "folder": "Folder of GeoTIFF tiles"}


def parse_bands(text: str) -> tuple[int, ...] | None:
    """``4,3,2`` as band numbers; empty: None (the file's first three bands).

    Raises:
        UploadError: For anything but one or three positive integers.
    """
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        bands = tuple(int(p) for p in parts)
    except ValueError:
        bands = ()
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise UploadError(f"Bands are one or three 1-based band numbers such as 4, 3, 2; got {text!r}.")
    return bands


def start_embed() -> None:
    """Form: queue a psm.embed_region job over the synthetic world, a GeoTIFF/COG or a folder of tiles."""
    model = widgets.model_picker(key="jobs_model")
    if model is None:
        return
    with st.form("embed_form"):
        bbox = st.text_input("Region box: west, south, east, north (or a WKT / EWKT polygon)", value="",
                             placeholder="-91, 40, -88, 41", key="embed_region_box")
        kind = st.radio("Imagery", list(IMAGERY_KINDS), format_func=IMAGERY_KINDS.__getitem__, horizontal=True,
                        key="embed_imagery")
        path = st.text_input("GeoTIFF / COG file or URL, or tile folder (as the workers see it)", value="",
                             key="embed_imagery_path", placeholder="/data/S2_T31UDQ.tif")
        c1, c2 = st.columns(2)
        bands_text = c1.text_input("Bands as red, green, blue (empty: 1, 2, 3)", value="", key="embed_bands",
                                   placeholder="4, 3, 2")
        min_valid = c2.slider("Skip tiles with less data than", 0.0, 1.0, 0.5, 0.05, key="embed_min_valid",
                              help="the share of a tile's pixels that must hold data (not nodata, masked "
                                   "or outside the imagery)")
        meta = widgets.metadata_picker("jobs_meta", store.conditions(model["version"]))
        submitted = st.form_submit_button("Queue embed_region", type="primary")
    if submitted:
        try:
            region = parse_region_text(bbox)
            bands = parse_bands(bands_text) if kind != "world" else None
            if kind != "world" and not path.strip():
                raise UploadError(f"Give the {IMAGERY_KINDS[kind]} to embed (a path the workers can read).")
        except UploadError as e:
            st.error(widgets.plain(e))
            return
        try:
            job_id = store.submit_embed_region(model["version"], region.wkt, meta, samples.world_seed(model),
                                               imagery=kind, imagery_path=path.strip() or None, bands=bands,
                                               min_valid=float(min_valid))
        except (ValueError, LookupError, FileNotFoundError) as e:
            st.error(f"The embedding job was not queued: {widgets.plain(e)}")
            return
        except Exception as e:  # the broker may be down: say so, the user can start it
            st.error(f"Could not queue the embedding job: {widgets.plain(e)}. Is the broker running "
                     "(`psm services up`)?")
            return
        st.success(f"Queued embed_region job {job_id}.")


def start_train() -> None:
    """Form: queue a psm.train job."""
    models = store.models()
    trained_on = samples.model_dataset_dir(models[0]["checkpoint_path"]) if models else None
    default_dir = trained_on or str(get_settings().data_dir / "world")
    with st.form("train_form"):
        dataset_dir = st.text_input("Dataset folder (psm world build)", value=default_dir, key="train_dir")
        c1, c2, c3 = st.columns(3)
        preset = c1.selectbox("Preset", ["tiny", "demo", "paper"], key="train_preset")
        loss = c2.selectbox("Loss", ["pcmepp", "infonce"], key="train_loss")
        epochs = c3.number_input("Epochs", min_value=1, value=1, step=1, key="train_epochs")
        use_metadata = st.checkbox("Fuse metadata", value=True, key="train_meta")
        name = st.text_input("Name (optional)", key="train_name")
        submitted = st.form_submit_button("Start training", type="primary")
    if submitted:
        try:
            job_id = store.submit_train(dataset_dir, preset, loss, use_metadata, int(epochs), name)
        except (ValueError, FileNotFoundError) as e:
            st.error(f"Training was not started: {widgets.plain(e)}")
            return
        except Exception as e:  # the broker may be down: say so, the user can start it
            st.error(f"Could not queue the training job: {widgets.plain(e)}. Is the broker running "
                     "(`psm services up`)?")
            return
        st.success(f"Queued train job {job_id}.")


def history_frame(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    """The job history as a table: status, progress, error."""
    return pd.DataFrame([{
        "status": f"{STATUS_ICONS.get(j['status'], '')} {j['status']}",
        "kind": j["kind"],
        "progress": (j["done"] / j["total"]) if j["total"] else 0.0,
        "done / total": f"{j['done']} / {j['total']}",
        "model": (j["model_version"] or "")[:12],
        "message": j["message"] or "",
        "error": j["error"] or "",
        "created": j["created_at"],
        "finished": j["finished_at"],
        "id": str(j["id"]),
    } for j in jobs])


@st.fragment(run_every=3.0)
def live() -> None:
    """Running jobs with progress bars, the history, and one job's log (re-polled every 3 s)."""
    jobs = store.jobs(200)
    active = [j for j in jobs if j["status"] in ("queued", "running")]
    st.subheader("Running")
    if not active:
        st.caption("No job is queued or running.")
    for j in active:
        frac = (j["done"] / j["total"]) if j["total"] else 0.0
        st.progress(min(max(frac, 0.0), 1.0),
                    text=f"{j['kind']} {str(j['id'])[:8]} · {j['status']} · {j['done']} / {j['total']}"
                         f"{' · ' + j['message'] if j['message'] else ''}")
    st.subheader("History")
    if not jobs:
        st.info("No job has run yet.")
        return
    df = history_frame(jobs)
    st.dataframe(df, hide_index=True, key="job_history",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)})
    failed = [j for j in jobs if j["status"] == "failed"]
    for j in failed[:3]:
        st.error(f"{j['kind']} {str(j['id'])[:8]} failed: {widgets.plain(j['error'])}")
    ids = [str(j["id"]) for j in jobs]
    pick = st.selectbox("Log of job", ids, key="job_log",
                        format_func=lambda i: f"{i[:8]} {next(j['kind'] for j in jobs if str(j['id']) == i)}")
    events = store.job_events(pick)
    if events:
        st.code("\n".join(f"{e['at']:%H:%M:%S} {e['level'].upper():7s} {e['message']}" for e in events),
                language="text")
    else:
        st.caption("This job has logged nothing yet.")


def page() -> None:
    """The page body."""
    st.title("Jobs")
    t1, t2 = st.tabs(["Embed a region", "Train a model"])
    with t1:
        start_embed()
    with t2:
        start_train()
    live()


widgets.guard(page)
