"""Data page: the database and the synthetic world in numbers, and a browser of training samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import samples, store, widgets
from psm_db.settings import get_settings


def numbers() -> None:
    """Row counts of the database and the world's sample plan in numbers."""
    st.subheader("The database in numbers")
    counts = store.table_counts()
    cols = st.columns(len(counts))
    for col, (name, n) in zip(cols, counts.items(), strict=True):
        col.metric(name, f"{n:,}")


def world_numbers(seed: int, n: int) -> None:
    """Distributions of the world's first n samples: audio source, month, hour."""
    from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES

    plan = samples.training_plan(seed, n)
    st.subheader(f"World {seed}: the first {n:,} samples")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("samples", f"{n:,}")
    c2.metric("latitude span", f"{plan['lat'].min():.0f}° to {plan['lat'].max():.0f}°")
    c3.metric("audio sources", len(AUDIO_SOURCES))
    c4.metric("caption sources", len(CAPTION_SOURCES))
    a, b, c = st.columns(3)
    a.caption("audio source")
    a.bar_chart(pd.Series(np.bincount(plan["source"], minlength=len(AUDIO_SOURCES)), index=list(AUDIO_SOURCES)))
    b.caption("month")
    b.bar_chart(pd.Series(np.bincount(plan["month"], minlength=13)[1:], index=list(widgets.MONTHS)))
    c.caption("hour")
    c.bar_chart(pd.Series(np.bincount(plan["hour"], minlength=24), index=range(24)))


def browse(seed: int, n: int) -> None:
    """One sample: its tile at zoom 1, 3 and 5, its clip (player and spectrogram), caption and metadata."""
    st.subheader("Browse samples")
    index = int(st.number_input("Sample index", min_value=0, max_value=n - 1, value=0, step=1, key="sample_index"))
    s = samples.realise_sample(seed, index, n)
    imgs = samples.tile_images(seed, s["lat"], s["lon"], (1, 3, 5), 128)
    cols = st.columns(3)
    for col, img, z in zip(cols, imgs, (1, 3, 5), strict=True):
        col.image(img, caption=f"zoom {z}", width=200)
    st.markdown(f"**Caption** ({s['caption_source']}): *{widgets.plain(s['caption'])}*")
    st.audio(s["wav"], format="audio/wav")
    st.image(samples.spectrogram_png(s["wave"], samples.CLIP_RATE), caption="spectrogram")
    st.dataframe(pd.DataFrame([{
        "lat": s["lat"], "lon": s["lon"], "month": widgets.MONTHS[s["month"] - 1], "hour": s["hour"],
        "audio source": s["audio_source"], "caption source": s["caption_source"],
        "sound classes": ", ".join(s["classes"]),
    }]), hide_index=True, key="sample_meta")


def dataset_numbers(root: str) -> None:
    """A built dataset in numbers: samples per split, audio source, month, hour and sound class."""
    meta, index = samples.dataset_index(root)
    build = meta.get("build", {})
    st.subheader(f"Dataset {widgets.plain(root)}")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("samples", f"{len(index):,}")
    c2.metric("world seed", build.get("seed", meta.get("seed", "?")))
    c3.metric("zooms", ", ".join(map(str, build.get("zooms", []))))
    c4.metric("clip", f"{build.get('clip_seconds', '?')} s at {build.get('sample_rate', '?')} Hz")
    a, b, c, d = st.columns(4)
    a.caption("split")
    a.bar_chart(index["split"].value_counts())
    b.caption("audio source")
    b.bar_chart(index["audio_source"].value_counts())
    c.caption("hour")
    c.bar_chart(index["hour"].value_counts().sort_index())
    d.caption("sound class")
    d.bar_chart(index["classes"].explode().value_counts())


def dataset_browse(root: str) -> None:
    """One stored sample: tiles at the stored zooms, the clip (player, spectrogram), caption, metadata."""
    _, index = samples.dataset_index(root)
    st.subheader("Browse samples")
    c1, c2 = st.columns(2)
    split = c1.selectbox("Split", sorted(index["split"].unique().tolist()), key="ds_split")
    n = int((index["split"] == split).sum())
    pos = int(c2.number_input(f"Sample (0..{n - 1})", min_value=0, max_value=max(n - 1, 0), value=0,
                              key="ds_pos"))
    s = samples.dataset_sample(root, split, pos)
    cols = st.columns(len(s["zooms"]))
    for col, img, z in zip(cols, s["images"], s["zooms"], strict=True):
        col.image(img, caption=f"zoom {z}", width=200)
    st.markdown(f"**Caption** ({s['caption_source']}): *{widgets.plain(s['caption'])}*")
    st.audio(s["wav"], format="audio/wav")
    st.image(samples.spectrogram_png(s["wave"], s["sample_rate"]), caption="spectrogram")
    st.dataframe(pd.DataFrame([{
        "sample": s["index"], "lat": s["lat"], "lon": s["lon"], "month": widgets.MONTHS[s["month"] - 1],
        "hour": s["hour"], "audio source": s["audio_source"], "caption source": s["caption_source"],
        "sound classes": ", ".join(s["classes"]),
    }]), hide_index=True, key="ds_meta")


def page() -> None:
    """The page body."""
    st.title("Data")
    numbers()
    models = store.models()
    trained_on = samples.model_dataset_dir(models[0]["checkpoint_path"]) if models else None
    source = st.radio("Samples from", ["the world generator", "a dataset folder (psm world build)"],
                      horizontal=True, key="data_source", index=1 if trained_on else 0)
    if source != "the world generator":
        root = st.text_input("Dataset folder", value=trained_on or str(get_settings().data_dir / "world"),
                             key="ds_root")
        try:
            samples.dataset_index(root)
        except (ValueError, OSError) as e:
            st.error(f"Cannot read the dataset: {widgets.plain(e)}")
            return
        dataset_numbers(root)
        dataset_browse(root)
        return
    default_seed = samples.world_seed(models[0]) if models else 0
    c1, c2 = st.columns(2)
    seed = int(c1.number_input("World seed", min_value=0, value=default_seed, step=1, key="world_seed"))
    n = int(c2.selectbox("Samples in the plan", [1_000, 4_000, 20_000], index=1, key="plan_size"))
    world_numbers(seed, n)
    browse(seed, n)


widgets.guard(page)
