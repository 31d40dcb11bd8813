"""PSM Maps dashboard: routes the pages with st.navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="PSM Maps", layout="wide")
nav = st.navigation(
    [
        st.Page(str(PAGES / "status.py"), title="Status", default=True),
    ]
)
nav.run()
