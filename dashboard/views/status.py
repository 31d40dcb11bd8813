"""Status page: which services run and where."""

from __future__ import annotations

import streamlit as st

from psm_db import services
from psm_db.settings import get_settings

st.title("PSM Maps")
st.caption("Probabilistic soundscape maps: which services this dashboard talks to.")
for row in services.status(get_settings()):
    icon = "🟢" if row.running else "🔴"
    st.write(f"{icon} **{row.name}** ({'managed' if row.managed else 'external'}): `{row.url}`")
