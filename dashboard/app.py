"""PSM Maps dashboard: routes the pages with st.navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "pages"


def main() -> None:
    """Configure the app and run the chosen page."""
    st.set_page_config(page_title="PSM Maps", layout="wide")
    nav = st.navigation(
        [
            st.Page(str(PAGES / "map.py"), title="Soundscape map", icon="🗺️", url_path="map", default=True),
            st.Page(str(PAGES / "metrics.py"), title="Retrieval metrics", icon="📊", url_path="metrics"),
            st.Page(str(PAGES / "jobs.py"), title="Jobs", icon="⚙️", url_path="jobs"),
            st.Page(str(PAGES / "data.py"), title="Data", icon="🛰️", url_path="data"),
            st.Page(str(PAGES / "status.py"), title="Status", icon="🟢", url_path="status"),
        ]
    )
    nav.run()


main()
