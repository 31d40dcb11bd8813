"""Data page: the database and the synthetic world in numbers, and a browser of training samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import samples, store, widgets


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
    st.markdown(f"**Caption** ({s['caption_source']}): *{s['caption']}*")
    st.audio(s["wav"], format="audio/wav")
    st.image(samples.spectrogram_png(s["wave"], samples.CLIP_RATE), caption="spectrogram")
    st.dataframe(pd.DataFrame([{
        "lat": s["lat"], "lon": s["lon"], "month": widgets.MONTHS[s["month"] - 1], "hour": s["hour"],
        "audio source": s["audio_source"], "caption source": s["caption_source"],
        "sound classes": ", ".join(s["classes"]),
    }]), hide_index=True, key="sample_meta")


def page() -> None:
    """The page body."""
    st.title("Data")
    numbers()
    models = store.models()
    default_seed = samples.world_seed(models[0]) if models else 0
    c1, c2 = st.columns(2)
    seed = int(c1.number_input("World seed", min_value=0, value=default_seed, step=1, key="world_seed"))
    n = int(c2.selectbox("Samples in the plan", [1_000, 4_000, 20_000], index=1, key="plan_size"))
    world_numbers(seed, n)
    browse(seed, n)


widgets.guard(page)
