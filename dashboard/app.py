"""PSM Maps dashboard: routes the pages with st.navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.memory import start_housekeeping

# One file per page. The folder is not named ``pages/``: that name switches Streamlit to its
# legacy multi-page mode, which bypasses st.navigation.
PAGES = Path(__file__).resolve().parent / "views"


def main() -> None:
    """Configure the app and run the chosen page."""
    st.set_page_config(page_title="PSM Maps", layout="wide")
    start_housekeeping()
    nav = st.navigation(
        [
            st.Page(str(PAGES / "map.py"), title="Soundscape map", icon=":material/map:", default=True),
            st.Page(str(PAGES / "metrics.py"), title="Retrieval metrics", icon=":material/leaderboard:", url_path="metrics"),
            st.Page(str(PAGES / "jobs.py"), title="Jobs", icon=":material/settings:", url_path="jobs"),
            st.Page(str(PAGES / "data.py"), title="Data", icon=":material/satellite_alt:", url_path="data"),
            st.Page(str(PAGES / "status.py"), title="Status", icon=":material/monitor_heart:", url_path="status"),
        ]
    )
    nav.run()


main()
